"""Stochastic sampling and the per-token conditioning mask."""

from __future__ import annotations

import math

import pytest
import torch

import flowkit as fk

MU = torch.tensor([2.0, -1.0], dtype=torch.float64)
STD = torch.tensor([0.5, 1.5], dtype=torch.float64)


def gaussian_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Exact marginal velocity of N(0, I) -> N(MU, diag(STD²)) on the rectified path, per axis.

    x_t ~ N(t·μ, (1−t)² + t²s²) and v(x, t) = μ + (x − tμ)·(t s² − (1−t)) / ((1−t)² + t² s²).
    """
    t = t[:, None]
    var = (1 - t) ** 2 + t**2 * STD**2
    return MU + (x - t * MU) * (t * STD**2 - (1 - t)) / var


def draw(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_stochastic_keeps_mean_and_covariance() -> None:
    n = 20_000
    g = torch.Generator().manual_seed(1)
    sol = fk.sample(
        gaussian_velocity, draw(n, 0), "stochastic", steps=1000, path="rectified", generator=g
    )
    x = sol.x
    # Mean: standard error STD/sqrt(n); 4 SE. Variance: SE of a sample variance is
    # var·sqrt(2/(n−1)) (1 % here); 4 SE. The ancestral step's first-order bias on the variance
    # (≈ −3 % at 200 steps for std 0.5, shrinking like 1/steps) is ≈ −0.6 % at 1000 steps.
    se_mean = STD / math.sqrt(n)
    assert ((x.mean(0) - MU).abs() < 4 * se_mean).all(), x.mean(0)
    var = x.var(0)
    assert ((var / STD**2 - 1).abs() < 4 * math.sqrt(2 / (n - 1)) + 0.006).all(), var
    cov = torch.cov(x.T)[0, 1]
    assert abs(cov) < 4 * (STD[0] * STD[1]).item() / math.sqrt(n)


def test_fresh_renoise_shrinks_the_spread_as_documented() -> None:
    n = 20_000
    g = torch.Generator().manual_seed(2)
    x = fk.sample(
        gaussian_velocity,
        draw(n, 3),
        "stochastic",
        steps=200,
        path="rectified",
        noise="fresh",
        generator=g,
    ).x
    # documented: N(0, 1) -> N(2, 0.5²) ends with std ≈ 0.35 under full re-noising
    assert abs(x[:, 0].std().item() - 0.35) < 0.02
    assert abs(x[:, 0].mean().item() - 2.0) < 4 * 0.5 / math.sqrt(n)


def test_fresh_step_formula_and_generator() -> None:
    x = draw(6, 4)
    t, s = 0.3, 0.55
    sol = fk.sample(
        gaussian_velocity,
        x,
        "stochastic",
        grid=[t, s],
        path="rectified",
        noise="fresh",
        generator=torch.Generator().manual_seed(5),
    )
    v = gaussian_velocity(x, torch.full((6,), t, dtype=torch.float64))
    x1_hat = x + (1 - t) * v
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(sol.x, s * x1_hat + (1 - s) * z)


def test_eta_zero_is_ddim_and_same_seed_same_samples() -> None:
    x = draw(8, 6)
    kw = {"steps": 6, "path": "cosine"}
    d = fk.sample(gaussian_velocity, x, "ddim", **kw).x
    s0 = fk.sample(gaussian_velocity, x, "stochastic", eta=0.0, **kw).x
    torch.testing.assert_close(s0, d)
    a = fk.sample(
        gaussian_velocity, x, "stochastic", generator=torch.Generator().manual_seed(7), **kw
    ).x
    b = fk.sample(
        gaussian_velocity, x, "stochastic", generator=torch.Generator().manual_seed(7), **kw
    ).x
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, d)


def test_stochastic_refuses_deterministic_coupling_and_backward() -> None:
    flow = fk.Flow(fk.models.build({"name": "mlp", "dim": 2, "hidden": 8, "depth": 1}))
    flow.deterministic_coupling = True
    with pytest.raises(ValueError, match="deterministic coupling"):
        fk.sample(flow, torch.randn(3, 2), "stochastic", steps=3)
    with pytest.raises(ValueError, match="runs forwards"):
        fk.sample(
            gaussian_velocity,
            draw(3, 0),
            "stochastic",
            steps=3,
            t_start=1.0,
            t_end=0.0,
            path="rectified",
        )
    with pytest.raises(ValueError, match="eta must be a number in \\[0, 1\\]"):
        fk.sample(gaussian_velocity, draw(3, 0), "stochastic", steps=3, eta=2.0)


# --- conditioning mask -----------------------------------------------------------------------


class TokenModel(torch.nn.Module):
    """Mixes tokens (so frozen tokens influence moving ones) and records the times it gets."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mlp = fk.models.build({"name": "mlp", "dim": 3, "hidden": 16, "depth": 2})
        self.mlp.double()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.seen.append(t)
        return self.mlp(x + x.mean(1, keepdim=True), t)


