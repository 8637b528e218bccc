"""Stable Diffusion's "scaled linear" β schedule, made continuous."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowkit.paths.schedules.diffusion import DiffusionSchedule
from flowkit.registry import SCHEDULES


def _antiderivative(q: Tensor) -> Tensor:
    """``F(q) = ∫ log(1 − q²) dq = (1 + q)·log(1 + q) − (1 − q)·log(1 − q) − 2q``."""
    return (1.0 + q) * torch.log1p(q) - (1.0 - q) * torch.log1p(-q) - 2.0 * q


@SCHEDULES.register("ldm_linear")
class LDMLinearSchedule(DiffusionSchedule):
    """Stable Diffusion (LDM) scaled-linear schedule: sqrt(β) linear from 0.00085 to 0.012.

    Discrete (diffusers ``beta_schedule="scaled_linear"``): ``β_j = (r₀ + (r₁ − r₀)·j/(N − 1))²``
    with ``r = sqrt(β)``, ``ᾱ_i = Π_{j≤i} (1 − β_j)``. Continuous version in diffusion time
    ``s = 1 − t``: place step j at ``u_j = (j + ½)/N`` so ``q(u) = sqrt(β(u)) = c + d·u`` with
    ``d = N(r₁ − r₀)/(N − 1)``, ``c = r₀ − ½(r₁ − r₀)/(N − 1)``, and::

        G(s) = −log ᾱ(s) = −N ∫₀ˢ log(1 − q(u)²) du = −(N/d)·(F(q(s)) − F(q(0)))
        F(q) = (1 + q)·log(1 + q) − (1 − q)·log(1 − q) − 2q

    The midpoint rule makes ``ᾱ((i + 1)/N)`` match diffusers' ``alphas_cumprod[i]`` to ~1e-7
    relative, i.e. ``a(1 − (i + 1)/N)² ≈ alphas_cumprod[i]`` (see :meth:`time_of_timestep`).
    ``a(0) = sqrt(ᾱ(1)) ≈ 0.068`` (``reaches_endpoints = False``) and ``b'(1) = −∞``.
    ``G`` is evaluated in float64 (the difference of F values cancels in float32).
    ``t_from_log_snr`` uses the bisection of :class:`Schedule`.

    Args:
        beta_start: β of the first training step.
        beta_end: β of the last training step.
        num_train_timesteps: N, the number of discrete steps.
    """

    name = "ldm_linear"

    def __init__(
        self,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        num_train_timesteps: int = 1000,
    ) -> None:
        if not (0.0 < beta_start < beta_end < 1.0):
            raise ValueError(
                f"beta_start and beta_end must satisfy 0 < beta_start < beta_end < 1; "
                f"got beta_start={beta_start}, beta_end={beta_end}"
            )
        if int(num_train_timesteps) != num_train_timesteps or num_train_timesteps < 2:
            raise ValueError(
                f"num_train_timesteps must be an integer >= 2; got {num_train_timesteps}"
            )
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        self.num_train_timesteps = n = int(num_train_timesteps)
        r0, r1 = math.sqrt(self.beta_start), math.sqrt(self.beta_end)
        self._slope = n * (r1 - r0) / (n - 1)
        self._offset = r0 - 0.5 * (r1 - r0) / (n - 1)
        self._f0 = float(_antiderivative(torch.tensor(self._offset, dtype=torch.float64)))

    def __repr__(self) -> str:
        return (
            f"LDMLinearSchedule(beta_start={self.beta_start:g}, beta_end={self.beta_end:g}, "
            f"num_train_timesteps={self.num_train_timesteps})"
        )

    def time_of_timestep(self, i: Tensor | int) -> Tensor:
        """Our time of diffusers' discrete timestep ``i``: ``t = 1 − (i + 1)/N``."""
        return 1.0 - (torch.as_tensor(i, dtype=torch.float64) + 1.0) / self.num_train_timesteps

    def integrated_rate(self, s: Tensor) -> Tensor:
        """``G(s) = −(N/d)·(F(c + d·s) − F(c))`` (computed in float64)."""
        q = self._offset + self._slope * s.to(torch.float64)
        g = -(self.num_train_timesteps / self._slope) * (_antiderivative(q) - self._f0)
        return g.to(s.dtype)

    def rate(self, s: Tensor) -> Tensor:
        """``G'(s) = −N·log(1 − q(s)²)`` with ``q(s) = c + d·s``."""
        q = self._offset + self._slope * s
        return -self.num_train_timesteps * torch.log1p(-q * q)
