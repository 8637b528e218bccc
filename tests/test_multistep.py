"""The multistep solvers dpm_solver_pp and unipc: diffusers agreement, parameterisations, paths,
NFE, the step-wise scheduler, masks and option errors."""

from __future__ import annotations

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

import flowkit as fk
from flowkit.checks import OptionError
from flowkit.data.oracle import ExactMarginal
from flowkit.registry import SCHEDULES

TARGET = {"name": "gaussian_mixture", "means": [[-2.0, 0.0], [2.0, 1.0]], "std": [0.5, 0.7]}
FLOW_SIGMAS = {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "flow_shift": 1.0}


def oracle(path: str = "rectified") -> ExactMarginal:
    return ExactMarginal("gaussian", TARGET, path)


def start(n: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class Counting:
    """A field that counts its calls."""

    def __init__(self, f) -> None:
        self.f, self.calls = f, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.f(x, t)


@pytest.mark.parametrize("steps", [9, 20])  # DPM-Solver++ lowers its final orders by length
@pytest.mark.parametrize(
    ("scheduler", "solver", "order"),
    [
        (DPMSolverMultistepScheduler, "dpm_solver_pp", 2),
        (DPMSolverMultistepScheduler, "dpm_solver_pp", 3),
        (UniPCMultistepScheduler, "unipc", 2),
        (UniPCMultistepScheduler, "unipc", 3),
    ],
)
def test_logsnr_methods_equal_diffusers_on_the_same_grid(scheduler, solver, order, steps) -> None:
    """On a flow-sigma grid from σ = 0.999 to 0 the logsnr methods are diffusers' (float64
    sigmas; diffusers' DPM keeps some float32 scalars: 3e-7). The grid starts inside
    [eps, 1 − eps]: where it does not, flowkit takes λ at the clamped time and diffusers at its
    first sigma, and the methods differ by that choice only."""
    field = oracle()
    x0 = start()
    sigmas = torch.linspace(0.999, 0.0, steps + 1, dtype=torch.float64)
    sched = scheduler(solver_order=order, **FLOW_SIGMAS)
    sched.set_timesteps(steps)
    sched.sigmas, sched.timesteps = sigmas, sigmas[:-1] * 1000
    sched.set_begin_index(0)
    y = x0
    for i, ts in enumerate(sched.timesteps):
        v = field(y, torch.full((len(y),), 1.0 - float(sigmas[i]), dtype=torch.float64))
        y = sched.step(-v, ts, y).prev_sample
    ours = fk.sample(field, x0, solver, order=order, grid=(1.0 - sigmas).tolist()).x
    torch.testing.assert_close(ours, y, rtol=0, atol=1e-6)


def test_unipc_corrector_costs_no_evaluation_and_changes_the_result() -> None:
    field = Counting(oracle())
    sol = fk.sample(field, start(), "unipc", steps=7, path="rectified")
    assert sol.nfe == field.calls == 7
    predictor_only = fk.sample(oracle(), start(), "dpm_solver_pp", order=2, steps=7).x
    assert (sol.x - predictor_only).abs().max() > 1e-4


@pytest.mark.parametrize("solver", ["dpm_solver_pp", "unipc"])
@pytest.mark.parametrize("interpolation", ["logsnr", "flow_time"])
def test_nfe_is_one_per_step(solver: str, interpolation: str) -> None:
    field = Counting(oracle())
    sol = fk.sample(field, start(8), solver, steps=5, order=3, interpolation=interpolation,
                    path="rectified")
    assert sol.nfe == field.calls == 5
    assert sol.stats["steps"] == 5


@pytest.mark.parametrize("prediction", ["x1", "epsilon", "score"])
@pytest.mark.parametrize("solver", ["dpm_solver_pp", "unipc"])
def test_every_parameterisation_gives_the_velocity_flows_result(prediction, solver) -> None:
    """A flow trained in x1/ε/score form (here the oracle's exact prediction) samples as the
    velocity flow does, through ``path.convert``.

    An ε (or score) model says nothing about x1 at t = 0 (there x_0 = ε): its velocity is taken
    at t clamped to eps, where ε → velocity amplifies the model's error by ~1/eps. Such flows
    start at t_start > 0 (as diffusers' σ_max = 0.999 does); an x1 model may start at 0.
    """

    class Model(torch.nn.Module):
        def __init__(self, kind: str) -> None:
            super().__init__()
            self.kind, self.oracle = kind, oracle("cosine")

        def forward(self, x, t):
            return self.oracle.predict(x, t, self.kind)

    path = fk.paths.build("cosine")
    x0 = start(32)
    t_start = 0.0 if prediction == "x1" else 1e-3
    kw = {"steps": 8, "t_start": t_start}
    reference = fk.sample(fk.Flow(Model("velocity"), path), x0, solver, **kw).x
    flow = fk.Flow(Model(prediction), path, prediction=prediction)
    torch.testing.assert_close(fk.sample(flow, x0, solver, **kw).x, reference, rtol=0, atol=1e-4)


SCHEDULE_NAMES = [n for n in SCHEDULES.names() if n != "custom"]


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@pytest.mark.parametrize("solver", ["dpm_solver_pp", "unipc"])
def test_every_schedule_forwards_and_backwards_reaches_the_reference(name, solver) -> None:
    """Within 0.05 (mean squared) of dopri5 at 24 steps forwards, 0.1 backwards (measured: at
    most 0.05 forwards, 0.08 backwards, on edm, whose uniform-t grid spans λ ∈ (−∞, −1.9) in
    its last backward step, a first-order one into λ = −∞)."""
    field = oracle(name)
    x0 = start(32)
    ref = fk.sample(field, x0, "dopri5", rtol=1e-7, atol=1e-7).x
    fwd = fk.sample(field, x0, solver, steps=24, interpolation="flow_time").x
    assert float(((fwd - ref) ** 2).sum(-1).mean()) < 0.05
    back = fk.sample(field, ref, solver, steps=24, t_start=1.0, t_end=0.0).x
    ref_back = fk.sample(field, ref, "dopri5", rtol=1e-7, atol=1e-7, t_start=1.0, t_end=0.0).x
    assert float(((back - ref_back) ** 2).sum(-1).mean()) < 0.1


@pytest.mark.parametrize("solver", ["dpm_solver_pp", "unipc"])
@pytest.mark.parametrize("order", [2, 3])
def test_grid_points_inside_the_endpoint_guard_lower_the_order(solver: str, order: int) -> None:
    """Times within eps of an end share one clamped λ: the λ-polynomial drops such points
    (a zero step in λ divided by zero before)."""
    grid = [0.0, 1e-7, 2e-7, 0.3, 0.7, 1.0 - 1e-7, 1.0]
    x = fk.sample(oracle("cosine"), start(8), solver, order=order, grid=grid).x
    assert torch.isfinite(x).all()


def test_final_step_into_t1_lands_on_the_x1_prediction() -> None:
    """Where λ(1) = ∞ the last step is first order: ``x_1 = x̂1(x_{t_{n−1}}, t_{n−1})``."""
    field = oracle()
    x0 = start(8)
    sol = fk.sample(field, x0, "dpm_solver_pp", steps=4, return_trajectory=True)
    t = torch.full((8,), 0.75, dtype=torch.float64)
    x1 = field.path.convert(field(sol.trajectory[-2], t), "velocity", "x1", sol.trajectory[-2], t)
    torch.testing.assert_close(sol.x, x1, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "unipc", "order": 2},
        {"name": "unipc", "order": 3, "interpolation": "flow_time"},
        {"name": "dpm_solver_pp", "order": 3},
    ],
)
def test_flow_scheduler_multistep_loop_equals_fk_sample(spec: dict) -> None:
    field = oracle("cosine")
    x0 = start(16)
    sched = fk.solvers.FlowScheduler(path="cosine", multistep=spec)
    sched.set_timesteps(7, shift=2.0)
    x = x0
    for t in sched.timesteps:
        x = sched.step(field(x, t.expand(len(x))), t, x)
    torch.testing.assert_close(x, fk.sample(field, x0, spec, steps=7, shift=2.0).x)


