"""The exact class-conditional marginal velocity of a labelled Gaussian mixture (an oracle model).

For a labelled target mixture (``labels=`` a class per component) the flow of class ``c`` moves
the source to the class mixture ``p(x1 | c)``, and the unconditional flow to the whole mixture
``p(x1) = Σ_c p(c)·p(x1 | c)``. Both fields are exact (:class:`~flowkit.data.oracle.ExactMarginal`),
so this module is the "perfectly trained" conditional model of classifier-free guidance: called
as ``model(x, t, y=labels)`` with the null label ``num_classes`` meaning "unconditional", exactly
as a model trained with ``cond_dropout`` is.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from flowkit._tensor import as_time
from flowkit.data.oracle import ExactMarginal, _mixture


class ConditionalExactMarginal(nn.Module):
    """Exact conditional (per class) and unconditional velocities of a labelled mixture.

    Args:
        source: the source distribution (a Gaussian or Gaussian mixture, or a spec).
        target: a labelled :class:`~flowkit.data.gaussian.GaussianMixture` (or a spec with
            ``labels``).
        path: an :class:`~flowkit.paths.affine.AffinePath` or a path spec.

    Attributes:
        num_classes: the number of classes ``C``; label ``C`` is the null label.
        classes: one :class:`ExactMarginal` per class (source → class mixture).
        unconditional: the :class:`ExactMarginal` of source → the whole target.

    Example:
        >>> import torch
        >>> target = {"name": "gaussian_mixture", "means": [[-3.0, 0.0], [3.0, 0.0]],
        ...           "labels": [0, 1]}
        >>> oracle = ConditionalExactMarginal("gaussian", target)
        >>> v = oracle(torch.zeros(2, 2), torch.full((2,), 0.5), y=torch.tensor([0, 2]))
        >>> v[:, 0].tolist()  # class 0 pulls left; the null label gives the symmetric mean 0
        [-3.0, 0.0]
    """

    def __init__(self, source: Any, target: Any, path: Any = "rectified") -> None:
        super().__init__()
        mixture = _mixture(target, "target")
        if mixture.num_classes is None:
            raise ValueError("target must be a labelled mixture (gaussian_mixture with labels=)")
        self.unconditional = ExactMarginal(source, mixture, path)
        self.classes = nn.ModuleList(
            ExactMarginal(source, mixture.class_mixture(c), path)
            for c in range(mixture.num_classes)
        )
        self.num_classes = mixture.num_classes
        self.path = self.unconditional.path
        self.deterministic_coupling = False

    def field(self, label: int) -> ExactMarginal:
        """The exact field of class ``label`` (the unconditional one for the null label)."""
        return self.unconditional if label == self.num_classes else self.classes[label]

    def forward(self, x: Tensor, t: Tensor | float, y: Tensor) -> Tensor:
        """``u_t(x | y)`` row by row; rows with the null label get the unconditional field."""
        t = as_time(t, x)
        if y.shape != x.shape[:1] or y.is_floating_point():
            raise ValueError(f"y must be integer labels of shape ({x.shape[0]},); got {y!r:.80}")
        if ((y < 0) | (y > self.num_classes)).any():
            raise ValueError(f"labels must lie in 0 .. {self.num_classes} (the null label)")
        out = torch.empty_like(x)
        for label in y.unique().tolist():
            rows = y == label
            out[rows] = self.field(label)(x[rows], t[rows])
        return out
