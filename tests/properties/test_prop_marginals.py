"""Property 1, marginal preservation: the exact marginal velocity transports p_0 along p_t.

For independent Gaussian-mixture source and target and any affine path, integrating the oracle's
``u_t(x) = E[a'·x1 + b'·x0 | x_t = x]`` from samples of ``p_0`` gives, at every time ``t`` of a
grid, samples of the path's marginal ``p_t`` (law of ``a(t)·x1 + b(t)·x0``), and at ``t = 1``
samples of the target. Checked for every registered schedule (plus random custom ones) and
every adaptive solver, by the moments of ``p_t`` (exact: mean ``a·m1 + b·m0``, covariance
``a²·C1 + b²·C0``), the mean log-density ``E log p_t`` and an energy two-sample test against
samples drawn from ``p_t`` directly (tolerances: :mod:`prop_checks`).

Sample sizes: N = 1000 transported points (one standard error of a mean is 3 % of a standard
deviation); the energy test compares 300 of them with 300 fresh points. Every marginal variance
is at least 0.1·(a² + b²) ≥ 0.1/32 (covariance eigenvalues ≥ 0.1; a ≥ t³ and b ≥ (1 − t)³ for
every schedule drawn), so one standard error is ≥ 1.7e-3, while the solver tolerances keep the
integration error near 1e-5.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from prop_checks import assert_matches, assert_same_mean
from prop_strategies import (
    ADAPTIVE_SOLVERS,
    SCHEDULE_NAMES,
    Problem,
    generator,
    problems,
    scaled,
    schedules,
    seeds,
    time_span,
)
from torch import Tensor

import flowkit as fk
from flowkit.data.oracle import ExactMarginal
from flowkit.paths import AffinePath

N = 1000
N_REFERENCE = 300
GRID_POINTS = 3
TOLERANCE = {"dopri5": 1e-6, "bosh3": 1e-6, "adaptive_heun": 1e-5, "dopri8": 1e-7}
MAX_STEPS = 5000


def path_moments(problem: Problem, path: AffinePath, t: float) -> tuple[Tensor, Tensor]:
    """Mean ``a·m1 + b·m0`` and covariance ``a²·C1 + b²·C0`` of ``p_t`` (independent ends)."""
    t64 = torch.tensor(t, dtype=torch.float64)
    a, b = path.a(t64), path.b(t64)
    src, tgt = problem.source, problem.target
    return a * tgt.mean() + b * src.mean(), a**2 * tgt.covariance() + b**2 * src.covariance()


def reference_sample(oracle: ExactMarginal, n: int, t: float, g: torch.Generator) -> Tensor:
    """Fresh samples of ``p_t``; at ``t = 1`` drawn from the target itself."""
    if t == 1.0:
        return oracle.target.sample(n, generator=g).double()
    return oracle.sample(n, t, generator=g).double()


@pytest.mark.parametrize("solver", ADAPTIVE_SOLVERS)
@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@scaled(0.08, minimum=2)
@given(data=st.data())
def test_oracle_flow_preserves_the_marginals(name: str, solver: str, data: st.DataObject) -> None:
    schedule = data.draw(schedules(name), label="schedule")
    problem = data.draw(problems(), label="problem")
    seed = data.draw(seeds, label="seed")
    path = AffinePath(schedule)
    oracle = ExactMarginal(problem.source, problem.target, path)
    lo, hi = time_span(schedule)
    grid = torch.linspace(lo, hi, GRID_POINTS + 1, dtype=torch.float64).tolist()
    g = generator(seed)
    x = oracle.sample(N, lo, generator=g).double()
    tol = TOLERANCE[solver]
    for k, (t0, t1) in enumerate(itertools.pairwise(grid), start=1):
        x = fk.sample(
            oracle,
            x,
            solver=solver,
            t_start=t0,
            t_end=t1,
            rtol=tol,
            atol=tol,
            max_num_steps=MAX_STEPS,
        ).x
        what = f"{schedule!r} with {solver}, t = {t1:.4f}"
        assert bool(torch.isfinite(x).all()), f"{what}: non-finite states"
        mean, cov = path_moments(problem, path, t1)
        reference = reference_sample(oracle, N_REFERENCE, t1, g)
        assert_matches(x, mean, cov, reference, seed + k, what)
        fresh = reference_sample(oracle, N, t1, g)
        assert_same_mean(oracle.log_prob(x, t1), oracle.log_prob(fresh, t1), f"{what}: log p_t")
