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
(:class:`~flowkit.data.epochs.EpochSampler`). The training process draws batch ``k0`` itself
while the workers start, and times it. The workers then compute groups of ``m`` consecutive
batches, worker ``w`` the groups ``w, w + W, …``, and the loader hands the groups over in order,
so every ``W ≥ 1`` (and every ``m``) gives the same batches. Handing over one loader item costs
the training process about 0.45 ms (2-core CPU), so cheap batches travel in groups:
``m = 1 … MAX_GROUP``, as many as fit in :data:`GROUP_BYTES` and :data:`GROUP_SECONDS` of a
worker's work (:func:`group_size`). A checkpoint stores ``seed`` and the next batch index (with
the epoch positions the coupling reports), so a resumed run reads the batches the uninterrupted
one would have.
With ``num_workers = 0`` (the default) the trainer draws its batches in the training process
from one sequential generator, as it always has; those batches differ from the worker stream.

Inside an initialised process group (``torchrun``) no worker process is forked: forking a
process whose communication threads (gloo, NCCL) hold locks can hang the child at ``fork``.
There the same stream (the same batches, the same checkpoint state) is computed in the training
process, so a distributed run is reproducible and resumable with any ``num_workers``, without
the overlap.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import itertools
import multiprocessing
import time
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
#: Batches per loader item at most (see the module docstring).
MAX_GROUP = 8
#: Bytes of the batches of one loader item at most (memory held ahead by the loader).
GROUP_BYTES = 4 * 2**20
#: Seconds of a worker's work per loader item at most (a group is handed over when complete).
GROUP_SECONDS = 0.02
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


def packed_bytes(fields: Mapping[str, Any]) -> int:
    """Bytes of the arrays in :func:`pack`'s fields."""
    total = 0
    for value in fields.values():
        for item in value.values() if isinstance(value, dict) else [value]:
            if isinstance(item, tuple) and item and isinstance(item[0], np.ndarray):
                total += item[0].nbytes
    return total


def group_size(batch_bytes: int, seconds: float) -> int:
    """Batches per loader item: as many as fit in :data:`GROUP_BYTES` and
    :data:`GROUP_SECONDS` (for a batch of ``batch_bytes`` that took ``seconds``), 1 to
    :data:`MAX_GROUP`."""
    by_bytes = GROUP_BYTES // max(batch_bytes, 1)
    by_time = int(GROUP_SECONDS / max(seconds, 1e-9))
    return max(1, min(MAX_GROUP, by_bytes, by_time))


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
    """Groups of ``group`` consecutive batches from batch ``begin`` on, worker ``w`` of ``W``
    the groups ``w, w + W, …`` (see the module); each item is a list of packed batches.

    Args:
        drawer: a shallow copy of the trainer whose ``draw_batch`` computes a batch (its
            ``generator`` and ``device`` are replaced per batch: the CPU).
        seed: the stream's seed.
        first: the index ``k0`` of the first batch (where ``starts`` were taken).
        starts: the epoch positions of the coupling's finite data at batch ``k0``.
        begin: the first batch the iteration yields (default ``first``).
        group: batches per item.
    """

    def __init__(
        self,
        drawer: Any,
        seed: int,
        first: int,
        starts: list[int],
        begin: int | None = None,
        group: int = 1,
    ) -> None:
        self.drawer, self.seed, self.first, self.starts = drawer, seed, first, starts
        self.begin = first if begin is None else begin
        self.group = group

    def batch(self, k: int) -> Any:
        """Batch ``k`` of the stream."""
        drawer = self.drawer
        step = (k - self.first) * drawer.config.batch_size
        for sampler, start in zip(drawer.coupling.epoch_samplers(), self.starts, strict=True):
            sampler.position = start + step
        drawer.generator = batch_generator(self.seed, k)
        return drawer.draw_batch()

    def __iter__(self) -> Iterator[list[Any]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for g in itertools.count(worker, workers):
            k = self.begin + g * self.group
            yield [pack(self.batch(j)) for j in range(k, k + self.group)]


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
        self.pending: collections.deque[Any] = collections.deque()

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
        started = time.perf_counter()
        head = pack(stream.batch(self.first))  # drawn here while the workers start
        seconds = time.perf_counter() - started
        stream.begin = self.first + 1
        stream.group = group_size(packed_bytes(head[1]), seconds)
        self.pending = collections.deque([head])
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
        if not self.pending:
            self.pending.extend(next(self.iterator))
        kind, fields = self.pending.popleft()
        self.next_index += 1
        return kind(**unpack(fields, self.trainer.to_device))

    def close(self) -> None:
        """Stop the workers (batches they prepared ahead are dropped; :attr:`next_index` is the
        first batch not yet used)."""
        self.iterator = None
        self.pending.clear()
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
