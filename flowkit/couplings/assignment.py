"""Exact and entropic assignment of two equal-size batches (the minibatch OT plans)."""

from __future__ import annotations

import numpy as np
import ot
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor


def squared_distances(x0: Tensor, x1: Tensor) -> Tensor:
    """Cost matrix ``C[i, j] = ||x0_i − x1_j||²`` over flattened samples, shape ``(B, B)``."""
    return torch.cdist(x0.flatten(1).double(), x1.flatten(1).double()) ** 2


def exact_assignment(cost: Tensor) -> Tensor:
    """The permutation ``σ`` minimising ``Σ_j C[σ(j), j]`` (Hungarian / Jonker–Volgenant).

    Returns ``σ`` of shape ``(B,)``: target ``j`` is paired with source ``σ(j)``. With uniform
    weights the optimal plan of ``ot.emd`` is ``P = 1/B`` on these pairs (a vertex of the Birkhoff
    polytope), so this is exact minibatch OT, and every source sample is used exactly once.
    """
    rows, cols = linear_sum_assignment(cost.T.cpu().numpy())
    perm = np.empty_like(cols)
    perm[rows] = cols
    return torch.from_numpy(perm)


def sinkhorn_assignment(
    cost: Tensor, reg: float, generator: torch.Generator | None, num_iter: int = 1000
) -> Tensor:
    """A random permutation drawn from the entropic (Sinkhorn) plan by perturb-and-MAP.

    The plan ``P = argmin <P, C/ĉ> − reg·H(P)`` (cost normalised by its mean ``ĉ`` so ``reg`` is
    scale free) is turned into a permutation ``σ = argmax_σ Σ_j (log P[σ(j), j] + G_j)`` with
    i.i.d. Gumbel noise ``G``: a permutation-consistent coupling (each source sample used once)
    that concentrates on the exact assignment as ``reg → 0`` and becomes a uniformly random
    permutation (the independent coupling) as ``reg → ∞``.
    """
    c = cost / cost.mean().clamp_min(1e-12)
    n = c.shape[0]
    w = torch.full((n,), 1.0 / n, dtype=c.dtype)
    plan = ot.sinkhorn(w, w, c, reg, method="sinkhorn_log", numItermax=num_iter, stopThr=1e-6)
    u = torch.rand(c.shape, generator=generator, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    gumbel = -torch.log(-torch.log(u))
    score = torch.log(plan.clamp_min(1e-300)) + gumbel
    return exact_assignment(-score)
