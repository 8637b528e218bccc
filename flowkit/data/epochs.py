"""Shuffled epochs without replacement: the order in which finite data is read.

The items ``0 … n−1`` are read as one endless stream of epochs; epoch ``e`` is the permutation
``randperm(n)`` drawn with a generator seeded ``derive_seed(seed, e)``. Item number ``p`` of the
stream (its *position*) is therefore a pure function of ``(seed, p)``::

    index(p) = randperm_{derive_seed(seed, p // n)}(n)[p mod n]

so the sampler's whole state is ``(seed, position)``: a checkpoint stores two integers, and a
worker process can compute any batch of the stream without having read the ones before it. The
seed is drawn from the first generator the sampler is called with (the trainer's data
generator), so the run's seed fixes the order.

Example:
    >>> import torch
    >>> sampler = EpochSampler(5)
    >>> a = sampler.take(3, torch.Generator().manual_seed(0))
    >>> b = sampler.take(2, None)
    >>> sorted(torch.cat([a, b]).tolist())  # one epoch: every item once
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from flowkit.data.base import generator_device
from flowkit.seeds import derive_seed

SEED_BOUND = 2**62


def draw_seed(generator: torch.Generator | None) -> int:
    """One seed in ``[0, 2**62)`` drawn with ``generator`` (the global RNG without one)."""
    device = generator_device(generator)
    return int(torch.randint(0, SEED_BOUND, (1,), generator=generator, device=device).item())


class EpochSampler:
    """Positions of an endless stream of shuffled epochs over ``n`` items (see the module).

    Attributes:
        n: number of items.
        seed: the stream's seed (None until the first :meth:`take` draws it).
        position: items read so far (over all epochs).
    """

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"finite data needs at least one item, got {n}")
        self.n = n
        self.seed: int | None = None
        self.position = 0
        self._cached: tuple[int, Tensor] | None = None

    @property
    def epoch(self) -> int:
        """The epoch of the next item to be read (0-based)."""
        return self.position // self.n

    @property
    def order(self) -> Tensor:
        """The permutation of the epoch of the last item read (of epoch 0 before any read)."""
        if self.seed is None:
            raise ValueError("the epoch order is drawn at the first take()")
        return self.permutation(max(self.position - 1, 0) // self.n)

    def permutation(self, epoch: int) -> Tensor:
        """Epoch ``epoch``'s order: ``randperm(n)`` seeded ``derive_seed(seed, epoch)``."""
        if self._cached is None or self._cached[0] != epoch:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
            self._cached = (epoch, torch.randperm(self.n, generator=generator))
        return self._cached[1]

    def indices(self, start: int, count: int) -> Tensor:
        """The items at positions ``start … start+count−1`` (a pure function of the seed)."""
        parts = []
        while count > 0:
            epoch, offset = divmod(start, self.n)
            part = self.permutation(epoch)[offset : offset + count]
            parts.append(part)
            start, count = start + part.numel(), count - part.numel()
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def start(self, generator: torch.Generator | None) -> None:
        """Draw the seed with ``generator`` unless it is already set."""
        if self.seed is None:
            self.seed = draw_seed(generator)

    def take(self, count: int, generator: torch.Generator | None) -> Tensor:
        """The next ``count`` items (a batch may run across epochs); advances :attr:`position`."""
        self.start(generator)
        index = self.indices(self.position, count)
        self.position += count
        return index

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "position": self.position}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if set(state) != {"seed", "position"}:
            raise ValueError(f"an epoch sampler state has keys seed, position; got {list(state)}")
        self.seed = None if state["seed"] is None else int(state["seed"])
        self.position = int(state["position"])
