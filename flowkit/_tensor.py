"""Small tensor helpers shared across flowkit (time broadcasting and validation)."""

from __future__ import annotations

import torch
from torch import Tensor


def as_time(t: float | Tensor, like: Tensor) -> Tensor:
    """Return ``t`` as a float tensor on ``like``'s device and dtype.

    A Python float or 0-d tensor becomes a tensor of shape ``(B,)`` filled with that value, where
    ``B = like.shape[0]``; a tensor of shape ``(B,)`` or ``(B, N)`` is cast and returned.
    """
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        t = t.expand(like.shape[0])
    return t


def expand_time(t: Tensor, x: Tensor) -> Tensor:
    """Broadcast ``t`` of shape ``()``, ``(B,)`` or ``(B, N)`` against ``x`` of shape ``(B, ...)``.

    Trailing singleton axes are appended so that ``t`` lines up with the leading axes of ``x``:
    ``(B,)`` -> ``(B, 1, ..., 1)``; ``(B, N)`` -> ``(B, N, 1, ..., 1)`` (per-token times).

    Raises:
        ValueError: if the leading shape of ``t`` does not match ``x``.
    """
    if t.ndim == 0:
        return t
    if t.ndim > x.ndim or tuple(t.shape) != tuple(x.shape[: t.ndim]):
        raise ValueError(
            f"t of shape {tuple(t.shape)} does not broadcast against x of shape "
            f"{tuple(x.shape)}; t must have shape (), (B,) or (B, N) matching x's leading axes"
        )
    return t.reshape(*t.shape, *([1] * (x.ndim - t.ndim)))


def check_unit_interval(t: Tensor, name: str = "t") -> None:
    """Raise ``ValueError`` if any entry of ``t`` lies outside [0, 1] or is not finite."""
    if not torch.isfinite(t).all() or (t < 0).any() or (t > 1).any():
        bad = t[~(torch.isfinite(t) & (t >= 0) & (t <= 1))].flatten()[:3].tolist()
        raise ValueError(f"{name} must lie in [0, 1]; got values such as {bad}")
