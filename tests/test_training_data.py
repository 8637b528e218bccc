"""Finite data in training: epochs in the checkpoint, batches from worker processes."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

import flowkit as fk
from flowkit.checks import OptionError
from flowkit.training.batches import BatchStream, batch_generator

ROWS = torch.randn(100, 2, generator=torch.Generator().manual_seed(5)) * 0.5 + 1.0
LABELS = torch.arange(100) % 3


def new_flow() -> fk.Flow:
    torch.manual_seed(0)
    model = fk.models.build({"name": "mlp", "dim": 2, "hidden": 16, "depth": 1})
    return fk.Flow(model, "rectified")


def run(steps: int, coupling: str = "independent", **options) -> tuple[fk.Flow, list, dict]:
    """Train on 100 rows (batch 32: epochs end mid-batch); returns flow, losses, data state."""
    flow, data = new_flow(), fk.data.from_tensor(ROWS)
    spec = {"name": coupling, "source": "gaussian", "target": data}
    history = fk.train(flow, spec, steps=steps, batch_size=32, seed=7, progress=False, **options)
    return flow, history.losses, data.state_dict()


def same_weights(a: fk.Flow, b: fk.Flow) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("workers", [0, 1])
def test_resumed_run_reads_the_data_of_the_uninterrupted_one(tmp_path: Path, workers: int) -> None:
    """Stopped at step 5 (position 160: in the middle of the second epoch), resumed to 9."""
    full_flow, full_losses, full_state = run(9, num_workers=workers)
    run(5, checkpoint_dir=tmp_path, num_workers=workers)
    flow, losses, state = run(9, checkpoint_dir=tmp_path, resume=True, num_workers=workers)
    assert losses == full_losses and same_weights(flow, full_flow)
    assert state == full_state and state["position"] == 9 * 32


def test_worker_batches_do_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    one_flow, one, one_state = run(8, "minibatch_ot", num_workers=1)
    two_flow, two, two_state = run(8, "minibatch_ot", num_workers=2)
    assert one == two and same_weights(one_flow, two_flow) and one_state == two_state
    # resumed with a different number of workers, still the same run
    run(3, "minibatch_ot", num_workers=2, checkpoint_dir=tmp_path)
    flow, losses, _ = run(8, "minibatch_ot", num_workers=1, checkpoint_dir=tmp_path, resume=True)
    assert losses == one and same_weights(flow, one_flow)


def test_batch_k_is_a_function_of_the_seed_and_k() -> None:
    """A worker's batch k equals the trainer's own draw with generator derive_seed(seed, k)
    and the data at position start + k * batch_size."""
    flow = new_flow()
    data = fk.data.from_tensor(ROWS, labels=LABELS)
    coupling = fk.couplings.build({"name": "independent", "source": "gaussian", "target": data})
    config = fk.training.TrainConfig(steps=1, batch_size=32, num_workers=1)
    trainer = fk.training.Trainer(flow, coupling, config, torch.Generator().manual_seed(0))
    data.sampler.seed = 5  # drawn by the stream when it opens
    stream = BatchStream(trainer, seed=11, first=0, starts=[40])
    batch = stream.batch(3)
    data.sampler.position = 40 + 3 * 32
    trainer.generator = batch_generator(11, 3)
    expected = trainer.draw_batch()
    assert torch.equal(batch.x0, expected.x0) and torch.equal(batch.x1, expected.x1)
    assert torch.equal(batch.t, expected.t) and torch.equal(batch.cond["y"], expected.cond["y"])
    assert data.sampler.position == 40 + 4 * 32


def test_num_workers_is_checked() -> None:
    with pytest.raises(OptionError, match="num_workers"):
        fk.train(new_flow(), "independent", steps=1, batch_size=4, num_workers=-1)


def test_iid_toys_keep_no_epoch_state() -> None:
    coupling = fk.couplings.build({"name": "independent", "source": "gaussian", "target": "moons"})
    assert coupling.state_dict() == {} and coupling.epoch_samplers() == []


def test_batches_travel_as_bytes_in_any_dtype() -> None:
    from flowkit.training.batches import pack, unpack
    from flowkit.training.trainer import TrainBatch

    batch = TrainBatch(torch.randn(4, 2).bfloat16(), torch.randn(4, 2), torch.rand(4).double(),
                       {"y": torch.arange(4)}, True)
    kind, fields = pack(batch)
    back = kind(**unpack(fields, lambda x: x))
    assert kind is TrainBatch and back.t_in_range
    for name in ("x0", "x1", "t"):
        assert torch.equal(getattr(back, name), getattr(batch, name))
        assert getattr(back, name).dtype == getattr(batch, name).dtype
    assert torch.equal(back.cond["y"], batch.cond["y"])


def test_a_reshaped_finite_source_keeps_its_epoch_state() -> None:
    """The experiment reshapes a source to the target's event shape; its epoch position is
    still the coupling's state (and so in the checkpoint)."""
    from flowkit.data.reshaped import reshape_to

    source = reshape_to(fk.data.from_tensor(torch.randn(10, 4)), (1, 2, 2))
    target = fk.data.from_tensor(torch.randn(6, 1, 2, 2), labels=torch.arange(6) % 2)
    coupling = fk.couplings.build({"name": "independent", "source": source, "target": target})
    gen = torch.Generator().manual_seed(0)
    batch = coupling.sample(3, gen)
    assert batch.x0.shape == (3, 1, 2, 2) and set(coupling.state_dict()) == {"source", "target"}
    x, cond = reshape_to(target, (4,)).sample_conditional(2, gen)
    assert x.shape == (2, 4) and cond["y"].shape == (2,)


