"""Optimizers by name: ``"adam"``, ``"adamw"``, ``"sgd"`` or ``{name: ..., **options}``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from flowkit.registry import did_you_mean

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}

OptimizerSpec = str | Mapping[str, Any]


def split_optimizer_spec(spec: OptimizerSpec) -> tuple[str, dict[str, Any]]:
    """``(name, options)`` of an optimizer spec, checked against :data:`OPTIMIZERS`.

    Raises:
        ValueError: for an unknown name, a mapping without ``name`` or with ``lr`` (the learning
            rate is the ``lr`` argument of :func:`flowkit.train`).
        TypeError: for a spec that is neither a string nor a mapping.
    """
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, Mapping):
        if "name" not in spec:
            raise ValueError(f"optimizer spec {dict(spec)!r} needs a 'name' key")
        name, options = spec["name"], {k: v for k, v in spec.items() if k != "name"}
    else:
        raise TypeError(
            f"optimizer must be a name or {{name: ..., **options}}, got {type(spec).__name__}"
        )
    if name not in OPTIMIZERS:
        raise ValueError(
            f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}."
            + did_you_mean(str(name), list(OPTIMIZERS))
        )
    if "lr" in options:
        raise ValueError("optimizer options must not set 'lr'; pass lr= to train instead")
    if "betas" in options:
        options["betas"] = tuple(options["betas"])
    return name, options


def build_optimizer(
    spec: OptimizerSpec, params: Iterable[nn.Parameter], lr: float
) -> torch.optim.Optimizer:
    """Build the optimizer named by ``spec`` over ``params`` with learning rate ``lr``.

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> opt = build_optimizer({"name": "adamw", "weight_decay": 0.01}, net.parameters(), 1e-3)
    """
    name, options = split_optimizer_spec(spec)
    try:
        return OPTIMIZERS[name](params, lr=lr, **options)
    except TypeError as err:
        raise ValueError(f"bad options {options!r} for optimizer {name!r}: {err}") from err
