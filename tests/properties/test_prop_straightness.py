"""Property 3, straightness ``S = ∫ E||(Z1 − Z0) − v(Z_t, t)||² dt``.

* ``S ≥ 0``, and ``S > 0`` for the oracle of an independent coupling on the rectified path: its
  marginals have covariance ``t²·C1 + (1 − t)²·C0``, which no family of straight constant-speed
  lines ``x0 + t·(T(x0) − x0)`` from a non-degenerate source reproduces (in 1-D that would need
  ``((1 − t) + t·m)² = (1 − t)² + t²·c1/c0`` for all t, i.e. ``m = 0``), so its trajectories bend.
  (On a variance-preserving path with equal ends nothing moves and S = 0.)
* ``S = 0`` for a straight flow, and then one Euler step is exact. The straight flow is the
  2-rectified flow of a Gaussian problem: pairs ``x1 = M·x0 + c`` (M symmetric positive
  definite) joined by straight lines ``x_t = ((1 − t)·I + t·M)·x0 + t·c`` give the field
  ``v(x, t) = (M − I)·x0(x, t) + c`` with ``x0(x, t) = ((1 − t)·I + t·M)⁻¹·(x − t·c)``.
"""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st
from prop_strategies import (
    Problem,
    covariances,
    generator,
    problems,
    scaled,
    seeds,
    unit,
)
from torch import Tensor

import flowkit as fk
from flowkit.data.oracle import ExactMarginal
from flowkit.paths import AffinePath


class StraightField:
    """``v(x, t) = (M − I)·x0 + c`` along the lines ``x_t = ((1 − t)·I + t·M)·x0 + t·c``."""

    def __init__(self, m: Tensor, c: Tensor) -> None:
        self.m, self.c = m, c

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        eye = torch.eye(self.m.shape[0], dtype=x.dtype)
        tt = t[:, None, None]
        interpolant = (1.0 - tt) * eye + tt * self.m
        x0 = torch.linalg.solve(interpolant, (x - t[:, None] * self.c).unsqueeze(-1)).squeeze(-1)
        return x0 @ (self.m - eye).T + self.c


@scaled(0.4)
@given(problem=problems(dims=(1, 3)), seed=seeds)
def test_straightness_of_the_one_rectified_oracle_flow_is_positive(
    problem: Problem, seed: int
) -> None:
    oracle = ExactMarginal(problem.source, problem.target, AffinePath("rectified"))
    x0 = problem.source.sample(256, generator=generator(seed)).double()
    s = fk.metrics.straightness(oracle, x0, solver="rk4", steps=20)
    assert s > 1e-6, f"straightness {s:.3g} of a curved flow"


@scaled(0.4)
@given(dim=st.integers(1, 4), data=st.data(), seed=seeds)
def test_straight_flow_has_zero_straightness_and_one_euler_step_is_exact(
    dim: int, data: st.DataObject, seed: int
) -> None:
    m = data.draw(covariances(dim, scale=(0.3, 2.0)), label="M")
    c = torch.tensor([data.draw(unit(-3.0, 3.0)) for _ in range(dim)], dtype=torch.float64)
    field = StraightField(m, c)
    x0 = torch.randn(128, dim, generator=generator(seed), dtype=torch.float64)
    s = fk.metrics.straightness(field, x0, solver="rk4", steps=16)
    scale = float((x0 @ (m - torch.eye(dim, dtype=torch.float64)).T + c).pow(2).sum(1).mean())
    assert 0.0 <= s <= 1e-10 * max(1.0, scale), f"straightness {s:.3g} of a straight flow"
    one_step = fk.sample(field, x0, solver="euler", steps=1).x
    torch.testing.assert_close(one_step, x0 @ m.T + c, rtol=1e-10, atol=1e-10)
    precise = fk.sample(field, x0, solver="dopri5", rtol=1e-9, atol=1e-9).x
    torch.testing.assert_close(one_step, precise, rtol=1e-6, atol=1e-6)
