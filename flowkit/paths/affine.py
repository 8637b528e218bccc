"""The affine probability path ``x_t = a(t)·x1 + b(t)·x0`` over a :class:`Schedule`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from flowkit._tensor import as_time, check_unit_interval, expand_time
from flowkit.checks import Real
from flowkit.paths import conversions as cv
from flowkit.paths import weights
from flowkit.paths.schedules.base import Schedule
from flowkit.registry import PATHS, SCHEDULES, did_you_mean

PREDICTIONS = ("velocity", "epsilon", "x1", "score")
ENDPOINT_GUARD = Real(minimum=0, maximum=0.5, exclusive_minimum=True, exclusive_maximum=True)


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
        eps: endpoint guard. Whenever a formula divides by ``a`` (zero at t = 0) or ``b`` (zero at
            t = 1), or the schedule's derivatives are infinite at an endpoint
            (``schedule.finite_derivatives`` False), the time is clamped into ``[eps, 1 − eps]``.
            See :meth:`convert` for which conversions are exact at the endpoints.

    Attributes:
        velocity_invertible_at_endpoints: True when ``det = a·b' − a'·b`` is finite and non-zero
            at t = 0 and t = 1, so velocity -> x1/epsilon needs no clamping.

    Example:
        >>> import torch, flowkit as fk
        >>> path = fk.paths.build("rectified")
        >>> x0, x1, t = torch.randn(4, 2), torch.randn(4, 2), torch.rand(4)
        >>> s = path.sample(x0, x1, t)
        >>> torch.allclose(s.velocity, x1 - x0)
        True
        >>> eps = path.convert(s.velocity, src="velocity", dst="epsilon", x_t=s.x_t, t=t)
        >>> torch.allclose(eps, x0, atol=1e-5)
        True
    """

    def __init__(self, schedule: Schedule | str | dict = "rectified", eps: float = 1e-5) -> None:
        self.schedule: Schedule = SCHEDULES.build(schedule)
        # eps = 0 would let the endpoint conversions divide by a(0) = 0 or b(1) = 0 (inf/NaN)
        self.eps = ENDPOINT_GUARD(eps, "eps")
        ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
        s = self.schedule
        det = s.a(ends) * s.db(ends) - s.da(ends) * s.b(ends)
        self.velocity_invertible_at_endpoints = bool((torch.isfinite(det) & (det != 0)).all())

    def __repr__(self) -> str:
        return f"AffinePath({self.schedule!r})"

    def a(self, t: Tensor) -> Tensor:
        """Data coefficient ``a(t)``."""
        return self.schedule.a(t)

    def b(self, t: Tensor) -> Tensor:
        """Source coefficient ``b(t)``."""
        return self.schedule.b(t)

    def da(self, t: Tensor) -> Tensor:
        """``a'(t)``."""
        return self.schedule.da(t)

    def db(self, t: Tensor) -> Tensor:
        """``b'(t)``."""
        return self.schedule.db(t)

    def log_snr(self, t: Tensor) -> Tensor:
        """``λ(t) = log(a²/b²)``."""
        return self.schedule.log_snr(t)

    def clamp_time(self, t: Tensor) -> Tensor:
        """``t`` clamped into ``[eps, 1 − eps]`` (the endpoint guard)."""
        return t.clamp(self.eps, 1.0 - self.eps)

    def velocity_time(self, t: Tensor) -> Tensor:
        """The time at which :meth:`convert` solves the path system for a velocity: ``t`` itself
        when ``velocity_invertible_at_endpoints``, else ``t`` clamped into ``[eps, 1 − eps]``
        (where ``det = a·b' − a'·b`` may be 0 or not finite at an endpoint). Solvers and
        couplings that solve the same system (ddim, stochastic, distillation) use it too."""
        return t if self.velocity_invertible_at_endpoints else self.clamp_time(t)

    def coefficients(self, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(a, b, a', b')`` at ``t`` (shape (), (B,) or (B, N)) broadcast against ``x``."""
        t = expand_time(as_time(t, x), x)
        s = self.schedule
        return s.a(t), s.b(t), s.da(t), s.db(t)

    def sample(
        self, x0: Tensor, x1: Tensor, t: Tensor | float, *, check_t: bool = True
    ) -> PathSample:
        """Point ``x_t = a·x1 + b·x0`` on the conditional path and its velocity ``a'·x1 + b'·x0``.

        Exact at t = 0 and t = 1, except for schedules with infinite derivatives at an endpoint
        (``linear_vp``, ``vp``, ``ldm_linear``, ``edm``): their time is clamped into
        ``[eps, 1 − eps]`` and the returned ``PathSample.t`` is the clamped time.

        Args:
            x0, x1: source and target samples of the same shape ``(B, ...)``.
            t: times, a float or a tensor of shape ``()``, ``(B,)`` or ``(B, N)``.
            check_t: raise ``ValueError`` unless every t lies in [0, 1] (on an accelerator, one
                host synchronisation). Pass False only for times in [0, 1] by construction,
                e.g. drawn by a flowkit time sampler, as the trainer does.
        """
        if x0.shape != x1.shape:
            raise ValueError(
                f"x0 and x1 must have the same shape; got {tuple(x0.shape)} and {tuple(x1.shape)}"
            )
        t = as_time(t, x1)
        if check_t:
            check_unit_interval(t)
        s = self.schedule
        if not s.finite_derivatives:
            t = self.clamp_time(t)
        tx = expand_time(t, x1)
        x_t = s.interpolate(tx, x0, x1)
        return PathSample(x_t=x_t, velocity=s.velocity(tx, x0, x1), t=t, x0=x0, x1=x1)

    def convert(self, pred: Tensor, src: str, dst: str, x_t: Tensor, t: Tensor | float) -> Tensor:
        """Convert a prediction between ``velocity``, ``epsilon`` (x0), ``x1`` and ``score``.

        Formulas (``det = a·b' − a'·b``, ``λ' = 2(a'/a − b'/b)``)::

            velocity -> x1:       x1 = (b'·x_t − b·v) / det
            velocity -> epsilon:  ε  = (a·v − a'·x_t) / det      (= −2/(λ'·b)·(v − (a'/a)·x_t), SD3)
            epsilon  -> velocity: v  = (a'/a)·x_t − (b·λ'/2)·ε
            epsilon  -> x1:       x1 = (x_t − b·ε) / a
            x1       -> velocity: v  = (b'/b)·x_t + (a' − a·b'/b)·x1
            x1       -> epsilon:  ε  = (x_t − a·x1) / b
            score = −ε / b,  ε = −b·score   (Gaussian source N(0, I))

        Endpoints: ``velocity -> x1`` and ``velocity -> epsilon`` are exact for every t in
        [0, 1] when ``det`` is finite and non-zero at t = 0 and 1
        (``velocity_invertible_at_endpoints``: rectified, cosine; not polynomial with n ≠ 1,
        whose a' vanishes or blows up at t = 0, nor schedules with infinite derivatives).
        Otherwise, and for every other conversion, which divides by ``a`` (out of
        epsilon/score: zero at t = 0) or by ``b`` (out of x1, into or out of score: zero at
        t = 1), t is clamped into ``[eps, 1 − eps]``.

        Raises:
            ValueError: unknown ``src``/``dst``, ``pred`` and ``x_t`` of different shapes, or t
                outside [0, 1].
        """
        check_prediction(src, "src")
        check_prediction(dst, "dst")
        if pred.shape != x_t.shape:
            raise ValueError(
                f"pred of shape {tuple(pred.shape)} must match x_t of shape {tuple(x_t.shape)}"
            )
        t = as_time(t, x_t)
        check_unit_interval(t)
        if src == dst:
            return pred
        t = self.velocity_time(t) if src == "velocity" and dst != "score" else self.clamp_time(t)
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
        """The regression target of ``sample`` in the ``prediction`` parameterisation.

        ``velocity``: ``a'·x1 + b'·x0``; ``epsilon``: ``x0``; ``x1``: ``x1``; ``score``: ``−x0/b``
        with ``b`` at the clamped time (``b(1) = 0``).
        """
        check_prediction(prediction, "prediction")
        if prediction == "velocity":
            return sample.velocity
        if prediction == "epsilon":
            return sample.x0
        if prediction == "x1":
            return sample.x1
        b = self.coefficients(self.clamp_time(sample.t), sample.x_t)[1]
        return -sample.x0 / b

    def _weight(
        self, fn: Callable[..., Tensor], t: Tensor, prediction: str, x: Tensor, check_t: bool
    ) -> Tensor:
        check_prediction(prediction, "prediction")
        t = as_time(t, x)
        if check_t:
            check_unit_interval(t)
        return fn(prediction, *self.coefficients(self.clamp_time(t), x))

    def velocity_weight(
        self, t: Tensor, prediction: str, x: Tensor, *, check_t: bool = True
    ) -> Tensor:
        """Weight ``w(t)`` with ``w·||pred − target||² = ||v̂ − v||²`` in ``prediction``'s terms.

        ``velocity``: 1; ``epsilon``: ``(b·λ'/2)² = (a'b/a − b')²``; ``x1``: ``(a' − a·b'/b)²``;
        ``score``: ``(b·λ'/2)²·b²`` (:func:`flowkit.paths.weights.velocity_weight`). Broadcast
        against ``x``; t is clamped into ``[eps, 1 − eps]``. ``check_t``: as for :meth:`sample`.
        """
        return self._weight(weights.velocity_weight, t, prediction, x, check_t)

    def sd3_weight(self, t: Tensor, prediction: str, x: Tensor, *, check_t: bool = True) -> Tensor:
        """SD3's ``w_t`` for which ``½·w_t·λ'(t)·||ε̂ − ε||²`` equals the ``prediction`` MSE.

        ``velocity``: ``b²·λ'/2`` (rectified: ``(1 − t)/t``); ``epsilon``: ``2/λ'``; ``x1``:
        ``2·e^{−λ}/λ'``; ``score``: ``2/(b²·λ')`` (:func:`flowkit.paths.weights.sd3_weight`).
        Broadcast against ``x``; t is clamped into ``[eps, 1 − eps]``. ``check_t``: as for
        :meth:`sample`.
        """
        return self._weight(weights.sd3_weight, t, prediction, x, check_t)


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
