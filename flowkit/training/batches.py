"""Training batches prepared in worker processes (``num_workers``), reproducibly and resumably.

With ``num_workers = W ≥ 1`` the trainer reads its batches from :class:`WorkerBatches` instead
of drawing them itself: ``W`` processes (a :class:`torch.utils.data.DataLoader` over an
:class:`~torch.utils.data.IterableDataset`) compute batches while the model trains. Everything a
batch needs — the coupling's samples and its work (the minibatch-OT assignment), the times,
the condition dropout — is computed there, by the trainer's own :meth:`Trainer.draw_batch`.

Batch ``k`` is a pure function of the stream and ``k``::

    batch(k) = draw_batch(generator = Generator(derive_seed(seed, k)),
                          finite data at position start + (k − k0) · batch_size)

where ``seed`` is drawn once from the trainer's data generator and ``start`` are the epoch
positions of the finite data when the stream opened at batch ``k0``
(:class:`~flowkit.data.epochs.EpochSampler`). Worker ``w`` computes batches
``k0 + w, k0 + w + W, …`` and the loader hands them over in order, so every ``W ≥ 1`` gives the
same batches. A checkpoint stores ``seed`` and the next batch index (with the epoch positions
the coupling reports), so a resumed run reads the batches the uninterrupted one would have.
With ``num_workers = 0`` (the default) the trainer draws its batches in the training process
from one sequential generator, as it always has; those batches differ from the worker stream.
"""

from __future__ import annotations

import copy
import itertools
import multiprocessing
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from flowkit.data.epochs import draw_seed
from flowkit.seeds import derive_seed

STATE_KEY = "worker_batches"
"""Key of the stream's state inside the checkpointed coupling state."""


def single_threaded(worker_id: int) -> None:
    """Worker start: one thread for torch (the loader sets it) and for BLAS / OpenMP pools, so
    ``W`` workers and the training process share the cores instead of oversubscribing them."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return
    threadpool_limits(1)


def batch_generator(seed: int, k: int) -> torch.Generator:
    """The CPU generator of batch ``k``: seeded ``derive_seed(seed, k)``."""
    return torch.Generator().manual_seed(derive_seed(seed, k))


class BatchStream(IterableDataset):
    """Batches ``k0 + w, k0 + w + W, …`` for worker ``w`` of ``W`` (see the module).

    Args:
        drawer: a shallow copy of the trainer whose ``draw_batch`` computes a batch (its
            ``generator`` and ``device`` are replaced per batch: the CPU).
        seed: the stream's seed.
        first: the index ``k0`` of the first batch.
        starts: the epoch positions of the coupling's finite data at batch ``k0``.
    """

    def __init__(self, drawer: Any, seed: int, first: int, starts: list[int]) -> None:
        self.drawer, self.seed, self.first, self.starts = drawer, seed, first, starts

    def batch(self, k: int) -> Any:
        """Batch ``k`` of the stream."""
        drawer = self.drawer
        step = (k - self.first) * drawer.config.batch_size
        for sampler, start in zip(drawer.coupling.epoch_samplers(), self.starts, strict=True):
            sampler.position = start + step
        drawer.generator = batch_generator(self.seed, k)
        return drawer.draw_batch()

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for k in itertools.count(self.first + worker, workers):
            yield self.batch(k)


class WorkerBatches:
    """The trainer's batches from ``num_workers`` processes (see the module).

    Args:
        trainer: the :class:`~flowkit.training.Trainer` (its coupling, config and generator).
        state: a checkpointed :meth:`state_dict` to continue (None: a new stream, whose seed is
            drawn from the trainer's generator when it opens).
    """

    def __init__(self, trainer: Any, state: Mapping[str, Any] | None = None) -> None:
        self.trainer = trainer
        state = state or {"seed": None, "next": 0}
        self.seed: int | None = None if state["seed"] is None else int(state["seed"])
        self.next_index = int(state["next"])
        self.first = self.next_index
        self.starts: list[int] = []
        self.iterator: Iterator[Any] | None = None

    def open(self) -> None:
        """Start the workers at batch :attr:`next_index` (drawing the seeds of a new stream)."""
        trainer = self.trainer
        samplers = trainer.coupling.epoch_samplers()
        if self.seed is None:
            self.seed = draw_seed(trainer.generator)
        for sampler in samplers:
            sampler.start(trainer.generator)
        self.first, self.starts = self.next_index, [s.position for s in samplers]
        drawer = copy.copy(trainer)
        drawer.device = torch.device("cpu")
        loader = DataLoader(
            BatchStream(drawer, self.seed, self.first, self.starts),
            batch_size=None,
            num_workers=trainer.config.num_workers,
            worker_init_fn=single_threaded,
            multiprocessing_context=loader_context(),
        )
        self.iterator = iter(loader)

    def __call__(self) -> Any:
        """The next batch, on the trainer's device."""
        if self.iterator is None:
            self.open()
        batch = next(self.iterator)
        self.next_index += 1
        to_device = self.trainer.to_device
        batch.x0, batch.x1, batch.t = to_device(batch.x0), to_device(batch.x1), to_device(batch.t)
        batch.cond = {key: to_device(value) for key, value in batch.cond.items()}
        return batch

    def close(self) -> None:
        """Stop the workers (batches they prepared ahead are dropped; :attr:`next_index` is the
        first batch not yet used)."""
        self.iterator = None
        self.sync_positions()

    def sync_positions(self) -> None:
        """Set the coupling's epoch positions to those of batch :attr:`next_index` (what the
        coupling checkpoints)."""
        if self.starts:
            moved = (self.next_index - self.first) * self.trainer.config.batch_size
            for sampler, start in zip(self.trainer.coupling.epoch_samplers(), self.starts,
                                      strict=True):
                sampler.position = start + moved

    def state_dict(self) -> dict[str, int | None]:
        """The stream's seed and the index of the next batch to use."""
        self.sync_positions()
        return {"seed": self.seed, "next": self.next_index}


def loader_context() -> Any:
    """``fork`` where the platform has it (workers share the parent's data and coupling without
    pickling them), else the platform's default."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)
