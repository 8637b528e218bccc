"""The ``evaluate`` stage: every flow × solver × NFE × metric with ``fk.metrics.evaluate``, plus
plots. Its options (:class:`Evaluation`) are also the top-level ``evaluation`` section, the
defaults of every evaluate stage."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from flowkit.checks import Custom, Flag, Integer, ListOf, Nullable, Real, Text, shown
from flowkit.conditions import LABEL_KEY, NULLABLE_KEYS
from flowkit.experiment.components import evaluation_distributions
from flowkit.experiment.evaluation import evaluate_flows
from flowkit.experiment.specs import (
    Collect,
    Problems,
    Spec,
    check_component,
    check_solvers,
    join_key,
    registry,
    report,
)
from flowkit.experiment.stages.base import STAGE_TYPES, Stage, fmt
from flowkit.metrics.evaluation import EVALUATION_INPUTS
from flowkit.options import check_options, option
from flowkit.registry import split_spec
from flowkit.solvers.guidance import check_interval

FIXED_COLUMNS = ("kind", "stage", "flow", "solver", "steps", "guidance", "nfe", "seconds")


def check_sample_metrics(value: Any, key: str, problems: Problems) -> None:
    """A list of registered metrics that score generated samples (:data:`EVALUATION_INPUTS`)."""
    if not isinstance(value, list):
        problems.append((key, f"must be a list of metric specs, got {shown(value)}"))
        return
    for i, spec in enumerate(value):
        item = join_key(key, i)
        before = len(problems)
        check_component("metrics", spec, item, problems)
        inputs = registry("metrics").build(spec).inputs if len(problems) == before else None
        if inputs is not None and inputs not in EVALUATION_INPUTS:
            problems.append(
                (
                    item,
                    f"{shown(spec)} does not compare two sample sets; evaluation metrics compare "
                    "generated and target samples, or generated samples and their requested "
                    "classes (classifier_accuracy); straightness and transport cost are "
                    "measured with `straightness: true`",
                )
            )


@dataclass
class Evaluation:
    """Evaluation options (the top-level `evaluation` section; an `evaluate` stage may override
    any of them)."""

    n_samples: int = option("Generated and target samples per metric.", Integer(2, 10**6), 2000)
    solvers: list[Spec] = option(
        "Solvers to evaluate; a list of `steps` gives one row per step count.",
        Collect(check_solvers, "a list of solver specs"),
        [
            {"name": "euler", "steps": [1, 2, 4, 8, 100]},
            {"name": "dopri5", "rtol": 1e-5, "atol": 1e-5},
        ],
    )
    metrics: list[Spec] = option(
        "Sample metrics comparing generated and target samples, or generated samples and their "
        "requested classes (`classifier_accuracy`, labelled data) (`flowkit list metrics`).",
        Collect(check_sample_metrics, "a list of metric specs"),
        ["w2", "energy_distance"],
    )
    straightness: bool = option(
        "Also measure straightness and transport cost along each flow's trajectories.",
        Flag(),
        True,
    )
    source: Spec | None = option(
        "Distribution of the evaluation's source samples (null: the data source). "
        "`{name: gaussian, quasi_random: true}` gives an even (scrambled Sobol) set, which "
        "with a stratified `target` measures the flow rather than the luck of the draw.",
        kind="distributions",
        default=None,
    )
    target: Spec | None = option(
        "Distribution of the reference target samples (null: the data target), e.g. "
        "`{name: moons, stratified: true}`; same event shape as the data target.",
        kind="distributions",
        default=None,
    )
    flows: list[str] | None = option(
        "Names of the stages whose flows are evaluated (null: every flow so far).",
        Nullable(ListOf(Text())),
        None,
    )
    guidance: list[float] | None = option(
        "Classifier-free guidance scales w (conditional data): every solve is repeated per "
        "scale, one metrics row each (null: no guidance; 1 is the conditional flow, 0 the "
        "unconditional one).",
        Nullable(ListOf(Real(), scalar_ok=True)),
        None,
    )
    guidance_interval: list[float] | None = option(
        "Apply guidance only for t in [t_lo, t_hi] (the conditional flow elsewhere); null: at "
        "every t.",
        Nullable(
            Custom(lambda v, n: list(check_interval(v, n)), "two times [t_lo, t_hi] in [0, 1]")
        ),
        None,
    )

    def __post_init__(self) -> None:
        check_options(self)


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

    def partial(self, name: str, flows: list[str]) -> EvaluateStage:
        """A copy that evaluates only those of its flows that are among ``flows``."""
        copy = dataclasses.replace(self, name=name)
        if self.options.flows:
            copy.options = dataclasses.replace(
                self.options, flows=[f for f in self.options.flows if f in flows]
            )
        return copy

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
