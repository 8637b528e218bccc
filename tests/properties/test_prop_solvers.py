"""Property 6, solvers: convergence orders, DDIM = Euler on rectified, per-token masks, inversion.

The analytic field is a logistic equation with a time-varying rate, elementwise on any shape::

    dx/dt = k(t)·x·(1 − x),   k(t) = α + β·cos(ωt)
    logit x(t) = logit x(0) + α·t + β·sin(ωt)/ω

nonlinear in x and in t, with the exact solution above, so global errors are measured exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from prop_strategies import (
    ADAPTIVE_SOLVERS,
    FIXED_ORDERS,
    any_schedule,
    batch_shapes,
    generator,
    grids,
    scaled,
    seeds,
    time_span,
    unit,
)
from torch import Tensor

import flowkit as fk
from flowkit._tensor import expand_time
from flowkit.paths import AffinePath, shift_time
from flowkit.paths.schedules import Schedule


@dataclass
class Logistic:
    """``f(x, t) = (α + β·cos(ωt))·x·(1 − x)``; ``t`` of shape (B,) or (B, N) (per token)."""

    alpha: float
    beta: float
    omega: float

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        k = self.alpha + self.beta * torch.cos(self.omega * expand_time(t, x))
        return k * x * (1.0 - x)

    def solution(self, x0: Tensor, t0: float, t1: float) -> Tensor:
        """Exact ``x(t1)`` from ``x(t0) = x0``."""

        def integral(t: float) -> float:
            return self.alpha * t + self.beta * math.sin(self.omega * t) / self.omega

        return torch.sigmoid(torch.logit(x0) + integral(t1) - integral(t0))


logistics = st.builds(Logistic, alpha=unit(-2.0, 2.0), beta=unit(0.5, 2.0), omega=unit(1.0, 4.0))


def logistic_start(shape: tuple[int, ...], seed: int) -> Tensor:
    """Start states in (0.1, 0.9), float64."""
    return 0.1 + 0.8 * torch.rand(shape, generator=generator(seed), dtype=torch.float64)


def error(field: Logistic, x0: Tensor, solver: str, steps: int | None, **options) -> float:
    """Global error ``max_k |x_k − x(t_k)|`` over every time the solver returns.

    Taking the maximum along the trajectory (not only at t = 1) keeps the leading error term
    from vanishing by accident at one time for special parameters.
    """
    sol = fk.sample(field, x0, solver=solver, steps=steps, return_trajectory=True, **options)
    exact = torch.stack([field.solution(x0, 0.0, float(t)) for t in sol.times])
    return float((sol.trajectory - exact).abs().max())


SOLVER_ORDERS = [*FIXED_ORDERS.items(), ("ddim", 1)]
BASE_STEPS = {1: 64, 2: 32, 4: 16}


def order_start(shape: tuple[int, ...], seed: int) -> Tensor:
    """17 start points spread over [0.1, 0.9], then the drawn batch: ``(17 + B, ...)``.

    For a single start point the leading error term of a method can nearly cancel for special
    parameters (classic RK4 with α ≈ 0 then shows an irregular "order" between 2 and 10); the
    maximum over a spread of start points and over the trajectory cannot.
    """
    rest = shape[1:]
    spread = torch.linspace(0.1, 0.9, 17, dtype=torch.float64).reshape(17, *[1] * len(rest))
    return torch.cat([spread.expand(17, *rest), logistic_start(shape, seed)])


@pytest.mark.parametrize(("solver", "order"), SOLVER_ORDERS)
@scaled(0.4)
@given(field=logistics, shape=batch_shapes, seed=seeds)
def test_fixed_step_solvers_converge_at_their_order(
    solver: str, order: int, field: Logistic, shape: tuple[int, ...], seed: int
) -> None:
    """Halving the step divides the global error by at least ``2^(p − 0.35)``.

    Errors are taken at N and 2N steps with N large enough for the asymptotic regime
    (``BASE_STEPS``) and errors far above float64 round-off; over the parameter box the observed
    orders lie within [p − 0.3, p + 0.45] (classic RK4 is the widest). The order is checked as a
    lower bound.
    """
    x0 = order_start(shape, seed)
    options = {"path": "rectified"} if solver == "ddim" else {}
    n = BASE_STEPS[order]
    coarse, fine = (error(field, x0, solver, steps, **options) for steps in (n, 2 * n))
    observed = math.log2(coarse / fine)
    assert observed >= order - 0.35, f"{solver}: observed order {observed:.2f}, not {order}"


@pytest.mark.parametrize("solver", ADAPTIVE_SOLVERS)
@scaled(0.2)
@given(field=logistics, shape=batch_shapes, seed=seeds)
def test_adaptive_solvers_meet_their_tolerance(
    solver: str, field: Logistic, shape: tuple[int, ...], seed: int
) -> None:
    """The global error of an adaptive solve shrinks with the tolerance: ≤ 100·tol.

    The per-step error control ``|err| ≤ atol + rtol·|x|`` (x ≤ 1 here) accumulates over at most
    a few dozen steps on [0, 1], with the local error estimate of a lower-order pair: a factor
    100 covers the accumulation.
    """
    x0 = logistic_start(shape, seed)
    for tol in (1e-3, 1e-6):
        err = error(field, x0, solver, None, rtol=tol, atol=tol)
        assert err <= 100 * tol, f"{solver}: error {err:.2e} at tolerance {tol:g}"


@scaled(0.6)
@given(field=logistics, shape=batch_shapes, seed=seeds, grid=grids())
def test_ddim_on_the_rectified_path_is_euler(
    field: Logistic, shape: tuple[int, ...], seed: int, grid: list[float]
) -> None:
    """``a(s)·x̂1 + b(s)·ε̂`` with the rectified path's (x̂1, ε̂) is ``x + (s − t)·v``."""
    x0 = logistic_start(shape, seed)
    ddim = fk.sample(field, x0, solver="ddim", grid=grid, path="rectified").x
    euler = fk.sample(field, x0, solver="euler", grid=grid).x
    torch.testing.assert_close(ddim, euler, rtol=1e-12, atol=1e-12)


