"""Time shifts: group algebra, SD3/diffusers conventions, and diffusers' FlowMatchEuler sigmas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowkit.paths import (
    dynamic_shift_mu,
    exponential_shift,
    resolution_shift,
    shift,
    shift_time,
    sigma_to_t,
    t_to_sigma,
)

times = st.floats(0.0, 1.0)
factors = st.floats(0.05, 20.0)
diffusers = pytest.importorskip("diffusers")
Scheduler = diffusers.FlowMatchEulerDiscreteScheduler


def f64(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


@given(t=times, alpha=factors, beta=factors)
def test_shift_is_a_group_action(t, alpha, beta):
    t = f64(t)
    torch.testing.assert_close(shift(shift(t, alpha), beta), shift(t, alpha * beta))
    torch.testing.assert_close(shift(t, 1.0), t)
    torch.testing.assert_close(shift(shift(t, alpha), 1 / alpha), t)


@given(t=st.floats(1e-6, 1 - 1e-6), alpha=factors)
def test_shift_multiplies_the_odds(t, alpha):
    out = shift(f64(t), alpha).item()
    assert out / (1 - out) == pytest.approx(alpha * t / (1 - t), rel=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shift_fixes_the_endpoints_and_is_monotone(dtype):
    t = torch.linspace(0, 1, 101, dtype=dtype)
    for alpha in (0.2, 1.0, 3.0):
        out = shift(t, alpha)
        assert out[0].item() == 0.0 and out[-1].item() == 1.0
        assert (out.diff() > 0).all()
    assert (shift(t, 0.5)[1:-1] < t[1:-1]).all()  # alpha < 1: more of the grid near the source


@given(t=times, s=factors)
def test_shift_time_is_sd3_shift_on_sigma(t, s):
    t = f64(t)
    sigma = 1 - t
    expected_sigma = s * sigma / (1 + (s - 1) * sigma)
    torch.testing.assert_close(shift_time(t, s), 1 - expected_sigma)
    torch.testing.assert_close(shift_time(t, s), shift(t, 1 / s))


@given(t=times, mu=st.floats(-3, 3), power=st.floats(0.5, 2.0))
def test_exponential_shift(t, mu, power):
    t = f64(t)
    torch.testing.assert_close(exponential_shift(t, mu), shift_time(t, math.exp(mu)))
    sigma = t_to_sigma(t).clamp_min(1e-300)
    diffusers_sigma = math.exp(mu) / (math.exp(mu) + (1 / sigma - 1) ** power)
    torch.testing.assert_close(exponential_shift(t, mu, power), 1 - diffusers_sigma)


def test_sigma_helpers():
    t = torch.linspace(0, 1, 11)
    torch.testing.assert_close(t_to_sigma(t), 1 - t)
    torch.testing.assert_close(sigma_to_t(t_to_sigma(t)), t)
    assert t_to_sigma(0.25).item() == 0.75


def test_resolution_shift():
    assert resolution_shift(1024**2, 256**2) == pytest.approx(4.0)
    assert resolution_shift(9.0, 1.0) * resolution_shift(1.0, 4.0) == pytest.approx(
        resolution_shift(9.0, 4.0)
    )
    # moving a schedule from n to m pixels and back is the identity
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    back = shift_time(shift_time(t, resolution_shift(4, 1)), resolution_shift(1, 4))
    torch.testing.assert_close(back, t)


def test_dynamic_shift_mu_is_flux_linear_rule():
    # diffusers' calculate_shift: mu = 0.5 at 256 tokens, 1.15 at 4096 tokens, linear in between
    assert dynamic_shift_mu(256) == pytest.approx(0.5)
    assert dynamic_shift_mu(4096) == pytest.approx(1.15)
    assert dynamic_shift_mu(2176) == pytest.approx(0.825)
    assert dynamic_shift_mu(8192) == pytest.approx(0.5 + 0.65 * (8192 - 256) / 3840)
    assert dynamic_shift_mu(64, 16, 80, 0.0, 1.0) == pytest.approx(0.75)


def explicit_sigmas(n: int) -> np.ndarray:
    return np.linspace(1.0, 1.0 / n, n)


@pytest.mark.parametrize("s", [1.0, 3.0, 0.5])
def test_matches_diffusers_shift_with_explicit_sigmas(s):
    sch = Scheduler(shift=s)
    sigmas = explicit_sigmas(12)
    sch.set_timesteps(sigmas=sigmas.tolist())
    ours = t_to_sigma(shift_time(sigma_to_t(torch.from_numpy(sigmas)), s))
    torch.testing.assert_close(sch.sigmas[:-1].double(), ours, rtol=1e-6, atol=1e-6)
    assert sch.sigmas[-1].item() == 0.0


@pytest.mark.parametrize("mu", [0.5, 1.15, -0.3])
def test_matches_diffusers_dynamic_shifting_with_explicit_sigmas(mu):
    sch = Scheduler(use_dynamic_shifting=True)
    sigmas = explicit_sigmas(10)
    sch.set_timesteps(sigmas=sigmas.tolist(), mu=mu)
    ours = t_to_sigma(exponential_shift(sigma_to_t(torch.from_numpy(sigmas)), mu))
    torch.testing.assert_close(sch.sigmas[:-1].double(), ours, rtol=1e-6, atol=1e-6)


def test_matches_diffusers_training_sigmas():
    sch = Scheduler(shift=3.0)
    base = torch.arange(1000, 0, -1, dtype=torch.float64) / 1000
    ours = t_to_sigma(shift_time(sigma_to_t(base), 3.0))
    torch.testing.assert_close(sch.sigmas.double(), ours, rtol=1e-6, atol=1e-6)


def test_diffusers_default_grid_shifts_the_smallest_sigma_twice():
    """Documents the difference from diffusers described in docs/concepts.md ("Time shift")."""
    s, n = 3.0, 10
    sch = Scheduler(shift=s)
    sch.set_timesteps(n)
    sigma_min = 1.0 / 1000

    def sd3(sigma):
        return t_to_sigma(shift_time(sigma_to_t(f64(sigma)), s))

    intended = sd3(torch.linspace(1.0, sigma_min, n, dtype=torch.float64))
    twice = sd3(torch.linspace(1.0, sd3(sigma_min).item(), n, dtype=torch.float64))
    torch.testing.assert_close(sch.sigmas[:-1].double(), twice, rtol=1e-5, atol=1e-6)
    assert sch.sigmas[-2].item() == pytest.approx(sd3(sd3(sigma_min)).item(), rel=1e-5)
    assert not torch.allclose(sch.sigmas[:-1].double(), intended, rtol=1e-3)


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: shift(0.5, 0.0), ["alpha", "> 0"]),
        (lambda: shift(0.5, -2.0), ["alpha", "-2.0"]),
        (lambda: shift_time(0.5, math.inf), ["s", "finite"]),
        (lambda: shift(torch.tensor([0.2, 1.5]), 2.0), ["t must lie in [0, 1]", "1.5"]),
        (lambda: exponential_shift(-0.1, 1.0), ["t must lie in [0, 1]"]),
        (lambda: exponential_shift(0.5, 1.0, power=0), ["power"]),
        (lambda: sigma_to_t(2.0), ["sigma must lie in [0, 1]"]),
        (lambda: resolution_shift(0, 4), ["m", "> 0"]),
        (lambda: dynamic_shift_mu(100, base_seq_len=10, max_seq_len=10), ["max_seq_len"]),
    ],
)
def test_bad_arguments(call, words):
    with pytest.raises(ValueError) as info:
        call()
    for word in words:
        assert word in str(info.value)
