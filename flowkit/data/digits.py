"""scikit-learn's bundled 8×8 handwritten digits as a small image dataset (optional extra)."""

from __future__ import annotations

from functools import cache

import torch
from torch import Tensor

from flowkit.data.base import Cond, Distribution, check_num_samples, generator_device
from flowkit.registry import DISTRIBUTIONS

NUM_CLASSES = 10


@cache
def load_digits_tensors() -> tuple[Tensor, Tensor]:
    """All 1797 digits as float64 images ``(N, 1, 8, 8)`` in [−1, 1] and labels ``(N,)``.

    Pixel values 0…16 map to ``v/8 − 1``. scikit-learn ships the data, so nothing is downloaded.

    Raises:
        ImportError: when scikit-learn is not installed, naming the extra that provides it.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError(
            "the 'digits' distribution needs scikit-learn; install it with "
            "`pip install flowkit[digits]`"
        ) from err
    data = load_digits()
    images = torch.as_tensor(data.images, dtype=torch.float64).unsqueeze(1) / 8.0 - 1.0
    labels = torch.as_tensor(data.target, dtype=torch.long)
    return images, labels


class Digits(Distribution):
    """The empirical distribution of scikit-learn's 8×8 digits, images ``(1, 8, 8)`` in [−1, 1].

    Samples are drawn uniformly with replacement from the 1797 images (optionally only from some
    classes). With ``conditional=True``, :meth:`sample_conditional` also returns the labels under
    the key ``cond_key`` (default ``"y"``), so a coupling passes them to the model as
    ``model(x, t, y=labels)``.

    Args:
        conditional: whether :meth:`sample_conditional` returns the labels as a condition.
        classes: restrict to these digit classes (None: all ten).
        cond_key: keyword under which the labels are passed to the model.

    Example:
        >>> import torch, flowkit as fk
        >>> digits = fk.data.build({"name": "digits", "conditional": True})
        >>> x, cond = digits.sample_conditional(16, generator=torch.Generator().manual_seed(0))
        >>> tuple(x.shape), tuple(cond["y"].shape)
        ((16, 1, 8, 8), (16,))
    """

    event_shape = (1, 8, 8)
    num_classes = NUM_CLASSES

    def __init__(
        self, conditional: bool = False, classes: list[int] | None = None, cond_key: str = "y"
    ) -> None:
        if not isinstance(conditional, bool):
            raise TypeError(f"conditional must be a bool; got {conditional!r}")
        if not isinstance(cond_key, str) or not cond_key.isidentifier():
            raise ValueError(f"cond_key must be a valid keyword name; got {cond_key!r}")
        images, labels = load_digits_tensors()
        if classes is not None:
            wanted = sorted({int(c) for c in classes})
            if not wanted or any(c not in range(NUM_CLASSES) for c in wanted):
                raise ValueError(f"classes must be a non-empty list of digits 0-9; got {classes!r}")
            keep = torch.isin(labels, torch.tensor(wanted))
            images, labels = images[keep], labels[keep]
        self.images = images
        self.labels = labels
        self.conditional = conditional
        self.cond_key = cond_key

    def __len__(self) -> int:
        return self.labels.shape[0]

    def sample_with_labels(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``n`` images ``(n, 1, 8, 8)`` drawn with replacement and their labels ``(n,)``."""
        n = check_num_samples(n)
        device = generator_device(generator)
        index = torch.randint(0, len(self), (n,), generator=generator, device=device).cpu()
        images = self.images[index].to(device=device, dtype=torch.get_default_dtype())
        return images, self.labels[index].to(device)

    def labelled(self, index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The images at ``index`` (None: all), default dtype, and their labels: the real data a
        classifier is fitted on (``classifier_accuracy``)."""
        index = torch.arange(len(self)) if index is None else index
        return self.images[index].to(torch.get_default_dtype()), self.labels[index]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` images drawn uniformly with replacement, shape ``(n, 1, 8, 8)``."""
        return self.sample_with_labels(n, generator)[0]

    def sample_conditional(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Cond]:
        """Images and, if ``conditional``, ``{cond_key: labels}`` (else no conditions)."""
        images, labels = self.sample_with_labels(n, generator)
        return images, ({self.cond_key: labels} if self.conditional else {})

    def __repr__(self) -> str:
        return f"Digits(n={len(self)}, conditional={self.conditional})"


@DISTRIBUTIONS.register("digits")
def digits(
    conditional: bool = False, classes: list[int] | None = None, cond_key: str = "y"
) -> Digits:
    """scikit-learn's 8x8 digits as (1, 8, 8) images in [-1, 1]; labels as condition if asked."""
    return Digits(conditional=conditional, classes=classes, cond_key=cond_key)
