"""Timestep spacings (uniform, logsnr, karras, beta) and the terminal stretch, against diffusers."""

from __future__ import annotations

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from scipy import stats

import flowkit as fk
from flowkit.checks import OptionError
from flowkit.registry import RegistryError
from flowkit.solvers.grid import make_grid
from flowkit.solvers.spacing import beta_cdf, beta_quantile, stretch_to_terminal


def diffusers_sigmas(n: int, **config) -> torch.Tensor:
    sched = FlowMatchEulerDiscreteScheduler(**config)
    sched.set_timesteps(n)
    return sched.sigmas.double()


@pytest.mark.parametrize("n", [4, 10, 25])
@pytest.mark.parametrize(("option", "spacing"), [("use_karras_sigmas", "karras"),
                                                 ("use_beta_sigmas", "beta")])
def test_spacing_matches_diffusers_flow_sigmas(n: int, option: str, spacing: str) -> None:
    """diffusers: n sigmas from its σ_max to σ_min, then 0; ours on the same span."""
    sigmas = diffusers_sigmas(n, **{option: True})
    lo, hi = 1.0 - float(sigmas[0]), 1.0 - float(sigmas[n - 1])
    ours = make_grid(steps=n - 1, t_start=lo, t_end=hi, spacing=spacing)
    torch.testing.assert_close(1.0 - ours, sigmas[:n], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("n", "terminal"), [(5, 0.1), (12, 0.05)])
def test_terminal_stretch_matches_diffusers_shift_terminal(n: int, terminal: float) -> None:
    sigmas = diffusers_sigmas(n, shift=3.0, shift_terminal=terminal)
    plain = diffusers_sigmas(n, shift=3.0)
    ours = stretch_to_terminal(1.0 - plain, 1.0 - terminal)
    torch.testing.assert_close(1.0 - ours, sigmas, rtol=0, atol=1e-6)
    grid = make_grid(steps=n, shift=3.0, terminal=1.0 - terminal)
    assert grid[-2] == pytest.approx(1.0 - terminal) and grid[0] == 0.0 and grid[-1] == 1.0


def test_beta_distribution_functions_match_scipy() -> None:
    x = torch.linspace(0.0, 1.0, 41, dtype=torch.float64)
    for a, b in [(0.6, 0.6), (2.0, 0.5), (0.3, 3.0)]:
        expected = torch.from_numpy(stats.beta.cdf(x.numpy(), a, b))
        torch.testing.assert_close(beta_cdf(x, a, b), expected, rtol=0, atol=1e-7)
        q = torch.from_numpy(stats.beta.ppf(x.numpy(), a, b))
        torch.testing.assert_close(beta_quantile(x, a, b), q, rtol=0, atol=1e-7)


@pytest.mark.parametrize("path", ["rectified", "cosine", "vp"])
def test_logsnr_spacing_is_uniform_in_the_paths_lambda(path: str) -> None:
    spec = {"name": "logsnr", "path": path, "lambda_min": -6.0, "lambda_max": 5.0}
    grid = make_grid(steps=8, spacing=spec)
    assert grid[0] == 0.0 and grid[-1] == 1.0
    lam = fk.paths.build(path).log_snr(grid[1:-1])
    lo = max(-6.0, float(fk.paths.build(path).log_snr(torch.tensor(0.0, dtype=torch.float64))))
    expected = lo + (5.0 - lo) * torch.arange(1, 8, dtype=torch.float64) / 8
    torch.testing.assert_close(lam, expected, rtol=0, atol=1e-8)


@pytest.mark.parametrize("spacing", ["uniform", "logsnr", "karras", "beta"])
def test_backward_grid_is_the_forward_grid_reversed(spacing: str) -> None:
    fwd = make_grid(steps=6, spacing=spacing, t_start=0.1, t_end=0.9)
    back = make_grid(steps=6, spacing=spacing, t_start=0.9, t_end=0.1)
    torch.testing.assert_close(back, fwd.flip(0), rtol=0, atol=1e-15)
    assert (fwd.diff() > 0).all()


def test_spacing_errors_name_the_argument() -> None:
    with pytest.raises(OptionError, match="spacing"):
        make_grid(step_size=0.1, spacing="karras")
    with pytest.raises(OptionError, match="terminal"):
        make_grid(grid=[0.0, 0.5, 1.0], terminal=0.9)
    with pytest.raises(OptionError, match="terminal"):
        make_grid(steps=4, terminal=1.0)
    with pytest.raises(RegistryError, match="karras"):
        make_grid(steps=4, spacing="karas")
    with pytest.raises(OptionError, match="rho"):
        make_grid(steps=4, spacing={"name": "karras", "rho": 0})
    with pytest.raises(OptionError, match="lambda_max"):
        make_grid(steps=4, spacing={"name": "logsnr", "lambda_min": 2, "lambda_max": 1})


def test_fk_sample_takes_the_spacing() -> None:
    sol = fk.sample(lambda x, t: -x, torch.ones(2, 2), "euler", steps=5, spacing="karras")
    torch.testing.assert_close(sol.times, make_grid(steps=5, spacing="karras"))
    sched = fk.solvers.FlowScheduler()
    sched.set_timesteps(5, spacing={"name": "beta", "alpha": 0.5, "beta": 0.7})
    torch.testing.assert_close(sched.grid, make_grid(steps=5, spacing={"name": "beta",
                                                                       "alpha": 0.5,
                                                                       "beta": 0.7}))
