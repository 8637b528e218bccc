"""SD3's EDM schedule (log-normal noise levels), normalised to a variance-preserving path."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn.functional import logsigmoid

from flowkit.paths.schedules.base import Schedule
from flowkit.registry import SCHEDULES


@SCHEDULES.register("edm")
class EDMSchedule(Schedule):
    """EDM noise levels as in SD3 (Esser et al. 2024, eq. 6): log σ = P_mean + P_std·Φ⁻¹(·).

    SD3 writes ``z = x_data + b·ε`` with ``b = exp(F⁻¹_N(t_sd3 | P_mean, P_std²))``, t_sd3 = 1 − t,
    so uniform t gives ``λ ~ N(−2·P_mean, (2·P_std)²)``. In our direction the noise-to-signal
    ratio is ``σ(t) = b/a = exp(P_mean − P_std·Φ⁻¹(t))`` and::

        λ(t) = 2·P_std·Φ⁻¹(t) − 2·P_mean,     λ'(t) = 2·P_std·sqrt(2π)·exp(Φ⁻¹(t)²/2)
        a = sqrt(sigmoid(λ)) = 1/sqrt(1 + σ²),  b = sqrt(sigmoid(−λ)) = σ/sqrt(1 + σ²)
        a' = ½·a·b²·λ',  b' = −½·b·a²·λ',      t = Φ((λ + 2·P_mean) / (2·P_std))

    SD3's path ``x_data + σ·ε`` is this one scaled by ``sqrt(1 + σ²)`` (same λ; see
    :mod:`flowkit.paths.schedule_change`). The endpoints are reached (λ = ∓∞ at t = 0, 1) but
    ``a'`` and ``b'`` are infinite there (nan at exactly t ∈ {0, 1}; ``finite_derivatives =
    False``), so :class:`AffinePath` clamps t into ``[eps, 1 − eps]``.

    Args:
        p_mean: mean of log σ (EDM / SD3 default −1.2).
        p_std: standard deviation of log σ, > 0 (default 1.2).
    """

    name = "edm"
    finite_derivatives = False

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2) -> None:
        p_mean, p_std = float(p_mean), float(p_std)
        if not (p_std > 0.0 and math.isfinite(p_std) and math.isfinite(p_mean)):
            raise ValueError(f"p_std must be finite and > 0, p_mean finite; got {p_mean}, {p_std}")
        self.p_mean = p_mean
        self.p_std = p_std

    def __repr__(self) -> str:
        return f"EDMSchedule(p_mean={self.p_mean:g}, p_std={self.p_std:g})"

    def log_snr(self, t: Tensor) -> Tensor:
        """``λ(t) = 2·P_std·Φ⁻¹(t) − 2·P_mean``."""
        return 2.0 * self.p_std * torch.special.ndtri(t) - 2.0 * self.p_mean

    def dlog_snr(self, t: Tensor) -> Tensor:
        """``λ'(t) = 2·P_std / φ(Φ⁻¹(t)) = 2·P_std·sqrt(2π)·exp(Φ⁻¹(t)²/2)``."""
        z = torch.special.ndtri(t)
        return 2.0 * self.p_std * math.sqrt(2.0 * math.pi) * torch.exp(0.5 * z * z)

    def t_from_log_snr(self, lam: Tensor, iters: int = 60) -> Tensor:
        """Closed form ``t = Φ((λ + 2·P_mean) / (2·P_std))``."""
        return torch.special.ndtr((torch.as_tensor(lam) + 2.0 * self.p_mean) / (2.0 * self.p_std))

    def a(self, t: Tensor) -> Tensor:
        return torch.exp(0.5 * logsigmoid(self.log_snr(t)))

    def b(self, t: Tensor) -> Tensor:
        return torch.exp(0.5 * logsigmoid(-self.log_snr(t)))

    def da(self, t: Tensor) -> Tensor:
        """``a' = ½·a·b²·λ'``."""
        lam = self.log_snr(t)
        return 0.5 * torch.exp(0.5 * logsigmoid(lam) + logsigmoid(-lam)) * self.dlog_snr(t)

    def db(self, t: Tensor) -> Tensor:
        """``b' = −½·b·a²·λ'``."""
        lam = self.log_snr(t)
        return -0.5 * torch.exp(0.5 * logsigmoid(-lam) + logsigmoid(lam)) * self.dlog_snr(t)
