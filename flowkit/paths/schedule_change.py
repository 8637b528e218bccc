"""Schedule change of a trained flow: sample a model trained on schedule A as schedule B.

Two affine paths with the same source and target differ only by a time change and a scale
(equal-SNR transform, e.g. Kingma et al. 2021, Lipman et al. 2024 §4.8). For
``x^B_t = a_B(t)·x1 + b_B(t)·x0`` pick ``t'`` with ``λ_A(t') = λ_B(t)``; then::

    c(t) = a_B(t)/a_A(t') = b_B(t)/b_A(t'),        x^B_t = c(t)·x^A_{t'}

and the marginal velocity of B follows from A's by the chain rule::

    v_B(x, t) = (c'/c)·x + c·v_A(x/c, t')·dt'/dt
    dt'/dt = λ_B'(t) / λ_A'(t'),   c'/c = a_B'/a_B − (a_A'(t')/a_A(t'))·dt'/dt
                                       = b_B'/b_B − (b_A'(t')/b_A(t'))·dt'/dt

This is exact in continuous time: integrating ``v_B`` from ``x^B_0 = c(0)·x^A_0`` gives
``c(1)·x^A_1``, and ``c(0) = c(1) = 1`` when both schedules reach their endpoints, so the
wrapped flow maps every source sample to the same endpoint as the original.

Endpoints and ranges: the ratio ``c`` is taken from ``a`` where ``λ > 0`` and from ``b``
otherwise (never 0/0). ``dt'/dt`` is ∞/∞ at t ∈ {0, 1}, so t is clamped into
``[eps, 1 − eps]``. The transform needs λ_B(t) inside the range of λ_A; where it is not (e.g.
from ``vp``, whose λ(0) ≈ −10 is finite, to ``rectified`` at t < 0.0066) ``t'`` is clamped to
A's endpoint and the result is no longer exact there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flowkit._tensor import as_time, expand_time
from flowkit.paths.affine import AffinePath
from flowkit.paths.schedules.base import Schedule


@dataclass
class TimeChange:
    """The equal-SNR map from schedule B's time t to schedule A's time t'.

    Attributes:
        t: ``t'`` with ``λ_A(t') = λ_B(t)``.
        scale: ``c = a_B(t)/a_A(t') = b_B(t)/b_A(t')``.
        dt: ``dt'/dt = λ_B'(t) / λ_A'(t')``.
        dlog_scale: ``c'/c``.
    """

    t: Tensor
    scale: Tensor
    dt: Tensor
    dlog_scale: Tensor


def equal_snr_time_change(src: Schedule, dst: Schedule, t: Tensor) -> TimeChange:
    """Time change and scale taking schedule ``src`` (A) to ``dst`` (B) at B-times ``t``.

    ``t' = t_A(λ_B(t))``, ``c = a_B/a_A(t')`` if ``λ > 0`` else ``b_B/b_A(t')``,
    ``dt'/dt = λ_B'(t)/λ_A'(t')``, ``c'/c = r_B'/r_B − (r_A'(t')/r_A(t'))·dt'/dt`` with r the
    coefficient (a or b) used for c. Interior times only: at t ∈ {0, 1} ``dt'/dt`` is ∞/∞.
    """
    lam = dst.log_snr(t)
    t_src = src.t_from_log_snr(lam).to(t.dtype)
    dt = dst.dlog_snr(t) / src.dlog_snr(t_src)
    use_a = lam > 0
    r_dst = torch.where(use_a, dst.a(t), dst.b(t))
    r_src = torch.where(use_a, src.a(t_src), src.b(t_src))
    dr_dst = torch.where(use_a, dst.da(t), dst.db(t))
    dr_src = torch.where(use_a, src.da(t_src), src.db(t_src))
    return TimeChange(
        t=t_src,
        scale=r_dst / r_src,
        dt=dt,
        dlog_scale=dr_dst / r_dst - dr_src / r_src * dt,
    )


class ScheduleChange(nn.Module):
    """Velocity field of schedule B from a flow (or velocity field) trained on schedule A.

    ``v_B(x, t) = (c'/c)·x + c·v_A(x/c, t')·dt'/dt`` (see the module docstring); solvers integrate
    it like any flow, e.g. ``fk.sample(ScheduleChange(flow, "cosine"), x0, solver="dopri5")``.

    Args:
        field: a :class:`~flowkit.flow.Flow` or any callable ``field(x, t, **cond)`` returning
            the velocity of schedule A.
        schedule: schedule B (a :class:`Schedule`, a name or ``{name: ..., **kwargs}``).
        source: schedule A; defaults to ``field.path.schedule`` when ``field`` is a Flow.
        eps: t is clamped into ``[eps, 1 − eps]`` (``dt'/dt`` is ∞/∞ at the endpoints).

    Attributes:
        path: the :class:`AffinePath` of schedule B.
        source_path: the :class:`AffinePath` of schedule A.
    """

    def __init__(
        self,
        field: Any,
        schedule: Schedule | str | dict,
        source: Schedule | str | dict | None = None,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if not callable(field):
            raise TypeError(f"field must be a Flow or a callable f(x, t); got {type(field)}")
        if source is None:
            field_path = getattr(field, "path", None)
            if not isinstance(field_path, AffinePath):
                raise ValueError(
                    "source must be given (a schedule name, spec or Schedule) when field is not "
                    f"a Flow with an AffinePath; got field of type {type(field).__name__}"
                )
            source = field_path.schedule
        self.field = field
        self.source_path = AffinePath(source, eps=eps)
        self.path = AffinePath(schedule, eps=eps)
        self.deterministic_coupling = bool(getattr(field, "deterministic_coupling", False))

    def extra_repr(self) -> str:
        return f"source={self.source_path.schedule!r}, schedule={self.path.schedule!r}"

    def velocity(self, x: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        """``v_B(x, t)`` for ``t`` of shape (), (B,) or (B, N).

        t is clamped into ``[eps, 1 − eps]`` (also covering the slight overshoot past the final
        time of adaptive solvers such as torchdiffeq's dopri5).
        """
        t = as_time(t, x)
        change = equal_snr_time_change(
            self.source_path.schedule, self.path.schedule, self.path.clamp_time(t)
        )
        scale = expand_time(change.scale, x)
        v_src = self.field(x / scale, change.t, **cond)
        return expand_time(change.dlog_scale, x) * x + scale * v_src * expand_time(change.dt, x)

    def forward(self, x: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        return self.velocity(x, t, **cond)
