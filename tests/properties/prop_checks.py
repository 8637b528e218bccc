"""Statistical assertions of the property suite, with tolerances derived from standard errors.

Moments and mean log-densities are compared with z-tests at ``Z_MAX = 5`` standard errors: a
two-sided normal tail of 5.7e-7 per comparison, so even the ``thorough`` profile (thousands of
comparisons) expects no false alarm, while any bug that moves a moment by more than a few
percent of a standard deviation fails (at n = 1000 one standard error is 3 % of a standard
deviation; 5 of them are 16 %). Sample sizes are large enough (n ≥ 500) for the CLT behind the
z-tests: Gaussian-mixture moments of every order exist.

The omnibus check is the energy two-sample permutation test (:func:`flowkit.metrics.energy_test`)
against fresh samples of the reference distribution, run sequentially (Besag & Clifford 1991):
blocks of permutations until ``STOP_EXCEED`` of them reach the observed statistic (the p-value is
then at least ``STOP_EXCEED / permutations ≥ 10/9999``, clearly not significant), at most
``MAX_PERMUTATIONS``. The test fails iff no permutation out of 9999 reaches the observed
statistic: significance ``ALPHA = 1/(1 + 9999) = 1e-4``. Under the null the sequential rule
stops after about ``10·(1 + ln 1000) ≈ 80`` permutations on average, so it is cheap; only a real
discrepancy pays for all 9999.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

import flowkit as fk

Z_MAX = 5.0
BLOCK = 99
STOP_EXCEED = 10
MAX_PERMUTATIONS = 9999
ALPHA = 1.0 / (1 + MAX_PERMUTATIONS)


def assert_mean(x: Tensor, mean: Tensor, cov: Tensor, what: str) -> None:
    """Sample mean of ``x`` (n, d) vs the exact ``mean``: ``|x̄_i − μ_i| ≤ Z_MAX·sqrt(Σ_ii/n)``.

    The standard error of a sample mean is exact here: ``Var(x̄_i) = Σ_ii / n``.
    """
    n = x.shape[0]
    se = (cov.diagonal() / n).sqrt()
    z = (x.mean(0) - mean).abs() / se
    assert bool((z <= Z_MAX).all()), f"{what}: mean off by {z.max():.1f} standard errors"


def assert_covariance(x: Tensor, cov: Tensor, what: str) -> None:
    """Sample covariance vs the exact ``cov``, entrywise, at ``Z_MAX`` standard errors.

    ``S_ij`` is the mean of ``y_ij = (x_i − x̄_i)(x_j − x̄_j)``; its standard error is
    ``sd(y_ij)/sqrt(n)`` (estimated from the sample: it involves fourth moments), floored at the
    Gaussian value ``sqrt((Σ_ii·Σ_jj + Σ_ij²)/n)`` of the exact covariance so that a collapsed
    sample (all points equal) cannot shrink its own tolerance.
    """
    n = x.shape[0]
    centred = x - x.mean(0)
    products = centred[:, :, None] * centred[:, None, :]
    sample = products.mean(0)
    gaussian_se = ((torch.outer(cov.diagonal(), cov.diagonal()) + cov**2) / n).sqrt()
    se = torch.maximum(products.std(0) / math.sqrt(n), gaussian_se)
    z = (sample - cov).abs() / se
    assert bool((z <= Z_MAX).all()), f"{what}: covariance off by {z.max():.1f} standard errors"


def assert_same_mean(x: Tensor, y: Tensor, what: str) -> None:
    """Two-sample z-test of equal means for scalars ``x`` (n,) and ``y`` (m,).

    ``z = (x̄ − ȳ) / sqrt(s_x²/n + s_y²/m)``, independent samples.
    """
    se = (x.var() / x.numel() + y.var() / y.numel()).sqrt()
    z = float((x.mean() - y.mean()).abs() / se)
    assert z <= Z_MAX, f"{what}: means differ by {z:.1f} standard errors"


def energy_p_value(x: Tensor, y: Tensor, seed: int) -> float:
    """Sequential permutation p-value of the energy two-sample test (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    done = exceed = 0
    while done < MAX_PERMUTATIONS and exceed < STOP_EXCEED:
        block = min(BLOCK, MAX_PERMUTATIONS - done)
        p = fk.metrics.energy_test(x, y, permutations=block, generator=g)
        exceed += round(p * (block + 1)) - 1
        done += block
    if exceed >= STOP_EXCEED:
        return exceed / done
    return (1 + exceed) / (1 + done)


def assert_energy_test(x: Tensor, y: Tensor, seed: int, what: str) -> None:
    """Energy two-sample test of ``x`` against a fresh reference sample ``y`` at level ALPHA."""
    p = energy_p_value(x, y, seed)
    assert p > ALPHA, f"{what}: energy two-sample test rejects (p = {p:.2g} ≤ {ALPHA:g})"


def assert_matches(
    x: Tensor, mean: Tensor, cov: Tensor, reference: Tensor, seed: int, what: str
) -> None:
    """Moments of ``x`` equal (``mean``, ``cov``) and ``x`` passes the energy test vs ``reference``.

    The energy test uses the first ``len(reference)`` points of ``x``.
    """
    assert_mean(x, mean, cov, what)
    assert_covariance(x, cov, what)
    assert_energy_test(x[: reference.shape[0]], reference, seed, what)
