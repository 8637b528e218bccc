"""precision (bf16 / fp16 autocast, gradient scaler), accumulate and compile in fk.train."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from training_toys import Interrupt, ShiftCoupling, make_flow, stop_at, weights_equal

import flowkit as fk
from flowkit.checks import OptionError
from flowkit.training import TrainConfig, Trainer, read_checkpoint
from flowkit.training.generators import make_generator
from flowkit.training.precision import MixedStep, micro_batches
from flowkit.training.trainer import TrainBatch

OPTIONS = {"lr": 3e-3, "grad_clip": 1.0, "progress": False}


def linear_output_dtypes(flow: fk.Flow) -> list[torch.dtype]:
    """Record the output dtype of every Linear layer of the flow's forward passes."""
    seen: list[torch.dtype] = []
    for module in flow.modules():
        if isinstance(module, nn.Linear):
            module.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    return seen


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")
def test_autocast_runs_the_forward_in_low_precision_on_cpu(precision: str) -> None:
    """The layers compute in bf16/fp16, the weights stay float32, and training follows the fp32
    run closely (same seed, same batches; fp16's first steps overflow at torch's initial
    scale 2^16 and are skipped while the scale calibrates, so only bf16 is compared)."""
    reference = make_flow()
    fp32 = fk.train(reference, ShiftCoupling(), 40, 32, seed=1, **OPTIONS)
    flow = make_flow()
    seen = linear_output_dtypes(flow)
    low = fk.train(flow, ShiftCoupling(), 40, 32, seed=1, precision=precision, **OPTIONS)
    expected = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert seen and set(seen) == {expected}
    assert all(p.dtype == torch.float32 for p in flow.parameters())
    assert low.losses[-1] < 0.5 * low.losses[0]  # it trains
    if precision == "bf16":  # 8 mantissa bits: the run stays within a few % of fp32's
        assert abs(low.losses[-1] - fp32.losses[-1]) < 0.05 * fp32.losses[-1]


def test_the_fp32_default_does_not_autocast() -> None:
    flow = make_flow()
    seen = linear_output_dtypes(flow)
    trainer = Trainer(flow, ShiftCoupling(), TrainConfig(steps=1, batch_size=8), *gen(0))
    assert trainer.mixed is None
    trainer.run(progress=False)
    assert set(seen) == {torch.float32}


def gen(seed: int) -> tuple[torch.Generator, int]:
    return make_generator(None, seed)


@pytest.mark.parametrize("accumulate", [2, 3])
def test_accumulation_takes_the_same_step_as_the_whole_batch(accumulate: int) -> None:
    """In float64, k micro-batches (10 pairs in 3 gives 3 + 3 + 4) give the whole batch's
    gradient: losses and weights equal the unaccumulated run's to rounding."""
    options = {**OPTIONS, "seed": 2, "optimizer": "sgd", "lr": 0.05}
    whole_flow = make_flow(dtype=torch.float64)
    whole = fk.train(whole_flow, ShiftCoupling(), 15, 10, **options)
    split_flow = make_flow(dtype=torch.float64)
    split = fk.train(split_flow, ShiftCoupling(), 15, 10, accumulate=accumulate, **options)
    assert split.losses == pytest.approx(whole.losses, rel=1e-12)
    for a, b in zip(whole_flow.parameters(), split_flow.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_micro_batches_split_every_field_with_weights_summing_to_one() -> None:
    batch = TrainBatch(
        torch.arange(10.0)[:, None], torch.zeros(10, 1), torch.rand(10), {"y": torch.arange(10)}
    )
    parts = micro_batches(batch, 3)
    assert [len(m.x0) for m, _ in parts] == [3, 3, 4]
    assert [w for _, w in parts] == [0.3, 0.3, 0.4]
    assert torch.equal(torch.cat([m.cond["y"] for m, _ in parts]), batch.cond["y"])
    assert torch.equal(torch.cat([m.t for m, _ in parts]), batch.t)


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")
def test_fp16_resume_with_accumulation_is_exact_and_keeps_the_scaler_state(tmp_path) -> None:
    """Stop after step 13 (last checkpoint: 10), resume: the losses, the weights and the
    gradient scaler's state equal the uninterrupted run's."""
    options = {**OPTIONS, "seed": 3, "precision": "fp16", "accumulate": 2}
    reference = make_flow()
    full = fk.train(reference, ShiftCoupling(), 20, 16, checkpoint_dir=tmp_path / "ref", **options)
    flow, run = make_flow(), tmp_path / "run"
    with pytest.raises(Interrupt):
        fk.train(
            flow,
            ShiftCoupling(),
            20,
            16,
            checkpoint_every=5,
            checkpoint_dir=run,
            callback=stop_at(13),
            **options,
        )
    saved = read_checkpoint(run / "step_00000010").optimizer["scaler"]
    assert 0 < saved["scale"] < 2.0**16  # the first steps overflowed: the scale shrank
    resumed_flow = make_flow(seed=7)
    resumed = fk.train(
        resumed_flow,
        ShiftCoupling(),
        20,
        16,
        checkpoint_every=5,
        checkpoint_dir=run,
        resume=True,
        **options,
    )
    assert resumed.start_step == 10 and resumed.losses == full.losses
    assert weights_equal(resumed_flow, reference)
    final = read_checkpoint(run).optimizer["scaler"]
    assert final == read_checkpoint(tmp_path / "ref").optimizer["scaler"]


def test_fp16_overflow_skips_the_step_and_shrinks_the_scale() -> None:
    flow = make_flow()
    # cosine: a scheduler that really steps (the constant one only counts), so torch warns
    config = TrainConfig(steps=1, batch_size=8, precision="fp16", lr_schedule="cosine")
    trainer = Trainer(flow, ShiftCoupling(), config, *gen(0))
    assert isinstance(trainer.mixed, MixedStep)
    trainer.mixed.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)  # inf gradients
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    with pytest.warns(UserWarning, match="lr_scheduler.step"):  # torch: the step was skipped
        trainer.train_step(trainer.draw_batch())
    assert all(torch.equal(before[k], v) for k, v in flow.state_dict().items())
    assert trainer.mixed.scaler.get_scale() == 2.0**126


