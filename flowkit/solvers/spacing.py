"""Timestep spacings: where the ``steps + 1`` times of a generated grid lie, in flowkit time.

A spacing places ``t_0 = lo < t_1 < … < t_n = hi`` on an increasing span (a backward grid is the
forward grid of the same span reversed, so a backward solve visits the same times). With
``u_i = i/n`` and diffusers' ``σ = 1 − t``:

* ``uniform``: ``t_i = lo + u_i·(hi − lo)`` (the default).
* ``logsnr``: uniform in the path's log-SNR ``λ = log(a²/b²)`` between ``λ(lo)`` and ``λ(hi)``,
  each clipped into ``[lambda_min, lambda_max]`` where it is infinite (the ends stay ``lo`` and
  ``hi``): DPM-Solver's "logSNR" / diffusers' ``use_lu_lambdas`` spacing, for any path.
* ``karras``: ``σ_i = (σ_max^{1/ρ} + u_i·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ`` with
  ``σ_max = 1 − lo``, ``σ_min = 1 − hi`` (diffusers' ``use_karras_sigmas`` on flow sigmas, EDM's
  ρ = 7 by default): small steps near the data.
* ``beta``: ``t_i = lo + (hi − lo)·(1 − F⁻¹(1 − u_i))`` with ``F`` the Beta(α, β) distribution
  function (diffusers' ``use_beta_sigmas``, "Beta sampling is all you need", α = β = 0.6):
  small steps at both ends.

The SD3/Flux shift (``shift=``, ``mu=``) is applied after the spacing, then the ``terminal``
stretch (:func:`stretch_to_terminal`, diffusers' ``shift_terminal``).

Example:
    >>> from flowkit.solvers.grid import make_grid
    >>> make_grid(steps=4, spacing={"name": "karras", "rho": 2.0})
    tensor([0.0000, 0.4375, 0.7500, 0.9375, 1.0000], dtype=torch.float64)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from flowkit.checks import POSITIVE_REAL, OptionError, Real
from flowkit.registry import PATHS, SPACINGS


class Spacing(ABC):
    """Places the times of an increasing ``steps``-step grid on ``[lo, hi]`` ⊂ [0, 1]."""

    @abstractmethod
    def times(self, lo: float, hi: float, steps: int) -> Tensor:
        """``steps + 1`` increasing float64 times from exactly ``lo`` to exactly ``hi``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _ramp(steps: int) -> Tensor:
    return torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)


def _pinned(t: Tensor, lo: float, hi: float) -> Tensor:
    """``t`` with its ends set to exactly ``lo`` and ``hi``."""
    t = t.clamp(lo, hi)
    t[0], t[-1] = lo, hi
    return t


@SPACINGS.register("uniform")
class Uniform(Spacing):
    """Evenly spaced times (the default grid)."""

    def times(self, lo: float, hi: float, steps: int) -> Tensor:
        return torch.linspace(lo, hi, steps + 1, dtype=torch.float64)


@SPACINGS.register("logsnr")
class LogSNR(Spacing):
    """Uniform in the path's log-SNR λ (infinite ends clipped to [lambda_min, lambda_max]).

    Args:
        path: the path whose λ(t) is used (default rectified, λ = 2·logit t).
        lambda_min, lambda_max: where λ is infinite (or beyond), the range's ends (flowkit's
            λ = log(a²/b²); ±10 is t ≈ 0.0067 / 0.9933 on the rectified path).
    """

    def __init__(
        self, path: Any = "rectified", lambda_min: float = -10.0, lambda_max: float = 10.0
    ) -> None:
        self.path = PATHS.build(path)
        self.lambda_min = Real()(lambda_min, "lambda_min")
        self.lambda_max = Real()(lambda_max, "lambda_max")
        if not self.lambda_min < self.lambda_max:
            raise OptionError(
                "lambda_max", f"must exceed lambda_min={lambda_min}; got {lambda_max}"
            )

    def __repr__(self) -> str:
        lo, hi = self.lambda_min, self.lambda_max
        return f"LogSNR(path={self.path!r}, lambda_min={lo}, lambda_max={hi})"

    def times(self, lo: float, hi: float, steps: int) -> Tensor:
        ends = self.path.log_snr(torch.tensor([lo, hi], dtype=torch.float64))
        ends = ends.nan_to_num(posinf=math.inf, neginf=-math.inf)
        lam_lo, lam_hi = (float(v.clamp(self.lambda_min, self.lambda_max)) for v in ends)
        if not lam_lo < lam_hi:
            raise OptionError(
                "spacing",
                f"logsnr: λ spans [{lam_lo:g}, {lam_hi:g}] on [{lo}, {hi}] after clipping to "
                f"[{self.lambda_min}, {self.lambda_max}]; widen lambda_min/lambda_max",
            )
        lam = lam_lo + _ramp(steps) * (lam_hi - lam_lo)
        return _pinned(self.path.schedule.t_from_log_snr(lam).to(torch.float64), lo, hi)


