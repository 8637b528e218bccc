"""Multistep exponential integrators for any affine path: ``dpm_solver_pp`` and ``unipc``.

Each step costs one field evaluation: the velocity ``v(x_t, t)`` is converted by the path into
the prediction of the end the solve runs to (``x̂1`` forwards, ``ε̂`` backwards, through
:meth:`AffinePath.convert`, clamped as it documents), and the step integrates the ODE exactly in
``ℓ = log(p/q)`` (half the log-SNR) with that prediction interpolated by a polynomial through the
current and previous ones (:mod:`flowkit.solvers.exponential`).

* ``dpm_solver_pp`` (DPM-Solver++(k)M, Lu et al. 2022), ``order`` 1, 2 or 3. Order 1 is
  ``ddim``.
* ``unipc`` (UniPC-p with B(h) = e^{−h} − 1, "bh2", Zhao et al. 2023): the UniP predictor, then
  the UniC corrector once the next evaluation is known. The corrector reuses that evaluation
  (which the next step needs anyway), so it costs no extra NFE; the state at the last time is
  not corrected (that would take one more evaluation).

Start and end. Step ``i`` uses order ``min(order, i + 1)`` (lower-order start: there is no history
yet) and, with ``lower_order_final`` (default), ``min(·, steps − i)`` (``dpm_solver_pp``: on
grids of fewer than 15 steps; longer ones lower the final step only, as the published
DPM-Solver and diffusers do). Where ℓ is infinite at an
end of the grid (``a = 0`` at t = 0: rectified, cosine, polynomial, linear_vp, edm; ``b = 0`` at
t = 1: every schedule but ``vp``'s a(0) > 0 start), the first-order part of a step uses the
exact ratio ``e^{−h} = p_t·q_s/(p_s·q_t)``: the final step of a forward solve into t = 1 is
``x_1 = x̂1(x_{t_{n−1}}, t_{n−1})`` (as DDIM's), and higher-order terms see ℓ at the endpoint
guard ``[eps, 1 − eps]`` of the path (finite). Backward solves (t = 1 → 0) are the mirror image.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from flowkit.checks import Flag, Integer, OneOf
from flowkit.paths.affine import AffinePath
from flowkit.registry import SOLVERS
from flowkit.solvers.base import Context, Field, Solution, Solver, resolve_path, stage_times
from flowkit.solvers.exponential import (
    StepCoefficients,
    dpm_solver_pp_weights,
    flow_time_weights,
    unipc_weights,
)

Weights = tuple[tuple[float, ...], tuple[float, ...] | None]
INTERPOLATIONS = ("logsnr", "flow_time")


#: DPM-Solver++ lowers the order of its last two steps only on grids shorter than this (the
#: published multistep recipe, as diffusers' DPMSolverMultistepScheduler); longer grids lower
#: the final step only.
DPM_LOWER_ORDER_MAX_STEPS = 15


def step_orders(steps: int, order: int, lower_order_final: bool) -> list[int]:
    """Order of each step: ``min(order, i + 1)``, and ``min(·, steps − i)`` if lower_order_final."""
    return [min(order, i + 1, steps - i if lower_order_final else order) for i in range(steps)]


def dpm_step_orders(steps: int, order: int, lower_order_final: bool) -> list[int]:
    """DPM-Solver++'s orders: ``min(order, i + 1)``; with lower_order_final, ``min(·, steps − i)``
    on grids of fewer than :data:`DPM_LOWER_ORDER_MAX_STEPS` steps, else first order for the
    final step only (diffusers' rule, with its final sigma 0)."""
    if steps < DPM_LOWER_ORDER_MAX_STEPS:
        return step_orders(steps, order, lower_order_final)
    orders = step_orders(steps, order, False)
    if lower_order_final:
        orders[-1] = 1
    return orders


def usable_order(ell: Sequence[float], i: int, k: int) -> int:
    """The order ≤ k of step i whose λ-polynomial has distinct nodes: ℓ at the clamped times may
    coincide for grid times inside ``[0, eps]`` or ``[1 − eps, 1]``, and then the step (and
    history) sizes in ℓ used by the higher-order terms vanish: such points are not used."""
    if ell[i + 1] <= ell[i]:
        return 1
    j = 1
    while j < k and ell[i - j] < ell[i - j + 1]:
        j += 1
    return j


@dataclass(frozen=True)
class GridCoefficients:
    """The arriving coefficients on a grid (float64 values as Python lists).

    ``(p, q) = (a, b)`` forwards, ``(b, a)`` backwards; ``pc, qc`` at the conversion times
    :meth:`AffinePath.velocity_time`; ``ell = log(p/q)`` at times clamped into
    ``[eps, 1 − eps]`` (finite); ``u = q/(p + q)`` (the flow time's complement, in [0, 1]).
    """

    p: list[float]
    q: list[float]
    pc: list[float]
    qc: list[float]
    ell: list[float]
    u: list[float]

    @classmethod
    def on(cls, path: AffinePath, grid: Tensor) -> GridCoefficients:
        swap = bool(grid[-1] < grid[0])

        def arriving(t: Tensor) -> tuple[Tensor, Tensor]:
            a, b = path.a(t), path.b(t)
            return (b, a) if swap else (a, b)

        p, q = arriving(grid)
        pc, qc = arriving(path.velocity_time(grid))
        p_clamped, q_clamped = arriving(path.clamp_time(grid))
        ell = torch.log(p_clamped) - torch.log(q_clamped)
        return cls(*(c.tolist() for c in (p, q, pc, qc, ell, q / (p + q))))

    def ratio(self, i: int) -> float:
        """``e^{−h} = p_t·q_s / (p_s·q_t)`` of step i (exact, 0 where ℓ is infinite)."""
        return (self.pc[i] * self.q[i + 1]) / (self.p[i + 1] * self.qc[i])

    def flow_time(self, i: int, nodes: Sequence[float]) -> list[float]:
        """:func:`flow_time_weights` of step i on the predictions at ``nodes``."""
        return flow_time_weights(self.p[i + 1], self.q[i + 1], self.pc[i], self.qc[i], nodes)


class Multistep(Solver):
    """A linear multistep exponential integrator (1 NFE per step); subclasses give the weights.

    Args:
        order: the method's order (1, 2 or 3).
        interpolation: the variable in which the predictions are interpolated: ``"logsnr"``
            (λ, the published methods, as diffusers) or ``"flow_time"`` (``τ = a/(a + b)``,
            finite at both ends; see :func:`~flowkit.solvers.exponential.flow_time_weights`).
        lower_order_final: lower the order over the last steps (``min(order, steps − i)``),
            as diffusers does for short grids; more stable at few steps.
        path: the path when the field is not a Flow (see :class:`~flowkit.solvers.ddim.DDIM`).
    """

    max_order: ClassVar[int] = 3

    def __init__(
        self,
        order: int = 2,
        interpolation: str = "logsnr",
        lower_order_final: bool = True,
        path: str | dict | AffinePath | None = None,
    ) -> None:
        self.order = Integer(minimum=1, maximum=self.max_order)(order, "order")
        self.interpolation = OneOf(INTERPOLATIONS)(interpolation, "interpolation")
        self.lower_order_final = Flag()(lower_order_final, "lower_order_final")
        self.path = path

    def __repr__(self) -> str:
        return f"{type(self).__name__}(order={self.order}, interpolation={self.interpolation!r})"

    def step_orders(self, steps: int) -> list[int]:
        """The order of each of ``steps`` steps (:func:`step_orders`)."""
        return step_orders(steps, self.order, self.lower_order_final)

    @abstractmethod
    def weights(self, g: GridCoefficients, i: int, k: int) -> Weights:
        """Predictor (and corrector) weights of step ``i`` at order ``k``."""

    def coefficients(self, path: AffinePath, grid: Tensor) -> list[StepCoefficients]:
        """Every step's scalars, from the grid alone (float64, once per solve)."""
        g = GridCoefficients.on(path, grid)
        orders = self.step_orders(len(grid) - 1)
        if self.interpolation == "logsnr":
            orders = [usable_order(g.ell, i, k) for i, k in enumerate(orders)]
        return [
            StepCoefficients(g.q[i + 1] / g.qc[i], *self.weights(g, i, k))
            for i, k in enumerate(orders)
        ]

    def solve(self, f: Field, x: Tensor, times: Tensor, ctx: Context) -> Solution:
        path = resolve_path(ctx.source, self.path, self.name)
        dst = "x1" if times[-1] > times[0] else "epsilon"
        plan = self.coefficients(path, times)
        ts = [s[0] for s in stage_times(times, (0.0,), x)]
        starts = times[:-1].tolist()
        gates = [None] * len(plan) if ctx.gates is None else [ctx.gates(t) for t in starts]
        traj = [x] if ctx.record else None
        preds: list[Tensor] = []
        prev: tuple[Tensor, StepCoefficients] | None = None
        for t, step, gate in zip(ts, plan, gates, strict=True):
            m = path.convert(f(x, t), src="velocity", dst=dst, x_t=x, t=t)
            if prev is not None and prev[1].corrector is not None:
                x = _gated(gate, combine(prev[1].c_x, prev[0], prev[1].corrector, [m, *preds]), x)
                if traj is not None:
                    traj[-1] = x
            preds = [m, *preds][: self.max_order]
            prev = (x, step)
            x = _gated(gate, combine(step.c_x, x, step.w, preds), x)
            if traj is not None:
                traj.append(x)
        return Solution(
            x=x,
            nfe=len(plan),
            times=times,
            trajectory=None if traj is None else torch.stack(traj),
            stats={"solver": self.name, "steps": len(plan), "order": self.order},
        )


def combine(c_x: float, x: Tensor, w: Sequence[float], preds: Sequence[Tensor]) -> Tensor:
    """``c_x·x + Σ_j w_j·preds_j`` (one multistep step; also :class:`FlowScheduler`'s)."""
    out = torch.mul(x, c_x)
    for wj, m in zip(w, preds, strict=False):
        out.add_(m, alpha=wj)
    return out


def _gated(gate: Tensor | None, new: Tensor, old: Tensor) -> Tensor:
    return new if gate is None else torch.where(gate, new, old)


@SOLVERS.register("dpm_solver_pp")
class DPMSolverPP(Multistep):
    """DPM-Solver++ multistep (order 1-3, 1 NFE/step) in log-SNR with x1-prediction; order 1 = ddim.

    Args:
        order: 1, 2 (default, "2M") or 3 ("3M").
        lower_order_final: lower the order over the last steps (default True): the last two
            steps on grids of fewer than 15 steps, the final step only on longer ones (the
            published recipe, as diffusers).
        path: the path when the field is not a Flow.

    Example:
        >>> import torch, flowkit as fk
        >>> sol = fk.sample(lambda x, t: -x, torch.ones(2, 2), "dpm_solver_pp", steps=8,
        ...                 order=2, path="rectified")
        >>> sol.nfe
        8
    """

    name = "dpm_solver_pp"

    def step_orders(self, steps: int) -> list[int]:
        """DPM-Solver++'s rule (:func:`dpm_step_orders`)."""
        return dpm_step_orders(steps, self.order, self.lower_order_final)

    def weights(self, g: GridCoefficients, i: int, k: int) -> Weights:
        if self.interpolation == "flow_time":
            return tuple(g.flow_time(i, g.u[i::-1][:k])), None
        ells = g.ell[i::-1][:k]
        h = g.ell[i + 1] - g.ell[i]
        r = [(ells[j] - ells[j + 1]) / h for j in range(k - 1)]
        return tuple(dpm_solver_pp_weights(g.p[i + 1], g.ratio(i), h, r)), None


@SOLVERS.register("unipc")
class UniPC(Multistep):
    """UniPC (bh2) predictor-corrector multistep, order 1-3, 1 NFE/step (corrector reuses it).

    Args:
        order: the predictor's order, 1, 2 (default) or 3; the corrector raises it by one.
        lower_order_final: lower the order over the last steps (default True).
        path: the path when the field is not a Flow.
    """

    name = "unipc"

    def weights(self, g: GridCoefficients, i: int, k: int) -> Weights:
        if self.interpolation == "flow_time":
            nodes = g.u[i::-1][:k]
            return tuple(g.flow_time(i, nodes)), tuple(g.flow_time(i, [g.u[i + 1], *nodes]))
        h = g.ell[i + 1] - g.ell[i]
        ells = g.ell[i::-1][:k]
        rks = [(ell - ells[0]) / h for ell in ells[1:]]
        p_s, ratio = g.p[i + 1], g.ratio(i)
        return (
            tuple(unipc_weights(p_s, ratio, h, rks, corrector=False)),
            tuple(unipc_weights(p_s, ratio, h, rks, corrector=True)),
        )
