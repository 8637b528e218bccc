"""A tiny time- and class-conditioned MLP, written as a third party would write a model."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TinyNet(nn.Module):
    """``v(x, t, y) = MLP([x, t]) + embedding(y)``-style velocity net for vectors ``(B, dim)``.

    Args:
        dim: data dimension.
        hidden: hidden width.
        num_classes: classes of the labels ``y`` (None: unconditional); the label
            ``num_classes`` is the null label of guidance.
    """

    def __init__(self, dim: int = 2, hidden: int = 64, num_classes: int | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.inp = nn.Linear(dim + 1, hidden)
        self.labels = nn.Embedding(num_classes + 1, hidden) if num_classes else None
        self.out = nn.Sequential(
            nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, dim)
        )

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.inp(torch.cat([x, t[:, None].to(x.dtype)], dim=1))
        if self.labels is not None:
            if y is None:
                raise ValueError("TinyNet was built with num_classes and needs labels y")
            h = h + self.labels(y)
        return self.out(h)
