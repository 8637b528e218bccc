"""The experiment schema: every key a YAML experiment may hold, its type, default and meaning.

``SCHEMA`` is the single source of truth for validation (:mod:`flowkit.experiment.validate`), for
filling defaults (``SCHEMA.resolve``) and for the generated reference ``docs/yaml.md``
(:mod:`flowkit.experiment.reference`). Stage overrides (``stages[i].training`` ...) reuse the same
fields as partial sections, so a stage can change any training option and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from flowkit.experiment.fields import (
    REQUIRED,
    Field,
    Number,
    Problems,
    Section,
    Tagged,
    Text,
    join_key,
)
from flowkit.experiment.sections import (
    check_sample_metrics,
    evaluation_fields,
    plots_fields,
    training_fields,
)
from flowkit.experiment.spec import Component, Solver
from flowkit.paths.affine import PREDICTIONS

DEVICE_PREFIXES = ("cpu", "cuda", "mps", "auto")


def check_device(value: Mapping[str, Any], key: str, problems: Problems) -> None:
    """``device`` must be ``cpu``, ``auto``, ``mps``, ``cuda`` or ``cuda:N``."""
    device = value.get("device")
    if not isinstance(device, str):
        return
    head, _, index = device.partition(":")
    if head not in DEVICE_PREFIXES or (index and (head != "cuda" or not index.isdigit())):
        problems.append(
            (join_key(key, "device"), f"must be cpu, auto, mps, cuda or cuda:N, got {device!r}")
        )
    elif head == "cuda" and not torch.cuda.is_available():
        problems.append(
            (join_key(key, "device"), f"{device!r} requested, but CUDA is not available")
        )
    elif head == "cuda" and index and int(index) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        problems.append((join_key(key, "device"), f"{device!r} requested, but {count} GPU(s) seen"))


def component_overrides() -> dict[str, Field]:
    """What a training stage may change about the flow it trains."""
    return {
        "model": Component(doc="Model (default: the top-level `model`).", kind="models"),
        "path": Component(doc="Path (default: the top-level `path`).", kind="paths"),
        "prediction": Text(doc="Model output (default: top-level).", choices=PREDICTIONS),
    }


def stage_section(doc: str, fields: dict[str, Field], extra_check: Any = None) -> Section:
    common: dict[str, Field] = {
        "type": Text(doc="Stage type.", default=REQUIRED),
        "name": Text(
            doc="Unique stage name (default: the type, numbered if repeated).", nullable=True
        ),
    }
    fields = {k: replace(f, nullable=True) if f.default is None else f for k, f in fields.items()}
    return Section(doc=doc, fields={**common, **fields}, extra_check=extra_check)


def pair_fields(num_pairs: int) -> dict[str, Field]:
    """Teacher, pair solver and size, shared by reflow and distill stages."""
    return {
        "teacher": Text(doc="Stage whose flow generates the pairs (default: the last flow)."),
        "solver": Solver(
            doc="Solver that maps x0 to the teacher's x1.",
            default={"name": "dopri5", "rtol": 1e-5, "atol": 1e-5},
        ),
        "num_pairs": Number(doc="Pairs generated.", default=num_pairs, integer=True, minimum=1),
        "init": Text(
            doc="Start the new flow from the teacher's weights or from scratch.",
            default="teacher",
            choices=("teacher", "fresh"),
        ),
        "training": Section(
            doc="Overrides of the top-level `training` options.",
            fields=training_fields(),
            partial=True,
        ),
    }


STAGES = Tagged(
    doc="The pipeline, run in order: `train`, `reflow`, `distill` and `evaluate` stages.",
    default=[{"type": "train"}, {"type": "evaluate"}],
    variants={
        "train": stage_section(
            "Train a flow on the current coupling (the top-level `coupling`, or the pairs of the "
            "last reflow stage).",
            {
                **component_overrides(),
                "coupling": Component(
                    doc="Coupling for this stage (default: the current coupling).",
                    kind="couplings",
                    build_check=False,
                ),
                "init": Text(doc="Stage whose final weights initialise this flow (default: none)."),
                "training": Section(
                    doc="Overrides of the top-level `training` options.",
                    fields=training_fields(),
                    partial=True,
                ),
            },
        ),
        "reflow": stage_section(
            "Generate (x0, teacher(x0)) pairs and train the next rectified flow on them.",
            pair_fields(20000),
        ),
        "distill": stage_section(
            "Distil the teacher into a `steps_k`-step student trained on its pairs.",
            {
                **pair_fields(20000),
                "steps_k": Number(
                    doc="Student steps (1: one-step).", default=1, integer=True, minimum=1
                ),
            },
        ),
        "evaluate": stage_section(
            "Evaluate flows (solvers × NFE × metrics) and write plots and report.md.",
            {k: replace(f, default=None) for k, f in evaluation_fields().items()},
            check_sample_metrics,
        ),
    },
)

SCHEMA = Section(
    doc="A flowkit experiment.",
    extra_check=check_device,
    fields={
        "name": Text(doc="Experiment name (prefix of the run directory).", default="experiment"),
        "description": Text(doc="One-line description shown in report.md.", default=""),
        "seed": Number(doc="Seed of every random stream.", default=0, integer=True, minimum=0),
        "device": Text(doc="cpu, cuda, cuda:N, mps or auto.", default="cpu"),
        "threads": Number(
            doc="torch CPU threads (null: torch's default).", nullable=True, integer=True, minimum=1
        ),
        "data": Section(
            doc="Source and target distributions.",
            default={},
            fields={
                "source": Component(
                    doc="Source distribution (null: standard Gaussian of the target's shape).",
                    nullable=True,
                    kind="distributions",
                ),
                "target": Component(
                    doc="Target distribution.", default="moons", kind="distributions"
                ),
            },
        ),
        "path": Component(
            doc="Probability path (`flowkit list paths`).", default="rectified", kind="paths"
        ),
        "prediction": Text(doc="What the model predicts.", default="velocity", choices=PREDICTIONS),
        "model": Component(
            doc="Network (`flowkit list models`).", default={"name": "mlp", "dim": 2}, kind="models"
        ),
        "coupling": Component(
            doc="How training pairs are drawn; `source`/`target` default to `data`.",
            default="independent",
            kind="couplings",
            build_check=False,
        ),
        "training": Section(
            doc="Training options (`fk.train`).", default={}, fields=training_fields()
        ),
        "evaluation": Section(
            doc="Evaluation options.",
            default={},
            fields=evaluation_fields(),
            extra_check=check_sample_metrics,
        ),
        "plots": Section(doc="Plot options.", default={}, fields=plots_fields()),
        "stages": STAGES,
    },
)
