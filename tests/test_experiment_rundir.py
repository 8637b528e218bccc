"""The run directory: atomic writes, completion markers, metrics, rank-0-only writing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flowkit.errors import ConfigError
from flowkit.experiment.rundir import RunDir


def test_create_gives_unique_timestamped_directories(tmp_path: Path) -> None:
    a = RunDir.create(tmp_path, "exp")
    b = RunDir.create(tmp_path, "exp")
    assert a.root != b.root
    assert a.root.name.startswith("exp-") and a.root.is_dir() and b.root.is_dir()


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "exp")
    run.write_text("report.md", "old")

    def broken(path: Path) -> None:
        path.write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        run.write_with("report.md", broken)
    assert run.path("report.md").read_text() == "old"
    assert sorted(p.name for p in run.root.iterdir()) == ["report.md"]


def test_tensors_and_config_round_trip(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "exp")
    run.save_tensors("stages/a/flow.safetensors", {"w": torch.arange(6.0).reshape(2, 3)})
    assert torch.equal(
        run.load_tensors("stages/a/flow.safetensors")["w"], torch.arange(6.0).reshape(2, 3)
    )
    run.write_config({"name": "exp", "training": {"lr": 1e-3}})
    assert run.read_config() == {"name": "exp", "training": {"lr": 1e-3}}
    assert RunDir.existing(run.root).root == run.root


def test_done_marker(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "exp")
    assert run.done("train") is None
    run.mark_done("train", {"steps": 3})
    assert run.done("train") == {"steps": 3, "files": {}}


def test_metrics_skip_a_truncated_line_and_can_be_pruned(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "exp")
    run.append_metric({"stage": "a", "loss": 1.0})
    run.append_metric({"stage": "b", "loss": 2.0})
    with run.path("metrics.jsonl").open("a") as fh:
        fh.write('{"stage": "b", "lo')  # a write cut short by a kill
    assert [r["stage"] for r in run.read_metrics()] == ["a", "b"]
    run.keep_metrics(lambda r: r["stage"] == "a")
    lines = run.path("metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"stage": "a", "loss": 1.0}]


def test_non_writer_writes_nothing(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r", writer=False)
    run.write_text("report.md", "x")
    run.append_metric({"a": 1})
    run.mark_done("s", {})
    run.save_tensors("w.safetensors", {"w": torch.zeros(1)})
    run.shared_dir("stages", "s")
    assert not (tmp_path / "r").exists()


def test_existing_and_latest_reject_non_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a flowkit run"):
        RunDir.existing(tmp_path)
    with pytest.raises(ConfigError, match="no run of 'exp'"):
        RunDir.latest(tmp_path, "exp")
    run = RunDir.create(tmp_path, "exp")
    run.write_config({"name": "exp"})
    assert RunDir.latest(tmp_path, "exp").root == run.root