@scaled(0.6)
@given(schedule=any_schedule, field=logistics, seed=seeds, data=st.data())
def test_ddim_step_reassembles_the_predicted_endpoints(
    schedule: Schedule, field: Logistic, seed: int, data: st.DataObject
) -> None:
    """On any path, one DDIM step t → s is ``a(s)·x̂1 + b(s)·ε̂`` with (x̂1, ε̂) = convert(v)."""
    lo, hi = time_span(schedule)
    lo, hi = max(lo, 0.01), min(hi, 0.99)
    grid = data.draw(grids(max_steps=1, lo=lo, hi=hi), label="grid")
    path = AffinePath(schedule)
    x = logistic_start((5, 2), seed)
    t = torch.full((5,), grid[0], dtype=torch.float64)
    s = torch.tensor(grid[1], dtype=torch.float64)
    v = field(x, t)
    x1 = path.convert(v, "velocity", "x1", x, t)
    eps = path.convert(v, "velocity", "epsilon", x, t)
    expected = path.a(s) * x1 + path.b(s) * eps
    step = fk.sample(field, x, solver="ddim", grid=grid, path=path).x
    torch.testing.assert_close(step, expected, rtol=1e-9, atol=1e-9)


def token_field(x: Tensor, t: Tensor) -> Tensor:
    """A field on tokens ``(B, N, d)`` that mixes tokens: ``sin(x + mean_n x)·(1 + t) − t·x/2``."""
    tt = expand_time(t, x)
    return torch.sin(x + x.mean(1, keepdim=True)) * (1.0 + tt) - 0.5 * tt * x


@pytest.mark.parametrize("solver", sorted(FIXED_ORDERS))
@scaled(0.4)
@given(
    grid=grids(),
    shape=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3)),
    seed=seeds,
    data=st.data(),
)
def test_equal_token_masks_equal_a_global_solve_from_the_mask_time(
    solver: str, grid: list[float], shape: tuple[int, int, int], seed: int, data: st.DataObject
) -> None:
    """Sample b with every token masked at grid time ``m_b`` = a global solve from ``m_b``.

    Tokens wait until the global time reaches their mask and then move with model time
    ``max(t, m) = t``: with equal masks within a sample that is the unmasked solve started at
    ``m_b`` on the rest of the grid (the sample is unchanged when ``m_b = 1``).
    """
    batch, last = shape[0], len(grid) - 1
    # Sample 0 always waits (m_0 > 0); the others may also be ordinary (m = 0) or frozen (m = 1).
    first = data.draw(st.integers(1, last), label="start of sample 0")
    rest = data.draw(st.lists(st.integers(0, last), min_size=batch - 1, max_size=batch - 1))
    starts = [first, *rest]
    x0 = torch.randn(shape, generator=generator(seed), dtype=torch.float64)
    mask = torch.tensor([grid[j] for j in starts], dtype=torch.float64)[:, None]
    mask = mask.expand(shape[:2])
    masked = fk.sample(token_field, x0, solver=solver, grid=grid, conditioning_mask=mask).x
    for b, j in enumerate(starts):
        expected = x0[b : b + 1]
        if j < len(grid) - 1:
            expected = fk.sample(token_field, expected, solver=solver, grid=grid[j:]).x
        torch.testing.assert_close(masked[b : b + 1], expected, rtol=1e-12, atol=1e-12)


