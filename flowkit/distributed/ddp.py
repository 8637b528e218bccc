"""DistributedDataParallel for flows: the flow-matching loss as a module's forward.

DDP all-reduces gradients during ``backward`` of whatever its wrapped module's ``forward``
returned. A :class:`~flowkit.Flow`'s ``forward`` is its velocity, but training differentiates
``flow.loss``; :class:`FlowLoss` makes that loss the forward of a module that shares the flow's
parameters, so ``DDP(FlowLoss(flow))(x0, x1, t)`` is the loss and its backward leaves every rank
with the gradient averaged over the ranks:

``∇θ L = (1/W)·Σ_r ∇θ L_r``, the gradient of the mean loss of the concatenated batch when every
rank's batch has the same size.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from flowkit.distributed.process_group import info


class FlowLoss(nn.Module):
    """``forward(x0, x1, t, **options) = flow.loss(x0, x1, t, **options)``.

    Args:
        flow: a :class:`~flowkit.Flow` (its parameters are this module's parameters).

    Example:
        >>> import torch, flowkit as fk
        >>> flow = fk.Flow(fk.models.build({"name": "mlp", "dim": 2}))
        >>> x0, x1, t = torch.randn(4, 2), torch.randn(4, 2), torch.rand(4)
        >>> torch.equal(FlowLoss(flow)(x0, x1, t), flow.loss(x0, x1, t))
        True
    """

    def __init__(self, flow: nn.Module) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x0: Tensor, x1: Tensor, t: Tensor | None = None, **options: Any) -> Tensor:
        return self.flow.loss(x0, x1, t, **options)


def has_running_stats(module: nn.Module) -> bool:
    """Whether ``module`` holds normalisation layers that update running statistics."""
    return any(
        isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
        for m in module.modules()
    )


def wrap_ddp(module: nn.Module, **ddp_options: Any) -> DistributedDataParallel:
    """Wrap ``module`` in :class:`~torch.nn.parallel.DistributedDataParallel`.

    The constructor broadcasts rank 0's parameters and buffers, so every rank starts from the
    same weights whatever its own initialisation was. A module on a CUDA device is bound to
    that device (``device_ids=[index]``); a CPU module is wrapped as is. Unless
    ``ddp_options`` say otherwise, gradients are views into DDP's communication buckets
    (``gradient_as_bucket_view=True``, one copy less per step), and rank 0's buffers are
    broadcast before every forward only when the module has normalisation layers with running
    statistics (``broadcast_buffers``): other buffers, such as fixed time-embedding
    frequencies, never change, and broadcasting them would cost a collective per step.

    Args:
        module: the module (all its parameters on one device).
        **ddp_options: passed to DDP (e.g. ``find_unused_parameters=True`` for a model with
            parameters the loss does not always reach).

    Raises:
        RuntimeError: without an initialised process group.
    """
    if not info().backend:
        raise RuntimeError(
            "wrap_ddp needs an initialised process group: launch with torchrun and call "
            "flowkit.distributed.init_process_group() first"
        )
    device = next(iter(module.parameters())).device
    device_ids = [device.index] if device.type == "cuda" else None
    ddp_options.setdefault("gradient_as_bucket_view", True)
    # torch >= 2.13 renamed broadcast_buffers to forward_sync_buffers (the old name warns).
    sync = "forward_sync_buffers" if _ACCEPTS_FORWARD_SYNC else "broadcast_buffers"
    if "broadcast_buffers" not in ddp_options and "forward_sync_buffers" not in ddp_options:
        ddp_options[sync] = has_running_stats(module)
    return DistributedDataParallel(module, device_ids=device_ids, **ddp_options)


_ACCEPTS_FORWARD_SYNC = (
    "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
)


class LossReduction:
    """Averages a scalar loss over the ranks inside DDP's gradient all-reduce.

    DDP averages the gradients in one all-reduce per bucket during ``backward``; a trainer that
    also wants the mean loss of the ranks would need a second collective per step, a second
    point where every rank waits for the slowest. With :func:`reduce_with_loss` as DDP's
    communication hook (:func:`attach_loss_reduction`), the loss rides on the last bucket, so
    one all-reduce gives both:

    ``[g; ℓ] ← (1/W)·Σ_r [g_r; ℓ_r]`` (the default hook's gradient average, plus the mean loss).

    Set :attr:`loss` to the detached loss before ``backward``; after it, :attr:`mean` holds the
    mean over the ranks (None when no bucket carried it).
    """

    def __init__(self, world_size: int, group: Any = None) -> None:
        self.world_size, self.group = world_size, group
        self.loss: Tensor | None = None
        self.mean: Tensor | None = None

    def take_mean(self) -> Tensor | None:
        """The mean loss of the last ``backward`` (then forgets it and the loss)."""
        mean, self.mean, self.loss = self.mean, None, None
        return mean


def reduce_with_loss(state, bucket):
    """DDP communication hook: all-reduce (mean) the bucket; the loss of ``state`` (a
    :class:`LossReduction`) rides on the last bucket.

    Left unannotated: DDP compares the annotations with the objects ``dist.GradBucket`` and
    ``Future[Tensor]``, which postponed (string) annotations are not.
    """
    import torch
    import torch.distributed as dist

    buffer = bucket.buffer()
    carry = bucket.is_last() and state.loss is not None
    flat = torch.cat([buffer, state.loss.reshape(1).to(buffer.dtype)]) if carry else buffer
    flat.div_(state.world_size)
    future = dist.all_reduce(flat, group=state.group, async_op=True).get_future()

    def unpack(done: Any) -> Tensor:
        reduced = done.value()[0]
        if not carry:
            return reduced
        state.mean = reduced[-1].clone()
        buffer.copy_(reduced[:-1])
        return buffer

    return future.then(unpack)


def attach_loss_reduction(ddp: DistributedDataParallel) -> LossReduction:
    """Register a :class:`LossReduction` as ``ddp``'s communication hook and return it."""
    reduction = LossReduction(info().world_size, ddp.process_group)
    ddp.register_comm_hook(reduction, reduce_with_loss)
    return reduction
