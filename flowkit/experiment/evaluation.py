"""Evaluation of trained flows: every solver × step count × metric, straightness, and plots.

All flows are integrated from the same source samples (and conditions) and compared with the
same target samples, so the rows of the metrics table differ only by flow and solver.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
from einops import rearrange
from torch import Tensor
from tqdm.auto import tqdm

import flowkit
from flowkit import distributed
from flowkit.conditions import LABEL_KEY
from flowkit.couplings import IndependentCoupling
from flowkit.experiment.classifier import needs_classifier, run_classifier
from flowkit.experiment.components import evaluation_distributions
from flowkit.experiment.context import EVALUATION_STREAM, Context, stage_seed
from flowkit.experiment.plots import write_plots
from flowkit.experiment.schema import Evaluation
from flowkit.experiment.specs import SolverSpec, registry
from flowkit.flow import Flow
from flowkit.metrics import Classifier, Metric
from flowkit.solvers.inputs import count_non_finite

TRAJECTORY_STEPS = 100


def flat(x: Tensor) -> Tensor:
    """``(B, ...) -> (B, D)`` on the CPU, for sample metrics."""
    return rearrange(x.detach().cpu(), "b ... -> b (...)")


def solve(flow: Flow, x0: Tensor, cond: dict[str, Tensor], **kwargs: Any) -> Any:
    """``fk.sample`` with the conditions passed only when there are any; under torchrun each
    rank integrates a slice of ``x0`` and every rank gets the whole result."""
    return distributed.sharded_sample(flow, x0, cond=cond or None, **kwargs)


def score(metric: Metric, x: Tensor, data: Mapping[str, Any]) -> float:
    """``metric`` of generated samples ``x``: against the target samples, or (``"classes"``
    metrics) against the labels they were generated for, with the run's classifier."""
    if metric.inputs == "classes":
        return float(metric(flat(x), data["cond"][LABEL_KEY].cpu(), data["classifier"]))
    return float(metric(flat(x), flat(data["x1"])))


def guidance_arguments(scale: float, options: Evaluation) -> dict[str, Any]:
    """``fk.sample``'s guidance arguments for one scale of the evaluation."""
    return {"guidance": scale, "guidance_interval": options.guidance_interval}


def evaluate_flow(
    ctx: Context,
    name: str,
    flow: Flow,
    data: Mapping[str, Any],
    options: Evaluation,
    stage: str,
) -> list[dict[str, Any]]:
    """Rows (one per solve: solver × steps × guidance scale) for ``flow``; each row is also
    appended to metrics.jsonl. With ``guidance`` scales, rows carry their ``guidance``."""
    rows = []
    runs = [run for spec in options.solvers for run in SolverSpec.parse(spec).runs()]
    solves = [(run, w) for run in runs for w in options.guidance or [None]]
    bar = tqdm(solves, desc=f"evaluate {name}", unit="solve", disable=not ctx.progress, leave=False)
    for run, w in bar:
        start = time.perf_counter()
        guided = {} if w is None else guidance_arguments(w, options)
        sol = solve(flow, data["x0"], data["cond"], **run.arguments(), **guided, check_finite=False)
        row: dict[str, Any] = {
            "kind": "eval",
            "stage": stage,
            "flow": name,
            "solver": run.name,
            "steps": run.sample_args.get("steps"),
            **({} if w is None else {"guidance": w}),
            "nfe": int(sol.nfe),
            "seconds": time.perf_counter() - start,
        }
        diverged = count_non_finite(sol.x)
        if diverged:  # reported as such: no metric of NaN samples
            row["diverged"] = diverged
            ctx.log(f"[{stage}] {name} with {run.name}: {diverged} non-finite samples (diverged)")
        for spec in options.metrics:
            metric = registry("metrics").build(spec)
            row[metric.name] = None if diverged else score(metric, sol.x, data)
        ctx.run.append_metric(row)
        rows.append(row)
    if options.straightness:
        measured = flowkit.metrics.trajectory_metrics(
            flow, data["x0"], "euler", TRAJECTORY_STEPS, cond=data["cond"] or None
        )
        row = {
            "kind": "straightness",
            "stage": stage,
            "flow": name,
            "straightness": measured.straightness,
            "path_energy": measured.path_energy,
            "transport_cost": measured.transport_cost,
        }
        ctx.run.append_metric(row)
        rows.append(row)
    return rows


def evaluation_data(ctx: Context, options: Evaluation) -> dict[str, Any]:
    """Source samples (with conditions) and target samples, the same for every evaluate stage
    with the same ``n_samples``, ``source`` and ``target``.

    They depend only on the experiment's seed (stage index -1, a stream no stage trains on), so
    runs with different stages are evaluated on the same samples. Without evaluation-specific
    ``source``/``target`` the sources are those of the experiment's coupling; with them, an
    independent coupling of the two draws the sources and their conditions.
    """
    n = options.n_samples
    g = torch.Generator().manual_seed(stage_seed(ctx.experiment.seed, EVALUATION_STREAM))
    coupling, target = ctx.base_coupling, ctx.target
    if options.source is not None or options.target is not None:
        source, target = evaluation_distributions(options, ctx.source, ctx.target)
        coupling = IndependentCoupling(source, target)
    x0, cond = coupling.sample_source(n, generator=g)
    x1 = target.sample(n, generator=g)
    return {
        "x0": x0.to(ctx.device),
        "cond": {k: v.to(ctx.device) for k, v in cond.items()},
        "x1": x1,
    }


def stage_classifier(ctx: Context, options: Evaluation, stage: str) -> Classifier | None:
    """The run's classifier when a metric needs it (its held-out accuracy is recorded as a
    ``classifier`` row of the stage: the ceiling of ``classifier_accuracy``), else None."""
    if not needs_classifier(options.metrics):
        return None
    classifier = run_classifier(ctx)
    ctx.run.append_metric(
        {"kind": "classifier", "stage": stage, "held_out_accuracy": classifier.held_out_accuracy}
    )
    return classifier


def evaluate_flows(
    ctx: Context, flows: Mapping[str, Flow], options: Evaluation, stage: str
) -> list[dict[str, Any]]:
    """Evaluate every flow, record the rows and write the plots."""
    data = evaluation_data(ctx, options)
    data["classifier"] = stage_classifier(ctx, options, stage)
    rows = []
    for name, flow in flows.items():
        ctx.log(f"[{stage}] evaluating {name!r}")
        flow.eval()
        with torch.no_grad():
            rows += evaluate_flow(ctx, name, flow, data, options, stage)
    if ctx.experiment.plots.enabled and ctx.run.writer:
        built = [registry("metrics").build(m) for m in options.metrics]
        metrics = [m.name for m in built if m.inputs == "samples"]  # plotted on log axes
        scales = options.guidance or [None]
        grid = [{} if w is None else guidance_arguments(w, options) for w in scales]
        write_plots(ctx, flows, data, stage, metrics[0] if metrics else None, grid)
    return rows
