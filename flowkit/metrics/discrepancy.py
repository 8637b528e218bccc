"""Kernel two-sample discrepancies: energy distance (with a permutation test) and RBF MMD."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from flowkit.checks import POSITIVE_INT, POSITIVE_REAL, Flag, Nullable
from flowkit.metrics.base import as_sample_pair, register_metric

CHUNK = 2048
EXACT = "donot_use_mm_for_euclid_dist"


def pair_sum(x: Tensor, y: Tensor, kernel: Callable[[Tensor], Tensor]) -> Tensor:
    """``Σ_ij kernel(||x_i − y_j||)``, computed in row blocks to bound memory."""
    return sum(kernel(torch.cdist(block, y, compute_mode=EXACT)).sum() for block in x.split(CHUNK))


def within_mean(x: Tensor, kernel: Callable[[Tensor], Tensor], unbiased: bool) -> Tensor:
    """Mean of ``kernel(||x_i − x_j||)`` over ``i ≠ j`` (unbiased) or over all ``i, j``."""
    n = x.shape[0]
    total = pair_sum(x, x, kernel)
    if not unbiased:
        return total / n**2
    if n < 2:
        raise ValueError(f"the unbiased estimate needs at least 2 samples per set; got {n}")
    diagonal = kernel(x.new_zeros(1)).squeeze() * n
    return (total - diagonal) / (n * (n - 1))


def two_sample_statistic(
    x: Tensor, y: Tensor, kernel: Callable[[Tensor], Tensor], unbiased: bool
) -> float:
    """``E k(X, X') + E k(Y, Y') − 2 E k(X, Y)`` for a kernel of the distance."""
    cross = pair_sum(x, y, kernel) / (x.shape[0] * y.shape[0])
    return float(within_mean(x, kernel, unbiased) + within_mean(y, kernel, unbiased) - 2 * cross)


def _negative_distance(d: Tensor) -> Tensor:
    return -d


@register_metric("energy_distance", inputs="samples", checks={"unbiased": Flag()})
def energy_distance(x: Any, y: Any, unbiased: bool = True) -> float:
    """Energy distance (Székely & Rizzo) between two sample sets.

    ``E(X, Y) = 2·E||X − Y|| − E||X − X'|| − E||Y − Y'||`` (samples flattened), zero iff the two
    distributions are equal. ``unbiased=True`` (default) uses U-statistics for the within-sample
    terms (means over ``i ≠ j``, can be slightly negative); ``unbiased=False`` the V-statistic
    (means over all pairs, diagonal included, always ≥ 0). Returns E itself; its square root is
    a metric (``scipy.stats.energy_distance`` returns the square root of the V-statistic).
    """
    xm, ym = as_sample_pair(x, y)
    return two_sample_statistic(xm, ym, _negative_distance, unbiased)


@register_metric("energy_test", inputs="samples", checks={"permutations": POSITIVE_INT})
def energy_test(
    x: Any, y: Any, permutations: int = 200, generator: torch.Generator | None = None
) -> float:
    """Permutation-test p-value of ``H0: x and y come from the same distribution``.

    The statistic is the unbiased :func:`energy_distance`; it is recomputed for ``permutations``
    random relabellings of the pooled sample (drawn with ``generator``) and
    ``p = (1 + #{E_perm ≥ E_obs}) / (1 + permutations)``, a valid p-value under H0 (uniform up to
    the 1/(1+permutations) grid). The pooled distance matrix is held in memory: meant for up to
    a few thousand samples.
    """
    xm, ym = as_sample_pair(x, y)
    n, m = xm.shape[0], ym.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"energy_test needs at least 2 samples per set; got {n} and {m}")
    pooled = torch.cat([xm, ym])
    dist = torch.cdist(pooled, pooled, compute_mode=EXACT)
    observed = _relabelled_energy(dist, torch.arange(n)[None], n, m)
    order = torch.rand(permutations, n + m, generator=generator).argsort(dim=1)
    exceed = sum(
        int((_relabelled_energy(dist, block[:, :n], n, m) >= observed).sum())
        for block in order.split(64)
    )
    return (1 + exceed) / (1 + permutations)


def _relabelled_energy(dist: Tensor, first: Tensor, n: int, m: int) -> Tensor:
    """Unbiased energy statistic for each labelling whose first group is ``first[p]`` ``(P, n)``.

    With label vectors ``l`` (1 on the first group): ``S_xx = lᵀDl``, ``S_xy = lᵀD(1 − l)``,
    ``S_yy = 1ᵀD1 − 2S_xy − S_xx``.
    """
    labels = torch.zeros(first.shape[0], n + m, dtype=dist.dtype)
    labels.scatter_(1, first, 1.0)
    dl = labels @ dist
    s_xx = (dl * labels).sum(1)
    s_xy = (dl * (1 - labels)).sum(1)
    s_yy = dist.sum() - 2 * s_xy - s_xx
    return 2 * s_xy / (n * m) - s_xx / (n * (n - 1)) - s_yy / (m * (m - 1))


def median_bandwidth(x: Tensor, y: Tensor, max_points: int = 1024) -> float:
    """Median heuristic: the median pairwise distance within the pooled sample.

    Uses at most the first ``max_points`` samples of each set and pairs ``i < j`` only; an even
    number of pairs takes the mean of the two middle distances.
    """
    pooled = torch.cat([x[:max_points], y[:max_points]])
    dist = torch.cdist(pooled, pooled, compute_mode=EXACT)
    upper = torch.triu_indices(pooled.shape[0], pooled.shape[0], offset=1)
    return float(torch.quantile(dist[upper[0], upper[1]], 0.5))


@register_metric("mmd", inputs="samples", checks={"bandwidth": Nullable(POSITIVE_REAL)})
def mmd(x: Any, y: Any, bandwidth: float | None = None) -> float:
    """Squared maximum mean discrepancy with a Gaussian (RBF) kernel, unbiased estimate.

    ``MMD² = E k(X, X') + E k(Y, Y') − 2 E k(X, Y)`` with ``k(x, y) = exp(−||x − y||² / (2σ²))``;
    the within-sample means run over ``i ≠ j`` (U-statistic, can be slightly negative). ``σ``
    is ``bandwidth`` or, when None, the median pairwise distance of the pooled samples
    (:func:`median_bandwidth`). Returns MMD², not MMD.
    """
    xm, ym = as_sample_pair(x, y)
    sigma = median_bandwidth(xm, ym) if bandwidth is None else float(bandwidth)
    if not sigma > 0:
        raise ValueError(f"bandwidth must be positive; got {sigma!r}")

    def rbf(d: Tensor) -> Tensor:
        return torch.exp(-(d**2) / (2 * sigma**2))

    return two_sample_statistic(xm, ym, rbf, unbiased=True)
