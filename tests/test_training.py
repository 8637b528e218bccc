"""fk.train: learning, batch/time drawing, callbacks, NaN handling and argument errors."""

from __future__ import annotations

import json

import pytest
import torch
from training_toys import NaNAfter, ShiftCoupling, ToyBatch, make_flow, weights_equal

import flowkit as fk
from flowkit.training import History, NonFiniteLossError, TrainingError, UShaped, load_weights


def test_training_learns_a_constant_velocity():
    """x1 = x0 + 3 has the exact velocity 3 everywhere: the loss must drop far below its start."""
    flow = make_flow()
    history = fk.train(
        flow, ShiftCoupling(deterministic=True), 300, 128, lr=3e-3, seed=0, progress=False
    )
    assert isinstance(history, History) and history.steps == 300 and len(history.losses) == 300
    assert history.losses[0] > 5.0
    assert sum(history.losses[-20:]) / 20 < 0.05
    t = torch.rand(64)
    v = flow.velocity(torch.randn(64, 2) + 3 * t[:, None], t)  # on the path: x_t = x0 + 3t
    assert torch.allclose(v, torch.full_like(v, 3.0), atol=0.5)
    assert history.samples_seen == 300 * 128 and history.wall_time > 0


def test_same_seed_same_run_different_seed_different_run():
    runs = []
    for seed in (0, 0, 1):
        flow = make_flow()
        runs.append((flow, fk.train(flow, ShiftCoupling(), 5, 16, seed=seed, progress=False)))
    assert runs[0][1].losses == runs[1][1].losses and weights_equal(runs[0][0], runs[1][0])
    assert runs[0][1].losses != runs[2][1].losses
    assert runs[0][1].seed == 0


def test_batches_and_times_come_from_the_trainer_generator():
    """Coupling first, then the time sampler, both from the trainer's generator, in that order."""
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t, **cond):
            seen.append((x.detach().clone(), t.detach().clone(), cond))
            return x * self.w

    coupling, sampler = ShiftCoupling(), UShaped(a=4.0)
    fk.train(
        fk.Flow(Spy(), "rectified"), coupling, 2, 8, time_sampler=sampler, seed=3, progress=False
    )
    g = torch.Generator().manual_seed(3)
    for x_t, t, _ in seen:
        batch = coupling.sample(8, g)
        expected_t = sampler.sample(8, g)
        assert torch.equal(t, expected_t)
        a = expected_t[:, None]
        assert torch.allclose(x_t, a * batch.x1 + (1 - a) * batch.x0)


def test_coupling_times_and_conditions_are_used():
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t, **cond):
            seen.append((t, cond))
            return x * self.w

    class Fixed(ShiftCoupling):
        def sample(self, batch_size, generator=None):
            batch = super().sample(batch_size, generator)
            label = torch.arange(batch_size)
            return ToyBatch(batch.x0, batch.x1, {"label": label}, torch.full((batch_size,), 0.25))

    fk.train(fk.Flow(Spy(), "rectified"), Fixed(), 1, 4, seed=0, progress=False)
    t, cond = seen[0]
    assert torch.equal(t, torch.full((4,), 0.25)) and torch.equal(cond["label"], torch.arange(4))


def test_callback_gets_every_step_and_loss():
    calls = []
    history = fk.train(
        make_flow(),
        ShiftCoupling(),
        7,
        8,
        seed=0,
        progress=False,
        callback=lambda step, loss: calls.append((step, loss)),
    )
    assert calls == list(enumerate(history.losses, start=1))


def test_deterministic_coupling_marks_the_flow():
    flow = make_flow()
    fk.train(flow, ShiftCoupling(), 1, 4, seed=0, progress=False)
    assert flow.deterministic_coupling is False
    fk.train(flow, ShiftCoupling(deterministic=True), 1, 4, seed=0, progress=False)
    assert flow.deterministic_coupling is True


def test_float64_flow_trains_on_float32_data():
    flow = make_flow(dtype=torch.float64)
    history = fk.train(flow, ShiftCoupling(), 3, 8, seed=0, progress=False)
    assert len(history.losses) == 3 and next(flow.parameters()).dtype == torch.float64


def test_progress_bar_shows_loss_and_rate(capsys):
    fk.train(make_flow(), ShiftCoupling(), 3, 8, seed=0, progress=True)
    err = capsys.readouterr().err
    assert "3/3" in err and "loss=" in err and "step/s" in err
    fk.train(make_flow(), ShiftCoupling(), 3, 8, seed=0, progress=False)
    assert capsys.readouterr().err == ""


