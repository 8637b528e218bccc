"""Metrics on cases with known answers: W2, sliced W2, energy distance/test, MMD, trajectories."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import flowkit as fk
from flowkit.metrics import Metric
from flowkit.registry import RegistryError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registry_builds_metrics_with_bound_options() -> None:
    assert {
        "w2",
        "sliced_w2",
        "energy_distance",
        "energy_test",
        "mmd",
        "straightness",
        "transport_cost",
        "path_energy",
        "nfe",
    } <= set(fk.metrics.names())
    metric = fk.metrics.build({"name": "sliced_w2", "projections": 7})
    assert isinstance(metric, Metric) and metric.inputs == "samples"
    x, y = torch.randn(50, 3, generator=gen()), torch.randn(40, 3, generator=gen(1))
    assert metric(x, y, generator=gen(2)) == fk.metrics.sliced_w2(
        x, y, projections=7, generator=gen(2)
    )
    with pytest.raises(RegistryError, match="allowed options: projections, generator"):
        fk.metrics.build({"name": "sliced_w2", "directions": 3})


def test_w2_of_a_translated_sample_is_the_translation() -> None:
    x = torch.randn(300, 2, generator=gen(), dtype=torch.float64)
    shift = torch.tensor([3.0, -4.0], dtype=torch.float64)
    # Translating every point: the identity coupling is optimal and W2 = |shift| exactly.
    assert fk.metrics.w2(x, x + shift) == pytest.approx(5.0, abs=1e-9)


def test_w2_of_two_shifted_gaussians_within_the_sampling_floor() -> None:
    x = torch.randn(1000, 2, generator=gen())
    y = torch.randn(1000, 2, generator=gen(1))
    shift = torch.tensor([1.0, 2.0])
    floor = fk.metrics.w2(x, y)
    # Triangle inequality: |W2(x, y + s) − W2(y, y + s)| ≤ W2(x, y), and W2(y, y + s) = |s|.
    assert abs(fk.metrics.w2(x, y + shift) - math.sqrt(5.0)) <= floor + 1e-9
    assert 0.02 < floor < 0.3


def test_w2_unequal_sizes_and_one_dimension() -> None:
    x = torch.randn(40, 1, generator=gen(), dtype=torch.float64)
    assert fk.metrics.w2(x, torch.cat([x, x])) == pytest.approx(0.0, abs=1e-9)
    y = torch.randn(40, 1, generator=gen(1), dtype=torch.float64) * 2 + 1
    # 1-D: the optimal coupling matches sorted samples.
    by_hand = (x.sort(0).values - y.sort(0).values).pow(2).mean().sqrt().item()
    assert fk.metrics.w2(x, y) == pytest.approx(by_hand, rel=1e-9)


def test_sliced_w2_is_exact_in_one_dimension_and_below_w2() -> None:
    x = torch.randn(30, 1, generator=gen())
    y = torch.randn(45, 1, generator=gen(1)) + 0.5
    assert fk.metrics.sliced_w2(x, y, projections=3, generator=gen()) == pytest.approx(
        fk.metrics.w2(x, y), rel=1e-9
    )
    a, b = torch.randn(200, 4, generator=gen()), torch.randn(150, 4, generator=gen(1)) + 1
    sw = fk.metrics.sliced_w2(a, b, projections=64, generator=gen(2))
    assert 0 < sw <= fk.metrics.w2(a, b)
    assert sw == fk.metrics.sliced_w2(a, b, projections=64, generator=gen(2))
    # Translation by s: each direction gives (θ·s)²; E(θ·s)² = |s|²/d = 1 for s = (2, 0, 0, 0)
    # and 2000 directions keep the Monte Carlo error of the mean below 5%.
    s = torch.tensor([2.0, 0.0, 0.0, 0.0])
    assert fk.metrics.sliced_w2(a, a + s, projections=2000, generator=gen()) == pytest.approx(
        1.0, rel=0.05
    )


def test_energy_distance_by_hand_and_against_scipy() -> None:
    import scipy.stats as scipy_stats

    x = torch.tensor([[0.0], [1.0], [3.0]])
    y = torch.tensor([[1.0], [2.0]])
    cross = np.mean([abs(a - b) for a in (0, 1, 3) for b in (1, 2)])
    within_x = (1 + 3 + 2) * 2
    within_y = 1 * 2
    v_stat = 2 * cross - within_x / 9 - within_y / 4
    u_stat = 2 * cross - within_x / 6 - within_y / 2
    assert fk.metrics.energy_distance(x, y, unbiased=False) == pytest.approx(v_stat)
    assert fk.metrics.energy_distance(x, y) == pytest.approx(u_stat)
    a, b = np.random.default_rng(0).normal(size=(2, 50))
    expected = scipy_stats.energy_distance(a, b) ** 2
    got = fk.metrics.energy_distance(torch.tensor(a)[:, None], torch.tensor(b)[:, None], False)
    assert got == pytest.approx(expected, rel=1e-9)


def test_energy_test_p_values() -> None:
    x = torch.randn(300, 2, generator=gen())
    same = torch.randn(300, 2, generator=gen(1))
    shifted = same + torch.tensor([0.5, 0.0])
    assert fk.metrics.energy_test(x, same, permutations=200, generator=gen(2)) > 0.05
    assert fk.metrics.energy_test(x, shifted, permutations=200, generator=gen(2)) == 1 / 201
    # Under H0 the p-value is (nearly) uniform: over 40 independent null tests about 5% fall
    # below 0.05; binomial(40, 0.05) exceeds 8 with probability < 1e-3.
    small = sum(
        fk.metrics.energy_test(
            torch.randn(30, 2, generator=gen(10 + i)),
            torch.randn(30, 2, generator=gen(100 + i)),
            permutations=99,
            generator=gen(i),
        )
        < 0.05
        for i in range(40)
    )
    assert small <= 8


def test_mmd_by_hand_and_median_heuristic() -> None:
    x = torch.tensor([[0.0], [1.0]])
    y = torch.tensor([[3.0], [5.0]])

    def k(d: float, sigma: float) -> float:
        return math.exp(-(d**2) / (2 * sigma**2))

    sigma = 2.0
    by_hand = (
        k(1, sigma)
        + k(2, sigma)
        - 2 * np.mean([k(3, sigma), k(5, sigma), k(2, sigma), k(4, sigma)])
    )
    assert fk.metrics.mmd(x, y, bandwidth=sigma) == pytest.approx(by_hand)
    # Pooled pairwise distances 1, 3, 5, 2, 4, 2: median 2.5.
    assert fk.metrics.median_bandwidth(x.double(), y.double()) == pytest.approx(2.5)
    a = torch.randn(500, 2, generator=gen())
    b = torch.randn(500, 2, generator=gen(1))
    assert abs(fk.metrics.mmd(a, b)) < 0.01
    assert fk.metrics.mmd(a, b + 1.0) > 0.1


def test_transport_cost_by_hand() -> None:
    x0 = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    x1 = torch.tensor([[3.0, 4.0], [1.0, 2.0]])
    assert fk.metrics.transport_cost(x0, x1) == pytest.approx((25 + 1) / 2)
    with pytest.raises(ValueError, match="same shape"):
        fk.metrics.transport_cost(x0, x1[:1])


def test_metric_input_errors() -> None:
    with pytest.raises(ValueError, match="same size"):
        fk.metrics.w2(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(TypeError, match="x must be a tensor"):
        fk.metrics.energy_distance([1.0, 2.0], torch.zeros(2, 1))
    with pytest.raises(ValueError, match="projections must be a positive integer"):
        fk.metrics.sliced_w2(torch.zeros(3, 2), torch.zeros(3, 2), projections=0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        fk.metrics.energy_test(torch.zeros(1, 2), torch.zeros(3, 2))


def test_straightness_zero_for_a_constant_field() -> None:
    c = torch.tensor([1.0, -2.0], dtype=torch.float64)
    x0 = torch.randn(64, 2, generator=gen(), dtype=torch.float64)
    m = fk.metrics.trajectory_metrics(lambda x, t: c.expand_as(x), x0, steps=10)
    assert m.straightness == pytest.approx(0.0, abs=1e-20)
    assert m.path_energy == pytest.approx(1.0, rel=1e-12)
    assert m.transport_cost == pytest.approx(5.0, rel=1e-12)
    assert m.nfe == 10


def test_straightness_of_a_rotation_matches_the_closed_form() -> None:
    omega = 2.0
    rot = torch.tensor([[0.0, -omega], [omega, 0.0]], dtype=torch.float64)
    x0 = torch.randn(200, 2, generator=gen(), dtype=torch.float64)
    m2 = x0.pow(2).sum(1).mean().item()
    # Z_t = R(ωt)Z_0: E||Z1 − Z0||² = (2 − 2cos ω)·E|Z0|², E∫||v||² = ω²·E|Z0|², and
    # S = (ω² − (2 − 2cos ω))·E|Z0|².
    chord = 2 - 2 * math.cos(omega)
    field = lambda x, t: x @ rot.T  # noqa: E731
    m = fk.metrics.trajectory_metrics(field, x0, solver="rk4", steps=200)
    assert m.straightness == pytest.approx((omega**2 - chord) * m2, rel=1e-4)
    assert m.path_energy == pytest.approx(omega**2 / chord, rel=1e-4)
    assert m.transport_cost == pytest.approx(chord * m2, rel=1e-6)
    assert fk.metrics.straightness(field, x0, solver="rk4", steps=200) == m.straightness
    assert fk.metrics.path_energy(field, x0, solver="rk4", steps=200) == m.path_energy


def test_straightness_of_the_oracle_between_gaussians() -> None:
    from flowkit.data.oracle import ExactMarginal

    # N(0, I) -> N(μ, I) on the rectified path: u_t(x) = μ + (2t − 1)/C_t·(x − tμ) with
    # C_t = t² + (1 − t)², so Z_t = tμ + √C_t·Z_0: curved (S > 0) unless Z_0 = 0.
    oracle = ExactMarginal("gaussian", {"name": "gaussian", "mean": [4.0, 0.0]})
    x0 = torch.randn(500, 2, generator=gen(), dtype=torch.float64)
    m = fk.metrics.trajectory_metrics(oracle, x0, solver="rk4", steps=100)
    t = torch.linspace(0, 1, 20001, dtype=torch.float64)
    speed = (2 * t - 1) / torch.sqrt(t**2 + (1 - t) ** 2)
    # Δ = μ, v = μ + (d√C_t/dt)·Z_0 with ∫ d√C/dt dt = 0, so S = E|Z0|²·∫ (d√C/dt)² dt.
    s_exact = x0.pow(2).sum(1).mean().item() * torch.trapezoid(speed**2, t).item()
    assert m.straightness == pytest.approx(s_exact, rel=1e-4)
    assert m.transport_cost == pytest.approx(16.0, rel=1e-6)


def test_nfe_counts_solver_evaluations() -> None:
    x0 = torch.randn(8, 2, generator=gen())
    assert fk.metrics.nfe(lambda x, t: -x, x0, solver="euler", steps=7) == 7
    assert fk.metrics.nfe(lambda x, t: -x, x0, solver="dopri5", rtol=1e-5, atol=1e-5) > 6


def test_trajectory_metrics_when_nothing_moves() -> None:
    """A zero field moves nothing: S = 0, cost 0, and the energy ratio is defined (1), not 1/0."""
    from flowkit.metrics.trajectory import trajectory_metrics

    x0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    m = trajectory_metrics(lambda x, t: torch.zeros_like(x), x0, "euler", 4)
    assert m.straightness == 0.0
    assert m.transport_cost == 0.0
    assert m.path_energy == 1.0


def test_evaluate_rows_per_solver_step_count_and_guidance_scale() -> None:
    """A constant field maps x0 to x0 + mu exactly with any solver: W2 to x1 = x0 + mu is 0,
    straightness is 0, and the transport cost is |mu|^2."""
    mu = torch.tensor([2.0, -1.0])
    x0 = torch.randn(400, 2, generator=torch.Generator().manual_seed(0))
    solvers = [{"name": "euler", "steps": [1, 4]}, {"name": "dopri5", "rtol": 1e-6}]
    rows = fk.metrics.evaluate(lambda x, t: mu.expand_as(x), x0, x0 + mu, solvers, ["w2"])
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [(r["solver"], r["steps"]) for r in evals] == [
        ("euler", 1),
        ("euler", 4),
        ("dopri5", None),
    ]
    assert [r["nfe"] for r in evals[:2]] == [1, 4] and evals[2]["nfe"] > 4
    assert max(r["w2"] for r in evals) < 1e-4
    (straight,) = [r for r in rows if r["kind"] == "straightness"]
    assert straight["straightness"] < 1e-8
    assert straight["transport_cost"] == pytest.approx(5.0, rel=1e-5)


def test_evaluate_guidance_rows_and_diverged_solves() -> None:
    """One row per guidance scale; a solve with non-finite samples has no metric values."""
    x0 = torch.randn(50, 2, generator=torch.Generator().manual_seed(1))

    class Diverging(torch.nn.Module):
        num_classes = 3

        def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.full_like(x, torch.inf)

    rows = fk.metrics.evaluate(
        Diverging(),
        x0,
        x0,
        [{"name": "euler", "steps": 2}],
        ["w2"],
        cond={"y": torch.zeros(50, dtype=torch.long)},
        guidance=[0.5, 2.0],
        straightness=False,
    )
    assert [(r["guidance"], r["diverged"], r["w2"]) for r in rows] == [
        (0.5, 50, None),
        (2.0, 50, None),
    ]


@pytest.mark.parametrize(
    ("kwargs", "option", "phrase"),
    [
        ({"solvers": []}, "solvers", "at least one solver"),
        ({"metrics": ["straightness"]}, "metrics", "not generated samples"),
        ({"metrics": ["classifier_accuracy"]}, "classifier", "needs a classifier"),
    ],
)
def test_evaluate_refuses_what_it_cannot_score(kwargs: dict, option: str, phrase: str) -> None:
    x = torch.zeros(8, 2)
    arguments = {"solvers": ["euler"], "metrics": ["w2"], **kwargs}
    with pytest.raises(fk.checks.OptionError, match=phrase) as err:
        fk.metrics.evaluate(lambda x, t: x, x, x, **arguments)
    assert err.value.option == option
