"""The :class:`Distribution` interface shared by every data source and toy target."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

Cond = dict[str, Tensor]


def check_num_samples(n: Any, argument: str = "n") -> int:
    """Return ``n`` if it is a non-negative integer, else raise ``TypeError``/``ValueError``."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{argument} must be a non-negative integer, got {n!r}")
    if n < 0:
        raise ValueError(f"{argument} must be a non-negative integer, got {n}")
    return n


def generator_device(generator: torch.Generator | None) -> torch.device:
    """The device samples are drawn on: the generator's, or the CPU when there is none."""
    return generator.device if generator is not None else torch.device("cpu")


class Distribution(ABC):
    """A distribution that can be sampled with an explicit ``torch.Generator``.

    Subclasses implement :meth:`sample` and set :attr:`event_shape`; those with a known density
    set ``has_log_prob = True`` and implement :meth:`log_prob`. Samples are drawn on the
    generator's device (the CPU without a generator) in the default floating dtype, so the same
    generator state gives the same samples.

    Attributes:
        event_shape: shape of one sample, e.g. ``(2,)`` for a 2-D toy or ``(1, 8, 8)`` for digits.
        has_log_prob: whether :meth:`log_prob` is available.

    Example:
        >>> import torch, flowkit as fk
        >>> moons = fk.data.build("moons")
        >>> x = moons.sample(1000, generator=torch.Generator().manual_seed(0))
        >>> tuple(x.shape)
        (1000, 2)
    """

    event_shape: tuple[int, ...] = ()
    has_log_prob: bool = False

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` independent samples, shape ``(n, *event_shape)``."""

    def log_prob(self, x: Tensor) -> Tensor:
        """Log density at ``x`` of shape ``(B, *event_shape)``, returned with shape ``(B,)``.

        Raises:
            NotImplementedError: for distributions without a closed-form density.
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no closed-form log_prob (has_log_prob is False)"
        )

    def sample_conditional(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Cond]:
        """Draw ``n`` samples with their model conditions (none unless a subclass has labels)."""
        return self.sample(n, generator=generator), {}

    def check_event(self, x: Tensor, argument: str = "x") -> None:
        """Raise ``ValueError`` unless ``x`` has shape ``(B, *event_shape)``."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{argument} must be a tensor, got {type(x).__name__}")
        if x.ndim != len(self.event_shape) + 1 or tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"{argument} must have shape (B, {', '.join(map(str, self.event_shape))}) for "
                f"{type(self).__name__}; got {tuple(x.shape)}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(event_shape={self.event_shape})"
