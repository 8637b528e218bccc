"""The `flowkit` command: help, validate, list, exit status 2, real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import flowkit as fk
from flowkit.cli import main
from flowkit.experiment.rundir import RunDir

TINY = {
    "name": "tiny",
    "model": {"name": "mlp", "dim": 2, "hidden": 16, "depth": 1},
    "training": {"steps": 40, "batch_size": 32, "checkpoint_every": 20},
    "evaluation": {
        "n_samples": 32,
        "solvers": [{"name": "euler", "steps": [1, 4]}],
        "metrics": ["w2"],
    },
    "plots": {"n_points": 32, "trajectories": 4, "trajectory_steps": 4, "nfe": [1]},
    "stages": [{"type": "train"}, {"type": "evaluate"}],
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def flowkit_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "flowkit", *args]


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("command", [[], ["run"], ["validate"], ["list"], ["sample"], ["eval"]])
def test_help_everywhere_with_examples(command: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: flowkit" in out
    assert "examples:" in out


def test_validate_ok(capsys: pytest.CaptureFixture) -> None:
    assert main(["validate"]) == 0
    assert "OK: moons_reflow: 1-rf (train), 2-rf (reflow)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("stages[1].solver.steps=-3", "stages[1].solver.steps: must be a positive integer, got -3"),
        ("training.lrr=1", "training.lrr: unknown key"),
        ("training.lr=-1", "training.lr: must be a number > 0"),
        ("model.name=transformer", "model.name: unknown model 'transformer'"),
        ("stages[1]=3", "stages[1]: must be a mapping"),
        ("stages[9].x=1", "--set: stages[9].x"),
    ],
)
def test_bad_config_exits_2_with_key_path(
    override: str, key: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for command in (["validate"], ["run", "--out", str(tmp_path)]):
        assert main([*command, "--set", override]) == 2
        err = capsys.readouterr().err
        assert key in err, err
        assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_list(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "solver"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("solvers:\n")
    assert "  euler " in out and "dopri5" in out
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(f"{kind}:" in out for kind in ("paths", "couplings", "models", "time_samplers"))
    assert "conv" in out
    assert main(["list", "solverz"]) == 2
    assert "Did you mean 'solvers'" in capsys.readouterr().err


@pytest.mark.slow
def test_subprocess_run_sample_eval(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "tiny.yaml", TINY)
    out = tmp_path / "runs"
    done = subprocess.run(
        flowkit_cmd("run", str(config), "--out", str(out), "--quiet", "--set", "seed=2"),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (run_dir,) = out.iterdir()
    assert (run_dir / "report.md").is_file()
    assert RunDir(run_dir).read_config()["seed"] == 2
    png = tmp_path / "x.png"
    done = subprocess.run(
        flowkit_cmd("sample", str(run_dir), "--steps", "4", "--n", "50", "--out", str(png)),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert png.read_bytes().startswith(b"\x89PNG")
    done = subprocess.run(
        flowkit_cmd("eval", str(run_dir), "--quiet"),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    evals = [r for r in RunDir(run_dir).read_metrics() if r["kind"] == "eval"]
    assert [r["steps"] for r in evals] == [1, 4]


def test_subprocess_bad_config_exits_2_without_traceback(tmp_path: Path) -> None:
    bad = write_yaml(tmp_path / "bad.yaml", {**TINY, "training": {"steps": -3, "lrr": 1}})
    done = subprocess.run(
        flowkit_cmd("run", str(bad), "--out", str(tmp_path / "runs")),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "training.steps: must be a positive integer" in done.stderr
    assert "training.lrr: unknown key" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    """SIGKILL once a checkpoint exists; --resume finishes with the uninterrupted run's weights."""
    long = {
        **TINY,
        "training": {"steps": 2000, "batch_size": 32, "checkpoint_every": 50, "log_every": 50},
    }
    config = write_yaml(tmp_path / "long.yaml", long)
    out = tmp_path / "runs"
    proc = subprocess.Popen(
        flowkit_cmd("run", str(config), "--out", str(out), "--quiet"),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    while not list(out.glob("*/stages/train/checkpoints/latest")):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    (run_dir,) = out.iterdir()
    assert not (run_dir / "stages" / "train" / "done.json").exists(), "killed too late"
    first = (run_dir / "stages" / "train" / "checkpoints" / "latest").read_text().strip()
    done = subprocess.run(
        flowkit_cmd("run", "--resume", str(run_dir), "--quiet"),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    info = json.loads((run_dir / "stages" / "train" / "done.json").read_text())
    assert info["steps"] == 2000
    assert (run_dir / "stages" / "train" / "checkpoints" / first).is_dir()
    train = [r["step"] for r in RunDir(run_dir).read_metrics() if r["kind"] == "train"]
    assert train == list(range(50, 2001, 50))
    reference = fk.run(long, out=tmp_path / "reference", quiet=True).flows["train"].state_dict()
    resumed = RunDir(run_dir).load_tensors("stages/train/flow.safetensors")
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
