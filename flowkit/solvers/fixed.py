"""Explicit Runge–Kutta fixed-step solvers: euler, midpoint, heun, rk4, rk4_38.

Each method is one short :meth:`step` of the same shape (as in k-diffusion's ``sampling.py``):
``step(f, x, ts, h)`` with ``ts`` the precomputed stage times of the step and ``h = t_{n+1} − t_n``
(negative when integrating backwards). Every step is a full step of the method, the last one
included: NFE = ``nfe_per_step × steps``. Field outputs are never modified in place.

Correspondence with torchdiffeq's ``odeint(method=...)``: ``euler``, ``midpoint`` and ``heun``
(torchdiffeq's ``heun2``) are the same methods; torchdiffeq's ``rk4`` is the 3/8 rule, our
``rk4_38``; our ``rk4`` is the classic RK4 (torchdiffeq's internal ``rk4_step_func``).
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from flowkit.registry import SOLVERS
from flowkit.solvers.base import Context, Field, FixedStepSolver, stage_times, step_sizes


class RungeKutta(FixedStepSolver):
    """An explicit RK method: its stage ``nodes`` c_j fix the times ``t_n + c_j·h`` it evaluates."""

    nodes: ClassVar[tuple[float, ...]] = (0.0,)

    def plan(self, grid: Tensor, x: Tensor, ctx: Context) -> list[tuple]:
        return list(zip(stage_times(grid, self.nodes, x), step_sizes(grid), strict=True))


@SOLVERS.register("euler")
class Euler(RungeKutta):
    """Explicit Euler, order 1, 1 NFE per step: x' = x + h·f(x, t)."""

    name = "euler"

    def step(self, f: Field, x: Tensor, ts: tuple[Tensor, ...], h: float) -> Tensor:
        return x.add(f(x, ts[0]), alpha=h)


@SOLVERS.register("midpoint")
class Midpoint(RungeKutta):
    """Explicit midpoint, order 2, 2 NFE per step: x' = x + h·f(x + h/2·f(x, t), t + h/2)."""

    name = "midpoint"
    nodes = (0.0, 0.5)
    nfe_per_step = 2
    order = 2

    def step(self, f: Field, x: Tensor, ts: tuple[Tensor, ...], h: float) -> Tensor:
        k1 = f(x, ts[0])
        return x.add(f(x.add(k1, alpha=0.5 * h), ts[1]), alpha=h)


@SOLVERS.register("heun")
class Heun(RungeKutta):
    """Heun (explicit trapezoid), order 2, 2 NFE per step, the last step included.

    ``k1 = f(x, t)``, ``k2 = f(x + h·k1, t + h)``, ``x' = x + h/2·(k1 + k2)``. Unlike EDM/diffusers
    Heun samplers, the last step is *not* replaced by an Euler step (a flow's velocity is finite at
    t = 1), so ``steps`` steps cost ``2·steps`` evaluations; this is torchdiffeq's ``heun2``.
    """

    name = "heun"
    nodes = (0.0, 1.0)
    nfe_per_step = 2
    order = 2

    def step(self, f: Field, x: Tensor, ts: tuple[Tensor, ...], h: float) -> Tensor:
        k1 = f(x, ts[0])
        k2 = f(x.add(k1, alpha=h), ts[1])
        return x.add(k1 + k2, alpha=0.5 * h)


@SOLVERS.register("rk4")
class RK4(RungeKutta):
    """Classic Runge–Kutta, order 4, 4 NFE per step: x' = x + h/6·(k1 + 2k2 + 2k3 + k4).

    ``k1 = f(x, t)``, ``k2 = f(x + h/2·k1, t + h/2)``, ``k3 = f(x + h/2·k2, t + h/2)``,
    ``k4 = f(x + h·k3, t + h)``.
    """

    name = "rk4"
    nodes = (0.0, 0.5, 1.0)
    nfe_per_step = 4
    order = 4

    def step(self, f: Field, x: Tensor, ts: tuple[Tensor, ...], h: float) -> Tensor:
        k1 = f(x, ts[0])
        k2 = f(x.add(k1, alpha=0.5 * h), ts[1])
        k3 = f(x.add(k2, alpha=0.5 * h), ts[1])
        k4 = f(x.add(k3, alpha=h), ts[2])
        return x.add((k1 + k4).add_(k2 + k3, alpha=2.0), alpha=h / 6.0)


@SOLVERS.register("rk4_38")
class RK4ThreeEighths(RungeKutta):
    """Runge–Kutta 3/8 rule, order 4, 4 NFE per step (torchdiffeq's ``rk4``).

    ``k1 = f(x, t)``, ``k2 = f(x + h/3·k1, t + h/3)``, ``k3 = f(x + h·(k2 − k1/3), t + 2h/3)``,
    ``k4 = f(x + h·(k1 − k2 + k3), t + h)``, ``x' = x + h/8·(k1 + 3k2 + 3k3 + k4)``.
    """

    name = "rk4_38"
    nodes = (0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0)
    nfe_per_step = 4
    order = 4

    def step(self, f: Field, x: Tensor, ts: tuple[Tensor, ...], h: float) -> Tensor:
        k1 = f(x, ts[0])
        k2 = f(x.add(k1, alpha=h / 3.0), ts[1])
        k3 = f(x + h * (k2 - k1 / 3.0), ts[2])
        k4 = f(x + h * (k1 - k2 + k3), ts[3])
        return x.add((k1 + k4).add_(k2 + k3, alpha=3.0), alpha=h / 8.0)
