"""Checkpoints: contents, atomic writes, and bit-exact resumption on CPU."""

from __future__ import annotations

import json
import os

import pytest
import torch
from training_toys import Interrupt, ShiftCoupling, make_flow, stop_at, weights_equal

import flowkit as fk
from flowkit.training import TrainConfig, Trainer, load_weights, read_checkpoint
from flowkit.training import checkpoint as ckpt

OPTIONS = {
    "optimizer": {"name": "adamw", "weight_decay": 0.01, "betas": [0.9, 0.99]},
    "lr": 3e-3,
    "lr_schedule": "cosine",
    "warmup": 4,
    "grad_clip": 1.0,
    "ema": 0.9,
    "time_sampler": {"name": "logit_normal", "m": 0.2, "s": 1.0},
    "weighting": "velocity",
}


def test_resume_equals_uninterrupted_run(tmp_path):
    """Stop after step 17 (last checkpoint: 10), resume into a differently initialised flow: the
    30 losses and the final raw and EMA weights equal the uninterrupted run's, bit for bit.
    Dropout in the model checks that the global torch RNG is restored as well."""
    reference = make_flow(dropout=True)
    full = fk.train(reference, ShiftCoupling(), 30, 16, seed=5, progress=False, **OPTIONS)

    flow = make_flow(dropout=True)
    with pytest.raises(Interrupt):
        fk.train(
            flow,
            ShiftCoupling(),
            30,
            16,
            seed=5,
            progress=False,
            checkpoint_every=10,
            checkpoint_dir=tmp_path,
            callback=stop_at(17),
            **OPTIONS,
        )
    torch.manual_seed(1234)  # the global RNG moved on since; resume must restore it
    resumed_flow = make_flow(seed=99, dropout=True)
    resumed = fk.train(
        resumed_flow,
        ShiftCoupling(),
        30,
        16,
        seed=5,
        progress=False,
        checkpoint_every=10,
        checkpoint_dir=tmp_path,
        resume=True,
        **OPTIONS,
    )
    assert resumed.resumed_from == tmp_path / "step_00000010" and resumed.start_step == 10
    assert resumed.losses == full.losses and resumed.lrs == full.lrs
    assert weights_equal(resumed_flow, reference)
    assert all(torch.equal(resumed.ema.shadow[k], v) for k, v in full.ema.shadow.items())
    assert resumed.ema.num_updates == full.ema.num_updates == 30
    assert [p.name for p in resumed.checkpoints] == ["step_00000020", "step_00000030"]


def test_resume_with_more_steps_extends_a_constant_schedule_run(tmp_path):
    reference = make_flow()
    full = fk.train(reference, ShiftCoupling(), 12, 8, seed=2, progress=False)
    flow = make_flow()
    fk.train(flow, ShiftCoupling(), 7, 8, seed=2, progress=False, checkpoint_dir=tmp_path)
    longer = fk.train(
        make_flow(seed=3),
        ShiftCoupling(),
        12,
        8,
        seed=2,
        progress=False,
        checkpoint_dir=tmp_path,
        resume=tmp_path / "step_00000007",
    )
    assert longer.losses == full.losses
    final = make_flow(seed=4)
    load_weights(final, tmp_path)
    assert weights_equal(final, reference)


def test_resume_true_without_checkpoint_starts_fresh(tmp_path):
    a = fk.train(
        make_flow(),
        ShiftCoupling(),
        3,
        4,
        seed=0,
        progress=False,
        checkpoint_dir=tmp_path / "new",
        resume=True,
    )
    b = fk.train(make_flow(), ShiftCoupling(), 3, 4, seed=0, progress=False)
    assert a.resumed_from is None and a.losses == b.losses


def test_resume_with_changed_options_warns(tmp_path):
    fk.train(make_flow(), ShiftCoupling(), 3, 4, seed=0, progress=False, checkpoint_dir=tmp_path)
    with pytest.warns(UserWarning, match=r"changed options \(batch_size: 4 -> 8"):
        fk.train(
            make_flow(),
            ShiftCoupling(),
            5,
            8,
            seed=0,
            progress=False,
            checkpoint_dir=tmp_path,
            resume=True,
        )


