"""``fk.run`` end to end on a tiny pipeline: run directory, determinism, resume, eval, sample."""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

import flowkit as fk
from flowkit.experiment import ConfigError, evaluate_run, sample_run
from flowkit.experiment.context import EVALUATION_STREAM, stage_seed
from flowkit.experiment.evaluation import evaluation_data
from flowkit.experiment.runner import RunResult, load_run

PAIR_SOLVER = {"name": "euler", "steps": 4}
TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "model": {"name": "mlp", "dim": 2, "hidden": 16, "depth": 1},
    "training": {"steps": 30, "batch_size": 64, "checkpoint_every": 10, "log_every": 5},
    "evaluation": {
        "n_samples": 64,
        "solvers": [{"name": "euler", "steps": [1, 2]}, {"name": "heun", "steps": 2}],
        "metrics": ["w2"],
    },
    "plots": {"n_points": 64, "trajectories": 8, "trajectory_steps": 5, "nfe": [1, 2]},
    "stages": [
        {"type": "train"},
        {"type": "reflow", "num_pairs": 128, "solver": PAIR_SOLVER, "training": {"steps": 20}},
        {"type": "distill", "num_pairs": 128, "solver": PAIR_SOLVER, "training": {"steps": 20}},
        {"type": "evaluate"},
    ],
}
FLOWS = ("train", "reflow", "distill")


