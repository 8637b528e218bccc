"""Checks of what :func:`flowkit.sample` is given and returns: the start state, the conditions,
the flow's dtype and device, and finite results.

A NaN in ``x0`` or a field that produces NaN would otherwise come back as NaN samples without a
word (or as torchdiffeq's ``underflow in dt`` assertion); the finiteness checks cost one
reduction each per solve and can be turned off with ``check_finite=False``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn


class NonFiniteSampleError(ValueError):
    """A solve started from, or produced, NaN or inf values."""


def count_non_finite(x: Tensor) -> int:
    """The number of samples (rows) of ``x`` with a NaN or inf entry."""
    return int((~torch.isfinite(x)).reshape(x.shape[0], -1).any(dim=1).sum())


def check_start(field: Any, x0: Any, cond: Mapping[str, Any] | None, check_finite: bool) -> None:
    """``x0`` a floating tensor ``(B, ...)`` (finite), conditions of batch ``B``, and, for a
    module field, ``x0`` on the module's device and in its dtype."""
    if not isinstance(x0, Tensor) or not x0.is_floating_point() or x0.ndim < 1:
        raise TypeError(f"x0 must be a floating-point tensor of shape (B, ...); got {x0!r:.80}")
    for key, value in (cond or {}).items():
        if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] != x0.shape[0]:
            raise ValueError(
                f"cond[{key!r}] has batch size {value.shape[0]}, x0 has {x0.shape[0]}; every "
                "condition needs one row per sample"
            )
    param = (
        next((p for p in field.parameters() if p.is_floating_point()), None)
        if isinstance(field, nn.Module)
        else None
    )
    if param is not None and (param.dtype, param.device) != (x0.dtype, x0.device):
        raise TypeError(
            f"x0 is {x0.dtype} on {x0.device}, the flow's parameters are {param.dtype} on "
            f"{param.device}; move one of them, e.g. x0.to(device, dtype) or flow.to(...)"
        )
    if check_finite and x0.shape[0] and (bad := count_non_finite(x0)):
        raise NonFiniteSampleError(
            f"x0 holds {bad} sample(s) with NaN or inf values (of {x0.shape[0]})"
        )


def check_result(x: Tensor, solver: str) -> None:
    """Raise if a solve produced non-finite samples (a diverged field or solver)."""
    if x.shape[0] and (bad := count_non_finite(x)):
        raise NonFiniteSampleError(
            f"{solver} produced {bad} non-finite sample(s) of {x.shape[0]} (the field or the "
            "solver diverged: try more steps, an adaptive solver, or check the model); pass "
            "check_finite=False to get them anyway"
        )
