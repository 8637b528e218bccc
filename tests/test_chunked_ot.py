"""Chunked minibatch OT: the balanced k-d partition, the assignment per cell, the option."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import flowkit as fk
from flowkit.couplings import IndependentCoupling, MinibatchOTCoupling
from flowkit.couplings.assignment import (
    HUNGARIAN_MAX,
    exact_assignment,
    exact_permutation,
    squared_distances,
)
from flowkit.couplings.chunking import (
    EIGH_MAX_DIM,
    balanced_partition,
    bisecting_partition,
    chunked_assignment,
    cut_axes,
    flat,
    halving_partition,
    principal_axes,
    split_sizes,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def moons_batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(seed)
    return torch.randn(n, 2, generator=g), fk.data.build("moons").sample(n, generator=g)


def mean_cost(x0: torch.Tensor, x1: torch.Tensor, perm: torch.Tensor) -> float:
    return float(((x0[perm] - x1) ** 2).flatten(1).sum(1).mean())


@pytest.mark.parametrize(("n", "k"), [(256, 32), (1000, 64), (257, 16), (5, 2), (300, 299)])
def test_partition_cells_hold_equal_counts_of_both_sides(n: int, k: int) -> None:
    x0, x1 = moons_batch(n, 0)
    order0, order1, sizes = balanced_partition(x0, x1, k)
    assert sorted(order0.tolist()) == sorted(order1.tolist()) == list(range(n))
    assert int(sizes.sum()) == n and int(sizes.max()) <= k and int(sizes.min()) >= 1
    assert len(sizes) == math.ceil(n / k)  # balanced: no more cells than needed


@pytest.mark.parametrize(("n", "k", "d"), [(256, 16, 2), (256, 32, 2), (96, 12, 5), (64, 1, 3)])
def test_halving_partition_forms_the_cells_of_the_general_bisection(n, k, d) -> None:
    """The fast path (``⌈B/k⌉`` a power of two dividing ``B``) cuts the same cells, listed in
    the same order, as the general bisection; only the order within a cell may differ."""
    g = gen(d)
    x0, x1 = torch.randn(n, d, generator=g), torch.rand(n, d, generator=g) * 3
    z = np.concatenate([flat(x0), flat(x1)])
    chunks = -(-n // k)
    levels = (chunks - 1).bit_length()
    axes, variance = principal_axes(z, levels)
    cuts = cut_axes(variance, levels)
    fast = halving_partition(z @ axes, n, cuts)
    general = bisecting_partition(z @ axes, n, cuts, np.array([chunks]))
    torch.testing.assert_close(fast[2], general[2])
    assert fast[2].tolist() == [n // chunks] * chunks
    for side in (0, 1):
        cells = np.split(fast[side], np.cumsum(fast[2])[:-1])
        expected = np.split(general[side], np.cumsum(general[2])[:-1])
        assert [sorted(c.tolist()) for c in cells] == [sorted(c.tolist()) for c in expected]
    assert [o.tolist() for o in balanced_partition(x0, x1, k)] == [o.tolist() for o in fast]


def test_split_sizes_keep_both_halves_within_the_chunk_size() -> None:
    for chunks in range(1, 40):
        for k in (1, 3, 16):
            for size in range(k * (chunks - 1) + 1, k * chunks + 1):
                left, left_chunks = split_sizes(np.array(size), np.array(chunks))
                right, right_chunks = size - int(left), chunks - int(left_chunks)
                assert int(left) <= int(left_chunks) * k and right <= right_chunks * k
                assert right_chunks == 0 or right >= 1


def test_cut_axes_take_the_axis_of_largest_remaining_spread() -> None:
    assert cut_axes(np.array([1.0, 1.0]), 4) == [0, 1, 0, 1]
    # variance 20 along axis 0: two cuts (20 -> 5 -> 1.25) before axis 1 (variance 2)
    assert cut_axes(np.array([20.0, 2.0, 0.1]), 4) == [0, 0, 1, 0]


def test_every_cell_is_solved_exactly_and_the_result_is_a_permutation() -> None:
    x0, x1 = moons_batch(300, 1)
    perm = chunked_assignment(x0, x1, 32, exact_permutation)
    assert sorted(perm.tolist()) == list(range(300))
    order0, order1, sizes = balanced_partition(x0, x1, 32)
    start = 0
    for size in sizes.tolist():
        i0, i1 = order0[start : start + size], order1[start : start + size]
        start += size
        assert sorted(perm[i1].tolist()) == sorted(i0.tolist())  # pairs stay within the cell
        cell_cost = squared_distances(x0[i0], x1[i1]).numpy()
        rows, cols = linear_sum_assignment(cell_cost)
        pairs_cost = float(((x0[perm[i1]].double() - x1[i1].double()) ** 2).sum())
        assert pairs_cost == pytest.approx(cell_cost[rows, cols].sum(), rel=1e-9)


def test_a_batch_within_one_chunk_is_the_exact_assignment() -> None:
    x0, x1 = moons_batch(64, 2)
    perm = chunked_assignment(x0, x1, 64, exact_permutation)
    assert torch.equal(perm, exact_assignment(squared_distances(x0, x1)))


@pytest.mark.parametrize("n", [HUNGARIAN_MAX, 5])
def test_small_batches_are_still_optimal(n: int) -> None:
    cost = torch.rand(n, n, generator=gen(3), dtype=torch.float64)
    perm = exact_assignment(cost)
    rows, cols = linear_sum_assignment(cost.numpy())
    assert cost[perm, torch.arange(n)].sum().item() == pytest.approx(cost.numpy()[rows, cols].sum())


def test_kd_cells_stay_close_to_exact_and_beat_random_cells() -> None:
    """Mean over 4 batches of 512 (N(0, I) -> moons): k-d cells of 32 within 10 % of the exact
    cost, random cells of 32 (the same solver on random chunks) far above it."""
    kd, exact, rand = [], [], []
    for seed in range(4):
        x0, x1 = moons_batch(512, 10 + seed)
        exact.append(mean_cost(x0, x1, exact_assignment(squared_distances(x0, x1))))
        kd.append(mean_cost(x0, x1, chunked_assignment(x0, x1, 32, exact_permutation)))
        shuffle = torch.randperm(512, generator=gen(seed))  # random cells of 32 of each side
        perm = torch.empty(512, dtype=torch.long)
        for cell in shuffle.view(-1, 32):
            perm[cell] = cell[exact_assignment(squared_distances(x0[cell], x1[cell]))]
        rand.append(mean_cost(x0, x1, perm))
    assert np.mean(exact) <= np.mean(kd) < 1.10 * np.mean(exact)
    assert np.mean(rand) > 1.2 * np.mean(kd)


def test_high_dimensional_samples_use_approximate_axes_and_still_pair_well() -> None:
    g = gen(4)
    d = EIGH_MAX_DIM + 36
    shift = torch.randn(d, generator=g)
    x0 = torch.randn(256, d, generator=g)
    x1 = shift + torch.randn(256, d, generator=g) * torch.linspace(0.1, 3.0, d)
    independent = mean_cost(x0, x1, torch.arange(256))
    exact = mean_cost(x0, x1, exact_assignment(squared_distances(x0, x1)))
    chunked = mean_cost(x0, x1, chunked_assignment(x0, x1, 32, exact_permutation))
    assert exact <= chunked < independent - 0.5 * (independent - exact)


def test_coupling_option_pairs_within_cells_and_keeps_the_data_stream() -> None:
    src, tgt = "gaussian", "moons"
    ind = IndependentCoupling(src, tgt).sample(200, gen(5))
    g = gen(5)
    chunked = MinibatchOTCoupling(src, tgt, chunk_size=32).sample(200, g)
    assert torch.equal(chunked.x1, ind.x1)
    assert sorted(map(tuple, chunked.x0.tolist())) == sorted(map(tuple, ind.x0.tolist()))
    # the partition draws nothing from the generator: the next batch is the independent one's
    g_ind = gen(5)
    IndependentCoupling(src, tgt).sample(200, g_ind)
    assert torch.equal(g.get_state(), g_ind.get_state())
    spec = {"name": "minibatch_ot", "source": src, "target": tgt, "chunk_size": 32}
    assert "chunk_size=32" in repr(fk.couplings.build(spec))


def test_chunked_sinkhorn_gives_a_permutation() -> None:
    c = MinibatchOTCoupling("gaussian", "moons", method="sinkhorn", chunk_size=16)
    batch = c.sample(100, gen(6))
    ind = IndependentCoupling("gaussian", "moons").sample(100, gen(6))
    assert sorted(map(tuple, batch.x0.tolist())) == sorted(map(tuple, ind.x0.tolist()))


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "32"])
def test_chunk_size_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        MinibatchOTCoupling("gaussian", "moons", chunk_size=bad)
