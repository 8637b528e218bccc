"""The continuous-time DDPM (VP SDE) schedule with linear β."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowkit.paths.schedules.diffusion import DiffusionSchedule
from flowkit.registry import SCHEDULES


@SCHEDULES.register("vp")
class VPSchedule(DiffusionSchedule):
    """Continuous DDPM / VP-SDE schedule, linear ``β(s) = β_min + s(β_max − β_min)``, s = 1 − t.

    ``ᾱ(s) = exp(−∫₀ˢ β) = exp(−β_min·s − ½(β_max − β_min)·s²)``, ``a = sqrt(ᾱ)``,
    ``b = sqrt(1 − ᾱ)`` (Song et al. 2021). The defaults 0.1 / 20 give ``a(0) ≈ 6.6e-3``: the
    schedule does not reach ``a(0) = 0`` (``reaches_endpoints = False``), so ``x_0`` is the source
    scaled by ``b(0) ≈ 0.99998`` plus ``a(0)·x1``; and ``b'(1) = −∞``.
    Closed-form inverse: ``G = softplus(−λ)``, ``s = 2G / (β_min + sqrt(β_min² + 2(β_max −
    β_min)·G))``.

    Args:
        beta_min: β at the data end (s = 0), ≥ 0.
        beta_max: β at the noise end (s = 1), > beta_min.
    """

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        beta_min, beta_max = float(beta_min), float(beta_max)
        if not (0.0 <= beta_min < beta_max and math.isfinite(beta_max)):
            raise ValueError(
                f"beta_min and beta_max must satisfy 0 <= beta_min < beta_max < inf; "
                f"got beta_min={beta_min}, beta_max={beta_max}"
            )
        self.beta_min = beta_min
        self.beta_max = beta_max

    def __repr__(self) -> str:
        return f"VPSchedule(beta_min={self.beta_min:g}, beta_max={self.beta_max:g})"

    def integrated_rate(self, s: Tensor) -> Tensor:
        """``G(s) = β_min·s + ½(β_max − β_min)·s²``."""
        return s * (self.beta_min + 0.5 * (self.beta_max - self.beta_min) * s)

    def rate(self, s: Tensor) -> Tensor:
        """``β(s) = β_min + (β_max − β_min)·s``."""
        return self.beta_min + (self.beta_max - self.beta_min) * s

    def t_from_log_snr(self, lam: Tensor, iters: int = 60) -> Tensor:
        """Closed form: ``G = softplus(−λ)``, then the root s of ``G(s) = G``; clamped to [0, 1]."""
        g = torch.nn.functional.softplus(-torch.as_tensor(lam))
        delta = self.beta_max - self.beta_min
        s = 2.0 * g / (self.beta_min + torch.sqrt(self.beta_min**2 + 2.0 * delta * g))
        return (1.0 - s).clamp(0.0, 1.0)
