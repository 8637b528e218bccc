"""Distributions: registry, shapes, determinism, Gaussian densities, toy geometries."""

from __future__ import annotations

import math

import pytest
import torch

import flowkit as fk
from flowkit.data import Distribution, Gaussian, GaussianMixture
from flowkit.registry import RegistryError

EXPECTED = {
    "gaussian",
    "gaussian_mixture",
    "moons",
    "circle",
    "8gaussians",
    "checkerboard",
    "spirals",
    "scurve",
    "pinwheel",
    "torchcfm_8gaussians",
    "torchcfm_moons",
    "digits",
}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registry_lists_every_distribution() -> None:
    assert set(fk.data.names()) >= EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_shape_dtype_and_determinism(name: str) -> None:
    dist = fk.data.build(name)
    assert isinstance(dist, Distribution)
    x = dist.sample(64, generator=gen(1))
    assert x.shape == (64, *dist.event_shape)
    assert x.dtype == torch.get_default_dtype()
    assert torch.isfinite(x).all()
    assert torch.equal(x, dist.sample(64, generator=gen(1)))
    assert not torch.equal(x, dist.sample(64, generator=gen(2)))
    assert dist.sample(0, generator=gen(1)).shape == (0, *dist.event_shape)


@pytest.mark.parametrize("bad", [-1, 2.5, "3", True])
def test_sample_rejects_bad_n(bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match="n must be"):
        fk.data.build("moons").sample(bad)


def test_unknown_name_and_option_are_reported() -> None:
    with pytest.raises(RegistryError, match="Did you mean 'moons'"):
        fk.data.build("mons")
    with pytest.raises(RegistryError, match="allowed options: noise, shift, scale"):
        fk.data.build({"name": "moons", "radius": 2})


def test_distributions_without_density_say_so() -> None:
    moons = fk.data.build("moons")
    assert not moons.has_log_prob
    with pytest.raises(NotImplementedError, match="no closed-form log_prob"):
        moons.log_prob(torch.zeros(3, 2))


def test_gaussian_log_prob_matches_torch() -> None:
    cov = [[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 0.5]]
    g = fk.data.build({"name": "gaussian", "mean": [1.0, -2.0, 0.5], "cov": cov})
    ref = torch.distributions.MultivariateNormal(
        torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), torch.tensor(cov, dtype=torch.float64)
    )
    x = torch.randn(50, 3, generator=gen(), dtype=torch.float64) * 2
    torch.testing.assert_close(g.log_prob(x), ref.log_prob(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "variances"),
    [
        ({"dim": 3}, [1.0, 1.0, 1.0]),
        ({"dim": 2, "std": 2.0}, [4.0, 4.0]),
        ({"std": [1.0, 3.0]}, [1.0, 9.0]),
        ({"cov": [0.5, 2.0, 1.0]}, [0.5, 2.0, 1.0]),
        ({"mean": [1.0, 2.0, 3.0, 4.0], "cov": 0.25}, [0.25] * 4),
    ],
)
def test_gaussian_options(kwargs: dict, variances: list[float]) -> None:
    g = fk.data.build({"name": "gaussian", **kwargs})
    assert g.dim == len(variances)
    assert torch.allclose(g.covariance(), torch.diag(torch.tensor(variances, dtype=torch.float64)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cov": [[1.0, 2.0], [2.0, 1.0]]}, "positive definite"),
        ({"cov": [[1.0, 0.5], [0.0, 1.0]]}, "symmetric"),
        ({"dim": 3, "mean": [0.0, 1.0]}, "mean must be a scalar or have length 3"),
        ({"cov": 1.0, "std": 1.0}, "at most one"),
        ({"std": -1.0}, "std must be positive"),
        ({"dim": 0}, "dim must be a positive integer"),
    ],
)
def test_gaussian_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fk.data.build({"name": "gaussian", **kwargs})


def test_gaussian_sample_moments() -> None:
    cov = torch.tensor([[1.0, 0.8], [0.8, 2.0]], dtype=torch.float64)
    g = Gaussian(mean=[3.0, -1.0], cov=cov.tolist())
    n = 20_000
    x = g.sample(n, generator=gen()).double()
    # Mean: standard error sqrt(var/n) per axis; 5 SE. Covariance: SE of a (co)variance estimate
    # is at most sqrt((S_ii S_jj + S_ij²)/n) ≤ sqrt(2·2·2/n); 5 SE.
    se_mean = torch.sqrt(cov.diag() / n)
    assert ((x.mean(0) - torch.tensor([3.0, -1.0], dtype=torch.float64)).abs() < 5 * se_mean).all()
    assert (torch.cov(x.T) - cov).abs().max() < 5 * math.sqrt(8 / n)


