"""Log-likelihood through the instantaneous change of variables."""

from __future__ import annotations

import math

import pytest
import torch

import flowkit as fk
from flowkit.solvers.likelihood import exact_divergence, hutchinson_divergence

MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
SIGMA = torch.tensor([[1.5, 0.6], [0.6, 0.5]], dtype=torch.float64)
EYE = torch.eye(2, dtype=torch.float64)


def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Exact velocity of N(0, I) -> N(MU, SIGMA) on the rectified path.

    x_t ~ N(tμ, C_t), C_t = (1−t)²I + t²Σ; v(x, t) = μ + (tΣ − (1−t)I)·C_t⁻¹·(x − tμ).
    """
    tt = t[:, None, None]
    c = (1 - tt) ** 2 * EYE + tt**2 * SIGMA
    m = (tt * SIGMA - (1 - tt) * EYE) @ torch.linalg.inv(c)
    return MU + ((x - t[:, None] * MU)[:, None, :] @ m.transpose(1, 2))[:, 0]


def analytic(x: torch.Tensor) -> torch.Tensor:
    return torch.distributions.MultivariateNormal(MU, SIGMA).log_prob(x)


def data(n: int, seed: int) -> torch.Tensor:
    d = torch.distributions.MultivariateNormal(MU, SIGMA)
    torch.manual_seed(seed)
    return d.sample((n,))


def test_exact_likelihood_matches_the_analytic_density() -> None:
    x = data(64, 0)
    res = fk.log_likelihood(velocity, x, solver="dopri5", rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(res.log_prob, analytic(x), rtol=0, atol=1e-3)
    assert res.nfe > 0 and res.z0.shape == x.shape


def test_fixed_step_likelihood_with_a_decreasing_grid() -> None:
    x = data(16, 1)
    res = fk.log_likelihood(velocity, x, solver="rk4", steps=40)
    torch.testing.assert_close(res.log_prob, analytic(x), rtol=0, atol=1e-3)
    assert res.nfe == 160


def test_rademacher_is_exact_for_a_diagonal_jacobian() -> None:
    def diag_field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x * torch.tensor([0.3, -0.7], dtype=x.dtype)

    x = data(8, 2)
    exact = fk.log_likelihood(diag_field, x, solver="rk4", steps=4)
    hutch = fk.log_likelihood(
        diag_field,
        x,
        solver="rk4",
        steps=4,
        divergence="hutchinson",
        generator=torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(hutch.log_prob, exact.log_prob, rtol=0, atol=1e-12)


def test_hutchinson_agrees_within_its_standard_error() -> None:
    n, k = 400, 2
    x = data(n, 3)
    exact = analytic(x)
    res = fk.log_likelihood(
        velocity,
        x,
        solver="rk4",
        steps=20,
        divergence="hutchinson",
        probes=k,
        probe="gaussian",
        generator=torch.Generator().manual_seed(4),
    )
    err = res.log_prob - exact
    # The field is linear, so with probes fixed along the solve the estimate is εᵀMε/k-averaged
    # with M = ∫₀¹ J(t) dt (J symmetric): unbiased, variance 2‖M‖_F²/k for Gaussian probes.
    ts = torch.linspace(0, 1, 2001, dtype=torch.float64)
    jac = torch.stack(
        [
            torch.autograd.functional.jacobian(
                lambda z, t=t: velocity(z[None], t[None])[0], torch.zeros(2, dtype=torch.float64)
            )
            for t in ts
        ]
    )
    m = torch.trapezoid(jac, ts, dim=0)
    sd = math.sqrt(2 * (m**2).sum().item() / k)
    assert abs(err.mean().item()) < 4 * sd / math.sqrt(n)
    # the SE of a sample std is ≈ sd/sqrt(2(n−1)); 4 SE
    assert abs(err.std().item() - sd) < 4 * sd / math.sqrt(2 * (n - 1))


def test_exact_divergence_for_any_shape() -> None:
    a = torch.randn(12, 12, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x = torch.randn(3, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    v = (x.flatten(1) @ a.T).reshape(x.shape)
    torch.testing.assert_close(
        exact_divergence(v, x), torch.full((3,), a.trace().item(), dtype=torch.float64)
    )
    probes = torch.randint(0, 2, (2000, 3, 3, 2, 2)).double() * 2 - 1
    est = hutchinson_divergence(v, x, probes)
    # Rademacher: Var(εᵀAε) = 2·Σ_{i≠j} S_ij² with S = (A + Aᵀ)/2; mean of 2000 probes
    sym_off = ((a + a.T) ** 2 / 4).sum() - (a.diag() ** 2).sum()
    se = math.sqrt(2 * sym_off.item() / 2000)
    assert ((est - a.trace()).abs() < 4 * se).all()


def test_likelihood_errors() -> None:
    x = data(2, 0)
    with pytest.raises(ValueError, match="divergence must be one of exact, hutchinson"):
        fk.log_likelihood(velocity, x, divergence="exakt")
    with pytest.raises(ValueError, match="probes must be a positive integer"):
        fk.log_likelihood(velocity, x, divergence="hutchinson", probes=0)
    with pytest.raises(ValueError, match="log_p0 must be"):
        fk.log_likelihood(velocity, x, log_p0="laplace")
