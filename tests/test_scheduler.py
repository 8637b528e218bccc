"""The step-wise FlowScheduler: equals fk.sample, locates off-grid times, matches diffusers."""

from __future__ import annotations

import pytest
import torch

import flowkit as fk
from flowkit.solvers import FlowScheduler


def model_and_x() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = fk.models.build({"name": "mlp", "dim": 2, "hidden": 16, "depth": 2})
    return model, torch.randn(5, 2, generator=torch.Generator().manual_seed(1))


def run_loop(sched: FlowScheduler, model, x, **step_kw) -> torch.Tensor:
    with torch.no_grad():
        for t in sched.timesteps:
            v = model(x, t.to(x.dtype).expand(x.shape[0]))
            x = sched.step(v, t, x, **step_kw)
    return x


def test_euler_loop_equals_sample() -> None:
    model, x0 = model_and_x()
    sched = FlowScheduler()
    sched.set_timesteps(8, shift=3.0)
    assert len(sched.timesteps) == 8 and len(sched.grid) == 9
    ours = run_loop(sched, model, x0)
    ref = fk.sample(model, x0, "euler", steps=8, shift=3.0).x
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_stochastic_loop_equals_sample() -> None:
    model, x0 = model_and_x()
    sched = FlowScheduler(path="cosine", eta=0.7)
    sched.set_timesteps(timesteps=[0.0, 0.2, 0.5, 0.8, 1.0])
    ours = run_loop(sched, model, x0, stochastic=True, generator=torch.Generator().manual_seed(3))
    ref = fk.sample(
        model,
        x0,
        "stochastic",
        grid=[0.0, 0.2, 0.5, 0.8, 1.0],
        path="cosine",
        eta=0.7,
        generator=torch.Generator().manual_seed(3),
    ).x
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)


def test_mask_loop_equals_sample() -> None:
    torch.manual_seed(0)
    model = fk.models.build({"name": "mlp", "dim": 3, "hidden": 16, "depth": 2})
    x0 = torch.randn(2, 4, 3)
    mask = torch.tensor([[0.0, 1.0, 0.4, 0.0], [0.7, 0.0, 0.0, 1.0]])
    sched = FlowScheduler()
    sched.set_timesteps(5)
    x = x0
    with torch.no_grad():
        for t in sched.timesteps:
            v = model(x, sched.model_times(t, x, mask))
            x = sched.step(v, t, x, conditioning_mask=mask)
    ref = fk.sample(model, x0, "euler", steps=5, conditioning_mask=mask).x
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-7)
    torch.testing.assert_close(x[mask == 1.0], x0[mask == 1.0], rtol=0, atol=0)


def test_dt_from_the_position_on_the_grid() -> None:
    sched = FlowScheduler()
    sched.set_timesteps(timesteps=[0.0, 0.25, 0.5, 1.0])
    x = torch.zeros(3, 2, dtype=torch.float64)
    v = torch.ones(3, 2, dtype=torch.float64)
    # on the grid, slightly off it, and between points: dt = next grid time − t
    assert sched.step(v, 0.25, x)[0, 0].item() == pytest.approx(0.25)
    assert sched.step(v, 0.25 - 1e-9, x)[0, 0].item() == pytest.approx(0.25 + 1e-9)
    assert sched.step(v, 0.3, x)[0, 0].item() == pytest.approx(0.2)
    per_sample = sched.step(v, torch.tensor([0.0, 0.3, 0.6]), x)[:, 0]
    torch.testing.assert_close(per_sample, torch.tensor([0.25, 0.2, 0.4], dtype=torch.float64))
    with pytest.raises(ValueError, match="no next step"):
        sched.step(v, 1.0, x)


def test_scheduler_errors() -> None:
    sched = FlowScheduler()
    with pytest.raises(RuntimeError, match="set_timesteps"):
        sched.step(torch.zeros(1, 2), 0.0, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="exactly one of steps="):
        sched.set_timesteps()
    with pytest.raises(ValueError, match="must increase"):
        sched.set_timesteps(timesteps=[1.0, 0.0])


def test_matches_diffusers_flow_match_euler() -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    model, x0 = model_and_x()
    theirs = FlowMatchEulerDiscreteScheduler(shift=3.0)
    theirs.set_timesteps(10)
    x = x0.clone()
    with torch.no_grad():
        for ts, sigma in zip(theirs.timesteps, theirs.sigmas[:-1], strict=True):
            # diffusers: sigma = 1 − t, model output = −v (their velocity is noise − data)
            out = -model(x, (1.0 - sigma).expand(x.shape[0]))
            x = theirs.step(out, ts, x).prev_sample
    ours = FlowScheduler()
    ours.set_timesteps(sigmas=theirs.sigmas)
    torch.testing.assert_close(run_loop(ours, model, x0), x, rtol=1e-5, atol=1e-5)
