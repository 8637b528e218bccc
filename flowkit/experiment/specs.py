"""Checks of registry component specs and solver specs, with key paths.

A component is ``name`` or ``{name: ..., **options}``; its registry says what is allowed: the
name must be registered (else the valid names and a did-you-mean), every option must be a
keyword of the factory, options whose factory default is a number or a boolean must have that
type, nested component options (a coupling's ``source``, a path's ``schedule``) are checked
recursively, and components that are cheap to construct are built once, so their own
:class:`~flowkit.checks.OptionError` (``hidden: -3``) is reported at ``model.hidden``.

A solver spec is checked by :func:`flowkit.solvers.plan`, the code ``fk.sample`` itself runs:
its sampling arguments are the keywords of ``plan`` (``steps``, ``step_size``, ``grid``,
``t_start``, ``t_end``, ``shift``, ``mu``), everything else is an option of the solver.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from flowkit.checks import POSITIVE_INT, ListOf, OptionError, did_you_mean, is_int, is_number, shown
from flowkit.registry import REGISTRIES, Registry, RegistryError, load_plugins, split_spec

Problems = list[tuple[str, str]]
#: A component spec: a registered name or ``{name: ..., **options}``.
Spec = str | dict[str, Any]
NESTED_OPTIONS = {
    "source": "distributions",
    "target": "distributions",
    "schedule": "schedules",
    "path": "paths",
    "time_sampler": "time_samplers",
}
BUILD_TO_CHECK = ("distributions", "paths", "schedules", "models", "time_samplers", "metrics")


def join_key(parent: str, child: str | int) -> str:
    """Key path of ``child`` under ``parent``: ``a.b``, ``a[3]``, ``a[3].b`` or ``b``."""
    if isinstance(child, int):
        return f"{parent}[{child}]"
    if not child:
        return parent
    if not parent:
        return child
    return f"{parent}{child}" if child.startswith("[") else f"{parent}.{child}"


def report(problems: Problems, key: str, err: Exception) -> None:
    """Append ``err`` at ``key``, or at ``key.<option>`` for an :class:`OptionError`."""
    if isinstance(err, OptionError):
        problems.append((join_key(key, err.option), err.detail))
    else:
        problems.append((key, str(err)))


def registry(kind: str) -> Registry:
    """The registry for ``kind`` (a key of ``flowkit.registry.REGISTRIES``), fully populated."""
    load_plugins()
    return REGISTRIES[kind]


def check_option_type(param: inspect.Parameter, value: Any, key: str, problems: Problems) -> None:
    """Compare ``value`` with the type of the factory's default (numbers and booleans only)."""
    default = param.default
    if value is None or default is inspect.Parameter.empty or default is None:
        return
    if isinstance(default, bool):
        if not isinstance(value, bool):
            problems.append((key, f"must be true or false, got {shown(value)}"))
    elif is_int(default):
        if not is_int(value):
            problems.append((key, f"must be an integer, got {shown(value)}"))
    elif isinstance(default, float) and not is_number(value):
        problems.append((key, f"must be a number, got {shown(value)}"))


def check_options(
    kind: str,
    name: str,
    options: Mapping[str, Any],
    key: str,
    problems: Problems,
    extra: tuple[str, ...] = (),
) -> bool:
    """Check the option names and simple types of component ``name``; True if all are known."""
    entry = registry(kind).get(name)
    params = entry.parameters()
    allowed = [*extra, *params]
    if not entry.accepts_any_keyword():
        unknown = [o for o in options if o not in allowed]
        for option in unknown:
            problems.append(
                (
                    join_key(key, option),
                    f"unknown option of {registry(kind).kind} {name!r}; allowed options: "
                    f"{', '.join(allowed) or '(none)'}." + did_you_mean(option, allowed),
                )
            )
        if unknown:
            return False
    for option, value in options.items():
        option_key = join_key(key, option)
        if option in NESTED_OPTIONS and isinstance(value, str | Mapping):
            check_component(NESTED_OPTIONS[option], value, option_key, problems)
        elif option in params:
            check_option_type(params[option], value, option_key, problems)
    return True


