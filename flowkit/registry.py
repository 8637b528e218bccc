"""Registries: every component a YAML file or ``flowkit list`` can name.

A :class:`Registry` maps names to factories (classes or functions) with a one-line description.
``build`` accepts a name, a mapping ``{"name": ..., **kwargs}``, or an already built object
(returned as is), so a spec can be nested inside another spec.

Example:
    >>> from flowkit.registry import SCHEDULES
    >>> SCHEDULES.names()[:3]  # doctest: +SKIP
    ['cosine', 'custom', 'edm']
    >>> s = SCHEDULES.build({"name": "polynomial", "n": 2})  # doctest: +SKIP

Each registry declares its ``base``, the type its factories build (as ``"module:Name"`` so that
this module imports none of them): ``build`` checks what a factory returns against it.

A registry built with ``importable=True`` (models) also builds ``"package.module:Name"``: any
importable factory, without registering it (``model: {name: "my_package.nets:UNet", width: 64}``).

Third-party packages register components through the ``flowkit.plugins`` entry-point group: each
entry point names a module (or a callable taking no argument); it is imported (or called) once,
the first time any registry is queried, and registers its components with the decorators below.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar

from flowkit.checks import did_you_mean

T = TypeVar("T")

TypeRef = type | str
"""A type, or its dotted location ``"package.module:Name"`` resolved on first use."""

PLUGIN_GROUP = "flowkit.plugins"


class RegistryError(ValueError):
    """An unknown name or a bad specification given to a registry."""


class RegistryTypeError(RegistryError, TypeError):
    """An object of the wrong type: given to a registry instead of a spec, or built by a factory."""


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


def resolve_type(ref: TypeRef) -> type:
    """The type ``ref`` names: a type itself, or ``"package.module:Name"`` (imported now)."""
    if isinstance(ref, type):
        return ref
    module, _, name = ref.partition(":")
    found = getattr(importlib.import_module(module), name)
    if not isinstance(found, type):
        raise TypeError(f"{ref!r} names a {type(found).__name__}, not a type")
    return found


def import_entry(ref: str, kind: str) -> Entry:
    """An unregistered factory named ``"package.module:Name"`` (``Name`` may be dotted).

    Raises:
        RegistryError: the module cannot be imported, or has no such (callable) attribute.
    """
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise RegistryError(f"{kind} {ref!r}: write an importable factory as 'package.module:Name'")
    try:
        found: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise RegistryError(
            f"{kind} {ref!r}: cannot import module {module_name!r} ({err}); is the package "
            "installed, or its directory on PYTHONPATH?"
        ) from err
    except Exception as err:  # the user's module fails while importing: say which and why
        raise RegistryError(
            f"{kind} {ref!r}: importing module {module_name!r} failed: "
            f"{type(err).__name__}: {err}"
        ) from err
    where = module_name
    for part in attr.split("."):
        if not hasattr(found, part):
            public = [n for n in dir(found) if not n.startswith("_")]
            raise RegistryError(
                f"{kind} {ref!r}: {where!r} has no attribute {part!r}." + did_you_mean(part, public)
            )
        found, where = getattr(found, part), f"{where}.{part}"
    if not callable(found):
        raise RegistryError(
            f"{kind} {ref!r} is a {type(found).__name__}, not a class or factory function"
        )
    doc = (inspect.getdoc(found) or "").strip().splitlines()
    return Entry(ref, found, doc[0] if doc else "")


def split_spec(spec: str | Mapping[str, Any], kind: str = "component") -> tuple[str, dict]:
    """Split a component spec into ``(name, options)``.

    A spec is a name (``"heun"``) or a mapping with a ``name`` key and the options
    (``{"name": "dopri5", "rtol": 1e-6}``); ``kind`` names the component in errors.

    Raises:
        RegistryError: a mapping without ``name``, or a spec that is neither form.

    Example:
        >>> split_spec({"name": "dopri5", "rtol": 1e-6}, "solver")
        ('dopri5', {'rtol': 1e-06})
    """
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping):
        if "name" not in spec:
            raise RegistryError(
                f"{kind} spec {dict(spec)!r} has no 'name' key; write {{name: ..., **options}}"
            )
        return spec["name"], {k: v for k, v in spec.items() if k != "name"}
    raise RegistryError(
        f"{kind} spec must be a name or a mapping with a 'name' key, got {type(spec).__name__}"
    )


class Registry(Generic[T]):
    """A named collection of component factories.

    Args:
        kind: what the registry holds, in words ("solver", "schedule", ...); used in errors.
        base: the type every factory builds (a type or ``"module:Name"``); ``build`` checks
            results against it. None: anything goes.
        accepts: the type an already built object given to ``build`` must have (e.g. a protocol
            such as "has ``sample``"); defaults to ``base``.
        importable: names ``"package.module:Name"`` build that importable factory
            (:func:`import_entry`).
    """

    def __init__(
        self,
        kind: str,
        base: TypeRef | None = None,
        accepts: TypeRef | None = None,
        importable: bool = False,
    ) -> None:
        self.kind = kind
        self.importable = importable
        self._base = base
        self._accepts = accepts if accepts is not None else base
        self._entries: dict[str, Entry] = {}

    @property
    def base(self) -> type | None:
        """The type factories build (resolved from ``"module:Name"`` on first use), or None."""
        if isinstance(self._base, str):
            self._base = resolve_type(self._base)
        return self._base

    @property
    def accepts(self) -> type | None:
        """The type of objects ``build`` passes through unchanged (None: any object)."""
        if isinstance(self._accepts, str):
            self._accepts = resolve_type(self._accepts)
        return self._accepts

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
        if self.importable and isinstance(name, str) and ":" in name:
            return import_entry(name, self.kind)
        if name not in self._entries:
            valid = self.names()
            importable = " (or an importable 'package.module:Name')" if self.importable else ""
            raise RegistryError(
                f"unknown {self.kind} {name!r}; valid {self.kind} names: {', '.join(valid)}"
                f"{importable}." + did_you_mean(name, valid)
            )
        return self._entries[name]

    split_spec = staticmethod(split_spec)  # Registry.split_spec: the module-level function

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

        Instances of ``accepts`` (any non-str, non-mapping object when it is None) are returned
        unchanged, so already built components can be passed wherever a spec is accepted.

        Raises:
            RegistryError: an unknown name or option.
            RegistryTypeError: (also a ``TypeError``) an object that is not an ``accepts``, or
                a factory that returned something that is not a ``base``.
        """
        if not isinstance(spec, str | Mapping):
            accepts = self.accepts
            if accepts is None or isinstance(spec, accepts):
                return spec
            raise RegistryTypeError(
                f"{self.kind} spec must be a name, a mapping or a {accepts.__name__}, "
                f"got {type(spec).__name__}"
            )
        name, kwargs = split_spec(spec, self.kind)
        kwargs.update(overrides)
        self.check_kwargs(name, kwargs)
        built = self.get(name).factory(**kwargs)
        base = self.base
        if base is not None and not isinstance(built, base):
            raise RegistryTypeError(
                f"{self.kind} {name!r} built a {type(built).__name__}, not a {base.__name__}; "
                f"every {self.kind} factory must return a {base.__qualname__}"
            )
        return built


