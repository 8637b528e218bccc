"""Shared helpers for the 2-D toy distributions."""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor

from flowkit.data.base import Distribution, check_num_samples, generator_device


class Toy2D(Distribution):
    """Base of the 2-D toys: validates ``n`` and draws on the generator's device.

    Subclasses implement :meth:`draw` with already validated arguments.
    """

    event_shape = (2,)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` independent points, shape ``(n, 2)``."""
        n = check_num_samples(n)
        return self.draw(n, generator, generator_device(generator))

    @abstractmethod
    def draw(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """Draw ``n`` points on ``device``, shape ``(n, 2)``."""


def uniform(
    n: int, generator: torch.Generator | None, device: torch.device, low: float, high: float
) -> Tensor:
    """``n`` draws from ``U[low, high)``, shape ``(n,)``."""
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def random_sign(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``n`` independent signs ±1 with probability ½ each, shape ``(n,)``."""
    bits = torch.randint(0, 2, (n,), generator=generator, device=device)
    return (2 * bits - 1).to(torch.get_default_dtype())


def check_nonnegative(value: float, argument: str) -> float:
    """Return ``value`` as a float if it is a finite non-negative number, else raise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{argument} must be a non-negative number; got {value!r}")
    return float(value)


def check_positive(value: float, argument: str) -> float:
    """Return ``value`` as a float if it is a finite positive number, else raise."""
    if check_nonnegative(value, argument) == 0 or value == float("inf"):
        raise ValueError(f"{argument} must be a finite positive number; got {value!r}")
    return float(value)
