"""Hypothesis strategies of the property suite: schedules, Gaussian problems, shapes, grids.

Everything random about an example is drawn here, by Hypothesis, so that the ``ci`` profile
(derandomized) always runs the same examples and ``thorough`` explores many more. Random numbers
drawn *inside* a test (samples) come from ``torch.Generator``s seeded with a drawn ``seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from hypothesis import settings
from hypothesis import strategies as st
from torch import Tensor

import flowkit.paths  # noqa: F401  (registers the schedules)
from flowkit.data.gaussian import GaussianMixture
from flowkit.paths.schedules import CustomSchedule, Schedule
from flowkit.registry import SCHEDULES

SCHEDULE_NAMES: list[str] = SCHEDULES.names()
ADAPTIVE_SOLVERS = ("dopri5", "bosh3", "adaptive_heun", "dopri8")
FIXED_ORDERS = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4, "rk4_38": 4}
ENDPOINT_GUARD = 1e-3
"""Schedules with infinite derivatives at an end (``finite_derivatives`` False) are integrated
on ``[δ, 1 − δ]`` with this δ: their velocity is ±∞·0 at the end itself."""


def scaled(fraction: float, minimum: int = 1) -> settings:
    """``settings`` with ``max_examples`` a fraction of the loaded profile's (ci 25, thorough 500).

    Expensive properties run fewer examples than the profile's budget, but still scale with it.
    """
    return settings(max_examples=max(minimum, math.ceil(settings.default.max_examples * fraction)))


def unit(lo: float = 0.0, hi: float = 1.0) -> st.SearchStrategy[float]:
    """Finite floats in ``[lo, hi]``."""
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


seeds = st.integers(0, 2**31 - 1)


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------- schedules


def _a_fn(t: Tensor, w: float, p: float, q: float) -> Tensor:
    """``a(t) = w·t^p + (1 − w)·sin(πt/2)^q``: increasing from a(0) = 0 to a(1) = 1."""
    return w * t**p + (1.0 - w) * torch.sin(0.5 * math.pi * t) ** q


def _b_fn(t: Tensor, w: float, p: float, q: float) -> Tensor:
    """``b(t) = w·(1 − t)^p + (1 − w)·cos(πt/2)^q``: decreasing from b(0) = 1 to b(1) = 0."""
    return w * (1.0 - t) ** p + (1.0 - w) * torch.sin(0.5 * math.pi * (1.0 - t)) ** q


@st.composite
def custom_schedules(draw: st.DrawFn) -> CustomSchedule:
    """Random monotone schedules through the ``custom`` schedule (derivatives by autograd).

    ``a = w·t^p + (1−w)·sin(πt/2)^q``, ``b = w'·(1−t)^p' + (1−w')·cos(πt/2)^q'`` with weights in
    [0.2, 1] and exponents ≥ 1 (finite derivatives): convex combinations of increasing
    (decreasing) curves through the endpoints, so a(0) = 0, a(1) = 1, b(0) = 1, b(1) = 0 and
    λ = log(a²/b²) increases.
    """
    params = [
        {"w": draw(unit(0.2, 1.0)), "p": draw(unit(1.0, 3.0)), "q": draw(unit(1.0, 2.0))}
        for _ in range(2)
    ]
    return CustomSchedule(a=partial(_a_fn, **params[0]), b=partial(_b_fn, **params[1]))


def _build(name: str, **kwargs: float) -> Schedule:
    return SCHEDULES.build({"name": name, **kwargs})


def schedules(name: str) -> st.SearchStrategy[Schedule]:
    """The registered schedule ``name`` with random (valid) parameters.

    An unknown, newly registered schedule is built with its defaults, so the suite covers it.
    """
    if name == "custom":
        return custom_schedules()
    if name == "polynomial":
        return st.builds(partial(_build, name), n=unit(0.5, 3.0))
    if name == "edm":
        return st.builds(partial(_build, name), p_mean=unit(-1.5, 0.5), p_std=unit(0.8, 1.6))
    if name == "vp":
        return st.builds(partial(_build, name), beta_min=unit(0.05, 0.5), beta_max=unit(8, 20))
    if name == "ldm_linear":
        return st.builds(
            partial(_build, name), beta_start=unit(5e-4, 1e-3), beta_end=unit(0.01, 0.015)
        )
    return st.just(_build(name))


any_schedule = st.sampled_from(SCHEDULE_NAMES).flatmap(schedules)
finite_schedule = any_schedule.filter(lambda s: s.finite_derivatives and s.reaches_endpoints)


def time_span(schedule: Schedule) -> tuple[float, float]:
    """``(0, 1)``, or ``(δ, 1 − δ)`` for schedules whose derivatives blow up at an end."""
    if schedule.finite_derivatives:
        return 0.0, 1.0
    return ENDPOINT_GUARD, 1.0 - ENDPOINT_GUARD


# ------------------------------------------------------------------------------ distributions


def _rotation(angles: list[float], dim: int) -> Tensor:
    """Product of Givens rotations, one angle per coordinate pair (i < j)."""
    q = torch.eye(dim, dtype=torch.float64)
    pairs = [(i, j) for i in range(dim) for j in range(i + 1, dim)]
    for (i, j), angle in zip(pairs, angles, strict=True):
        g = torch.eye(dim, dtype=torch.float64)
        c, s = math.cos(angle), math.sin(angle)
        g[i, i], g[j, j], g[i, j], g[j, i] = c, c, -s, s
        q = q @ g
    return q


@st.composite
def covariances(draw: st.DrawFn, dim: int, scale: tuple[float, float] = (0.1, 1.0)) -> Tensor:
    """SPD ``Q·diag(λ)·Qᵀ`` with condition number ≤ 4 (``λ = s·u``, ``u ∈ [1, 4]``)."""
    s = draw(unit(*scale))
    eig = torch.tensor([s * draw(unit(1.0, 4.0)) for _ in range(dim)], dtype=torch.float64)
    q = _rotation([draw(unit(0.0, math.pi)) for _ in range(dim * (dim - 1) // 2)], dim)
    cov = q @ torch.diag(eig) @ q.T
    return 0.5 * (cov + cov.T)


@st.composite
def mixtures(
    draw: st.DrawFn, dim: int, max_components: int = 3, spread: float = 3.0
) -> GaussianMixture:
    """Gaussian mixtures: K ≤ ``max_components`` components, means in ``[−spread, spread]^d``,
    weights in [0.2, 1] (normalised), covariances of bounded condition number."""
    k = draw(st.integers(1, max_components))
    means = [[draw(unit(-spread, spread)) for _ in range(dim)] for _ in range(k)]
    weights = [draw(unit(0.2, 1.0)) for _ in range(k)]
    covs = torch.stack([draw(covariances(dim)) for _ in range(k)])
    return GaussianMixture(means=means, weights=weights, covariances=covs)


@st.composite
def gaussians(draw: st.DrawFn, dim: int) -> GaussianMixture:
    """A single Gaussian with a random mean and covariance."""
    return draw(mixtures(dim, max_components=1))


@dataclass
class Problem:
    """A transport problem between two Gaussian mixtures in ``R^dim``."""

    source: GaussianMixture
    target: GaussianMixture

    @property
    def dim(self) -> int:
        return self.source.dim


@st.composite
def problems(
    draw: st.DrawFn,
    dims: tuple[int, int] = (1, 4),
    source_components: int = 2,
    target_components: int = 3,
    standard_source: bool = False,
) -> Problem:
    """Source and target mixtures of one dimension in ``dims`` (the source may be N(0, I))."""
    dim = draw(st.integers(*dims))
    if standard_source or draw(st.booleans()):
        source = GaussianMixture(means=[[0.0] * dim])
    else:
        source = draw(mixtures(dim, source_components))
    return Problem(source, draw(mixtures(dim, target_components)))


# --------------------------------------------------------------------------- shapes and grids

batch_shapes = st.tuples(st.integers(1, 6)).flatmap(
    lambda b: st.lists(st.integers(1, 3), max_size=2).map(lambda rest: (*b, *rest))
)


@st.composite
def grids(draw: st.DrawFn, max_steps: int = 8, lo: float = 0.0, hi: float = 1.0) -> list[float]:
    """A strictly increasing random grid from ``lo`` to ``hi`` (steps of relative size ≥ 0.2)."""
    k = draw(st.integers(1, max_steps))
    widths = torch.tensor([draw(unit(0.2, 1.0)) for _ in range(k)], dtype=torch.float64)
    inner = torch.cumsum(widths, 0) / widths.sum()
    return [lo, *(lo + (hi - lo) * inner[:-1]).tolist(), hi]
