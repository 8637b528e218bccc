"""The cosine (trigonometric, variance-preserving) schedule."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowkit.paths.schedules.base import Schedule
from flowkit.registry import SCHEDULES

HALF_PI = math.pi / 2


@SCHEDULES.register("cosine")
class CosineSchedule(Schedule):
    """Cosine schedule: ``a(t) = sin(πt/2), b(t) = cos(πt/2)`` (a² + b² = 1).

    ``λ(t) = 2 log tan(πt/2)``, ``λ'(t) = 2π / sin(πt)``, inverse ``t = (2/π)·atan(e^{λ/2})``.
    In the SD3/diffusers direction (``σ = 1 − t``) this is ``a = cos(πσ/2), b = sin(πσ/2)``.
    ``b`` and ``a'`` are computed as ``sin(π(1 − t)/2)`` so that ``b(1) = 0`` exactly in floating
    point (``cos(π/2)`` rounds to ±4e-8 in float32).
    """

    name = "cosine"

    def a(self, t: Tensor) -> Tensor:
        return torch.sin(HALF_PI * t)

    def b(self, t: Tensor) -> Tensor:
        return torch.sin(HALF_PI * (1.0 - t))

    def da(self, t: Tensor) -> Tensor:
        return HALF_PI * torch.sin(HALF_PI * (1.0 - t))

    def db(self, t: Tensor) -> Tensor:
        return -HALF_PI * torch.sin(HALF_PI * t)

    def dlog_snr(self, t: Tensor) -> Tensor:
        """``λ'(t) = 2π / sin(πt)``."""
        return 2.0 * math.pi / torch.sin(math.pi * t)

    def t_from_log_snr(self, lam: Tensor, iters: int = 60) -> Tensor:
        """Closed form ``t = (2/π)·atan(exp(λ/2))``."""
        return torch.atan(torch.exp(torch.as_tensor(lam) / 2.0)) / HALF_PI
