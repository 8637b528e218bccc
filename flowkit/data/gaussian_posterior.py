"""Closed-form posterior of ``(x0, x1)`` given ``x_t = a·x1 + b·x0`` for Gaussian mixtures.

With independent ``x0 ~ Σ_i π_i N(μ0_i, Σ0_i)`` and ``x1 ~ Σ_j ρ_j N(μ1_j, Σ1_j)``, given the
component pair ``(i, j)`` the point ``x_t`` is Gaussian::

    x_t | i, j ~ N(m_ij, C_ij),   m_ij = a·μ1_j + b·μ0_i,   C_ij = a²·Σ1_j + b²·Σ0_i,

and ``(x0, x1, x_t)`` are jointly Gaussian with ``Cov(x1, x_t) = a·Σ1_j`` and
``Cov(x0, x_t) = b·Σ0_i``. Hence, with ``s_ij = C_ij⁻¹ (x − m_ij)``::

    w_ij(x)  = π_i ρ_j N(x; m_ij, C_ij) / p_t(x)           (posterior over pairs)
    p_t(x)   = Σ_ij π_i ρ_j N(x; m_ij, C_ij)
    E[x1|x]  = Σ_ij w_ij (μ1_j + a·Σ1_j s_ij)
    E[x0|x]  = Σ_ij w_ij (μ0_i + b·Σ0_i s_ij)
    ∇log p_t = −Σ_ij w_ij s_ij

and the marginal velocity is ``E[a'·x1 + b'·x0 | x] = a'·E[x1|x] + b'·E[x0|x]``, which equals
``m_u + C_ux C_x⁻¹ (x − m_x)`` per pair with ``C_ux = a'a·Σ1_j + b'b·Σ0_i``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import einsum, rearrange, reduce
from torch import Tensor

from flowkit.data.gaussian import GaussianMixture
from flowkit.data.gaussian_math import mvn_log_density


@dataclass
class PairPosterior:
    """Posterior summaries at points ``x`` (all float64).

    Attributes:
        x0: ``E[x0 | x_t = x]``, shape ``(B, d)``.
        x1: ``E[x1 | x_t = x]``, shape ``(B, d)``.
        score: ``∇_x log p_t(x)``, shape ``(B, d)``.
        log_prob: ``log p_t(x)``, shape ``(B,)``.
        weights: posterior over component pairs ``w_ij``, shape ``(B, K0, K1)``.
    """

    x0: Tensor
    x1: Tensor
    score: Tensor
    log_prob: Tensor
    weights: Tensor


def pair_posterior(
    x: Tensor, a: Tensor, b: Tensor, source: GaussianMixture, target: GaussianMixture
) -> PairPosterior:
    """Posterior of ``(x0, x1)`` given ``x_t = x`` (formulas in the module docstring).

    Args:
        x: points, float64 of shape ``(B, d)``.
        a, b: path coefficients, float64 of shape ``(U,)`` with ``U = 1`` (one time for all
            points: one Cholesky factorisation per pair) or ``U = B`` (a time per point).
        source, target: the two Gaussian mixtures.

    Raises:
        ValueError: if some ``C_ij = a²Σ1_j + b²Σ0_i`` is not positive definite (e.g. a = b = 0).
    """
    dev = x.device
    mu0, cov0, pi0 = source.means.to(dev), source.covariances.to(dev), source.weights.to(dev)
    mu1, cov1, pi1 = target.means.to(dev), target.covariances.to(dev), target.weights.to(dev)
    a4, b4 = rearrange(a, "u -> u 1 1 1"), rearrange(b, "u -> u 1 1 1")
    means = a4 * mu1[None, None] + b4 * mu0[None, :, None]
    covs = a4[..., None] ** 2 * cov1[None, None] + b4[..., None] ** 2 * cov0[None, :, None]
    chol, info = torch.linalg.cholesky_ex(covs)
    bad = (info != 0).flatten(1).any(1)
    if bad.any():
        raise ValueError(
            "the marginal covariance a²·Σ1 + b²·Σ0 is not positive definite at a = "
            f"{a[bad][:3].tolist()}, b = {b[bad][:3].tolist()}; the source and target "
            "covariances must be positive definite where a or b vanish"
        )
    log_normal, s = mvn_log_density(x[:, None, None, :] - means, chol)
    log_joint = log_normal + torch.log(pi0)[:, None] + torch.log(pi1)[None, :]
    log_prob = torch.logsumexp(rearrange(log_joint, "b i j -> b (i j)"), dim=-1)
    weights = torch.exp(log_joint - log_prob[:, None, None])
    ws = weights[..., None] * s
    a2, b2 = rearrange(a, "u -> u 1"), rearrange(b, "u -> u 1")
    x1 = einsum(weights, mu1, "b i j, j d -> b d") + a2 * einsum(
        cov1, reduce(ws, "b i j d -> b j d", "sum"), "j d e, b j e -> b d"
    )
    x0 = einsum(weights, mu0, "b i j, i d -> b d") + b2 * einsum(
        cov0, reduce(ws, "b i j d -> b i d", "sum"), "i d e, b i e -> b d"
    )
    score = -reduce(ws, "b i j d -> b d", "sum")
    return PairPosterior(x0=x0, x1=x1, score=score, log_prob=log_prob, weights=weights)
