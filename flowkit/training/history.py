"""``History``: what a training run returns (and what a checkpoint remembers of it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from flowkit.training.ema import EMA


@dataclass
class History:
    """Record of a training run, resumed segments included.

    Attributes:
        losses: training loss of every optimizer step; ``losses[k - 1]`` belongs to step ``k``.
            Complete when training returns; during training it ends at the last step whose
            loss was read from the device (every ``log_every`` steps).
        lrs: learning rate used at every step (of the first parameter group).
        steps: optimizer steps completed in total.
        batch_size: pairs per step and rank.
        world_size: number of processes training together (1 without torch.distributed); each
            step sees ``effective_batch_size = batch_size × world_size`` pairs.
        wall_time: seconds spent training, summed over resumed segments.
        seed: seed of the trainer's data generator (None when a generator was passed).
        start_step: step this call started from (0, or the step of the resumed checkpoint).
        resumed_from: checkpoint the run resumed from, or None.
        checkpoint: last checkpoint written (by this call or before it), or None.
        checkpoints: checkpoints written by this call, oldest first.
        ema: the weight average (None without ``ema``); see ``flow_weights``.
        flow_weights: which weights the flow holds after training: ``"raw"`` (the optimizer's,
            the default) or ``"ema"`` (``final_weights="ema"`` copied the average in).
    """

    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    steps: int = 0
    batch_size: int = 0
    world_size: int = 1
    wall_time: float = 0.0
    seed: int | None = None
    start_step: int = 0
    resumed_from: Path | None = None
    checkpoint: Path | None = None
    checkpoints: list[Path] = field(default_factory=list)
    ema: EMA | None = field(default=None, repr=False)
    flow_weights: Literal["raw", "ema"] = "raw"

    @property
    def effective_batch_size(self) -> int:
        """Pairs per optimizer step over all ranks: ``batch_size × world_size``."""
        return self.batch_size * self.world_size

    @property
    def samples_seen(self) -> int:
        """Pairs drawn in total, all ranks together: ``steps × batch_size × world_size``."""
        return self.steps * self.effective_batch_size

    @property
    def final_loss(self) -> float | None:
        """Loss of the last step (None before the first)."""
        return self.losses[-1] if self.losses else None

    def record(self, lr: float) -> None:
        """Count one optimizer step and its learning rate (its loss comes later, read from the
        device with those of other steps: see :meth:`flowkit.training.Trainer.read_losses`)."""
        self.lrs.append(lr)
        self.steps += 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible summary (paths as strings; the EMA object left out)."""
        return {
            "losses": list(self.losses),
            "lrs": list(self.lrs),
            "steps": self.steps,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "effective_batch_size": self.effective_batch_size,
            "wall_time": self.wall_time,
            "seed": self.seed,
            "start_step": self.start_step,
            "resumed_from": None if self.resumed_from is None else str(self.resumed_from),
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "checkpoints": [str(p) for p in self.checkpoints],
            "flow_weights": self.flow_weights,
        }
