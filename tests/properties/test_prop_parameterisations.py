"""Properties 4 and 5: parameterisations and schedule invariance, pointwise on the oracle.

4. The oracle's posterior means ``E[x0|x_t]`` (epsilon), ``E[x1|x_t]`` and, for a standard
   Gaussian source, its score, fed through the path's conversion, equal the oracle's velocity;
   and the velocity converts back to them. A :class:`~flowkit.Flow` whose model predicts the
   oracle's epsilon / x1 / score has the oracle's velocity. Exact identities (``x_t = a·E[x1|x_t]
   + b·E[x0|x_t]`` and ``u = a'·E[x1|x_t] + b'·E[x0|x_t]``), checked in float64.
5. The schedule-changed oracle of schedule A equals the oracle computed for schedule B directly,
   pointwise (equal-SNR time change plus rescaling is exact).

Times are drawn per point (shape (B,)) inside [0.01, 0.99] for the conversions and inside the
common log-SNR range on ``[δ, 1 − δ]`` for the schedule change.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from prop_strategies import (
    ENDPOINT_GUARD,
    SCHEDULE_NAMES,
    any_schedule,
    generator,
    problems,
    scaled,
    schedules,
    seeds,
    unit,
)
from torch import Tensor, nn

import flowkit as fk
from flowkit.data.oracle import ExactMarginal
from flowkit.paths import AffinePath, ScheduleChange
from flowkit.paths.schedules import Schedule

RTOL = 1e-6
BATCH = 64
CONVERSION_GUARD = 0.01
"""Conversions are checked on [0.01, 0.99]: nearer the ends, schedules such as b = (1 − t)³ make
``b`` and ``det = a·b' − a'·b`` so small (< 1e-6) that float64 round-off is amplified past RTOL."""


def assert_close(actual: Tensor, expected: Tensor, what: str) -> None:
    """``|actual − expected| ≤ RTOL·max(1, |expected|)`` entrywise (float64 round-off scale)."""
    err = (actual - expected).abs() / expected.abs().clamp_min(1.0)
    assert bool(torch.isfinite(actual).all()), f"{what}: non-finite values"
    assert float(err.max()) <= RTOL, f"{what}: relative error {float(err.max()):.2e}"


def points(oracle: ExactMarginal, seed: int, lo: float, hi: float) -> tuple[Tensor, Tensor]:
    """Per-point times uniform in [lo, hi] and points drawn from ``p_t`` at those times."""
    g = generator(seed)
    t = lo + (hi - lo) * torch.rand(BATCH, generator=g, dtype=torch.float64)
    return oracle.sample(BATCH, t, generator=g).double(), t


class OraclePrediction(nn.Module):
    """A "model" returning the oracle in one parameterisation, for :class:`fk.Flow`."""

    def __init__(self, oracle: ExactMarginal, prediction: str) -> None:
        super().__init__()
        self.oracle = oracle
        self.prediction = prediction

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.oracle.predict(x, t, self.prediction)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@scaled(0.4)
@given(data=st.data())
def test_conversions_of_the_oracle_give_its_velocity(name: str, data: st.DataObject) -> None:
    schedule = data.draw(schedules(name), label="schedule")
    standard = data.draw(st.booleans(), label="standard source")
    problem = data.draw(problems(standard_source=standard), label="problem")
    seed = data.draw(seeds, label="seed")
    path = AffinePath(schedule)
    oracle = ExactMarginal(problem.source, problem.target, path)
    x, t = points(oracle, seed, CONVERSION_GUARD, 1.0 - CONVERSION_GUARD)
    velocity = oracle.velocity(x, t)
    predictions = ["epsilon", "x1"] + (["score"] if standard else [])
    for prediction in predictions:
        pred = oracle.predict(x, t, prediction)
        what = f"{schedule!r}: {prediction}"
        assert_close(path.convert(pred, prediction, "velocity", x, t), velocity, f"{what} -> v")
        assert_close(path.convert(velocity, "velocity", prediction, x, t), pred, f"v -> {what}")
        flow = fk.Flow(OraclePrediction(oracle, prediction), path, prediction)
        assert_close(flow.velocity(x, t), velocity, f"Flow({what}).velocity")


def common_log_snr_range(a: Schedule, b: Schedule) -> tuple[float, float]:
    """The log-SNR values both schedules take on ``[δ, 1 − δ]``."""
    ends = torch.tensor([ENDPOINT_GUARD, 1.0 - ENDPOINT_GUARD], dtype=torch.float64)
    la, lb = a.log_snr(ends), b.log_snr(ends)
    return max(float(la[0]), float(lb[0])), min(float(la[1]), float(lb[1]))


@scaled(1.0)
@given(
    source_schedule=any_schedule,
    target_schedule=any_schedule,
    problem=problems(),
    seed=seeds,
    spread=unit(0.05, 0.95),
)
def test_schedule_changed_oracle_equals_the_oracle_of_the_new_schedule(
    source_schedule: Schedule,
    target_schedule: Schedule,
    problem,
    seed: int,
    spread: float,
) -> None:
    lo, hi = common_log_snr_range(source_schedule, target_schedule)
    assert lo < hi, "every pair of schedules shares a log-SNR range on [δ, 1 − δ]"
    oracle_a = ExactMarginal(problem.source, problem.target, AffinePath(source_schedule))
    oracle_b = ExactMarginal(problem.source, problem.target, AffinePath(target_schedule))
    g = generator(seed)
    margin = 0.5 * (1.0 - spread) * (hi - lo)
    lam = lo + margin + (hi - lo - 2 * margin) * torch.rand(BATCH, generator=g, dtype=torch.float64)
    t = target_schedule.t_from_log_snr(lam).to(torch.float64)
    x = oracle_b.sample(BATCH, t, generator=g).double()
    changed = ScheduleChange(oracle_a, target_schedule, source=source_schedule)
    what = f"{source_schedule!r} -> {target_schedule!r}"
    assert_close(changed.velocity(x, t), oracle_b.velocity(x, t), what)
