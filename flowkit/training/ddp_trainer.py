"""Data-parallel training: one :class:`DistributedTrainer` per rank of a torchrun launch.

``fk.train`` switches to it by itself inside an initialised process group with more than one
process. Every rank holds a full copy of the flow, draws its own batch of ``batch_size`` pairs
from its own stream ``(seed, rank)``, and DistributedDataParallel averages the gradients, so
each optimizer step sees ``batch_size × world_size`` pairs (the *effective batch*) and the
weights stay identical on every rank. The recorded loss is the mean over the ranks (the loss of
the effective batch). Rank 0 alone writes checkpoints; a checkpoint holds the RNG states of
every rank, so a resumed run with the same number of ranks continues exactly.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from flowkit import distributed
from flowkit.training.checkpoint import CheckpointData
from flowkit.training.config import TrainConfig
from flowkit.training.history import History
from flowkit.training.trainer import Callback, TrainBatch, Trainer


class DistributedTrainer(Trainer):
    """A :class:`~flowkit.training.Trainer` for one rank of a DistributedDataParallel run.

    The flow is wrapped (through :class:`~flowkit.distributed.FlowLoss`) before the optimizer
    and the EMA are built, so they start from rank 0's weights, which DDP broadcasts.

    Args:
        flow, coupling, config, generator, seed: as for :class:`~flowkit.training.Trainer`;
            ``generator`` should be this rank's own stream
            (:func:`flowkit.distributed.rank_generator`).
        **ddp_options: passed to :class:`~torch.nn.parallel.DistributedDataParallel`.

    Raises:
        RuntimeError: outside an initialised process group.

    Example (in a script started by ``torchrun --nproc_per_node=2 script.py``):
        >>> from flowkit import distributed
        >>> from flowkit.training import TrainConfig
        >>> distributed.init_process_group()  # doctest: +SKIP
        >>> trainer = DistributedTrainer(
        ...     flow, coupling, TrainConfig(steps=100, batch_size=256),
        ...     distributed.rank_generator(seed=0), seed=0,
        ... )  # doctest: +SKIP
        >>> history = trainer.run()  # doctest: +SKIP
        >>> history.effective_batch_size  # doctest: +SKIP
        512
    """

    def __init__(
        self,
        flow: nn.Module,
        coupling: Any,
        config: TrainConfig,
        generator: torch.Generator,
        seed: int | None = None,
        **ddp_options: Any,
    ) -> None:
        me = distributed.info()
        self.rank, self.world_size = me.rank, me.world_size
        self.ddp = distributed.wrap_ddp(distributed.FlowLoss(flow), **ddp_options)
        self.loss_reduction = distributed.attach_loss_reduction(self.ddp)
        super().__init__(flow, coupling, config, generator, seed)
        self.is_writer = me.is_writer

    def compute_loss(self, batch: TrainBatch) -> Tensor:
        """The loss through DDP, whose backward all-reduces (averages) the gradients and, in
        the same all-reduce, the loss (:class:`~flowkit.distributed.LossReduction`)."""
        loss = self.ddp(
            batch.x0,
            batch.x1,
            batch.t,
            weighting=self.config.weighting,
            cond=batch.cond,
            loss=self.config.loss,
        )
        self.loss_reduction.loss = loss.detach()
        return loss

    def micro_step(self, last: bool) -> AbstractContextManager[Any]:
        """Micro-batches before the step's last accumulate their gradients locally
        (``DistributedDataParallel.no_sync``); the last one's backward all-reduces the sum."""
        return nullcontext() if last else self.ddp.no_sync()

    def before_last_backward(self, loss: Tensor) -> None:
        """The step's whole loss rides on the last backward's all-reduce (not only the last
        micro-batch's)."""
        self.loss_reduction.loss = loss

    def loss_value(self, loss: Tensor) -> Tensor:
        """The mean of the ranks' losses (on the device): every rank records (and checks) the
        same value.

        Called after ``backward``, whose gradient all-reduce carried the loss; a separate
        reduction only if no gradient bucket was reduced (a loss that reaches no parameter).
        """
        mean = self.loss_reduction.take_mean()
        return distributed.mean_across_ranks(loss) if mean is None else mean

    def all_ranks(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, by rank (an all-gather)."""
        return distributed.all_gather_objects(obj)

    def checkpoint_data(self) -> CheckpointData:
        """The checkpoint of rank 0, plus every rank's RNG states under ``state["ranks"]`` (and
        every rank's coupling state, as on one process)."""
        data = super().checkpoint_data()
        data.state["ranks"] = self.all_ranks(self.rng_state())
        return data

    def save(self) -> Path:
        """Checkpoint on rank 0 (every rank takes part); returns once it is written."""
        path = super().save()
        distributed.barrier()
        return path

    def load_checkpoint(self, data: CheckpointData, path: Path) -> None:
        """Restore a checkpoint; each rank takes its own RNG states from ``state["ranks"]``.

        A rank the checkpoint has no state for (more ranks than before, or a single-process
        checkpoint) starts its stream ``(seed, rank)`` afresh; the run then differs from an
        uninterrupted one (the restore warns about the changed world size).
        """
        super().load_checkpoint(data, path)
        ranks = data.state.get("ranks") or [data.state["rng"]]
        if self.rank < len(ranks):
            self.set_rng_state(ranks[self.rank])
        elif self.history.seed is not None:
            self.generator.manual_seed(distributed.rank_seed(self.history.seed, self.rank))

    def run(self, progress: bool = True, callback: Callback | None = None) -> History:
        """Train every rank to ``config.steps`` (checked to agree across ranks); rank 0 shows
        progress and logs the effective batch.

        The ranks read (and check) their losses at the same steps, so a non-finite loss stops
        them all at once: ``log_every``, ``checkpoint_every`` and whether a callback is given
        must agree across the ranks.
        """
        config = self.config
        directory = config.checkpoint_dir
        distributed.check_same(
            steps=config.steps,
            batch_size=config.batch_size,
            start_step=self.step,
            checkpoint_dir=None if directory is None else str(directory),
            checkpoint_every=config.checkpoint_every,
            log_every=config.log_every,
            callback=callback is not None,
        )
        progress = progress and self.is_writer
        if progress:
            h = self.history
            tqdm.write(
                f"distributed training on {self.world_size} ranks: {h.batch_size} pairs per rank, "
                f"effective batch {h.effective_batch_size}"
            )
        return super().run(progress=progress, callback=callback)
