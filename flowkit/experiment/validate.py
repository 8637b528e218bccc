"""Validate an experiment before any work: schema, registries and cross-stage references.

:func:`validate` returns the resolved experiment (defaults filled in, every stage named) or raises
one :class:`ConfigError` listing every problem with its key path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowkit.experiment.components import build_coupling, build_data, evaluation_distributions
from flowkit.experiment.errors import ConfigError
from flowkit.experiment.fields import Problems, join_key
from flowkit.experiment.schema import SCHEMA
from flowkit.registry import did_you_mean

FLOW_STAGES = ("train", "reflow", "distill")


def stage_names(stages: list[Mapping[str, Any]]) -> list[str]:
    """Stage names: the given ``name``, else the type, numbered from the second of a type on."""
    names: list[str] = []
    counts: dict[str, int] = {}
    for stage in stages:
        kind = str(stage.get("type"))
        counts[kind] = counts.get(kind, 0) + 1
        default = kind if counts[kind] == 1 else f"{kind}{counts[kind]}"
        names.append(str(stage.get("name") or default))
    return names


def check_reference(
    name: Any, known: list[str], key: str, problems: Problems, what: str = "a flow stage"
) -> None:
    """``name`` must be one of the ``known`` earlier flow stages."""
    if name is None or name in known:
        return
    if not known:
        problems.append((key, f"names {name!r}, but no {what} comes before this stage"))
        return
    problems.append(
        (
            key,
            f"must name an earlier stage that produces a flow ({', '.join(known)}), got {name!r}."
            + did_you_mean(str(name), known),
        )
    )


def check_stages(config: Mapping[str, Any], problems: Problems) -> None:
    """Unique names; teachers, inits and evaluated flows name earlier flow-producing stages."""
    stages = config.get("stages")
    if not isinstance(stages, list) or not all(isinstance(s, Mapping) for s in stages):
        return
    names = stage_names(stages)
    flows: list[str] = []
    seen: set[str] = set()
    for i, (stage, name) in enumerate(zip(stages, names, strict=True)):
        key = join_key("stages", i)
        if name in seen:
            problems.append((join_key(key, "name"), f"duplicate stage name {name!r}"))
        seen.add(name)
        kind = stage.get("type")
        if kind in ("reflow", "distill"):
            if stage.get("teacher") is None and not flows:
                problems.append((key, f"a {kind} stage needs a flow stage (train) before it"))
            check_reference(stage.get("teacher"), flows, join_key(key, "teacher"), problems)
        if kind == "train":
            check_reference(stage.get("init"), flows, join_key(key, "init"), problems)
        if kind == "evaluate":
            if not flows:
                problems.append((key, "an evaluate stage needs a flow stage before it"))
            for j, flow in enumerate(stage.get("flows") or []):
                check_reference(flow, flows, join_key(join_key(key, "flows"), j), problems)
        if kind in FLOW_STAGES:
            flows.append(name)
    evaluation = config.get("evaluation")
    if isinstance(evaluation, Mapping) and isinstance(evaluation.get("flows"), list):
        for j, flow in enumerate(evaluation["flows"]):
            check_reference(flow, flows, f"evaluation.flows[{j}]", problems)


def check_couplings(config: Mapping[str, Any], problems: Problems) -> None:
    """Build the data, every coupling and every evaluation source/target once, so their own
    value errors carry a key path."""
    try:
        source, target = build_data(config)
    except (ValueError, TypeError) as err:
        problems.append(("data", str(err)))
        return
    specs = [("coupling", config["coupling"])]
    specs += [
        (join_key(join_key("stages", i), "coupling"), stage["coupling"])
        for i, stage in enumerate(config["stages"])
        if stage.get("coupling") is not None
    ]
    for key, spec in specs:
        try:
            build_coupling(spec, source, target)
        except (ValueError, TypeError) as err:
            problems.append((key, str(err)))
    evaluations = [("evaluation", config["evaluation"])]
    evaluations += [
        (join_key("stages", i), stage)
        for i, stage in enumerate(config["stages"])
        if stage.get("type") == "evaluate"
    ]
    for key, options in evaluations:
        for name in ("source", "target"):
            if options.get(name) is None:
                continue
            try:
                evaluation_distributions({name: options[name]}, source, target)
            except (ValueError, TypeError) as err:
                problems.append((join_key(key, name), str(err)))


def validate(config: Mapping[str, Any], source: str = "") -> dict[str, Any]:
    """Check ``config`` against the schema and the registries; return it resolved.

    Raises:
        ConfigError: listing every problem (unknown keys, wrong types, unknown registry names,
            out-of-range values, bad stage references) with its key path.
    """
    problems: Problems = []
    SCHEMA.check(config, "", problems)
    if isinstance(config, Mapping):
        check_stages(config, problems)
    if problems:
        raise ConfigError(problems, source)
    resolved = SCHEMA.resolve(config)
    for stage, name in zip(resolved["stages"], stage_names(resolved["stages"]), strict=True):
        stage["name"] = name
    check_couplings(resolved, problems)
    if problems:
        raise ConfigError(problems, source)
    return resolved