def tokens() -> torch.Tensor:
    return torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(8), dtype=torch.float64)


@pytest.mark.parametrize("solver", ["euler", "heun", "dopri5"])
def test_zero_mask_equals_the_unmasked_solve(solver: str) -> None:
    model, x = TokenModel(), tokens()
    kw = {} if solver == "dopri5" else {"steps": 5}
    plain = fk.sample(model, x, solver, **kw).x
    masked = fk.sample(model, x, solver, conditioning_mask=torch.zeros(2, 4), **kw).x
    torch.testing.assert_close(masked, plain, rtol=0, atol=1e-12 if solver == "dopri5" else 0)
    assert model.seen[-1].shape == (2, 4)


def test_mask_one_freezes_tokens_and_model_sees_per_token_time() -> None:
    model, x = TokenModel(), tokens()
    mask = torch.zeros(2, 4)
    mask[0, 1] = 1.0
    mask[1, 3] = 1.0
    out = fk.sample(model, x, "heun", steps=4, conditioning_mask=mask).x
    frozen = mask.bool()
    torch.testing.assert_close(out[frozen], x[frozen], rtol=0, atol=0)
    assert not torch.allclose(out[~frozen], x[~frozen])
    for t in model.seen:
        assert t.shape == (2, 4) and (t[frozen] == 1.0).all()


def test_partial_mask_token_starts_moving_at_its_time() -> None:
    model, x = TokenModel(), tokens()
    mask = torch.zeros(2, 4, dtype=torch.float64)
    mask[:, 0] = 0.5
    out = fk.sample(model, x, "euler", steps=4, conditioning_mask=mask).x
    manual = x.clone()
    for t0 in (0.0, 0.25, 0.5, 0.75):
        tau = torch.maximum(torch.full((2, 4), t0, dtype=torch.float64), mask)
        step = manual + 0.25 * model(manual, tau)
        moving = (t0 + 1e-6 > mask)[..., None]
        manual = torch.where(moving, step, manual)
    torch.testing.assert_close(out, manual, rtol=0, atol=0)


def test_equal_masks_give_the_global_step_from_their_time() -> None:
    model, x = TokenModel(), tokens()
    mask = torch.full((2, 4), 0.5)
    masked = fk.sample(model, x, "heun", grid=[0.0, 0.25, 0.5, 0.75, 1.0], conditioning_mask=mask).x
    plain = fk.sample(model, x, "heun", grid=[0.5, 0.75, 1.0]).x
    torch.testing.assert_close(masked, plain, rtol=0, atol=1e-15)


def test_mask_validation() -> None:
    with pytest.raises(ValueError, match=r"shape \(B, N\) = \(2, 4\)"):
        fk.sample(TokenModel(), tokens(), "euler", steps=2, conditioning_mask=torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"values must lie in \[0, 1\]"):
        fk.sample(
            TokenModel(), tokens(), "euler", steps=2, conditioning_mask=torch.full((2, 4), 1.5)
        )
    with pytest.raises(ValueError, match="forward sampling"):
        fk.sample(
            TokenModel(),
            tokens(),
            "euler",
            steps=2,
            t_start=1.0,
            t_end=0.0,
            conditioning_mask=torch.zeros(2, 4),
        )