def test_nan_loss_names_step_and_last_checkpoint(tmp_path):
    flow = make_flow()
    with pytest.raises(NonFiniteLossError) as info:
        fk.train(
            flow,
            NaNAfter(bad_draw=13),
            50,
            8,
            seed=0,
            checkpoint_every=5,
            checkpoint_dir=tmp_path,
            progress=False,
        )
    err = info.value
    assert isinstance(err, TrainingError) and isinstance(err, RuntimeError)
    assert err.step == 13 and err.checkpoint == tmp_path / "step_00000010"
    assert "step 13" in str(err) and str(tmp_path / "step_00000010") in str(err)
    # The last checkpoint is loadable and the run can resume from it.
    reloaded = make_flow(seed=1)
    assert load_weights(reloaded, tmp_path) == tmp_path / "step_00000010"


def test_nan_loss_at_a_read_step_leaves_weights_of_the_last_good_step():
    """With ``log_every=1`` every loss is read (and checked) before its step changes the
    weights."""
    flow, reference = make_flow(), make_flow()
    fk.train(reference, ShiftCoupling(), 2, 8, seed=0, progress=False)
    with pytest.raises(NonFiniteLossError, match="at step 3; no checkpoint written"):
        fk.train(flow, NaNAfter(bad_draw=3), 10, 8, seed=0, progress=False, log_every=1)
    assert weights_equal(flow, reference)


def test_nan_loss_between_reads_names_the_first_bad_step_at_the_next_read():
    coupling = NaNAfter(bad_draw=3)
    with pytest.raises(NonFiniteLossError, match="at step 3; no checkpoint written") as info:
        fk.train(make_flow(), coupling, 20, 8, seed=0, progress=False, log_every=7)
    assert coupling.draws == 7 and info.value.step == 3


class SyncSpy:
    """Records, for every call of a tensor method that copies a value to the host, how many
    batches the coupling had handed out by then (the step in progress)."""

    METHODS = ("item", "tolist", "__bool__", "__float__", "__int__")

    def __init__(self, monkeypatch: pytest.MonkeyPatch, coupling: ShiftCoupling) -> None:
        self.calls: list[tuple[str, int]] = []
        for name in self.METHODS:
            monkeypatch.setattr(torch.Tensor, name, self.wrap(name, getattr(torch.Tensor, name)))
        self.coupling = coupling

    def wrap(self, name, method):
        def spied(tensor, *args, **kwargs):
            self.calls.append((name, self.coupling.draws))
            return method(tensor, *args, **kwargs)

        return spied


@pytest.mark.parametrize("time_sampler", ["uniform", "logit_normal", "mode", "cosmap", "u_shaped"])
def test_no_host_synchronisation_between_reads(monkeypatch, tmp_path, time_sampler):
    """The losses are read once at every log_every-th step, checkpoint step and the last step,
    and the host reads nothing else from a tensor during training. (SGD: Adam reads its step
    counter with ``.item()``, a tensor it keeps on the host even for a GPU model.)"""
    flow, coupling = make_flow(), ShiftCoupling()
    spy = SyncSpy(monkeypatch, coupling)
    history = fk.train(
        flow,
        coupling,
        23,
        16,
        optimizer="sgd",
        time_sampler=time_sampler,
        log_every=5,
        checkpoint_every=8,
        checkpoint_dir=tmp_path,
        seed=0,
        progress=False,
    )
    monkeypatch.undo()
    assert spy.calls == [("tolist", step) for step in (5, 8, 10, 15, 16, 20, 23)]
    assert len(history.losses) == 23 and all(isinstance(v, float) for v in history.losses)


def test_a_callback_reads_every_loss_as_a_float(monkeypatch):
    flow, coupling, seen = make_flow(), ShiftCoupling(), []
    spy = SyncSpy(monkeypatch, coupling)
    history = fk.train(
        flow,
        coupling,
        4,
        8,
        optimizer="sgd",
        seed=0,
        progress=False,
        callback=lambda step, loss: seen.append((step, type(loss))),
    )
    monkeypatch.undo()
    assert spy.calls == [("tolist", step) for step in (1, 2, 3, 4)]
    assert seen == [(step, float) for step in (1, 2, 3, 4)] and len(history.losses) == 4


class WithTimes(ShiftCoupling):
    """A coupling that fixes the times of its batches (as distillation does)."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def sample(self, batch_size, generator=None):
        batch = super().sample(batch_size, generator)
        return ToyBatch(batch.x0, batch.x1, t=torch.full((batch_size,), self.t))


class Beyond(UShaped):
    """A user's time sampler (not promising [0, 1]) that draws past 1."""

    def sample(self, n, generator=None):
        return super().sample(n, generator) + 1.0


