"""``report.md``: what ran, each stage's own section (metrics tables, plots) and the loss plot.

The report is rebuilt from ``metrics.jsonl``, the stage markers and the files in ``plots/``, so it
always matches what the run directory holds (``flowkit eval RUN`` rewrites it). Each stage type
writes its own cell and section (:meth:`Stage.summary`, :meth:`Stage.report_lines`).
"""

from __future__ import annotations

from typing import Any

from flowkit.experiment.rundir import RunDir
from flowkit.experiment.schema import Experiment
from flowkit.experiment.stages.evaluate import table


def stage_lines(experiment: Experiment, run: RunDir) -> list[str]:
    """One table row per stage: type, status and its summary."""
    rows = []
    for stage in experiment.stages:
        info = run.done(stage.name)
        detail = stage.summary(info) if info else ""
        rows.append((stage.name, stage.type, "done" if info else "not run", detail))
    return table(("stage", "type", "status", "summary"), rows)


def build_report(experiment: Experiment, run: RunDir) -> str:
    """The Markdown text of report.md."""
    lines = [f"# {experiment.name}", ""]
    if experiment.description:
        lines += [experiment.description, ""]
    lines += [
        f"Run directory: `{run.root}` · seed {experiment.seed} · device {experiment.device}",
        "",
    ]
    lines += ["## Stages", "", *stage_lines(experiment, run), ""]
    for stage in experiment.stages:
        lines += stage.report_lines(run)
    if run.path("plots", "loss.png").is_file():
        lines += ["## Training loss", "", "![training loss](plots/loss.png)", ""]
    return "\n".join(lines)


def write_report(ctx: Any) -> None:
    """(Re)write report.md of the run in context ``ctx``."""
    ctx.run.write_text("report.md", build_report(ctx.experiment, ctx.run))
