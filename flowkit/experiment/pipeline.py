"""Checks that need the whole experiment: stage names and references, and the built data.

Run by :func:`flowkit.experiment.schema.validate` after every section has been checked on its
own: stage names are unique, each stage reads only flows of earlier stages, the data, the
couplings and the evaluation sets build, and every stage resolves its inherited options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowkit.checks import did_you_mean
from flowkit.experiment.components import build_coupling, build_data
from flowkit.experiment.specs import Problems, join_key, report


@dataclass
class Parts:
    """The built data distributions the stages' checks need."""

    source: Any
    target: Any


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


def build_parts(experiment: Any, problems: Problems) -> Parts | None:
    """The data and the top-level coupling, built once; None (with a problem) if they fail."""
    try:
        source, target = build_data(experiment.data)
    except (ValueError, TypeError) as err:
        report(problems, "data", err)
        return None
    try:
        build_coupling(experiment.coupling, source, target)
    except (ValueError, TypeError) as err:
        report(problems, "coupling", err)
    return Parts(source, target)


def check_pipeline(experiment: Any, problems: Problems) -> None:
    """Append the problems of the stage sequence and of everything built from the data."""
    parts = build_parts(experiment, problems)
    flows: list[str] = []
    seen: set[str] = set()
    for i, stage in enumerate(experiment.stages):
        key = join_key("stages", i)
        if stage.name in seen:
            problems.append((join_key(key, "name"), f"duplicate stage name {stage.name!r}"))
        seen.add(stage.name)
        stage.resolve(experiment, parts, key, problems)
        if stage.needs_flow and not flows:
            problems.append((key, f"a {stage.type} stage needs a flow stage before it"))
        else:
            for ref_key, name in stage.references(key):
                check_reference(name, flows, ref_key, problems)
        if stage.produces_flow:
            flows.append(stage.name)