SAMPLEABLE = "flowkit.couplings.base:Sampleable"

PATHS: Registry = Registry("path", "flowkit.paths.affine:AffinePath")
SCHEDULES: Registry = Registry("schedule", "flowkit.paths.schedules.base:Schedule")
SOLVERS: Registry = Registry("solver", "flowkit.solvers.base:Solver")
SPACINGS: Registry = Registry("spacing", "flowkit.solvers.spacing:Spacing")
COUPLINGS: Registry = Registry("coupling", "flowkit.couplings.base:Coupling")
DISTRIBUTIONS: Registry = Registry("distribution", "flowkit.data.base:Distribution", SAMPLEABLE)
MODELS: Registry = Registry("model", "torch.nn:Module", importable=True)
TIME_SAMPLERS: Registry = Registry(
    "time sampler", "flowkit.training.time_samplers:TimeSampler", SAMPLEABLE
)
METRICS: Registry = Registry("metric", "flowkit.metrics.base:Metric")

REGISTRIES: dict[str, Registry] = {
    "paths": PATHS,
    "schedules": SCHEDULES,
    "solvers": SOLVERS,
    "spacings": SPACINGS,
    "couplings": COUPLINGS,
    "distributions": DISTRIBUTIONS,
    "models": MODELS,
    "time_samplers": TIME_SAMPLERS,
    "metrics": METRICS,
}
