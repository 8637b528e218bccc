"""Metrics along a flow's own trajectories: straightness, path energy, transport cost, NFE.

All integrate ``dZ_t/dt = v(Z_t, t)`` from ``Z_0 = x0`` with :func:`flowkit.sample` (keeping
the trajectory), evaluate ``v`` at every stored point and integrate over time with the
trapezoidal rule on the solver's own grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from flowkit.metrics.base import register_metric


@dataclass
class TrajectoryMetrics:
    """Everything measured along one solve.

    Attributes:
        straightness: ``S = ∫ E||(Z_end − Z_start)/T − v(Z_t, t)||² |dt|`` over the span,
            ``T = t_end − t_start`` (0 for straight paths; the rectified-flow paper's S on 0 → 1).
        path_energy: ``|T|·E∫||v(Z_t, t)||² |dt| / E||Z_end − Z_start||²`` (≥ 1, = 1 iff
            straight).
        transport_cost: ``E||Z_1 − Z_0||²``.
        nfe: field evaluations the solve made (not counting the metric's own evaluations).
    """

    straightness: float
    path_energy: float
    transport_cost: float
    nfe: int


def trajectory_metrics(
    field: Any,
    x0: Tensor,
    solver: str = "euler",
    steps: int | None = 100,
    cond: dict[str, Tensor] | None = None,
    **solver_options: Any,
) -> TrajectoryMetrics:
    """Straightness, normalised path energy, transport cost and NFE of one solve from ``x0``.

    Over the solve's span ``T = t_end − t_start`` (any span, forwards or backwards), with
    ``Δ = Z_end − Z_start``, ``g(t) = E||Δ/T − v(Z_t, t)||²`` and ``h(t) = E||v(Z_t, t)||²`` at the
    solver's stored times: ``S = Σ_k |t_{k+1} − t_k|(g_k + g_{k+1})/2`` and
    ``path energy = |T|·Σ_k |t_{k+1} − t_k|(h_k + h_{k+1})/2 / E||Δ||²`` (trapezoidal rule; for
    an exact solve ``path energy = 1 + |T|·S/E||Δ||²``). A straight constant-speed trajectory
    has ``v = Δ/T``: S = 0 and path energy 1 on every span.

    Args:
        field: a :class:`~flowkit.Flow` or a velocity field ``f(x, t)`` with t of shape ``(B,)``.
        x0: source samples ``(B, ...)``.
        solver: a registered solver name.
        steps: number of steps for fixed-step solvers (None for adaptive ones).
        cond: keyword conditions for the model.
        **solver_options: passed to :func:`flowkit.sample` (e.g. ``rtol``, ``atol``, ``shift``).
    """
    from flowkit.solvers import sample
    from flowkit.solvers.base import as_field

    if steps is not None:
        solver_options["steps"] = steps
    velocity = as_field(field, cond)
    with torch.no_grad():
        sol = sample(field, x0, solver=solver, return_trajectory=True, cond=cond, **solver_options)
        traj, times = sol.trajectory, sol.times.to(device=x0.device, dtype=x0.dtype)
        delta = (traj[-1] - traj[0]).flatten(1)
        span = float(sol.times[-1] - sol.times[0])
        vel = torch.stack(
            [velocity(z, t.expand(z.shape[0])).flatten(1) for z, t in zip(traj, times, strict=True)]
        )
    g = (delta / span - vel).pow(2).sum(-1).mean(-1)
    h = vel.pow(2).sum(-1).mean(-1)
    cost = float(delta.pow(2).sum(-1).mean())
    dt = torch.diff(times).abs()
    energy = abs(span) * float((dt * (h[1:] + h[:-1]) / 2).sum())
    return TrajectoryMetrics(
        straightness=float((dt * (g[1:] + g[:-1]) / 2).sum()),
        path_energy=_energy_ratio(energy, cost),
        transport_cost=cost,
        nfe=int(sol.nfe),
    )


@register_metric("straightness", inputs="flow")
def straightness(
    field: Any,
    x0: Tensor,
    solver: str = "euler",
    steps: int | None = 100,
    cond: dict[str, Tensor] | None = None,
    **solver_options: Any,
) -> float:
    """Straightness ``S = ∫ E||(Z_end − Z_start)/T − v(Z_t, t)||² |dt|`` along the trajectories.

    ``Z`` solves ``dZ_t = v(Z_t, t) dt`` from ``Z_0 = x0`` (rectified-flow paper, eq. for
    S(Z), there on 0 → 1; ``T = t_end − t_start`` for any other span). ``S ≥ 0``, and ``S = 0``
    iff every trajectory is a straight line traversed at constant speed, in which case one
    Euler step is exact. Arguments as in :func:`trajectory_metrics`.
    """
    return trajectory_metrics(field, x0, solver, steps, cond, **solver_options).straightness


@register_metric("path_energy", inputs="flow")
def path_energy(
    field: Any,
    x0: Tensor,
    solver: str = "euler",
    steps: int | None = 100,
    cond: dict[str, Tensor] | None = None,
    **solver_options: Any,
) -> float:
    """Normalised path energy ``|T|·E∫||v(Z_t, t)||² |dt| / E||Z_end − Z_start||²``.

    By Cauchy–Schwarz ``||Z_end − Z_start||² = ||∫v dt||² ≤ |T|·∫||v||² |dt|`` (``T = t_end −
    t_start``), so the ratio is ≥ 1, with equality for straight constant-speed paths. Arguments
    as in :func:`trajectory_metrics`.
    """
    return trajectory_metrics(field, x0, solver, steps, cond, **solver_options).path_energy


@register_metric("nfe", inputs="flow")
def nfe(
    field: Any,
    x0: Tensor,
    solver: str = "dopri5",
    steps: int | None = None,
    cond: dict[str, Tensor] | None = None,
    **solver_options: Any,
) -> int:
    """Number of field evaluations a solve from ``x0`` makes (e.g. dopri5 at rtol = atol = 1e-5).

    Arguments as in :func:`trajectory_metrics`; the solve does not keep its trajectory.
    """
    from flowkit.solvers import sample

    if steps is not None:
        solver_options["steps"] = steps
    with torch.no_grad():
        return int(sample(field, x0, solver=solver, cond=cond, **solver_options).nfe)


def _energy_ratio(energy: float, cost: float) -> float:
    """``energy / cost``; when nothing moves (cost 0) the ratio is 1 if the velocity is 0 too
    (trivially straight), and ``inf`` otherwise (a closed loop: motion without displacement)."""
    if cost > 0:
        return energy / cost
    return 1.0 if energy == 0 else math.inf
