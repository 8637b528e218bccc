"""Guidance in YAML experiments (evaluation guidance scales, training.cond_dropout) and in
``flowkit sample --class --guidance``: rows per scale, clear errors at their key or flag."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conditional_toys import TARGET

import flowkit as fk
from flowkit.cli import main
from flowkit.errors import ConfigError
from flowkit.experiment.config import load_config
from flowkit.experiment.rundir import RunDir
from flowkit.experiment.runner import sample_run
from flowkit.experiment.schema import validate

CONDITIONAL = {
    "name": "conditional",
    "data": {"source": "gaussian", "target": TARGET},
    "model": {"name": "mlp", "dim": 2, "hidden": 32, "depth": 2, "num_classes": 3},
    "training": {"steps": 60, "batch_size": 64, "cond_dropout": 0.2, "lr": 3e-3},
    "evaluation": {
        "n_samples": 64,
        "solvers": [{"name": "euler", "steps": [2]}],
        "metrics": ["w2"],
        "straightness": False,
        "guidance": [0, 1, 3],
        "guidance_interval": [0.0, 0.9],
    },
    "plots": {"enabled": False},
    "stages": [{"type": "train"}, {"type": "evaluate"}],
}


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = fk.run(CONDITIONAL, out=tmp_path_factory.mktemp("runs"), quiet=True)
    return result.run_dir


def test_evaluation_writes_one_row_per_guidance_scale(conditional_run: Path) -> None:
    run = RunDir(conditional_run)
    evals = [r for r in run.read_metrics() if r["kind"] == "eval"]
    assert [r["guidance"] for r in evals] == [0.0, 1.0, 3.0]
    assert all(r["nfe"] == 2 and r["w2"] is not None for r in evals)
    assert len({r["w2"] for r in evals}) == 3
    report = (conditional_run / "report.md").read_text()
    assert "| flow | solver | steps | guidance | NFE | w2 | seconds |" in report


def test_sample_a_class_with_guidance(conditional_run: Path, tmp_path: Path) -> None:
    """Class 1 (mean (3, 0)) guided at w = 3 lands near its class; the CLI writes the file."""
    x = sample_run(conditional_run, 200, "euler", 8, label=1, guidance=3.0)
    assert x.shape == (200, 2) and x[:, 0].mean() > 1.5
    plain = sample_run(conditional_run, 200, "euler", 8, label=1)
    assert not torch.equal(x, plain)
    out = tmp_path / "grid.png"
    code = main(
        [
            "sample",
            str(conditional_run),
            "--class",
            "1",
            "--guidance",
            "2.5",
            "--n",
            "64",
            "--steps",
            "4",
            "--out",
            str(out),
        ]
    )
    assert code == 0 and out.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--class", "3"], "--class: must be 0 .. 2, got 3"),
        (["--class", "-1"], "--class: must be 0 .. 2, got -1"),
        (["--guidance", "nan"], "--guidance: must be a number, got nan"),
        (["--guidance-interval", "0.2", "0.8"], "--guidance-interval: needs guidance"),
        (
            ["--guidance", "2", "--guidance-interval", "0.8", "0.2"],
            "--guidance-interval: must have t_lo <= t_hi",
        ),
    ],
)
def test_sample_flag_errors(
    conditional_run: Path,
    tmp_path: Path,
    flags: list[str],
    message: str,
    capsys: pytest.CaptureFixture,
) -> None:
    code = main(
        ["sample", str(conditional_run), "--steps", "2", "--out", str(tmp_path / "x.npy"), *flags]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_class_and_guidance_on_an_unconditional_run(tmp_path: Path, capsys) -> None:
    config = {
        **CONDITIONAL,
        "data": {"source": "gaussian", "target": "moons"},
        "model": {"name": "mlp", "dim": 2, "hidden": 16, "depth": 1},
        "training": {"steps": 5, "batch_size": 16},
        "stages": [{"type": "train"}],
    }
    config.pop("evaluation")
    run_dir = fk.run(config, out=tmp_path, quiet=True).run_dir
    for flags, message in (
        (["--class", "1"], "--class: the run's data has no class labels"),
        (["--guidance", "2"], "--guidance: is 2.0 but there are no conditions"),
    ):
        code = main(
            ["sample", str(run_dir), "--steps", "2", "--out", str(tmp_path / "x.npy"), *flags]
        )
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("override", "key", "message"),
    [
        ({"evaluation.guidance": "strong"}, "evaluation.guidance", "must be a number"),
        ({"evaluation.guidance": [1, None]}, "evaluation.guidance[1]", "must be a number"),
        ({"evaluation.guidance_interval": [0.5]}, "evaluation.guidance_interval", "two times"),
        (
            {"evaluation.guidance_interval": [0.2, 1.2]},
            "evaluation.guidance_interval[1]",
            "in [0, 1]",
        ),
        (
            {"evaluation.guidance": None},
            "evaluation.guidance_interval",
            "needs evaluation guidance scales",
        ),
        (
            {"data.target": "moons", "model.num_classes": None},
            "evaluation.guidance",
            "the data give no labels y or vectors c",
        ),
        ({"training.cond_dropout": 1.5}, "training.cond_dropout", "must be a number in [0, 1]"),
    ],
)
def test_validation_errors_name_the_key(override: dict, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(load_config(CONDITIONAL, override))
    problems = dict(info.value.problems)
    assert key in problems and message in problems[key], problems


def test_sample_run_errors_name_its_own_arguments(conditional_run: Path) -> None:
    """From Python the errors name sample_run's arguments; the CLI maps them to its flags."""
    cases = [({"label": 3}, "label"), ({"guidance_interval": (0.2, 0.8)}, "guidance_interval")]
    for kwargs, key in cases:
        with pytest.raises(ConfigError) as err:
            sample_run(conditional_run, 10, "euler", 2, **kwargs)
        assert [k for k, _ in err.value.problems] == [key]
