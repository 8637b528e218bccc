"""Sampling sharded by rank: each rank integrates a slice of the source batch.

Rank ``r`` of ``W`` takes the ``r``-th of ``W`` contiguous slices of ``x0`` (and of the
conditions), integrates it, and the slices are gathered back in order on every rank. Samples
are integrated independently of each other by fixed-step solvers, so the result equals the
single-process one up to float rounding; an adaptive solver picks its steps per slice (its
error control covers the slice, not the whole batch), within the same tolerances.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import flowkit
from flowkit.distributed.collectives import all_gather_objects
from flowkit.distributed.process_group import info


def rank_slice(n: int, rank: int, world_size: int) -> slice:
    """Rows ``[⌊r·n/W⌋, ⌊(r+1)·n/W⌋)`` of ``n``: rank ``r``'s contiguous share (sizes differ by
    at most one, and the slices of all ranks cover ``0..n-1`` in order)."""
    return slice(rank * n // world_size, (rank + 1) * n // world_size)


def sharded_sample(
    field: Any, x0: Tensor, *, cond: dict[str, Tensor] | None = None, **kwargs: Any
) -> Any:
    """:func:`flowkit.sample` with the batch split across ranks; every rank gets the whole result.

    Falls back to an unsharded solve in a single process, when the batch is smaller than the
    number of ranks, or when a trajectory is requested (adaptive solvers record different
    times on each slice). ``nfe`` is the largest count of any rank (the wall-clock cost);
    ``stats`` and ``times`` are rank 0's.

    Args:
        field: a Flow or a callable ``f(x, t)``.
        x0: source samples ``(B, ...)``.
        cond: conditions with leading size ``B`` (sliced with ``x0``).
        **kwargs: the other arguments of :func:`flowkit.sample` (``solver``, ``steps``, ...).

    Returns:
        The :class:`~flowkit.solvers.Solution` for the whole batch.
    """
    me = info()
    if not me.distributed or x0.shape[0] < me.world_size or kwargs.get("return_trajectory"):
        return flowkit.sample(field, x0, cond=cond, **kwargs)
    rows = rank_slice(x0.shape[0], me.rank, me.world_size)
    local_cond = None if cond is None else {k: v[rows] for k, v in cond.items()}
    sol = flowkit.sample(field, x0[rows], cond=local_cond, **kwargs)
    parts = all_gather_objects((sol.x.cpu(), int(sol.nfe)))
    sol.x = torch.cat([x for x, _ in parts]).to(x0.device)
    sol.nfe = max(nfe for _, nfe in parts)
    return sol
