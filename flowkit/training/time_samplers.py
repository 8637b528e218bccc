"""Training-time distributions ``t ~ π(t)`` on [0, 1], registered in ``TIME_SAMPLERS``.

Every sampler has ``sample(n, generator) -> (n,)`` and its exact ``density(t)``. Times follow the
flowkit convention (t = 0 source/noise, t = 1 data). ``mode``, ``cosmap`` and ``u_shaped`` are
symmetric about t = 1/2, so they are the same in the SD3 convention (``sigma = 1 − t``);
``logit_normal`` with ``m ≠ 0`` is not: see :class:`LogitNormal`.

Example:
    >>> import torch
    >>> import flowkit as fk
    >>> ts = fk.training.build({"name": "logit_normal", "m": 0.0, "s": 1.0})
    >>> t = ts.sample(1024, generator=torch.Generator().manual_seed(0))
    >>> t.shape
    torch.Size([1024])
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from flowkit.data.base import generator_device
from flowkit.registry import TIME_SAMPLERS

MODE_SCALE_MAX = 2.0 / (math.pi - 2.0)


def check_count(n: int) -> int:
    """Return ``n`` if it is a non-negative integer, else raise ``ValueError``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    return n


def uniform_draw(n: int, generator: torch.Generator | None) -> Tensor:
    """``n`` draws of U[0, 1) (float32) on the generator's device."""
    return torch.rand(check_count(n), generator=generator, device=generator_device(generator))


def inside_unit_interval(t: Tensor, density: Tensor) -> Tensor:
    """``density`` where ``0 ≤ t ≤ 1`` and 0 elsewhere (the support of every time sampler)."""
    return torch.where((t >= 0) & (t <= 1), density, torch.zeros_like(density))


def check_positive(value: float, name: str) -> float:
    """Return ``value`` as a float if it is a finite positive number, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)


class TimeSampler(ABC):
    """Base class: a distribution of training times on [0, 1].

    Attributes:
        in_unit_interval: True when every draw lies in [0, 1] by construction (flowkit's own
            samplers); the trainer then does not check the times it draws (a check is a host
            synchronisation on an accelerator). A subclass that defines its own ``sample`` is
            checked unless it sets this itself.
    """

    in_unit_interval: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "sample" in vars(cls) and "in_unit_interval" not in vars(cls):
            cls.in_unit_interval = False

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` times, a float32 tensor of shape ``(n,)`` on the generator's device."""

    @abstractmethod
    def density(self, t: Tensor) -> Tensor:
        """Probability density ``π(t)`` (0 outside [0, 1]), elementwise in ``t``'s dtype."""


@TIME_SAMPLERS.register("uniform")
@dataclass(frozen=True)
class Uniform(TimeSampler):
    """Uniform times ``t ~ U[0, 1)``: ``π(t) = 1``."""

    in_unit_interval = True

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return uniform_draw(n, generator)

    def density(self, t: Tensor) -> Tensor:
        return inside_unit_interval(t, torch.ones_like(t))


@TIME_SAMPLERS.register("logit_normal")
@dataclass(frozen=True)
class LogitNormal(TimeSampler):
    """Logit-normal times (SD3): ``t = sigmoid(m + s·z)``, ``z ~ N(0, 1)``.

    ``π(t) = 1 / (s·√(2π)) · 1 / (t·(1 − t)) · exp(−(logit(t) − m)² / (2s²))``.

    ``m > 0`` puts more times near the data (t = 1). The SD3 paper writes the same density on its
    own time ``sigma = 1 − t``, so its ``m`` is ``−m`` here; diffusers' ``logit_mean`` (which
    indexes a schedule running from noise to data) has the sign used here.

    Args:
        m: location of the underlying normal.
        s: scale of the underlying normal (> 0).
    """

    in_unit_interval = True

    m: float = 0.0
    s: float = 1.0

    def __post_init__(self) -> None:
        if (
            isinstance(self.m, bool)
            or not isinstance(self.m, int | float)
            or not math.isfinite(self.m)
        ):
            raise ValueError(f"m must be a finite number, got {self.m!r}")
        check_positive(self.s, "s")

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(check_count(n), generator=generator, device=generator_device(generator))
        return torch.sigmoid(self.m + self.s * z)

    def density(self, t: Tensor) -> Tensor:
        inner = t.clamp(torch.finfo(t.dtype).tiny, 1 - torch.finfo(t.dtype).eps)
        z = (torch.logit(inner) - self.m) / self.s
        value = torch.exp(-0.5 * z**2) / (self.s * math.sqrt(2 * math.pi) * inner * (1 - inner))
        interior = (t > 0) & (t < 1)
        return torch.where(interior, value, torch.zeros_like(value))