def test_flow_scheduler_multistep_refuses_out_of_order_steps() -> None:
    sched = fk.solvers.FlowScheduler(multistep="unipc")
    sched.set_timesteps(4)
    x = start(4)
    sched.step(torch.zeros_like(x), sched.timesteps[0], x)
    with pytest.raises(ValueError, match="in order"):
        sched.step(torch.zeros_like(x), sched.timesteps[2], x)
    with pytest.raises(ValueError, match="multistep solver"):
        fk.solvers.FlowScheduler(multistep="heun")


def test_frozen_tokens_stay_under_multistep_solvers() -> None:
    x0 = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]])
    sol = fk.sample(lambda x, t: torch.ones_like(x), x0, "unipc", steps=6, path="rectified",
                    conditioning_mask=mask)
    assert torch.equal(sol.x[0, 0], x0[0, 0]) and torch.equal(sol.x[1, 1], x0[1, 1])
    assert (sol.x[0, 1] != x0[0, 1]).all()


def test_option_errors_name_the_option() -> None:
    with pytest.raises(OptionError, match="order"):
        fk.sample(oracle(), start(2), "dpm_solver_pp", steps=4, order=4)
    with pytest.raises(OptionError, match=r"interpolation.*flow_time"):
        fk.sample(oracle(), start(2), "unipc", steps=4, interpolation="flowtime")
    with pytest.raises(ValueError, match="path"):
        fk.sample(lambda x, t: x, start(2), "unipc", steps=4)


def test_solvers_are_listed_with_descriptions() -> None:
    entries = {e.name: e.description for e in fk.registry.SOLVERS.entries()}
    assert "DPM-Solver++" in entries["dpm_solver_pp"]
    assert "UniPC" in entries["unipc"]
