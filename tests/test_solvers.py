"""Fixed-step and adaptive solvers: grids, convergence order, torchdiffeq parity, NFE, backward."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torchdiffeq import odeint
from torchdiffeq._impl.rk_common import rk4_step_func

import flowkit as fk
from flowkit.registry import RegistryError
from flowkit.solvers.grid import grid_from_sigmas, make_grid

FIXED = ["euler", "midpoint", "heun", "rk4", "rk4_38", "ddim"]
ADAPTIVE = ["dopri5", "bosh3", "adaptive_heun", "dopri8"]
NFE_PER_STEP = {"euler": 1, "ddim": 1, "midpoint": 2, "heun": 2, "rk4": 4, "rk4_38": 4}
ORDER = {"euler": 1, "ddim": 1, "midpoint": 2, "heun": 2, "rk4": 4, "rk4_38": 4}

A = torch.tensor([[-0.5, 1.0], [-1.0, -0.5]], dtype=torch.float64)


def linear_field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """dx/dt = (1 + t)·A x, exact solution x(t) = expm(A·(t + t²/2)) x0."""
    return (1.0 + t)[:, None] * (x @ A.T)


def exact_linear(x0: torch.Tensor, t0: float, t1: float) -> torch.Tensor:
    phase = (t1 + t1**2 / 2) - (t0 + t0**2 / 2)
    return x0 @ torch.linalg.matrix_exp(A * phase).T


def nonlinear_field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.sin(3.0 * t)[:, None] * torch.tanh(x) - x**2 * 0.3 + t[:, None]


def x0_batch() -> torch.Tensor:
    return torch.tensor([[1.0, 0.5], [-0.3, 2.0], [0.7, -1.2]], dtype=torch.float64)


# --- grids -----------------------------------------------------------------------------------


def test_fixed_step_solver_without_grid_is_refused() -> None:
    with pytest.raises(ValueError, match="exactly one of steps=, step_size= or grid="):
        fk.sample(linear_field, x0_batch(), solver="heun")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 4, "grid": [0.0, 1.0]}, "steps=4 and grid"),
        ({"steps": 4, "step_size": 0.1}, "steps=4 and step_size=0.1"),
        ({"steps": 0}, "positive integer"),
        ({"steps": 2.5}, "positive integer"),
        ({"steps": 4, "shift": 2.0, "mu": 1.0}, "at most one of shift= and mu="),
        ({"grid": [0.0, 0.5, 1.0], "shift": 3.0}, "explicit grid"),
        ({"grid": [0.0, 0.6, 0.5, 1.0]}, "strictly monotone"),
        ({"grid": [0.0, 1.5]}, r"\[0, 1\]"),
        ({"grid": [0.0, 0.5, 1.0], "t_start": 0.2}, "t_start=0.2 conflicts"),
        ({"step_size": -0.1}, "step_size must be"),
    ],
)
def test_grid_conflicts_name_the_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fk.sample(linear_field, x0_batch(), solver="euler", **kwargs)


def test_adaptive_solver_refuses_a_grid() -> None:
    with pytest.raises(ValueError, match="adaptive solvers choose their own steps"):
        fk.sample(linear_field, x0_batch(), solver="dopri5", steps=10)


def test_grids_step_size_and_shift() -> None:
    torch.testing.assert_close(
        make_grid(step_size=0.3), torch.tensor([0.0, 0.3, 0.6, 0.9, 1.0], dtype=torch.float64)
    )
    torch.testing.assert_close(make_grid(step_size=0.1), torch.linspace(0, 1, 11).double())
    u = torch.linspace(0, 1, 6, dtype=torch.float64)
    s = 3.0
    expected = u / (1 + (s - 1) * (1 - u))  # SD3: sigma' = s·sigma / (1 + (s−1)·sigma)
    torch.testing.assert_close(make_grid(steps=5, shift=s), expected)
    torch.testing.assert_close(make_grid(steps=5, mu=math.log(s)), expected)
    back = make_grid(steps=4, t_start=1.0, t_end=0.0)
    torch.testing.assert_close(back, torch.linspace(1, 0, 5).double())


def test_grid_from_sigmas_matches_diffusers() -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(12)
    grid = grid_from_sigmas(sched.sigmas)
    torch.testing.assert_close(grid, 1.0 - sched.sigmas.double())
    assert grid[0] < grid[-1] and grid[-1] == 1.0


# --- registry, options -----------------------------------------------------------------------


def test_every_solver_is_registered_and_unknown_names_list_choices() -> None:
    assert set(FIXED + ADAPTIVE + ["stochastic"]) <= set(fk.solvers.names())
    with pytest.raises(RegistryError, match=r"valid solver names: .*dopri5.*Did you mean 'heun'"):
        fk.sample(linear_field, x0_batch(), solver="hune", steps=2)
    with pytest.raises(RegistryError, match=r"unknown option.*'rtl'.*allowed options: rtol"):
        fk.sample(linear_field, x0_batch(), solver="dopri5", rtl=1e-3)
    with pytest.raises(ValueError, match="noise must be one of ancestral, fresh"):
        fk.solvers.build({"name": "stochastic", "noise": "fersh"})
    with pytest.raises(TypeError, match="cannot be combined"):
        fk.sample(linear_field, x0_batch(), solver=fk.solvers.build("dopri5"), rtol=1e-3)


# --- accuracy --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in FIXED if n != "ddim"])
def test_convergence_order(name: str) -> None:
    x0 = x0_batch()
    target = exact_linear(x0, 0.0, 1.0)
    ns = [8, 16, 32] if ORDER[name] == 4 else [16, 32, 64]
    errs = [
        (fk.sample(linear_field, x0, solver=name, steps=n).x - target).abs().max().item()
        for n in ns
    ]
    slope = -torch.tensor(errs).log().diff().div(math.log(2)).mean().item()
    assert abs(slope - ORDER[name]) < 0.25, (errs, slope)


def test_ddim_order_on_cosine_path() -> None:
    path = fk.paths.build("cosine")
    x0 = x0_batch()
    target = exact_linear(x0, 0.0, 1.0)
    errs = [
        (fk.sample(linear_field, x0, solver="ddim", steps=n, path=path).x - target).abs().max()
        for n in (32, 64, 128)
    ]
    slope = -torch.stack(errs).log().diff().div(math.log(2)).mean().item()
    assert abs(slope - 1.0) < 0.2


def test_ddim_equals_euler_on_rectified_path() -> None:
    x0 = x0_batch()
    e = fk.sample(nonlinear_field, x0, solver="euler", steps=7, shift=2.0)
    d = fk.sample(nonlinear_field, x0, solver="ddim", steps=7, shift=2.0, path="rectified")
    torch.testing.assert_close(d.x, e.x, rtol=1e-13, atol=1e-13)


def test_ddim_needs_a_path_for_a_bare_field() -> None:
    with pytest.raises(ValueError, match="needs the probability path"):
        fk.sample(linear_field, x0_batch(), solver="ddim", steps=3)


TORCHDIFFEQ_NAME = {"euler": "euler", "midpoint": "midpoint", "heun": "heun2", "rk4_38": "rk4"}


@pytest.mark.parametrize("name", list(TORCHDIFFEQ_NAME))
@pytest.mark.parametrize("backward", [False, True])
def test_equals_torchdiffeq(name: str, backward: bool) -> None:
    grid = make_grid(steps=9, shift=2.0)
    grid = grid.flip(0) if backward else grid
    x0 = x0_batch()
    ours = fk.sample(nonlinear_field, x0, solver=name, grid=grid)
    theirs = odeint(
        lambda t, y: nonlinear_field(y, t.expand(y.shape[0])),
        x0,
        grid,
        method=TORCHDIFFEQ_NAME[name],
    )[-1]
    torch.testing.assert_close(ours.x, theirs, rtol=0, atol=1e-6)


def test_rk4_equals_classic_rk4_of_torchdiffeq() -> None:
    grid = make_grid(steps=6)
    x = x0_batch()
    ours = fk.sample(nonlinear_field, x, solver="rk4", grid=grid).x

    def func(t: torch.Tensor, y: torch.Tensor, perturb: object = None) -> torch.Tensor:
        return nonlinear_field(y, t.expand(y.shape[0]))

    for t0, t1 in itertools.pairwise(grid):
        x = x + rk4_step_func(func, t0, t1 - t0, t1, x)
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-6)


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        assert t.shape == (x.shape[0],)
        return nonlinear_field(x, t)


@pytest.mark.parametrize("name", FIXED + ADAPTIVE + ["stochastic"])
def test_nfe_is_exact(name: str) -> None:
    f = Counter()
    kw = {} if name in ADAPTIVE else {"steps": 5}
    if name in ("ddim", "stochastic"):
        kw["path"] = "rectified"
    sol = fk.sample(f, x0_batch(), solver=name, **kw)
    assert sol.nfe == f.calls
    if name not in ADAPTIVE:
        assert sol.nfe == 5 * NFE_PER_STEP.get(name, 1)
    else:
        assert sol.stats["accepted"] >= 1 and "rejected" in sol.stats


@pytest.mark.parametrize("name", ADAPTIVE)
def test_adaptive_forward_then_backward_returns_the_input(name: str) -> None:
    x0 = x0_batch()
    # (solver tolerance, round-trip tolerance): low-order pairs need many steps at tight rtol
    rtol, err = {
        "dopri5": (1e-10, 1e-6),
        "dopri8": (1e-10, 1e-6),
        "bosh3": (1e-9, 1e-5),
        "adaptive_heun": (1e-6, 1e-3),
    }[name]
    tol = {"rtol": rtol, "atol": rtol}
    fwd = fk.sample(nonlinear_field, x0, solver=name, **tol)
    back = fk.sample(nonlinear_field, fwd.x, solver=name, t_start=1.0, t_end=0.0, **tol)
    torch.testing.assert_close(back.x, x0, rtol=0, atol=err)
    torch.testing.assert_close(
        fwd.x,
        odeint(
            lambda t, y: nonlinear_field(y, t.expand(3)),
            x0,
            torch.tensor([0.0, 1.0]).double(),
            rtol=1e-12,
            atol=1e-12,
        )[-1],
        rtol=0,
        atol=err,
    )


@pytest.mark.parametrize("name", FIXED)
def test_fixed_forward_then_backward_is_close_to_the_input(name: str) -> None:
    x0 = x0_batch()
    kw = {"path": "rectified"} if name == "ddim" else {}
    fwd = fk.sample(linear_field, x0, solver=name, steps=64, **kw)
    back = fk.sample(linear_field, fwd.x, solver=name, steps=64, t_start=1.0, t_end=0.0, **kw)
    tol = {1: 0.15, 2: 1e-3, 4: 1e-7}[ORDER[name]]
    torch.testing.assert_close(back.x, x0, rtol=0, atol=tol)


def test_trajectory_and_times() -> None:
    x0 = x0_batch()
    sol = fk.sample(linear_field, x0, solver="heun", steps=4, return_trajectory=True)
    assert sol.trajectory is not None and sol.trajectory.shape == (5, 3, 2)
    torch.testing.assert_close(sol.trajectory[0], x0)
    torch.testing.assert_close(sol.trajectory[-1], sol.x)
    torch.testing.assert_close(sol.times, torch.linspace(0, 1, 5).double())
    assert fk.sample(linear_field, x0, solver="heun", steps=4).trajectory is None
    ad = fk.sample(linear_field, x0, solver="dopri5", return_trajectory=True)
    assert ad.trajectory is not None and len(ad.times) == ad.stats["accepted"] + 1
    assert ad.times[0] == 0.0 and ad.times[-1] == 1.0
    torch.testing.assert_close(ad.trajectory[-1], ad.x)


def test_flow_input_and_no_grad_by_default() -> None:
    torch.manual_seed(0)
    model = fk.models.build({"name": "mlp", "dim": 2, "hidden": 16, "depth": 2})
    flow = fk.Flow(model, "rectified")
    x0 = torch.randn(5, 2)
    sol = fk.sample(flow, x0, solver="euler", steps=3)
    assert not sol.x.requires_grad
    manual = x0
    for t0, t1 in zip(torch.linspace(0, 1, 4)[:-1], torch.linspace(0, 1, 4)[1:], strict=True):
        manual = manual + (t1 - t0) * model(manual, t0.expand(5))
    torch.testing.assert_close(sol.x, manual.detach())
    with_grad = fk.sample(flow, x0, solver="euler", steps=3, grad=True)
    assert with_grad.x.requires_grad
    eps_flow = fk.Flow(model, "rectified", prediction="epsilon")
    e = fk.sample(eps_flow, x0, solver="euler", grid=[0.1, 0.5, 0.9])
    x = x0
    for t0, t1 in ((0.1, 0.5), (0.5, 0.9)):
        x = x + (t1 - t0) * eps_flow.velocity(x, torch.full((5,), t0))
    torch.testing.assert_close(e.x, x.detach())
