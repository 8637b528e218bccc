"""Read a YAML mapping into options declared with :func:`flowkit.options.option`.

:func:`parse_section` checks a mapping against a dataclass's declared fields and returns it with
the defaults filled in, appending every problem with its key path instead of stopping at the
first; :func:`construct` then builds the typed object from that mapping (nested sections
included), so the object's own checks run once more on exactly what the runner will use.

Field metadata read here (besides ``doc``, ``check`` and ``kind``):

- ``section``: the dataclass of a nested mapping (``training``, ``plots``, ...);
- ``partial``: the nested mapping holds overrides only (no defaults; null means none);
- ``defaults``: experiment defaults that replace the dataclass's own (``training.steps``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

from flowkit.checks import did_you_mean, shown
from flowkit.experiment.specs import Problems, check_component, join_key, report
from flowkit.options import MISSING, declared, field_default


def yaml_fields(cls: Any) -> dict[str, dataclasses.Field]:
    """The declared fields of ``cls`` that a YAML file may set, by name.

    A class with ``inline_options = OtherClass`` also takes every option of ``OtherClass`` as
    an override that defaults to null (inherit); :func:`construct` gathers those into its
    ``overrides`` field (an ``evaluate`` stage overrides the top-level ``evaluation``).
    """
    fields = {f.name: f for f in declared(cls) if f.metadata["yaml"]}
    inline = getattr(cls, "inline_options", None)
    for name, f in (yaml_fields(inline) if inline is not None else {}).items():
        fields[name] = inherited(f)
    return fields


def inherited(f: dataclasses.Field) -> dataclasses.Field:
    """A copy of field ``f`` that defaults to null, meaning "inherit the top-level value"."""
    copy_ = dataclasses.field(default=None, metadata={**f.metadata, "inherit": True})
    copy_.name = f.name
    return copy_


def parse_section(
    fields: Mapping[str, dataclasses.Field],
    value: Any,
    key: str,
    problems: Problems,
    partial: bool = False,
    defaults: Mapping[str, Any] | None = None,
    extra_keys: tuple[str, ...] = (),
) -> dict[str, Any] | None:
    """``value`` checked against ``fields``, with defaults filled in (none when ``partial``).

    Unknown keys, missing required keys and every field's own problems are appended to
    ``problems``; the return value is only meaningful when none were.
    """
    if value is None and partial:
        return None
    if not isinstance(value, Mapping):
        problems.append((key, f"must be a mapping of {', '.join(fields)}, got {shown(value)}"))
        return None
    known = [*extra_keys, *fields]
    for name in value:
        if name not in known:
            problems.append(
                (
                    join_key(key, str(name)),
                    f"unknown key; valid keys: {', '.join(known)}."
                    + did_you_mean(str(name), known),
                )
            )
    out: dict[str, Any] = {k: value[k] for k in extra_keys if k in value}
    for name, f in fields.items():
        if name in value:
            raw = value[name]
        elif partial:
            continue
        else:
            raw = (defaults or {}).get(name, field_default(f))
            if raw is MISSING:
                problems.append((join_key(key, name), "is required"))
                continue
        out[name] = parse_field(f, raw, key, problems)
    return out


def parse_field(f: dataclasses.Field, value: Any, parent: str, problems: Problems) -> Any:
    """One field's value (a nested section resolved), its problems appended at ``parent.name``."""
    key = join_key(parent, f.name)
    if value is None and f.metadata.get("inherit"):
        return None
    section = f.metadata.get("section")
    if section is not None:
        return parse_section(
            yaml_fields(section),
            value,
            key,
            problems,
            partial=f.metadata.get("partial", False),
            defaults=f.metadata.get("defaults"),
        )
    before = len(problems)
    if f.metadata["kind"] is not None and value is not None:
        check_component(f.metadata["kind"], value, key, problems)
    check = f.metadata["check"]
    if hasattr(check, "collect"):
        return check.collect(copy.deepcopy(value), key, problems)
    if check is not None and len(problems) == before:
        try:
            check(value, f.name)
        except (ValueError, TypeError) as err:
            report(problems, parent, err)
    return copy.deepcopy(value)


def construct(
    cls: Any, resolved: Mapping[str, Any], key: str, problems: Problems, **extra: Any
) -> Any:
    """The typed ``cls`` built from a resolved mapping (nested full sections built too); None,
    with the problem appended, if its own checks refuse it."""
    kwargs: dict[str, Any] = dict(extra)
    own = {f.name for f in dataclasses.fields(cls)}
    for name, f in yaml_fields(cls).items():
        if name not in resolved:
            continue
        value = resolved[name]
        if name not in own:
            kwargs.setdefault("overrides", {})[name] = value
            continue
        section = f.metadata.get("section")
        if section is not None and value is not None and not f.metadata.get("partial", False):
            value = construct(section, value, join_key(key, name), problems)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        report(problems, key, err)
        return None
