"""Half-circle toys: ``moons`` (the default target), ``torchcfm_moons`` and ``circle``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from flowkit.data.toy import Toy2D, check_nonnegative, check_positive, random_sign, uniform
from flowkit.registry import DISTRIBUTIONS


def moon_points(theta: Tensor, upper: Tensor) -> Tensor:
    """Noiseless points of scikit-learn's ``make_moons`` geometry, shape ``(n, 2)``.

    The upper moon is ``(cos θ, sin θ)``, the lower one ``(1 − cos θ, 1/2 − sin θ)``, θ ∈ [0, π];
    ``upper`` is a boolean mask choosing the moon of each point.
    """
    cos, sin = torch.cos(theta), torch.sin(theta)
    x = torch.where(upper, cos, 1.0 - cos)
    y = torch.where(upper, sin, 0.5 - sin)
    return torch.stack([x, y], dim=-1)


def draw_moons(
    n: int, generator: torch.Generator | None, device: torch.device, stratified: bool = False
) -> Tensor:
    """Noiseless moons: each point on a moon chosen with probability ½, at θ ~ U[0, π].

    ``stratified=True`` draws the set like ``make_moons`` spreads it: exactly ``n // 2`` points
    per moon (an odd point's moon chosen at random) at jittered evenly spaced angles
    ``θ_k = π (k + u_k) / n_moon``, ``u_k ~ U[0, 1)``, in random order. Each point still has the
    moons distribution, but the set covers it more evenly, which lowers the sampling noise of
    metrics computed against it (e.g. the W2 floor between two sets of 2000 drops from about
    0.13–0.2 to about 0.055).
    """
    if not stratified:
        upper = random_sign(n, generator, device) > 0
        return moon_points(uniform(n, generator, device, 0.0, math.pi), upper)
    odd = torch.randint(0, 2, (1,), generator=generator, device=device) * (n % 2)
    n_upper = n // 2 + int(odd)
    jitter = torch.rand(n, generator=generator, device=device)
    counts = torch.tensor([n_upper, n - n_upper], device=device)
    upper = torch.arange(n, device=device) < n_upper
    index = torch.arange(n, device=device) - torch.where(upper, 0, n_upper)
    theta = math.pi * (index + jitter) / counts[(~upper).long()].clamp(min=1)
    order = torch.randperm(n, generator=generator, device=device)
    return moon_points(theta, upper)[order]


class Moons(Toy2D):
    """Two interleaving half circles of radius 1 (scikit-learn's make_moons), centred and scaled.

    ``x = scale · (m + noise·ε + shift)`` where ``m`` is a point of :func:`moon_points` (moon chosen
    with probability ½, θ ~ U[0, π]) and ``ε ~ N(0, I)``. The defaults (noise 0.05, shift
    −(0.5, 0.25), scale 2) centre the moons at the origin inside ``[−3, 3] × [−1.5, 1.5]``
    (plus noise). By default points are drawn i.i.d. (random moon, random angle); scikit-learn
    puts them on an evenly spaced grid of angles with an exact half split, which
    ``stratified=True`` mimics.

    Args:
        noise: standard deviation of the Gaussian noise, before scaling.
        shift: translation added before scaling.
        scale: factor applied last.
        stratified: spread each drawn set evenly over the moons like ``make_moons`` (see
            :func:`draw_moons`) instead of drawing points independently; use it for reference
            sets of metrics.

    Example:
        >>> import torch, flowkit as fk
        >>> x = fk.data.build("moons").sample(500, generator=torch.Generator().manual_seed(0))
        >>> bool(x.mean(0).abs().max() < 0.2)
        True
    """

    def __init__(
        self,
        noise: float = 0.05,
        shift: Sequence[float] = (-0.5, -0.25),
        scale: float = 2.0,
        stratified: bool = False,
    ) -> None:
        if not isinstance(stratified, bool):
            raise TypeError(f"stratified must be a bool; got {stratified!r}")
        self.stratified = stratified
        self.noise = check_nonnegative(noise, "noise")
        self.scale = check_positive(scale, "scale")
        if len(shift) != 2:
            raise ValueError(f"shift must be a pair of numbers; got {shift!r}")
        self.shift = torch.tensor([float(s) for s in shift])

    def draw(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        points = draw_moons(n, generator, device, self.stratified)
        eps = torch.randn(n, 2, generator=generator, device=device)
        return self.scale * (points + self.noise * eps + self.shift.to(device))

    def __repr__(self) -> str:
        return f"Moons(noise={self.noise}, scale={self.scale}, stratified={self.stratified})"


def torchdyn_moon_grid(n: int, device: torch.device | None = None) -> Tensor:
    """The noiseless points of torchdyn's ``generate_moons(n)``, in its order, shape ``(n, 2)``.

    ``n // 2`` points on the upper moon at ``θ = linspace(0, π, n // 2)``, then the other
    ``n − n // 2`` on the lower moon at ``θ = linspace(0, π, n − n // 2)`` (:func:`moon_points`).
    """
    n_out = n // 2
    theta = torch.cat(
        [
            torch.linspace(0.0, math.pi, n_out, device=device),
            torch.linspace(0.0, math.pi, n - n_out, device=device),
        ]
    )
    return moon_points(theta, torch.arange(n, device=device) < n_out)


class TorchCFMMoons(Toy2D):
    """The sets of ``torchcfm.utils.sample_moons``: ``3·(m + u·(1, 1)) − 1``.

    torchcfm calls torchdyn's ``generate_moons(n, noise=0.2)``, which is not an i.i.d. sample:
    the noiseless moons of a set of ``n`` are the fixed grid of :func:`torchdyn_moon_grid`
    (exactly half the points per moon at evenly spaced angles); each point then gets one uniform
    ``u ~ U[0, 0.2)`` added to both coordinates, and the set is scaled by 3 and shifted by −1.
    This reproduces that construction (the grid is what makes torchcfm's training batches
    low-variance, which side-by-side comparisons must share); the only difference is that the
    rows come in random order (torchdyn returns the upper moon first), so any subset of rows is
    still a fair sample.
    """

    def draw(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        grid = torchdyn_moon_grid(n, device)
        u = uniform(n, generator, device, 0.0, 0.2)
        order = torch.randperm(n, generator=generator, device=device)
        return 3.0 * (grid[order] + u.unsqueeze(-1)) - 1.0

    def __repr__(self) -> str:
        return "TorchCFMMoons()"


class Circle(Toy2D):
    """Two mirrored half circles forming a circle: ``(r cos θ, ±r sin θ) + noise·ε``.

    θ ~ U[0, π], the sign is ±1 with probability ½ and ``ε ~ N(0, I)`` (the ``CircleDataset`` of
    the usual rectified-flow tutorial, drawn i.i.d.).

    Args:
        radius: circle radius.
        noise: standard deviation of the Gaussian noise.
    """

    def __init__(self, radius: float = 1.0, noise: float = 0.1) -> None:
        self.radius = check_positive(radius, "radius")
        self.noise = check_nonnegative(noise, "noise")

    def draw(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        theta = uniform(n, generator, device, 0.0, math.pi)
        sign = random_sign(n, generator, device)
        points = self.radius * torch.stack([torch.cos(theta), sign * torch.sin(theta)], dim=-1)
        return points + self.noise * torch.randn(n, 2, generator=generator, device=device)

    def __repr__(self) -> str:
        return f"Circle(radius={self.radius}, noise={self.noise})"


@DISTRIBUTIONS.register("moons")
def moons(
    noise: float = 0.05,
    shift: Sequence[float] = (-0.5, -0.25),
    scale: float = 2.0,
    stratified: bool = False,
) -> Moons:
    """The default target: two interleaving half circles (make_moons), centred, scaled by 2."""
    return Moons(noise=noise, shift=shift, scale=scale, stratified=stratified)


@DISTRIBUTIONS.register("torchcfm_moons")
def torchcfm_moons() -> TorchCFMMoons:
    """Moons distributed exactly as torchcfm.utils.sample_moons (for side-by-side runs)."""
    return TorchCFMMoons()


@DISTRIBUTIONS.register("circle")
def circle(radius: float = 1.0, noise: float = 0.1) -> Circle:
    """Two mirrored half circles of radius 1 forming a circle, Gaussian noise 0.1."""
    return Circle(radius=radius, noise=noise)
