"""Conditions of the built-in models: class labels ``y`` and condition vectors ``c``.

A conditional model is built with ``num_classes`` (labels ``cond["y"]``, a long tensor ``(B,)``)
and/or ``cond_dim`` (vectors ``cond["c"]`` of shape ``(B, cond_dim)``). Both are embedded and the
embedding is added to the model's time embedding:

    e(t, y, c) = e_t(t) + E[y] + W·c

The label table has ``num_classes + 1`` rows: the last one, ``y == num_classes``, is the **null
label** of classifier-free guidance (learned when training drops labels). The null of a condition
vector is a row of zeros (its embedding is the bias of ``W`` alone). Both nulls are built by
:func:`flowkit.conditions.null_condition`, which training (``cond_dropout``) and guidance share.

Example:
    >>> import torch, flowkit as fk
    >>> net = fk.models.build({"name": "conv", "hidden": 16, "num_classes": 10})
    >>> y = torch.tensor([3, 10])  # a "3" and the null label
    >>> net(torch.randn(2, 1, 8, 8), torch.rand(2), y=y).shape
    torch.Size([2, 1, 8, 8])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from flowkit.checks import Integer, Nullable
from flowkit.conditions import LABEL_KEY, VECTOR_KEY

#: The sizes a model's conditions may have (2^20 labels or features at most).
CONDITION_SIZE = Nullable(Integer(1, 2**20))


class ConditionError(ValueError):
    """A model called with conditions it was not built for (missing, unexpected or malformed)."""


def check_labels(y: Any, num_classes: int, batch: int, model: str) -> None:
    """Labels must be an integer tensor of shape ``(batch,)`` (values are checked by the lookup)."""
    if not isinstance(y, Tensor) or y.dtype.is_floating_point or y.dtype == torch.bool:
        kind = y.dtype if isinstance(y, Tensor) else type(y).__name__
        raise ConditionError(
            f"{model}: condition y must be an integer tensor of class labels in "
            f"[0, {num_classes}] ({num_classes} is the null label); got {kind}"
        )
    if tuple(y.shape) != (batch,):
        raise ConditionError(
            f"{model}: condition y must have shape ({batch},) (one label per sample), "
            f"got {tuple(y.shape)}"
        )


def check_vectors(c: Any, cond_dim: int, batch: int, model: str) -> None:
    """Condition vectors must be a float tensor of shape ``(batch, cond_dim)``."""
    if not isinstance(c, Tensor) or not c.dtype.is_floating_point:
        kind = c.dtype if isinstance(c, Tensor) else type(c).__name__
        raise ConditionError(f"{model}: condition c must be a float tensor, got {kind}")
    if tuple(c.shape) != (batch, cond_dim):
        raise ConditionError(
            f"{model}: condition c must have shape ({batch}, {cond_dim}), got {tuple(c.shape)}"
        )


class ConditionEmbedding(nn.Module):
    """``E[y] + W·c`` of width ``width``: the embedding of a model's conditions.

    With neither ``num_classes`` nor ``cond_dim`` the model is unconditional: it accepts no
    condition and :meth:`forward` returns None.

    Args:
        width: width of the embedding (that of the model's time embedding).
        num_classes: number of classes of ``y`` (the null label is ``num_classes``).
        cond_dim: size of the condition vectors ``c``.
        model: the model's name, for error messages.
    """

    def __init__(
        self,
        width: int,
        num_classes: int | None = None,
        cond_dim: int | None = None,
        model: str = "model",
    ) -> None:
        super().__init__()
        self.num_classes = CONDITION_SIZE(num_classes, "num_classes")
        self.cond_dim = CONDITION_SIZE(cond_dim, "cond_dim")
        self.model = model
        self.labels = nn.Embedding(num_classes + 1, width) if num_classes else None
        self.vectors = nn.Linear(cond_dim, width) if cond_dim else None

    def expected(self) -> dict[str, str]:
        """The conditions this embedding reads, with what they are."""
        keys = {}
        if self.num_classes:
            n = self.num_classes
            keys[LABEL_KEY] = f"class labels (B,) in [0, {n}], {n}: null"
        if self.cond_dim:
            keys[VECTOR_KEY] = f"condition vectors (B, {self.cond_dim}), zeros: null"
        return keys

    def check(self, cond: Mapping[str, Any], batch: int) -> None:
        """Raise :class:`ConditionError` unless ``cond`` holds exactly the expected conditions."""
        expected = self.expected()
        given = [k for k, v in cond.items() if v is not None]
        unexpected = [k for k in given if k not in expected]
        if unexpected:
            if not expected:
                raise ConditionError(
                    f"{self.model} is unconditional but was given the condition(s) "
                    f"{', '.join(unexpected)}; build it with num_classes (labels y) or cond_dim "
                    "(vectors c) to use them (YAML: model.num_classes / model.cond_dim)"
                )
            raise ConditionError(
                f"{self.model} got unknown condition(s) {', '.join(unexpected)}; it reads "
                + "; ".join(f"{k}: {what}" for k, what in expected.items())
            )
        missing = [k for k in expected if k not in given]
        if missing:
            raise ConditionError(
                f"{self.model} is conditional and needs "
                + "; ".join(f"{k} ({expected[k]})" for k in missing)
                + "; pass the null condition for an unconditional prediction"
            )
        if self.num_classes:
            check_labels(cond[LABEL_KEY], self.num_classes, batch, self.model)
        if self.cond_dim:
            check_vectors(cond[VECTOR_KEY], self.cond_dim, batch, self.model)

    def forward(self, cond: Mapping[str, Any], batch: int, dtype: torch.dtype) -> Tensor | None:
        """The embedding ``(batch, width)`` of ``cond``, or None for an unconditional model.

        Raises:
            ConditionError: missing, unexpected or malformed conditions, or labels outside
                ``[0, num_classes]`` (values are not read, which would synchronise the device:
                the lookup's error is translated on the CPU; CUDA stops with a device assert).
        """
        self.check(cond, batch)
        emb = None
        if self.labels is not None:
            try:
                emb = self.labels(cond[LABEL_KEY])
            except IndexError as err:
                raise ConditionError(
                    f"{self.model}: condition y holds labels outside [0, {self.num_classes}] "
                    f"({self.num_classes} is the null label)"
                ) from err
        if self.vectors is not None:
            vec = self.vectors(cond[VECTOR_KEY].to(self.vectors.weight.dtype))
            emb = vec if emb is None else emb + vec
        return None if emb is None else emb.to(dtype)


class ConditionalModel(nn.Module):
    """Base of the built-in models: their conditions are embedded by ``self.cond_embed`` (a
    :class:`ConditionEmbedding`), whose sizes they declare as ``num_classes`` and ``cond_dim``
    (None when absent; read by validation and by guidance for the null label)."""

    cond_embed: ConditionEmbedding

    @property
    def num_classes(self) -> int | None:
        return self.cond_embed.num_classes

    @property
    def cond_dim(self) -> int | None:
        return self.cond_embed.cond_dim
