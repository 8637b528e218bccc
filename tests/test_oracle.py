"""The exact-marginal oracle: closed forms, Monte Carlo, density, continuity equation."""

from __future__ import annotations

import math

import pytest
import torch

import flowkit as fk
from flowkit.data import GaussianMixture
from flowkit.data.oracle import ExactMarginal
from flowkit.paths import AffinePath
from flowkit.paths.schedules.custom import CustomSchedule

D64 = torch.float64
SCHEDULES = [n for n in fk.paths.names() if n not in ("affine", "custom")]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mixtures() -> tuple[GaussianMixture, GaussianMixture]:
    source = GaussianMixture(
        means=[[-1.0, 0.5], [1.5, -0.5]],
        weights=[0.4, 0.6],
        covariances=[[[0.6, 0.2], [0.2, 0.4]], [0.3, 0.8]],
    )
    target = GaussianMixture(
        means=[[2.0, 2.0], [-2.0, 1.0], [0.0, -2.5]],
        weights=[0.5, 0.3, 0.2],
        covariances=[[[0.3, -0.1], [-0.1, 0.2]], 0.25, [0.5, 0.1]],
    )
    return source, target


def all_paths() -> list[AffinePath]:
    custom = CustomSchedule(a=lambda t: torch.sin(t * math.pi / 2) ** 2, b=lambda t: 1 - t**1.5)
    return [fk.paths.build(n) for n in SCHEDULES] + [AffinePath(custom)]


