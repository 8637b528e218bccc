"""Process-group set-up from torchrun's environment, and rank / world-size queries.

``torchrun`` (``python -m torch.distributed.run``) starts one process per rank and tells each
its place through environment variables: ``RANK`` (global rank), ``WORLD_SIZE``, ``LOCAL_RANK``
(rank on its node, the GPU index) and ``MASTER_ADDR``/``MASTER_PORT`` (the rendezvous).
:func:`init_process_group` reads them and joins the group with ``gloo`` on CPU, or with both
``nccl`` (for CUDA tensors) and ``gloo`` (for CPU tensors) on GPU machines. Without those
variables it does nothing and every query answers for a single process (rank 0 of 1), so the
same code runs with and without torchrun.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from flowkit.distributed.affinity import bind_local_ranks
from flowkit.registry import did_you_mean

BACKENDS = ("gloo", "nccl", "cpu:gloo,cuda:nccl")
DEFAULT_TIMEOUT = 1800.0


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the process group.

    Attributes:
        rank: global rank in ``[0, world_size)``.
        world_size: number of processes.
        local_rank: rank on this node (the CUDA device index with nccl).
        backend: one of :data:`BACKENDS`, or None when no process group is initialised.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_writer(self) -> bool:
        """True on rank 0, the only rank that writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def device(self) -> torch.device:
        """The device of this rank: ``cuda:<local_rank>`` with nccl, else the CPU."""
        if uses_nccl(self.backend):
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def launched_by_torchrun() -> bool:
    """Whether the environment holds torchrun's ``RANK`` and ``WORLD_SIZE``."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def env_int(name: str, default: int | None = None) -> int:
    """Integer environment variable ``name`` (``default`` when unset)."""
    text = os.environ.get(name)
    if text is None:
        if default is None:
            raise ValueError(f"environment variable {name} is not set (torchrun sets it)")
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {text!r}") from None


def uses_nccl(backend: str | None) -> bool:
    """Whether ``backend`` (a process group's backend string) includes nccl."""
    return backend is not None and "nccl" in backend


def default_backend() -> str:
    """``cpu:gloo,cuda:nccl`` when CUDA and NCCL are available, else ``gloo``.

    The combined backend sends CUDA tensors through nccl and CPU tensors through gloo, so a
    GPU machine also runs experiments configured with ``device: cpu``.
    """
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def check_backend(backend: str) -> str:
    """Return ``backend`` if it is one of :data:`BACKENDS`, else raise ``ValueError``."""
    if backend not in BACKENDS:
        raise ValueError(
            f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}."
            + did_you_mean(str(backend), list(BACKENDS))
        )
    return backend


def info() -> DistInfo:
    """This process's :class:`DistInfo` (rank 0 of 1 without an initialised process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=env_int("LOCAL_RANK", 0),
        backend=str(dist.get_backend()),
    )


def rank() -> int:
    """Global rank of this process (0 without a process group)."""
    return info().rank


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return info().world_size


def is_distributed() -> bool:
    """True when a process group with more than one process is initialised."""
    return info().distributed


def is_writer() -> bool:
    """True on rank 0 (and in a single process): the rank that writes files."""
    return info().is_writer


def init_process_group(
    backend: str | None = None, timeout: float = DEFAULT_TIMEOUT, bind_cpus: bool = False
) -> DistInfo:
    """Join the process group described by torchrun's environment variables.

    Does nothing when a group is already initialised or when the variables are absent (a plain
    single process). With nccl the CUDA device of the process is set to ``LOCAL_RANK``.

    Args:
        backend: ``"gloo"``, ``"nccl"`` or ``"cpu:gloo,cuda:nccl"``; None picks the last when
            CUDA is available, else gloo.
        timeout: seconds a collective may wait for the other ranks before failing.
        bind_cpus: bind each rank, and every thread it runs, to its own share of its
            machine's CPUs (:mod:`flowkit.distributed.affinity`; where the machine has a CPU
            per rank).

    Returns:
        This process's :class:`DistInfo`.

    Example:
        >>> from flowkit import distributed
        >>> distributed.init_process_group().world_size  # 1 outside torchrun
        1
    """
    if dist.is_initialized() or not launched_by_torchrun():
        return info()
    backend = check_backend(backend or default_backend())
    rank_, world = env_int("RANK"), env_int("WORLD_SIZE")
    if world < 1 or not 0 <= rank_ < world:
        raise ValueError(f"RANK={rank_} and WORLD_SIZE={world} need 0 <= RANK < WORLD_SIZE")
    if uses_nccl(backend):
        torch.cuda.set_device(env_int("LOCAL_RANK", 0))
    dist.init_process_group(
        backend, rank=rank_, world_size=world, timeout=timedelta(seconds=timeout)
    )
    bind_local_ranks(bind_cpus)
    return info()


def shutdown() -> None:
    """Leave the process group (after a barrier, so no rank exits while others still talk)."""
    if dist.is_initialized():
        barrier()
        dist.destroy_process_group()


@contextmanager
def process_group(
    backend: str | None = None, timeout: float = DEFAULT_TIMEOUT, bind_cpus: bool = False
) -> Iterator[DistInfo]:
    """Context manager: :func:`init_process_group` on entry, :func:`shutdown` on a clean exit.

    A group that was already initialised is left alone. On an exception the group is destroyed
    without a barrier (the other ranks may never reach it).

    Example:
        >>> from flowkit import distributed
        >>> with distributed.process_group() as me:
        ...     me.rank
        0
    """
    owned = not dist.is_initialized() and launched_by_torchrun()
    current = init_process_group(backend, timeout, bind_cpus)
    try:
        yield current
    except BaseException:
        if owned and dist.is_initialized():
            dist.destroy_process_group()
        raise
    if owned:
        shutdown()


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    me = info()
    if not me.distributed:
        return
    if uses_nccl(me.backend):
        dist.barrier(device_ids=[me.local_rank])
    else:
        dist.barrier()
