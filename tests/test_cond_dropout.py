"""cond_dropout: conditions replaced by the null condition at the given rate, with the trainer's
generator (exact resume, no host synchronisation), and clear errors when it cannot apply."""

from __future__ import annotations

import math

import pytest
import torch
from conditional_toys import COUPLING, LabelNet
from torch import Tensor, nn

import flowkit as fk
from flowkit.checks import OptionError
from flowkit.conditions import drop_conditions, null_condition


def test_labels_are_replaced_by_the_null_label_at_the_given_rate() -> None:
    model = LabelNet()
    fk.train(fk.Flow(model), COUPLING, 20, 500, cond_dropout=0.3, seed=0, progress=False)
    labels = torch.cat(model.seen)
    n, p = labels.numel(), 0.3
    dropped = (labels == 3).float().mean().item()
    assert abs(dropped - p) <= 5 * math.sqrt(p * (1 - p) / n), dropped
    assert set(labels.unique().tolist()) == {0, 1, 2, 3}

    plain = LabelNet()
    fk.train(fk.Flow(plain), COUPLING, 3, 500, seed=0, progress=False)
    assert not any((y == 3).any() for y in plain.seen)


def test_all_conditions_of_a_row_are_dropped_together() -> None:
    cond = {"y": torch.arange(1000) % 5, "c": torch.ones(1000, 3)}
    null = null_condition(cond, num_classes=5)
    out = drop_conditions(cond, 0.5, null, torch.Generator().manual_seed(0))
    dropped_y = out["y"] == 5
    dropped_c = (out["c"] == 0).all(1)
    assert torch.equal(dropped_y, dropped_c) and 400 < int(dropped_y.sum()) < 600
    torch.testing.assert_close(out["c"][~dropped_c], torch.ones(int((~dropped_c).sum()), 3))
    unchanged = drop_conditions(cond, 0.0, null, torch.Generator().manual_seed(0))
    assert all(torch.equal(unchanged[k], cond[k]) for k in cond)


def test_resume_with_cond_dropout_equals_the_uninterrupted_run(tmp_path) -> None:
    full_flow = fk.Flow(LabelNet())
    full = fk.train(full_flow, COUPLING, 12, 32, cond_dropout=0.4, seed=3, progress=False)

    class Stop(Exception):
        pass

    def stop(step: int, loss: float) -> None:
        if step == 7:
            raise Stop

    options = {"cond_dropout": 0.4, "seed": 3, "progress": False, "checkpoint_every": 5}
    with pytest.raises(Stop):
        fk.train(
            fk.Flow(LabelNet()), COUPLING, 12, 32, checkpoint_dir=tmp_path, callback=stop, **options
        )
    resumed_flow = fk.Flow(LabelNet(seed=9))
    resumed = fk.train(
        resumed_flow, COUPLING, 12, 32, checkpoint_dir=tmp_path, resume=True, **options
    )
    assert resumed.start_step == 5 and resumed.losses == full.losses
    assert all(
        torch.equal(a, b)
        for a, b in zip(resumed_flow.parameters(), full_flow.parameters(), strict=True)
    )


def host_reads(monkeypatch, cond_dropout: float) -> list[str]:
    """The tensor-to-host reads of a short training run (data drawing included)."""
    calls: list[str] = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        method = getattr(torch.Tensor, name)

        def spied(tensor, *args, _name=name, _method=method, **kwargs):
            calls.append(_name)
            return _method(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spied)
    flow, coupling = fk.Flow(LabelNet()), fk.couplings.build(COUPLING)
    options = {"optimizer": "sgd", "log_every": 3, "seed": 0, "progress": False}
    fk.train(flow, coupling, 6, 16, cond_dropout=cond_dropout, **options)
    monkeypatch.undo()
    return calls


def test_cond_dropout_adds_no_host_synchronisation(monkeypatch) -> None:
    with_dropout = host_reads(monkeypatch, 0.5)
    assert with_dropout == host_reads(monkeypatch, 0.0)


class Unlabelled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x: Tensor, t: Tensor, **cond: Tensor) -> Tensor:
        return self.lin(x)


@pytest.mark.parametrize(
    ("model", "coupling", "match"),
    [
        (
            LabelNet,
            {"name": "independent", "source": "gaussian", "target": "moons"},
            "cond_dropout is 0.2 but the coupling gives no conditions",
        ),
        (Unlabelled, COUPLING, "cond_dropout cannot be applied: .*no num_classes attribute"),
    ],
)
def test_cond_dropout_errors(model, coupling, match) -> None:
    with pytest.raises(OptionError, match=match):
        fk.train(fk.Flow(model()), coupling, 2, 4, cond_dropout=0.2, progress=False)


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), "half"])
def test_cond_dropout_must_be_a_probability(value) -> None:
    with pytest.raises(OptionError, match=r"cond_dropout must be a number in \[0, 1\]"):
        fk.train(fk.Flow(LabelNet()), COUPLING, 2, 4, cond_dropout=value, progress=False)


def test_unknown_condition_keys_have_no_null() -> None:
    with pytest.raises(ValueError, match=r"cond\['mask'\] has no null value"):
        null_condition({"mask": torch.ones(2)}, 3)
