"""The training loop: draw a batch, take an optimizer step, checkpoint; resumable bit for bit.

:class:`Trainer` keeps the three parts separate so a distributed driver can reuse them:
:meth:`Trainer.draw_batch` (the trainer's own data generator), :meth:`Trainer.train_step`
(loss, backward, optimizer, schedule, EMA; override :meth:`Trainer.compute_loss` to route the
model through a wrapper) and :meth:`Trainer.save` (only the ``is_writer`` process writes).

A step does not wait for the device: its loss stays there (:attr:`Trainer.unread`) until
:meth:`Trainer.read_losses` copies the losses of the steps since the last read to the host in
one synchronisation, checks them and appends them to ``History.losses``. :meth:`Trainer.run`
reads at every ``log_every``-th step, before every checkpoint, at the last step, and at every
step when a callback is given.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from flowkit.checks import OptionError
from flowkit.conditions import drop_conditions, null_condition, num_classes_of
from flowkit.training.batches import STATE_KEY, WorkerBatches
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
from flowkit.training.precision import MixedStep, compile_in_place

STATE_FORMAT = "flowkit.training/1"
#: ``callback(step, loss)`` after every step; the loss is read from the device (a float).
Callback = Callable[[int, float], None]


class TrainingError(RuntimeError):
    """Training could not go on."""


class NonFiniteLossError(TrainingError):
    """A step produced a NaN or infinite loss.

    Losses are checked when they are read (:meth:`Trainer.read_losses`): the error names the
    first bad step since the last read and is raised before the step of the read changes the
    weights. If the bad step is the step of the read (a logging step, a checkpoint step, the
    last step, every step with a callback or ``log_every=1``), the weights are those before it;
    otherwise the flow has also taken the updates from the bad step to the read, and the last
    checkpoint (written only after its steps were checked) is the good state to resume from.

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
    """One training batch on the flow's device: pairs, their times and conditions.

    ``t_in_range`` is True when ``t`` lies in [0, 1] by construction (drawn by a flowkit time
    sampler): the loss then skips checking it.
    """

    x0: Tensor
    x1: Tensor
    t: Tensor
    cond: dict[str, Tensor] = field(default_factory=dict)
    t_in_range: bool = False


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
        unread: the detached losses (on the device) of the steps not yet read by
            :meth:`read_losses`, oldest first.
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
        self.unread: list[Tensor] = []
        self.sampled_t_in_range = getattr(config.time_sampler, "in_unit_interval", False) is True
        # the step is chosen here: the default fp32 step never enters MixedStep
        plain = config.precision == "fp32" and config.accumulate == 1
        self.mixed = None if plain else MixedStep(self.device, config.precision, config.accumulate)
        if config.compile:
            compile_in_place(flow)
        self.worker_batches = WorkerBatches(self) if config.num_workers else None

    @property
    def step(self) -> int:
        """Optimizer steps completed so far."""
        return self.history.steps

    def to_device(self, x: Tensor) -> Tensor:
        """Move to the flow's device; floating tensors also take the flow's dtype."""
        if x.device == self.device and (x.dtype == self.dtype or not x.is_floating_point()):
            return x
        if x.is_floating_point():
            return x.to(device=self.device, dtype=self.dtype)
        return x.to(device=self.device)

    def draw_batch(self) -> TrainBatch:
        """Draw pairs from the coupling and times from the time sampler (unless the coupling
        fixes them), in that order, with the trainer's generator."""
        batch = self.coupling.sample(self.config.batch_size, generator=self.generator)
        t, in_range = batch.t, False
        if t is None:
            t = self.config.time_sampler.sample(batch.x0.shape[0], generator=self.generator)
            in_range = self.sampled_t_in_range
        cond = {k: self.to_device(v) for k, v in batch.cond.items()} if batch.cond else {}
        if self.config.cond_dropout:
            cond = self.drop_conditions(cond)
        return TrainBatch(
            self.to_device(batch.x0), self.to_device(batch.x1), self.to_device(t), cond, in_range
        )

    def drop_conditions(self, cond: dict[str, Tensor]) -> dict[str, Tensor]:
        """``cond`` with each pair's conditions replaced by the null condition with probability
        ``cond_dropout`` (one draw per pair from the trainer's generator, after the times).

        Raises:
            OptionError: the coupling gives no conditions, or one without a null (a key other
                than ``y``/``c``, or ``y`` for a model without ``num_classes``).
        """
        p = self.config.cond_dropout
        if not cond:
            raise OptionError(
                "cond_dropout",
                f"is {p} but the coupling gives no conditions (use a conditional target, e.g. "
                "{name: digits, conditional: true}, or cond_dropout: 0)",
            )
        try:
            null = null_condition(cond, num_classes_of(self.flow))
        except ValueError as err:
            raise OptionError("cond_dropout", f"cannot be applied: {err}") from None
        return drop_conditions(cond, p, null, self.generator)

    def compute_loss(self, batch: TrainBatch) -> Tensor:
        """The flow-matching loss of one batch (``flow.loss`` with the configured weighting and
        loss)."""
        return self.flow.loss(
            batch.x0,
            batch.x1,
            batch.t,
            weighting=self.config.weighting,
            cond=batch.cond,
            check_t=not batch.t_in_range,
            loss=self.config.loss,
        )

    def loss_value(self, loss: Tensor) -> Tensor:
        """The loss recorded for a step, detached and left on the device (a distributed trainer
        averages it over the ranks)."""
        return loss.detach()

    def train_step(self, batch: TrainBatch, read: bool = True) -> Tensor:
        """One optimizer step on ``batch``; records the loss and returns it (detached, on the
        device).

        Args:
            batch: the step's batch (:meth:`draw_batch`).
            read: read the unread losses, this step's included, before the weights change
                (:meth:`read_losses`: one host synchronisation). Without, the step does not
                wait for the device and its loss waits in :attr:`unread`.

        Raises:
            NonFiniteLossError: (when reading) a NaN or infinite loss; the weights have not
                taken this step.
        """
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.zero_grad(set_to_none=True)
        if self.mixed is None:
            loss = self.compute_loss(batch)
            loss.backward()
        else:
            loss = self.mixed.backward(self, batch)
        value = self.loss_value(loss)  # after backward: ranks meet there anyway
        self.unread.append(value)
        if read:
            self.read_losses()
        if self.mixed is not None:
            self.mixed.step(self)
        else:
            if self.config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.flow.parameters(), self.config.grad_clip)
            self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.flow)
        self.history.record(lr)
        return value

    def micro_step(self, last: bool) -> AbstractContextManager[Any]:
        """Context of one micro-batch's forward and backward with ``accumulate > 1`` (``last``:
        the step's last one); nothing here (a distributed trainer skips the gradient
        all-reduce before the last)."""
        return nullcontext()

    def before_last_backward(self, loss: Tensor) -> None:
        """Called with the step's whole (detached) loss before the last micro-batch's backward
        (a distributed trainer averages it over the ranks there); nothing here."""

    def read_losses(self) -> list[float]:
        """Copy the :attr:`unread` losses to the host (one synchronisation), check them and
        append them to ``History.losses``; returns them.

        Raises:
            NonFiniteLossError: naming the first step whose loss is NaN or infinite (the losses
                before it are appended).
        """
        if not self.unread:
            return []
        values = torch.stack(self.unread).tolist()
        self.unread.clear()
        losses = self.history.losses
        for index, value in enumerate(values):
            if not math.isfinite(value):
                losses.extend(values[:index])
                raise NonFiniteLossError(len(losses) + 1, value, self.history.checkpoint)
        losses.extend(values)
        return values

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
        stream = None if self.worker_batches is None else self.worker_batches.state_dict()
        state_dict = getattr(self.coupling, "state_dict", None)
        state = (state_dict() or None) if callable(state_dict) else None
        return state if stream is None else {**(state or {}), STATE_KEY: stream}

    def load_coupling_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`coupling_state` returned (the worker stream's part, if any, goes
        to the worker stream)."""
        state = dict(state)
        stream = state.pop(STATE_KEY, None)
        if self.worker_batches is not None:
            self.worker_batches = WorkerBatches(self, stream)
        if state:
            self.coupling.load_state_dict(state)

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
                **({"scaler": self.mixed.state_dict()} if self.mixed is not None else {}),
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
        if self.mixed is not None:
            self.mixed.load_state_dict(data.optimizer.get("scaler"))
        if self.ema is not None:
            if data.ema is None:
                raise ValueError(f"checkpoint {path} has no EMA weights but ema is set")
            self.ema.load_state_dict(data.ema, state["ema_updates"])
        self.set_rng_state(state["rng"])
        couplings = data.coupling or []
        if self.rank < len(couplings) and couplings[self.rank] is not None:
            self.load_coupling_state(couplings[self.rank])
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
        steps and at the end (when ``checkpoint_dir`` is set).

        The losses are read from the device (:meth:`read_losses`) at every ``log_every``-th
        step, where the progress bar shows their mean, before every checkpoint and at the last
        step; with a ``callback``, at every step, which then gets the loss as a float.
        """
        config, history = self.config, self.history
        steps, log_every, every = config.steps, config.log_every, config.checkpoint_every
        was_training = self.flow.training
        self.flow.train()
        start, base_wall = time.perf_counter(), history.wall_time
        bar = tqdm(total=steps, initial=self.step, disable=not progress, unit="step")
        next_batch = self.draw_batch if self.worker_batches is None else self.worker_batches
        try:
            while self.step < steps:
                step = self.step + 1
                log = step % log_every == 0 or step == steps
                save = every is not None and step % every == 0
                self.train_step(next_batch(), read=log or save or callback is not None)
                history.wall_time = base_wall + time.perf_counter() - start
                bar.update(1)
                if log:
                    window = history.losses[-((step - 1) % log_every + 1) :]
                    mean = sum(window) / len(window)
                    bar.set_postfix(loss=f"{mean:.4g}", lr=f"{history.lrs[-1]:.2e}", refresh=False)
                if callback is not None:
                    callback(step, history.losses[-1])
                if save:
                    self.save()
        finally:
            bar.close()
            if self.worker_batches is not None:
                self.worker_batches.close()
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
