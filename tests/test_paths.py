"""AffinePath: sampling, conversions between parameterisations, weights, endpoints, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import flowkit as fk
from flowkit.paths import PREDICTIONS, AffinePath
from flowkit.registry import SCHEDULES, RegistryError

EXTRA = {"custom": {"a": lambda t: t * t * (3 - 2 * t), "b": lambda t: 1 - t * t * (3 - 2 * t)}}
NAMES = SCHEDULES.names()
SHAPES = [(5,), (3, 4, 2), (2, 3, 4, 4)]  # (B,), (B, N, D), (B, C, H, W)
DELTA = 1e-3


def make_path(name: str) -> AffinePath:
    return fk.paths.build({"name": name, **EXTRA.get(name, {})})


def draw(shape, seed):
    g = torch.Generator().manual_seed(seed)
    x0, x1 = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(2))
    t = DELTA + (1 - 2 * DELTA) * torch.rand(shape[0], generator=g, dtype=torch.float64)
    return x0, x1, t


cases = st.tuples(st.sampled_from(SHAPES), st.integers(0, 2**31 - 1))


@pytest.mark.parametrize("name", NAMES)
@given(case=cases)
def test_sample_matches_definition(name, case):
    path = make_path(name)
    x0, x1, t = draw(*case)
    s = path.sample(x0, x1, t)
    a, b, da, db = path.coefficients(t, x1)
    assert a.shape == (x1.shape[0],) + (1,) * (x1.ndim - 1)
    torch.testing.assert_close(s.x_t, a * x1 + b * x0)
    torch.testing.assert_close(s.velocity, da * x1 + db * x0)
    torch.testing.assert_close(s.t, t)


@pytest.mark.parametrize("name", NAMES)
@given(case=cases)
def test_sample_velocity_equals_conversion_of_true_x0_x1(name, case):
    path = make_path(name)
    x0, x1, t = draw(*case)
    s = path.sample(x0, x1, t)
    b = path.coefficients(t, x1)[1]
    truth = {"velocity": s.velocity, "epsilon": x0, "x1": x1, "score": -x0 / b}
    for src in PREDICTIONS:
        torch.testing.assert_close(path.target(s, src), truth[src])
        for dst in PREDICTIONS:
            out = path.convert(truth[src], src=src, dst=dst, x_t=s.x_t, t=t)
            torch.testing.assert_close(out, truth[dst], rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
@given(case=cases, src=st.sampled_from(PREDICTIONS), dst=st.sampled_from(PREDICTIONS))
def test_conversion_round_trips(name, case, src, dst):
    path = make_path(name)
    pred, x_t, t = draw(*case)
    there = path.convert(pred, src=src, dst=dst, x_t=x_t, t=t)
    back = path.convert(there, src=dst, dst=src, x_t=x_t, t=t)
    torch.testing.assert_close(back, pred, rtol=1e-7, atol=1e-7)


@given(case=cases)
def test_sd3_rectified_identities(case):
    path = fk.paths.build("rectified")
    x0, x1, t = draw(*case)
    s = path.sample(x0, x1, t)
    tt = t.reshape(-1, *[1] * (x1.ndim - 1))
    torch.testing.assert_close(s.velocity, x1 - x0)
    v = s.velocity
    x1_hat = path.convert(v, "velocity", "x1", s.x_t, t)
    eps_hat = path.convert(v, "velocity", "epsilon", s.x_t, t)
    torch.testing.assert_close(x1_hat, s.x_t + (1 - tt) * v)
    torch.testing.assert_close(eps_hat, s.x_t - tt * v)


@pytest.mark.parametrize("name", NAMES)
@given(case=cases)
def test_sd3_epsilon_and_velocity_formulas(name, case):
    path = make_path(name)
    x0, x1, t = draw(*case)
    s = path.sample(x0, x1, t)
    a, b, da, _ = path.coefficients(t, x1)
    dlam = path.schedule.dlog_snr(t).reshape(a.shape)
    # SD3: ε = −2/(λ'·b)·(v − (a'/a)·x_t)  and  v = (a'/a)·x_t − (b·λ'/2)·ε
    eps = -2.0 / (dlam * b) * (s.velocity - da / a * s.x_t)
    torch.testing.assert_close(eps, x0, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(da / a * s.x_t - b * dlam / 2 * x0, s.velocity)


def test_per_token_times_broadcast():
    path = fk.paths.build("cosine")
    x0, x1 = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    t = torch.rand(2, 5)
    s = path.sample(x0, x1, t)
    expected = (
        torch.sin(math.pi * t / 2)[..., None] * x1 + torch.cos(math.pi * t / 2)[..., None] * x0
    )
    torch.testing.assert_close(s.x_t, expected)
    back = path.convert(s.velocity, "velocity", "epsilon", s.x_t, t)
    torch.testing.assert_close(back, x0, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_every_conversion_is_finite_at_the_endpoints(name):
    path = make_path(name)
    x = torch.randn(2, 3, dtype=torch.float64)
    for t in (0.0, 1.0):
        s = path.sample(x, 2 * x, t)
        assert torch.isfinite(s.velocity).all() and torch.isfinite(s.x_t).all()
        for src in PREDICTIONS:
            assert torch.isfinite(path.target(s, src)).all()
            for dst in PREDICTIONS:
                assert torch.isfinite(path.convert(x, src, dst, x, t)).all(), (src, dst, t)


def test_velocity_invertible_at_endpoints_flag():
    flags = {n: make_path(n).velocity_invertible_at_endpoints for n in NAMES}
    assert {n for n, ok in flags.items() if ok} == {"rectified", "cosine"}
    assert fk.paths.build({"name": "polynomial", "n": 1}).velocity_invertible_at_endpoints


@pytest.mark.parametrize("name", ["rectified", "cosine"])
def test_velocity_conversions_are_exact_at_the_endpoints(name):
    path = make_path(name)
    x0, x1 = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    for t in (0.0, 1.0):
        s = path.sample(x0, x1, t)
        torch.testing.assert_close(s.t, torch.full((4,), t, dtype=torch.float64))
        torch.testing.assert_close(path.convert(s.velocity, "velocity", "x1", s.x_t, t), x1)
        torch.testing.assert_close(path.convert(s.velocity, "velocity", "epsilon", s.x_t, t), x0)


def test_divisions_are_clamped_at_eps():
    path = AffinePath("rectified", eps=1e-3)
    x_t, eps = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    at_zero = path.convert(eps, "epsilon", "velocity", x_t, 0.0)
    at_eps = path.convert(eps, "epsilon", "velocity", x_t, 1e-3)
    torch.testing.assert_close(at_zero, at_eps)
    torch.testing.assert_close(at_eps, (x_t - eps) / 1e-3)  # rectified: v = (x_t − ε)/t
    at_one = path.convert(eps, "x1", "velocity", x_t, 1.0)
    torch.testing.assert_close(at_one, (eps - x_t) / 1e-3)  # rectified: v = (x1 − x_t)/(1 − t)


def test_singular_schedules_sample_at_the_clamped_time():
    path = AffinePath("linear_vp", eps=1e-4)
    x0, x1 = torch.randn(3, 2), torch.randn(3, 2)
    s = path.sample(x0, x1, torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(s.t, torch.tensor([1e-4, 0.5, 1 - 1e-4]))
    assert torch.isfinite(s.velocity).all()


@pytest.mark.parametrize("name", NAMES)
@given(case=cases, prediction=st.sampled_from(PREDICTIONS))
def test_velocity_and_sd3_weights(name, case, prediction):
    path = make_path(name)
    x0, x1, t = draw(*case)
    s = path.sample(x0, x1, t)
    g = torch.Generator().manual_seed(case[1])
    pred = path.target(s, prediction) + torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    v_hat = path.convert(pred, prediction, "velocity", s.x_t, t)
    e_hat = path.convert(pred, prediction, "epsilon", s.x_t, t)
    err = (pred - path.target(s, prediction)) ** 2
    w = path.velocity_weight(t, prediction, x1)
    torch.testing.assert_close(w * err, (v_hat - s.velocity) ** 2, rtol=1e-6, atol=1e-9)
    w3 = path.sd3_weight(t, prediction, x1)
    dlam = path.schedule.dlog_snr(t).reshape(w3.shape)
    torch.testing.assert_close(0.5 * w3 * dlam * (e_hat - x0) ** 2, err, rtol=1e-6, atol=1e-9)


def test_sd3_weights_closed_forms():
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    x = torch.zeros(19, 1, dtype=torch.float64)
    rect = fk.paths.build("rectified")
    # SD3 rectified flow: w = t_sd3/(1 − t_sd3) with t_sd3 = 1 − t
    torch.testing.assert_close(rect.sd3_weight(t, "velocity", x)[:, 0], (1 - t) / t)
    for name, velocity_w, eps_w in [
        ("rectified", (1 - t) / t, t * (1 - t)),
        ("linear_vp", 1 / t, t * (1 - t**2)),
        ("polynomial", 2 * (1 - t**2) / t, t * (1 - t**2) / 2),
    ]:
        path = fk.paths.build(name)
        torch.testing.assert_close(path.sd3_weight(t, "velocity", x)[:, 0], velocity_w)
        torch.testing.assert_close(path.sd3_weight(t, "epsilon", x)[:, 0], eps_w)
    cos = fk.paths.build("cosine")
    lam = cos.log_snr(t)
    # SD3 cosine: ε-prediction w ∝ sech(λ/2), v-prediction w ∝ e^{−λ/2} (exact constants 1/π, π/2)
    torch.testing.assert_close(
        cos.sd3_weight(t, "epsilon", x)[:, 0], 1 / torch.cosh(lam / 2) / math.pi
    )
    torch.testing.assert_close(
        cos.sd3_weight(t, "velocity", x)[:, 0], math.pi / 2 * torch.exp(-lam / 2)
    )


@pytest.mark.parametrize("name", NAMES)
def test_build_by_name_and_dict_spec(name):
    path = make_path(name)
    assert isinstance(path, AffinePath)
    via_affine = fk.paths.build(
        {"name": "affine", "schedule": {"name": name, **EXTRA.get(name, {})}}
    )
    t = torch.linspace(0.1, 0.9, 5)
    torch.testing.assert_close(path.a(t), via_affine.a(t))
    assert fk.paths.build(path) is path


def test_build_with_options():
    path = fk.paths.build({"name": "polynomial", "n": 3, "eps": 1e-3})
    assert path.eps == 1e-3 and path.schedule.n == 3
    with pytest.raises(RegistryError, match="allowed options: n"):
        fk.paths.build({"name": "polynomial", "m": 3})
    with pytest.raises(RegistryError, match="Did you mean 'cosine'"):
        fk.paths.build("cosin")


def test_bad_arguments():
    path = fk.paths.build("rectified")
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        path.sample(x, x, torch.tensor([0.5, 1.5, 0.2, 0.1]))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        path.convert(x, "velocity", "x1", x, -0.1)
    with pytest.raises(ValueError, match=r"x0 and x1 must have the same shape"):
        path.sample(x, torch.randn(4, 3), 0.5)
    with pytest.raises(ValueError, match=r"pred of shape \(4, 2\) must match x_t"):
        path.convert(x, "velocity", "x1", torch.randn(4, 3), 0.5)
    with pytest.raises(ValueError, match=r"t of shape \(3,\) does not broadcast"):
        path.sample(x, x, torch.rand(3))
    with pytest.raises(
        ValueError, match=r"src must be one of velocity, epsilon, x1, score.*'velocity'"
    ):
        path.convert(x, "velocty", "x1", x, 0.5)
    with pytest.raises(ValueError, match="dst must be one of"):
        path.convert(x, "velocity", "noise", x, 0.5)
    with pytest.raises(ValueError, match="prediction must be one of"):
        path.velocity_weight(torch.rand(4), "eps", x)
    for eps in (0.7, 0.0):  # eps = 0 made the endpoint conversions return inf / NaN
        with pytest.raises(ValueError, match=r"eps must be a number in \(0, 0.5\)"):
            AffinePath("rectified", eps=eps)
    with pytest.raises(TypeError, match="schedule spec must be a name, a mapping or a Schedule"):
        AffinePath(object())
