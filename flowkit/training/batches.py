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

Inside an initialised process group (``torchrun``) no worker process is forked: forking a
process whose communication threads (gloo, NCCL) hold locks can hang the child at ``fork``.
There the same stream (the same batches, the same checkpoint state) is computed in the training
process, so a distributed run is reproducible and resumable with any ``num_workers``, without
the overlap.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import multiprocessing
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from flowkit.data.epochs import draw_seed
from flowkit.seeds import derive_seed

NUMPY_DTYPES = {
    torch.float16, torch.float32, torch.float64, torch.bool, torch.uint8, torch.int8,
    torch.int16, torch.int32, torch.int64,
}  # fmt: skip
INTEGER_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
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


def as_is(item: Any) -> Any:
    """The loader's collate function: items travel as :func:`pack` made them."""
    return item


def to_wire(tensor: Tensor) -> tuple[np.ndarray, torch.dtype]:
    """A CPU tensor as a numpy array (pickled by value through the loader's pipe) and its dtype;
    a dtype numpy lacks (bfloat16, ...) travels as integers of its width.

    Receiving bytes costs the training process about a quarter of what rebuilding a tensor
    from a worker's shared memory does (0.25 ms against 1.0-1.6 ms per batch of 256 pairs,
    measured on 2 loaded cores).
    """
    if tensor.dtype in NUMPY_DTYPES:
        return tensor.numpy(), tensor.dtype
    return tensor.view(INTEGER_OF_SIZE[tensor.element_size()]).numpy(), tensor.dtype


def from_wire(array: np.ndarray, dtype: torch.dtype) -> Tensor:
    """The tensor :func:`to_wire` sent."""
    tensor = torch.from_numpy(array)
    return tensor if tensor.dtype == dtype else tensor.view(dtype)


def pack(batch: Any) -> tuple[type, dict[str, Any]]:
    """A batch dataclass as its type and fields, tensors (and dicts of them) :func:`to_wire`."""
    fields = {}
    for f in dataclasses.fields(batch):
        value = getattr(batch, f.name)
        if isinstance(value, Tensor):
            value = to_wire(value)
        elif isinstance(value, dict):
            value = {key: to_wire(v) if isinstance(v, Tensor) else v for key, v in value.items()}
        fields[f.name] = value
    return type(batch), fields


def unpack(fields: dict[str, Any], to_device: Callable[[Tensor], Tensor]) -> dict[str, Any]:
    """The fields :func:`pack` sent, tensors rebuilt and moved by ``to_device``."""

    def restore(value: Any) -> Any:
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], torch.dtype):
            return to_device(from_wire(*value))
        if isinstance(value, dict):
            return {key: restore(v) for key, v in value.items()}
        return value

    return {name: restore(value) for name, value in fields.items()}


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
            yield pack(self.batch(k))


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
        stream = BatchStream(drawer, self.seed, self.first, self.starts)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            self.iterator = iter(stream)  # in process: see the module docstring
            return
        loader = DataLoader(
            stream,
            batch_size=None,
            num_workers=trainer.config.num_workers,
            worker_init_fn=single_threaded,
            collate_fn=as_is,
            multiprocessing_context=loader_context(),
        )
        self.iterator = iter(loader)

    def __call__(self) -> Any:
        """The next batch, on the trainer's device."""
        if self.iterator is None:
            self.open()
        kind, fields = next(self.iterator)
        self.next_index += 1
        return kind(**unpack(fields, self.trainer.to_device))

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