def test_group_size_bounds_bytes_and_work() -> None:
    from flowkit.training.batches import GROUP_BYTES, MAX_GROUP, group_size

    assert group_size(1_000, 0.0001) == MAX_GROUP  # cheap small batches travel in groups
    assert group_size(GROUP_BYTES // 3, 0.0001) == 3  # bounded by memory
    assert group_size(1_000, 0.008) == 2  # bounded by the work per item (20 ms)
    assert group_size(GROUP_BYTES * 2, 5.0) == 1  # never less than one batch


@pytest.mark.parametrize("workers", [1, 2])
def test_batches_are_the_same_whatever_the_group_size(monkeypatch, tmp_path, workers) -> None:
    """Groups of 3 batches per loader item (forced) give the run of groups of 1, and a run
    stopped mid-group resumes to the same result."""
    import flowkit.training.batches as batches

    monkeypatch.setattr(batches, "group_size", lambda *args: 1)
    single_flow, single, single_state = run(8, "minibatch_ot", num_workers=workers)
    monkeypatch.setattr(batches, "group_size", lambda *args: 3)
    grouped_flow, grouped, grouped_state = run(8, "minibatch_ot", num_workers=workers)
    assert grouped == single and same_weights(grouped_flow, single_flow)
    assert grouped_state == single_state
    run(4, "minibatch_ot", num_workers=workers, checkpoint_dir=tmp_path)  # stops inside a group
    flow, losses, _ = run(8, "minibatch_ot", num_workers=workers, checkpoint_dir=tmp_path,
                          resume=True)
    assert losses == single and same_weights(flow, single_flow)


def test_stream_groups_list_consecutive_batches() -> None:
    flow = new_flow()
    coupling = fk.couplings.build({"name": "independent", "source": "gaussian", "target": "moons"})
    config = fk.training.TrainConfig(steps=1, batch_size=8, num_workers=1)
    trainer = fk.training.Trainer(flow, coupling, config, torch.Generator().manual_seed(0))
    stream = BatchStream(trainer, seed=3, first=0, starts=[], begin=1, group=4)
    first, second = itertools.islice(iter(stream), 2)
    assert len(first) == len(second) == 4
    for k, (_kind, fields) in enumerate(first + second, start=1):
        expected = stream.batch(k)
        assert torch.equal(torch.from_numpy(fields["x0"][0]), expected.x0)
