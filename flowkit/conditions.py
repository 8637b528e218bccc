"""The null condition of classifier-free guidance, and condition dropout in training.

A model conditioned on class labels (``cond["y"]``, long ``(B,)``) has ``num_classes`` classes
and reserves the index ``num_classes`` as the *null label*: the label of "no condition", which
it learns when training replaces labels by it at random (``cond_dropout``) and which the
unconditional branch of guidance passes. A continuous condition (``cond["c"]``,
``(B, cond_dim)``) has the *zero vector* as its null: a model that embeds ``c`` additively
(``Linear(c)``, as flowkit's models do) then sees "no condition" as the embedding's bias alone.
The zero vector is therefore also an ordinary value of ``c``; a dataset whose conditions can
be exactly zero should shift them (or carry an extra indicator component) before training
with dropout. No other condition key has a null.

Example:
    >>> import torch
    >>> null_condition({"y": torch.tensor([3, 1])}, num_classes=10)
    {'y': tensor([10, 10])}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from flowkit._tensor import expand_time

#: The condition keys with a null value: class labels and continuous condition vectors.
LABEL_KEY, VECTOR_KEY = "y", "c"
NULLABLE_KEYS = (LABEL_KEY, VECTOR_KEY)


def num_classes_of(model: Any) -> int | None:
    """The ``num_classes`` of a model, of a Flow's model or of a wrapper's ``module``; None
    when none of them declares it."""
    for obj in (model, getattr(model, "model", None), getattr(model, "module", None)):
        value = getattr(obj, "num_classes", None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def null_condition(cond: Mapping[str, Tensor], num_classes: int | None) -> dict[str, Tensor]:
    """The null condition matching ``cond``: ``y -> num_classes`` (every row), ``c -> 0``.

    Raises:
        ValueError: a key other than ``y`` and ``c``, or ``y`` without ``num_classes``.
    """
    null = {}
    for key, value in cond.items():
        if key == LABEL_KEY:
            if num_classes is None:
                raise ValueError(
                    "the null label of cond['y'] is the model's num_classes, but the model has "
                    "no num_classes attribute: give the model a `num_classes` (int) attribute, "
                    "or pass the unconditional branch's conditions yourself "
                    "(fk.CFGuidance(..., uncond={'y': null_labels}))"
                )
            null[key] = torch.full_like(value, num_classes)
        elif key == VECTOR_KEY:
            null[key] = torch.zeros_like(value)
        else:
            raise ValueError(
                f"cond[{key!r}] has no null value (only {', '.join(NULLABLE_KEYS)} do: the null "
                "label and the zero vector); pass the unconditional branch's conditions yourself "
                "(fk.CFGuidance(..., uncond=...))"
            )
    return null


def drop_conditions(
    cond: Mapping[str, Tensor], p: float, null: Mapping[str, Tensor], generator: torch.Generator
) -> dict[str, Tensor]:
    """Replace each row's conditions by the null ones with probability ``p`` (all keys of a
    row together), drawing one uniform number per row from ``generator``.

    The draw is made on the generator's device and moved to the conditions' (no host
    synchronisation); ``p = 0`` draws nothing.
    """
    if p == 0 or not cond:
        return dict(cond)
    first = next(iter(cond.values()))
    drop = torch.rand(first.shape[0], generator=generator, device=generator.device) < p
    drop = drop.to(first.device, non_blocking=True)
    return {k: torch.where(expand_time(drop, v), null[k], v) for k, v in cond.items()}
