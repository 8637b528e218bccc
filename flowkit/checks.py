"""Shared argument checks: each raises an :class:`OptionError` that carries the option's name.

A check is a small callable object, ``check(value, name) -> value``, that returns the (possibly
normalised) value or raises. The same objects check ``fk.train``'s keywords, solver grids and
the YAML experiment, so a value that passes validation is exactly a value the code accepts; the
error's ``option`` gives the key path without matching message text, and ``describe()`` gives
the allowed values in words for errors and the generated YAML reference.

Example:
    >>> from flowkit.checks import Integer, OptionError
    >>> Integer(minimum=1)(3, "steps")
    3
    >>> try:
    ...     Integer(minimum=1)(0, "steps")
    ... except OptionError as err:
    ...     print(err.option, "|", err.detail)
    steps | must be a positive integer, got 0
"""

from __future__ import annotations

import difflib
import math
import reprlib
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

_SHORT = reprlib.Repr()
_SHORT.maxstring = 80
_SHORT.maxother = 80
_SHORT.maxlevel = 3


class OptionError(ValueError):
    """A bad value of the option ``option`` (a name, or a dotted path for nested options).

    ``str(err)`` reads ``"<option> <detail>"``, e.g. ``"steps must be a positive integer, got 0"``.
    """

    def __init__(self, option: str, detail: str) -> None:
        self.option = option
        self.detail = detail
        super().__init__(f"{option} {detail}")

    def __reduce__(self) -> tuple[type[OptionError], tuple[str, str]]:
        return type(self), (self.option, self.detail)

    def within(self, parent: str) -> OptionError:
        """The same error for the option nested under ``parent`` (``parent.option``)."""
        return OptionError(f"{parent}.{self.option}" if parent else self.option, self.detail)


class OptionTypeError(OptionError, TypeError):
    """An option given a value of the wrong kind (an object where a name or mapping is expected)."""


def shown(value: Any) -> str:
    """``repr(value)``, shortened for error messages (a huge or deeply nested value is never
    echoed whole)."""
    return _SHORT.repr(value)


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    """``" Did you mean 'x'?"`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def is_int(value: Any) -> bool:
    """True for Python integers (``bool`` excluded)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for ints and floats (``bool`` excluded)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


class Check(ABC):
    """A check of one option's value: ``check(value, name)`` returns it or raises."""

    @abstractmethod
    def __call__(self, value: Any, name: str) -> Any:
        """Return ``value`` (normalised) or raise :class:`OptionError` naming ``name``."""

    @abstractmethod
    def describe(self) -> str:
        """The allowed values in words (``"a positive integer"``)."""

    def fail(self, value: Any, name: str) -> OptionError:
        return OptionError(name, f"must be {self.describe()}, got {shown(value)}")