INVERSION = [
    ("dopri5", {"rtol": 1e-8, "atol": 1e-8}, 1e-6),
    ("dopri8", {"rtol": 1e-8, "atol": 1e-8}, 1e-6),
    ("bosh3", {"rtol": 1e-8, "atol": 1e-8}, 1e-5),
    ("adaptive_heun", {"rtol": 1e-6, "atol": 1e-6}, 1e-4),
    ("rk4", {"steps": 50}, 1e-6),
    ("rk4_38", {"steps": 50}, 1e-6),
    ("heun", {"steps": 400}, 1e-4),
    ("midpoint", {"steps": 400}, 1e-4),
]


@pytest.mark.parametrize(("solver", "options", "atol"), INVERSION)
@scaled(0.2)
@given(field=logistics, shape=batch_shapes, seed=seeds)
def test_backward_after_forward_returns_the_input(
    solver: str, options: dict, atol: float, field: Logistic, shape: tuple[int, ...], seed: int
) -> None:
    """Integrating 0 → 1 and then 1 → 0 returns x0 up to the solver's error.

    ``atol`` is 100× the tolerance of an adaptive solve (1000× for bosh3, whose third-order
    error estimate lets more error accumulate: 1.6e-6 seen at 1e-8), and for fixed steps 100×
    the bound ``h^p`` (rk4: (1/50)⁴ = 1.6e-7; heun, midpoint: (1/400)² = 6e-6) on the global
    error of either direction, whose constant is below ~10 for |α|, |β| ≤ 2, ω ≤ 4 (see the
    order test); a first-order method would leave an error of order h·C ≈ 2.5e-3·C.
    """
    x0 = logistic_start(shape, seed)
    forward = fk.sample(field, x0, solver=solver, **options)
    back = fk.sample(field, forward.x, solver=solver, t_start=1.0, t_end=0.0, **options)
    assert float((forward.x - field.solution(x0, 0.0, 1.0)).abs().max()) <= atol
    torch.testing.assert_close(back.x, x0, rtol=0.0, atol=atol)


@scaled(0.6)
@given(steps=st.integers(1, 40), s=unit(0.2, 8.0))
def test_shifted_grids_follow_the_sd3_formula(steps: int, s: float) -> None:
    """``shift=s`` visits ``t = 1 − σ'`` with ``σ' = s·σ/(1 + (s − 1)·σ)``, σ uniform from 1 to 0.

    SD3 eq. (23) / diffusers' ``FlowMatchEulerDiscreteScheduler(shift=s)``, stated here
    independently of flowkit's helpers. Also the Flux form ``mu = log s`` and the step-wise
    scheduler's grid, and the group law ``shift_time(shift_time(t, s1), s2)`` =
    ``shift_time(t, s1·s2)``.
    """
    sigma = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    expected = 1.0 - s * sigma / (1.0 + (s - 1.0) * sigma)
    x = torch.zeros(2, 1, dtype=torch.float64)
    for kwargs in ({"shift": s}, {"mu": math.log(s)}):
        times = fk.sample(lambda x, t: x, x, solver="euler", steps=steps, **kwargs).times
        torch.testing.assert_close(times, expected, rtol=1e-9, atol=1e-12)
    scheduler = fk.solvers.FlowScheduler()
    scheduler.set_timesteps(steps, shift=s)
    torch.testing.assert_close(scheduler.grid, expected, rtol=1e-9, atol=1e-12)
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    torch.testing.assert_close(
        shift_time(shift_time(u, s), 1.5), shift_time(u, 1.5 * s), rtol=1e-9, atol=1e-12
    )
