"""Options declared once: dataclass fields that carry their documentation and their check.

``option(doc, check, default)`` is a :func:`dataclasses.field` whose metadata holds the option's
one-line documentation, its :class:`~flowkit.checks.Check` and, for registry components, the
registry ``kind``. :func:`check_options` (called from ``__post_init__``) runs every check, so an
options dataclass (``TrainConfig``, a YAML stage) is valid as soon as it exists; the experiment
layer reads the same metadata to parse YAML with key paths and to generate ``docs/yaml.md``.

Example:
    >>> from dataclasses import dataclass
    >>> from flowkit.checks import POSITIVE_INT
    >>> @dataclass
    ... class Options:
    ...     steps: int = option("Optimisation steps.", POSITIVE_INT, 100)
    ...     def __post_init__(self) -> None:
    ...         check_options(self)
    >>> Options(steps=0)
    Traceback (most recent call last):
    ...
    flowkit.checks.OptionError: steps must be a positive integer, got 0
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

from flowkit.checks import Check

MISSING: Any = dataclasses.MISSING


def option(
    doc: str,
    check: Check | Callable[[Any, str], Any] | None = None,
    default: Any = MISSING,
    *,
    kind: str | None = None,
    yaml: bool = True,
    **extra: Any,
) -> Any:
    """A dataclass field documented by ``doc`` and checked by ``check(value, name)``.

    Args:
        doc: one line for docstrings and the YAML reference.
        check: returns the (normalised) value or raises :class:`~flowkit.checks.OptionError`.
        default: the default (lists and dicts are copied for each instance); omit for a
            required option.
        kind: the registry (``"time_samplers"``, ``"models"``, ...) of a component spec.
        yaml: False for options that only Python can give (callables, tensors, directories).
        **extra: more metadata for readers of the fields (the experiment layer's ``section``).
    """
    metadata = {"doc": doc, "check": check, "kind": kind, "yaml": yaml, **extra}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def declared(cls: Any) -> Iterator[dataclasses.Field]:
    """The fields of dataclass ``cls`` declared with :func:`option`."""
    return (f for f in dataclasses.fields(cls) if "doc" in f.metadata)


def field_default(f: dataclasses.Field) -> Any:
    """The default of field ``f`` (a fresh copy for factories), or :data:`MISSING`."""
    if f.default_factory is not MISSING:
        return f.default_factory()
    return f.default


def check_options(obj: Any) -> None:
    """Run the check of every declared option of ``obj`` and store the normalised values.

    Checks that are not callable (the experiment layer's collectors of several problems, which
    it runs itself while parsing) are skipped.
    """
    for f in declared(obj):
        check = f.metadata["check"]
        if callable(check):
            setattr(obj, f.name, check(getattr(obj, f.name), f.name))
