"""Evaluate a flow: one row per solver × step count × guidance scale, with every sample metric,
plus its straightness and transport cost.

What an experiment's ``evaluate`` stage runs for each flow, and what a Python user runs to get
the same table. Every solve starts from the same sources ``x0`` (and conditions) and is compared
with the same target samples ``x1``, so rows differ only by solver and step count. A solve that
diverges is reported (``diverged``: its count of non-finite samples) with no metric values.

Example:
    >>> import flowkit as fk  # doctest: +SKIP
    >>> rows = fk.metrics.evaluate(flow, x0, x1, [{"name": "euler", "steps": [1, 8]}], ["w2"])
    >>> [(r["steps"], r["nfe"], r["w2"]) for r in rows if r["kind"] == "eval"]  # doctest: +SKIP
    [(1, 1, 0.41), (8, 8, 0.12)]
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from einops import rearrange
from torch import Tensor
from tqdm.auto import tqdm

from flowkit.checks import OptionError
from flowkit.conditions import LABEL_KEY
from flowkit.metrics.base import Metric
from flowkit.metrics.classifier import Classifier
from flowkit.metrics.trajectory import trajectory_metrics
from flowkit.registry import METRICS

#: Euler steps of the trajectories on which straightness and transport cost are measured.
TRAJECTORY_STEPS = 100
#: Metric inputs an evaluation can score: sample sets, and samples of requested classes.
EVALUATION_INPUTS = ("samples", "classes")


def flat(x: Tensor) -> Tensor:
    """``(B, ...) -> (B, D)`` on the CPU, for sample metrics."""
    return rearrange(x.detach().cpu(), "b ... -> b (...)")


def score(
    metric: Metric, x: Tensor, x1: Tensor, cond: Mapping[str, Tensor], classifier: Any
) -> float:
    """``metric`` of generated samples ``x``: against the target samples ``x1``, or (``"classes"``
    metrics) against the labels they were generated for, with ``classifier``."""
    if metric.inputs == "classes":
        return float(metric(flat(x), cond[LABEL_KEY].cpu(), classifier))
    return float(metric(flat(x), flat(x1)))


def guidance_settings(
    guidance: Sequence[float] | None, interval: Sequence[float] | None
) -> list[dict[str, Any]]:
    """``fk.sample``'s guidance keywords for each scale (``[{}]``, unguided, without scales)."""
    return [{"guidance": w, "guidance_interval": interval} for w in guidance or []] or [{}]


def check_evaluation(
    solvers: Sequence[Any], metrics: list[Metric], cond: Mapping[str, Tensor], classifier: Any
) -> None:
    """Refuse an evaluation :func:`evaluate` cannot score (see its ``Raises``)."""
    if len(solvers) == 0:
        raise OptionError("solvers", "must name at least one solver spec, got none")
    for metric in metrics:
        if metric.inputs not in EVALUATION_INPUTS:
            raise OptionError(
                "metrics",
                f"{metric.name!r} scores {metric.inputs!r}, not generated samples; straightness "
                "and transport cost are measured with straightness=True",
            )
        if metric.inputs == "classes" and (classifier is None or LABEL_KEY not in cond):
            raise OptionError(
                "classifier",
                f"{metric.name!r} needs a classifier and the labels cond['y'] the samples are "
                "generated for (fk.metrics.fit_classifier on real labelled data)",
            )


@torch.no_grad()
def evaluate(
    flow: Any,
    x0: Tensor,
    x1: Tensor,
    solvers: Sequence[str | Mapping[str, Any]],
    metrics: Sequence[str | Mapping[str, Any]] = ("w2", "energy_distance"),
    *,
    cond: Mapping[str, Tensor] | None = None,
    guidance: Sequence[float] | None = None,
    guidance_interval: Sequence[float] | None = None,
    classifier: Classifier | None = None,
    straightness: bool = True,
    progress: bool = False,
    desc: str = "evaluate",
) -> list[dict[str, Any]]:
    """The evaluation rows of ``flow`` (computed without gradients).

    Args:
        flow: a trained :class:`~flowkit.Flow` (or a callable ``f(x, t, **cond)``).
        x0: source samples ``(B, ...)``; ``cond``: their conditions.
        x1: target samples compared with each solve's samples.
        solvers: solver specs (:class:`~flowkit.solvers.spec.SolverSpec`); a list of ``steps``
            gives one row per step count.
        metrics: registered sample metrics (``flowkit list metrics``); ``"classes"`` metrics
            (``classifier_accuracy``) score the samples against their labels ``cond["y"]`` with
            ``classifier``.
        guidance, guidance_interval: classifier-free guidance scales, each solve repeated per
            scale (rows carry their ``guidance``), and the times where it applies.
        straightness: add a ``straightness`` row (straightness, path energy, transport cost
            along :data:`TRAJECTORY_STEPS` Euler steps).
        progress: show a progress bar, labelled ``desc``.

    Raises:
        OptionError: at ``solvers`` when there is none, at ``metrics`` for a metric that does
            not score generated samples, at ``classifier`` when a ``"classes"`` metric has no
            classifier or no labels ``cond["y"]``.

    Returns:
        Rows ``{"kind": "eval", "solver", "steps", ["guidance",] "nfe", "seconds", <metric>:
        value, ["diverged": count]}``, then the ``{"kind": "straightness", ...}`` row. Under
        torchrun each rank integrates a slice of ``x0`` and every rank gets every row.
    """
    from flowkit.distributed import sharded_sample
    from flowkit.solvers.inputs import count_non_finite
    from flowkit.solvers.spec import SolverSpec

    built = [METRICS.build(spec) for spec in metrics]
    cond = dict(cond or {})
    check_evaluation(solvers, built, cond, classifier)
    runs = [run for spec in solvers for run in SolverSpec.parse(spec).runs()]
    solves = [(run, g) for run in runs for g in guidance_settings(guidance, guidance_interval)]
    rows: list[dict[str, Any]] = []
    for run, guided in tqdm(solves, desc=desc, unit="solve", disable=not progress, leave=False):
        start = time.perf_counter()
        sol = sharded_sample(
            flow, x0, cond=cond or None, **run.arguments(), **guided, check_finite=False
        )
        row: dict[str, Any] = {
            "kind": "eval",
            "solver": run.name,
            "steps": run.sample_args.get("steps"),
            **({"guidance": guided["guidance"]} if guided else {}),
            "nfe": int(sol.nfe),
            "seconds": time.perf_counter() - start,
        }
        diverged = count_non_finite(sol.x)
        if diverged:  # reported as such: no metric of NaN samples
            row["diverged"] = diverged
        for metric in built:
            row[metric.name] = None if diverged else score(metric, sol.x, x1, cond, classifier)
        rows.append(row)
    if straightness:
        measured = trajectory_metrics(flow, x0, "euler", TRAJECTORY_STEPS, cond=cond or None)
        rows.append(
            {
                "kind": "straightness",
                "straightness": measured.straightness,
                "path_energy": measured.path_energy,
                "transport_cost": measured.transport_cost,
            }
        )
    return rows
