"""The polynomial schedule ``a = tⁿ``."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowkit.paths.schedules.base import Schedule
from flowkit.registry import SCHEDULES


@SCHEDULES.register("polynomial")
class PolynomialSchedule(Schedule):
    """Polynomial schedule: ``a(t) = tⁿ, b(t) = 1 − tⁿ`` (n = 1 is ``rectified``).

    ``λ(t) = 2 log(tⁿ / (1 − tⁿ))``, ``λ'(t) = 2n / (t(1 − tⁿ))``, inverse
    ``t = sigmoid(λ/2)^{1/n}``. For ``n < 1``, ``a'(0) = ∞`` (``finite_derivatives = False``).

    Args:
        n: the exponent, > 0.
    """

    name = "polynomial"

    def __init__(self, n: float = 2.0) -> None:
        n = float(n)
        if not (n > 0.0 and math.isfinite(n)):
            raise ValueError(f"n must be a finite number > 0; got {n}")
        self.n = n
        self.finite_derivatives = n >= 1.0

    def __repr__(self) -> str:
        return f"PolynomialSchedule(n={self.n:g})"

    def a(self, t: Tensor) -> Tensor:
        return t**self.n

    def b(self, t: Tensor) -> Tensor:
        return 1.0 - t**self.n

    def da(self, t: Tensor) -> Tensor:
        return self.n * t ** (self.n - 1.0)

    def db(self, t: Tensor) -> Tensor:
        return -self.da(t)

    def log_snr(self, t: Tensor) -> Tensor:
        """``λ(t) = 2(n log t − log(1 − tⁿ))``."""
        return 2.0 * (self.n * torch.log(t) - torch.log1p(-(t**self.n)))

    def dlog_snr(self, t: Tensor) -> Tensor:
        """``λ'(t) = 2n / (t(1 − tⁿ))``."""
        return 2.0 * self.n / (t * (1.0 - t**self.n))

    def t_from_log_snr(self, lam: Tensor, iters: int = 60) -> Tensor:
        """Closed form ``t = sigmoid(λ/2)^{1/n}``."""
        return torch.sigmoid(torch.as_tensor(lam) / 2.0) ** (1.0 / self.n)
