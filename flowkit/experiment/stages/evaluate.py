"""The ``evaluate`` stage: every flow × solver × NFE × metric with ``fk.sample``, plus plots."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from flowkit.conditions import LABEL_KEY, NULLABLE_KEYS
from flowkit.experiment.components import evaluation_distributions
from flowkit.experiment.evaluation import evaluate_flows
from flowkit.experiment.schema import Evaluation
from flowkit.experiment.specs import Problems, join_key, registry, report
from flowkit.experiment.stages.base import STAGE_TYPES, Stage, fmt
from flowkit.registry import split_spec

FIXED_COLUMNS = ("kind", "stage", "flow", "solver", "steps", "guidance", "nfe", "seconds")


@STAGE_TYPES.register("evaluate")
@dataclass
class EvaluateStage(Stage):
    """Evaluate flows (solvers × NFE × metrics) and write plots and report.md.

    Any option of the top-level `evaluation` may be overridden here.

    Attributes:
        overrides: the stage's own evaluation options (null ones inherit the top level).
        options: the merged options the stage runs with.
    """

    type: ClassVar[str] = "evaluate"
    needs_flow: ClassVar[bool] = True
    rerun_on_eval: ClassVar[bool] = True
    inline_options: ClassVar[type] = Evaluation

    overrides: dict[str, Any] = field(default_factory=dict, kw_only=True)
    options: Evaluation | None = field(default=None, kw_only=True)

    def references(self, key: str) -> list[tuple[str, str]]:
        """The evaluated flows, at this stage's key or, when inherited, at ``evaluation``."""
        own = self.overrides.get("flows")
        where = join_key(key if own is not None else "evaluation", "flows")
        flows = own if own is not None else self.options.flows
        return [(join_key(where, j), name) for j, name in enumerate(flows or [])]

    def resolve(self, experiment: Any, parts: Any, key: str, problems: Problems) -> None:
        """Merge with the top-level ``evaluation`` and check the evaluation sets fit the data."""
        own = {k: v for k, v in self.overrides.items() if v is not None}
        self.options = dataclasses.replace(experiment.evaluation, **own)
        if parts is None:
            return
        where = key if "metrics" in own else "evaluation"
        check_labelled_metrics(self.options.metrics, parts, where, problems)
        check_guidance(self.options, parts, key if "guidance" in own else "evaluation", problems)
        for name in ("source", "target"):
            if getattr(self.options, name) is None:
                continue
            where = key if name in own else "evaluation"
            try:
                evaluation_distributions(self.options, parts.source, parts.target)
            except (ValueError, TypeError) as err:
                report(problems, where, err)
                return

    def evaluated(self, ctx: Any) -> list[str]:
        """The names of the flows this stage evaluates."""
        return self.options.flows or list(ctx.flows)

    def run(self, ctx: Any) -> dict[str, Any]:
        names = self.evaluated(ctx)
        rows = evaluate_flows(ctx, {n: ctx.flows[n] for n in names}, self.options, self.name)
        return {"rows": len(rows), "flows": names}

    def summary(self, info: Mapping[str, Any]) -> str:
        return "flows: " + ", ".join(info.get("flows", []))

    def report_lines(self, run: Any) -> list[str]:
        """The evaluation section: sets, metrics table, straightness table and plots."""
        records = [r for r in run.read_metrics() if r.get("stage") == self.name]
        evals = [r for r in records if r.get("kind") == "eval"]
        straight = [r for r in records if r.get("kind") == "straightness"]
        if not evals and not straight:
            return []
        lines = [f"## Evaluation `{self.name}`", "", *self.sets_lines()]
        lines += classifier_lines([r for r in records if r.get("kind") == "classifier"])
        if evals:
            lines += ["Metrics per flow, solver and number of function evaluations (NFE):", ""]
            lines += [*eval_table(evals), ""]
        if straight:
            body = [(r["flow"], r["straightness"], r["transport_cost"]) for r in straight]
            lines += [*table(("flow", "straightness", "transport cost"), body), ""]
        for plot in sorted(run.path("plots").glob(f"{self.name}_*.png")):
            title = plot.stem.removeprefix(f"{self.name}_").replace("_", " ")
            lines += [f"### {title}", "", f"![{title}](plots/{plot.name})", ""]
        return lines

    def sets_lines(self) -> list[str]:
        """A sentence naming the evaluation sets when the evaluation draws its own."""
        specs = [self.options.source, self.options.target]
        if specs == [None, None]:
            return []
        source, target = (
            default if spec is None else f"`{json.dumps(spec)}`"
            for spec, default in zip(specs, ("the data source", "the data target"), strict=True)
        )
        n = self.options.n_samples
        return [
            f"Evaluation sets: {n} sources from {source}, {n} reference samples from {target}.",
            "",
        ]


def check_labelled_metrics(metrics: list[Any], parts: Any, key: str, problems: Problems) -> None:
    """Metrics scored by a classifier (``classifier_accuracy``) need labels ``y`` in the data."""
    if LABEL_KEY in parts.cond:
        return
    for i, spec in enumerate(metrics):
        if registry("metrics").build(spec).inputs == "classes":
            problems.append(
                (
                    join_key(join_key(key, "metrics"), i),
                    f"{split_spec(spec, 'metric')[0]} scores samples of requested classes, but "
                    "the data give no labels y: use a conditional target (e.g. data.target: "
                    "{name: digits, conditional: true})",
                )
            )


def check_guidance(options: Evaluation, parts: Any, key: str, problems: Problems) -> None:
    """Guidance scales need conditions with a null (labels ``y`` or vectors ``c``)."""
    if options.guidance is None and options.guidance_interval is not None:
        problems.append((join_key(key, "guidance_interval"), "needs evaluation guidance scales"))
    if options.guidance is None or set(parts.cond) & set(NULLABLE_KEYS):
        return
    why = (
        "guides a conditional flow, but the data give no labels y or vectors c: use a "
        "conditional target (e.g. data.target: {name: digits, conditional: true}) or "
        "guidance: null"
    )
    problems.append((join_key(key, "guidance"), why))


def classifier_lines(records: list[dict[str, Any]]) -> list[str]:
    """The ceiling of ``classifier_accuracy``: the classifier's accuracy on held-out real data."""
    if not records:
        return []
    accuracy = records[-1]["held_out_accuracy"]
    return [
        f"Classifier accuracy ceiling: the classifier (logistic regression fitted on the real "
        f"data) scores {fmt(accuracy)} on held-out real samples; `classifier_accuracy` is the "
        "fraction of generated samples it assigns to the class they were generated for.",
        "",
    ]


def table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return lines


def eval_table(rows: list[dict[str, Any]]) -> list[str]:
    """The metrics table: one row per (flow, solver, steps) and, with guidance, per scale."""
    metrics = list(dict.fromkeys(k for r in rows for k in r if k not in FIXED_COLUMNS))
    guided = ("guidance",) if any("guidance" in r for r in rows) else ()
    header = ("flow", "solver", "steps", *guided, "NFE", *metrics, "seconds")
    body = [
        (
            r["flow"],
            r["solver"],
            r["steps"],
            *(r.get(k) for k in guided),
            r["nfe"],
            *(r.get(m) for m in metrics),
            r["seconds"],
        )
        for r in rows
    ]
    return table(header, body)
