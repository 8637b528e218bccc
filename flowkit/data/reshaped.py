"""A distribution whose samples are reshaped, e.g. a 64-D Gaussian source for 1x8x8 images.

Example:
    >>> from flowkit.data import Gaussian
    >>> reshape_to(Gaussian(dim=64), (1, 8, 8)).sample(2).shape
    torch.Size([2, 1, 8, 8])
"""

from __future__ import annotations

import math
from typing import Any

import torch

from flowkit.couplings.base import draw


def reshape_to(dist: Any, event_shape: tuple[int, ...]) -> Any:
    """``dist`` itself, or a view whose samples are reshaped to ``event_shape`` (same size)."""
    if tuple(dist.event_shape) == tuple(event_shape):
        return dist
    return ReshapedDistribution(dist, event_shape)


class ReshapedDistribution:
    """A distribution whose samples are reshaped to ``event_shape`` (e.g. 64 -> (1, 8, 8))."""

    def __init__(self, base: Any, event_shape: tuple[int, ...]) -> None:
        if math.prod(base.event_shape) != math.prod(event_shape):
            raise ValueError(
                f"the source has event shape {tuple(base.event_shape)}, which cannot be "
                f"reshaped to the target's {tuple(event_shape)}"
            )
        self.base = base
        self.event_shape = tuple(event_shape)

    def __repr__(self) -> str:
        return f"Reshaped({self.base!r}, {self.event_shape})"

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.base.sample(n, generator=generator).reshape(n, *self.event_shape)

    def sample_conditional(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, cond = draw(self.base, n, generator)
        return x.reshape(n, *self.event_shape), cond

    def __getattr__(self, name: str) -> Any:
        """Everything else is the base's (finite data's epoch state and statistics included)."""
        if name == "base":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.base, name)