@pytest.mark.parametrize("path", all_paths(), ids=repr)
def test_single_gaussian_pair_matches_closed_form(path: AffinePath) -> None:
    mu0, mu1 = torch.tensor([0.5, -1.0], dtype=D64), torch.tensor([3.0, 1.0], dtype=D64)
    cov0 = torch.tensor([[1.0, 0.3], [0.3, 0.7]], dtype=D64)
    cov1 = torch.tensor([[0.4, -0.2], [-0.2, 0.9]], dtype=D64)
    oracle = ExactMarginal(
        {"name": "gaussian", "mean": mu0.tolist(), "cov": cov0.tolist()},
        {"name": "gaussian", "mean": mu1.tolist(), "cov": cov1.tolist()},
        path,
    )
    x = torch.randn(16, 2, generator=gen(), dtype=D64) * 2
    t = torch.linspace(0.05, 0.95, 16, dtype=D64)
    a, b, da, db = (f(t)[:, None, None] for f in (path.a, path.b, path.da, path.db))
    cov_x = a**2 * cov1 + b**2 * cov0
    cov_ux = da * a * cov1 + db * b * cov0
    mean_x = a[..., 0] * mu1 + b[..., 0] * mu0
    mean_u = da[..., 0] * mu1 + db[..., 0] * mu0
    expected = mean_u + (cov_ux @ torch.linalg.solve(cov_x, (x - mean_x)[..., None]))[..., 0]
    torch.testing.assert_close(oracle.velocity(x, t), expected, rtol=1e-10, atol=1e-10)
    shared = oracle.velocity(x, t[5])
    torch.testing.assert_close(shared[5], expected[5], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("path", all_paths(), ids=repr)
def test_posterior_means_reconstruct_the_point(path: AffinePath) -> None:
    oracle = ExactMarginal(*mixtures(), path)
    x = torch.randn(64, 2, generator=gen(), dtype=D64) * 2
    t = torch.rand(64, generator=gen(1), dtype=D64)
    a, b = path.a(t)[:, None], path.b(t)[:, None]
    # E[x_t | x_t = x] = x: a·E[x1|x] + b·E[x0|x] = x exactly.
    torch.testing.assert_close(a * oracle.x1(x, t) + b * oracle.epsilon(x, t), x)


@pytest.mark.parametrize("path", all_paths(), ids=repr)
def test_epsilon_and_x1_convert_to_the_velocity(path: AffinePath) -> None:
    oracle = ExactMarginal(*mixtures(), path)
    x = torch.randn(32, 2, generator=gen(), dtype=D64)
    t = 0.1 + 0.8 * torch.rand(32, generator=gen(1), dtype=D64)
    v = oracle.velocity(x, t)
    for prediction in ("epsilon", "x1"):
        pred = oracle.predict(x, t, prediction)
        converted = path.convert(pred, src=prediction, dst="velocity", x_t=x, t=t)
        torch.testing.assert_close(converted, v, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("path", all_paths(), ids=repr)
def test_velocity_is_finite_at_the_endpoints(path: AffinePath) -> None:
    oracle = ExactMarginal(*mixtures(), path)
    x = torch.randn(16, 2, generator=gen(), dtype=D64)
    for t in (0.0, 1.0):
        v = oracle.velocity(x, t)
        assert torch.isfinite(v).all()
        if path.schedule.finite_derivatives:
            # exact endpoint: u_t = a'·E[x1|x] + b'·E[x0|x] with the unclamped coefficients
            tt = torch.tensor(t, dtype=D64)
            expected = path.da(tt) * oracle.x1(x, t) + path.db(tt) * oracle.epsilon(x, t)
            torch.testing.assert_close(v, expected)


@pytest.mark.parametrize("schedule", ["rectified", "cosine"])
def test_velocity_matches_monte_carlo_importance_estimate(schedule: str) -> None:
    source, target = mixtures()
    path = fk.paths.build(schedule)
    oracle = ExactMarginal(source, target, path)
    n = 200_000
    for seed, (point, t) in enumerate([([0.3, 0.8], 0.3), ([1.0, -0.5], 0.6), ([-0.7, 0.2], 0.8)]):
        x = torch.tensor([point], dtype=D64)
        tt = torch.tensor(t, dtype=D64)
        a, b, da, db = path.a(tt), path.b(tt), path.da(tt), path.db(tt)
        # x_t = a·x1 + b·x0 = x  =>  x1 = (x − b·x0)/a; weight each x0 ~ source by p1(x1).
        x0 = source.sample(n, generator=gen(seed)).double()
        x1 = (x - b * x0) / a
        w = target.log_prob(x1).exp()
        u = da * x1 + db * x0
        estimate = (w[:, None] * u).sum(0) / w.sum()
        # Self-normalised importance sampling: delta-method SE sqrt(Σ w²(u − û)²)/Σ w; 5 SE.
        se = ((w[:, None] ** 2) * (u - estimate) ** 2).sum(0).sqrt() / w.sum()
        exact = oracle.velocity(x, tt)[0]
        assert ((exact - estimate).abs() < 5 * se).all(), (exact, estimate, se)
        assert (se < 0.05).all()


@pytest.mark.parametrize("t", [0.0, 0.4, 1.0])
def test_marginal_density_integrates_to_one(t: float) -> None:
    oracle = ExactMarginal(*mixtures(), "cosine")
    h = 0.04
    grid = torch.arange(-8 + h / 2, 8, h, dtype=D64)
    pts = torch.cartesian_prod(grid, grid)
    total = oracle.log_prob(pts, t).exp().sum().item() * h * h
    assert abs(total - 1.0) < 1e-6


@pytest.mark.parametrize("schedule", ["rectified", "cosine", "polynomial", "vp"])
def test_continuity_equation(schedule: str) -> None:
    """∂p_t/∂t + ∇·(p_t u_t) = 0: time derivative by central differences, divergence by autograd."""
    oracle = ExactMarginal(*mixtures(), schedule)
    x = torch.randn(12, 2, generator=gen(), dtype=D64) * 1.5
    t = 0.15 + 0.7 * torch.rand(12, generator=gen(1), dtype=D64)
    h = 1e-5
    dp_dt = (oracle.log_prob(x, t + h).exp() - oracle.log_prob(x, t - h).exp()) / (2 * h)
    xr = x.clone().requires_grad_(True)
    flux = oracle.log_prob(xr, t).exp()[:, None] * oracle.velocity(xr, t)
    divergence = sum(
        torch.autograd.grad(flux[:, k].sum(), xr, retain_graph=True)[0][:, k] for k in range(2)
    )
    scale = dp_dt.abs().max()
    assert ((dp_dt + divergence).abs() < 1e-6 * scale + 1e-10).all()
    assert scale > 1e-3


def test_score_is_the_gradient_of_log_prob() -> None:
    oracle = ExactMarginal(*mixtures(), "cosine")
    x = torch.randn(20, 2, generator=gen(), dtype=D64).requires_grad_(True)
    t = torch.rand(20, generator=gen(1), dtype=D64)
    (grad,) = torch.autograd.grad(oracle.log_prob(x, t).sum(), x)
    torch.testing.assert_close(oracle.score(x.detach(), t), grad)


def test_standard_gaussian_source_score_is_minus_epsilon_over_b() -> None:
    path = fk.paths.build("cosine")
    oracle = ExactMarginal("gaussian", mixtures()[1], path)
    x = torch.randn(20, 2, generator=gen(), dtype=D64)
    t = 0.05 + 0.9 * torch.rand(20, generator=gen(1), dtype=D64)
    torch.testing.assert_close(oracle.score(x, t), -oracle.epsilon(x, t) / path.b(t)[:, None])


def test_endpoints() -> None:
    source, target = mixtures()
    oracle = ExactMarginal(source, target, "rectified")
    x = torch.randn(30, 2, generator=gen(), dtype=D64)
    torch.testing.assert_close(oracle.log_prob(x, 0.0), source.log_prob(x))
    torch.testing.assert_close(oracle.log_prob(x, 1.0), target.log_prob(x))
    # Rectified path: u_0(x) = E[x1] − x and u_1(x) = x − E[x0].
    torch.testing.assert_close(oracle.velocity(x, 0.0), target.mean() - x)
    torch.testing.assert_close(oracle.velocity(x, 1.0), x - source.mean())


def test_shared_time_and_per_point_times_agree() -> None:
    oracle = ExactMarginal(*mixtures(), "cosine")
    x = torch.randn(8, 2, generator=gen(), dtype=D64)
    t = torch.rand(8, generator=gen(1), dtype=D64)
    batched = oracle.velocity(x, t)
    for i in range(8):
        torch.testing.assert_close(oracle.velocity(x[i : i + 1], float(t[i]))[0], batched[i])
    torch.testing.assert_close(oracle.velocity(x, torch.full((8,), 0.3)), oracle.velocity(x, 0.3))


def test_float32_in_float32_out_and_module_call() -> None:
    oracle = ExactMarginal(*mixtures())
    x = torch.randn(5, 2)
    assert oracle(x, torch.rand(5)).dtype == torch.float32
    assert oracle.log_prob(x, 0.5).shape == (5,)
    assert not oracle.deterministic_coupling


def test_sample_matches_path_moments() -> None:
    source, target = mixtures()
    path = fk.paths.build("cosine")
    oracle = ExactMarginal(source, target, path)
    n, t = 40_000, torch.tensor(0.35, dtype=D64)
    x = oracle.sample(n, 0.35, generator=gen()).double()
    a, b = path.a(t), path.b(t)
    mean = a * target.mean() + b * source.mean()
    cov = a**2 * target.covariance() + b**2 * source.covariance()
    # SE of the mean sqrt(var/n); of a covariance entry below sqrt(2·max_var²·κ/n) with κ ≤ 3
    # for these light-tailed mixtures; 5 SE each.
    var_max = cov.diag().max()
    assert (x.mean(0) - mean).abs().max() < 5 * (var_max / n).sqrt()
    assert (torch.cov(x.T) - cov).abs().max() < 5 * (6 * var_max**2 / n).sqrt()


def test_integrating_the_oracle_maps_source_to_target() -> None:
    source, target = mixtures()
    oracle = ExactMarginal(source, target, "cosine")
    x0 = source.sample(1500, generator=gen())
    x1 = fk.sample(oracle, x0, solver="rk4", steps=40).x
    ref = target.sample(1500, generator=gen(1))
    assert fk.metrics.energy_test(x1, ref, permutations=200, generator=gen(2)) > 0.01
    assert fk.metrics.energy_test(x0, ref, permutations=200, generator=gen(2)) < 0.01


def test_errors() -> None:
    with pytest.raises(TypeError, match="source must be a Gaussian or Gaussian mixture"):
        ExactMarginal("moons", "gaussian")
    with pytest.raises(ValueError, match="same dimension"):
        ExactMarginal({"name": "gaussian", "dim": 3}, "gaussian")
    oracle = ExactMarginal("gaussian", "8gaussians")
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        oracle.velocity(torch.zeros(2, 2), 1.5)
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(2,\)"):
        oracle.velocity(torch.zeros(2, 2), torch.zeros(3))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 2\)"):
        oracle.velocity(torch.zeros(2, 3), 0.5)
    degenerate = AffinePath(CustomSchedule(a=lambda t: 0 * t, b=lambda t: 1 - t))
    with pytest.raises(ValueError, match="not positive definite"):
        ExactMarginal("gaussian", "gaussian", degenerate).velocity(torch.zeros(2, 2), 1.0)
