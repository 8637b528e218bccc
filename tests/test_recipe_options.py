"""Recipe options of the reflow and distill stages (issue 16): where a new flow starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import flowkit as fk
from flowkit.experiment import ConfigError
from flowkit.experiment.config import load_config
from flowkit.experiment.schema import validate

PAIR_SOLVER = {"name": "euler", "steps": 2}
TINY: dict[str, Any] = {
    "name": "tiny",
    "model": {"name": "mlp", "dim": 2, "hidden": 16, "depth": 1},
    "training": {"steps": 20, "batch_size": 32},
    "evaluation": {"n_samples": 32, "solvers": [{"name": "euler", "steps": 1}], "metrics": []},
    "plots": {"n_points": 32, "trajectories": 4, "trajectory_steps": 2, "nfe": [1]},
    "stages": [
        {"type": "train", "name": "1-rf"},
        {"type": "reflow", "name": "2-rf", "num_pairs": 64, "solver": PAIR_SOLVER},
        {
            "type": "distill",
            "name": "student",
            "teacher": "1-rf",
            "init": "2-rf",
            "num_pairs": 64,
            "solver": PAIR_SOLVER,
            "training": {"steps": 1, "lr": 1e-12, "loss": "pseudo_huber"},
        },
    ],
}


def test_init_names_an_earlier_flow_stage() -> None:
    with pytest.raises(ConfigError, match=r"stages\[2\]\.init.*Did you mean '2-rf'"):
        validate(load_config(None, {"stages[2].init": "2rf"}))
    with pytest.raises(ConfigError, match=r"stages\[1\]\.init.*must name an earlier stage"):
        validate(load_config(None, {"stages[1].init": "distilled"}))
    experiment = validate(load_config(None, {"stages[2].init": "1-rf"}))
    assert experiment.stages[2].init == "1-rf"


def test_a_student_of_the_1rf_can_start_from_the_2rf(tmp_path: Path) -> None:
    result = fk.run(TINY, out=tmp_path, quiet=True)
    flows = {name: result.flows[name] for name in ("1-rf", "2-rf", "student")}
    student = torch.cat([p.flatten() for p in flows["student"].parameters()])
    rf2 = torch.cat([p.flatten() for p in flows["2-rf"].parameters()])
    rf1 = torch.cat([p.flatten() for p in flows["1-rf"].parameters()])
    assert torch.allclose(student, rf2, atol=1e-6)  # one step at lr 1e-12 from the 2-RF
    assert not torch.allclose(student, rf1, atol=1e-3)
