"""Classifier accuracy of conditional samples: are generated samples of the class asked for?

A simple classifier, multinomial logistic regression on standardised flattened samples,

    p(k | x) = softmax_k(W·(x − μ)/σ + b),

is fitted on real labelled data (:func:`fit_classifier`, L-BFGS on the L2-penalised cross
entropy); its accuracy on a held-out part of that data is the ceiling the generated samples can
be compared with. :func:`classifier_accuracy` is the fraction of generated samples it assigns to
the class they were generated for.

Example:
    >>> import torch, flowkit as fk
    >>> g = torch.Generator().manual_seed(0)
    >>> y = torch.arange(400) % 2
    >>> x = torch.randn(400, 3, generator=g) + 4.0 * y[:, None]
    >>> clf = fk.metrics.fit_classifier(x, y)
    >>> clf.held_out_accuracy > 0.95, fk.metrics.classifier_accuracy(x[:50], y[:50], clf) > 0.95
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from flowkit.checks import Integer, Real
from flowkit.metrics.base import as_matrix, register_metric


@dataclass(frozen=True)
class Classifier:
    """Multinomial logistic regression on flattened, standardised samples (float64, CPU).

    Attributes:
        mean, scale: ``μ`` and ``σ`` of the training samples, shape ``(D,)``.
        weight: ``W``, shape ``(K, D)``; bias: ``b``, shape ``(K,)``.
        held_out_accuracy: accuracy on the held-out real samples (the ceiling of the metric).
    """

    mean: Tensor
    scale: Tensor
    weight: Tensor
    bias: Tensor
    held_out_accuracy: float

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    def logits(self, x: Tensor) -> Tensor:
        """``W·(x − μ)/σ + b`` for samples ``(n, ...)``, shape ``(n, K)``."""
        xm = as_matrix(x, "x")
        if xm.shape[1] != self.weight.shape[1]:
            raise ValueError(
                f"the classifier was fitted on samples of {self.weight.shape[1]} values, got "
                f"samples of {xm.shape[1]}"
            )
        return (xm - self.mean) / self.scale @ self.weight.T + self.bias

    def predict(self, x: Tensor) -> Tensor:
        """The most probable class of each sample, shape ``(n,)``."""
        return self.logits(x).argmax(dim=1)

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors to save (safetensors); :meth:`from_state_dict` reads them back."""
        return {
            "mean": self.mean,
            "scale": self.scale,
            "weight": self.weight,
            "bias": self.bias,
            "held_out_accuracy": torch.tensor(self.held_out_accuracy, dtype=torch.float64),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> Classifier:
        tensors = {k: state[k].to(torch.float64) for k in ("mean", "scale", "weight", "bias")}
        return cls(**tensors, held_out_accuracy=float(state["held_out_accuracy"]))


def as_labels(labels: Tensor, n: int, argument: str = "labels") -> Tensor:
    """Class labels as a long CPU tensor ``(n,)``."""
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"{argument} must be an integer tensor of class labels")
    if tuple(labels.shape) != (n,):
        raise ValueError(f"{argument} must have shape ({n},), got {tuple(labels.shape)}")
    return labels.detach().cpu().long()


def fit_classifier(
    x: Tensor,
    y: Tensor,
    held_out: float = 0.2,
    l2: float = 1e-3,
    max_iter: int = 200,
    seed: int = 0,
) -> Classifier:
    """Fit logistic regression on a random ``1 − held_out`` part of ``(x, y)`` and measure its
    accuracy on the rest.

    Args:
        x: real samples ``(n, ...)``; y: their labels ``(n,)`` in ``[0, K)``.
        held_out: fraction of the samples kept out of the fit (in (0, 1)).
        l2: weight of ``||W||²`` (mean cross entropy + ``l2·||W||²``).
        max_iter: L-BFGS iterations.
        seed: seed of the split.
    """
    held_out = Real(0, 1, exclusive_minimum=True, exclusive_maximum=True)(held_out, "held_out")
    l2 = Real(0)(l2, "l2")
    max_iter = Integer(1, 10_000)(max_iter, "max_iter")
    xm = as_matrix(x, "x")
    labels = as_labels(y, xm.shape[0], "y")
    order = torch.randperm(len(xm), generator=torch.Generator().manual_seed(seed))
    n_test = max(1, round(held_out * len(xm)))
    if len(xm) - n_test < 2:
        raise ValueError(f"fit_classifier needs at least 3 labelled samples, got {len(xm)}")
    test, train = order[:n_test], order[n_test:]
    mean = xm[train].mean(dim=0)
    scale = xm[train].std(dim=0).clamp_min(1e-6)
    z = (xm[train] - mean) / scale
    k = int(labels.max()) + 1
    weight = torch.zeros(k, xm.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_grad=1e-9
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        logits = z @ weight.T + bias
        loss = torch.nn.functional.cross_entropy(logits, labels[train]) + l2 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    fitted = Classifier(mean, scale, weight.detach(), bias.detach(), 0.0)
    accuracy = (fitted.predict(xm[test]) == labels[test]).double().mean().item()
    return Classifier(mean, scale, weight.detach(), bias.detach(), accuracy)


@register_metric("classifier_accuracy", "classes")
def classifier_accuracy(generated: Tensor, labels: Tensor, classifier: Classifier) -> float:
    """Fraction of generated samples a classifier fitted on real data assigns to the class they
    were generated for (``labels``, the requested ``cond["y"]``); compare with
    ``classifier.held_out_accuracy``, its accuracy on held-out real samples."""
    x = as_matrix(generated, "generated")
    requested = as_labels(labels, x.shape[0])
    return (classifier.predict(x) == requested).double().mean().item()
