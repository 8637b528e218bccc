"""Flow-matching losses (issue 16): squared error, pseudo-Huber, L1, with loss weights."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import flowkit as fk
from flowkit.checks import OptionError
from flowkit.errors import ConfigError
from flowkit.experiment.config import load_config
from flowkit.experiment.schema import validate
from flowkit.losses import Loss, build_loss, default_huber_c
from flowkit.training.config import TrainConfig
from flowkit.training.generators import make_generator
from flowkit.training.trainer import Trainer

LOSSES = ["mse", "l1", "pseudo_huber", {"name": "pseudo_huber", "c": 0.5}]


class Linear(nn.Module):
    """``W·x + t·b`` on (B, D) or per-token (B, N, D) inputs, float64."""

    def __init__(self, dim: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(dim, dim).double()

    def forward(self, x, t):
        return self.lin(x) + t.reshape(*t.shape, *([1] * (x.ndim - t.ndim)))


def residual(flow: fk.Flow, x0, x1, t):
    """``model(x_t, t) − (x1 − x0)`` on the rectified path, by hand."""
    tt = t.reshape(*t.shape, *([1] * (x0.ndim - t.ndim)))
    return flow.model(tt * x1 + (1 - tt) * x0, t) - (x1 - x0)


def data(shape=(6, 3), t_shape=(6,)):
    g = torch.Generator().manual_seed(1)
    x0, x1 = (torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(2))
    return x0, x1, 0.05 + 0.9 * torch.rand(*t_shape, generator=g, dtype=torch.float64)


def test_each_loss_is_its_formula_per_sample() -> None:
    flow = fk.Flow(Linear(), "rectified")
    x0, x1, t = data()
    d = residual(flow, x0, x1, t)
    c = default_huber_c(3)
    expected = {
        "mse": (d**2).mean(1),
        "l1": d.abs().mean(1),
        "pseudo_huber": torch.sqrt((d**2).sum(1) + c**2) - c,
    }
    for name, value in expected.items():
        got = flow.loss(x0, x1, t, loss=name, reduction="none")
        torch.testing.assert_close(got, value)
        torch.testing.assert_close(flow.loss(x0, x1, t, loss=name), value.mean())
    assert c == pytest.approx(0.00054 * math.sqrt(3))


def test_pseudo_huber_is_quadratic_for_small_and_linear_for_large_errors() -> None:
    d = torch.tensor([[1e-4, 0.0], [30.0, 40.0]], dtype=torch.float64)
    value = Loss("pseudo_huber", 0.1)(d, units=1)
    assert value[0].item() == pytest.approx(1e-8 / 0.2, rel=1e-6)  # ||d||² / (2c)
    assert value[1].item() == pytest.approx(50.0 - 0.1, rel=1e-4)  # ||d|| − c


@pytest.mark.parametrize("loss", LOSSES, ids=str)
def test_weights_multiply_each_samples_loss(loss) -> None:
    flow = fk.Flow(Linear(), "rectified")
    x0, x1, t = data()
    plain = flow.loss(x0, x1, t, loss=loss, reduction="none")
    weighted = flow.loss(x0, x1, t, loss=loss, reduction="none", weighting=lambda s: 1 + 3 * s)
    torch.testing.assert_close(weighted, plain * (1 + 3 * t))
    mean = flow.loss(x0, x1, t, loss=loss, weighting=lambda s: 1 + 3 * s)
    torch.testing.assert_close(mean, (plain * (1 + 3 * t)).mean())


@pytest.mark.parametrize("loss", LOSSES, ids=str)
def test_per_token_times_make_each_token_a_unit(loss) -> None:
    flow = fk.Flow(Linear(), "rectified")
    x0, x1, t = data(shape=(4, 5, 3), t_shape=(4, 5))
    d = residual(flow, x0, x1, t)
    per_token = build_loss(loss)(d, units=2)
    assert per_token.shape == (4, 5)
    weight = 1 + t
    got = flow.loss(x0, x1, t, loss=loss, reduction="none", weighting=lambda s: 1 + s)
    torch.testing.assert_close(got, (per_token * weight).mean(1))


def test_loss_spec_errors_name_the_option_and_the_choices() -> None:
    with pytest.raises(OptionError, match=r"loss must be one of mse, pseudo_huber, l1.*huber"):
        build_loss("huber")
    with pytest.raises(OptionError, match=r"loss\.c applies to pseudo_huber only"):
        build_loss({"name": "mse", "c": 1.0})
    with pytest.raises(OptionError, match=r"loss\.c must be a finite number > 0, got 0"):
        build_loss({"name": "pseudo_huber", "c": 0})
    with pytest.raises(OptionError, match=r"unknown key\(s\) \['size'\]"):
        build_loss({"name": "pseudo_huber", "size": 1})
    with pytest.raises(TypeError, match="got int"):
        build_loss(3)
    spec = {"name": "pseudo_huber", "c": 0.5}
    assert build_loss(spec).spec() == spec
    assert build_loss("l1").spec() == "l1"


def test_the_trainer_minimises_the_configured_loss() -> None:
    flow = fk.Flow(Linear(2), "rectified").float()
    coupling = fk.couplings.build({"name": "independent", "source": "gaussian", "target": "moons"})
    config = TrainConfig(steps=1, batch_size=8, loss={"name": "pseudo_huber", "c": 0.3})
    trainer = Trainer(flow, coupling, config, make_generator(None, 0)[0])
    batch = trainer.draw_batch()
    expected = flow.loss(batch.x0, batch.x1, batch.t, loss=Loss("pseudo_huber", 0.3))
    assert trainer.compute_loss(batch).item() == pytest.approx(expected.item())
    assert expected.item() != pytest.approx(flow.loss(batch.x0, batch.x1, batch.t).item())
    assert config.fingerprint()["loss"] == {"name": "pseudo_huber", "c": 0.3}


def test_yaml_loss_reaches_the_stages_and_bad_values_name_their_key() -> None:
    experiment = validate(load_config(None, {"training.loss": "pseudo_huber"}))
    assert all(s.train_config.loss == Loss("pseudo_huber") for s in experiment.stages[:3])
    with pytest.raises(ConfigError, match=r"stages\[1\]\.training.*loss.*Did you mean 'l1'"):
        validate(load_config(None, {"stages[1].training.loss": "l2"}))


@pytest.mark.parametrize("name", ["mse", "l1", "pseudo_huber"])
@pytest.mark.parametrize("units", [1, 2])
def test_loss_mean_is_the_mean_of_the_unit_losses(name, units) -> None:
    error = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(1))
    loss = Loss(name)
    torch.testing.assert_close(loss.mean(error, units), loss(error, units).mean())
