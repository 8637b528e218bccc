"""Build the parts of an experiment (data, couplings, flows) from their specs.

Only registry builds and plain wiring.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from flowkit.checks import OptionError
from flowkit.couplings.base import draw
from flowkit.experiment.specs import registry
from flowkit.flow import Flow
from flowkit.registry import split_spec


def pick_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def source_spec(source: Any, target: Any) -> Any:
    """The source spec: ``source``, or a standard Gaussian with the target's dimension."""
    if source is not None:
        return source
    return {"name": "gaussian", "dim": math.prod(target.event_shape)}


def reshape_to(dist: Any, event_shape: tuple[int, ...]) -> Any:
    """``dist`` itself, or a view whose samples are reshaped to ``event_shape`` (same size)."""
    if tuple(dist.event_shape) == tuple(event_shape):
        return dist
    return ReshapedDistribution(dist, event_shape)


class ReshapedDistribution:
    """A distribution whose samples are reshaped to ``event_shape`` (e.g. 64 -> (1, 8, 8))."""

    def __init__(self, base: Any, event_shape: tuple[int, ...]) -> None:
        if math.prod(base.event_shape) != math.prod(event_shape):
            raise ValueError(
                f"data.source has event shape {tuple(base.event_shape)}, which cannot be "
                f"reshaped to the target's {tuple(event_shape)}"
            )
        self.base = base
        self.event_shape = tuple(event_shape)

    def __repr__(self) -> str:
        return f"Reshaped({self.base!r}, {self.event_shape})"

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.base.sample(n, generator=generator).reshape(n, *self.event_shape)

    def sample_conditional(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, cond = draw(self.base, n, generator)
        return x.reshape(n, *self.event_shape), cond

    def __getattr__(self, name: str) -> Any:
        """Everything else is the base's (finite data's epoch state and statistics included)."""
        if name == "base":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.base, name)


def build_data(data: Any) -> tuple[Any, Any]:
    """``(source, target)`` distributions of the ``data`` section; the source takes the
    target's event shape."""
    dists = registry("distributions")
    target = dists.build(data.target)
    source = dists.build(source_spec(data.source, target))
    return reshape_to(source, target.event_shape), target


def build_coupling(spec: Any, source: Any, target: Any) -> Any:
    """A coupling from its spec, with ``source``/``target`` filled in when it takes them."""
    couplings = registry("couplings")
    name, options = split_spec(spec, "coupling")
    params = couplings.get(name).parameters()
    for key, dist in (("source", source), ("target", target)):
        if key in params and key not in options:
            options[key] = dist
    return couplings.build({"name": name, **options})


def build_flow(spec: Mapping[str, Any], device: torch.device) -> Flow:
    """A fresh flow from ``{model, path, prediction}``."""
    model = registry("models").build(spec["model"])
    path = registry("paths").build(spec["path"])
    return Flow(model, path, prediction=spec["prediction"]).to(device)


def evaluation_distributions(options: Any, source: Any, target: Any) -> tuple[Any, Any]:
    """The evaluation's ``(source, target)``: its own ``source``/``target`` specs where given,
    else the data's ``source``/``target``; a given source takes the target's event shape.

    Raises:
        OptionError: naming ``source`` or ``target`` when the event shapes cannot match the data
            target's (the flows were trained on that shape).
    """
    dists = registry("distributions")
    shape = tuple(target.event_shape)
    if options.target is not None:
        target = dists.build(options.target)
        if tuple(target.event_shape) != shape:
            raise OptionError(
                "target",
                f"has event shape {tuple(target.event_shape)}, the data target {shape}; "
                "the evaluation target must have the shape the flows were trained on",
            )
    if options.source is not None:
        built = dists.build(options.source)
        if math.prod(built.event_shape) != math.prod(shape):
            raise OptionError(
                "source",
                f"has event shape {tuple(built.event_shape)}, which cannot be reshaped "
                f"to the data target's {shape}",
            )
        source = reshape_to(built, shape)
    return source, target
