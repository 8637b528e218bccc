"""Property 2, reflow with the oracle as teacher: marginals kept, cost lowered, monotone in 1-D.

``fk.reflow(oracle, independent coupling)`` pairs each source sample ``x0`` with its image
``x1 = Flow(x0)`` under the exact marginal velocity (the 1-rectified flow of the problem):

* ``x0`` follows the source and ``x1`` the target (marginal preservation of the flow);
* every pair is the teacher's image of its own ``x0`` (pairs are not mixed up);
* ``E||x1 − x0||²`` is not above the independent coupling's ``||m1 − m0||² + tr C0 + tr C1``;
* in 1-D the map is increasing (ODE trajectories cannot cross), hence the monotone optimal
  transport map; for ``N(0, 1) -> N(μ, s²)`` it is exactly ``x1 = μ + s·x0``.

Only schedules with finite derivatives that reach their endpoints are integrated to t = 1
(rectified, cosine, polynomial with n ≥ 1, custom).
"""

from __future__ import annotations

import math

import torch
from hypothesis import given
from prop_checks import Z_MAX, assert_covariance, assert_matches, assert_mean
from prop_strategies import (
    Problem,
    finite_schedule,
    generator,
    problems,
    scaled,
    seeds,
    unit,
)

import flowkit as fk
from flowkit.couplings import IndependentCoupling, PairedCoupling
from flowkit.data.gaussian import GaussianMixture
from flowkit.data.oracle import ExactMarginal
from flowkit.paths import AffinePath
from flowkit.paths.schedules import Schedule

N_PAIRS = 1000
SHARD = 500
N_REFERENCE = 300
TOL = 1e-5
CHECKED_PER_SHARD = 16


def reflow_pairs(
    problem: Problem, schedule: Schedule, seed: int
) -> tuple[ExactMarginal, PairedCoupling]:
    """Reflow pairs of the problem's oracle (two shards of 500 pairs)."""
    oracle = ExactMarginal(problem.source, problem.target, AffinePath(schedule))
    pairs = fk.reflow(
        oracle,
        IndependentCoupling(problem.source, problem.target),
        solver="dopri5",
        num_pairs=N_PAIRS,
        chunk_size=SHARD,
        seed=seed,
        progress=False,
        rtol=TOL,
        atol=TOL,
    )
    return oracle, pairs


@scaled(0.2)
@given(schedule=finite_schedule, problem=problems(dims=(1, 3)), seed=seeds)
def test_reflow_pairs_keep_the_marginals_and_lower_the_cost(
    schedule: Schedule, problem: Problem, seed: int
) -> None:
    oracle, pairs = reflow_pairs(problem, schedule, seed)
    x0, x1 = pairs.x0.double(), pairs.x1.double()
    src, tgt = problem.source, problem.target
    assert_mean(x0, src.mean(), src.covariance(), "reflow x0")
    assert_covariance(x0, src.covariance(), "reflow x0")
    reference = tgt.sample(N_REFERENCE, generator=generator(seed + 1)).double()
    assert_matches(x1, tgt.mean(), tgt.covariance(), reference, seed, "reflow x1")

    # Each pair is (x0, Flow(x0)): re-solve some pairs of every shard on their own. The float32
    # pairs solved at tolerance 1e-5 are accurate to ~1e-3; mixed-up pairs differ by about the
    # target's spread (standard deviations ≥ 0.3).
    idx = torch.cat([torch.arange(CHECKED_PER_SHARD) + k for k in range(0, N_PAIRS, SHARD)])
    alone = fk.sample(oracle, x0[idx], solver="dopri5", rtol=1e-8, atol=1e-8).x
    torch.testing.assert_close(x1[idx], alone, rtol=0.0, atol=1e-2)

    # E||x1 − x0||² ≤ the independent coupling's exact cost (+ Z_MAX standard errors of the
    # reflow cost's sample mean).
    sq = (x1 - x0).pow(2).sum(1)
    independent = float(
        (tgt.mean() - src.mean()).pow(2).sum() + src.covariance().trace() + tgt.covariance().trace()
    )
    bound = independent + Z_MAX * float(sq.std()) / math.sqrt(N_PAIRS)
    assert float(sq.mean()) <= bound, (
        f"reflow cost {float(sq.mean()):.3f} > independent {independent:.3f}"
    )


@scaled(0.2)
@given(schedule=finite_schedule, problem=problems(dims=(1, 1)), seed=seeds)
def test_reflow_map_is_monotone_in_one_dimension(
    schedule: Schedule, problem: Problem, seed: int
) -> None:
    """Sorted by x0, the x1 increase (up to 1e-2: the float32 solves are accurate to ~1e-3)."""
    _, pairs = reflow_pairs(problem, schedule, seed)
    order = pairs.x0[:, 0].argsort()
    steps = pairs.x1[order, 0].diff()
    assert float(steps.min()) > -1e-2, f"reflow map decreases by {-float(steps.min()):.3g}"


@scaled(0.2)
@given(schedule=finite_schedule, mu=unit(-5.0, 5.0), s=unit(0.2, 5.0), seed=seeds)
def test_one_rectified_map_between_gaussians_is_affine(
    schedule: Schedule, mu: float, s: float, seed: int
) -> None:
    """``N(0, 1) -> N(μ, s²)``: the 1-RF map is the monotone map ``x1 = μ + s·x0``, exactly.

    The marginal velocity of Gaussian ends is linear in x, its flow map affine and increasing,
    and the only increasing affine map between the two Gaussians is ``μ + s·x0``; the tolerance
    covers the float32 solve (rtol = atol = 1e-5: errors ~1e-3 for |x| ≲ 25); a wrong pairing
    is off by about s.
    """
    problem = Problem(GaussianMixture([[0.0]]), GaussianMixture([[mu]], std=s))
    _, pairs = reflow_pairs(problem, schedule, seed)
    x0, x1 = pairs.x0.double(), pairs.x1.double()
    torch.testing.assert_close(x1, mu + s * x0, rtol=1e-3, atol=1e-2)
