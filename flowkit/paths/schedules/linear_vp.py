"""The linear variance-preserving schedule."""

from __future__ import annotations

import torch
from torch import Tensor

from flowkit.paths.schedules.base import Schedule
from flowkit.registry import SCHEDULES


@SCHEDULES.register("linear_vp")
class LinearVPSchedule(Schedule):
    """Linear VP schedule: ``a(t) = t, b(t) = sqrt(1 − t²)`` (a² + b² = 1).

    ``λ(t) = log(t² / (1 − t²))``, ``λ'(t) = 2 / (t(1 − t²))``, inverse ``t = sqrt(sigmoid(λ))``.
    ``b'(t) = −t / sqrt(1 − t²)`` is infinite at t = 1 (``finite_derivatives = False``).
    """

    name = "linear_vp"
    finite_derivatives = False

    def a(self, t: Tensor) -> Tensor:
        return t

    def b(self, t: Tensor) -> Tensor:
        return torch.sqrt((1.0 - t) * (1.0 + t))

    def da(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def db(self, t: Tensor) -> Tensor:
        return -t / self.b(t)

    def log_snr(self, t: Tensor) -> Tensor:
        """``λ(t) = 2 log t − log(1 − t²)``."""
        return 2.0 * torch.log(t) - torch.log1p(-t * t)

    def dlog_snr(self, t: Tensor) -> Tensor:
        """``λ'(t) = 2 / (t(1 − t²))``."""
        return 2.0 / (t * (1.0 - t * t))

    def t_from_log_snr(self, lam: Tensor, iters: int = 60) -> Tensor:
        """Closed form ``t = sqrt(sigmoid(λ))``."""
        return torch.sqrt(torch.sigmoid(torch.as_tensor(lam)))
