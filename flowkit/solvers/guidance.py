"""Classifier-free guidance as a velocity field."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from flowkit.solvers.base import as_field


class CFGuidance:
    """Classifier-free guidance: ``v = v_uncond + w·(v_cond − v_uncond)``.

    ``w = 1`` is the conditional field, ``w = 0`` the unconditional one, ``w > 1`` extrapolates
    away from the unconditional prediction. The combination is done on velocities; because the
    conversion from an epsilon/x1 prediction to velocity is affine with the same coefficients for
    both branches, it equals guidance applied to the model's own parameterisation.

    How conditions are passed: the conditional branch calls ``model(x, t, **cond)``, the
    unconditional one ``model(x, t, **uncond)`` (an empty ``uncond`` means "no condition"; pass a
    null label such as ``{"y": null_ids}`` if the model was trained with one). With ``batched=True``
    and both dicts holding tensors of batch size B under the same keys, the two branches run as one
    model call on a batch of 2B. Each evaluation of the wrapper counts once in ``Solution.nfe``
    and costs two model forward passes (one of batch 2B when batched).

    Args:
        field: a Flow or a callable ``f(x, t, **cond)``.
        scale: guidance weight ``w``.
        cond: keyword conditions of the conditional branch.
        uncond: keyword conditions of the unconditional branch (default: none).
        batched: run both branches in one call when the conditions allow it.

    Example:
        >>> import torch, flowkit as fk
        >>> f = lambda x, t, y=None: -x if y is None else y - x
        >>> guided = fk.CFGuidance(f, scale=3.0, cond={"y": torch.ones(4, 2)})
        >>> sol = fk.sample(guided, torch.zeros(4, 2), steps=4)
    """

    def __init__(
        self,
        field: Any,
        scale: float,
        cond: dict[str, Any] | None = None,
        uncond: dict[str, Any] | None = None,
        batched: bool = True,
    ) -> None:
        self.source = field
        self.scale = float(scale)
        self.cond = dict(cond or {})
        self.uncond = dict(uncond or {})
        self.f = as_field(field)
        self.batched = batched and self._can_batch()

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

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        if self.batched:
            both = {k: torch.cat([self.cond[k], self.uncond[k]]) for k in self.cond}
            v_c, v_u = self.f(torch.cat([x, x]), torch.cat([t, t]), **both).chunk(2)
        else:
            v_c = self.f(x, t, **self.cond)
            v_u = self.f(x, t, **self.uncond)
        return torch.lerp(v_u, v_c, self.scale)
