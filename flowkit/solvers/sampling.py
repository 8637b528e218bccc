"""``fk.sample``: integrate a flow (or any velocity field) with a registered solver."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from flowkit.checks import OptionError, Real, shown
from flowkit.registry import SOLVERS
from flowkit.solvers.base import Context, Solution, Solver, as_field
from flowkit.solvers.grid import make_grid, time_span
from flowkit.solvers.guidance import CFGuidance
from flowkit.solvers.inputs import check_result, check_start
from flowkit.solvers.mask import TokenMask


@lru_cache(maxsize=256)
def _factory(name: str, option_names: frozenset[str]) -> Callable[..., Any]:
    """The factory of a registered solver, its option names checked once (signature inspection
    is slow, and this runs on every call of :func:`sample`)."""
    SOLVERS.check_kwargs(name, dict.fromkeys(option_names))
    return SOLVERS.get(name).factory


def build_solver(solver: str | Mapping | Solver, options: Mapping[str, Any]) -> Solver:
    """A solver from a registered name or spec (plus keyword options), or an instance as is."""
    if isinstance(solver, Solver):
        if options:
            raise TypeError(
                f"options {sorted(options)} cannot be combined with a built solver instance "
                f"{solver!r}; pass the solver by name, e.g. solver='dopri5', rtol=1e-6"
            )
        return solver
    if isinstance(solver, str):
        built = _factory(solver, frozenset(options))(**options)
    else:
        built = SOLVERS.build(solver, **options)
    if not isinstance(built, Solver):
        raise TypeError(f"solver {solver!r} did not build a flowkit Solver: {built!r}")
    return built


@dataclass
class SamplePlan:
    """A solver and the times it will step through (what :func:`plan` returns)."""

    solver: Solver
    times: Tensor


#: Keywords of :func:`sample` that only Python can give; every other keyword (those of
#: :func:`plan`, and the solver's options) may come from a YAML solver spec.
RUNTIME_ARGUMENTS = (
    "field",
    "x0",
    "solver",
    "return_trajectory",
    "progress",
    "generator",
    "cond",
    "guidance",
    "guidance_interval",
    "conditioning_mask",
    "grad",
    "check_finite",
)


#: The time-grid arguments of :func:`sample` (those of :func:`make_grid`): a YAML solver spec
#: may give them beside the solver's own options.
GRID_ARGUMENTS = tuple(inspect.signature(make_grid).parameters)


def plan(solver: str | Mapping | Solver = "euler", **arguments: Any) -> SamplePlan:
    """Build the solver and its time grid (or span) exactly as :func:`sample` does, without
    integrating: a cheap check of sampling arguments (``flowkit validate`` uses it).

    Args:
        solver: as for :func:`sample`.
        **arguments: the grid arguments (:data:`GRID_ARGUMENTS`: ``steps``, ``step_size``,
            ``grid``, ``t_start``, ``t_end``, ``shift``, ``mu``) and the solver's options.

    Raises:
        OptionError: naming the bad argument (``steps``, ``shift``, ``rtol``, ...).
        RegistryError: for an unknown solver or solver option.
    """
    grid_args = {k: arguments.pop(k) for k in GRID_ARGUMENTS if k in arguments}
    s = build_solver(solver, arguments)
    times = time_span(**grid_args) if s.adaptive else make_grid(**grid_args)
    return SamplePlan(s, times)


def guided_field(
    field: Any,
    cond: dict[str, Any] | None,
    guidance: float | None,
    interval: Sequence[float] | None,
) -> Any:
    """The field :func:`sample` integrates: ``field`` with its conditions, guided when
    ``guidance`` is given (a :class:`CFGuidance` with the null condition)."""
    if guidance is None:
        if interval is not None:
            raise OptionError("guidance_interval", "needs guidance=<scale>")
        return as_field(field, cond)
    if not cond:
        raise OptionError(
            "guidance",
            f"is {shown(guidance)} but there are no conditions to guide by: pass "
            "cond={'y': labels} (or {'c': vectors})",
        )
    return CFGuidance(field, Real()(guidance, "guidance"), cond, interval=interval)


def sample(
    field: Any,
    x0: Tensor,
    solver: str | Mapping | Solver = "euler",
    steps: int | None = None,
    step_size: float | None = None,
    grid: Sequence[float] | Tensor | None = None,
    t_start: float | None = None,
    t_end: float | None = None,
    shift: float | None = None,
    mu: float | None = None,
    spacing: str | Mapping | None = None,
    terminal: float | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
    generator: torch.Generator | None = None,
    cond: dict[str, Any] | None = None,
    guidance: float | None = None,
    guidance_interval: Sequence[float] | None = None,
    conditioning_mask: Tensor | None = None,
    grad: bool = False,
    check_finite: bool = True,
    **solver_options: Any,
) -> Solution:
    """Integrate ``dx/dt = v(x, t)`` from ``x0`` at ``t_start`` to ``t_end`` with ``solver``.

    Fixed-step solvers (``euler``, ``heun``, ``midpoint``, ``rk4``, ``rk4_38``, ``ddim``,
    ``stochastic``) need exactly one of ``steps``, ``step_size`` or ``grid``; adaptive ones
    (``dopri5``, ``bosh3``, ``adaptive_heun``, ``dopri8``) take none of them, only ``rtol`` and
    ``atol``.
    Backward integration (data → source, e.g. for inversion): ``t_start=1.0, t_end=0.0`` or a
    decreasing grid.

    Args:
        field: a :class:`~flowkit.flow.Flow` or any callable ``f(x, t)`` (``t`` of shape ``(B,)``).
        x0: start state ``(B, ...)``.
        solver: a registered solver name, a ``{name: ..., **options}`` spec or a Solver.
        steps, step_size, grid: the time grid of fixed-step solvers (see :func:`make_grid`).
        t_start, t_end: the span (default 0 → 1; taken from ``grid`` when given).
        shift: SD3/diffusers time shift ``s`` of a generated grid (s > 1: more steps near noise).
        mu: Flux's exponential shift (``s = e^mu``); at most one of shift/mu.
        spacing: where a generated grid's times lie (``uniform``, ``logsnr``, ``karras``,
            ``beta``; a name or ``{name: ..., **options}``), see :mod:`flowkit.solvers.spacing`.
        terminal: stretch a generated grid so its last step starts at this time (diffusers'
            ``shift_terminal = 1 − terminal``).
        return_trajectory: keep the states at every grid time (adaptive: at accepted steps).
        progress: show a tqdm progress bar (fixed-step solvers).
        generator: random numbers of stochastic solvers.
        cond: keyword conditions passed to the model, ``model(x, t, **cond)``.
        guidance: classifier-free guidance weight ``w``: integrate
            ``v_null + w·(v_cond − v_null)`` with the null condition of
            :mod:`flowkit.conditions` (label ``num_classes`` for ``y``, zeros for ``c``), both
            branches in one model call of 2B rows per evaluation (see
            :class:`~flowkit.solvers.guidance.CFGuidance`). None: no guidance (``cond`` as is).
        guidance_interval: ``(t_lo, t_hi)``: guide only for ``t_lo <= t <= t_hi`` (the
            conditional field, w = 1, elsewhere); needs ``guidance``.
        conditioning_mask: per-token mask ``(B, N)`` for ``x0`` of shape ``(B, N, ...)``, see
            :mod:`flowkit.solvers.mask`.
        grad: keep the autograd graph (default: run under ``torch.no_grad()``).
        check_finite: raise :class:`NonFiniteSampleError` for NaN/inf in ``x0`` or in the
            result (one reduction each; False skips both).
        **solver_options: options of the solver (``rtol``, ``atol``, ``path``, ``eta``, ...).

    Returns:
        :class:`Solution` with ``x``, ``nfe``, ``times``, ``trajectory`` and ``stats``. An empty
        batch (``B = 0``) is returned as it is, with ``nfe = 0``.

    Raises:
        TypeError: ``x0`` is not a floating tensor, or not in the flow's dtype and device.
        ValueError: a condition's batch size differs from ``x0``'s; bad grid arguments;
            ``guidance`` without conditions, with a condition that has no null, or for a model
            without ``num_classes`` (``y``); a bad ``guidance_interval`` (an ``OptionError``).
        NonFiniteSampleError: NaN or inf in ``x0`` or in the result (``check_finite``).

    Example:
        >>> import torch, flowkit as fk
        >>> sol = fk.sample(lambda x, t: -x, torch.ones(2, 3), solver="heun", steps=10)
        >>> sol.nfe
        20
    """
    given = (steps, step_size, grid, t_start, t_end, shift, mu, spacing, terminal)
    grid_args = dict(zip(GRID_ARGUMENTS, given, strict=True))
    planned = plan(solver, **grid_args, **solver_options)
    s, times = planned.solver, planned.times
    check_start(field, x0, cond, check_finite)
    f = guided_field(field, cond, guidance, guidance_interval)
    if x0.shape[0] == 0:
        return Solution(x0.clone(), 0, times, None, {"solver": type(s).__name__, "empty": True})
    ctx = Context(source=field, generator=generator, record=return_trajectory, progress=progress)
    if conditioning_mask is not None:
        if times[-1] < times[0]:
            raise ValueError("conditioning_mask applies to forward sampling (t_end > t_start) only")
        mask = TokenMask(conditioning_mask, x0)
        f = mask.field(f)
        if not s.adaptive:
            ctx.gates = mask.moving
    with nullcontext() if grad else torch.no_grad():
        sol = s.solve(f, x0, times, ctx)
    if check_finite:
        check_result(sol.x, type(s).__name__)
    return sol
