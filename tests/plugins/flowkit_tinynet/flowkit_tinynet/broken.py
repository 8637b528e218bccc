"""Deliberately wrong models, for the error tests of flowkit's `package.module:Name` models."""

from __future__ import annotations

import torch
from torch import Tensor, nn

NOT_CALLABLE = 42


class NoTime(nn.Module):
    """A network that forgets the time argument."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(x)


def not_a_module(dim: int = 2) -> Tensor:
    """A factory that returns a tensor instead of a network."""
    return torch.zeros(dim)
