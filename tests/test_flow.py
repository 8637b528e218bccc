"""Flow: the CFM loss in each parameterisation, loss weights and the velocity conversion."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import flowkit as fk
from flowkit.paths import PREDICTIONS


class TinyModel(nn.Module):
    """A fixed smooth model ``tanh(W·[x, t])`` on (B, D) inputs, float64."""

    def __init__(self, dim: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.lin = nn.Linear(dim + 1, dim).double()

    def forward(self, x, t, offset=0.0):
        return torch.tanh(self.lin(torch.cat([x, t[:, None]], dim=1))) + offset


class Reparameterised(nn.Module):
    """The velocity model ``base`` expressed in ``prediction`` via the path (same flow)."""

    def __init__(self, base: nn.Module, path, prediction: str) -> None:
        super().__init__()
        self.base, self.path, self.prediction = base, path, prediction

    def forward(self, x, t):
        return self.path.convert(self.base(x, t), "velocity", self.prediction, x, t)


def batch(seed: int = 0, n: int = 6, dim: int = 3):
    g = torch.Generator().manual_seed(seed)
    x0, x1 = (torch.randn(n, dim, generator=g, dtype=torch.float64) for _ in range(2))
    t = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=torch.float64)
    return x0, x1, t


@pytest.mark.parametrize("schedule", ["rectified", "cosine", "vp"])
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_loss_equals_hand_computed_cfm_loss(schedule, prediction):
    model = TinyModel()
    flow = fk.Flow(model, schedule, prediction=prediction)
    x0, x1, t = batch()
    s = flow.path.schedule
    a, b, da, db = (f(t)[:, None] for f in (s.a, s.b, s.da, s.db))
    x_t = a * x1 + b * x0
    target = {"velocity": da * x1 + db * x0, "epsilon": x0, "x1": x1, "score": -x0 / b}[prediction]
    per_sample = ((model(x_t, t) - target) ** 2).mean(dim=1)
    torch.testing.assert_close(flow.loss(x0, x1, t), per_sample.mean())
    torch.testing.assert_close(flow.loss(x0, x1, t, reduction="none"), per_sample)
    weights = 1 + t
    torch.testing.assert_close(
        flow.loss(x0, x1, t, weighting=lambda tt: 1 + tt), (weights * per_sample).mean()
    )


@pytest.mark.parametrize("schedule", ["rectified", "cosine", "linear_vp", "edm"])
@pytest.mark.parametrize("prediction", ["epsilon", "x1", "score"])
def test_velocity_weighting_makes_losses_equal(schedule, prediction):
    path = fk.paths.build(schedule)
    base = TinyModel(seed=1)
    velocity_flow = fk.Flow(base, path, "velocity")
    other = fk.Flow(Reparameterised(base, path, prediction), path, prediction)
    x0, x1, t = batch(seed=2)
    reference = velocity_flow.loss(x0, x1, t, reduction="none")
    weighted = other.loss(x0, x1, t, weighting="velocity", reduction="none")
    torch.testing.assert_close(weighted, reference, rtol=1e-7, atol=1e-10)
    # without the weight the losses differ
    assert not torch.allclose(other.loss(x0, x1, t), velocity_flow.loss(x0, x1, t), rtol=1e-3)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_velocity_converts_the_model_output(prediction):
    path = fk.paths.build("cosine")
    model = TinyModel(seed=3)
    flow = fk.Flow(model, path, prediction)
    x, _, t = batch(seed=4)
    expected = path.convert(model(x, t), prediction, "velocity", x, t)
    torch.testing.assert_close(flow.velocity(x, t), expected)
    torch.testing.assert_close(flow(x, t), expected)
    torch.testing.assert_close(flow.predict(x, t), model(x, t))
    # a consistent reparameterisation gives back the velocity model
    base = TinyModel(seed=5)
    same = fk.Flow(Reparameterised(base, path, prediction), path, prediction)
    torch.testing.assert_close(same.velocity(x, t), base(x, t), rtol=1e-7, atol=1e-9)


def test_scalar_time_conditions_and_defaults():
    model = TinyModel()
    flow = fk.Flow(model)
    assert flow.prediction == "velocity" and flow.path.schedule.name == "rectified"
    assert flow.deterministic_coupling is False
    x = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(flow.velocity(x, 0.5), model(x, torch.full((4,), 0.5).double()))
    torch.testing.assert_close(
        flow.velocity(x, 0.5, offset=2.0), model(x, torch.full((4,), 0.5).double()) + 2.0
    )
    x0, x1, t = batch(n=4)
    with_cond = flow.loss(x0, x1, t, cond={"offset": 1.0})
    assert not torch.allclose(with_cond, flow.loss(x0, x1, t))


def test_random_times_follow_the_generator():
    flow = fk.Flow(TinyModel())
    x0, x1, _ = batch()
    first = flow.loss(x0, x1, generator=torch.Generator().manual_seed(7))
    again = flow.loss(x0, x1, generator=torch.Generator().manual_seed(7))
    other = flow.loss(x0, x1, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_loss_gradient_reaches_the_model():
    model = TinyModel()
    flow = fk.Flow(model, "cosine", "epsilon")
    x0, x1, t = batch()
    flow.loss(x0, x1, t).backward()
    assert model.lin.weight.grad is not None and model.lin.weight.grad.abs().sum() > 0
    assert list(flow.parameters()) == list(model.parameters())


def test_bad_arguments():
    model = TinyModel()
    with pytest.raises(ValueError, match=r"prediction must be one of velocity.*'velocity'"):
        fk.Flow(model, "rectified", prediction="velocty")
    with pytest.raises(ValueError, match="Did you mean 'cosine'"):
        fk.Flow(model, "cosin")
    flow = fk.Flow(model)
    x0, x1, t = batch()
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'none'"):
        flow.loss(x0, x1, t, reduction="sum")
    with pytest.raises(ValueError, match="weighting must be None, 'velocity' or a callable"):
        flow.loss(x0, x1, t, weighting="snr")
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        flow.loss(x0, x1, t + 1)
    with pytest.raises(ValueError, match="x0 and x1 must have the same shape"):
        flow.loss(x0, x1[:, :2], t)


def test_check_t_false_skips_only_the_time_check(monkeypatch):
    """``check_t=False`` (the trainer, for times of its own samplers) runs no range check; the
    default checks the given times exactly once, weighting included."""
    flow, (x0, x1, t) = fk.Flow(TinyModel(), "cosine", prediction="epsilon"), batch()
    checked = []
    monkeypatch.setattr(
        "flowkit.paths.affine.check_unit_interval", lambda t, name="t": checked.append(t)
    )
    unchecked = flow.loss(x0, x1, t, weighting="velocity", check_t=False)
    assert checked == []
    assert torch.equal(flow.loss(x0, x1, t, weighting="velocity"), unchecked)
    assert len(checked) == 1 and torch.equal(checked[0], t)
    flow.loss(x0, x1, weighting="velocity")  # times it draws itself: in [0, 1) already
    assert len(checked) == 1
