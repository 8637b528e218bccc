"""Sinusoidal (Fourier) time features for small networks."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class FourierTime(nn.Module):
    """Map ``t`` of any shape to ``[t, sin(2π f_k t), cos(2π f_k t)]`` features (last axis).

    Frequencies ``f_k = 2^k / 2`` for ``k = 0..n−1`` (fixed, not learned). ``n = 0`` gives ``[t]``.
    """

    def __init__(self, n: int = 8) -> None:
        super().__init__()
        if n < 0:
            raise ValueError(f"n (number of time frequencies) must be >= 0, got {n}")
        self.register_buffer("freqs", 2.0 * math.pi * (2.0 ** torch.arange(n)) / 2.0)
        self.out_features = 1 + 2 * n

    def forward(self, t: Tensor) -> Tensor:
        t = t.unsqueeze(-1)
        ang = t * self.freqs.to(t.dtype)
        return torch.cat([t, torch.sin(ang), torch.cos(ang)], dim=-1)
