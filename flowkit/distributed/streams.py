"""Per-rank random streams: rank ``r`` of a run seeded with ``seed`` draws from ``(seed, r)``.

Rank 0 draws exactly the single-process stream of ``seed``, so a one-process run and rank 0 of a
distributed run see the same first batch; rank ``r > 0`` uses the generator seeded by
:func:`flowkit.seeds.derive_seed` ``(seed, r)``, an independent stream (the scheme that also
seeds experiment stages and reflow shards).
"""

from __future__ import annotations

import warnings

import torch

from flowkit.distributed.collectives import all_gather_objects, broadcast_object
from flowkit.distributed.process_group import info
from flowkit.seeds import check_seed, derive_seed


def rank_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank``'s stream: ``seed`` itself on rank 0, else a derived seed.

    ``rank_seed(s, 0) = s``; ``rank_seed(s, r) = derive_seed(s, r)`` for ``r > 0``.
    """
    check_seed(seed)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"rank must be a non-negative integer, got {rank!r}")
    return seed if rank == 0 else derive_seed(seed, rank)


def rank_generator(seed: int, rank: int | None = None) -> torch.Generator:
    """A CPU generator on the stream ``(seed, rank)`` (``rank`` defaults to this process's).

    Example:
        >>> from flowkit.distributed import rank_generator
        >>> a = torch.rand(3, generator=rank_generator(7, rank=0))
        >>> torch.equal(a, torch.rand(3, generator=torch.Generator().manual_seed(7)))
        True
    """
    return torch.Generator().manual_seed(rank_seed(seed, info().rank if rank is None else rank))


def shared_seed(seed: int | None) -> int:
    """The run's seed, agreed by every rank.

    Every rank must pass the same ``seed``; with None on every rank, rank 0 draws a fresh one
    and sends it to the others (so the run's streams are still ``(seed, rank)``).

    Raises:
        ValueError: on every rank, if the ranks passed different seeds or an invalid one.
    """
    seen = all_gather_objects(seed)
    if any(s != seen[0] for s in seen[1:]):
        per_rank = ", ".join(f"rank {r}: {s!r}" for r, s in enumerate(seen))
        raise ValueError(
            f"seed must be the same on every rank ({per_rank}); each rank derives its own "
            "stream from (seed, rank)"
        )
    if seed is None:
        seed = broadcast_object(torch.Generator().seed() if info().is_writer else None)
    return check_seed(seed)


def warn_if_shared_generator(generator: torch.Generator) -> None:
    """Warn when every rank holds a generator in the same state (identical batches on all ranks)."""
    states = all_gather_objects(bytes(generator.get_state().numpy().tobytes()))
    if len(states) > 1 and all(s == states[0] for s in states[1:]):
        warnings.warn(
            "every rank's generator is in the same state, so every rank draws the same batches; "
            "pass seed= instead (each rank then draws from its own (seed, rank) stream)",
            stacklevel=3,
        )