@TIME_SAMPLERS.register("mode")
@dataclass(frozen=True)
class Mode(TimeSampler):
    """Mode sampling with heavy tails (SD3): ``t = g(u) = (1 + s)·u − s·sin²(πu/2)``, u ~ U[0, 1).

    ``π(t) = 1 / g'(g⁻¹(t))`` with ``g'(u) = 1 + s − s·(π/2)·sin(πu)``; ``g⁻¹`` is found by
    bisection (``g`` is increasing). This is SD3's ``f_mode(u) = 1 − u − s·(cos²(πu/2) − 1 + u)``
    written in flowkit time (``g(u) = 1 − f_mode(u)``; the law is symmetric about 1/2, so both
    conventions give the same distribution). ``s > 0`` favours the middle of [0, 1], ``s < 0``
    the ends, ``s = 0`` is uniform.

    Args:
        s: scale in ``[−1, 2/(π − 2)]`` (where ``g`` is monotone); SD3 uses 1.29.
    """

    in_unit_interval = True

    s: float = 1.29

    def __post_init__(self) -> None:
        if (
            isinstance(self.s, bool)
            or not isinstance(self.s, int | float)
            or not -1.0 <= self.s <= MODE_SCALE_MAX
        ):
            raise ValueError(
                f"s must be a number in [-1, 2/(pi - 2) = {MODE_SCALE_MAX:.4f}], got {self.s!r}"
            )

    def transform(self, u: Tensor) -> Tensor:
        """``g(u) = (1 + s)·u − s·sin²(πu/2)``."""
        return (1 + self.s) * u - self.s * torch.sin(0.5 * math.pi * u) ** 2

    def inverse(self, t: Tensor, iterations: int = 64) -> Tensor:
        """``g⁻¹(t)`` for ``t`` in [0, 1] by bisection (64 halvings reach float64 precision)."""
        lo, hi = torch.zeros_like(t), torch.ones_like(t)
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            below = self.transform(mid) < t
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.transform(uniform_draw(n, generator)).clamp_(0.0, 1.0)  # rounding at 0, 1

    def density(self, t: Tensor) -> Tensor:
        u = self.inverse(t.clamp(0, 1))
        slope = 1 + self.s - self.s * 0.5 * math.pi * torch.sin(math.pi * u)
        return inside_unit_interval(t, 1 / slope)


@TIME_SAMPLERS.register("cosmap")
@dataclass(frozen=True)
class CosMap(TimeSampler):
    """CosMap times (SD3): ``t = 1 − 1 / (tan(πu/2) + 1)``, u ~ U[0, 1).

    ``π(t) = 2 / (π·(1 − 2t + 2t²))``; symmetric about 1/2. Computed as
    ``t = sin(πu/2) / (sin(πu/2) + cos(πu/2))`` to avoid the pole of tan at u = 1.
    """

    in_unit_interval = True

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        half_angle = 0.5 * math.pi * uniform_draw(n, generator)
        sin, cos = torch.sin(half_angle), torch.cos(half_angle)
        return sin / (sin + cos)

    def density(self, t: Tensor) -> Tensor:
        return inside_unit_interval(t, 2 / (math.pi * (1 - 2 * t + 2 * t**2)))


@TIME_SAMPLERS.register("u_shaped")
@dataclass(frozen=True)
class UShaped(TimeSampler):
    """U-shaped times of 2-rectified flow++ (Lee et al., 2024): ``π(t) ∝ e^{at} + e^{a(1−t)}``.

    Normalised: ``π(t) = a·cosh(a(t − ½)) / (2·sinh(a/2))``, an equal mixture of the truncated
    exponential ``a·e^{at} / (e^a − 1)`` and its mirror image, heaviest at both ends. Sampled by
    the inverse CDF ``t = ½ + asinh((2u − 1)·sinh(a/2)) / a``, u ~ U[0, 1).

    Args:
        a: steepness (> 0); the paper uses 4. ``a → 0`` approaches the uniform law.
    """

    in_unit_interval = True

    a: float = 4.0

    def __post_init__(self) -> None:
        check_positive(self.a, "a")

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        u = uniform_draw(n, generator).double()
        t = 0.5 + torch.asinh((2 * u - 1) * math.sinh(0.5 * self.a)) / self.a
        return t.float().clamp_(0.0, 1.0)  # asinh(−sinh(a/2)) may round below −a/2

    def density(self, t: Tensor) -> Tensor:
        value = self.a * torch.cosh(self.a * (t - 0.5)) / (2 * math.sinh(0.5 * self.a))
        return inside_unit_interval(t, value)
