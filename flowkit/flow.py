"""``Flow``: a model, a path and the parameterisation the model predicts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from flowkit._tensor import as_time, expand_time
from flowkit.losses import LossSpec, build_loss
from flowkit.paths.affine import AffinePath, check_prediction
from flowkit.registry import PATHS

Weighting = str | Callable[[Tensor], Tensor] | None


class Flow(nn.Module):
    """A trained (or trainable) flow: ``model(x, t, **cond)`` + path + parameterisation.

    The model predicts ``prediction`` (``velocity``, ``epsilon``, ``x1`` or ``score``);
    :meth:`velocity` converts it with the path so solvers always integrate ``dx/dt = v(x, t)``.

    Args:
        model: ``nn.Module`` called as ``model(x, t, **cond)`` with ``t`` of shape ``(B,)``.
        path: an :class:`AffinePath`, a registered path name or ``{name: ..., **kwargs}``.
        prediction: what the model outputs.

    Attributes:
        deterministic_coupling: True when the flow was trained on a deterministic coupling (e.g.
            reflow pairs); stochastic samplers refuse such flows.

    Example:
        >>> import torch, flowkit as fk
        >>> model = fk.models.build({"name": "mlp", "dim": 2})
        >>> flow = fk.Flow(model, "rectified")
        >>> loss = flow.loss(torch.randn(8, 2), torch.randn(8, 2))
    """

    def __init__(
        self,
        model: nn.Module,
        path: AffinePath | str | dict = "rectified",
        prediction: str = "velocity",
    ) -> None:
        super().__init__()
        check_prediction(prediction, "prediction")
        self.model = model
        self.path: AffinePath = PATHS.build(path)
        self.prediction = prediction
        self.deterministic_coupling = False

    def extra_repr(self) -> str:
        return f"path={self.path!r}, prediction={self.prediction!r}"

    def predict(self, x: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        """Raw model output at ``(x, t)`` in the model's own parameterisation."""
        return self.model(x, as_time(t, x), **cond)

    def velocity(self, x: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        """Velocity ``v(x, t)``: the model output converted to velocity (what solvers integrate)."""
        t = as_time(t, x)
        out = self.model(x, t, **cond)
        if self.prediction == "velocity":
            return out
        return self.path.convert(out, src=self.prediction, dst="velocity", x_t=x, t=t)

    def forward(self, x: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        return self.velocity(x, t, **cond)

    def loss(
        self,
        x0: Tensor,
        x1: Tensor,
        t: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        weighting: Weighting = None,
        cond: dict[str, Any] | None = None,
        reduction: str = "mean",
        check_t: bool = True,
        loss: LossSpec = "mse",
    ) -> Tensor:
        """Conditional flow-matching loss in the model's own parameterisation.

        ``L = E_t E_{x0,x1} w(t)·ℓ(model(x_t, t) − target)`` with ``x_t = a·x1 + b·x0``, the
        target ``a'·x1 + b'·x0`` (velocity), ``x0`` (epsilon), ``x1`` or ``−x0/b`` (score), and
        ``ℓ`` the ``loss``: by default the squared error averaged over the non-batch axes.

        Args:
            x0, x1: coupled source and target samples, shape ``(B, ...)``.
            t: times of shape ``(B,)``; drawn uniformly from [0, 1) with ``generator`` if None.
            weighting: None (w = 1), ``"velocity"`` (the weight that makes this loss equal the
                velocity MSE, see :meth:`AffinePath.velocity_weight`) or a callable ``w(t)``
                returning weights of shape ``(B,)``.
            cond: keyword conditions passed to the model.
            reduction: ``"mean"`` (a scalar) or ``"none"`` (per-sample losses of shape ``(B,)``).
            loss: ``"mse"``, ``"l1"``, ``"pseudo_huber"`` (``sqrt(||d||² + c²) − c`` per sample,
                or per token for per-token times, with ``c = 0.00054·sqrt(D)`` for ``D``
                elements) or ``{"name": "pseudo_huber", "c": ...}``; see :mod:`flowkit.losses`.
                The weights multiply each sample's (each token's) loss.
            check_t: raise ``ValueError`` unless every given t lies in [0, 1] (checked once; on
                an accelerator, one host synchronisation). The trainer passes False for times
                drawn by a flowkit time sampler, which lie in [0, 1] by construction; times
                drawn here (``t=None``) are never checked.
        """
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        if t is None:
            t = torch.rand(x1.shape[0], generator=generator, device=x1.device).to(x1.dtype)
            check_t = False
        criterion = build_loss(loss)
        s = self.path.sample(x0, x1, t, check_t=check_t)
        pred = self.model(s.x_t, s.t, **(cond or {}))
        units = max(s.t.ndim, 1)  # a sample, or a token for per-token times
        error = pred - self.path.target(s, self.prediction)
        if weighting is None and reduction == "mean":
            return criterion.mean(error, units)
        per_unit = criterion(error, units)
        if weighting is not None:
            per_unit = per_unit * self.loss_weight(weighting, s.t, per_unit)
        if reduction == "mean":  # every sample has as many units: the mean of the means
            return per_unit.mean()
        return per_unit.flatten(1).mean(1) if units > 1 else per_unit

    def loss_weight(self, weighting: Weighting, t: Tensor, like: Tensor) -> Tensor:
        """Weights for :meth:`loss`, broadcast against ``like`` (``t`` already checked)."""
        if weighting == "velocity":
            return self.path.velocity_weight(t, self.prediction, like, check_t=False)
        if callable(weighting):
            return expand_time(weighting(t), like)
        raise ValueError(
            f"weighting must be None, 'velocity' or a callable w(t); got {weighting!r}"
        )
