"""Build the parts of an experiment (data, couplings, flows) from their specs.

Only registry builds and plain wiring.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from flowkit.checks import OptionError
from flowkit.data.reshaped import reshape_to
from flowkit.experiment.specs import registry
from flowkit.flow import Flow
from flowkit.registry import split_spec


def source_spec(source: Any, target: Any) -> Any:
    """The source spec: ``source``, or a standard Gaussian with the target's dimension."""
    if source is not None:
        return source
    return {"name": "gaussian", "dim": math.prod(target.event_shape)}


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
