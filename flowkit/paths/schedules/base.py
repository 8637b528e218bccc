"""The :class:`Schedule` interface: a(t), b(t), their derivatives and the log-SNR.

Convention (``shared/DESIGN.md``): ``x_t = a(t)·x1 + b(t)·x0`` with t=0 the source and t=1 the
data; ``λ(t) = log(a²/b²)`` increases with t and ``λ'(t) = 2(a'/a − b'/b)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor


class Schedule(ABC):
    """An affine interpolation schedule ``x_t = a(t)·x1 + b(t)·x0``.

    Subclasses implement :meth:`a`, :meth:`b`, :meth:`da`, :meth:`db` in closed form, elementwise
    on a tensor ``t`` of any shape. ``reaches_endpoints`` is True when ``a(0)=0, b(0)=1, a(1)=1,
    b(1)=0`` hold exactly; schedules such as ``vp`` only reach them approximately and say so.
    ``finite_derivatives`` is True when ``a'`` and ``b'`` are finite on the closed interval
    [0, 1]; where it is False (``linear_vp``, ``vp``, ``ldm_linear`` at t = 1, ``edm`` at both
    ends) the conditional velocity blows up at an endpoint and :class:`AffinePath` evaluates the
    coefficients at times clamped into ``[eps, 1 − eps]``.
    """

    name: str = "schedule"
    reaches_endpoints: bool = True
    finite_derivatives: bool = True

    @abstractmethod
    def a(self, t: Tensor) -> Tensor:
        """Data coefficient a(t)."""

    @abstractmethod
    def b(self, t: Tensor) -> Tensor:
        """Source (noise) coefficient b(t)."""

    @abstractmethod
    def da(self, t: Tensor) -> Tensor:
        """Derivative a'(t)."""

    @abstractmethod
    def db(self, t: Tensor) -> Tensor:
        """Derivative b'(t)."""

    def interpolate(self, t: Tensor, x0: Tensor, x1: Tensor) -> Tensor:
        """Path point ``a(t)·x1 + b(t)·x0`` (``t`` already broadcast against ``x0``); a
        subclass may override it with a cheaper closed form."""
        return self.a(t) * x1 + self.b(t) * x0

    def velocity(self, t: Tensor, x0: Tensor, x1: Tensor) -> Tensor:
        """Conditional velocity ``a'(t)·x1 + b'(t)·x0`` (``t`` already broadcast against ``x0``);
        a subclass may override it with a cheaper closed form."""
        return self.da(t) * x1 + self.db(t) * x0

    def log_snr(self, t: Tensor) -> Tensor:
        """Log signal-to-noise ratio ``λ(t) = log(a(t)² / b(t)²) = 2(log a − log b)``."""
        return 2.0 * (torch.log(self.a(t)) - torch.log(self.b(t)))

    def dlog_snr(self, t: Tensor) -> Tensor:
        """Derivative ``λ'(t) = 2(a'(t)/a(t) − b'(t)/b(t))``."""
        return 2.0 * (self.da(t) / self.a(t) - self.db(t) / self.b(t))

    def t_from_log_snr(self, lam: Tensor, iters: int = 60) -> Tensor:
        """Inverse of :meth:`log_snr` by bisection on [0, 1] (λ is increasing).

        Subclasses with a closed-form inverse override this. Values of ``lam`` beyond the range of
        λ on [0, 1] map to the nearest endpoint. 60 bisection steps give float64 resolution.
        """
        lam = torch.as_tensor(lam)
        dtype = lam.dtype if lam.is_floating_point() else torch.get_default_dtype()
        lam64 = lam.to(torch.float64)
        lo = torch.zeros_like(lam64)
        hi = torch.ones_like(lam64)
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            below = self.log_snr(mid) < lam64
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        return (0.5 * (lo + hi)).to(dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
