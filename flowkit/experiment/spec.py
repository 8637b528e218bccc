"""Schema fields for registry components (``name`` or ``{name: ..., **options}``) and solvers.

Validation asks the registries themselves: the name must be registered (else the valid names and
a did-you-mean), every option must be a keyword the factory accepts (``Registry.check_kwargs``),
options whose factory default is a number or a boolean must have that type, nested component
options (a coupling's ``source``, a path's ``schedule``) are checked recursively, and components
that are cheap to construct (distributions, paths, schedules, models, time samplers) are built
once so that their own argument errors (``hidden: -3``) are reported with the key path.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flowkit.experiment.fields import Field, ListOf, Number, Problems, is_int, is_number, join_key
from flowkit.registry import REGISTRIES, Registry, RegistryError, did_you_mean

COMPONENT_MODULES = (
    "flowkit.paths",
    "flowkit.solvers",
    "flowkit.couplings",
    "flowkit.data",
    "flowkit.models",
    "flowkit.training",
    "flowkit.metrics",
)
NESTED_OPTIONS = {
    "source": "distributions",
    "target": "distributions",
    "schedule": "schedules",
    "path": "paths",
    "time_sampler": "time_samplers",
}
BUILD_TO_CHECK = ("distributions", "paths", "schedules", "models", "time_samplers")
SAMPLE_ARGUMENTS = ("steps", "step_size", "grid", "shift")


def load_components() -> None:
    """Import every flowkit module that registers components, so the registries are complete."""
    for module in COMPONENT_MODULES:
        importlib.import_module(module)


def registry(kind: str) -> Registry:
    """The registry for ``kind`` (a key of ``flowkit.registry.REGISTRIES``), fully populated."""
    load_components()
    return REGISTRIES[kind]


def check_option_type(param: inspect.Parameter, value: Any, key: str, problems: Problems) -> None:
    """Compare ``value`` with the type of the factory's default (numbers and booleans only)."""
    default = param.default
    if value is None or default is inspect.Parameter.empty or default is None:
        return
    if isinstance(default, bool):
        if not isinstance(value, bool):
            problems.append((key, f"must be true or false, got {value!r}"))
    elif is_int(default):
        if not is_int(value):
            problems.append((key, f"must be an integer, got {value!r}"))
    elif isinstance(default, float) and not is_number(value):
        problems.append((key, f"must be a number, got {value!r}"))


def check_component(kind: str, spec: Any, key: str, problems: Problems, build: bool = True) -> None:
    """Append the problems of the component spec ``spec`` of registry ``kind`` at ``key``."""
    reg = registry(kind)
    if not isinstance(spec, str | Mapping):
        problems.append(
            (key, f"must be a {reg.kind} name or a mapping {{name: ..., **options}}, got {spec!r}")
        )
        return
    try:
        name, options = Registry.split_spec(spec, reg.kind)
        entry = reg.get(name)
    except RegistryError as err:
        problems.append((join_key(key, "name") if isinstance(spec, Mapping) else key, str(err)))
        return
    before = len(problems)
    params = entry.parameters()
    if not entry.accepts_any_keyword():
        for option in (o for o in options if o not in params):
            problems.append(
                (
                    join_key(key, option),
                    f"unknown option of {reg.kind} {name!r}; allowed options: "
                    f"{', '.join(params) or '(none)'}." + did_you_mean(option, list(params)),
                )
            )
        if len(problems) > before:
            return
    for option, value in options.items():
        option_key = join_key(key, option)
        if option in NESTED_OPTIONS and isinstance(value, str | Mapping):
            check_component(NESTED_OPTIONS[option], value, option_key, problems, build)
        elif option in params:
            check_option_type(params[option], value, option_key, problems)
    if build and kind in BUILD_TO_CHECK and len(problems) == before:
        try:
            reg.build(spec)
        except (ValueError, TypeError) as err:
            message = str(err)
            option = next((o for o in options if message.startswith(f"{o} ")), None)
            problems.append((join_key(key, option) if option else key, message))


@dataclass
class Component(Field):
    """A registry component: ``name`` or ``{name: ..., **options}`` (see ``flowkit list``)."""

    kind: str = "models"
    build_check: bool = True

    def type_name(self) -> str:
        base = f"{REGISTRIES[self.kind].kind} spec"
        return f"{base} or null" if self.nullable else base

    def check_value(self, value: Any, key: str, problems: Problems) -> None:
        check_component(self.kind, value, key, problems, self.build_check)


def split_solver(spec: str | Mapping[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Split a solver spec into ``(name, sample_arguments, solver_options)``.

    ``steps``, ``step_size``, ``grid`` and ``shift`` go to ``fk.sample`` itself; everything else
    (``rtol``, ``atol``, ...) is an option of the solver factory.
    """
    name, options = Registry.split_spec(spec, "solver")
    sample_args = {k: v for k, v in options.items() if k in SAMPLE_ARGUMENTS}
    solver_options = {k: v for k, v in options.items() if k not in SAMPLE_ARGUMENTS}
    return name, sample_args, solver_options


STEPS = Number(integer=True, minimum=1)


@dataclass
class Solver(Field):
    """A solver: ``name`` or ``{name, steps | step_size | grid, shift, **solver options}``.

    With ``many_steps`` the ``steps`` entry may be a list (one evaluation per step count).
    """

    many_steps: bool = False

    def type_name(self) -> str:
        return "solver spec"

    def check_value(self, value: Any, key: str, problems: Problems) -> None:
        if not isinstance(value, str | Mapping):
            problems.append(
                (key, f"must be a solver name or a mapping {{name: ...}}, got {value!r}")
            )
            return
        try:
            name, sample_args, options = split_solver(value)
            registry("solvers").get(name)
        except RegistryError as err:
            problems.append(
                (join_key(key, "name") if isinstance(value, Mapping) else key, str(err))
            )
            return
        steps_field = ListOf(item=STEPS, scalar_ok=True) if self.many_steps else STEPS
        checks = {
            "steps": steps_field,
            "step_size": Number(minimum=0, maximum=1, exclusive_minimum=True),
            "grid": ListOf(item=Number(minimum=0, maximum=1), min_items=2),
            "shift": Number(minimum=0, exclusive_minimum=True),
        }
        for arg, arg_value in sample_args.items():
            checks[arg].check(arg_value, join_key(key, arg), problems)
        given = [arg for arg in ("steps", "step_size", "grid") if arg in sample_args]
        if len(given) > 1:
            problems.append((key, f"give at most one of steps, step_size, grid; got {given}"))
        check_component("solvers", {"name": name, **options}, key, problems, build=False)
