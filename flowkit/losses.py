"""Regression losses of flow matching: squared error, pseudo-Huber and L1.

A loss turns the error ``d = model(x_t, t) − target`` into one value per *unit*: a unit is what
has its own time, i.e. a sample for times of shape ``(B,)`` and a token for per-token times of
shape ``(B, N)``. :meth:`flowkit.Flow.loss` multiplies the unit losses by the loss weights
``w(t)`` (same shape as ``t``) and averages them.

- ``mse``: ``mean(d²)`` over the unit's elements (flowkit's default);
- ``l1``: ``mean(|d|)`` over the unit's elements;
- ``pseudo_huber``: ``sqrt(||d||² + c²) − c`` with ``||d||`` the Euclidean norm of the whole
  unit (2-rectified flow++, Lee et al., 2024). It is ``||d||²/(2c)`` for ``||d|| ≪ c`` and
  ``||d|| − c`` for ``||d|| ≫ c``: large errors weigh linearly, not quadratically. The default
  ``c = 0.00054·sqrt(D)`` for ``D`` elements per unit is that work's scaling (``c = 0.03`` for
  3×32×32 images).

Example:
    >>> import torch
    >>> from flowkit.losses import build_loss
    >>> loss = build_loss({"name": "pseudo_huber", "c": 0.1})
    >>> loss(torch.zeros(4, 2), units=1).shape
    torch.Size([4])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from flowkit.checks import OptionError, OptionTypeError, did_you_mean, shown

LOSS_NAMES = ("mse", "pseudo_huber", "l1")
#: ``c`` of the pseudo-Huber loss per square root of the element count (Lee et al., 2024).
HUBER_C_PER_SQRT_DIM = 0.00054


def squared_error(d: Tensor) -> Tensor:
    """``mean(d²)`` over the last axis."""
    return d.pow(2).mean(-1)


def absolute_error(d: Tensor) -> Tensor:
    """``mean(|d|)`` over the last axis."""
    return d.abs().mean(-1)


def pseudo_huber(d: Tensor, c: float) -> Tensor:
    """``sqrt(||d||² + c²) − c`` with ``||d||`` the Euclidean norm over the last axis."""
    return (d.pow(2).sum(-1) + c * c).sqrt() - c


def default_huber_c(elements: int) -> float:
    """``c = 0.00054·sqrt(D)`` for ``D`` elements per unit (Lee et al., 2024)."""
    return HUBER_C_PER_SQRT_DIM * math.sqrt(elements)


@dataclass(frozen=True)
class Loss:
    """A flow-matching regression loss (see the module docstring).

    Args:
        name: ``mse``, ``pseudo_huber`` or ``l1``.
        c: the pseudo-Huber constant (> 0); None: ``0.00054·sqrt(D)``. Only for ``pseudo_huber``.
    """

    name: str = "mse"
    c: float | None = None

    def __post_init__(self) -> None:
        if self.name not in LOSS_NAMES:
            raise OptionError(
                "loss",
                f"must be one of {', '.join(LOSS_NAMES)}, got {shown(self.name)}."
                + did_you_mean(str(self.name), LOSS_NAMES),
            )
        if self.c is None:
            return
        if self.name != "pseudo_huber":
            raise OptionError("loss.c", f"applies to pseudo_huber only, not to {self.name!r}")
        c = self.c
        if isinstance(c, bool) or not isinstance(c, int | float) or not 0 < c < math.inf:
            raise OptionError("loss.c", f"must be a finite number > 0, got {shown(c)}")

    def __call__(self, error: Tensor, units: int) -> Tensor:
        """Loss of each unit: ``error`` of shape ``(B, ...)`` has its units on its first
        ``units`` axes (1: per sample, 2: per token); returns their shape."""
        d = error.flatten(units) if error.ndim > units else error.unsqueeze(-1)
        if self.name == "mse":
            return squared_error(d)
        if self.name == "l1":
            return absolute_error(d)
        c = self.c if self.c is not None else default_huber_c(d.shape[-1])
        return pseudo_huber(d, c)

    def mean(self, error: Tensor, units: int) -> Tensor:
        """The mean of the unit losses of ``error`` (as ``self(error, units).mean()``): every
        unit has as many elements, so for ``mse`` and ``l1`` it is the mean over all elements,
        taken in one reduction."""
        if self.name == "mse":
            return error.pow(2).mean()
        if self.name == "l1":
            return error.abs().mean()
        return self(error, units).mean()

    def spec(self) -> str | dict[str, Any]:
        """The YAML spec: the name, or ``{name, c}`` with an explicit ``c``."""
        return self.name if self.c is None else {"name": self.name, "c": self.c}


LossSpec = str | Mapping[str, Any] | Loss


def build_loss(spec: LossSpec) -> Loss:
    """A :class:`Loss` from ``"mse"``, ``"pseudo_huber"``, ``"l1"``, ``{name: ..., c: ...}`` or
    a :class:`Loss`; errors name the option ``loss``."""
    if isinstance(spec, Loss):
        return spec
    if isinstance(spec, str):
        return Loss(spec)
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"name", "c"})
        if unknown or "name" not in spec:
            detail = f"has unknown key(s) {unknown}" if unknown else "needs a name"
            raise OptionError("loss", f"{detail}; a loss mapping is {{name: ..., c: ...}}")
        return Loss(spec["name"], spec.get("c"))
    raise OptionTypeError(
        "loss",
        f"must be {', '.join(LOSS_NAMES)} or {{name: pseudo_huber, c: ...}}; "
        f"got {type(spec).__name__}",
    )
