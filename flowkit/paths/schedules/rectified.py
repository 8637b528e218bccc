"""The rectified (linear, straight-line) schedule."""

from __future__ import annotations

import torch
from torch import Tensor

from flowkit.paths.schedules.base import Schedule
from flowkit.registry import SCHEDULES


@SCHEDULES.register("rectified")
class RectifiedSchedule(Schedule):
    """Rectified flow: ``a(t) = t, b(t) = 1 − t`` (straight lines, constant velocity x1 − x0).

    ``λ(t) = 2 log(t / (1 − t))`` and its inverse ``t = sigmoid(λ / 2)``.
    """

    name = "rectified"

    def a(self, t: Tensor) -> Tensor:
        return t

    def b(self, t: Tensor) -> Tensor:
        return 1.0 - t

    def da(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def db(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)

    def interpolate(self, t: Tensor, x0: Tensor, x1: Tensor) -> Tensor:
        """``t·x1 + (1 − t)·x0`` in one pass, ``torch.lerp(x0, x1, t)`` (exact at t = 0 and
        t = 1)."""
        return torch.lerp(x0, x1, t)

    def velocity(self, t: Tensor, x0: Tensor, x1: Tensor) -> Tensor:
        """``x1 − x0`` (``a' = 1``, ``b' = −1``), without materialising the derivatives."""
        return x1 - x0

    def log_snr(self, t: Tensor) -> Tensor:
        """``λ(t) = 2 log(t/(1−t))``."""
        return 2.0 * (torch.log(t) - torch.log1p(-t))

    def dlog_snr(self, t: Tensor) -> Tensor:
        """``λ'(t) = 2 / (t(1−t))``."""
        return 2.0 / (t * (1.0 - t))

    def t_from_log_snr(self, lam: Tensor, iters: int = 60) -> Tensor:
        """Closed form ``t = sigmoid(λ/2)``."""
        return torch.sigmoid(torch.as_tensor(lam) / 2.0)
