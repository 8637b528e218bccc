"""The option sections of an experiment: ``training``, ``evaluation`` and ``plots``.

Each function returns fresh fields, so the top-level sections and the partial stage overrides
(``stages[i].training``, an ``evaluate`` stage's options) share one definition.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowkit.experiment.fields import Field, Flag, ListOf, Number, Problems, Text, join_key
from flowkit.experiment.spec import Component, Solver, registry
from flowkit.training.lr_schedules import LR_SCHEDULES
from flowkit.training.optimizers import OPTIMIZERS


def check_sample_metrics(value: Mapping[str, Any], key: str, problems: Problems) -> None:
    """Evaluation metrics must compare sample sets (``inputs == "samples"``)."""
    metrics = value.get("metrics")
    if not isinstance(metrics, list) or any(
        k.startswith(join_key(key, "metrics")) for k, _ in problems
    ):
        return
    for i, spec in enumerate(metrics):
        metric = registry("metrics").build(spec)
        if metric.inputs != "samples":
            problems.append(
                (
                    join_key(join_key(key, "metrics"), i),
                    f"{metric.name!r} takes {metric.inputs}, not two sample sets; evaluation "
                    "metrics compare generated and target samples (straightness and transport "
                    "cost are measured with `straightness: true`)",
                )
            )


def training_fields() -> dict[str, Field]:
    """Options of ``fk.train`` (the top-level ``training`` section and stage overrides)."""
    return {
        "steps": Number(doc="Optimisation steps.", default=2000, integer=True, minimum=1),
        "batch_size": Number(doc="Pairs per step.", default=256, integer=True, minimum=1),
        "optimizer": Text(doc="Optimizer.", default="adam", choices=tuple(OPTIMIZERS)),
        "lr": Number(doc="Learning rate.", default=1e-3, minimum=0, exclusive_minimum=True),
        "lr_schedule": Text(
            doc="Learning-rate schedule.", default="constant", choices=LR_SCHEDULES
        ),
        "warmup": Number(doc="Linear warm-up steps.", default=0, integer=True, minimum=0),
        "grad_clip": Number(
            doc="Clip the gradient norm to this value (null: no clipping).",
            nullable=True,
            minimum=0,
            exclusive_minimum=True,
        ),
        "ema": Number(
            doc="Decay of an exponential moving average of the weights, used for evaluation "
            "(null: none).",
            nullable=True,
            minimum=0,
            maximum=1,
        ),
        "time_sampler": Component(
            doc="Training-time distribution (`flowkit list time_samplers`).",
            default="uniform",
            kind="time_samplers",
        ),
        "weighting": Text(
            doc="Loss weighting: null (plain loss in the model's parameterisation) or `velocity` "
            "(the weight that makes any parameterisation's loss equal the velocity MSE).",
            nullable=True,
            choices=("velocity",),
        ),
        "checkpoint_every": Number(
            doc="Write a resumable checkpoint every this many steps.",
            default=500,
            integer=True,
            minimum=1,
        ),
        "log_every": Number(
            doc="Record the loss in metrics.jsonl every this many steps.",
            default=10,
            integer=True,
            minimum=1,
        ),
    }


def evaluation_fields() -> dict[str, Field]:
    """Options of the evaluation (the top-level ``evaluation`` section and ``evaluate`` stages)."""
    return {
        "n_samples": Number(
            doc="Generated and target samples per metric.", default=2000, integer=True, minimum=2
        ),
        "solvers": ListOf(
            doc="Solvers to evaluate; a list of `steps` gives one row per step count.",
            default=[
                {"name": "euler", "steps": [1, 2, 4, 8, 100]},
                {"name": "dopri5", "rtol": 1e-5, "atol": 1e-5},
            ],
            item=Solver(many_steps=True),
        ),
        "metrics": ListOf(
            doc="Sample metrics comparing generated and target samples (`flowkit list metrics`).",
            default=["w2", "energy_distance"],
            item=Component(kind="metrics", build_check=False),
        ),
        "straightness": Flag(
            doc="Also measure straightness and transport cost along each flow's trajectories.",
            default=True,
        ),
        "source": Component(
            doc="Distribution of the evaluation's source samples (null: the data source). "
            "`{name: gaussian, quasi_random: true}` gives an even (scrambled Sobol) set, which "
            "with a stratified `target` measures the flow rather than the luck of the draw.",
            nullable=True,
            kind="distributions",
        ),
        "target": Component(
            doc="Distribution of the reference target samples (null: the data target), e.g. "
            "`{name: moons, stratified: true}`; same event shape as the data target.",
            nullable=True,
            kind="distributions",
        ),
        "flows": ListOf(
            doc="Names of the stages whose flows are evaluated (null: every flow).",
            nullable=True,
            item=Text(),
        ),
    }


def plots_fields() -> dict[str, Field]:
    """Options of the plots written to ``plots/``."""
    return {
        "enabled": Flag(doc="Write PNG plots and embed them in report.md.", default=True),
        "nfe": ListOf(
            doc="Euler step counts shown in the samples grid.",
            default=[1, 2, 8, 100],
            item=Number(integer=True, minimum=1),
        ),
        "n_points": Number(doc="Points per scatter panel.", default=1000, integer=True, minimum=1),
        "trajectories": Number(
            doc="Trajectories drawn per flow in trajectories.png (0: no trajectory plot).",
            default=64,
            integer=True,
            minimum=0,
        ),
        "trajectory_steps": Number(
            doc="Euler steps of the plotted trajectories.", default=100, integer=True, minimum=1
        ),
    }
