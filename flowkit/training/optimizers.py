"""Optimizers by name: ``"adam"``, ``"adamw"``, ``"sgd"`` or ``{name: ..., **options}``."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from flowkit.checks import OneOf, OptionError, OptionTypeError, did_you_mean
from flowkit.registry import split_spec

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}

OptimizerSpec = str | Mapping[str, Any]
NAMES = OneOf(tuple(OPTIMIZERS))


def split_optimizer_spec(spec: OptimizerSpec) -> tuple[str, dict[str, Any]]:
    """``(name, options)`` of an optimizer spec, checked against :data:`OPTIMIZERS`.

    Raises:
        OptionError: naming ``optimizer`` (or ``optimizer.<option>``) for an unknown name or
            option, a mapping without ``name``, or ``lr`` among the options (the learning rate
            is the ``lr`` argument of :func:`flowkit.train`).
    """
    if not isinstance(spec, str | Mapping):
        raise OptionTypeError(
            "optimizer", f"must be a name or {{name: ..., **options}}, got {type(spec).__name__}"
        )
    try:
        name, options = split_spec(spec, "optimizer")
    except ValueError as err:
        raise OptionError("optimizer", str(err)) from None
    NAMES(name, "optimizer.name" if isinstance(spec, Mapping) else "optimizer")
    if "lr" in options:
        raise OptionError("optimizer.lr", "must not be set; pass lr= to train instead")
    params = inspect.signature(OPTIMIZERS[name]).parameters
    allowed = [p for p in params if p not in ("params", "lr")]
    for key in options:
        if key not in allowed:
            raise OptionError(
                f"optimizer.{key}",
                f"is not an option of {name!r}; allowed: {', '.join(allowed)}."
                + did_you_mean(key, allowed),
            )
    if "betas" in options:
        options["betas"] = tuple(options["betas"])
    return name, options


def check_optimizer(spec: OptimizerSpec, name: str = "optimizer") -> OptimizerSpec:
    """Return ``spec`` if it builds an optimizer (tried on one dummy parameter), else raise an
    ``OptionError`` naming ``optimizer`` or the bad option (``weight_decay: -1``, ...)."""
    build_optimizer(spec, [nn.Parameter(torch.zeros(1))], lr=1e-3)
    return spec


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
    except (TypeError, ValueError) as err:
        raise OptionError("optimizer", f"has bad options {options!r} for {name!r}: {err}") from err
