"""Evaluation of trained flows: every solver × step count × metric, straightness, and plots.

All flows are integrated from the same source samples (and conditions) and compared with the
same target samples, so the rows of the metrics table differ only by flow and solver.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from flowkit.couplings import IndependentCoupling
from flowkit.experiment.classifier import needs_classifier, run_classifier
from flowkit.experiment.components import evaluation_distributions
from flowkit.experiment.context import EVALUATION_STREAM, Context, stage_seed
from flowkit.experiment.plots import write_plots
from flowkit.experiment.specs import registry
from flowkit.flow import Flow
from flowkit.metrics import Classifier
from flowkit.metrics.evaluation import evaluate, guidance_settings

if TYPE_CHECKING:
    from flowkit.experiment.stages.evaluate import Evaluation


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
            found = evaluate(
                flow,
                data["x0"],
                data["x1"],
                options.solvers,
                options.metrics,
                cond=data["cond"],
                guidance=options.guidance,
                guidance_interval=options.guidance_interval,
                classifier=data["classifier"],
                straightness=options.straightness,
                progress=ctx.progress,
                desc=f"evaluate {name}",
            )
        for row in found:
            row = {"kind": row.pop("kind"), "stage": stage, "flow": name, **row}
            if row.get("diverged"):
                diverged = f"{row['diverged']} non-finite samples (diverged)"
                ctx.log(f"[{stage}] {name} with {row['solver']}: {diverged}")
            ctx.run.append_metric(row)
            rows.append(row)
    if ctx.experiment.plots.enabled and ctx.run.writer:
        built = [registry("metrics").build(m) for m in options.metrics]
        metrics = [m.name for m in built if m.inputs == "samples"]  # plotted on log axes
        grid = guidance_settings(options.guidance, options.guidance_interval)
        write_plots(ctx, flows, data, stage, metrics[0] if metrics else None, grid)
    return rows
