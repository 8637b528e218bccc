"""DDIM-style first-order steps in the (x1, ε) parameterisation, for any affine path.

From ``x_t`` and the velocity ``v`` the path's 2×2 system gives ``(x̂1, ε̂)``
(:func:`flowkit.paths.conversions.x1_x0_from_velocity`); the step re-assembles them at the next
time ``s`` and may add fresh noise ``z ~ N(0, I)``::

    x_s = a(s)·x̂1 + sqrt(b(s)² − σ²)·ε̂ + σ·z

``σ = 0`` is DDIM (deterministic); on the rectified path it is exactly an Euler step
(``x_s = x_t + (s − t)·v``), on VP schedules it is DDIM. Both predictions are linear in
``(x_t, v)``, so the step is ``x_s = c_x·x_t + c_v·v + σ·z`` with per-step scalars computed once
per solve.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowkit.paths import conversions as cv
from flowkit.paths.affine import AffinePath
from flowkit.registry import SOLVERS
from flowkit.solvers.base import Context, Field, FixedStepSolver, resolve_path, stage_times


def renoise_coefficients(
    path: AffinePath, t: Tensor, s: Tensor, sigma: Tensor
) -> tuple[Tensor, Tensor]:
    """Scalars ``(c_x, c_v)`` with ``a(s)·x̂1 + k·ε̂ = c_x·x_t + c_v·v``, ``k = sqrt(b(s)² − σ²)``.

    ``x̂1`` and ``ε̂`` come from the path's 2×2 system at ``t``; their coefficients are the images
    of the basis ``(x_t, v) = (1, 0)`` and ``(0, 1)``. The system is solved at
    :meth:`AffinePath.velocity_time` (t clamped into ``[eps, 1 − eps]`` where ``det = a·b' − a'·b``
    is 0 or not finite at an endpoint), as :meth:`AffinePath.convert` does.

    Args:
        path: the affine path.
        t, s: current and next times, shape ``(T,)``.
        sigma: std of the fresh noise added at each step, ``(T,)``, ``0 ≤ σ ≤ b(s)``.
    """
    tc = path.velocity_time(t)
    a, b, da, db = (c.unsqueeze(-1) for c in path.coefficients(tc, tc))
    basis_x = torch.tensor([1.0, 0.0], dtype=t.dtype)
    basis_v = torch.tensor([0.0, 1.0], dtype=t.dtype)
    x1c, x0c = cv.x1_x0_from_velocity(basis_v, basis_x, a, b, da, db)
    k = (path.b(s) ** 2 - sigma**2).clamp_min(0.0).sqrt().unsqueeze(-1)
    c = path.a(s).unsqueeze(-1) * x1c + k * x0c
    return c[:, 0], c[:, 1]


class Renoise(FixedStepSolver):
    """First-order step ``x_s = c_x·x + c_v·v(x, t) + σ·z``; subclasses choose ``σ``."""

    def __init__(self, path: str | dict | AffinePath | None = None) -> None:
        self.path = path

    def noise_std(self, path: AffinePath, t: Tensor, s: Tensor) -> Tensor:
        """Std ``σ`` of the fresh noise added on each step ``t → s``."""
        return torch.zeros_like(t)

    def plan(self, grid: Tensor, x: Tensor, ctx: Context) -> list[tuple]:
        path = resolve_path(ctx.source, self.path, self.name)
        t, s = grid[:-1], grid[1:]
        sigma = self.noise_std(path, t, s)
        c_x, c_v = renoise_coefficients(path, t, s, sigma)
        times = [ts[0] for ts in stage_times(grid, (0.0,), x)]
        coefs = zip(times, c_x.tolist(), c_v.tolist(), sigma.tolist(), strict=True)
        return [(*c, ctx.generator) for c in coefs]

    def step(
        self,
        f: Field,
        x: Tensor,
        t: Tensor,
        c_x: float,
        c_v: float,
        sigma: float,
        generator: torch.Generator | None,
    ) -> Tensor:
        return renoise_step(x, f(x, t), c_x, c_v, sigma, generator)


def renoise_step(
    x: Tensor, v: Tensor, c_x: float, c_v: float, sigma: float, generator: torch.Generator | None
) -> Tensor:
    """``c_x·x + c_v·v + σ·z`` with ``z ~ N(0, I)`` drawn from ``generator`` (none if σ = 0)."""
    out = torch.mul(x, c_x).add_(v, alpha=c_v)
    if sigma > 0.0:
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        out.add_(z, alpha=sigma)
    return out


@SOLVERS.register("ddim")
class DDIM(Renoise):
    """DDIM-style step x_s = a(s)·x̂1 + b(s)·ε̂ (order 1, 1 NFE/step; = Euler on rectified).

    Args:
        path: the path to convert with when the field is not a Flow (a registered name, a spec
            or an :class:`AffinePath`); a Flow (or a field with ``.path``) supplies its own.
    """

    name = "ddim"
