"""``flowkit run --nproc 2`` end to end: torchrun, DDP training, sharded reflow, rank-0 files."""

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
NUM_PAIRS = 25_000  # three shards of PAIR_CHUNK: ranks 0 and 1 write unequal shares
CONFIG = f"""
name: tiny
seed: 0
device: cpu
data: {{source: gaussian, target: moons}}
model: {{name: mlp, dim: 2, hidden: 16, depth: 2}}
training: {{steps: 6, batch_size: {BATCH}, checkpoint_every: 3}}
evaluation: {{n_samples: 101, solvers: [{{name: euler, steps: [1, 2]}}], metrics: [w2]}}
plots: {{enabled: true}}
stages:
  - {{type: train, name: 1-rf}}
  - type: reflow
    name: 2-rf
    num_pairs: {NUM_PAIRS}
    solver: {{name: euler, steps: 2}}
    training: {{steps: 3}}
  - {{type: evaluate}}
"""


@pytest.mark.slow
def test_flowkit_run_nproc_2(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(CONFIG)
    command = [sys.executable, "-m", "flowkit", "run", "tiny.yaml", "--nproc", "2", "--quiet"]
    # --nproc binds each rank to its own core by default (the results are the same either way)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "runs").iterdir()  # rank 0 made the one run directory

    info = json.loads((run / "stages" / "1-rf" / "done.json").read_text())
    assert info["effective_batch_size"] == 2 * BATCH and info["steps"] == 6
    state = json.loads((run / "stages/1-rf/checkpoints/step_00000006/state.json").read_text())
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    assert state["ranks"][0]["data"] != state["ranks"][1]["data"]  # two streams
    evals = [r for r in map(json.loads, (run / "metrics.jsonl").open()) if r["kind"] == "eval"]
    assert len(evals) == 4  # 2 flows x 2 step counts, written once
    assert (run / "report.md").is_file() and any((run / "plots").iterdir())

    # The pairs the two ranks wrote are the pairs one process makes from the same teacher.
    ctx = load_run(run)
    stored = PairedCoupling.from_store(run / "stages" / "2-rf" / "pairs")
    alone = fk.reflow(
        ctx.flows["1-rf"],
        ctx.base_coupling,
        solver="euler",
        steps=2,
        num_pairs=NUM_PAIRS,
        chunk_size=PAIR_CHUNK,
        seed=stage_seed(0, 1),
        progress=False,
    )
    assert torch.equal(stored.x0, alone.x0) and torch.equal(stored.x1, alone.x1)