def test_compile_compiles_the_model_in_place(monkeypatch) -> None:
    compiled: list[nn.Module] = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    flow = make_flow()
    Trainer(flow, ShiftCoupling(), TrainConfig(steps=1, batch_size=8, compile=True), *gen(0))
    assert compiled == [flow.model]
    Trainer(make_flow(), ShiftCoupling(), TrainConfig(steps=1, batch_size=8), *gen(0))
    assert compiled == [flow.model]  # opt-in only


@pytest.mark.slow
def test_compiled_training_matches_eager() -> None:
    eager_flow, compiled_flow = make_flow(), make_flow()
    eager = fk.train(eager_flow, ShiftCoupling(), 5, 32, seed=4, **OPTIONS)
    compiled = fk.train(compiled_flow, ShiftCoupling(), 5, 32, seed=4, compile=True, **OPTIONS)
    assert compiled.losses == pytest.approx(eager.losses, rel=1e-4)
    assert compiled_flow.state_dict().keys() == eager_flow.state_dict().keys()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"precision": "fp8"}, "precision must be one of fp32, bf16, fp16"),
        ({"precision": "bf61"}, "Did you mean 'bf16'"),
        ({"accumulate": 0}, "accumulate must be"),
        ({"accumulate": 9}, "accumulate is 9, more micro-batches than the 8 pairs"),
        ({"compile": "yes"}, "compile must be true or false"),
    ],
)
def test_bad_options_are_named(options: dict, match: str) -> None:
    with pytest.raises(OptionError, match=match):
        TrainConfig(steps=1, batch_size=8, **options)


def test_checkpoints_hold_cpu_tensors_and_load_onto_the_flows_device(tmp_path) -> None:
    """Weights are stored from CPU copies and every file is read with map_location="cpu", so a
    checkpoint written on any device loads anywhere: load_state_dict copies the tensors onto
    the flow's device (here a float64 flow: the copy also casts)."""
    flow = make_flow()
    fk.train(flow, ShiftCoupling(), 3, 8, seed=0, checkpoint_dir=tmp_path, **OPTIONS)
    data = read_checkpoint(tmp_path)
    optimizer_state = data.optimizer["optimizer"]["state"]
    tensors = [*data.flow.values(), *(v for s in optimizer_state.values() for v in s.values())]
    assert all(t.device.type == "cpu" for t in tensors if isinstance(t, torch.Tensor))
    raw = torch.load(tmp_path / "step_00000003" / "optimizer.pt", map_location="cpu")
    assert raw["optimizer"]["state"].keys() == optimizer_state.keys()
    other = make_flow(seed=5, dtype=torch.float64)
    fk.training.load_weights(other, tmp_path)
    for a, b in zip(flow.parameters(), other.parameters(), strict=True):
        assert b.dtype == torch.float64 and torch.equal(a.double(), b)