@pytest.mark.parametrize(
    "options",
    [{"coupling": WithTimes(1.5)}, {"coupling": ShiftCoupling(), "time_sampler": Beyond()}],
    ids=["coupling-times", "user-sampler"],
)
def test_times_not_drawn_by_a_flowkit_sampler_are_still_checked(options):
    coupling = options.pop("coupling")
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        fk.train(make_flow(), coupling, 3, 8, seed=0, progress=False, **options)


def test_flowkit_time_samplers_promise_the_unit_interval():
    assert not Beyond.in_unit_interval and not fk.training.TimeSampler.in_unit_interval
    for name in fk.training.names():
        assert fk.training.build(name).in_unit_interval, name


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"optimizer": "adm"}, ValueError, "optimizer must be one of adam, adamw, sgd.*'adam'"),
        ({"optimizer": {"name": "adam", "lr": 1.0}}, ValueError, "pass lr= to train"),
        (
            {"optimizer": {"name": "sgd", "bogus": 1}},
            ValueError,
            "optimizer.bogus is not an option of 'sgd'",
        ),
        ({"lr_schedule": "cosin"}, ValueError, "lr_schedule must be one of constant, cosine"),
        ({"time_sampler": "logit"}, ValueError, "unknown time sampler 'logit'.*valid"),
        ({"time_sampler": 3}, TypeError, "time_sampler must be"),
        ({"steps": 0}, ValueError, "steps must be a positive integer.*, got 0"),
        ({"batch_size": 2.5}, ValueError, "batch_size must be a positive integer"),
        ({"lr": -1.0}, ValueError, "lr must be a number > 0, got -1.0"),
        ({"warmup": -3}, ValueError, "warmup must be an integer >= 0, got -3"),
        ({"grad_clip": 0}, ValueError, "grad_clip must be a number > 0, got 0"),
        ({"ema": 1.0}, ValueError, r"ema must be a number in \[0, 1\), got 1.0"),
        ({"weighting": "snr"}, ValueError, "weighting must be None, 'velocity'"),
        ({"checkpoint_every": 5}, ValueError, "checkpoint_every needs checkpoint_dir"),
        ({"final_weights": "ema"}, ValueError, "final_weights is 'ema', which needs ema"),
        ({"final_weights": "best"}, ValueError, "final_weights must be one of raw, ema"),
        ({"seed": 1, "generator": torch.Generator()}, ValueError, "either generator= or seed="),
        ({"seed": -1}, ValueError, "seed must be a non-negative integer"),
        ({"resume": True}, ValueError, "resume=True needs checkpoint_dir"),
        ({"resume": "/nonexistent/ckpt"}, FileNotFoundError, "not found"),
        ({"callback": 3}, TypeError, "callback must be callable"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    options = {"steps": 2, "batch_size": 4, "progress": False, **kwargs}
    steps, batch_size = options.pop("steps"), options.pop("batch_size")
    with pytest.raises(error, match=match):
        fk.train(make_flow(), ShiftCoupling(), steps, batch_size, **options)


def test_bad_flow_and_coupling_raise():
    with pytest.raises(TypeError, match=r"flow must be a flowkit\.Flow"):
        fk.train(torch.nn.Linear(2, 2), ShiftCoupling(), 1, 4)
    with pytest.raises(TypeError, match="coupling must be"):
        fk.train(make_flow(), object(), 1, 4)


def test_history_to_dict_is_json(tmp_path):
    history = fk.train(
        make_flow(), ShiftCoupling(), 3, 4, seed=0, ema=0.9, progress=False, checkpoint_dir=tmp_path
    )
    data = json.loads(json.dumps(history.to_dict()))
    assert data["losses"] == history.losses and data["checkpoint"] == str(
        tmp_path / "step_00000003"
    )
    assert data["flow_weights"] == "raw" and history.final_loss == history.losses[-1]


def test_coupling_spec_is_built_from_the_registry():
    spec = {"name": "independent", "source": "gaussian", "target": "moons"}
    by_spec = fk.train(make_flow(), spec, 3, 16, seed=0, progress=False)
    by_object = fk.train(make_flow(), fk.couplings.build(spec), 3, 16, seed=0, progress=False)
    assert by_spec.losses == by_object.losses
    with pytest.raises(ValueError, match=r"unknown coupling 'independant'.*Did you mean"):
        fk.train(make_flow(), "independant", 3, 16, seed=0, progress=False)