def test_fresh_run_over_existing_checkpoints_warns(tmp_path):
    fk.train(make_flow(), ShiftCoupling(), 2, 4, seed=0, progress=False, checkpoint_dir=tmp_path)
    with pytest.warns(UserWarning, match="already holds checkpoints"):
        fk.train(
            make_flow(), ShiftCoupling(), 2, 4, seed=0, progress=False, checkpoint_dir=tmp_path
        )


def test_checkpoint_contents(tmp_path):
    flow = make_flow()
    history = fk.train(
        flow,
        ShiftCoupling(deterministic=True),
        6,
        4,
        seed=0,
        ema=0.5,
        checkpoint_every=3,
        checkpoint_dir=tmp_path,
        progress=False,
    )
    assert (tmp_path / "latest").read_text() == "step_00000006"
    assert history.checkpoint == tmp_path / "step_00000006"
    files = sorted(os.listdir(history.checkpoint))
    assert files == ["ema.safetensors", "flow.safetensors", "optimizer.pt", "state.json"]
    state = json.loads((history.checkpoint / "state.json").read_text())
    assert state["step"] == 6 and state["history"]["losses"] == history.losses
    assert state["deterministic_coupling"] is True and state["ema_updates"] == 6
    g = torch.Generator().manual_seed(0)
    assert len(ckpt.decode_rng_state(state["rng"]["data"])) == len(g.get_state())
    optim = torch.load(history.checkpoint / "optimizer.pt", weights_only=True)
    assert set(optim) == {"optimizer", "scheduler"} and optim["scheduler"]["last_epoch"] == 6
    data = read_checkpoint(tmp_path / "step_00000003")
    assert data.state["step"] == 3 and data.ema is not None
    raw, averaged = make_flow(seed=7), make_flow(seed=7)
    load_weights(raw, tmp_path)
    load_weights(averaged, tmp_path, ema=True)
    assert weights_equal(raw, flow) and raw.deterministic_coupling is True
    with history.ema.average_parameters(flow):
        assert weights_equal(averaged, flow)
    assert not weights_equal(averaged, raw)


def test_rng_state_round_trips():
    g = torch.Generator().manual_seed(11)
    state = g.get_state()
    assert torch.equal(ckpt.decode_rng_state(ckpt.encode_rng_state(state)), state)


def test_interrupted_checkpoint_leaves_the_previous_one_intact(tmp_path, monkeypatch):
    flow = make_flow()
    fk.train(flow, ShiftCoupling(), 4, 4, seed=0, ema=0.9, progress=False, checkpoint_dir=tmp_path)
    before = {p: p.read_bytes() for p in (tmp_path / "step_00000004").iterdir()}

    def failing(obj):
        raise RuntimeError("killed while writing")

    monkeypatch.setattr(ckpt, "torch_to_bytes", failing)
    with pytest.raises(RuntimeError, match="killed while writing"):
        fk.train(
            flow,
            ShiftCoupling(),
            8,
            4,
            seed=0,
            ema=0.9,
            progress=False,
            checkpoint_dir=tmp_path,
            resume=True,
        )
    assert sorted(os.listdir(tmp_path)) == ["latest", "step_00000004"]
    assert (tmp_path / "latest").read_text() == "step_00000004"
    assert {p: p.read_bytes() for p in (tmp_path / "step_00000004").iterdir()} == before


def test_rewriting_a_step_replaces_the_directory(tmp_path):
    data = ckpt.CheckpointData(flow={"w": torch.ones(2)}, state={"step": 1}, optimizer={})
    ckpt.write_checkpoint(tmp_path, 1, data)
    data.flow = {"w": torch.zeros(2)}
    path = ckpt.write_checkpoint(tmp_path, 1, data)
    assert torch.equal(read_checkpoint(path).flow["w"], torch.zeros(2))
    assert sorted(os.listdir(tmp_path)) == ["latest", "step_00000001"]


def test_missing_checkpoint_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected a checkpoint directory"):
        load_weights(make_flow(), tmp_path)


def test_only_the_writer_writes_checkpoints(tmp_path):
    config = TrainConfig(steps=4, batch_size=4, checkpoint_every=2, checkpoint_dir=tmp_path)
    trainer = Trainer(make_flow(), ShiftCoupling(), config, torch.Generator().manual_seed(0))
    trainer.is_writer = False
    history = trainer.run(progress=False)
    assert history.steps == 4 and history.checkpoint is None
    assert list(tmp_path.iterdir()) == []
    trainer.is_writer = True
    assert trainer.save() == tmp_path / "step_00000004"
