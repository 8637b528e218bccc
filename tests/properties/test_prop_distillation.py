"""Property 7, distillation: a one-step student of the oracle recovers the Gaussian map.

For Gaussian ends the oracle's velocity is affine in x, so its flow map is affine:
``x1 = M·x0 + c``. The source is N(0, I) (noise → data, and a well-conditioned regression, so
the optimiser converges in a few hundred steps). A one-step student ``x1 ≈ x0 + v(x0, 0)``
with a linear velocity model ``v(x, t) = W·x + w`` trained by :func:`flowkit.distill` on the
oracle's pairs (the regression ``min E||x1 − x0 − v(x0, 0)||²``) must recover ``I + W = M`` and
``w = c``.
"""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st
from prop_strategies import gaussians, scaled, seeds
from torch import Tensor, nn

import flowkit as fk
from flowkit.couplings import IndependentCoupling
from flowkit.data.gaussian import GaussianMixture
from flowkit.data.oracle import ExactMarginal

N_PAIRS = 2048


class LinearVelocity(nn.Module):
    """``v(x, t) = W·x + w`` (ignores t): the exact form of a one-step Gaussian map."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.linear(x)


def affine_fit(x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor, float]:
    """Least-squares ``x1 ≈ M·x0 + c``: returns ``(M, c, max residual)``."""
    design = torch.cat([x0, torch.ones(x0.shape[0], 1, dtype=x0.dtype)], dim=1)
    coef = torch.linalg.lstsq(design, x1).solution
    residual = float((design @ coef - x1).abs().max())
    return coef[:-1].T, coef[-1], residual


@scaled(0.12)
@given(dim=st.integers(1, 2), data=st.data(), seed=seeds)
def test_one_step_student_recovers_the_linear_map(dim: int, data: st.DataObject, seed: int) -> None:
    source = GaussianMixture(means=[[0.0] * dim])
    target = data.draw(gaussians(dim), label="target")
    oracle = ExactMarginal(source, target, "rectified")
    pairs = fk.reflow(
        oracle,
        IndependentCoupling(source, target),
        num_pairs=N_PAIRS,
        seed=seed,
        progress=False,
        rtol=1e-6,
        atol=1e-6,
    )
    x0, x1 = pairs.x0.double(), pairs.x1.double()
    m, c, residual = affine_fit(x0, x1)
    assert residual < 1e-3, f"the Gaussian flow map is not affine (residual {residual:.2g})"

    student = fk.Flow(LinearVelocity(dim), "rectified")
    fk.distill(
        pairs,
        student,
        steps_k=1,
        steps=600,
        batch_size=256,
        lr=0.05,
        lr_schedule="cosine",
        seed=seed,
        progress=False,
    )
    linear = student.model.linear
    eye = torch.eye(dim)
    # The regression is noiseless (x1 is an exact affine function of x0), so the only errors
    # are the optimiser's; 0.03 is ~1 % of the map's typical scale (|M| ~ 0.3..3, |c| ≤ 6).
    torch.testing.assert_close(eye + linear.weight.detach(), m.float(), rtol=0.0, atol=3e-2)
    torch.testing.assert_close(linear.bias.detach(), c.float(), rtol=0.0, atol=3e-2)
    one_step = fk.sample(student, pairs.x0[:256], solver="euler", steps=1).x
    err = (one_step - pairs.x1[:256]).norm(dim=1).mean()
    assert float(err) < 0.1, f"one-step samples miss the teacher by {float(err):.3f}"
