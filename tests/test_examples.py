"""Every example validates, and runs end to end with ``--set`` overrides that shrink it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

import flowkit as fk
from flowkit.experiment.config import load_config
from flowkit.experiment.schema import validate
from flowkit.experiment.stages import STAGE_TYPES

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
SMALL_MODELS = {
    "mlp": ["model.hidden=16", "model.depth=1"],
    "conv": ["model.hidden=8", "model.groups=4", "model.depth=1"],
    "unet": ["model.width=8", "model.groups=4", "model.mults=[1, 2]", "model.heads=2"],
}


def produces_flow(stage: dict) -> bool:
    return STAGE_TYPES.get(stage["type"]).factory.produces_flow


def shrink(config: dict) -> list[str]:
    """Overrides that make the resolved experiment ``config`` run in seconds, whatever its
    stages."""
    sets = [
        "training.steps=12",
        "training.batch_size=32",
        "training.checkpoint_every=6",
        "training.log_every=3",
        "evaluation.n_samples=32",
        "evaluation.solvers=[{name: euler, steps: [1, 2]}]",
        "plots.n_points=32",
        "plots.trajectories=4",
        "plots.trajectory_steps=4",
        "plots.nfe=[1, 2]",
        *SMALL_MODELS[config["model"]["name"]],
    ]
    for i, stage in enumerate(config["stages"]):
        if stage["type"] in ("reflow", "distill"):
            sets += [f"stages[{i}].num_pairs=64", f"stages[{i}].solver={{name: euler, steps: 2}}"]
        if produces_flow(stage) and stage.get("training"):
            sets.append(f"stages[{i}].training.steps=12")
        if stage["type"] == "evaluate" and stage.get("solvers"):
            sets.append(f"stages[{i}].solvers=[{{name: euler, steps: [1, 2]}}]")
    return sets


def test_there_are_eight_examples() -> None:
    assert [p.stem for p in EXAMPLES] == [
        "digits",
        "digits_conditional",
        "gaussians_to_moons_ot",
        "logit_normal",
        "moons_reflow",
        "photo_patches",
        "schedules_sd3",
        "two_half_circles",
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_validates(path: Path) -> None:
    config = validate(load_config(path))
    assert config.stages[-1].type == "evaluate"


def test_moons_reflow_example_is_the_default() -> None:
    """The file itself holds nothing but ``extends: default`` (comments aside), so the example
    and ``flowkit run`` without a file run the same experiment."""
    raw = yaml.safe_load((ROOT / "examples" / "moons_reflow.yaml").read_text())
    assert raw == {"extends": "default"}


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_shrunk(path: Path, tmp_path: Path) -> None:
    overrides = shrink(validate(load_config(path)).resolved)
    result = fk.run(path, overrides, out=tmp_path, quiet=True)
    flows = [s.name for s in result.config.stages if s.produces_flow]
    assert list(result.flows) == flows
    evals = [r for r in result.metrics if r["kind"] == "eval"]
    scales = result.config.evaluation.guidance or [None]  # a row per guidance scale
    assert [(r["flow"], r["nfe"], r.get("guidance")) for r in evals] == [
        (f, k, w) for f in flows for k in (1, 2) for w in scales
    ]
    assert all(math.isfinite(r["w2"]) for r in evals)
    assert (result.run_dir / "plots" / "evaluate_samples.png").is_file()
    assert (result.run_dir / "report.md").is_file()
