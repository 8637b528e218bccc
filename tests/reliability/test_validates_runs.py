"""A config that validates must run: the configs that used to validate and then crash are now
refused by `flowkit validate`, each with its key path (issue 17, section 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

import flowkit as fk
from flowkit.errors import ConfigError
from flowkit.experiment.config import load_config
from flowkit.experiment.schema import validate

# (override, key path of the problem, a phrase of its message)
REFUSED = [
    ("training.ema=1.0", "training.ema", "[0, 1)"),
    ("evaluation.solvers=[euler]", "evaluation.solvers[0].steps", "exactly one of"),
    ("evaluation.solvers=[{name: dopri5, steps: 4}]", "evaluation.solvers[0].steps", "adaptive"),
    ("stages[1].solver={name: dopri5, rtol: 0}", "stages[1].solver.rtol", "> 0"),
    ("stages[1].solver={name: dopri5, rtol: .nan}", "stages[1].solver.rtol", "> 0"),
    ("stages[1].solver={name: dopri5, max_num_steps: 0}", "stages[1].solver.max_num_steps", ""),
    ("stages[1].solver={name: dopri5, first_step: 0}", "stages[1].solver.first_step", "> 0"),
    ("stages[1].solver={name: stochastic, steps: 2, eta: 2}", "stages[1].solver.eta", "[0, 1]"),
    ("stages[1].solver={name: stochastic, steps: 2, noise: x}", "stages[1].solver.noise", "one of"),
    ("stages[1].solver={name: euler, grid: [0, 0.7, 0.5, 1]}", "stages[1].solver.grid", "monotone"),
    ("evaluation.solvers=[{name: euler, grid: [1, 0]}]", "evaluation.solvers[0]", "t = 0"),
    ("evaluation.solvers=[{name: euler, grid: [0, 0.5]}]", "evaluation.solvers[0]", "t = 1"),
    (
        "evaluation.metrics=[{name: sliced_w2, projections: 0}]",
        "evaluation.metrics[0].projections",
        "positive",
    ),
    ("evaluation.metrics=[{name: mmd, bandwidth: 0}]", "evaluation.metrics[0].bandwidth", "> 0"),
    ("evaluation.metrics=[{name: w2, max_iter: -1}]", "evaluation.metrics[0].max_iter", "positive"),
    (
        "evaluation.metrics=[{name: energy_test, permutations: 0}]",
        "evaluation.metrics[0].permutations",
        "positive",
    ),
    ("stages[3].flows=[distilled, later]", "stages[3].flows[1]", "earlier stage"),
    ("stages=[{type: evaluate, flows: [t]}, {type: train, name: t}]", "stages[0]", "needs a flow"),
    ("threads=100000", "threads", "up to 1024"),
    ("training.batch_size=100000000000", "training.batch_size", "up to"),
    ("evaluation.n_samples=100000000", "evaluation.n_samples", "[2, 1000000]"),
    ("plots.nfe=[1, 100000000]", "plots.nfe[1]", "up to"),
    ("stages[2].steps_k=100000000", "stages[2].steps_k", "up to"),
    ("model.hidden=100000000", "model.hidden", "up to"),
    ("model.hidden=60000", "model", "GiB"),
    ("device=mps", "device", "not available"),
    ("model.dim=3", "model", "does not fit the data"),
    ("model={name: conv, channels: 1}", "model", "does not fit the data"),
    ("stages[0].model={name: mlp, dim: 5}", "stages[0].model", "does not fit the data"),
    ("coupling={name: paired, store: /nonexistent/store}", "coupling", "no manifest.json"),
    ("stages[0].coupling={name: paired, store: /nonexistent}", "stages[0].coupling", "manifest"),
    ("data.target={name: gaussian, dim: 2, std: -1}", "data.target", "std"),
    ("name=../outside", "name", "'/'"),
    ("name=/abs/path", "name", "'/'"),
    ('name="a\\0b"', "name", "NUL"),
    ("name=" + "x" * 300, "name", "bytes"),
    ("stages[0].name=..", "stages[0].name", "'.'"),
    ("stages[1].name=a/.", "stages[1].name", "'/'"),
    ("stages[0].name=Evaluate", "stages[3].name", "duplicate"),
]


@pytest.mark.parametrize(("override", "key", "phrase"), REFUSED, ids=[r[0][:50] for r in REFUSED])
def test_what_would_crash_later_is_refused_by_validate(
    override: str, key: str, phrase: str
) -> None:
    with pytest.raises(ConfigError) as info:
        validate(load_config(None, [override]))
    problems = dict(info.value.problems)
    assert key in problems, info.value.report()
    assert phrase in problems[key], problems[key]


def test_seeds_beyond_2_53_run(tmp_path: Path) -> None:
    """Stage seeds are derived by hashing, so any non-negative seed works."""
    config = {
        "seed": 2**70 + 3,
        "training": {"steps": 2, "batch_size": 4, "checkpoint_every": 2},
        "model": {"name": "mlp", "dim": 2, "hidden": 4, "depth": 1},
        "evaluation": {"n_samples": 8, "solvers": [{"name": "euler", "steps": 1}]},
        "plots": {"enabled": False},
    }
    result = fk.run(config, out=tmp_path, quiet=True)
    assert [r["nfe"] for r in result.metrics if r["kind"] == "eval"] == [1]


def test_a_model_that_reads_values_is_checked_on_the_cpu() -> None:
    """A forward pass that cannot run on meta tensors (it reads t) is not refused."""
    import torch

    class ReadsTime(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.linear(x) * (2.0 if float(t.max()) > 0.5 else 1.0)

    fk.registry.MODELS.add("reads_time_for_test", ReadsTime)
    try:
        assert validate({"model": "reads_time_for_test"}).model == "reads_time_for_test"
    finally:
        fk.registry.MODELS._entries.pop("reads_time_for_test")


def test_a_non_finite_loss_is_reported_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from flowkit.cli import main

    config = tmp_path / "nan.yaml"
    config.write_text(
        "training: {steps: 50, batch_size: 16, lr: 1.0e+30, checkpoint_every: 1}\n"
        "model: {name: mlp, dim: 2, hidden: 8, depth: 1}\nplots: {enabled: false}\n"
    )
    assert main(["run", str(config), "--out", str(tmp_path / "runs"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "non-finite loss (nan) at step" in err and "last good checkpoint" in err
    assert "Traceback" not in err
