"""Distributed runs with torchrun: process group, rank helpers, per-rank streams, DDP, sharding.

Launch ``torchrun --nproc_per_node=N -m flowkit run CONFIG`` (or ``flowkit run --nproc N
CONFIG``). Inside, :func:`init_process_group` joins the group (gloo on CPU, nccl on GPU);
:func:`flowkit.train` then trains with DistributedDataParallel, :func:`flowkit.reflow` and the
evaluation stage shard their work by rank, and only rank 0 writes. See ``docs/scaling.md``.
"""

from flowkit.distributed.affinity import bound_cpus, can_bind_ranks, cpu_share
from flowkit.distributed.collectives import (
    all_gather_objects,
    broadcast_object,
    check_same,
    from_rank_zero,
    mean_across_ranks,
    rank_zero_only,
)
from flowkit.distributed.ddp import FlowLoss, LossReduction, attach_loss_reduction, wrap_ddp
from flowkit.distributed.launch import launch_torchrun, torchrun_arguments, without_option
from flowkit.distributed.process_group import (
    BACKENDS,
    DistInfo,
    barrier,
    default_backend,
    info,
    init_process_group,
    is_distributed,
    is_writer,
    launched_by_torchrun,
    process_group,
    rank,
    shutdown,
    world_size,
)
from flowkit.distributed.sampling import rank_slice, sharded_sample
from flowkit.distributed.shards import gather_shards, rank_shards
from flowkit.distributed.streams import (
    rank_generator,
    rank_seed,
    shared_seed,
    warn_if_shared_generator,
)

__all__ = [
    "BACKENDS",
    "DistInfo",
    "FlowLoss",
    "LossReduction",
    "all_gather_objects",
    "attach_loss_reduction",
    "barrier",
    "bound_cpus",
    "broadcast_object",
    "can_bind_ranks",
    "check_same",
    "cpu_share",
    "default_backend",
    "from_rank_zero",
    "gather_shards",
    "info",
    "init_process_group",
    "is_distributed",
    "is_writer",
    "launch_torchrun",
    "launched_by_torchrun",
    "mean_across_ranks",
    "process_group",
    "rank",
    "rank_generator",
    "rank_seed",
    "rank_shards",
    "rank_slice",
    "rank_zero_only",
    "sharded_sample",
    "shared_seed",
    "shutdown",
    "torchrun_arguments",
    "warn_if_shared_generator",
    "without_option",
    "world_size",
    "wrap_ddp",
]
