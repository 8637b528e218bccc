"""The trainer's random streams: one CPU generator per process, from a generator or a seed.

On one process the data generator is the one given, or a CPU generator seeded with ``seed``
(:func:`make_generator`). Under torchrun rank ``r`` draws from its own stream ``(seed, r)``
(:func:`rank_stream`, through :func:`flowkit.distributed.rank_generator`).

Example:
    >>> from flowkit.training.generators import make_generator
    >>> generator, seed = make_generator(None, 7)
    >>> seed
    7
"""

from __future__ import annotations

import torch

from flowkit import distributed
from flowkit.seeds import check_seed


def make_generator(
    generator: torch.Generator | None, seed: int | None
) -> tuple[torch.Generator, int | None]:
    """The trainer's data generator: ``generator`` as given, or a CPU generator seeded with
    ``seed`` (a fresh random seed if both are None). Returns it with its seed (None if given).

    Raises:
        ValueError: both ``generator`` and ``seed`` given, or ``seed`` not a non-negative int.
        TypeError: ``generator`` is not a ``torch.Generator``.
    """
    if generator is not None and seed is not None:
        raise ValueError("pass either generator= or seed=, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator, None
    if seed is None:
        fresh = torch.Generator()
        return fresh, fresh.seed()
    return torch.Generator().manual_seed(check_seed(seed)), seed


def rank_stream(
    generator: torch.Generator | None, seed: int | None
) -> tuple[torch.Generator, int | None]:
    """This rank's data generator and the run's seed.

    With ``seed`` (the same on every rank, or None on every rank for a fresh one chosen by rank
    0), rank ``r`` draws from :func:`flowkit.distributed.rank_generator` ``(seed, r)``. A
    ``generator`` is used as given (warning if every rank's is in the same state).
    """
    if generator is not None:
        generator, _ = make_generator(generator, seed)  # type check; rejects seed= alongside
        distributed.warn_if_shared_generator(generator)
        return generator, None
    seed = distributed.shared_seed(seed)
    return distributed.rank_generator(seed), seed
