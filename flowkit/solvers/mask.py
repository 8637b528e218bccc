"""Per-token conditioning mask (as in LTX-Video's rectified-flow scheduler), in flowkit time.

``x`` has shape ``(B, N, ...)`` (N tokens) and ``mask`` shape ``(B, N)`` with values in [0, 1]:
token i starts at its own time ``m_i`` (its noise level is that of time ``m_i``: 1 means a clean
conditioning token, 0 an ordinary noise token). Then

* the model receives per-token times ``τ_i = max(t, m_i)``, shape ``(B, N)``;
* token i moves only once the global time has reached it, ``t ≥ m_i`` (up to ``eps``): in
  diffusers/LTX terms (``σ = 1 − t``) it moves only while ``σ < 1 − m_i``, LTX's
  ``t − eps < 1 − mask`` with their t being our σ. Mask 1: never changed (not even at t = 1);
  mask 0: ordinary.

For fixed-step solvers the rule is applied per step at the step's start time; for adaptive
solvers the field itself is gated, ``dx_i/dt = 1[t ≥ m_i]·v_i(x, τ)``. An all-zero mask gives
exactly the unmasked step. Masks apply to forward sampling only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowkit._tensor import expand_time
from flowkit.solvers.base import Field


class TokenMask:
    """A validated conditioning mask for states of shape ``(B, N, ...)``.

    Args:
        mask: ``(B, N)`` values in [0, 1].
        x: the state it applies to (for shape, dtype and device).
        eps: tolerance of the comparison ``t + eps > m`` (LTX uses 1e-6).
    """

    def __init__(self, mask: Tensor, x: Tensor, eps: float = 1e-6) -> None:
        mask = torch.as_tensor(mask)
        if x.ndim < 2 or mask.shape != x.shape[:2]:
            raise ValueError(
                f"conditioning_mask must have shape (B, N) = {tuple(x.shape[:2])} for x of shape "
                f"{tuple(x.shape)} (B samples of N tokens); got {tuple(mask.shape)}"
            )
        mask = mask.to(dtype=x.dtype, device=x.device)
        if not torch.isfinite(mask).all() or (mask < 0).any() or (mask > 1).any():
            raise ValueError("conditioning_mask values must lie in [0, 1]")
        self.mask = mask
        self.eps = eps
        self.like = x

    def times(self, t: Tensor | float) -> Tensor:
        """Per-token model times ``τ = max(t, m)`` of shape ``(B, N)``; ``t`` scalar or ``(B,)``."""
        t = torch.as_tensor(t, dtype=self.mask.dtype, device=self.mask.device)
        return torch.maximum(t.reshape(-1, 1) if t.ndim else t, self.mask)

    def moving(self, t: Tensor | float) -> Tensor:
        """Boolean ``(B, N, 1, ...)``: which tokens move at global time ``t``: ``t + eps > m``,
        and never a token with ``m = 1`` (the gate would open at t = 1, where adaptive solvers
        evaluate on their last stage)."""
        t = torch.as_tensor(t, dtype=self.mask.dtype, device=self.mask.device)
        gate = ((t.reshape(-1, 1) if t.ndim else t) + self.eps > self.mask) & (self.mask < 1.0)
        return expand_time(gate, self.like)

    def field(self, f: Field) -> Field:
        """The gated field ``1[t ≥ m]·f(x, max(t, m))`` (t of shape (B,) from the solver)."""

        def masked(x: Tensor, t: Tensor) -> Tensor:
            return f(x, self.times(t)) * self.moving(t)

        return masked
