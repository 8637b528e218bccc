"""Work split by shard index: shard ``i`` of a job belongs to rank ``i mod W``.

Whatever a shard holds must depend only on its index (e.g. a seed derived from
``(seed, index)``, never from the rank), so ``W`` ranks produce exactly what one process
produces, and a resumed run may use another number of ranks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from flowkit.distributed.collectives import all_gather_objects
from flowkit.distributed.process_group import info

T = TypeVar("T")


def rank_shards(
    num_shards: int, rank: int | None = None, world_size: int | None = None
) -> list[int]:
    """Indices ``i`` in ``[0, num_shards)`` with ``i mod W = r`` (all of them in one process).

    Example:
        >>> rank_shards(5, rank=1, world_size=2)
        [1, 3]
    """
    me = info()
    rank = me.rank if rank is None else rank
    world_size = me.world_size if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
    return list(range(rank, num_shards, world_size))


def gather_shards(parts: Iterable[tuple[int, T]]) -> list[tuple[int, T]]:
    """Every rank's ``(index, item)`` pairs, merged and sorted by index, on every rank."""
    merged = [p for rank_parts in all_gather_objects(list(parts)) for p in rank_parts]
    return sorted(merged, key=lambda p: p[0])
