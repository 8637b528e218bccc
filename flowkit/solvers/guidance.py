"""Classifier-free guidance as a velocity field (what ``fk.sample(..., guidance=w)`` integrates)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from flowkit._tensor import expand_time
from flowkit.checks import OptionError, Real, shown
from flowkit.conditions import null_condition, num_classes_of
from flowkit.solvers.base import as_field

SCALE = Real()


def guided_velocity(v_cond: Tensor, v_null: Tensor, scale: float | Tensor) -> Tensor:
    """``v = v_null + w·(v_cond − v_null)``: w = 1 the conditional field, w = 0 the
    unconditional one, w > 1 extrapolates away from the unconditional prediction (one fused
    ``torch.lerp``, exact at w = 0 and w = 1)."""
    return torch.lerp(v_null, v_cond, scale)


def check_interval(interval: Any, name: str = "guidance_interval") -> tuple[float, float] | None:
    """None, or two times ``0 <= t_lo <= t_hi <= 1`` (returned as a float pair)."""
    if interval is None:
        return None
    if not isinstance(interval, Sequence) or isinstance(interval, str) or len(interval) != 2:
        raise OptionError(name, f"must be two times [t_lo, t_hi] in [0, 1], got {shown(interval)}")
    lo, hi = (Real(0, 1)(v, f"{name}[{i}]") for i, v in enumerate(interval))
    if lo > hi:
        raise OptionError(name, f"must have t_lo <= t_hi, got {shown(list(interval))}")
    return lo, hi


class CFGuidance:
    """Classifier-free guidance: ``v = v_null + w·(v_cond − v_null)``.

    The combination is made on velocities; since converting an epsilon/x1 prediction to a
    velocity is affine with the same coefficients for both branches, it equals guidance applied
    to the model's own parameterisation.

    The conditional branch calls ``model(x, t, **cond)``, the unconditional one
    ``model(x, t, **uncond)``. By default (``uncond=None``) ``uncond`` is the null condition of
    :mod:`flowkit.conditions`: the label ``num_classes`` for ``y`` (read from the model's
    ``num_classes``) and the zero vector for ``c``. When the two dicts hold tensors of batch
    size B under the same keys (always so by default), each evaluation is **one** model call on
    a batch of 2B (conditional rows first); otherwise (e.g. ``uncond={}``: call without
    conditions, or ``batched=False``) two calls of B. Either way an evaluation counts once in
    ``Solution.nfe``.

    With ``interval=(t_lo, t_hi)`` guidance applies only where ``t_lo <= t <= t_hi`` and the
    field is the conditional one (w = 1) elsewhere (Kynkäänniemi et al., 2024, "Applying
    guidance in a limited interval"). The weight is chosen per row (per token for per-token
    times), on the device, without a host synchronisation; the model call stays batched
    outside the interval too.

    Args:
        field: a Flow or a callable ``f(x, t, **cond)``.
        scale: guidance weight ``w`` (any finite number).
        cond: keyword conditions of the conditional branch.
        uncond: keyword conditions of the unconditional branch (None: the null condition).
        batched: run both branches in one call when the conditions allow it.
        interval: ``(t_lo, t_hi)`` within [0, 1], or None (guidance at every t).

    Raises:
        OptionError: a non-finite ``scale`` or a bad ``interval``.
        ValueError: ``uncond=None`` and a condition without a null (see
            :func:`~flowkit.conditions.null_condition`).

    Example:
        >>> import torch, flowkit as fk
        >>> f = lambda x, t, y=None: -x if y is None else y - x
        >>> guided = fk.CFGuidance(f, scale=3.0, cond={"y": torch.ones(4, 2)}, uncond={})
        >>> sol = fk.sample(guided, torch.zeros(4, 2), steps=4)
    """

    def __init__(
        self,
        field: Any,
        scale: float,
        cond: dict[str, Any] | None = None,
        uncond: dict[str, Any] | None = None,
        batched: bool = True,
        interval: Sequence[float] | None = None,
    ) -> None:
        self.source = field
        self.scale = SCALE(scale, "scale")
        self.cond = dict(cond or {})
        if uncond is None:
            uncond = null_condition(self.cond, num_classes_of(field))
        self.uncond = dict(uncond)
        self.interval = check_interval(interval)
        self.f = as_field(field)
        self.batched = batched and self._can_batch()
        if self.batched:
            self.both = {k: torch.cat([self.cond[k], self.uncond[k]]) for k in self.cond}

    def _can_batch(self) -> bool:
        if not self.cond or set(self.cond) != set(self.uncond):
            return False
        pairs = [(self.cond[k], self.uncond[k]) for k in self.cond]
        return all(
            isinstance(c, Tensor) and isinstance(u, Tensor) and c.shape == u.shape and c.ndim > 0
            for c, u in pairs
        )

    @property
    def path(self) -> Any:
        """The wrapped field's path (used by the ddim and stochastic solvers), if any."""
        return getattr(self.source, "path", None)

    @property
    def deterministic_coupling(self) -> bool:
        return bool(getattr(self.source, "deterministic_coupling", False))

    def weight(self, t: Tensor, v: Tensor) -> float | Tensor:
        """The guidance weight at times ``t``: ``w`` inside the interval, 1 outside."""
        if self.interval is None:
            return self.scale
        lo, hi = self.interval
        inside = (t >= lo) & (t <= hi)
        return expand_time(torch.where(inside, self.scale, 1.0).to(v.dtype), v)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        if self.batched:
            v_c, v_u = self.f(torch.cat([x, x]), torch.cat([t, t]), **self.both).chunk(2)
        else:
            v_c = self.f(x, t, **self.cond)
            v_u = self.f(x, t, **self.uncond)
        return guided_velocity(v_c, v_u, self.weight(t, v_c))
