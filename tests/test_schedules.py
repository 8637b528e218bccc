"""Schedules: boundary values, derivatives, log-SNR and its inverse, for every registered one."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowkit.paths.schedules import (
    CustomSchedule,
    EDMSchedule,
    LDMLinearSchedule,
    Schedule,
    VPSchedule,
)
from flowkit.registry import SCHEDULES, RegistryError

# Options for schedules whose defaults cannot be built (custom) or that we test at several values.
EXTRA = {
    "custom": [{"a": lambda t: t * t * (3 - 2 * t), "b": lambda t: 1 - t * t * (3 - 2 * t)}],
    "polynomial": [{}, {"n": 0.5}, {"n": 3.0}],
}
SPECS = [
    pytest.param({"name": n, **kw}, id=f"{n}{kw.get('n', '')}")
    for n in SCHEDULES.names()
    for kw in EXTRA.get(n, [{}])
]
DELTA = 1e-3
interior = st.floats(DELTA, 1 - DELTA)


def f64(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def autograd(fn, t: torch.Tensor) -> torch.Tensor:
    t = t.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(t).sum(), t)
    return g


def test_every_builtin_schedule_is_registered():
    expected = {"rectified", "cosine", "linear_vp", "polynomial", "vp", "ldm_linear", "edm"}
    assert expected | {"custom"} <= set(SCHEDULES.names())


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_boundary_values(spec, dtype):
    s = SCHEDULES.build(spec)
    ends = torch.tensor([0.0, 1.0], dtype=dtype)
    a, b = s.a(ends), s.b(ends)
    # a(1) = 1 and b(1) = 0 hold for every schedule, exactly up to rounding.
    assert a[1].item() == pytest.approx(1.0, abs=1e-7)
    assert b[1].item() == pytest.approx(0.0, abs=1e-7)
    if s.reaches_endpoints:
        assert a[0].item() == pytest.approx(0.0, abs=1e-7)
        assert b[0].item() == pytest.approx(1.0, abs=1e-7)
    else:  # vp / ldm_linear: documented small but non-zero a(0), b(0)^2 = 1 - a(0)^2
        assert 0.0 < a[0].item() < 0.1
        assert b[0].item() == pytest.approx(math.sqrt(1 - a[0].item() ** 2), rel=1e-6)


def test_which_schedules_do_not_reach_the_endpoints():
    flags = {n: SCHEDULES.build({"name": n, **EXTRA.get(n, [{}])[0]}) for n in SCHEDULES.names()}
    assert {n for n, s in flags.items() if not s.reaches_endpoints} == {"vp", "ldm_linear"}
    singular = {n for n, s in flags.items() if not s.finite_derivatives}
    assert singular == {"vp", "ldm_linear", "edm", "linear_vp"}


@pytest.mark.parametrize("spec", SPECS)
def test_finite_derivatives_flag(spec):
    s = SCHEDULES.build(spec)
    near = f64(0.0, 1e-12, 1 - 1e-12, 1.0)
    d = torch.stack([s.da(near), s.db(near)])
    if s.finite_derivatives:
        assert torch.isfinite(d).all()
        assert d.abs().max() < 100
    else:
        assert not torch.isfinite(d).all() or d.abs().max() > 1e3


@pytest.mark.parametrize("spec", SPECS)
@given(t=interior)
def test_derivatives_match_autograd_and_finite_differences(spec, t):
    s = SCHEDULES.build(spec)
    tt = f64(t)
    for f, df in ((s.a, s.da), (s.b, s.db), (s.log_snr, s.dlog_snr)):
        torch.testing.assert_close(df(tt), autograd(f, tt), rtol=1e-6, atol=1e-9)
        # central differences, step 1e-6: truncation error ~h^2 |f'''|, rounding ~1e-16/h
        h = 1e-6
        fd = (f(tt + h) - f(tt - h)) / (2 * h)
        torch.testing.assert_close(df(tt), fd, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("spec", SPECS)
def test_log_snr_strictly_increasing_and_consistent(spec):
    s = SCHEDULES.build(spec)
    t = torch.linspace(DELTA, 1 - DELTA, 2001, dtype=torch.float64)
    lam = s.log_snr(t)
    assert (lam.diff() > 0).all()
    torch.testing.assert_close(lam, torch.log(s.a(t) ** 2 / s.b(t) ** 2))
    assert (s.dlog_snr(t) > 0).all()


@pytest.mark.parametrize("spec", SPECS)
@given(t=interior)
def test_t_from_log_snr_round_trips(spec, t):
    s = SCHEDULES.build(spec)
    tt = f64(t)
    lam = s.log_snr(tt)
    torch.testing.assert_close(s.t_from_log_snr(lam), tt, rtol=1e-9, atol=1e-9)
    # the closed forms agree with the generic bisection of the base class
    torch.testing.assert_close(Schedule.t_from_log_snr(s, lam), tt, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["rectified", "cosine", "linear_vp", "polynomial", "edm"])
def test_t_from_log_snr_limits(name):
    s = SCHEDULES.build(name)
    out = s.t_from_log_snr(f64(-math.inf, math.inf))
    torch.testing.assert_close(out, f64(0.0, 1.0))


def test_t_from_log_snr_keeps_float32():
    s = SCHEDULES.build("ldm_linear")
    assert s.t_from_log_snr(torch.zeros(3)).dtype == torch.float32


def test_closed_forms():
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    cos = SCHEDULES.build("cosine")
    torch.testing.assert_close(cos.a(t), torch.sin(math.pi * t / 2))
    torch.testing.assert_close(cos.b(t), torch.cos(math.pi * t / 2))
    lvp = SCHEDULES.build("linear_vp")
    torch.testing.assert_close(lvp.a(t) ** 2 + lvp.b(t) ** 2, torch.ones_like(t))
    poly = SCHEDULES.build({"name": "polynomial", "n": 3})
    torch.testing.assert_close(poly.a(t), t**3)
    torch.testing.assert_close(poly.b(t), 1 - t**3)


def test_vp_matches_continuous_ddpm():
    s = VPSchedule()
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    u = 1 - t  # diffusion time
    integral = 0.1 * u + 0.5 * (20.0 - 0.1) * u**2  # ∫_0^u β(r) dr for β(r) = 0.1 + 19.9 r
    torch.testing.assert_close(s.a(t), torch.exp(-0.5 * integral))
    torch.testing.assert_close(s.b(t), torch.sqrt(1 - torch.exp(-integral)))
    assert s.a(f64(0.0)).item() == pytest.approx(math.exp(-0.5 * (0.1 + 9.95)))


def test_ldm_linear_matches_diffusers_alphas_cumprod():
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
    ).alphas_cumprod.double()
    s = LDMLinearSchedule()
    a2 = s.a(s.time_of_timestep(torch.arange(1000))) ** 2
    # diffusers accumulates its cumprod in float32 (relative error ~1e-6 after 1000 factors)
    torch.testing.assert_close(a2, ref, rtol=2e-6, atol=0)
    assert s.a(f64(0.0)).item() == pytest.approx(math.sqrt(ref[-1].item()), rel=1e-5)


def test_edm_matches_sd3_definition():
    s = EDMSchedule(p_mean=-1.2, p_std=1.2)
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    # SD3 (its time t_sd3 = 1 - t): b/a = exp(F^{-1}_N(t_sd3 | P_mean, P_std^2))
    sigma = torch.exp(-1.2 + 1.2 * torch.special.ndtri(1 - t))
    torch.testing.assert_close(s.b(t) / s.a(t), sigma)
    torch.testing.assert_close(s.a(t) ** 2 + s.b(t) ** 2, torch.ones_like(t))
    # uniform t gives λ ~ N(-2 P_mean, (2 P_std)^2): λ at the normal quantile z is 2.4 + 2.4 z
    z = torch.linspace(-2, 2, 9, dtype=torch.float64)
    torch.testing.assert_close(s.log_snr(torch.special.ndtr(z)), 2.4 + 2.4 * z)


def test_custom_schedule_flags_and_autograd_keeps_graph():
    s = CustomSchedule(a=lambda t: torch.sin(t * math.pi / 2) ** 2, b=lambda t: 1 - t)
    assert s.reaches_endpoints and s.finite_derivatives
    s = CustomSchedule(a=lambda t: 0.5 + 0.5 * t, b=lambda t: 1 - t)
    assert not s.reaches_endpoints
    t = f64(0.3).requires_grad_(True)
    (second,) = torch.autograd.grad(s.da(t) + SCHEDULES.build("cosine").da(t), t)
    assert second.item() == pytest.approx(-((math.pi / 2) ** 2) * math.sin(0.3 * math.pi / 2))


@pytest.mark.parametrize(
    ("spec", "error", "words"),
    [
        ({"name": "polynomial", "n": 0}, ValueError, ["n", "> 0", "0"]),
        ({"name": "vp", "beta_min": 5, "beta_max": 1}, ValueError, ["beta_min", "beta_max"]),
        ({"name": "edm", "p_std": -1}, ValueError, ["p_std", "> 0"]),
        ({"name": "ldm_linear", "num_train_timesteps": 1.5}, ValueError, ["num_train_timesteps"]),
        ({"name": "custom", "a": 1.0, "b": lambda t: 1 - t}, TypeError, ["a must be", "float"]),
        (
            "cosin",
            RegistryError,
            ["unknown schedule 'cosin'", "rectified", "Did you mean 'cosine'"],
        ),
        ({"name": "polynomial", "m": 2}, RegistryError, ["'m'", "allowed options: n"]),
    ],
)
def test_bad_arguments(spec, error, words):
    with pytest.raises(error) as info:
        SCHEDULES.build(spec)
    for word in words:
        assert word in str(info.value)
