"""Class-aware minibatch OT: pairs never cross classes, each class keeps the source law, and the
assignment within a class is the exact optimum."""

from __future__ import annotations

import math

import pytest
import torch

import flowkit as fk
from flowkit.couplings.assignment import exact_assignment, per_class_assignment, squared_distances

TARGET = {
    "name": "gaussian_mixture",
    "means": [[-4.0, 0.0], [4.0, 0.0], [0.0, 4.0]],
    "weights": [0.5, 0.3, 0.2],
    "labels": [0, 1, 2],
    "std": 0.3,
}


def coupling(**options):
    return fk.couplings.build(
        {"name": "minibatch_ot", "source": "gaussian", "target": TARGET, **options}
    )


def test_each_class_receives_a_sample_of_the_source_law() -> None:
    """The sources paired with class c have mean 0 (standard error 1/sqrt(n_c) per axis, N(0, I)
    source), while OT across classes pulls them towards the class (the bug it fixes)."""
    g = torch.Generator().manual_seed(0)
    aware = coupling().sample(1200, generator=g)
    mixed = coupling(by_class=False).sample(1200, generator=torch.Generator().manual_seed(0))
    for batch, within in ((aware, True), (mixed, False)):
        y = batch.cond["y"]
        for label in range(3):
            x0 = batch.x0[y == label]
            z = x0.mean(0).abs().max().item() * math.sqrt(x0.shape[0])
            assert (z <= 5.0) == within, (label, z, within)


@pytest.mark.parametrize("options", [{}, {"chunk_size": 64}, {"method": "sinkhorn", "reg": 0.01}])
def test_pairs_never_cross_classes_and_every_source_is_used_once(options) -> None:
    g = torch.Generator().manual_seed(1)
    ot = coupling(**options)
    x0, x1, cond = ot.draw_pair(300, torch.Generator().manual_seed(1))
    batch = ot.sample(300, generator=g)
    torch.testing.assert_close(batch.x1, x1)
    assert torch.equal(batch.cond["y"], cond["y"])
    rows = {tuple(r) for r in x0.tolist()}
    assert {tuple(r) for r in batch.x0.tolist()} == rows and len(rows) == 300
    start = 0
    for label in range(3):
        block = x0[start : start + int((cond["y"] == label).sum())]
        start += block.shape[0]
        paired = {tuple(r) for r in batch.x0[cond["y"] == label].tolist()}
        assert paired == {tuple(r) for r in block.tolist()}


def test_the_assignment_within_each_class_is_optimal() -> None:
    g = torch.Generator().manual_seed(2)
    x0, x1 = torch.randn(40, 2, generator=g), torch.randn(40, 2, generator=g)
    labels = torch.randint(3, (40,), generator=g)

    def solve(src, tgt):
        return exact_assignment(squared_distances(x0[src], x1[tgt]))

    perm = per_class_assignment(labels, solve)
    assert sorted(perm.tolist()) == list(range(40))
    start = 0
    for label in labels.unique().tolist():
        tgt = (labels == label).nonzero().squeeze(1)
        src = torch.arange(start, start + tgt.numel())
        start += tgt.numel()
        assert set(perm[tgt].tolist()) == set(src.tolist())
        cost = squared_distances(x0[src], x1[tgt])
        best = cost[exact_assignment(cost), torch.arange(tgt.numel())].sum()
        got = ((x0[perm[tgt]] - x1[tgt]) ** 2).sum()
        torch.testing.assert_close(got.double(), best, rtol=1e-6, atol=1e-6)


def test_unlabelled_targets_are_assigned_as_before() -> None:
    spec = {"name": "minibatch_ot", "source": "gaussian", "target": "moons"}
    a = fk.couplings.build(spec).sample(64, generator=torch.Generator().manual_seed(3))
    b = fk.couplings.build({**spec, "by_class": False}).sample(
        64, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(a.x0, b.x0) and torch.equal(a.x1, b.x1)


def test_by_class_must_be_a_flag() -> None:
    with pytest.raises(TypeError, match="by_class must be true or false, got 'yes'"):
        coupling(by_class="yes")
