"""Adaptive-step solvers through torchdiffeq: dopri5, bosh3, adaptive_heun, dopri8.

The field is wrapped once per solve in a :class:`_CountingField`, which counts evaluations (the
``nfe`` of the solution) and receives torchdiffeq's ``callback_accept_step`` /
``callback_reject_step`` calls (available for its Runge–Kutta adaptive solvers), giving the
accepted and rejected step counts and the accepted step times used as the trajectory.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor
from torchdiffeq import odeint

from flowkit.checks import POSITIVE_INT, POSITIVE_REAL
from flowkit.registry import SOLVERS
from flowkit.solvers.base import Context, Field, Solution, Solver


class _CountingField:
    """``func(t, y)`` for torchdiffeq: expands the scalar t to ``(B,)`` and counts calls.

    t is clamped into the span ``[lo, hi]``: torchdiffeq's initial step-size heuristic probes
    the field at ``t0 + h0``, which can lie past ``t_end`` (accepted steps never do, see
    ``step_t`` in :meth:`Adaptive.solve`); fields defined on [0, 1] only must not see it.
    """

    def __init__(self, f: Field, batch: int, record: bool, lo: float, hi: float) -> None:
        self.f = f
        self.batch = batch
        self.lo, self.hi = lo, hi
        self.nfe = 0
        self.accepted = 0
        self.rejected = 0
        self.times: list[float] | None = [] if record else None
        self.states: list[Tensor] | None = [] if record else None

    def __call__(self, t: Tensor, y: Tensor) -> Tensor:
        self.nfe += 1
        return self.f(y, t.clamp(self.lo, self.hi).to(y.dtype).expand(self.batch))

    def callback_accept_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.accepted += 1
        if self.times is not None and self.states is not None:
            self.times.append(float(t0))
            self.states.append(y0)

    def callback_reject_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.rejected += 1


class Adaptive(Solver):
    """An embedded Runge–Kutta pair with error control ``|err| ≤ atol + rtol·|x|`` (RMS norm).

    Args:
        rtol: relative tolerance.
        atol: absolute tolerance.
        max_num_steps: cap on the number of steps (torchdiffeq raises beyond it).
        first_step: initial step size (None: torchdiffeq's automatic choice).
    """

    adaptive = True
    method: ClassVar[str] = "dopri5"

    def __init__(
        self,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        max_num_steps: int = 100_000,
        first_step: float | None = None,
    ) -> None:
        self.rtol = POSITIVE_REAL(rtol, "rtol")
        self.atol = POSITIVE_REAL(atol, "atol")
        self.options: dict = {"max_num_steps": POSITIVE_INT(max_num_steps, "max_num_steps")}
        if first_step is not None:
            self.options["first_step"] = POSITIVE_REAL(first_step, "first_step")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rtol={self.rtol}, atol={self.atol})"

    def solve(self, f: Field, x: Tensor, times: Tensor, ctx: Context) -> Solution:
        lo, hi = sorted((float(times[0]), float(times[-1])))
        func = _CountingField(f, x.shape[0], ctx.record, lo, hi)
        span = times.to(x.device)
        # step_t = the final time: no step overshoots it, so the field is never evaluated
        # outside [t_start, t_end] (torchdiffeq otherwise steps past t_end and interpolates back).
        options = {**self.options, "step_t": span[-1:]}
        out = odeint(
            func, x, span, rtol=self.rtol, atol=self.atol, method=self.method, options=options
        )
        x1 = out[-1]
        if func.times is not None and func.states is not None:
            t_out = torch.tensor([*func.times, float(times[-1])], dtype=torch.float64)
            trajectory = torch.stack([*func.states, x1])
        else:
            t_out, trajectory = times, None
        stats = {
            "solver": self.name,
            "steps": func.accepted,
            "accepted": func.accepted,
            "rejected": func.rejected,
        }
        return Solution(x=x1, nfe=func.nfe, times=t_out, trajectory=trajectory, stats=stats)


@SOLVERS.register("dopri5")
class Dopri5(Adaptive):
    """Dormand–Prince 5(4), adaptive (torchdiffeq dopri5); options rtol, atol."""

    name = "dopri5"
    method = "dopri5"


@SOLVERS.register("bosh3")
class Bosh3(Adaptive):
    """Bogacki–Shampine 3(2), adaptive (torchdiffeq bosh3); options rtol, atol."""

    name = "bosh3"
    method = "bosh3"


@SOLVERS.register("adaptive_heun")
class AdaptiveHeun(Adaptive):
    """Heun–Euler 2(1), adaptive (torchdiffeq adaptive_heun); options rtol, atol."""

    name = "adaptive_heun"
    method = "adaptive_heun"


@SOLVERS.register("dopri8")
class Dopri8(Adaptive):
    """Dormand–Prince 8(7), adaptive (torchdiffeq dopri8); options rtol, atol."""

    name = "dopri8"
    method = "dopri8"