def test_quasi_random_gaussian_is_gaussian_and_even() -> None:
    cov = torch.tensor([[1.0, 0.8], [0.8, 2.0]], dtype=torch.float64)
    g = fk.data.build(
        {"name": "gaussian", "mean": [3.0, -1.0], "cov": cov.tolist(), "quasi_random": True}
    )
    n = 4096
    x = g.sample(n, generator=gen()).double()
    # Moments as for i.i.d. draws (the QMC errors are far smaller than these 5-SE bounds).
    se_mean = torch.sqrt(cov.diag() / n)
    assert ((x.mean(0) - torch.tensor([3.0, -1.0], dtype=torch.float64)).abs() < 5 * se_mean).all()
    assert (torch.cov(x.T) - cov).abs().max() < 5 * math.sqrt(8 / n)
    assert torch.equal(x, g.sample(n, generator=gen()).double())  # seeded by the generator
    assert not torch.equal(x, g.sample(n, generator=gen(1)).double())
    # Evenness: the set's mean error over 50 sets is far below the i.i.d. standard error.
    plain = fk.data.build("gaussian")
    qmc = fk.data.build({"name": "gaussian", "quasi_random": True})
    means = torch.stack([qmc.sample(1024, generator=gen(i)).mean(0) for i in range(50)])
    iid = torch.stack([plain.sample(1024, generator=gen(i)).mean(0) for i in range(50)])
    assert means.pow(2).mean().sqrt() < 0.2 / math.sqrt(1024)
    assert iid.pow(2).mean().sqrt() > 0.5 / math.sqrt(1024)
    with pytest.raises(TypeError, match="quasi_random must be a bool"):
        fk.data.build({"name": "gaussian", "quasi_random": "yes"})


def test_mixture_log_prob_matches_torch() -> None:
    weights = [0.2, 0.5, 0.3]
    means = [[0.0, 0.0], [3.0, 1.0], [-2.0, 2.0]]
    covs = [[[1.0, 0.3], [0.3, 0.5]], [[0.2, 0.0], [0.0, 0.2]], [[2.0, -0.5], [-0.5, 1.0]]]
    mix = fk.data.build(
        {"name": "gaussian_mixture", "weights": weights, "means": means, "covariances": covs}
    )
    d64 = torch.float64
    ref = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.tensor(weights, dtype=d64)),
        torch.distributions.MultivariateNormal(
            torch.tensor(means, dtype=d64), torch.tensor(covs, dtype=d64)
        ),
    )
    x = torch.randn(100, 2, generator=gen(), dtype=d64) * 3
    torch.testing.assert_close(mix.log_prob(x), ref.log_prob(x), rtol=1e-12, atol=1e-12)


def test_mixture_weights_normalised_and_component_frequencies() -> None:
    mix = GaussianMixture(means=[[-5.0], [5.0]], weights=[1.0, 3.0], std=0.1)
    assert torch.allclose(mix.weights, torch.tensor([0.25, 0.75], dtype=torch.float64))
    n = 10_000
    _, comp = mix.sample_with_components(n, generator=gen())
    # Binomial proportion, SE sqrt(p(1-p)/n); 5 SE.
    assert abs(comp.float().mean().item() - 0.75) < 5 * math.sqrt(0.75 * 0.25 / n)
    x = mix.sample(n, generator=gen()).double()
    torch.testing.assert_close(x.mean(), mix.mean()[0], atol=5 * 5 / math.sqrt(n), rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"means": [[0.0], [1.0]], "weights": [1.0, -1.0]}, "weights must be non-negative"),
        ({"means": [0.0, 1.0]}, r"means must have shape \(K, d\)"),
        ({"means": [[0.0], [1.0]], "covariances": [1.0, 2.0, 3.0]}, "one entry per component"),
    ],
)
def test_mixture_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fk.data.build({"name": "gaussian_mixture", **kwargs})


def test_mixture_moments_are_those_of_its_samples() -> None:
    mix = fk.data.build("8gaussians")
    n = 20_000
    x = mix.sample(n, generator=gen()).double()
    # Per-coordinate variance is about r²/2 + s² ≈ 4.1: SE of the mean sqrt(4.1/n); the SE of a
    # variance of this bounded-kurtosis mixture is below sqrt(2·4.1²/n); 5 SE each.
    assert (x.mean(0) - mix.mean()).abs().max() < 5 * math.sqrt(4.1 / n)
    assert (torch.cov(x.T) - mix.covariance()).abs().max() < 5 * math.sqrt(2 * 4.1**2 / n)


def test_eight_gaussians_geometry() -> None:
    mix = fk.data.build({"name": "8gaussians", "radius": 3.0, "std": 0.01})
    x = mix.sample(500, generator=gen())
    radius = x.norm(dim=1)
    assert (radius - 3.0).abs().max() < 0.06
    angle = torch.atan2(x[:, 1], x[:, 0]) / (math.pi / 4)
    assert (angle - angle.round()).abs().max() < 0.02
    assert len(set(angle.round().remainder(8).tolist())) == 8


def test_quasi_random_gaussian_limits() -> None:
    with pytest.raises(ValueError, match="quasi_random=True supports dim <= 21201"):
        fk.data.build({"name": "gaussian", "dim": 21202, "quasi_random": True})
    qmc = fk.data.build({"name": "gaussian", "dim": 3, "quasi_random": True})
    assert qmc.sample(0, generator=gen()).shape == (0, 3)
    assert repr(qmc) == "Gaussian(d=3, quasi_random=True)"
