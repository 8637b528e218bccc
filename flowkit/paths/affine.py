"""The affine probability path ``x_t = a(t)·x1 + b(t)·x0`` over a :class:`Schedule`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from flowkit._tensor import as_time, check_unit_interval, expand_time
from flowkit.paths import conversions as cv
from flowkit.paths.schedules.base import Schedule
from flowkit.registry import PATHS, SCHEDULES, did_you_mean

PREDICTIONS = ("velocity", "epsilon", "x1", "score")


@dataclass
class PathSample:
    """A point on the conditional path and its regression target.

    Attributes:
        x_t: ``a(t)·x1 + b(t)·x0``.
        velocity: the conditional velocity ``a'(t)·x1 + b'(t)·x0`` (the flow-matching target).
        t: the times, shape ``(B,)`` (or ``(B, N)`` per token).
        x0: source sample.
        x1: target sample.
    """

    x_t: Tensor
    velocity: Tensor
    t: Tensor
    x0: Tensor
    x1: Tensor


def check_prediction(name: str, argument: str) -> None:
    """Raise ``ValueError`` unless ``name`` is one of :data:`PREDICTIONS`."""
    if name not in PREDICTIONS:
        raise ValueError(
            f"{argument} must be one of {', '.join(PREDICTIONS)}; got {name!r}."
            + did_you_mean(str(name), list(PREDICTIONS))
        )


class AffinePath:
    """Affine path ``x_t = a(t)·x1 + b(t)·x0`` with conditional velocity ``a'(t)·x1 + b'(t)·x0``.

    Args:
        schedule: a :class:`Schedule`, a registered schedule name or ``{name: ..., **kwargs}``.
        eps: endpoint guard for conversions that divide by ``a`` (from epsilon/score at t=0) or by
            ``b`` (from x1 at t=1): their time is clamped into ``[eps, 1 − eps]``. Every other
            conversion is exact at the endpoints.

    Example:
        >>> import torch, flowkit as fk
        >>> path = fk.paths.build("rectified")
        >>> x0, x1, t = torch.randn(4, 2), torch.randn(4, 2), torch.rand(4)
        >>> s = path.sample(x0, x1, t)
        >>> torch.allclose(s.velocity, x1 - x0)
        True
    """

    def __init__(self, schedule: Schedule | str | dict = "rectified", eps: float = 1e-5) -> None:
        self.schedule: Schedule = SCHEDULES.build(schedule)
        if not isinstance(self.schedule, Schedule):
            raise TypeError(f"schedule must build a Schedule, got {type(self.schedule).__name__}")
        if not 0.0 <= eps < 0.5:
            raise ValueError(f"eps must lie in [0, 0.5), got {eps}")
        self.eps = eps

    def __repr__(self) -> str:
        return f"AffinePath({self.schedule!r})"

    def a(self, t: Tensor) -> Tensor:
        return self.schedule.a(t)

    def b(self, t: Tensor) -> Tensor:
        return self.schedule.b(t)

    def da(self, t: Tensor) -> Tensor:
        return self.schedule.da(t)

    def db(self, t: Tensor) -> Tensor:
        return self.schedule.db(t)

    def log_snr(self, t: Tensor) -> Tensor:
        return self.schedule.log_snr(t)

    def coefficients(self, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(a, b, a', b')`` at ``t``, broadcast against ``x``."""
        t = expand_time(as_time(t, x), x)
        s = self.schedule
        return s.a(t), s.b(t), s.da(t), s.db(t)

    def sample(self, x0: Tensor, x1: Tensor, t: Tensor | float) -> PathSample:
        """Point ``x_t`` on the conditional path between ``x0`` and ``x1`` and its velocity."""
        if x0.shape != x1.shape:
            raise ValueError(
                f"x0 and x1 must have the same shape; got {tuple(x0.shape)} and {tuple(x1.shape)}"
            )
        t = as_time(t, x1)
        check_unit_interval(t)
        a, b, da, db = self.coefficients(t, x1)
        return PathSample(x_t=a * x1 + b * x0, velocity=da * x1 + db * x0, t=t, x0=x0, x1=x1)

    def convert(self, pred: Tensor, src: str, dst: str, x_t: Tensor, t: Tensor | float) -> Tensor:
        """Convert a prediction between ``velocity``, ``epsilon`` (x0), ``x1`` and ``score``.

        Formulas (``det = a·b' − a'·b``, ``λ' = 2(a'/a − b'/b)``)::

            velocity -> x1:      x1 = (b'·x_t − b·v) / det
            velocity -> epsilon: ε  = (a·v − a'·x_t) / det      (= −2/(λ'·b)·(v − (a'/a)·x_t), SD3)
            epsilon  -> velocity: v = (a'/a)·x_t − (b·λ'/2)·ε
            x1       -> velocity: v = (b'/b)·x_t + (a' − a·b'/b)·x1
            score = −ε / b   (Gaussian source N(0, I))

        Endpoints: conversions out of ``epsilon``/``score`` divide by ``a`` and those out of
        ``x1`` divide by ``b``; their time is clamped into ``[eps, 1 − eps]``. Conversions
        out of ``velocity`` to x1/epsilon are exact for all t in [0, 1]; ``score`` output
        divides by ``b`` and is evaluated at the clamped time as well.
        """
        check_prediction(src, "src")
        check_prediction(dst, "dst")
        if pred.shape != x_t.shape:
            raise ValueError(
                f"pred of shape {tuple(pred.shape)} must match x_t of shape {tuple(x_t.shape)}"
            )
        if src == dst:
            return pred
        t = as_time(t, x_t)
        check_unit_interval(t)
        if src in ("epsilon", "score", "x1") or dst == "score":
            t = t.clamp(self.eps, 1.0 - self.eps)
        a, b, da, db = self.coefficients(t, x_t)
        if src == "score":
            pred, src = -b * pred, "epsilon"
        if src == "velocity":
            x1, x0 = cv.x1_x0_from_velocity(pred, x_t, a, b, da, db)
        elif src == "epsilon":
            x0, x1 = pred, cv.x1_from_x0(pred, x_t, a, b)
        else:
            x1, x0 = pred, cv.x0_from_x1(pred, x_t, a, b)
        if dst == "x1":
            return x1
        if dst == "epsilon":
            return x0
        if dst == "score":
            return -x0 / b
        if src == "epsilon":
            return cv.velocity_from_x0(x0, x_t, a, b, da, db)
        return cv.velocity_from_x1(x1, x_t, a, b, da, db)

    def target(self, sample: PathSample, prediction: str) -> Tensor:
        """The regression target of ``sample`` in the ``prediction`` parameterisation."""
        check_prediction(prediction, "prediction")
        if prediction == "velocity":
            return sample.velocity
        if prediction == "epsilon":
            return sample.x0
        if prediction == "x1":
            return sample.x1
        b = self.coefficients(sample.t, sample.x_t)[1]
        return -sample.x0 / b

    def velocity_weight(self, t: Tensor, prediction: str, x: Tensor) -> Tensor:
        """Weight ``w(t)`` with ``w·||pred − target||² = ||v̂ − v||²`` in ``prediction``'s terms.

        ``velocity``: 1; ``epsilon``: ``(b·λ'/2)² = (a'b/a − b')²``; ``x1``: ``(a' − a·b'/b)²``;
        ``score``: ``(b·λ'/2)²·b²``. Broadcast against ``x``. Times are clamped into
        ``[eps, 1 − eps]`` where the weight divides by a or b.
        """
        check_prediction(prediction, "prediction")
        t = as_time(t, x).clamp(self.eps, 1.0 - self.eps)
        a, b, da, db = self.coefficients(t, x)
        if prediction == "velocity":
            return torch.ones_like(a)
        if prediction == "x1":
            return (da - a * db / b) ** 2
        w = (da * b / a - db) ** 2
        return w * b**2 if prediction == "score" else w


@PATHS.register("affine")
def affine(schedule: Any = "rectified", eps: float = 1e-5) -> AffinePath:
    """Affine path x_t = a(t)·x1 + b(t)·x0 over any registered schedule."""
    return AffinePath(schedule, eps=eps)


def path_for_schedule(name: str):
    """Factory registered in ``PATHS`` for each schedule name: ``AffinePath(name, **kwargs)``."""

    def factory(eps: float = 1e-5, **kwargs: Any) -> AffinePath:
        return AffinePath({"name": name, **kwargs}, eps=eps)

    factory.__doc__ = f"Affine path over the {name!r} schedule."
    return factory
