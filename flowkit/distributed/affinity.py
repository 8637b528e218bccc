"""CPU binding for CPU (gloo) runs: each local rank on its own share of the cores.

On a CPU machine every rank computes on the same cores the others compute on. Left to the
operating system, a rank that blocks in a gradient all-reduce and wakes up again is often moved
to another core, where its caches are cold, and the ranks' communication threads compete with
the others' computation. Binding rank ``r`` of the ``W`` ranks on a machine to the ``r``-th of
``W`` equal, disjoint slices of the CPUs it may use removes both; it is the CPU counterpart of
torchrun's ``--numa-binding=exclusive`` for GPUs. On the 2-vCPU development VM it raised the
2-process DDP speed-up from 1.64–1.72× to 1.76–1.80× at 2048 pairs per rank, and changed nothing
measurable at 8192 (``docs/benchmarks/ddp_scaling.md``); on machines with several sockets or NUMA
nodes it also keeps a rank's memory local.

``flowkit run --nproc N`` binds the ranks it starts by default where there is a CPU per rank
(it starts every local rank, so the slices are the job's own; ``--no-bind-cpus`` turns it
off), as torch's CPU launcher ``torch.backends.xeon.run_cpu`` pins its instances. Under a
launch by torchrun itself binding is opt-in, as in torchrun (two jobs on one machine that both
bound their ranks would pile onto the same cores): ``bind_cpus=True`` in
:func:`flowkit.distributed.init_process_group` or ``flowkit run --bind-cpus``. It happens
once, when the process group is joined. Ranks already confined to different CPU sets (by
``numactl``/``taskset`` per rank) are left alone.
"""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch


def cpu_share(cpus: Sequence[int], local_rank: int, local_world_size: int) -> list[int]:
    """The ``local_rank``-th of ``local_world_size`` contiguous, disjoint, near-equal slices.

    With ``n`` CPUs (sorted) and ``W`` ranks, rank ``r`` gets ``cpus[⌊r·n/W⌋ : ⌊(r+1)·n/W⌋]``:
    every CPU goes to exactly one rank and slice sizes differ by at most one.

    Raises:
        ValueError: if ``local_rank`` is not in ``[0, local_world_size)`` or there are fewer
            CPUs than ranks (some rank would get none).

    Example:
        >>> cpu_share([0, 1, 2, 3, 4], 1, 2)
        [2, 3, 4]
    """
    if not 0 <= local_rank < local_world_size:
        raise ValueError(
            f"local_rank must be in [0, {local_world_size}) for local_world_size="
            f"{local_world_size}, got {local_rank}"
        )
    ordered = sorted(cpus)
    n = len(ordered)
    if n < local_world_size:
        raise ValueError(
            f"cannot give each of {local_world_size} local ranks its own CPU: only {n} CPU(s) "
            f"available ({ordered})"
        )
    return ordered[local_rank * n // local_world_size : (local_rank + 1) * n // local_world_size]


@dataclass(frozen=True)
class Placement:
    """Where one rank runs: its machine, its rank there and the CPUs it may use."""

    host: str
    rank: int
    cpus: tuple[int, ...]


def current_placement(rank: int) -> Placement:
    """This process's :class:`Placement` (``rank``: its global rank)."""
    return Placement(socket.gethostname(), rank, tuple(sorted(os.sched_getaffinity(0))))


def plan_binding(placements: Sequence[Placement], rank: int) -> list[int] | None:
    """The CPUs global rank ``rank`` should be bound to, given every rank's placement.

    Ranks on the same host (same name) that may all use the same CPU set split it with
    :func:`cpu_share`, in order of global rank. None (leave it alone) when ``rank`` is alone on
    its host, when the host's ranks are already confined to different CPU sets, or when the host
    has fewer CPUs than ranks.
    """
    me = next(p for p in placements if p.rank == rank)
    local = sorted((p for p in placements if p.host == me.host), key=lambda p: p.rank)
    if len(local) < 2 or any(p.cpus != me.cpus for p in local):
        return None
    if len(me.cpus) < len(local):
        return None
    return cpu_share(me.cpus, [p.rank for p in local].index(rank), len(local))


def can_bind() -> bool:
    """Whether this platform lets a process choose its CPUs (Linux: ``sched_setaffinity``)."""
    return hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity")


def can_bind_ranks(local_ranks: int) -> bool:
    """Whether ``local_ranks`` ranks started here could each get CPUs of their own: the platform
    can bind, and this process may use at least one CPU per rank."""
    return can_bind() and len(os.sched_getaffinity(0)) >= local_ranks


def process_threads() -> list[int]:
    """Thread ids of this process (Linux ``/proc/self/task``; just the process id elsewhere)."""
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return [os.getpid()]


def apply_binding(cpus: Sequence[int]) -> None:
    """Confine this process to ``cpus``: every thread it has (the communication threads the
    process group has started included; ``sched_setaffinity`` binds one thread) and, through
    the calling thread, the threads it starts later. Lowers torch's intra-op thread count to
    ``len(cpus)`` if it was higher (more threads than cores would only take turns)."""
    wanted = set(cpus)
    for tid in process_threads():
        with contextlib.suppress(ProcessLookupError, PermissionError):  # a thread just ended
            os.sched_setaffinity(tid, wanted)
    os.sched_setaffinity(0, wanted)
    if torch.get_num_threads() > len(cpus):
        torch.set_num_threads(len(cpus))


def warn_cannot_share(placements: Sequence[Placement], rank: int) -> None:
    """Warn (on the first rank of a host) that binding found too few CPUs."""
    me = next(p for p in placements if p.rank == rank)
    local = [p for p in placements if p.host == me.host]
    first = min(p.rank for p in local)
    if rank == first and len(local) > 1 and len(me.cpus) < len(local):
        warnings.warn(
            f"bind_cpus: {len(local)} ranks on {me.host} share {len(me.cpus)} CPU(s); not "
            "binding (each rank needs at least one CPU of its own)",
            stacklevel=3,
        )


_bound: list[int] | None = None


def bound_cpus() -> list[int] | None:
    """The CPUs this process was bound to when it joined the process group (None if not)."""
    return None if _bound is None else list(_bound)


def bind_local_ranks(bind_cpus: bool) -> list[int] | None:
    """With ``bind_cpus``, bind this rank to its share of its host's CPUs (a collective: every
    rank calls it with the same value); warns when a host has fewer CPUs than ranks.

    Returns:
        The CPUs this rank is now bound to, or None when it was left alone.
    """
    global _bound
    if not bind_cpus or not can_bind():
        return None
    import torch.distributed as dist

    rank = dist.get_rank()
    placements: list[Placement | None] = [None] * dist.get_world_size()
    dist.all_gather_object(placements, current_placement(rank))
    known = [p for p in placements if p is not None]
    warn_cannot_share(known, rank)
    cpus = plan_binding(known, rank)
    if cpus is not None:
        apply_binding(cpus)
        _bound = cpus
    return cpus
