"""The training loop: draw a batch, take an optimizer step, checkpoint; resumable bit for bit.

:class:`Trainer` keeps the three parts separate so a distributed driver can reuse them:
:meth:`Trainer.draw_batch` (the trainer's own data generator), :meth:`Trainer.train_step`
(loss, backward, optimizer, schedule, EMA; override :meth:`Trainer.compute_loss` to route the
model through a wrapper) and :meth:`Trainer.save` (only the ``is_writer`` process writes).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from flowkit.training.checkpoint import (
    CheckpointData,
    checkpoint_name,
    decode_rng_state,
    encode_rng_state,
    read_checkpoint,
    resolve_checkpoint,
    write_checkpoint,
)
from flowkit.training.config import TrainConfig
from flowkit.training.ema import EMA
from flowkit.training.history import History
from flowkit.training.lr_schedules import build_scheduler
from flowkit.training.optimizers import build_optimizer

STATE_FORMAT = "flowkit.training/1"
Callback = Callable[[int, float], None]


class TrainingError(RuntimeError):
    """Training could not go on."""


class NonFiniteLossError(TrainingError):
    """A step produced a NaN or infinite loss; the weights are those before that step.

    Attributes:
        step: the 1-based step whose loss was not finite.
        loss: the loss value.
        checkpoint: the last checkpoint written, or None.
    """

    def __init__(self, step: int, loss: float, checkpoint: Path | None) -> None:
        self.step, self.loss, self.checkpoint = step, loss, checkpoint
        where = f"last good checkpoint: {checkpoint}" if checkpoint else "no checkpoint written"
        super().__init__(
            f"non-finite loss ({loss}) at step {step}; {where}. Try a lower lr, grad_clip, or "
            "check the data; resume=True continues from the last checkpoint"
        )


@dataclass
class TrainBatch:
    """One training batch on the flow's device: pairs, their times and conditions."""

    x0: Tensor
    x1: Tensor
    t: Tensor
    cond: dict[str, Tensor] = field(default_factory=dict)


