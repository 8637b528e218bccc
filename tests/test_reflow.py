"""Reflow: teacher pairs, the pair store (atomic shards, resume, mismatch), transport cost."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

import flowkit as fk
from flowkit.couplings import IndependentCoupling, PairedCoupling, PairStore, StoreMismatchError

MU = torch.tensor([2.0, -1.0])
SCALE = torch.tensor([0.5, 1.5])


class GaussianTeacher(nn.Module):
    """Exact rectified-flow velocity from N(0, I) to N(μ, diag s²) (independent coupling).

    Per coordinate, ``x_t = (1−t)·x0 + t·x1`` is Gaussian with mean ``tμ`` and variance
    ``(1−t)² + t²s²``, and ``Cov(x1 − x0, x_t) = t·s² − (1−t)``, so
    ``v(x, t) = E[x1 − x0 | x_t = x] = μ + (t·s² − (1−t)) / ((1−t)² + t²·s²) · (x − tμ)``.
    Its flow map is the monotone (optimal) map ``x1 = μ + s·x0``.
    """

    def __init__(self, mu: Tensor = MU, scale: Tensor = SCALE) -> None:
        super().__init__()
        self.register_buffer("mu", mu.clone())
        self.register_buffer("scale", scale.clone())

    def forward(self, x: Tensor, t: Tensor, **cond: Tensor) -> Tensor:
        t = t.reshape(-1, 1).to(x.dtype)
        s2 = self.scale**2
        gain = (t * s2 - (1 - t)) / ((1 - t) ** 2 + t**2 * s2)
        return self.mu + gain * (x - t * self.mu)


class StraightTeacher(nn.Module):
    """Exact velocity of the deterministic coupling ``x1 = μ + s·x0`` on the rectified path.

    Paths ``x_t = x0 + t·(μ + (s−1)·x0)`` never cross, so ``x0 = (x − tμ)/(1 + t(s−1))`` and
    ``v(x, t) = μ + (s−1)·x0``: the exact 2-rectified flow of :class:`GaussianTeacher`.
    """

    def __init__(self, mu: Tensor = MU, scale: Tensor = SCALE) -> None:
        super().__init__()
        self.register_buffer("mu", mu.clone())
        self.register_buffer("scale", scale.clone())

    def forward(self, x: Tensor, t: Tensor, **cond: Tensor) -> Tensor:
        t = t.reshape(-1, 1).to(x.dtype)
        x0 = (x - t * self.mu) / (1 + t * (self.scale - 1))
        return self.mu + (self.scale - 1) * x0


class Normal:
    def __init__(self, mu: Tensor | None = None, scale: Tensor | None = None) -> None:
        self.mu = torch.zeros(2) if mu is None else mu
        self.scale = torch.ones(2) if scale is None else scale

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.mu + self.scale * torch.randn(n, 2, generator=generator)


class Labelled(Normal):
    def sample_conditional(self, n: int, generator: torch.Generator | None = None):
        x = self.sample(n, generator)
        return x, {"y": (x[:, 0] > 0).long()}


def gaussian_coupling() -> IndependentCoupling:
    return IndependentCoupling(Normal(), Normal(MU, SCALE))


def teacher_flow() -> fk.Flow:
    return fk.Flow(GaussianTeacher(), "rectified")


def transport_cost(x0: Tensor, x1: Tensor) -> float:
    return float(((x1 - x0) ** 2).sum(1).mean())


def test_pairs_equal_the_teachers_own_solve() -> None:
    flow = teacher_flow()
    pairs = fk.reflow(
        flow,
        gaussian_coupling(),
        solver="rk4",
        num_pairs=250,
        chunk_size=100,
        progress=False,
        steps=20,
    )
    assert isinstance(pairs, PairedCoupling) and pairs.deterministic and len(pairs) == 250
    again = fk.sample(flow, pairs.x0, solver="rk4", steps=20).x
    torch.testing.assert_close(pairs.x1, again, rtol=1e-5, atol=1e-5)
    # and the teacher is exact: x1 = μ + s·x0 up to the RK4 error (h⁴-small).
    torch.testing.assert_close(pairs.x1, MU + SCALE * pairs.x0, rtol=1e-3, atol=1e-3)
    assert pairs.manifest["nfe_total"] == 3 * 20 * 4


def test_dopri5_pairs_match_the_exact_map() -> None:
    pairs = fk.reflow(
        teacher_flow(),
        gaussian_coupling(),
        num_pairs=200,
        chunk_size=200,
        progress=False,
        rtol=1e-6,
        atol=1e-6,
    )
    torch.testing.assert_close(pairs.x1, MU + SCALE * pairs.x0, rtol=1e-4, atol=1e-4)


def test_conditions_follow_the_source_draws() -> None:
    coupling = IndependentCoupling(Normal(), Labelled())
    pairs = fk.reflow(
        teacher_flow(),
        coupling,
        solver="euler",
        num_pairs=64,
        chunk_size=32,
        progress=False,
        steps=4,
    )
    assert pairs.cond["y"].shape == (64,)
    gen = torch.Generator().manual_seed(0)
    batch = pairs.sample(16, gen)
    row = pairs.sampler.order[:16]
    assert torch.equal(batch.cond["y"], pairs.cond["y"][row])


def test_store_matches_memory_and_reloads(tmp_path: Path) -> None:
    kwargs = dict(solver="euler", num_pairs=70, chunk_size=30, seed=3, progress=False, steps=8)
    memory = fk.reflow(teacher_flow(), gaussian_coupling(), **kwargs)
    stored = fk.reflow(teacher_flow(), gaussian_coupling(), store=tmp_path, **kwargs)
    loaded = fk.couplings.build({"name": "paired", "store": str(tmp_path)})
    for pairs in (stored, loaded):
        assert torch.equal(pairs.x0, memory.x0) and torch.equal(pairs.x1, memory.x1)
        assert pairs.deterministic
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["count"] == 70 and manifest["num_shards"] == 3
    assert manifest["fingerprint"]["teacher_hash"] == fk.couplings.teacher_hash(teacher_flow())
    assert manifest["fingerprint"]["solver"] == "euler" and manifest["nfe_total"] == 3 * 8
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.json",
        "shard-00000.safetensors",
        "shard-00001.safetensors",
        "shard-00002.safetensors",
    ]


def test_teacher_hash_tracks_weights() -> None:
    a, b = teacher_flow(), teacher_flow()
    assert fk.couplings.teacher_hash(a) == fk.couplings.teacher_hash(b)
    b.model.mu += 1e-6
    assert fk.couplings.teacher_hash(a) != fk.couplings.teacher_hash(b)


def test_mismatched_store_raises(tmp_path: Path) -> None:
    kwargs = dict(num_pairs=40, chunk_size=20, progress=False, steps=4)
    fk.reflow(teacher_flow(), gaussian_coupling(), solver="euler", store=tmp_path, **kwargs)
    with pytest.raises(StoreMismatchError, match="solver: stored 'euler', requested 'heun'"):
        fk.reflow(teacher_flow(), gaussian_coupling(), solver="heun", store=tmp_path, **kwargs)
    (tmp_path / "manifest.json").unlink()  # an unfinished store: shards alone are checked
    other = fk.Flow(GaussianTeacher(MU + 1), "rectified")
    with pytest.raises(StoreMismatchError, match="teacher_hash"):
        fk.reflow(other, gaussian_coupling(), solver="euler", store=tmp_path, **kwargs)


def test_half_written_shard_is_ignored(tmp_path: Path) -> None:
    kwargs = dict(solver="euler", num_pairs=40, chunk_size=20, progress=False, steps=4)
    full = fk.reflow(teacher_flow(), gaussian_coupling(), **kwargs)
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / ".shard-00001.safetensors.tmp-999").write_bytes(b"\x00" * 17)  # a killed write
    stored = fk.reflow(teacher_flow(), gaussian_coupling(), store=tmp_path, **kwargs)
    assert torch.equal(stored.x1, full.x1)
    assert not list(tmp_path.glob(".shard-*"))


KILLED_RUN = textwrap.dedent(
    """
    import os, sys, torch
    sys.path.insert(0, {tests!r})
    import flowkit as fk
    from test_reflow import gaussian_coupling, teacher_flow

    def die(index, done):
        if done >= 2 * 25:
            os._exit(17)

    fk.reflow(teacher_flow(), gaussian_coupling(), solver="rk4", num_pairs=110, chunk_size=25,
              seed=5, store={store!r}, progress=False, callback=die, steps=6)
    """
)


def test_store_survives_a_killed_process_and_resumes(tmp_path: Path) -> None:
    store = tmp_path / "pairs"
    script = KILLED_RUN.format(tests=str(Path(__file__).parent), store=str(store))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 17, proc.stderr
    assert not (store / "manifest.json").exists()
    kept = sorted(p.name for p in store.glob("shard-*.safetensors"))
    assert kept == ["shard-00000.safetensors", "shard-00001.safetensors"]
    before = {name: load_file(str(store / name)) for name in kept}

    solved: list[int] = []
    kwargs = dict(solver="rk4", num_pairs=110, chunk_size=25, seed=5, progress=False, steps=6)
    resumed = fk.reflow(
        teacher_flow(),
        gaussian_coupling(),
        store=store,
        callback=lambda i, n: solved.append(i),
        **kwargs,
    )
    assert solved == [2, 3, 4]  # finished shards were kept, only the missing ones solved
    for name, tensors in before.items():
        after = load_file(str(store / name))
        assert all(torch.equal(after[k], tensors[k]) for k in tensors)
    reference = fk.reflow(teacher_flow(), gaussian_coupling(), store=tmp_path / "ref", **kwargs)
    assert torch.equal(resumed.x0, reference.x0) and torch.equal(resumed.x1, reference.x1)
    assert PairStore(store).read_manifest()["nfe_per_shard"] == [24] * 5


def test_sharded_generation_then_manifest(tmp_path: Path) -> None:
    """Two "ranks" write alternate shards; reflow then finds them all and writes the manifest."""
    kwargs = dict(solver="euler", num_pairs=90, chunk_size=20, seed=1, steps=5)
    job = fk.couplings.ReflowJob.create(
        teacher_flow(),
        gaussian_coupling(),
        kwargs["solver"],
        kwargs["num_pairs"],
        kwargs["chunk_size"],
        kwargs["seed"],
        None,
        {"steps": 5},
    )
    store = PairStore(tmp_path)
    assert fk.couplings.write_shards(job, store, range(0, 5, 2), progress=False) == [1, 3]
    assert store.read_manifest() is None
    assert fk.couplings.write_shards(job, store, range(1, 5, 2), progress=False) == []
    solved: list[int] = []
    pairs = fk.reflow(
        teacher_flow(),
        gaussian_coupling(),
        store=tmp_path,
        progress=False,
        callback=lambda i, n: solved.append(i),
        **kwargs,
    )
    assert solved == []
    single = fk.reflow(teacher_flow(), gaussian_coupling(), progress=False, **kwargs)
    assert torch.equal(pairs.x1, single.x1)


def test_reflow_does_not_raise_transport_cost() -> None:
    """Exact teacher: cost of (x0, Flow(x0)) vs the independent coupling, same x0."""
    n = 4000
    coupling = gaussian_coupling()
    pairs = fk.reflow(
        teacher_flow(), coupling, num_pairs=n, chunk_size=n, progress=False, rtol=1e-6, atol=1e-6
    )
    independent = coupling.sample(n, torch.Generator().manual_seed(11))
    before = transport_cost(independent.x0, independent.x1)
    after = transport_cost(pairs.x0, pairs.x1)
    # E before = |μ|² + Σ(1 + s²) = 5 + 4.5 = 9.5; after = |μ|² + Σ(s − 1)² = 5.5. The per-pair
    # cost has std below 8, so each mean is within 6·8/√4000 ≈ 0.76 of its expectation.
    assert after <= before
    assert abs(after - 5.5) < 0.76 and abs(before - 9.5) < 0.76


def test_k_rectified_flow_with_exact_teachers() -> None:
    """Reflow applied twice: the 2-rectified flow of the Gaussian problem is straight, so its
    reflow reproduces the same pairs (a fixed point) and the cost stays put."""
    coupling = gaussian_coupling()
    opts = dict(num_pairs=500, chunk_size=500, progress=False, rtol=1e-6, atol=1e-6)
    first = fk.reflow(teacher_flow(), coupling, **opts)
    second = fk.reflow(fk.Flow(StraightTeacher(), "rectified"), coupling, **opts)
    torch.testing.assert_close(second.x0, first.x0)
    torch.testing.assert_close(second.x1, first.x1, rtol=1e-4, atol=1e-4)
    straight = fk.sample(fk.Flow(StraightTeacher(), "rectified"), first.x0, solver="euler", steps=1)
    torch.testing.assert_close(straight.x, first.x1, rtol=1e-4, atol=1e-4)
    assert math.isclose(
        transport_cost(second.x0, second.x1), transport_cost(first.x0, first.x1), rel_tol=1e-3
    )


def test_state_grid_keeps_teacher_states() -> None:
    pairs = fk.reflow(
        teacher_flow(),
        gaussian_coupling(),
        solver="rk4",
        num_pairs=50,
        chunk_size=50,
        progress=False,
        state_grid=4,
        steps=10,
    )
    assert pairs.grid == [0.0, 0.25, 0.5, 0.75, 1.0] and pairs.states.shape == (50, 5, 2)
    torch.testing.assert_close(pairs.states[:, 0], pairs.x0)
    torch.testing.assert_close(pairs.states[:, -1], pairs.x1)
    mid = fk.sample(teacher_flow(), pairs.x0, solver="rk4", steps=10, t_end=0.5).x
    torch.testing.assert_close(pairs.states[:, 2], mid, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_pairs": 0}, "num_pairs"),
        ({"chunk_size": -1}, "chunk_size"),
        ({"state_grid": [0.0, 0.7, 0.5, 1.0]}, "state_grid"),
        ({"state_grid": 0}, "state_grid"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fk.reflow(teacher_flow(), gaussian_coupling(), progress=False, **kwargs)
