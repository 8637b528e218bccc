"""Regression tests of the endpoint bugs of issue 15: NaN steps where det = a·b' − a'·b is 0 or
not finite, distillation pairs on such student paths, frozen tokens under adaptive solvers,
straightness over any span, the custom schedule under float64, the documented endpoint table."""

from __future__ import annotations

import pytest
import torch

import flowkit as fk
from flowkit.couplings.distill import DistillationCoupling
from flowkit.couplings.paired import PairedCoupling
from flowkit.paths.schedules.custom import CustomSchedule


def ones(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(x)


def decay(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return -x + 0.5


FORWARD = [{"name": "polynomial", "n": 2.0}, {"name": "polynomial", "n": 0.5}, "edm"]
BACKWARD = ["linear_vp", "vp", "ldm_linear", "edm"]


def test_the_reported_ddim_example_is_finite() -> None:
    x = fk.sample(ones, torch.zeros(2, 2), "ddim", steps=4, path={"name": "polynomial", "n": 2}).x
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("path", FORWARD)
@pytest.mark.parametrize("solver", ["ddim", "stochastic", "dpm_solver_pp", "unipc"])
def test_forward_from_t0_where_det_vanishes_is_finite(path, solver) -> None:
    g = torch.Generator().manual_seed(0)
    x = fk.sample(decay, torch.randn(4, 2), solver, steps=5, path=path, generator=g).x
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("path", BACKWARD)
@pytest.mark.parametrize("solver", ["ddim", "dpm_solver_pp", "unipc"])
def test_backward_from_t1_where_det_is_infinite_is_finite(path, solver) -> None:
    x = fk.sample(decay, torch.randn(4, 2), solver, steps=5, path=path, t_start=1.0, t_end=0.0).x
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("path", FORWARD)
def test_flow_scheduler_stochastic_steps_are_finite(path) -> None:
    sched = fk.solvers.FlowScheduler(path=path)
    sched.set_timesteps(4)
    x, g = torch.randn(3, 2), torch.Generator().manual_seed(1)
    for t in sched.timesteps:
        x = sched.step(decay(x, t), t, x, generator=g, stochastic=True)
    assert torch.isfinite(x).all()


def test_ddim_step_uses_the_conversion_time() -> None:
    """Where det(0) = 0 the step's (x̂1, ε̂) are those of ``convert`` (at t clamped to eps)."""
    path = fk.paths.build({"name": "polynomial", "n": 2})
    x = torch.randn(4, 2, dtype=torch.float64)
    t = torch.zeros(4, dtype=torch.float64)
    v = decay(x, t)
    x1 = path.convert(v, "velocity", "x1", x, t)
    eps = path.convert(v, "velocity", "epsilon", x, t)
    s = torch.tensor(0.5, dtype=torch.float64)
    step = fk.sample(decay, x, "ddim", grid=[0.0, 0.5], path=path).x
    torch.testing.assert_close(step, path.a(s) * x1 + path.b(s) * eps, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("path", [{"name": "polynomial", "n": 2.0}, "edm"])
def test_distillation_pairs_are_finite_on_such_student_paths(path) -> None:
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(16, 2, generator=g), torch.randn(16, 2, generator=g)
    pairs = PairedCoupling(x0, x1)
    batch = DistillationCoupling(pairs, path).sample(8, generator=g)
    assert torch.isfinite(batch.x0).all() and torch.isfinite(batch.x1).all()
    # at the (clamped) solve time the pair reproduces the teacher's start and velocity x1 − x0
    student = fk.paths.build(path)
    t = student.velocity_time(batch.t)
    sample = student.sample(batch.x0, batch.x1, t, check_t=False)
    idx = torch.cdist(sample.x_t, x0).argmin(1)
    torch.testing.assert_close(sample.x_t, x0[idx], rtol=0, atol=1e-4)
    torch.testing.assert_close(sample.velocity, (x1 - x0)[idx], rtol=0, atol=1e-3)


@pytest.mark.parametrize("solver", ["dopri5", "bosh3", "dopri8", "euler", "unipc"])
def test_frozen_tokens_never_move(solver) -> None:
    kw = {} if solver in ("dopri5", "bosh3", "dopri8") else {"steps": 4, "path": "rectified"}
    if solver == "euler":
        kw.pop("path")
    x = fk.sample(ones, torch.zeros(1, 2, 1), solver, conditioning_mask=torch.ones(1, 2), **kw).x
    assert torch.equal(x, torch.zeros(1, 2, 1))
    moving = fk.sample(ones, torch.zeros(1, 2, 1), solver,
                       conditioning_mask=torch.tensor([[1.0, 0.0]]), **kw).x
    assert moving[0, 0, 0] == 0.0 and moving[0, 1, 0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(("t_start", "t_end"), [(0.0, 1.0), (1.0, 0.0), (0.5, 1.0), (0.8, 0.2)])
def test_straightness_and_path_energy_of_a_straight_field_on_any_span(t_start, t_end) -> None:
    x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kw = {"steps": 10, "t_start": t_start, "t_end": t_end}
    assert fk.metrics.straightness(ones, x0, **kw) == pytest.approx(0.0, abs=1e-12)
    assert fk.metrics.path_energy(ones, x0, **kw) == pytest.approx(1.0, abs=1e-12)
    curved = fk.metrics.straightness(lambda x, t: torch.cos(3 * x), x0, **kw)
    assert curved > 1e-3


def test_custom_schedule_under_float64_default_dtype() -> None:
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        s = CustomSchedule(a=lambda t: t**2, b=lambda t: 1 - t**2)
        assert s.reaches_endpoints and s.finite_derivatives
        path = fk.paths.AffinePath(s)
        x = fk.sample(decay, torch.ones(2, 2), "ddim", steps=3, path=path).x
        assert torch.isfinite(x).all()
    finally:
        torch.set_default_dtype(old)


def test_endpoint_table_says_what_convert_does() -> None:
    """docs/concepts.md: only velocity → x1/ε on an invertible path is exact at t = 0 and 1;
    every other conversion is evaluated at t clamped into [eps, 1 − eps] at both ends."""
    path = fk.paths.build("rectified")
    x = torch.randn(4, 2, dtype=torch.float64)
    pred = torch.randn(4, 2, dtype=torch.float64)
    for t, tc in ((0.0, path.eps), (1.0, 1.0 - path.eps)):
        for src, dst in (("x1", "velocity"), ("epsilon", "velocity"), ("x1", "epsilon")):
            out, clamped = (path.convert(pred, src, dst, x, tt) for tt in (t, tc))
            torch.testing.assert_close(out, clamped, rtol=0, atol=0)
        exact = path.convert(pred, "velocity", "x1", x, t)
        torch.testing.assert_close(exact, x + (1.0 - t) * pred, rtol=0, atol=1e-15)
    assert path.velocity_time(torch.tensor(0.0)) == 0.0
    poly = fk.paths.build({"name": "polynomial", "n": 2})
    assert poly.velocity_time(torch.tensor(0.0)) == poly.eps