def parameter_placement(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of a module's first floating parameter."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    raise ValueError("flow has no floating-point parameters to train")


class Trainer:
    """Flow-matching training of ``flow`` on ``coupling`` (see :func:`flowkit.train`).

    Args:
        flow: the :class:`flowkit.Flow` to train (in place).
        coupling: object with ``sample(batch_size, generator) -> CouplingBatch``.
        config: validated options.
        generator: the data generator (coupling samples and times); its state is checkpointed.
        seed: the generator's seed, recorded in the history (None if unknown).

    Attributes:
        is_writer: whether this process writes checkpoints (False on non-zero ranks).
        rank, world_size: this process's place in a distributed run (0 and 1 here; see
            :class:`flowkit.training.ddp_trainer.DistributedTrainer`).
    """

    rank = 0
    world_size = 1

    def __init__(
        self,
        flow: nn.Module,
        coupling: Any,
        config: TrainConfig,
        generator: torch.Generator,
        seed: int | None = None,
    ) -> None:
        config.check_checkpointing()
        self.flow, self.coupling, self.config, self.generator = flow, coupling, config, generator
        self.device, self.dtype = parameter_placement(flow)
        self.optimizer = build_optimizer(config.optimizer, flow.parameters(), config.lr)
        self.scheduler = build_scheduler(
            self.optimizer, config.lr_schedule, config.steps, config.warmup
        )
        self.ema = EMA(flow, config.ema) if config.ema is not None else None
        self.history = History(
            batch_size=config.batch_size, seed=seed, ema=self.ema, world_size=self.world_size
        )
        self.is_writer = True
        self.last_saved: Path | None = None

    @property
    def step(self) -> int:
        """Optimizer steps completed so far."""
        return self.history.steps

    def to_device(self, x: Tensor) -> Tensor:
        """Move to the flow's device; floating tensors also take the flow's dtype."""
        if x.is_floating_point():
            return x.to(device=self.device, dtype=self.dtype)
        return x.to(device=self.device)

    def draw_batch(self) -> TrainBatch:
        """Draw pairs from the coupling and times from the time sampler (unless the coupling
        fixes them), in that order, with the trainer's generator."""
        batch = self.coupling.sample(self.config.batch_size, generator=self.generator)
        t = batch.t
        if t is None:
            t = self.config.time_sampler.sample(batch.x0.shape[0], generator=self.generator)
        cond = {k: self.to_device(v) for k, v in (batch.cond or {}).items()}
        return TrainBatch(
            self.to_device(batch.x0), self.to_device(batch.x1), self.to_device(t), cond
        )

    def compute_loss(self, batch: TrainBatch) -> Tensor:
        """The flow-matching loss of one batch (``flow.loss`` with the configured weighting)."""
        return self.flow.loss(
            batch.x0, batch.x1, batch.t, weighting=self.config.weighting, cond=batch.cond
        )

    def loss_value(self, loss: Tensor) -> float:
        """The loss recorded for a step (a distributed trainer averages it over the ranks)."""
        return loss.item()

    def train_step(self, batch: TrainBatch) -> float:
        """One optimizer step on ``batch``; records and returns the loss.

        Raises:
            NonFiniteLossError: before touching the weights if the loss is NaN or infinite.
        """
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.compute_loss(batch)
        loss.backward()
        value = self.loss_value(loss)  # after backward: ranks meet there anyway
        if not math.isfinite(value):
            raise NonFiniteLossError(self.step + 1, value, self.history.checkpoint)
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.flow.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.flow)
        self.history.record(value, lr)
        return value

    def rng_state(self) -> dict[str, str | None]:
        """This process's RNG states (data generator, torch, CUDA) as base64 text."""
        cuda = self.device.type == "cuda"
        return {
            "data": encode_rng_state(self.generator.get_state()),
            "torch": encode_rng_state(torch.get_rng_state()),
            "cuda": encode_rng_state(torch.cuda.get_rng_state(self.device)) if cuda else None,
        }

    def set_rng_state(self, rng: dict[str, str | None]) -> None:
        """Restore what :meth:`rng_state` returned."""
        self.generator.set_state(decode_rng_state(rng["data"]))
        torch.set_rng_state(decode_rng_state(rng["torch"]))
        if rng["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(decode_rng_state(rng["cuda"]), self.device)

    def all_ranks(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, by rank (``[obj]`` in a single process)."""
        return [obj]

    def coupling_state(self) -> dict[str, Any] | None:
        """The coupling's sampling state (e.g. the epoch order of stored pairs); None when it
        keeps none."""
        state_dict = getattr(self.coupling, "state_dict", None)
        return (state_dict() or None) if callable(state_dict) else None

    def checkpoint_data(self) -> CheckpointData:
        """Everything needed to continue exactly from the current step."""
        h = self.history
        couplings = self.all_ranks(self.coupling_state())
        state = {
            "format": STATE_FORMAT,
            "step": self.step,
            "world_size": self.world_size,
            "rng": self.rng_state(),
            "ema_updates": None if self.ema is None else self.ema.num_updates,
            "deterministic_coupling": bool(getattr(self.coupling, "deterministic", False)),
            "history": {"losses": h.losses, "lrs": h.lrs, "wall_time": h.wall_time, "seed": h.seed},
            "config": self.config.fingerprint(),
        }
        return CheckpointData(
            flow=self.flow.state_dict(),
            state=state,
            optimizer={
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
            },
            ema=None if self.ema is None else self.ema.state_dict(),
            coupling=None if all(s is None for s in couplings) else couplings,
        )

    def save(self) -> Path:
        """Checkpoint the current step into ``config.checkpoint_dir``.

        Called on every rank of a distributed run (collecting the state may need all of them);
        only the writer (``is_writer``) writes and records it in the history. Returns the
        checkpoint directory.
        """
        if self.config.checkpoint_dir is None:
            raise ValueError("cannot save: checkpoint_dir is None")
        data = self.checkpoint_data()
        self.last_saved = Path(self.config.checkpoint_dir) / checkpoint_name(self.step)
        if self.is_writer:
            self.last_saved = write_checkpoint(self.config.checkpoint_dir, self.step, data)
            self.history.checkpoint = self.last_saved
            self.history.checkpoints.append(self.last_saved)
        return self.last_saved

    def restore(self, path: str | Path) -> Path:
        """Load a checkpoint written by :meth:`save`: weights, optimizer, schedule, EMA, RNG
        states and history, so that training continues as if never interrupted."""
        path = resolve_checkpoint(path)
        self.load_checkpoint(read_checkpoint(path), path)
        return path

    def load_checkpoint(self, data: CheckpointData, path: Path) -> None:
        """Restore the state of a checkpoint read from ``path`` (see :meth:`restore`)."""
        state = data.state
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{path} is not a flowkit training checkpoint ({STATE_FORMAT})")
        self.flow.load_state_dict(data.flow)
        self.optimizer.load_state_dict(data.optimizer["optimizer"])
        self.scheduler.load_state_dict(data.optimizer["scheduler"])
        if self.ema is not None:
            if data.ema is None:
                raise ValueError(f"checkpoint {path} has no EMA weights but ema is set")
            self.ema.load_state_dict(data.ema, state["ema_updates"])
        self.set_rng_state(state["rng"])
        couplings = data.coupling or []
        if self.rank < len(couplings) and couplings[self.rank] is not None:
            self.coupling.load_state_dict(couplings[self.rank])
        saved = state["history"]
        self.history.losses, self.history.lrs = list(saved["losses"]), list(saved["lrs"])
        self.history.steps = self.history.start_step = state["step"]
        self.history.wall_time, self.history.seed = saved["wall_time"], saved["seed"]
        self.history.resumed_from = self.history.checkpoint = self.last_saved = path
        warn_config_changes(
            {**state["config"], "world_size": state.get("world_size", 1)},
            {**self.config.fingerprint(), "world_size": self.world_size},
            path,
        )

    def run(self, progress: bool = True, callback: Callback | None = None) -> History:
        """Train until ``config.steps`` steps are done; checkpoint every ``checkpoint_every``
        steps and at the end (when ``checkpoint_dir`` is set)."""
        config, history = self.config, self.history
        was_training = self.flow.training
        self.flow.train()
        start, base_wall = time.perf_counter(), history.wall_time
        bar = tqdm(total=config.steps, initial=self.step, disable=not progress, unit="step")
        try:
            while self.step < config.steps:
                loss = self.train_step(self.draw_batch())
                history.wall_time = base_wall + time.perf_counter() - start
                bar.update(1)
                if self.step % config.log_every == 0 or self.step == config.steps:
                    window = history.losses[-((self.step - 1) % config.log_every + 1) :]
                    mean = sum(window) / len(window)
                    bar.set_postfix(loss=f"{mean:.4g}", lr=f"{history.lrs[-1]:.2e}", refresh=False)
                if callback is not None:
                    callback(self.step, loss)
                every = config.checkpoint_every
                if every is not None and self.step % every == 0:
                    self.save()
        finally:
            bar.close()
            self.flow.train(was_training)
        if getattr(self.coupling, "deterministic", False):
            self.flow.deterministic_coupling = True
        if config.checkpoint_dir is not None and not self.saved_current_step():
            self.save()
        if config.final_weights == "ema" and self.ema is not None:
            self.ema.copy_to(self.flow)
            history.flow_weights = "ema"
        return history

    def saved_current_step(self) -> bool:
        """Whether ``checkpoint_dir`` already holds the checkpoint of the current step."""
        last = self.last_saved
        target = Path(self.config.checkpoint_dir) / checkpoint_name(self.step)
        return last is not None and Path(last).resolve() == target.resolve()


def warn_config_changes(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """Warn when options that shape the run differ from those stored in the checkpoint."""
    changed = [
        f"{key}: {saved.get(key)!r} -> {value!r}"
        for key, value in current.items()
        if saved.get(key) != value
    ]
    if changed:
        warnings.warn(
            f"resuming from {path} with changed options ({'; '.join(changed)}); the run will not "
            "match an uninterrupted one",
            stacklevel=4,
        )
