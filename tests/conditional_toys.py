"""Shared pieces of the conditional-generation tests: a labelled three-class target and a tiny
class-conditional network that records the labels it is called with."""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: Three well-separated classes, one Gaussian each (labels 0, 1, 2; null label 3).
TARGET = {
    "name": "gaussian_mixture",
    "means": [[-3.0, 0.0], [3.0, 0.0], [0.0, 3.0]],
    "labels": [0, 1, 2],
    "std": 0.4,
}
COUPLING = {"name": "independent", "source": "gaussian", "target": TARGET}


class LabelNet(nn.Module):
    """A tiny class-conditional velocity net for 2-D points (3 classes, null label 3) that
    records the labels of every call in ``seen``."""

    num_classes = 3

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(4, 8)
        self.net = nn.Sequential(nn.Linear(3, 8), nn.SiLU(), nn.Linear(8, 2))
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        self.seen.append(y.detach().clone())
        h = self.net[0](torch.cat([x, t[:, None]], 1)) + self.embed(y)
        return self.net[2](self.net[1](h))
