"""Pure Gaussian linear algebra shared by the Gaussian distributions and the oracle.

Everything works on Cholesky factors ``L`` (``C = L·Lᵀ``) in float64, batched over any leading
axes that broadcast.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

DTYPE = torch.float64


def cholesky(cov: Tensor, argument: str) -> Tensor:
    """Lower Cholesky factor of a batch of symmetric positive definite matrices.

    Raises:
        ValueError: naming ``argument`` if a matrix is not symmetric or not positive definite.
    """
    if not torch.allclose(cov, cov.transpose(-1, -2), rtol=1e-8, atol=1e-10):
        raise ValueError(f"{argument} must be symmetric; got {cov.tolist()}")
    chol, info = torch.linalg.cholesky_ex(cov)
    if (info != 0).any():
        raise ValueError(f"{argument} must be positive definite; got {cov.tolist()}")
    return chol


def mvn_log_density(diff: Tensor, chol: Tensor) -> tuple[Tensor, Tensor]:
    """Gaussian log density at ``diff = x − m`` and the precision-weighted residual.

    ``log N(x; m, C) = −½ (dᵀ C⁻¹ d + log det C + D log 2π)`` with ``d = x − m``, using the
    precision ``C⁻¹ = L⁻ᵀ L⁻¹`` from the Cholesky factor (one inverse per distinct factor, then
    broadcast products, which is faster than triangular solves against a broadcast batch) and
    ``log det C = 2 Σ log L_kk``.

    Args:
        diff: residuals ``x − m``, shape ``(..., D)``.
        chol: Cholesky factors ``L`` of ``C``, shape ``(..., D, D)`` broadcasting with ``diff``.

    Returns:
        ``(log_density, C⁻¹ d)`` of shapes ``(...)`` and ``(..., D)``.
    """
    dim = diff.shape[-1]
    precision_diff = (torch.cholesky_inverse(chol) * diff.unsqueeze(-2)).sum(-1)
    log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    maha = (diff * precision_diff).sum(-1)
    log_density = -0.5 * (maha + log_det + dim * math.log(2.0 * math.pi))
    return log_density, precision_diff


def as_vector(value: Any, dim: int, argument: str) -> Tensor:
    """A float64 vector of length ``dim`` from a scalar (repeated) or a sequence/tensor."""
    vec = torch.as_tensor(value, dtype=DTYPE)
    if vec.ndim == 0:
        vec = vec.expand(dim).clone()
    if vec.shape != (dim,):
        raise ValueError(f"{argument} must be a scalar or have length {dim}; got {value!r}")
    if not torch.isfinite(vec).all():
        raise ValueError(f"{argument} must be finite; got {value!r}")
    return vec


def as_covariance(cov: Any, std: Any, dim: int, argument: str) -> Tensor:
    """A ``(dim, dim)`` covariance from ``cov`` or ``std`` (at most one may be given).

    ``cov``: a scalar variance (isotropic), a length-``dim`` vector of variances (diagonal) or a
    full matrix. ``std``: a scalar or length-``dim`` vector of standard deviations. Neither: the
    identity.
    """
    if cov is not None and std is not None:
        raise ValueError(f"give at most one of {argument} and std; got both ({cov!r}, {std!r})")
    if std is not None:
        s = as_vector(std, dim, "std")
        if (s <= 0).any():
            raise ValueError(f"std must be positive; got {std!r}")
        return torch.diag(s**2)
    if cov is None:
        return torch.eye(dim, dtype=DTYPE)
    c = torch.as_tensor(cov, dtype=DTYPE)
    if c.ndim <= 1:
        return torch.diag(as_vector(c, dim, argument))
    if c.shape != (dim, dim):
        raise ValueError(
            f"{argument} must be a scalar, a vector of length {dim} or a {dim}x{dim} matrix; "
            f"got shape {tuple(c.shape)}"
        )
    return c


def infer_dim(value: Any, default: int) -> int:
    """Length of the last axis of ``value`` if it is not a scalar, else ``default``."""
    if value is None:
        return default
    shape = torch.as_tensor(value).shape
    return int(shape[-1]) if len(shape) else default
