"""Field types of the experiment schema: each checks a value, fills defaults and describes itself.

A field's :meth:`Field.check` appends ``(key path, message)`` problems instead of raising, so one
validation pass reports every problem of a config at once. :meth:`Field.resolve` returns the value
with defaults filled in (called only on valid values). :meth:`Field.type_name` and the ``doc``
strings feed the generated YAML reference (``docs/yaml.md``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flowkit.registry import did_you_mean

Problems = list[tuple[str, str]]
REQUIRED = object()


def join_key(parent: str, child: str | int) -> str:
    """Key path of ``child`` under ``parent``: ``a.b``, ``a[3]`` or ``b`` at the top level."""
    if isinstance(child, int):
        return f"{parent}[{child}]"
    return f"{parent}.{child}" if parent else child


def is_int(value: Any) -> bool:
    """True for Python integers (``bool`` excluded)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for finite or infinite ints and floats (``bool`` excluded)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass
class Field(ABC):
    """Base field: a documented value with an optional default (``REQUIRED`` when mandatory)."""

    doc: str = ""
    default: Any = None
    nullable: bool = False

    @abstractmethod
    def type_name(self) -> str:
        """The type in words, for errors and the YAML reference."""

    def check(self, value: Any, key: str, problems: Problems) -> None:
        if value is None and self.nullable:
            return
        self.check_value(value, key, problems)

    @abstractmethod
    def check_value(self, value: Any, key: str, problems: Problems) -> None:
        """Append every problem of a non-null ``value`` at ``key`` to ``problems``."""

    def resolve(self, value: Any) -> Any:
        return value


@dataclass
class Number(Field):
    """An integer (``integer=True``) or a real number within ``[minimum, maximum]``.

    ``exclusive_minimum`` makes the lower bound strict (``lr: must be a number > 0``).
    """

    integer: bool = False
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False

    def type_name(self) -> str:
        base = self.requirement().removeprefix("an ").removeprefix("a ")
        return f"{base} or null" if self.nullable else base

    def requirement(self) -> str:
        noun = "an integer" if self.integer else "a number"
        if self.integer and self.minimum == 1 and self.maximum is None:
            return "a positive integer"
        if self.minimum is not None and self.maximum is not None:
            return f"{noun} in [{self.minimum}, {self.maximum}]"
        if self.minimum is not None:
            return f"{noun} {'>' if self.exclusive_minimum else '>='} {self.minimum}"
        return noun

    def check_value(self, value: Any, key: str, problems: Problems) -> None:
        ok = is_int(value) if self.integer else is_number(value) and math.isfinite(value)
        if ok and self.minimum is not None:
            ok = value > self.minimum if self.exclusive_minimum else value >= self.minimum
        if ok and self.maximum is not None:
            ok = value <= self.maximum
        if not ok:
            problems.append((key, f"must be {self.requirement()}, got {value!r}"))


@dataclass
class Text(Field):
    """A string, optionally one of ``choices``."""

    choices: tuple[str, ...] = ()

    def type_name(self) -> str:
        base = "one of " + ", ".join(f"`{c}`" for c in self.choices) if self.choices else "string"
        return f"{base} or null" if self.nullable else base

    def check_value(self, value: Any, key: str, problems: Problems) -> None:
        if not isinstance(value, str):
            problems.append((key, f"must be a string, got {value!r}"))
        elif self.choices and value not in self.choices:
            problems.append(
                (
                    key,
                    f"must be one of {', '.join(self.choices)}, got {value!r}."
                    + did_you_mean(value, list(self.choices)),
                )
            )


@dataclass
class Flag(Field):
    """``true`` or ``false``."""

    def type_name(self) -> str:
        return "boolean"

    def check_value(self, value: Any, key: str, problems: Problems) -> None:
        if not isinstance(value, bool):
            problems.append((key, f"must be true or false, got {value!r}"))


@dataclass
class ListOf(Field):
    """A list whose items all match ``item``; a single item is accepted when ``scalar_ok``."""

    item: Field = field(default_factory=lambda: Number(integer=True, minimum=1))
    min_items: int = 1
    scalar_ok: bool = False

    def type_name(self) -> str:
        one = self.item.type_name()
        return f"{one} or list of {one}" if self.scalar_ok else f"list of {one}"

    def check_value(self, value: Any, key: str, problems: Problems) -> None:
        if self.scalar_ok and not isinstance(value, list):
            self.item.check(value, key, problems)
            return
        if not isinstance(value, list):
            problems.append((key, f"must be a list, got {value!r}"))
            return
        if len(value) < self.min_items:
            problems.append((key, f"must hold at least {self.min_items} item(s), got {value!r}"))
        for i, item in enumerate(value):
            self.item.check(item, join_key(key, i), problems)

    def resolve(self, value: Any) -> Any:
        if value is None:
            return None
        if self.scalar_ok and not isinstance(value, list):
            value = [value]
        return [self.item.resolve(v) for v in value]


@dataclass
class Section(Field):
    """A mapping with known keys; ``partial`` sections (stage overrides) fill no defaults."""

    fields: dict[str, Field] = field(default_factory=dict)
    partial: bool = False
    extra_check: Callable[[Mapping[str, Any], str, Problems], None] | None = None

    def type_name(self) -> str:
        return "mapping"

    def check_value(self, value: Any, key: str, problems: Problems) -> None:
        if not isinstance(value, Mapping):
            problems.append((key, f"must be a mapping of {', '.join(self.fields)}, got {value!r}"))
            return
        for name, sub in value.items():
            if name not in self.fields:
                problems.append(
                    (
                        join_key(key, str(name)),
                        f"unknown key; valid keys: {', '.join(self.fields)}."
                        + did_you_mean(str(name), list(self.fields)),
                    )
                )
                continue
            self.fields[name].check(sub, join_key(key, name), problems)
        if not self.partial:
            for name, sub in self.fields.items():
                if sub.default is REQUIRED and name not in value:
                    problems.append((join_key(key, name), "is required"))
        if self.extra_check is not None:
            self.extra_check(value, key, problems)

    def resolve(self, value: Any) -> Any:
        if value is None and self.nullable:
            return None
        value = value or {}
        out: dict[str, Any] = {}
        for name, sub in self.fields.items():
            if name in value:
                out[name] = sub.resolve(value[name])
            elif not self.partial:
                out[name] = sub.resolve(sub.default) if sub.default is not None else None
        return out


@dataclass
class Tagged(Field):
    """A list of mappings whose ``tag`` key (e.g. ``type``) selects the section that applies."""

    tag: str = "type"
    variants: dict[str, Section] = field(default_factory=dict)

    def type_name(self) -> str:
        return f"list of mappings with `{self.tag}`: " + " | ".join(self.variants)

    def check_value(self, value: Any, key: str, problems: Problems) -> None:
        if not isinstance(value, list) or not value:
            problems.append((key, f"must be a non-empty list, got {value!r}"))
            return
        for i, item in enumerate(value):
            item_key = join_key(key, i)
            if not isinstance(item, Mapping):
                problems.append((item_key, f"must be a mapping with a {self.tag!r}, got {item!r}"))
                continue
            kind = item.get(self.tag)
            if kind not in self.variants:
                problems.append(
                    (
                        join_key(item_key, self.tag),
                        f"must be one of {', '.join(self.variants)}, got {kind!r}."
                        + did_you_mean(str(kind), list(self.variants)),
                    )
                )
                continue
            self.variants[kind].check(item, item_key, problems)

    def resolve(self, value: Any) -> Any:
        return [self.variants[item[self.tag]].resolve(item) for item in value]
