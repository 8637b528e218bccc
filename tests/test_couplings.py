"""Couplings: independent, minibatch OT (exact, Sinkhorn), paired pairs, distillation segments."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch

import flowkit as fk
from flowkit.couplings import (
    CouplingBatch,
    DistillationCoupling,
    IndependentCoupling,
    MinibatchOTCoupling,
    PairedCoupling,
)
from flowkit.couplings.assignment import exact_assignment


class Normal:
    """A Distribution-like object: ``sample(n, generator)`` from N(shift, scale² I)."""

    def __init__(self, dim: int = 2, shift: float = 0.0, scale: float = 1.0) -> None:
        self.dim, self.shift, self.scale = dim, shift, scale

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.shift + self.scale * torch.randn(n, self.dim, generator=generator)


class Labelled(Normal):
    """A conditional target whose label is a function of the sample: ``y = [x_0 > shift]``."""

    def sample_conditional(self, n: int, generator: torch.Generator | None = None):
        x = self.sample(n, generator)
        return x, {"y": label(x, self.shift)}


def label(x: torch.Tensor, shift: float) -> torch.Tensor:
    return (x[:, 0] > shift).long()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def cost(batch: CouplingBatch) -> float:
    return float(((batch.x1 - batch.x0) ** 2).sum(1).mean())


def rows_sorted(x: torch.Tensor) -> np.ndarray:
    return np.array(sorted(map(tuple, x.tolist())))


def test_independent_draws_source_and_target() -> None:
    c = IndependentCoupling(Normal(shift=0.0), Normal(shift=5.0))
    b = c.sample(4000, gen(0))
    assert b.t is None and b.cond == {} and not c.deterministic
    # Means within 6 standard errors (SE = 1/sqrt(4000) per coordinate).
    assert b.x0.mean(0).abs().max() < 6 / math.sqrt(4000)
    assert (b.x1.mean(0) - 5.0).abs().max() < 6 / math.sqrt(4000)


def test_independent_builds_registered_distributions() -> None:
    c = fk.couplings.build({"name": "independent", "source": "gaussian", "target": "moons"})
    b = c.sample(16, gen(0))
    assert b.x0.shape == b.x1.shape == (16, 2)


def test_shape_mismatch_raises() -> None:
    c = IndependentCoupling(Normal(dim=2), Normal(dim=3))
    with pytest.raises(ValueError, match="event shape"):
        c.sample(8)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_batch_size_raises(bad) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        IndependentCoupling(Normal(), Normal()).sample(bad)


def test_exact_ot_is_an_optimal_permutation() -> None:
    src, tgt = Normal(), Normal(scale=0.5)
    ot_batch = MinibatchOTCoupling(src, tgt).sample(128, gen(1))
    ind_batch = IndependentCoupling(src, tgt).sample(128, gen(1))
    # Same draws: targets untouched, sources a permutation of the same 128 points.
    assert torch.equal(ot_batch.x1, ind_batch.x1)
    np.testing.assert_array_equal(rows_sorted(ot_batch.x0), rows_sorted(ind_batch.x0))
    # Optimal: equals POT's exact OT cost of the two empirical measures, and beats independent.
    m = ot.dist(ind_batch.x0.double().numpy(), ind_batch.x1.double().numpy())
    w = np.full(128, 1 / 128)
    assert cost(ot_batch) == pytest.approx(ot.emd2(w, w, m), rel=1e-6)
    assert cost(ot_batch) < 0.5 * cost(ind_batch)


@pytest.mark.parametrize("max_iter", [None, 1])  # 1: the simplex stops early, Hungarian solves
@pytest.mark.parametrize("kind", ["continuous", "ties"])
def test_exact_assignment_is_an_optimal_permutation(kind: str, max_iter: int | None) -> None:
    from scipy.optimize import linear_sum_assignment

    g = gen(3)
    n = 97
    cost = torch.rand(n, n, generator=g, dtype=torch.float64)
    if kind == "ties":  # many equal costs: degenerate vertices
        cost = torch.randint(0, 4, (n, n), generator=g).double()
    perm = exact_assignment(cost, max_iter=max_iter)
    assert sorted(perm.tolist()) == list(range(n))
    rows, cols = linear_sum_assignment(cost.numpy())
    optimum = cost.numpy()[rows, cols].sum()
    assert cost[perm, torch.arange(n)].sum().item() == pytest.approx(optimum, abs=1e-9)


def test_sinkhorn_gives_a_permutation_between_exact_and_independent() -> None:
    src, tgt = Normal(), Normal(scale=0.5)
    ind = IndependentCoupling(src, tgt).sample(128, gen(2))
    exact = MinibatchOTCoupling(src, tgt).sample(128, gen(2))
    sharp = MinibatchOTCoupling(src, tgt, method="sinkhorn", reg=0.05).sample(128, gen(2))
    blurred = MinibatchOTCoupling(src, tgt, method="sinkhorn", reg=10.0).sample(128, gen(2))
    for b in (sharp, blurred):
        assert torch.equal(b.x1, ind.x1)
        np.testing.assert_array_equal(rows_sorted(b.x0), rows_sorted(ind.x0))
    assert cost(exact) <= cost(sharp) < 0.5 * cost(ind)
    # A nearly uniform plan gives a nearly uniform random permutation: cost near the
    # independent one (E = 2·(1 + 0.25) = 2.5 per pair in 2-D), far above the exact one.
    assert cost(blurred) > 0.8 * cost(ind)


@pytest.mark.parametrize("method", ["exact", "sinkhorn"])
def test_ot_keeps_conditions_aligned_with_targets(method: str) -> None:
    c = MinibatchOTCoupling(Normal(), Labelled(shift=1.0), method=method)
    b = c.sample(64, gen(3))
    assert torch.equal(b.cond["y"], label(b.x1, 1.0))
    x0, cond = c.sample_source(64, gen(3))
    assert x0.shape == (64, 2) and cond["y"].shape == (64,)


def test_ot_rejects_unknown_method_with_suggestion() -> None:
    with pytest.raises(ValueError, match=r"exact, sinkhorn.*Did you mean 'exact'"):
        MinibatchOTCoupling(Normal(), Normal(), method="exakt")
    with pytest.raises(ValueError, match="reg"):
        MinibatchOTCoupling(Normal(), Normal(), method="sinkhorn", reg=0.0)


def test_paired_samples_without_replacement_per_epoch() -> None:
    x0 = torch.arange(10.0).unsqueeze(1)
    pairs = PairedCoupling(x0, 2 * x0, {"y": torch.arange(10)}, deterministic=True)
    g = gen(4)
    batches = [pairs.sample(4, g) for _ in range(5)]  # 20 items = exactly two epochs
    seen = torch.cat([b.x0 for b in batches]).squeeze(1)
    assert sorted(seen[:10].tolist()) == list(range(10))
    assert sorted(seen[10:].tolist()) == list(range(10))
    for b in batches:
        assert torch.equal(b.x1, 2 * b.x0) and torch.equal(b.cond["y"].float(), b.x0[:, 0])
    assert pairs.deterministic and pairs.sampler.epoch == 2


def test_paired_sampler_state_round_trip() -> None:
    x0 = torch.randn(50, 2)
    a, b = PairedCoupling(x0, x0), PairedCoupling(x0, x0)
    a.sample(7, gen(5))
    b.sampler.load_state_dict(a.sampler.state_dict())
    assert torch.equal(a.sample(30, gen(6)).x0, b.sample(30, gen(6)).x0)


def test_paired_factory_validates_arguments() -> None:
    x = torch.randn(5, 2)
    assert not fk.couplings.build({"name": "paired", "x0": x, "x1": x}).deterministic
    with pytest.raises(ValueError, match="either store=DIR or both x0= and x1="):
        fk.couplings.build({"name": "paired", "x0": x})
    with pytest.raises(ValueError, match="equal shape"):
        PairedCoupling(x, torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"cond\['y'\] has 3 rows"):
        PairedCoupling(x, x, {"y": torch.zeros(3)})


@pytest.mark.parametrize("path", ["rectified", "cosine"])
@pytest.mark.parametrize("k", [1, 3])
def test_distillation_segment_is_a_flow_matching_pair(path: str, k: int) -> None:
    """The conditional path of (x0', x1') passes through x_{t_i} at t_i with the segment slope."""
    n = 40
    grid = torch.linspace(0, 1, k + 1, dtype=torch.float64)
    states = torch.randn(n, k + 1, 2, dtype=torch.float64)
    pairs = PairedCoupling(states[:, 0], states[:, -1], states=states, grid=grid.tolist())
    coupling = DistillationCoupling(pairs, path, steps_k=k)
    batch = coupling.sample(n, gen(7))
    assert coupling.deterministic and batch.t is not None
    seg = torch.round(batch.t.double() * k).long()
    assert torch.allclose(batch.t.double(), grid.double()[seg])
    idx = coupling.pairs.sampler.order[:n]
    start, end = states[idx, seg], states[idx, seg + 1]
    s = fk.paths.build(path).sample(batch.x0, batch.x1, batch.t)
    torch.testing.assert_close(s.x_t, start)
    torch.testing.assert_close(s.velocity, (end - start) * k)


def test_one_step_distillation_pair_is_the_teacher_pair() -> None:
    x0 = torch.randn(30, 2, dtype=torch.float64)
    pairs = PairedCoupling(x0, 3 * x0 + 1, deterministic=True)
    batch = DistillationCoupling(pairs).sample(30, gen(8))
    assert torch.equal(batch.t, torch.zeros(30, dtype=torch.float64))
    torch.testing.assert_close(batch.x1, 3 * batch.x0 + 1)


def test_multi_step_distillation_requires_states() -> None:
    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match="state_grid=4"):
        DistillationCoupling(PairedCoupling(x, x), steps_k=4)