def bounds_text(noun: str, lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    """``"a number in [0, 1)"``, ``"an integer >= 0"``, ``"a number > 0"``, ..."""
    if lo is not None and hi is not None:
        return f"{noun} in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{noun} {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{noun} {'<' if hi_open else '<='} {hi}"
    return noun


@dataclass(frozen=True)
class Integer(Check):
    """An integer (``bool`` excluded) in ``[minimum, maximum]``."""

    minimum: int | None = None
    maximum: int | None = None

    def __call__(self, value: Any, name: str) -> int:
        ok = is_int(value)
        ok = ok and (self.minimum is None or value >= self.minimum)
        if not ok or (self.maximum is not None and value > self.maximum):
            raise self.fail(value, name)
        return value

    def describe(self) -> str:
        if self.minimum == 1:
            return "a positive integer" + (f" up to {self.maximum}" if self.maximum else "")
        return bounds_text("an integer", self.minimum, self.maximum, False, False)


@dataclass(frozen=True)
class Real(Check):
    """A finite real number (int or float, returned as float) within the given bounds."""

    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False

    def __call__(self, value: Any, name: str) -> float:
        if not is_number(value) or not math.isfinite(value):
            raise self.fail(value, name)
        lo, hi = self.minimum, self.maximum
        if lo is not None and (value <= lo if self.exclusive_minimum else value < lo):
            raise self.fail(value, name)
        if hi is not None and (value >= hi if self.exclusive_maximum else value > hi):
            raise self.fail(value, name)
        return float(value)

    def describe(self) -> str:
        return bounds_text(
            "a number", self.minimum, self.maximum, self.exclusive_minimum, self.exclusive_maximum
        )


@dataclass(frozen=True)
class OneOf(Check):
    """One of ``choices`` (strings), with a did-you-mean suggestion when it is not."""

    choices: tuple[str, ...]

    def __call__(self, value: Any, name: str) -> str:
        if not isinstance(value, str) or value not in self.choices:
            raise OptionError(
                name,
                f"must be one of {', '.join(self.choices)}, got {shown(value)}."
                + did_you_mean(str(value), self.choices),
            )
        return value

    def describe(self) -> str:
        return "one of " + ", ".join(f"`{c}`" for c in self.choices)


@dataclass(frozen=True)
class Text(Check):
    """A string."""

    def __call__(self, value: Any, name: str) -> str:
        if not isinstance(value, str):
            raise self.fail(value, name)
        return value

    def describe(self) -> str:
        return "a string"


@dataclass(frozen=True)
class Flag(Check):
    """``True`` or ``False``."""

    def __call__(self, value: Any, name: str) -> bool:
        if not isinstance(value, bool):
            raise OptionError(name, f"must be true or false, got {shown(value)}")
        return value

    def describe(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class Nullable(Check):
    """``None`` or a value that passes ``inner``."""

    inner: Check

    def __call__(self, value: Any, name: str) -> Any:
        return None if value is None else self.inner(value, name)

    def describe(self) -> str:
        return f"{self.inner.describe()} or null"


@dataclass(frozen=True)
class ListOf(Check):
    """A list of at least ``min_items`` items that each pass ``item``; a single item is taken as a
    one-item list when ``scalar_ok``. Item errors name ``name[i]``."""

    item: Check
    min_items: int = 1
    scalar_ok: bool = False

    def __call__(self, value: Any, name: str) -> list[Any]:
        if self.scalar_ok and not isinstance(value, list | tuple):
            return [self.item(value, name)]
        if not isinstance(value, list | tuple):
            raise OptionError(name, f"must be a list of {self.item.describe()}, got {shown(value)}")
        if len(value) < self.min_items:
            raise OptionError(
                name, f"must hold at least {self.min_items} item(s), got {shown(value)}"
            )
        return [self.item(v, f"{name}[{i}]") for i, v in enumerate(value)]

    def describe(self) -> str:
        one = self.item.describe()
        return f"{one} or a list of them" if self.scalar_ok else f"a list, each item {one}"


@dataclass(frozen=True)
class Custom(Check):
    """A check by a function ``fn(value, name) -> value``, described by ``text``."""

    fn: Callable[[Any, str], Any]
    text: str

    def __call__(self, value: Any, name: str) -> Any:
        return self.fn(value, name)

    def describe(self) -> str:
        return self.text


@dataclass(frozen=True)
class FileName(Check):
    """A safe name for a run or stage directory: a non-empty string of at most ``255 - reserve``
    UTF-8 bytes (``reserve``: bytes the caller appends, e.g. a run's timestamp), without ``/``,
    ``\\``, NUL or other control characters, not starting with ``.`` (so neither ``.`` nor
    ``..``, nor a hidden or temporary name)."""

    reserve: int = 0

    def __call__(self, value: Any, name: str) -> str:
        if not isinstance(value, str):
            raise OptionError(name, f"must be a string, got {type(value).__name__}")
        limit = 255 - self.reserve
        if not value:
            raise OptionError(name, "must not be empty")
        if any(c in value for c in "/\\"):
            raise OptionError(
                name, f"must not contain '/' or '\\' (it names a directory), got {value!r}"
            )
        if any(unicodedata.category(c) == "Cc" for c in value):
            raise OptionError(name, "must not contain NUL or other control characters")
        if value.startswith("."):
            raise OptionError(
                name, f"must not start with '.' (no '.', '..' or hidden names), got {value!r}"
            )
        size = len(value.encode("utf-8"))
        if size > limit:
            raise OptionError(name, f"must be at most {limit} bytes in UTF-8, got {size}")
        return value

    def describe(self) -> str:
        return "a file name (no `/`, no leading `.`)"


def at_most(limit: int) -> Integer:
    """A positive integer up to ``limit``: a resource size (steps, samples, widths) with a sane
    upper bound, so a typo such as ``1e12`` is an error before any work instead of an
    out-of-memory crash in the middle of it."""
    return Integer(minimum=1, maximum=limit)


POSITIVE_INT = Integer(minimum=1)
NON_NEGATIVE_INT = Integer(minimum=0)
POSITIVE_REAL = Real(minimum=0, exclusive_minimum=True)
PROBABILITY = Real(minimum=0, maximum=1)
FILE_NAME = FileName()
