"""Time samplers: densities are normalised, samples follow them, parameters are checked."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate, stats

import flowkit as fk
from flowkit.registry import RegistryError
from flowkit.training import CosMap, LogitNormal, Mode, Uniform, UShaped
from flowkit.training.time_samplers import MODE_SCALE_MAX

SAMPLERS = [
    Uniform(),
    LogitNormal(),
    LogitNormal(m=0.8, s=0.6),
    Mode(),
    Mode(s=-0.5),
    Mode(s=1.75),
    CosMap(),
    UShaped(),
    UShaped(a=1.0),
]

N_SAMPLES = 200_000
N_BINS = 20
# Chi-square goodness of fit with 20 equal-width bins (19 degrees of freedom): under the density,
# X² ~ χ²(19); the threshold is its 0.999 quantile (≈ 43.8), so a correct sampler fails with
# probability 1e-3 for a random seed, and never for the fixed seed below.
CHI2_THRESHOLD = stats.chi2.ppf(0.999, df=N_BINS - 1)


def density_np(sampler, t: float) -> float:
    return float(sampler.density(torch.tensor([t], dtype=torch.float64))[0])


def bin_probabilities(sampler, edges: np.ndarray) -> np.ndarray:
    """Probability of each bin by adaptive quadrature of the density (independent of sample)."""
    return np.array(
        [
            integrate.quad(lambda t: density_np(sampler, t), a, b, limit=200)[0]
            for a, b in itertools.pairwise(edges)
        ]
    )


def chi_square(samples: torch.Tensor, sampler) -> float:
    edges = np.linspace(0.0, 1.0, N_BINS + 1)
    observed, _ = np.histogram(samples.double().numpy(), bins=edges)
    expected = bin_probabilities(sampler, edges) * len(samples)
    return float(((observed - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("sampler", SAMPLERS, ids=repr)
def test_density_integrates_to_one(sampler):
    total, err = integrate.quad(lambda t: density_np(sampler, t), 0.0, 1.0, limit=200)
    assert abs(total - 1.0) < 1e-6 + 10 * err


@pytest.mark.parametrize("sampler", SAMPLERS, ids=repr)
def test_samples_match_density(sampler):
    t = sampler.sample(N_SAMPLES, generator=torch.Generator().manual_seed(1234))
    assert t.shape == (N_SAMPLES,) and t.dtype == torch.float32
    assert bool(((t >= 0) & (t <= 1)).all())
    assert chi_square(t, sampler) < CHI2_THRESHOLD


def test_chi_square_detects_a_wrong_density():
    """The goodness-of-fit test has power: s = 1 samples are rejected against the s = 0.8 law."""
    t = LogitNormal(s=1.0).sample(N_SAMPLES, generator=torch.Generator().manual_seed(1234))
    assert chi_square(t, LogitNormal(s=0.8)) > 10 * CHI2_THRESHOLD


def test_density_is_zero_outside_the_unit_interval():
    t = torch.tensor([-0.5, -1e-9, 1.0 + 1e-6, 2.0], dtype=torch.float64)
    for sampler in SAMPLERS:
        assert torch.equal(sampler.density(t), torch.zeros_like(t)), sampler


def test_closed_forms():
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    # SD3's cosmap weighting 2 / (π (1 − 2σ + 2σ²)), symmetric in σ = 1 − t.
    assert torch.allclose(CosMap().density(t), 2 / (math.pi * (1 - 2 * t + 2 * t**2)))
    # 2-RF++ (rfpp): equal mixture of a·e^{at}/(e^a − 1) and its mirror image.
    a = 4.0
    mixture = 0.5 * a * (torch.exp(a * t) + torch.exp(a * (1 - t))) / math.expm1(a)
    assert torch.allclose(UShaped(a=a).density(t), mixture)
    # Logit-normal equals the normal density of logit(t) times |d logit / dt|.
    normal = stats.norm(0.3, 0.7).pdf(torch.logit(t).numpy()) / (t * (1 - t)).numpy()
    assert np.allclose(LogitNormal(m=0.3, s=0.7).density(t).numpy(), normal)
    assert torch.equal(Mode(s=0.0).density(t), torch.ones_like(t))


def test_mode_matches_sd3_formula():
    """Mode sampling is SD3's f_mode in flowkit time: g(u) = 1 − f_mode(u) (as in diffusers)."""
    u = torch.rand(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = 1.29
    f_mode = 1 - u - s * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)
    assert torch.allclose(Mode(s=s).transform(u), 1 - f_mode, atol=1e-12)


def test_symmetric_samplers_are_symmetric():
    t = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)
    for sampler in (Mode(), CosMap(), UShaped(), LogitNormal()):
        assert torch.allclose(sampler.density(t), sampler.density(1 - t)), sampler
    shifted = LogitNormal(m=1.0)
    assert shifted.density(torch.tensor([0.8])) > shifted.density(torch.tensor([0.2]))


@given(s=st.floats(-1.0, MODE_SCALE_MAX), t=st.floats(0.0, 1.0))
def test_mode_inverse_round_trips(s, t):
    sampler = Mode(s=s)
    t = torch.tensor([t], dtype=torch.float64)
    assert torch.allclose(sampler.transform(sampler.inverse(t)), t, atol=1e-12)


def test_same_generator_state_same_times():
    for sampler in SAMPLERS:
        a = sampler.sample(64, generator=torch.Generator().manual_seed(7))
        b = sampler.sample(64, generator=torch.Generator().manual_seed(7))
        assert torch.equal(a, b)


def test_registry_builds_every_sampler():
    assert set(fk.training.names()) >= {"uniform", "logit_normal", "mode", "cosmap", "u_shaped"}
    assert fk.training.build({"name": "logit_normal", "m": 0.5, "s": 2.0}) == LogitNormal(0.5, 2.0)
    assert fk.training.build("u_shaped") == UShaped(a=4.0)
    assert fk.training.build("mode") == Mode(s=1.29)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"name": "logit_normal", "s": 0.0}, "s must be a finite positive number"),
        ({"name": "logit_normal", "m": float("nan")}, "m must be a finite number"),
        ({"name": "mode", "s": 2.0}, r"s must be a number in \[-1"),
        ({"name": "u_shaped", "a": -4}, "a must be a finite positive number"),
        ("u_shape", "unknown time sampler 'u_shape'.*Did you mean 'u_shaped'"),
        ({"name": "mode", "scale": 1.0}, "unknown option.*'scale'"),
    ],
)
def test_bad_parameters_raise(spec, match):
    with pytest.raises(ValueError, match=match):
        fk.training.build(spec)


def test_bad_sample_count_raises():
    with pytest.raises(ValueError, match="n must be a non-negative integer"):
        UShaped().sample(-1)


def test_registry_errors_name_the_time_sampler_registry():
    with pytest.raises(RegistryError, match="valid time sampler names: cosmap, logit_normal"):
        fk.training.build("uniformm")
    with pytest.raises(RegistryError, match="time sampler spec must be a name, a mapping or a"):
        fk.training.build(0.5)  # neither a spec nor an object with sample(n, generator)
    custom = Uniform()
    assert fk.training.build(custom) is custom
