"""The four stage types: ``train``, ``reflow``, ``distill`` and ``evaluate``.

Each runner wires registry-built parts into the public API (``fk.train``, ``fk.reflow``,
``fk.distill``) and returns the information stored in the stage's completion marker. Training
writes resumable checkpoints under ``stages/<name>/checkpoints`` and resumes from the last one;
reflow and distillation keep their pair stores under ``stages/<name>/pairs`` (finished shards
are reused on resume).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import flowkit
from flowkit.experiment.components import (
    build_coupling,
    evaluation_options,
    train_kwargs,
    training_options,
)
from flowkit.experiment.context import Context, Runner, stage_seed
from flowkit.experiment.evaluation import evaluate_flows
from flowkit.experiment.spec import split_solver
from flowkit.flow import Flow

PAIR_CHUNK = 10_000


def log_losses(ctx: Context, name: str, losses: list[float], every: int) -> None:
    """Record the mean loss of each window of ``every`` steps in metrics.jsonl."""
    for start in range(0, len(losses), every):
        window = losses[start : start + every]
        ctx.run.append_metric(
            {
                "kind": "train",
                "stage": name,
                "step": start + len(window),
                "loss": sum(window) / len(window),
            }
        )


def fit(ctx: Context, stage: Mapping[str, Any], index: int, flow: Flow, coupling: Any) -> Any:
    """Train ``flow`` on ``coupling`` with the stage's training options (resumable)."""
    options = training_options(ctx.config, stage)
    ckpt_dir = ctx.run.shared_dir("stages", stage["name"], "checkpoints")
    history = flowkit.train(
        flow,
        coupling,
        options["steps"],
        options["batch_size"],
        **train_kwargs(options),
        final_weights="ema" if options["ema"] is not None else "raw",
        checkpoint_every=options["checkpoint_every"] if ckpt_dir is not None else None,
        checkpoint_dir=ckpt_dir,
        resume=ckpt_dir is not None,
        seed=stage_seed(ctx.config["seed"], index),
        progress=ctx.progress,
    )
    log_losses(ctx, stage["name"], history.losses, options["log_every"])
    return history


def summary(flow: Flow, history: Any) -> dict[str, Any]:
    return {
        "steps": history.steps,
        "final_loss": history.final_loss,
        "wall_time": history.wall_time,
        "effective_batch_size": history.effective_batch_size,
        "deterministic_coupling": bool(flow.deterministic_coupling),
    }


def start_flow(ctx: Context, stage: Mapping[str, Any], index: int, init: str | None) -> Flow:
    """A new flow for ``stage``: a copy of flow ``init`` (a stage name) or a fresh one."""
    if init is None:
        return ctx.new_flow(stage, stage_seed(ctx.config["seed"], index))
    return copy.deepcopy(ctx.flows[init])


def pair_options(ctx: Context, stage: Mapping[str, Any], index: int) -> dict[str, Any]:
    """Arguments of ``fk.reflow`` shared by reflow and distill stages."""
    name, sample_args, solver_options = split_solver(stage["solver"])
    return {
        "solver": name,
        "num_pairs": stage["num_pairs"],
        "store": ctx.run.shared_dir("stages", stage["name"], "pairs"),
        "chunk_size": PAIR_CHUNK,
        "seed": stage_seed(ctx.config["seed"], index),
        "progress": ctx.progress,
        **sample_args,
        **solver_options,
    }


def run_train(ctx: Context, stage: dict[str, Any], index: int) -> dict[str, Any]:
    """Train a flow on the stage's coupling (default: the current one)."""
    coupling = ctx.coupling
    if stage["coupling"] is not None:
        coupling = build_coupling(stage["coupling"], ctx.source, ctx.target)
    flow = start_flow(ctx, stage, index, stage["init"])
    history = fit(ctx, stage, index, flow, coupling)
    ctx.save_flow(stage, flow)
    return summary(flow, history)


def run_reflow(ctx: Context, stage: dict[str, Any], index: int) -> dict[str, Any]:
    """Pairs ``(x0, teacher(x0))`` from the base coupling's source, then the next flow on them."""
    teacher = ctx.teacher_name(stage)
    options = pair_options(ctx, stage, index)
    ctx.log(f"[{stage['name']}] generating {options['num_pairs']} pairs with {teacher!r}")
    pairs = flowkit.reflow(ctx.flows[teacher], ctx.base_coupling, **options)
    ctx.coupling = pairs
    flow = start_flow(ctx, stage, index, teacher if stage["init"] == "teacher" else None)
    history = fit(ctx, stage, index, flow, pairs)
    ctx.save_flow(stage, flow)
    return summary(flow, history)


def run_distill(ctx: Context, stage: dict[str, Any], index: int) -> dict[str, Any]:
    """A ``steps_k``-step student trained on the teacher's pairs (the ``distillation`` coupling)."""
    teacher = ctx.teacher_name(stage)
    k = stage["steps_k"]
    options = pair_options(ctx, stage, index)
    ctx.log(f"[{stage['name']}] distilling {teacher!r} into a {k}-step student")
    pairs = flowkit.reflow(
        ctx.flows[teacher], ctx.base_coupling, state_grid=k if k > 1 else None, **options
    )
    student = start_flow(ctx, stage, index, teacher if stage["init"] == "teacher" else None)
    spec = {"name": "distillation", "pairs": pairs, "path": student.path, "steps_k": k}
    segments = build_coupling(spec, ctx.source, ctx.target)
    history = fit(ctx, stage, index, student, segments)
    ctx.save_flow(stage, student)
    return {**summary(student, history), "steps_k": k}


def run_evaluate(ctx: Context, stage: dict[str, Any], index: int) -> dict[str, Any]:
    """Evaluate flows (solvers × NFE × metrics) and write plots; rows go to metrics.jsonl."""
    options = evaluation_options(ctx.config, stage)
    names = options["flows"] or list(ctx.flows)
    rows = evaluate_flows(ctx, {n: ctx.flows[n] for n in names}, options, stage["name"])
    return {"rows": len(rows), "flows": names}


RUNNERS: dict[str, Runner] = {
    "train": run_train,
    "reflow": run_reflow,
    "distill": run_distill,
    "evaluate": run_evaluate,
}
