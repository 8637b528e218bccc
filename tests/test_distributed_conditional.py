"""Conditional training under torchrun (``flowkit run --nproc 2``): class-aware minibatch OT,
``cond_dropout`` on each rank's own stream, a guided teacher's reflow pairs with their labels,
and guided evaluation rows written once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import flowkit as fk
from flowkit.couplings import PairedCoupling
from flowkit.experiment.context import stage_seed
from flowkit.experiment.runner import load_run
from flowkit.experiment.stages import PAIR_CHUNK

BATCH = 32
CONFIG = f"""
name: conditional
seed: 0
device: cpu
data:
  source: gaussian
  target: {{name: gaussian_mixture, means: [[-3, 0], [3, 0], [0, 3]], labels: [0, 1, 2], std: 0.4}}
model: {{name: mlp, dim: 2, hidden: 16, depth: 2, num_classes: 3}}
coupling: minibatch_ot
training: {{steps: 6, batch_size: {BATCH}, checkpoint_every: 3, cond_dropout: 0.3}}
evaluation:
  n_samples: 101
  solvers: [{{name: euler, steps: [2]}}]
  metrics: [w2]
  straightness: false
  guidance: [1, 2]
plots: {{enabled: false}}
stages:
  - {{type: train, name: 1-rf}}
  - type: reflow
    name: 2-rf
    num_pairs: 300
    guidance: 2.0
    solver: {{name: euler, steps: 2}}
    training: {{steps: 3}}
  - {{type: evaluate}}
"""


@pytest.mark.slow
def test_conditional_training_runs_under_torchrun_with_2_processes(tmp_path: Path) -> None:
    (tmp_path / "conditional.yaml").write_text(CONFIG)
    command = [sys.executable, "-m", "flowkit", "run", "conditional.yaml", "--nproc", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*command, "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "runs").iterdir()

    info = json.loads((run / "stages" / "1-rf" / "done.json").read_text())
    assert info["effective_batch_size"] == 2 * BATCH and info["steps"] == 6
    state = json.loads((run / "stages/1-rf/checkpoints/step_00000006/state.json").read_text())
    assert state["world_size"] == 2 and state["ranks"][0]["data"] != state["ranks"][1]["data"]
    assert state["config"]["cond_dropout"] == 0.3

    pairs = PairedCoupling.from_store(run / "stages" / "2-rf" / "pairs")
    assert pairs.cond["y"].shape == (300,) and set(pairs.cond["y"].tolist()) == {0, 1, 2}
    assert pairs.manifest["fingerprint"]["solver_options"]["guidance"] == 2.0
    # the pairs the two ranks wrote are those one process makes with the guided teacher
    ctx = load_run(run)
    alone = fk.reflow(
        ctx.flows["1-rf"],
        ctx.base_coupling,
        solver="euler",
        steps=2,
        guidance=2.0,
        num_pairs=300,
        chunk_size=PAIR_CHUNK,
        seed=stage_seed(0, 1),
        progress=False,
    )
    assert torch.equal(pairs.cond["y"], alone.cond["y"]) and torch.equal(pairs.x1, alone.x1)

    evals = [r for r in map(json.loads, (run / "metrics.jsonl").open()) if r["kind"] == "eval"]
    assert sorted((r["flow"], r["guidance"]) for r in evals) == [
        ("1-rf", 1.0),
        ("1-rf", 2.0),
        ("2-rf", 1.0),
        ("2-rf", 2.0),
    ]
