"""Checks that need the whole experiment: stage names and references, and the built data.

Run by :func:`flowkit.experiment.schema.validate` after every section has been checked on its
own: stage names are unique, each stage reads only flows of earlier stages, the data, the
couplings and the evaluation sets build, and every stage resolves its inherited options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from flowkit.checks import did_you_mean
from flowkit.devices import pick_device
from flowkit.experiment.components import build_coupling, build_data
from flowkit.experiment.rundir import directory_key
from flowkit.experiment.specs import Problems, join_key, registry, report
from flowkit.models.fit import check_model_fits, device_memory


@dataclass
class Parts:
    """What the stages' checks need: the built data and a small batch of it.

    Attributes:
        source, target: the data distributions.
        x: two source samples.
        cond: their conditions.
        memory: bytes of memory of the experiment's device.
    """

    source: Any
    target: Any
    x: Tensor
    cond: dict[str, Tensor]
    memory: int


def check_model(spec: Any, parts: Parts, key: str, problems: Problems) -> None:
    """Model ``spec`` must fit the data and the device (:mod:`flowkit.models.fit`)."""
    classes = getattr(parts.target, "num_classes", None)
    check_model_fits(
        lambda: registry("models").build(spec),
        parts.x,
        parts.cond,
        parts.memory,
        classes if isinstance(classes, int) else None,
        key,
        problems,
    )


def check_reference(name: str, known: list[str], key: str, problems: Problems) -> None:
    """``name`` must be one of the ``known`` earlier flow stages."""
    if name in known:
        return
    if not known:
        problems.append((key, f"names {name!r}, but no flow stage comes before this stage"))
        return
    problems.append(
        (
            key,
            f"must name an earlier stage that produces a flow ({', '.join(known)}), got {name!r}."
            + did_you_mean(name, known),
        )
    )


@dataclass
class SpecView:
    """What a flow stage's ``flow_spec`` and ``init_conflict`` read of a run's context, known
    before the run: the experiment and the flow specs of the stages so far (None where a
    stage's spec could not be formed)."""

    experiment: Any
    specs: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def last_flow(self) -> str:
        return next(reversed(self.specs))


def check_init(stage: Any, view: SpecView, key: str, problems: Problems, formed: bool) -> None:
    """Record the spec of a flow stage (None unless ``formed``: its references are valid) and
    report an ``init`` that names a flow of another model, path or prediction (the run would
    otherwise stop there, or save mismatched weights)."""
    view.specs[stage.name] = spec = stage.flow_spec(view) if formed else None
    conflict = None if spec is None else stage.init_conflict(view)
    if conflict is not None:
        problems.append((join_key(key, "init"), conflict))


def build_parts(experiment: Any, problems: Problems) -> Parts | None:
    """The data, the top-level coupling and a batch of two sources, built once; None (with a
    problem) if they fail."""
    try:
        source, target = build_data(experiment.data)
    except (ValueError, TypeError, OSError) as err:
        report(problems, "data", err)
        return None
    try:
        coupling = build_coupling(experiment.coupling, source, target)
        x, cond = coupling.sample_source(2, generator=torch.Generator().manual_seed(0))
    except (ValueError, TypeError, OSError) as err:
        report(problems, "coupling", err)
        return None
    return Parts(source, target, x, cond, device_memory(pick_device(experiment.device)))


def check_pipeline(experiment: Any, problems: Problems) -> None:
    """Append the problems of the stage sequence and of everything built from the data."""
    parts = build_parts(experiment, problems)
    if parts is not None:
        check_model(experiment.model, parts, "model", problems)
    flows: list[str] = []
    seen: dict[str, str] = {}
    view = SpecView(experiment)
    for i, stage in enumerate(experiment.stages):
        key = join_key("stages", i)
        other = seen.get(directory_key(stage.name))
        if other == stage.name:
            problems.append((join_key(key, "name"), f"duplicate stage name {stage.name!r}"))
        elif other is not None:  # Train and train share a directory on macOS and Windows
            why = f"duplicate stage name: {stage.name!r} and {other!r} would share one directory"
            problems.append((join_key(key, "name"), why))
        seen.setdefault(directory_key(stage.name), stage.name)
        stage.resolve(experiment, parts, key, problems)
        before = len(problems)
        if stage.needs_flow and not flows:
            problems.append((key, f"a {stage.type} stage needs a flow stage before it"))
        else:
            for ref_key, name in stage.references(key):
                check_reference(name, flows, ref_key, problems)
        if stage.produces_flow:
            check_init(stage, view, key, problems, formed=len(problems) == before)
            flows.append(stage.name)
