"""A tiny finished run (train -> reflow -> evaluate) and helpers to damage its files."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import torch

import flowkit as fk

TINY = {
    "name": "tiny",
    "model": {"name": "mlp", "dim": 2, "hidden": 16, "depth": 1},
    "training": {"steps": 40, "batch_size": 32, "checkpoint_every": 20, "log_every": 10},
    "evaluation": {
        "n_samples": 32,
        "solvers": [{"name": "euler", "steps": [1, 4]}],
        "metrics": ["w2"],
    },
    "plots": {"enabled": False},
    "stages": [
        {"type": "train"},
        {"type": "reflow", "num_pairs": 64, "solver": {"name": "euler", "steps": 2}},
        {"type": "evaluate"},
    ],
}

#: The files a finished tiny run reads back, by a short name.
FILES = {
    "ckpt_weights": "stages/train/checkpoints/step_00000040/flow.safetensors",
    "ckpt_optimizer": "stages/train/checkpoints/step_00000040/optimizer.pt",
    "ckpt_state": "stages/train/checkpoints/step_00000040/state.json",
    "ckpt_coupling": "stages/reflow/checkpoints/step_00000040/coupling.pt",
    "latest": "stages/train/checkpoints/latest",
    "shard": "stages/reflow/pairs/shard-00000.safetensors",
    "manifest": "stages/reflow/pairs/manifest.json",
    "done": "stages/train/done.json",
    "config": "config.yaml",
    "weights": "stages/train/flow.safetensors",
}
#: The stage a resume test interrupts for each file (None: resume the finished run as it is).
OWNER = {
    "ckpt_weights": "train",
    "ckpt_optimizer": "train",
    "ckpt_state": "train",
    "ckpt_coupling": "reflow",
    "latest": "train",
    "shard": "reflow",
    "manifest": "reflow",
    "done": None,
    "config": None,
    "weights": None,
}


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip(path: Path) -> None:
    """Flip one byte in the middle (of the data, past any header)."""
    data = bytearray(path.read_bytes())
    i = len(data) * 3 // 4
    data[i] ^= 0x55
    path.write_bytes(bytes(data))


def empty(path: Path) -> None:
    path.write_bytes(b"")


def delete(path: Path) -> None:
    path.unlink()


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncate": truncate,
    "flip": flip,
    "empty": empty,
    "delete": delete,
}


def make_run(out: Path) -> tuple[Path, dict[str, dict[str, torch.Tensor]]]:
    """A finished tiny run and the final weights of each flow stage."""
    result = fk.run(TINY, out=out, quiet=True)
    weights = {name: flow.state_dict() for name, flow in result.flows.items()}
    return result.run_dir, weights


def copy_run(run: Path, to: Path) -> Path:
    return Path(shutil.copytree(run, to / run.name, symlinks=True))


def unfinish(run: Path, stage: str | None) -> None:
    """Make ``run`` look interrupted in ``stage``: its and later stages' done.json removed."""
    order = [s["type"] for s in TINY["stages"]]
    if stage is None:
        return
    for name in order[order.index(stage) :]:
        (run / "stages" / name / "done.json").unlink(missing_ok=True)


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
