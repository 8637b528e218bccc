"""A schedule from user callables a(t), b(t), differentiated by autograd."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from flowkit.paths.schedules.base import Schedule
from flowkit.registry import SCHEDULES

ScheduleFn = Callable[[Tensor], Tensor]


def _derivative(fn: ScheduleFn, t: Tensor) -> Tensor:
    """Elementwise ``d fn / dt`` by autograd (keeps the graph if ``t`` requires grad)."""
    create_graph = t.requires_grad
    with torch.enable_grad():
        t_ = t if create_graph else t.detach().requires_grad_(True)
        y = fn(t_)
        (grad,) = torch.autograd.grad(y.sum(), t_, create_graph=create_graph)
    return grad


@SCHEDULES.register("custom")
class CustomSchedule(Schedule):
    """Schedule from callables ``a(t)``, ``b(t)`` (Python API); ``a'``, ``b'`` by autograd.

    ``a`` and ``b`` must be elementwise torch functions, a increasing and b decreasing so that
    λ = log(a²/b²) increases. ``reaches_endpoints`` and ``finite_derivatives`` are checked on
    construction at t = 0 and 1. ``t_from_log_snr`` is the bisection of :class:`Schedule`.

    Example:
        >>> import torch
        >>> from flowkit.paths.schedules.custom import CustomSchedule
        >>> s = CustomSchedule(a=lambda t: t**2, b=lambda t: 1 - t**2)
        >>> float(s.da(torch.tensor(0.5)))
        1.0
    """

    name = "custom"

    def __init__(self, a: ScheduleFn, b: ScheduleFn) -> None:
        for arg, fn in (("a", a), ("b", b)):
            if not callable(fn):
                raise TypeError(f"{arg} must be a callable t -> tensor; got {type(fn).__name__}")
        self._a, self._b = a, b
        ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
        a_end, b_end = self._a(ends), self._b(ends)
        expected_a = torch.tensor([0.0, 1.0], dtype=torch.float64)
        expected_b = torch.tensor([1.0, 0.0], dtype=torch.float64)
        self.reaches_endpoints = bool(
            torch.allclose(a_end.double(), expected_a, atol=1e-6)
            and torch.allclose(b_end.double(), expected_b, atol=1e-6)
        )
        derivatives = torch.cat([self.da(ends), self.db(ends)])
        self.finite_derivatives = bool(torch.isfinite(derivatives).all())

    def __repr__(self) -> str:
        def name(f: object) -> str:
            return getattr(f, "__qualname__", type(f).__name__)

        return f"CustomSchedule(a={name(self._a)}, b={name(self._b)})"

    def a(self, t: Tensor) -> Tensor:
        return self._a(t)

    def b(self, t: Tensor) -> Tensor:
        return self._b(t)

    def da(self, t: Tensor) -> Tensor:
        return _derivative(self._a, t)

    def db(self, t: Tensor) -> Tensor:
        return _derivative(self._b, t)