def check_component(kind: str, spec: Any, key: str, problems: Problems, build: bool = True) -> None:
    """Append the problems of the component spec ``spec`` of registry ``kind`` at ``key``."""
    reg = registry(kind)
    if not isinstance(spec, str | Mapping):
        problems.append(
            (
                key,
                f"must be a {reg.kind} name or a mapping {{name: ..., **options}}, "
                f"got {shown(spec)}",
            )
        )
        return
    try:
        name, options = split_spec(spec, reg.kind)
        reg.get(name)
    except RegistryError as err:
        problems.append((join_key(key, "name") if isinstance(spec, Mapping) else key, str(err)))
        return
    before = len(problems)
    check_options(kind, name, options, key, problems)
    if build and kind in BUILD_TO_CHECK and len(problems) == before:
        try:
            # models are built on the meta device: their checks run, no memory is allocated
            with torch.device("meta") if kind == "models" else nullcontext():
                reg.build(spec)
        except (ValueError, TypeError) as err:
            report(problems, key, err)


def check_solver(spec: Any, key: str, problems: Problems, many_steps: bool = False) -> None:
    """Append the problems of solver ``spec`` (``steps`` may be a list with ``many_steps``).

    An experiment's solvers map sources to samples, so they must integrate the whole span
    ``0 -> 1`` (a grid ``[1, 0]`` or ``[0, 0.5]`` would be scored as samples of the target).
    """
    from flowkit.solvers import plan
    from flowkit.solvers.sampling import GRID_ARGUMENTS
    from flowkit.solvers.spec import SolverSpec

    if not isinstance(spec, str | Mapping):
        problems.append(
            (key, f"must be a solver name or a mapping {{name: ...}}, got {shown(spec)}")
        )
        return
    try:
        parsed = SolverSpec.parse(spec)
        registry("solvers").get(parsed.name)
    except RegistryError as err:
        problems.append((join_key(key, "name") if isinstance(spec, Mapping) else key, str(err)))
        return
    if not check_options("solvers", parsed.name, parsed.options, key, problems, GRID_ARGUMENTS):
        return
    steps = parsed.sample_args.get("steps")
    if steps is not None:
        try:
            (ListOf(POSITIVE_INT, scalar_ok=True) if many_steps else POSITIVE_INT)(steps, "steps")
        except OptionError as err:
            report(problems, key, err)
            return
    for run in parsed.runs():
        try:
            times = plan(**run.arguments()).times
        except (ValueError, TypeError) as err:
            report(problems, key, err)
            return
        if (float(times[0]), float(times[-1])) != (0.0, 1.0):
            span = f"{float(times[0])} -> {float(times[-1])}"
            problems.append(
                (key, f"must integrate from t = 0 (source) to t = 1 (data); got {span}")
            )
            return


@dataclass(frozen=True)
class Collect:
    """A check that appends every problem of a value (``fn(value, key, problems)``) instead of
    raising at the first; the parser runs it with the key path of the value."""

    fn: Callable[[Any, str, Problems], Any]
    text: str

    def collect(self, value: Any, key: str, problems: Problems) -> Any:
        """Append the problems of ``value``; return it resolved (``fn``'s result if any)."""
        resolved = self.fn(value, key, problems)
        return value if resolved is None else resolved

    def describe(self) -> str:
        return self.text


def check_solvers(value: Any, key: str, problems: Problems) -> None:
    """A non-empty list of solver specs whose ``steps`` may be lists."""
    if not isinstance(value, list) or not value:
        problems.append((key, f"must be a non-empty list of solver specs, got {shown(value)}"))
        return
    for i, spec in enumerate(value):
        check_solver(spec, join_key(key, i), problems, many_steps=True)


ONE_SOLVER = Collect(check_solver, "a solver spec")
