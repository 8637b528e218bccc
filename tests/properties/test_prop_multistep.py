"""Properties of the multistep solvers ``dpm_solver_pp`` and ``unipc``.

* convergence at their (global) order on the logistic ODE of :mod:`test_prop_solvers`, on two
  paths and both interpolations: order 1 for ``dpm_solver_pp(order=1)``; order 2 for every other
  configuration. Order 3 predictors are also order 2 globally: their first step (no history) is
  first order, with a local error O(h²) that no later step removes, as for every multistep
  method started at a lower order (and the last step into t = 1 is first order with
  ``lower_order_final``);
* ``dpm_solver_pp(order=1)`` is ``ddim`` on every schedule, forwards and backwards;
* backward ∘ forward → identity as the steps grow;
* marginal preservation: the exact Gaussian-mixture field integrated from ``p_lo`` reaches the
  path's marginal at ``hi`` (moments and an energy test, :mod:`prop_checks`).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from prop_checks import assert_matches
from prop_strategies import (
    SCHEDULE_NAMES,
    any_schedule,
    generator,
    grids,
    problems,
    scaled,
    schedules,
    seeds,
    time_span,
)
from test_prop_marginals import path_moments, reference_sample
from test_prop_solvers import Logistic, error, logistic_start, logistics, order_start

import flowkit as fk
from flowkit.data.oracle import ExactMarginal
from flowkit.paths import AffinePath
from flowkit.paths.schedules import Schedule

FT = {"interpolation": "flow_time"}
#: (solver, options, global order)
CONFIGURATIONS = [
    ("dpm_solver_pp", {"order": 1}, 1),
    ("dpm_solver_pp", {"order": 2}, 2),
    ("dpm_solver_pp", {"order": 3}, 2),
    ("dpm_solver_pp", {"order": 2, **FT}, 2),
    ("unipc", {"order": 1}, 2),
    ("unipc", {"order": 2}, 2),
    ("unipc", {"order": 2, **FT}, 2),
    ("unipc", {"order": 3, **FT}, 2),
]
BASE_STEPS = {1: 64, 2: 128}


@pytest.mark.parametrize(("solver", "options", "order"), CONFIGURATIONS)
@pytest.mark.parametrize("path", ["rectified", "cosine"])
@scaled(0.12)
@given(field=logistics, seed=seeds)
def test_multistep_solvers_converge_at_their_order(
    solver: str, options: dict, order: int, path: str, field: Logistic, seed: int
) -> None:
    """Halving the step divides the global error by at least ``2^(p − 0.4)``.

    Measured over the parameter box at 128 → 256 steps, the orders lie in [1.7, 2.6] for the
    order-2 configurations (λ-interpolation approaches 2 from below: its polynomial in λ sees the
    ends of [0, 1] at ℓ = ±11.5) and near 1.0 for order 1.
    """
    x0 = order_start((3,), seed)
    n = BASE_STEPS[order]
    coarse, fine = (error(field, x0, solver, s, path=path, **options) for s in (n, 2 * n))
    observed = math.log2(coarse / fine)
    assert observed >= order - 0.4, f"{solver} {options} on {path}: order {observed:.2f}"


def _range_of(schedule: Schedule) -> tuple[float, float]:
    lo, hi = time_span(schedule)
    return max(lo, 0.0), min(hi, 1.0)


@scaled(0.6)
@given(schedule=any_schedule, field=logistics, seed=seeds, data=st.data())
def test_dpm_solver_pp_order_one_is_ddim(
    schedule: Schedule, field: Logistic, seed: int, data: st.DataObject
) -> None:
    """``order=1`` is DDIM's ``a(s)·x̂1 + b(s)·ε̂`` forwards and its mirror backwards."""
    grid = data.draw(grids(), label="grid")
    path = AffinePath(schedule)
    x = logistic_start((4, 2), seed)
    for g in (grid, grid[::-1]):
        ddim = fk.sample(field, x, "ddim", grid=g, path=path, check_finite=False).x
        dpm = fk.sample(field, x, "dpm_solver_pp", order=1, grid=g, path=path, check_finite=False)
        torch.testing.assert_close(dpm.x, ddim, rtol=1e-9, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize(("solver", "options"), [("dpm_solver_pp", {}), ("unipc", FT)])
@scaled(0.2)
@given(field=logistics, seed=seeds, path=st.sampled_from(["rectified", "cosine"]))
def test_backward_after_forward_tends_to_the_identity(
    solver: str, options: dict, field: Logistic, seed: int, path: str
) -> None:
    """``B_n(F_n(x)) − x`` is small at 32 steps and ≥ 8× smaller at 256 (an order-2 method
    gives 64×; the round trip's forward and backward errors partly cancel, irregularly).

    The logistic field is not a flow of these paths; on a path whose λ' is singular at an end
    (linear_vp, edm) its ε̂ is too, and the round trip of such a made-up field converges slowly.
    """
    x0 = logistic_start((6,), seed)

    def roundtrip(steps: int) -> float:
        kw = {"path": path, "steps": steps, **options}
        x1 = fk.sample(field, x0, solver, **kw).x
        back = fk.sample(field, x1, solver, t_start=1.0, t_end=0.0, **kw).x
        return float((back - x0).abs().max())

    coarse, fine = roundtrip(32), roundtrip(256)
    assert coarse < 1e-2, f"{solver} on {path}: round trip off by {coarse:.2e} at 32 steps"
    assert fine <= max(coarse / 8, 1e-5), f"{solver} on {path}: {coarse:.2e} -> {fine:.2e}"


N = 1000
N_REFERENCE = 300
STEPS = 100


@pytest.mark.parametrize(("solver", "options"), [("unipc", FT), ("dpm_solver_pp", {})])
@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@scaled(0.04, minimum=1)
@given(data=st.data())
def test_oracle_flow_with_multistep_solvers_reaches_the_marginal(
    solver: str, options: dict, name: str, data: st.DataObject
) -> None:
    """From samples of ``p_lo``, 100 steps on the exact field give samples of ``p_hi``."""
    schedule = data.draw(schedules(name), label="schedule")
    problem = data.draw(problems(), label="problem")
    seed = data.draw(seeds, label="seed")
    path = AffinePath(schedule)
    oracle = ExactMarginal(problem.source, problem.target, path)
    lo, hi = _range_of(schedule)
    g = generator(seed)
    x = oracle.sample(N, lo, generator=g).double()
    x = fk.sample(oracle, x, solver, steps=STEPS, t_start=lo, t_end=hi, **options).x
    mean, cov = path_moments(problem, path, hi)
    what = f"{schedule!r} with {solver} {options}"
    assert_matches(x, mean, cov, reference_sample(oracle, N_REFERENCE, hi, g), seed, what)
