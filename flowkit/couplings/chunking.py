"""Chunked minibatch OT: split a batch into matching cells, solve the assignment in each.

The exact assignment of a batch of ``B`` pairs costs about ``O(B³)`` (≈ 10 ms at 256, 0.4 s at
1024, seconds at 4096 on one CPU core). :func:`chunked_assignment` first cuts both sides into
``m = ⌈B / k⌉`` cells of at most ``k`` samples each, with the *same* number of sources and targets
in each cell, and then solves the exact (or entropic) assignment inside every cell: ``m`` problems
of size ``k``, a cost linear in the number of chunks.

How the cells are formed decides how close the result stays to the exact assignment. Random
cells are no better than a batch of size ``k``. Here the cells come from a balanced recursive
bisection (:func:`balanced_partition`), a k-d tree over both sides at once: a cell of the pooled
samples is cut across its principal direction, sources at their own median and targets at their
own, so both halves keep equal counts. Sources and targets that the exact plan pairs lie close
to each other in the pooled point cloud, so they mostly fall into the same cell (on
N(0, I) → moons, chunks of 32 from a batch of 4096 transport at 1.15 per pair where random chunks
of 32 give 1.44 and the exact plan at 1024 gives 1.00; see docs/couplings.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

#: Samples of at most this many dimensions get their exact principal axes (an eigendecomposition
#: of the batch covariance); larger ones the top axes by subspace iteration.
EIGH_MAX_DIM = 64
#: Subspace-iteration steps for the principal axes of high-dimensional samples.
SUBSPACE_STEPS = 6
#: Seed of the fixed start basis of the subspace iteration (the partition draws no random
#: numbers from the caller's generator, so chunking does not change the data stream).
BASIS_SEED = 0


def split_sizes(size: Tensor, chunks: Tensor) -> tuple[Tensor, Tensor]:
    """Samples and chunks of the left half of cells holding ``size`` samples in ``chunks`` chunks.

    ``left_chunks = ⌈chunks / 2⌉`` and ``left = ⌊size · left_chunks / chunks⌋``, so a cell with
    ``size ≤ chunks · k`` leaves both halves within ``k`` per chunk; a one-chunk cell stays whole.
    """
    left_chunks = (chunks + 1) // 2
    return size * left_chunks // chunks, left_chunks


def principal_axes(z: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """The top ``count`` principal axes of the rows of ``z`` (columns of a ``(d, count)`` matrix)
    and the variance along each, largest first.

    Exact (eigendecomposition of the covariance) up to :data:`EIGH_MAX_DIM` dimensions; above,
    :data:`SUBSPACE_STEPS` steps of subspace iteration ``Q ← orth(z̄ᵀ z̄ Q)`` from a fixed
    pseudo-random basis, then the exact axes within that subspace.
    """
    centred = z - z.mean(0)
    d = z.shape[1]
    if d > EIGH_MAX_DIM:
        start = torch.Generator().manual_seed(BASIS_SEED)
        basis = torch.randn(d, min(count, d), generator=start, dtype=z.dtype)
        for _ in range(SUBSPACE_STEPS):
            basis = torch.linalg.qr(centred.T @ (centred @ basis))[0]
        centred = centred @ basis
    variance, vectors = torch.linalg.eigh(centred.T @ centred / z.shape[0])
    variance, vectors = variance.flip(0)[:count], vectors.flip(1)[:, :count]
    return (vectors if d <= EIGH_MAX_DIM else basis @ vectors), variance


def cut_axes(variance: Tensor, levels: int) -> list[int]:
    """Which principal axis each of ``levels`` bisections cuts along: greedily the axis of the
    largest remaining spread, where every cut along an axis divides its variance by 4 (a median
    cut halves the extent of the cells along it)."""
    remaining = variance.clamp_min(0).tolist()
    axes = []
    for _ in range(levels):
        axis = max(range(len(remaining)), key=remaining.__getitem__)
        axes.append(axis)
        remaining[axis] /= 4
    return axes


def balanced_partition(x0: Tensor, x1: Tensor, chunk_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Cut two equal-size batches into cells of at most ``chunk_size`` samples of each side.

    A k-d tree over the pooled batch in its principal axes: level by level, every cell that
    still holds more than one chunk is cut across one principal axis of the pooled sources and
    targets (:func:`cut_axes`), the sources at their own quantile and the targets at theirs, so
    each half again holds as many sources as targets.

    Returns:
        ``(order0, order1, sizes)``: sources ``x0[order0]`` and targets ``x1[order1]`` listed cell
        by cell, and the number of samples of each side in every cell (summing to ``B``).
    """
    n = x0.shape[0]
    chunks = torch.tensor([-(-n // chunk_size)])
    levels = int(chunks.item() - 1).bit_length()
    z = torch.cat([x0.flatten(1), x1.flatten(1)]).double()
    axes, variance = principal_axes(z, levels)
    # rank of every sample along every axis, so that one integer sort per level orders the
    # samples by (side, cell, projection)
    rank_along = torch.empty(2 * n, axes.shape[1], dtype=torch.long)
    by_axis = torch.argsort(z @ axes, dim=0)
    rank_along.scatter_(0, by_axis, torch.arange(2 * n)[:, None].expand_as(by_axis))
    side = (torch.arange(2 * n) >= n).long()
    cell = torch.zeros(2 * n, dtype=torch.long)
    size = torch.tensor([n])
    for axis in cut_axes(variance, levels):
        cells = size.shape[0]
        group = cell + cells * side
        order = torch.argsort(group * (2 * n) + rank_along[:, axis])
        sorted_cell = cell[order]
        start = torch.cumsum(size, 0) - size
        start = torch.cat([start, start + n])  # the targets follow the n sources
        rank = torch.arange(2 * n) - start[group[order]]
        left_size, left_chunks = split_sizes(size, chunks)
        right = (rank >= left_size[sorted_cell]).long()
        cell = torch.empty_like(cell)
        cell[order] = 2 * sorted_cell + right
        size = torch.stack([left_size, size - left_size], 1).flatten()
        chunks = torch.stack([left_chunks, chunks - left_chunks], 1).flatten()
        kept = size > 0
        remap = torch.cumsum(kept.long(), 0) - 1
        cell, size, chunks = remap[cell], size[kept], chunks[kept]
    order0 = torch.argsort(cell[:n], stable=True)
    order1 = torch.argsort(cell[n:], stable=True)
    return order0, order1, size


def cell_costs(x: Tensor, order: Tensor, sizes: Tensor) -> Tensor:
    """Rows ``x[order]`` laid out cell by cell, zero-padded to ``(cells, max size, d)``."""
    cells, width = sizes.shape[0], int(sizes.max())
    start = torch.cumsum(sizes, 0) - sizes
    slot = torch.arange(order.shape[0]) - torch.repeat_interleave(start, sizes)
    row = torch.repeat_interleave(torch.arange(cells), sizes)
    out = torch.zeros(cells, width, x[0].numel(), dtype=torch.float64)
    out[row, slot] = x.flatten(1)[order].double()
    return out


def chunked_assignment(
    x0: Tensor, x1: Tensor, chunk_size: int, assign: Callable[[Tensor], Tensor]
) -> Tensor:
    """A permutation ``σ`` pairing target ``j`` with source ``σ(j)``, solved cell by cell.

    The batch is cut by :func:`balanced_partition`; the cost ``||x0_i − x1_j||²`` of every cell
    is computed in one batched call and ``assign(cost)`` returns the permutation within a cell
    (exact or entropic). Every source is used exactly once. A batch of at most ``chunk_size``
    pairs is one cell: ``assign`` on the whole batch's cost.
    """
    n = x0.shape[0]
    if n <= chunk_size:
        return assign(torch.cdist(x0.flatten(1).double(), x1.flatten(1).double()) ** 2)
    order0, order1, sizes = balanced_partition(x0, x1, chunk_size)
    costs = torch.cdist(cell_costs(x0, order0, sizes), cell_costs(x1, order1, sizes)) ** 2
    local = [assign(costs[cell, :size, :size]) for cell, size in enumerate(sizes.tolist())]
    start = torch.repeat_interleave(torch.cumsum(sizes, 0) - sizes, sizes)
    perm = torch.empty(n, dtype=torch.long)
    perm[order1] = order0[start + torch.cat(local)]
    return perm
