"""Log-likelihood of a flow through the instantaneous change of variables (exact or Hutchinson).

For ``dx/dt = v(x, t)`` the density obeys ``d log p_t(x_t)/dt = −div v(x_t, t)``. Integrating the
augmented state ``(x, ℓ)`` with ``dℓ/dt = div v`` from ``t = 1`` (``x``, ``ℓ = 0``) back to
``t = 0`` gives ``z0 = x_0`` and ``ℓ(0) = −∫_0^1 div v dt``, so::

    log p1(x) = log p0(z0) + ℓ(0) = log p0(z0) − ∫_0^1 div v(x_t, t) dt
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from flowkit.registry import did_you_mean
from flowkit.solvers.base import Field, as_field
from flowkit.solvers.sampling import sample

DIVERGENCES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


@dataclass
class LogLikelihood:
    """Result of :func:`log_likelihood`.

    Attributes:
        log_prob: ``log p1(x)`` per sample, shape ``(B,)``.
        z0: the source point ``x`` maps to (backward solve), shape of ``x``.
        nfe: evaluations of the augmented field (each costs one model call plus the divergence:
            D backward passes for ``exact``, k for ``hutchinson``).
        log_p0: ``log p0(z0)`` per sample.
    """

    log_prob: Tensor
    z0: Tensor
    nfe: int
    log_p0: Tensor


def gaussian_log_prob(z: Tensor) -> Tensor:
    """Standard normal log-density per sample: ``−½·||z||² − (D/2)·log(2π)``."""
    d = z[0].numel()
    return -0.5 * z.flatten(1).pow(2).sum(1) - 0.5 * d * math.log(2 * math.pi)


def exact_divergence(v: Tensor, x: Tensor) -> Tensor:
    """``div v = Σ_i ∂v_i/∂x_i`` per sample, one backward pass per coordinate (any shape)."""
    flat = v.flatten(1)
    div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(flat.shape[1]):
        (g,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=True)
        div = div + g.flatten(1)[:, i]
    return div


def hutchinson_divergence(v: Tensor, x: Tensor, probes: Tensor) -> Tensor:
    """``div v ≈ (1/k)·Σ_j ε_jᵀ (∂v/∂x) ε_j`` with fixed probes ``(k, B, ...)`` (unbiased)."""
    est = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for eps in probes:
        (g,) = torch.autograd.grad(v, x, grad_outputs=eps, retain_graph=True)
        est = est + (g * eps).flatten(1).sum(1)
    return est / probes.shape[0]


def augmented_field(
    f: Field, shape: tuple[int, ...], div: Callable[[Tensor, Tensor], Tensor]
) -> Field:
    """Field of the flat state ``y = [x.flatten(1), ℓ]``: ``dy/dt = [v, div v]``."""

    def g(y: Tensor, t: Tensor) -> Tensor:
        with torch.enable_grad():
            x = y[:, :-1].detach().reshape(shape).requires_grad_(True)
            v = f(x, t)
            d = div(v, x)
        return torch.cat([v.detach().flatten(1), d.detach().unsqueeze(1)], dim=1)

    return g


def log_likelihood(
    flow: Any,
    x: Tensor,
    log_p0: str | Callable[[Tensor], Tensor] = "gaussian",
    solver: str = "dopri5",
    divergence: str = "exact",
    probes: int = 1,
    probe: str = "rademacher",
    generator: torch.Generator | None = None,
    cond: dict[str, Any] | None = None,
    **solve_options: Any,
) -> LogLikelihood:
    """``log p1(x)`` under the flow, by solving the augmented ODE from t = 1 back to t = 0.

    ``log p1(x) = log p0(z0) − ∫_0^1 div v(x_t, t) dt``.

    Args:
        flow: a Flow or a velocity field ``f(x, t)``.
        x: data points ``(B, ...)``.
        log_p0: the source log-density: ``"gaussian"`` (standard normal) or a callable
            ``z -> (B,)``.
        solver: any registered ODE solver; fixed-step ones need ``steps=``/``step_size=``/``grid=``
            (a decreasing grid) in ``solve_options``; adaptive ones take ``rtol``/``atol``.
        divergence: ``"exact"`` (D backward passes per evaluation) or ``"hutchinson"``.
        probes: number k of Hutchinson probes, drawn once per solve and fixed along it.
        probe: ``"rademacher"`` (±1) or ``"gaussian"`` probes.
        generator: random numbers for the probes.
        cond: keyword conditions passed to the model.
        **solve_options: passed to :func:`flowkit.sample` (``steps``, ``rtol``, ``atol``, ...).
    """
    if divergence not in DIVERGENCES:
        raise ValueError(
            f"divergence must be one of {', '.join(DIVERGENCES)}; got {divergence!r}."
            + did_you_mean(str(divergence), list(DIVERGENCES))
        )
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {', '.join(PROBES)}; got {probe!r}")
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"probes must be a positive integer; got {probes!r}")
    if log_p0 == "gaussian":
        log_p0 = gaussian_log_prob
    elif not callable(log_p0):
        raise ValueError(f"log_p0 must be 'gaussian' or a callable z -> (B,); got {log_p0!r}")
    if divergence == "exact":
        div = exact_divergence
    else:
        shape = (probes, *x.shape)
        if probe == "rademacher":
            eps = torch.randint(0, 2, shape, generator=generator).to(x.dtype) * 2 - 1
        else:
            eps = torch.randn(shape, generator=generator, dtype=x.dtype)
        eps = eps.to(x.device)

        def div(v: Tensor, z: Tensor) -> Tensor:
            return hutchinson_divergence(v, z, eps)

    if "grid" not in solve_options:
        solve_options.setdefault("t_start", 1.0)
        solve_options.setdefault("t_end", 0.0)
    g = augmented_field(as_field(flow, cond), tuple(x.shape), div)
    y1 = torch.cat([x.detach().flatten(1), x.new_zeros(x.shape[0], 1)], dim=1)
    sol = sample(g, y1, solver=solver, **solve_options)
    z0 = sol.x[:, :-1].reshape(x.shape)
    lp0 = log_p0(z0)
    return LogLikelihood(log_prob=lp0 + sol.x[:, -1], z0=z0, nfe=sol.nfe, log_p0=lp0)
