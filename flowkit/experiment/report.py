"""``report.md``: what ran, the metrics table (flow × solver × NFE) and the embedded plots.

The report is rebuilt from ``metrics.jsonl``, the stage markers and the files in ``plots/``, so it
always matches what the run directory holds (``flowkit eval RUN`` rewrites it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from flowkit.experiment.components import evaluation_options
from flowkit.experiment.rundir import RunDir

FIXED_COLUMNS = ("kind", "stage", "flow", "solver", "steps", "nfe", "seconds")


def fmt(value: Any) -> str:
    """Compact cell text: 4 significant digits for floats, ``–`` for missing values."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return lines


def stage_lines(config: Mapping[str, Any], run: RunDir) -> list[str]:
    """One table row per stage: type, status and its summary."""
    rows = []
    for stage in config["stages"]:
        info = run.done(stage["name"])
        detail = ""
        if info and "steps" in info:
            detail = f"{info['steps']} steps, final loss {fmt(info.get('final_loss'))}"
            detail += f", {fmt(info.get('wall_time'))} s"
        if info and "flows" in info:
            detail = "flows: " + ", ".join(info["flows"])
        rows.append((stage["name"], stage["type"], "done" if info else "not run", detail))
    return table(("stage", "type", "status", "summary"), rows)


def eval_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The metrics table: one row per (flow, solver, steps)."""
    metrics = list(dict.fromkeys(k for r in rows for k in r if k not in FIXED_COLUMNS))
    header = ("flow", "solver", "steps", "NFE", *metrics, "seconds")
    body = [
        (r["flow"], r["solver"], r["steps"], r["nfe"], *(r.get(m) for m in metrics), r["seconds"])
        for r in rows
    ]
    return table(header, body)


def sets_lines(config: Mapping[str, Any], stage: Mapping[str, Any]) -> list[str]:
    """A sentence naming the evaluation sets, when an evaluation draws its own source or target
    (``evaluation.source`` / ``target``, or the stage's own); nothing otherwise."""
    options = evaluation_options(config, stage)
    specs = [options.get("source"), options.get("target")]
    if specs == [None, None]:
        return []
    source, target = (
        default if spec is None else f"`{json.dumps(spec)}`"
        for spec, default in zip(specs, ("the data source", "the data target"), strict=True)
    )
    n = options.get("n_samples")
    return [f"Evaluation sets: {n} sources from {source}, {n} reference samples from {target}.", ""]


def build_report(config: Mapping[str, Any], run: RunDir) -> str:
    """The Markdown text of report.md."""
    records = run.read_metrics()
    lines = [f"# {config['name']}", ""]
    if config.get("description"):
        lines += [config["description"], ""]
    lines += [
        f"Run directory: `{run.root}` · seed {config['seed']} · device {config['device']}",
        "",
    ]
    lines += ["## Stages", "", *stage_lines(config, run), ""]
    for spec in (s for s in config["stages"] if s["type"] == "evaluate"):
        stage = spec["name"]
        evals = [r for r in records if r.get("stage") == stage and r.get("kind") == "eval"]
        straight = [
            r for r in records if r.get("stage") == stage and r.get("kind") == "straightness"
        ]
        if not evals and not straight:
            continue
        lines += [f"## Evaluation `{stage}`", "", *sets_lines(config, spec)]
        if evals:
            lines += ["Metrics per flow, solver and number of function evaluations (NFE):", ""]
            lines += [*eval_lines(evals), ""]
        if straight:
            body = [(r["flow"], r["straightness"], r["transport_cost"]) for r in straight]
            lines += [*table(("flow", "straightness", "transport cost"), body), ""]
        for plot in sorted(run.path("plots").glob(f"{stage}_*.png")):
            title = plot.stem.removeprefix(f"{stage}_").replace("_", " ")
            lines += [f"### {title}", "", f"![{title}](plots/{plot.name})", ""]
    if run.path("plots", "loss.png").is_file():
        lines += ["## Training loss", "", "![training loss](plots/loss.png)", ""]
    return "\n".join(lines)


def write_report(config: Mapping[str, Any], run: RunDir) -> None:
    """(Re)write report.md."""
    run.write_text("report.md", build_report(config, run))
