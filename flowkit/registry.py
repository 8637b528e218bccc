"""Registries: every component a YAML file or ``flowkit list`` can name.

A :class:`Registry` maps names to factories (classes or functions) with a one-line description.
``build`` accepts a name, a mapping ``{"name": ..., **kwargs}``, or an already built object
(returned as is), so a spec can be nested inside another spec.

Example:
    >>> from flowkit.registry import SCHEDULES
    >>> SCHEDULES.names()[:3]  # doctest: +SKIP
    ['cosine', 'custom', 'edm']
    >>> s = SCHEDULES.build({"name": "polynomial", "n": 2})  # doctest: +SKIP

Third-party packages register components through the ``flowkit.plugins`` entry-point group: each
entry point names a module (or a callable taking no argument); it is imported (or called) once,
the first time any registry is queried, and registers its components with the decorators below.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar

T = TypeVar("T")

PLUGIN_GROUP = "flowkit.plugins"


class RegistryError(ValueError):
    """An unknown name or a bad specification given to a registry."""


@dataclass(frozen=True)
class Entry:
    """One registered component: its name, factory and one-line description."""

    name: str
    factory: Callable[..., Any]
    description: str

    def parameters(self) -> dict[str, inspect.Parameter]:
        """Keyword parameters the factory accepts (empty if it cannot be inspected)."""
        try:
            sig = inspect.signature(self.factory)
        except (TypeError, ValueError):
            return {}
        return {
            n: p
            for n, p in sig.parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }

    def accepts_any_keyword(self) -> bool:
        try:
            sig = inspect.signature(self.factory)
        except (TypeError, ValueError):
            return True
        return any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


_plugins_loaded = False

#: flowkit's own subpackages whose import registers the built-in components.
BUILTIN_MODULES = (
    "flowkit.paths",
    "flowkit.models",
    "flowkit.data",
    "flowkit.solvers",
    "flowkit.couplings",
    "flowkit.training",
    "flowkit.metrics",
)


def load_plugins() -> None:
    """Import flowkit's built-in components and every ``flowkit.plugins`` entry point, once.

    Registries call this before any lookup, so ``SOLVERS.names()`` is complete even when only
    ``flowkit.registry`` has been imported.
    """
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    for ep in metadata.entry_points(group=PLUGIN_GROUP):
        obj = ep.load()
        if callable(obj) and not inspect.ismodule(obj):
            obj()


def did_you_mean(name: str, choices: list[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


class Registry(Generic[T]):
    """A named collection of component factories.

    Args:
        kind: what the registry holds, in words ("solver", "schedule", ...); used in errors.
        base: optional base class; ``build`` passes through instances of it unchanged.
    """

    def __init__(self, kind: str, base: type | None = None) -> None:
        self.kind = kind
        self.base = base
        self._entries: dict[str, Entry] = {}

    def register(
        self, name: str, description: str | None = None
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a class or factory function under ``name``.

        The description defaults to the first line of the factory's docstring.
        """

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            self.add(name, factory, description)
            return factory

        return deco

    def add(self, name: str, factory: Callable[..., T], description: str | None = None) -> None:
        """Register ``factory`` under ``name`` (an error if the name is taken)."""
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries:
            raise RegistryError(f"{self.kind} {name!r} is already registered")
        doc = description or (inspect.getdoc(factory) or "").strip().splitlines()
        if isinstance(doc, list):
            doc = doc[0] if doc else ""
        self._entries[name] = Entry(name, factory, doc)

    def names(self) -> list[str]:
        """Sorted registered names."""
        load_plugins()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        """Registered entries, sorted by name."""
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._entries

    def get(self, name: str) -> Entry:
        """The entry for ``name``; an unknown name raises with the valid names and a suggestion."""
        load_plugins()
        if name not in self._entries:
            valid = self.names()
            raise RegistryError(
                f"unknown {self.kind} {name!r}; valid {self.kind} names: {', '.join(valid)}."
                + did_you_mean(name, valid)
            )
        return self._entries[name]

    @staticmethod
    def split_spec(spec: str | Mapping[str, Any], kind: str = "component") -> tuple[str, dict]:
        """Split a spec into ``(name, kwargs)``."""
        if isinstance(spec, str):
            return spec, {}
        if isinstance(spec, Mapping):
            if "name" not in spec:
                raise RegistryError(
                    f"{kind} spec {dict(spec)!r} has no 'name' key; write {{name: ..., **options}}"
                )
            kwargs = {k: v for k, v in spec.items() if k != "name"}
            return spec["name"], kwargs
        raise RegistryError(
            f"{kind} spec must be a name or a mapping with a 'name' key, got {type(spec).__name__}"
        )

    def check_kwargs(self, name: str, kwargs: Mapping[str, Any]) -> None:
        """Raise if ``kwargs`` holds an option the factory of ``name`` does not accept."""
        entry = self.get(name)
        if entry.accepts_any_keyword():
            return
        allowed = entry.parameters()
        unknown = [k for k in kwargs if k not in allowed]
        if unknown:
            raise RegistryError(
                f"{self.kind} {name!r} got unknown option(s) {', '.join(map(repr, unknown))}; "
                f"allowed options: {', '.join(allowed) or '(none)'}."
                + did_you_mean(unknown[0], list(allowed))
            )

    def build(self, spec: Any, **overrides: Any) -> T:
        """Build a component from a name, a ``{name: ..., **kwargs}`` mapping or an instance.

        Instances of ``base`` (and any non-str, non-mapping object when there is no base) are
        returned unchanged, so already built components can be passed wherever a spec is accepted.
        """
        if not isinstance(spec, str | Mapping):
            if self.base is None or isinstance(spec, self.base):
                return spec
            raise RegistryError(
                f"{self.kind} spec must be a name, a mapping or a {self.base.__name__}, "
                f"got {type(spec).__name__}"
            )
        name, kwargs = self.split_spec(spec, self.kind)
        kwargs.update(overrides)
        self.check_kwargs(name, kwargs)
        return self.get(name).factory(**kwargs)


PATHS: Registry = Registry("path")
SCHEDULES: Registry = Registry("schedule")
SOLVERS: Registry = Registry("solver")
COUPLINGS: Registry = Registry("coupling")
DISTRIBUTIONS: Registry = Registry("distribution")
MODELS: Registry = Registry("model")
TIME_SAMPLERS: Registry = Registry("time sampler")
METRICS: Registry = Registry("metric")

REGISTRIES: dict[str, Registry] = {
    "paths": PATHS,
    "schedules": SCHEDULES,
    "solvers": SOLVERS,
    "couplings": COUPLINGS,
    "distributions": DISTRIBUTIONS,
    "models": MODELS,
    "time_samplers": TIME_SAMPLERS,
    "metrics": METRICS,
}