def without_time(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return fk.run(TINY, out=tmp_path_factory.mktemp("runs"), quiet=True)


def test_run_directory_contents(tiny_run: RunResult) -> None:
    root = tiny_run.run_dir
    assert root.name.startswith("tiny-")
    for name in FLOWS:
        assert (root / "stages" / name / "flow.safetensors").is_file()
        assert (root / "stages" / name / "checkpoints" / "latest").is_file()
        assert json.loads((root / "stages" / name / "done.json").read_text())["steps"] > 0
    assert (root / "stages" / "reflow" / "pairs" / "manifest.json").is_file()
    plots = sorted(p.name for p in (root / "plots").iterdir())
    assert plots == [
        "evaluate_samples.png",
        "evaluate_straightness.png",
        "evaluate_trajectories.png",
        "evaluate_w2_vs_nfe.png",
        "loss.png",
    ]
    assert all((root / "plots" / p).read_bytes().startswith(b"\x89PNG") for p in plots)
    report = (root / "report.md").read_text()
    assert "![samples](plots/evaluate_samples.png)" in report
    assert report.count("| distill | heun | 2 | 4 |") == 1


def test_metrics_records(tiny_run: RunResult) -> None:
    kinds = [r["kind"] for r in tiny_run.metrics]
    assert kinds.count("train") == 30 // 5 + 20 // 5 + 20 // 5
    evals = [r for r in tiny_run.metrics if r["kind"] == "eval"]
    assert [(r["flow"], r["solver"], r["steps"], r["nfe"]) for r in evals] == [
        (f, s, k, n)
        for f in FLOWS
        for s, k, n in (("euler", 1, 1), ("euler", 2, 2), ("heun", 2, 4))
    ]
    assert all(r["w2"] > 0 for r in evals)
    straight = [r for r in tiny_run.metrics if r["kind"] == "straightness"]
    assert [r["flow"] for r in straight] == list(FLOWS)


def test_resolved_config_is_saved(tiny_run: RunResult) -> None:
    saved = fk.experiment.RunDir(tiny_run.run_dir).read_config()
    assert saved == tiny_run.config.resolved
    assert saved["training"]["lr"] == 1e-3
    assert saved["stages"][1]["training"] == {"steps": 20}


def test_same_config_same_numbers(tiny_run: RunResult, tmp_path: Path) -> None:
    again = fk.run(TINY, out=tmp_path, quiet=True)
    assert without_time(again.metrics) == without_time(tiny_run.metrics)
    for name in FLOWS:
        a, b = again.flows[name].state_dict(), tiny_run.flows[name].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_reruns_only_unfinished_stages(tiny_run: RunResult, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(tiny_run.run_dir, root)
    (root / "stages" / "distill" / "done.json").unlink()
    (root / "stages" / "evaluate" / "done.json").unlink()
    kept = (root / "stages" / "train" / "flow.safetensors").stat().st_mtime_ns
    resumed = fk.run(resume=root, quiet=True)
    assert (root / "stages" / "train" / "flow.safetensors").stat().st_mtime_ns == kept
    # records of the rerun stages are replaced, not duplicated; the numbers are the same
    assert without_time(resumed.metrics) == without_time(tiny_run.metrics)


def test_resume_refuses_a_different_experiment(tiny_run: RunResult) -> None:
    other = copy.deepcopy(TINY)
    other["seed"] = 1
    with pytest.raises(ConfigError, match="seed: differs"):
        fk.run(other, resume=tiny_run.run_dir, quiet=True)


def test_eval_recomputes_the_same_rows(tiny_run: RunResult, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(tiny_run.run_dir, root)
    rows = evaluate_run(root, quiet=True)
    before = [r for r in tiny_run.metrics if r.get("stage") == "evaluate"]
    assert without_time(rows) == without_time(before)


def test_sample_run_uses_the_saved_flow(tiny_run: RunResult) -> None:
    x = sample_run(tiny_run.run_dir, n=10, solver="euler", steps=1, stage="reflow", seed=3)
    x0, _ = fk.couplings.build("independent").sample_source(10, torch.Generator().manual_seed(3))
    flow = tiny_run.flows["reflow"]
    with torch.no_grad():
        expected = x0 + flow.velocity(x0, torch.zeros(10))
    torch.testing.assert_close(x, expected)
    with pytest.raises(ConfigError, match="stage: must be one of") as err:
        sample_run(tiny_run.run_dir, n=2, stage="nope")
    assert err.value.problems[0][0] == "stage"


def test_evaluation_source_and_target_replace_the_data_sets(tiny_run: RunResult) -> None:
    ctx = load_run(tiny_run.run_dir)
    options = replace(ctx.experiment.evaluation, n_samples=50)
    plain = evaluation_data(ctx, options)
    source = {"name": "gaussian", "quasi_random": True}
    target = {"name": "moons", "stratified": True}
    even = evaluation_data(ctx, replace(options, source=source, target=target))
    # The sets are drawn from the evaluation stream in the usual order: the source, a target draw
    # for the conditions, then the reference targets.
    g = torch.Generator().manual_seed(stage_seed(ctx.experiment.seed, EVALUATION_STREAM))
    x0 = fk.data.build(source).sample(50, generator=g)
    fk.data.build(target).sample(50, generator=g)
    x1 = fk.data.build(target).sample(50, generator=g)
    torch.testing.assert_close(even["x0"], x0)
    torch.testing.assert_close(even["x1"], x1)
    assert not torch.allclose(plain["x0"], even["x0"])
    only_target = evaluation_data(ctx, replace(options, target=target))
    torch.testing.assert_close(only_target["x0"], plain["x0"])  # same i.i.d. source draw


def test_resume_after_fixing_a_later_stage_keeps_the_finished_ones(
    tiny_run: RunResult, tmp_path: Path
) -> None:
    """A run that failed in a later stage is resumed with that stage's options fixed (and a
    stage added at the end): the finished stages are kept, the changed one runs anew."""
    root = tmp_path / "copy"
    shutil.copytree(tiny_run.run_dir, root)
    for stage in ("distill", "evaluate"):
        (root / "stages" / stage / "done.json").unlink()
    kept = (root / "stages" / "reflow" / "flow.safetensors").read_bytes()
    fixed = copy.deepcopy(TINY)
    fixed["stages"][2]["training"] = {"steps": 10, "lr": 2e-3}
    fixed["stages"].append({"type": "evaluate", "name": "again", "flows": ["distill"]})
    resumed = fk.run(fixed, resume=root, quiet=True)
    assert (root / "stages" / "reflow" / "flow.safetensors").read_bytes() == kept
    assert (root / "stages" / "distill.replaced-1").is_dir()  # the old partial work, set aside
    assert json.loads((root / "stages" / "distill" / "done.json").read_text())["steps"] == 10
    assert resumed.config.resolved == fk.experiment.RunDir(root).read_config()
    assert {r["stage"] for r in resumed.metrics if r["kind"] == "eval"} == {"evaluate", "again"}
    changed_finished = copy.deepcopy(fixed)
    changed_finished["stages"][1]["num_pairs"] = 64
    with pytest.raises(ConfigError, match=r"stages\[1\]: differs from the finished stage 'reflow'"):
        fk.run(changed_finished, resume=root, quiet=True)
