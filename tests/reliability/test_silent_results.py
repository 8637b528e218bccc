"""No silent wrong results (issue 17, section 3): non-finite samples, conditions of the wrong
size, mismatched dtypes, degenerate inputs and half-span grids are reported, not scored."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import flowkit as fk
from flowkit.metrics import NonFiniteSamplesError
from flowkit.registry import RegistryError
from flowkit.solvers import NonFiniteSampleError

X = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("metric", ["w2", "sliced_w2", "energy_distance", "mmd"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_metrics_refuse_non_finite_samples(metric: str, bad: float) -> None:
    y = X.clone()
    y[3, 1] = bad
    fn = fk.metrics.build(metric)
    with pytest.raises(NonFiniteSamplesError, match="1 sample"):
        fn(y, X)
    with pytest.raises(NonFiniteSamplesError):
        fn(X, y)


def test_metric_options_are_checked_when_called_directly() -> None:
    with pytest.raises(ValueError, match="projections must be a positive integer"):
        fk.metrics.sliced_w2(X, X, projections=0)
    with pytest.raises(ValueError, match="max_iter must be a positive integer"):
        fk.metrics.w2(X, X, -1)


def test_sample_refuses_non_finite_start_and_result() -> None:
    x0 = X.clone()
    x0[0, 0] = float("nan")
    for solver, kw in (("euler", {"steps": 2}), ("dopri5", {})):
        with pytest.raises(NonFiniteSampleError, match="x0 holds 1 sample"):
            fk.sample(lambda x, t: -x, x0, solver, **kw)
    with pytest.raises(NonFiniteSampleError, match="produced 64 non-finite sample"):
        fk.sample(lambda x, t: x / 0.0, X, "euler", steps=2)
    out = fk.sample(lambda x, t: x / 0.0, X, "euler", steps=2, check_finite=False)
    assert not torch.isfinite(out.x).all()  # the opt-out returns them as they are


@pytest.mark.parametrize("solver", ["euler", "dopri5"])
def test_empty_batch_is_returned_as_is(solver: str) -> None:
    kw = {"steps": 2} if solver == "euler" else {}
    sol = fk.sample(lambda x, t: -x, torch.zeros(0, 2), solver, **kw)
    assert sol.x.shape == (0, 2) and sol.nfe == 0


def test_conditions_of_the_wrong_batch_size_are_refused() -> None:
    with pytest.raises(ValueError, match=r"cond\['y'\] has batch size 3, x0 has 64"):
        fk.sample(lambda x, t, y: -x, X, "euler", steps=2, cond={"y": torch.zeros(3)})


def test_dtype_and_device_mismatch_are_named() -> None:
    flow = fk.Flow(fk.models.build({"name": "mlp", "dim": 2, "hidden": 8}), "rectified")
    with pytest.raises(TypeError, match=r"x0 is torch.float64 .* parameters are torch.float32"):
        fk.sample(flow, X.double(), "euler", steps=2)


def test_paths_build_refuses_non_specs() -> None:
    for spec in (None, 3):
        with pytest.raises(RegistryError):
            fk.paths.build(spec)


def test_endpoint_guard_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"eps must be a number in \(0, 0.5\)"):
        fk.paths.AffinePath("rectified", eps=0.0)


class ExplodesInEval(torch.nn.Module):
    """Trains like a tiny MLP, then returns inf when evaluated (a diverged flow)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        return out if self.training else out / 0.0


def test_evaluation_reports_a_diverged_solver(tmp_path: Path) -> None:
    fk.registry.MODELS.add("explodes_in_eval_for_test", ExplodesInEval)
    try:
        config = {
            "model": "explodes_in_eval_for_test",
            "training": {"steps": 2, "batch_size": 4, "checkpoint_every": 2},
            "evaluation": {
                "n_samples": 8,
                "solvers": [{"name": "euler", "steps": 1}],
                "straightness": False,
            },
            "plots": {"enabled": False},
        }
        result = fk.run(config, out=tmp_path, quiet=True)
    finally:
        fk.registry.MODELS._entries.pop("explodes_in_eval_for_test")
    (row,) = [r for r in result.metrics if r["kind"] == "eval"]
    assert row["diverged"] == 8 and row["w2"] is None and row["energy_distance"] is None
    assert "| train | euler | 1 | 1 | 8 |" in (result.run_dir / "report.md").read_text()
