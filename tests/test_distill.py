"""Distillation: one- and k-step students trained by fk.train on teacher segments."""

from __future__ import annotations

import pytest
import torch
from test_reflow import MU, SCALE, gaussian_coupling, teacher_flow
from torch import Tensor, nn

import flowkit as fk


class AffineInX(nn.Module):
    """``v(x, t) = (A + t·B)·x + c + t·d``: enough to hold one linear map per grid time."""

    def __init__(self, dim: int = 2) -> None:
        super().__init__()
        self.at0 = nn.Linear(dim, dim)
        self.slope = nn.Linear(dim, dim)
        nn.init.zeros_(self.slope.weight)
        nn.init.zeros_(self.slope.bias)

    def forward(self, x: Tensor, t: Tensor, **cond: Tensor) -> Tensor:
        return self.at0(x) + t.reshape(-1, 1) * self.slope(x)


def student() -> fk.Flow:
    torch.manual_seed(0)
    return fk.Flow(AffineInX(), "rectified")


TRAIN = dict(steps=800, batch_size=256, lr=2e-2, seed=0, progress=False)


def test_one_step_student_recovers_the_linear_map() -> None:
    """Exact teacher N(0, I) -> N(μ, diag s²): its flow map is x1 = μ + s·x0, and the
    one-step student x0 + v(x0, 0) must learn it (a noise-free linear regression)."""
    pairs = fk.reflow(
        teacher_flow(),
        gaussian_coupling(),
        num_pairs=2000,
        chunk_size=2000,
        progress=False,
        rtol=1e-6,
        atol=1e-6,
    )
    flow = fk.distill(pairs, student(), steps_k=1, **TRAIN)
    assert flow.deterministic_coupling
    layer = flow.model.at0
    torch.testing.assert_close(layer.weight + torch.eye(2), torch.diag(SCALE), atol=1e-2, rtol=0)
    torch.testing.assert_close(layer.bias, MU, atol=1e-2, rtol=0)
    x0 = torch.randn(500, 2, generator=torch.Generator().manual_seed(1))
    one_step = fk.sample(flow, x0, solver="euler", steps=1).x
    torch.testing.assert_close(one_step, MU + SCALE * x0, atol=3e-2, rtol=0)


def test_k_step_student_from_a_teacher_flow() -> None:
    """Two segments: the student's 2-step Euler reproduces the teacher's map, whereas the
    teacher's own 2-step Euler does not (its paths are curved)."""
    flow = fk.distill(
        teacher_flow(),
        student(),
        steps_k=2,
        coupling=gaussian_coupling(),
        num_pairs=2000,
        chunk_size=1000,
        solver="rk4",
        solver_options={"steps": 16},
        **TRAIN,
    )
    x0 = torch.randn(500, 2, generator=torch.Generator().manual_seed(2))
    exact = MU + SCALE * x0
    two_step = fk.sample(flow, x0, solver="euler", steps=2).x
    torch.testing.assert_close(two_step, exact, atol=3e-2, rtol=0)
    teacher_two_step = fk.sample(teacher_flow(), x0, solver="euler", steps=2).x
    assert (teacher_two_step - exact).abs().max() > 0.3


def test_distill_argument_errors() -> None:
    pairs = fk.couplings.PairedCoupling(torch.zeros(4, 2), torch.ones(4, 2))
    with pytest.raises(ValueError, match="student is required"):
        fk.distill(pairs)
    with pytest.raises(ValueError, match="coupling is required"):
        fk.distill(teacher_flow(), student())
    with pytest.raises(ValueError, match="state_grid=3"):
        fk.distill(pairs, student(), steps_k=3, **TRAIN)