@SPACINGS.register("karras")
class Karras(Spacing):
    """Karras (EDM) ρ-spacing of σ = 1 − t: small steps near the data.

    Args:
        rho: the exponent ρ > 0 (7: EDM; 1: uniform).
    """

    def __init__(self, rho: float = 7.0) -> None:
        self.rho = POSITIVE_REAL(rho, "rho")

    def __repr__(self) -> str:
        return f"Karras(rho={self.rho})"

    def times(self, lo: float, hi: float, steps: int) -> Tensor:
        top, bottom = (1.0 - lo) ** (1.0 / self.rho), (1.0 - hi) ** (1.0 / self.rho)
        sigma = (top + _ramp(steps) * (bottom - top)) ** self.rho
        return _pinned(1.0 - sigma, lo, hi)


@SPACINGS.register("beta")
class Beta(Spacing):
    """Beta(α, β) quantile spacing: small steps at both ends for α, β < 1.

    Args:
        alpha, beta: the Beta distribution's parameters, > 0 (default 0.6, 0.6).
    """

    def __init__(self, alpha: float = 0.6, beta: float = 0.6) -> None:
        self.alpha = POSITIVE_REAL(alpha, "alpha")
        self.beta = POSITIVE_REAL(beta, "beta")

    def __repr__(self) -> str:
        return f"Beta(alpha={self.alpha}, beta={self.beta})"

    def times(self, lo: float, hi: float, steps: int) -> Tensor:
        # 1 − F⁻¹(1 − u; α, β) = F⁻¹(u; β, α)
        return _pinned(lo + (hi - lo) * beta_quantile(_ramp(steps), self.beta, self.alpha), lo, hi)


def beta_cdf(x: Tensor, alpha: float, beta: float, nodes: int = 64) -> Tensor:
    """Regularised incomplete beta ``I_x(α, β)`` in float64 (no scipy needed).

    For ``x ≤ ½``, ``∫_0^x u^{α−1}(1 − u)^{β−1} du = (1/α)·∫_0^{x^α} (1 − w^{1/α})^{β−1} dw`` (the
    substitution ``u = w^{1/α}`` removes the singularity at 0; the integrand is smooth since
    ``u ≤ ½``), by Gauss–Legendre quadrature; for ``x > ½``, ``I_x(α, β) = 1 − I_{1−x}(β, α)``.
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    lower = x <= 0.5
    xs = torch.where(lower, x, 1.0 - x)
    pa, pb = (torch.tensor(v, dtype=torch.float64) for v in (alpha, beta))
    a, b = torch.where(lower, pa, pb), torch.where(lower, pb, pa)
    gl_x, gl_w = _gauss_legendre(nodes)
    top = xs.unsqueeze(-1) ** a.unsqueeze(-1)  # (…, 1)
    w = 0.5 * top * (gl_x + 1.0)
    integrand = (1.0 - w ** (1.0 / a.unsqueeze(-1))) ** (b.unsqueeze(-1) - 1.0)
    integral = (0.5 * top * (gl_w * integrand)).sum(-1) / a
    log_beta = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
    part = integral * torch.exp(-log_beta)
    return torch.where(lower, part, 1.0 - part)


def beta_quantile(q: Tensor, alpha: float, beta: float, iters: int = 60) -> Tensor:
    """Inverse of :func:`beta_cdf` by bisection on [0, 1] (float64; exact at q = 0 and 1)."""
    q = torch.as_tensor(q, dtype=torch.float64)
    lo, hi = torch.zeros_like(q), torch.ones_like(q)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        below = beta_cdf(mid, alpha, beta) < q
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    out = 0.5 * (lo + hi)
    return torch.where(q <= 0.0, 0.0, torch.where(q >= 1.0, 1.0, out))


def _gauss_legendre(n: int) -> tuple[Tensor, Tensor]:
    import numpy as np

    x, w = np.polynomial.legendre.leggauss(n)
    return torch.from_numpy(x), torch.from_numpy(w)


def stretch_to_terminal(grid: Tensor, terminal: float) -> Tensor:
    """Stretch an increasing grid so its last step starts at ``terminal`` (diffusers' /
    LTX-Video's ``shift_terminal``, with ``terminal = 1 − shift_terminal``).

    ``t_i ↦ t_0 + (t_i − t_0)·(terminal − t_0)/(t_{n−1} − t_0)`` for ``i < n``; ``t_n`` is kept.
    """
    t0, last = float(grid[0]), float(grid[-2])
    if len(grid) < 3:
        raise OptionError("terminal", "needs a grid of at least 2 steps")
    if not t0 < terminal < float(grid[-1]):
        raise OptionError(
            "terminal",
            f"must lie strictly inside the span ({t0}, {float(grid[-1])}); got {terminal}",
        )
    out = grid.clone()
    out[:-1] = t0 + (grid[:-1] - t0) * ((terminal - t0) / (last - t0))
    return out
