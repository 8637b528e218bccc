"""2-D toy shapes of the flow literature: ``checkerboard``, ``spirals``, ``pinwheel``, ``scurve``.

Geometries follow FFJORD's toy data (checkerboard, 2spirals, pinwheel) and scikit-learn's
``make_s_curve``; every point is drawn i.i.d. with the given generator.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowkit.data.toy import Toy2D, check_nonnegative, random_sign, uniform
from flowkit.registry import DISTRIBUTIONS


class Checkerboard(Toy2D):
    """Uniform on the 8 dark squares of a 4×4 board of side-2 squares covering ``[−4, 4]²``.

    A square with lower-left corner ``2·(i, j)``, ``i, j ∈ {−2, …, 1}``, is dark when ``i + j``
    is even. The density is ``1/32`` on the dark squares and 0 elsewhere.
    """

    has_log_prob = True

    def draw(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        x1 = uniform(n, generator, device, -2.0, 2.0)
        x2 = uniform(n, generator, device, 0.0, 1.0)
        x2 = x2 - 2.0 * torch.randint(0, 2, (n,), generator=generator, device=device)
        x2 = x2 + torch.remainder(torch.floor(x1), 2.0)
        return 2.0 * torch.stack([x1, x2], dim=-1)

    def log_prob(self, x: Tensor) -> Tensor:
        """``log(1/32)`` on the dark squares, ``−inf`` elsewhere; shape ``(B,)``."""
        self.check_event(x)
        cell = torch.floor(x / 2.0)
        inside = ((cell >= -2) & (cell <= 1)).all(-1)
        dark = torch.remainder(cell.sum(-1), 2.0) == 0
        value = torch.full_like(x[:, 0], -math.log(32.0))
        return torch.where(inside & dark, value, torch.full_like(value, -math.inf))

    def __repr__(self) -> str:
        return "Checkerboard()"


class Spirals(Toy2D):
    """Two interleaved spirals (FFJORD's 2spirals).

    ``r = √u · 3π`` (u ~ U[0, 1)), ``p = (−r cos r + U[0, ½), r sin r + U[0, ½))``, the sign of
    ``p`` flipped with probability ½, then ``x = p/3 + noise·ε`` with ``ε ~ N(0, I)``.

    Args:
        noise: standard deviation of the Gaussian noise.
    """

    def __init__(self, noise: float = 0.1) -> None:
        self.noise = check_nonnegative(noise, "noise")

    def draw(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        r = torch.sqrt(torch.rand(n, generator=generator, device=device)) * 3.0 * math.pi
        px = -torch.cos(r) * r + uniform(n, generator, device, 0.0, 0.5)
        py = torch.sin(r) * r + uniform(n, generator, device, 0.0, 0.5)
        sign = random_sign(n, generator, device).unsqueeze(-1)
        points = sign * torch.stack([px, py], dim=-1) / 3.0
        return points + self.noise * torch.randn(n, 2, generator=generator, device=device)

    def __repr__(self) -> str:
        return f"Spirals(noise={self.noise})"


class Pinwheel(Toy2D):
    """FFJORD's pinwheel: ``arms`` curved Gaussian blades.

    For arm ``k``: ``f = (1 + radial_std·ε1, tangential_std·ε2)``, angle
    ``φ = 2πk/arms + rate·exp(f_1)``, and ``x = 2·(f_1 cos φ + f_2 sin φ, −f_1 sin φ + f_2 cos φ)``.

    Args:
        arms: number of blades.
        radial_std, tangential_std: blade widths along and across.
        rate: how strongly blades curl.
    """

    def __init__(
        self,
        arms: int = 5,
        radial_std: float = 0.3,
        tangential_std: float = 0.1,
        rate: float = 0.25,
    ) -> None:
        if isinstance(arms, bool) or not isinstance(arms, int) or arms < 1:
            raise ValueError(f"arms must be a positive integer; got {arms!r}")
        self.arms = arms
        self.radial_std = check_nonnegative(radial_std, "radial_std")
        self.tangential_std = check_nonnegative(tangential_std, "tangential_std")
        self.rate = float(rate)

    def draw(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        arm = torch.randint(0, self.arms, (n,), generator=generator, device=device)
        eps = torch.randn(n, 2, generator=generator, device=device)
        f1 = 1.0 + self.radial_std * eps[:, 0]
        f2 = self.tangential_std * eps[:, 1]
        phi = arm * (2.0 * math.pi / self.arms) + self.rate * torch.exp(f1)
        cos, sin = torch.cos(phi), torch.sin(phi)
        return 2.0 * torch.stack([f1 * cos + f2 * sin, -f1 * sin + f2 * cos], dim=-1)

    def __repr__(self) -> str:
        return f"Pinwheel(arms={self.arms})"


class SCurve(Toy2D):
    """The 2-D S curve of scikit-learn's ``make_s_curve`` (its x and z coordinates).

    ``s ~ U[−3π/2, 3π/2)``, ``x = (sin s, sign(s)·(cos s − 1)) + noise·ε`` with ``ε ~ N(0, I)``;
    the curve spans ``[−1, 1] × [−2, 2]``.

    Args:
        noise: standard deviation of the Gaussian noise.
    """

    def __init__(self, noise: float = 0.05) -> None:
        self.noise = check_nonnegative(noise, "noise")

    def draw(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        s = uniform(n, generator, device, -1.5 * math.pi, 1.5 * math.pi)
        points = torch.stack([torch.sin(s), torch.sign(s) * (torch.cos(s) - 1.0)], dim=-1)
        return points + self.noise * torch.randn(n, 2, generator=generator, device=device)

    def __repr__(self) -> str:
        return f"SCurve(noise={self.noise})"


@DISTRIBUTIONS.register("checkerboard")
def checkerboard() -> Checkerboard:
    """Uniform on the dark squares of a 4x4 checkerboard on [-4, 4]^2 (exact log_prob)."""
    return Checkerboard()


@DISTRIBUTIONS.register("spirals")
def spirals(noise: float = 0.1) -> Spirals:
    """Two interleaved spirals (FFJORD's 2spirals)."""
    return Spirals(noise=noise)


@DISTRIBUTIONS.register("pinwheel")
def pinwheel(
    arms: int = 5, radial_std: float = 0.3, tangential_std: float = 0.1, rate: float = 0.25
) -> Pinwheel:
    """Curved Gaussian blades (FFJORD's pinwheel)."""
    return Pinwheel(arms=arms, radial_std=radial_std, tangential_std=tangential_std, rate=rate)


@DISTRIBUTIONS.register("scurve")
def scurve(noise: float = 0.05) -> SCurve:
    """The 2-D S curve (scikit-learn's make_s_curve, x and z coordinates)."""
    return SCurve(noise=noise)
