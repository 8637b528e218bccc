"""``fk.train``: the public entry point of the trainer."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flowkit import distributed
from flowkit.losses import LossSpec
from flowkit.registry import COUPLINGS
from flowkit.training.checkpoint import latest_checkpoint, resolve_checkpoint
from flowkit.training.config import TrainConfig, Weighting
from flowkit.training.generators import make_generator, rank_stream
from flowkit.training.history import History
from flowkit.training.optimizers import OptimizerSpec
from flowkit.training.trainer import Callback, Trainer


def build_coupling(spec: Any) -> Any:
    """A coupling from a registry spec or an object with ``sample(batch_size, generator)``."""
    if isinstance(spec, str | Mapping):
        import flowkit.couplings  # noqa: F401  (registers the couplings)

        return COUPLINGS.build(spec)
    if not callable(getattr(spec, "sample", None)):
        raise TypeError(
            "coupling must be a registered coupling spec or an object with "
            f"sample(batch_size, generator) -> CouplingBatch; got {type(spec).__name__}"
        )
    return spec


def resume_source(resume: bool | str | os.PathLike, checkpoint_dir: Any) -> Path | None:
    """The checkpoint to resume from: None (fresh start), the ``latest`` one of
    ``checkpoint_dir`` for ``resume=True`` (None if there is none yet) or the given path."""
    if resume is False or resume is None:
        if checkpoint_dir is not None and latest_checkpoint(checkpoint_dir) is not None:
            warnings.warn(
                f"checkpoint_dir {str(checkpoint_dir)!r} already holds checkpoints; they are "
                "overwritten as the new run reaches their steps (resume=True continues them)",
                stacklevel=3,
            )
        return None
    if resume is True:
        if checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir (or pass resume=<checkpoint path>)")
        return latest_checkpoint(checkpoint_dir)
    if isinstance(resume, str | os.PathLike):
        return resolve_checkpoint(resume)
    raise TypeError(f"resume must be a bool or a checkpoint path, got {type(resume).__name__}")


def train(
    flow: nn.Module,
    coupling: Any,
    steps: int,
    batch_size: int,
    *,
    optimizer: OptimizerSpec = "adam",
    lr: float = 1e-3,
    lr_schedule: str = "constant",
    warmup: int = 0,
    grad_clip: float | None = None,
    ema: float | None = None,
    cond_dropout: float = 0.0,
    time_sampler: Any = "uniform",
    weighting: Weighting = None,
    loss: LossSpec = "mse",
    checkpoint_every: int | None = None,
    log_every: int = 10,
    num_workers: int = 0,
    precision: str = "fp32",
    accumulate: int = 1,
    compile: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool | str | os.PathLike = False,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    progress: bool = True,
    callback: Callback | None = None,
    final_weights: str = "raw",
) -> History:
    """Train ``flow`` in place by flow matching on pairs from ``coupling``.

    Each step draws ``(x0, x1, cond)`` from the coupling and times ``t`` from the time sampler
    (or the coupling's own ``t``), both with the trainer's data generator, and minimises
    ``flow.loss(x0, x1, t, weighting=..., cond=...)``. Training runs on the device and dtype of
    the flow's parameters. On CPU, a run resumed from a checkpoint reproduces the uninterrupted
    run exactly (same losses, same weights).

    A step does not wait for the device: the losses stay there and are read (one host
    synchronisation) every ``log_every`` steps, before every checkpoint and at the end, when
    they are checked and appended to ``History.losses``. Times drawn by flowkit's time samplers
    lie in [0, 1] by construction and are not checked; times a coupling supplies, or a time
    sampler of your own draws, are (once per step, a synchronisation).

    Inside an initialised process group of ``W > 1`` processes (``torchrun``), every rank runs
    this call and trains with DistributedDataParallel: ``batch_size`` pairs per rank from the
    rank's own stream ``(seed, rank)``, gradients averaged, so the effective batch is
    ``batch_size × W`` (``History.effective_batch_size``); only rank 0 writes checkpoints. See
    ``docs/scaling.md``.

    Args:
        flow: a :class:`flowkit.Flow`.
        coupling: a coupling or a ``COUPLINGS`` spec (``"independent"``, ``{name: ..., ...}``).
        steps: total number of optimizer steps (a resumed run counts the steps already done).
        batch_size: pairs per step.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` or ``{name: ..., **options}``.
        lr: base learning rate.
        lr_schedule: ``"constant"`` or ``"cosine"`` (decay to 0 at ``steps``).
        warmup: linear warmup steps before the schedule.
        grad_clip: max global gradient norm (None: no clipping).
        ema: EMA decay (None: no EMA); the average is in ``History.ema``.
        cond_dropout: probability of replacing a pair's conditions by the null condition
            (:mod:`flowkit.conditions`: label ``num_classes``, read from the model, for ``y``;
            the zero vector for ``c``), drawn per pair with the data generator (resume stays
            exact), so the model also learns the unconditional field that guidance needs
            (``fk.sample(..., guidance=w)``). Needs a conditional coupling.
        time_sampler: ``TIME_SAMPLERS`` spec or instance (``uniform``, ``logit_normal``, ``mode``,
            ``cosmap``, ``u_shaped``).
        weighting: loss weighting passed to ``flow.loss`` (None, ``"velocity"`` or ``w(t)``).
        loss: regression loss passed to ``flow.loss``: ``"mse"``, ``"l1"``, ``"pseudo_huber"``
            or ``{"name": "pseudo_huber", "c": ...}`` (:mod:`flowkit.losses`).
        checkpoint_every: write a checkpoint every this many steps (needs ``checkpoint_dir``).
        log_every: read the losses from the device every this many steps (the progress bar
            then shows their mean); ``1`` checks every loss before its step changes the weights.
        num_workers: processes that prepare the batches (coupling samples and work such as the
            minibatch-OT assignment, times, condition dropout) while the model trains. Batch
            ``k`` is a function of the seed and ``k`` alone, so every ``num_workers >= 1`` gives
            the same batches and a resumed run continues them exactly; ``0`` (default) draws
            them in this process from the sequential data generator (other batches than the
            workers'). See ``docs/data.md``.
        precision: ``"fp32"`` (default, no autocast), ``"bf16"`` or ``"fp16"``: the forward
            pass and loss run under ``torch.autocast`` in that dtype (on CPU too); fp16 adds a
            gradient scaler, checkpointed with the optimizer. Weights stay in their dtype.
        accumulate: split each step's ``batch_size`` pairs into this many micro-batches and
            accumulate their gradients: the same optimizer step with less activation memory
            (the coupling, e.g. minibatch OT, still pairs the whole batch).
        compile: ``torch.compile`` the flow's network in place (``nn.Module.compile``) first;
            it stays compiled afterwards.
        checkpoint_dir: where checkpoints go; the final step is always checkpointed there.
        resume: True continues from ``checkpoint_dir/latest`` if it exists; a path continues
            from that checkpoint.
        generator: the data generator (its state is advanced, and restored on resume).
        seed: seed of a fresh CPU data generator (exclusive with ``generator``).
        progress: show a tqdm bar with step, loss, lr and it/s.
        callback: ``callback(step, loss)`` after every step (``step`` counts from 1); ``loss``
            is a float, so a callback makes every step read its loss from the device (a host
            synchronisation per step; without a callback there is none between reads). Under
            torchrun, every rank passes a callback or none.
        final_weights: ``"raw"`` leaves the optimizer's weights in the flow (the EMA stays in
            ``History.ema``: ``history.ema.copy_to(flow)`` or
            ``with history.ema.average_parameters(flow): ...``); ``"ema"`` copies the average
            into the flow at the end. ``History.flow_weights`` says which it holds.

    Returns:
        The :class:`History` (losses and learning rates per step, wall time, checkpoints, EMA).

    Raises:
        NonFiniteLossError: a step's loss is NaN/inf (names the first such step and the last
            checkpoint), raised when the losses are next read, before that step's update. The
            flow keeps the weights from before the bad step if the bad step is itself read
            (``log_every=1``, a callback, a checkpoint step); otherwise it has taken the updates
            up to the read: resume from the last checkpoint, written only after its steps'
            losses were checked.

    Example:
        >>> import flowkit as fk
        >>> flow = fk.Flow(fk.models.build({"name": "mlp", "dim": 2}), "rectified")
        >>> coupling = {"name": "independent", "source": "gaussian", "target": "moons"}
        >>> history = fk.train(flow, coupling, steps=1000, batch_size=256)  # doctest: +SKIP
    """
    if not callable(getattr(flow, "loss", None)):
        raise TypeError(f"flow must be a flowkit.Flow (with .loss), got {type(flow).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable(step, loss) or None, got {callback!r}")
    if distributed.is_distributed():  # before any rank-local check: ranks must agree first
        distributed.check_same(
            steps=steps,
            batch_size=batch_size,
            checkpoint_dir=None if checkpoint_dir is None else str(checkpoint_dir),
            resume=resume if isinstance(resume, bool) else str(resume),
        )
    config = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        optimizer=optimizer,
        lr=lr,
        lr_schedule=lr_schedule,
        warmup=warmup,
        grad_clip=grad_clip,
        ema=ema,
        cond_dropout=cond_dropout,
        time_sampler=time_sampler,
        weighting=weighting,
        loss=loss,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        num_workers=num_workers,
        precision=precision,
        accumulate=accumulate,
        compile=compile,
        checkpoint_dir=checkpoint_dir,
        final_weights=final_weights,
    )
    source = resume_source(resume, checkpoint_dir)
    if distributed.is_distributed():
        from flowkit.training.ddp_trainer import DistributedTrainer  # only under torchrun

        distributed.check_same(resume_from=None if source is None else str(source))
        generator, seed = rank_stream(generator, seed)
        trainer: Trainer = DistributedTrainer(
            flow, build_coupling(coupling), config, generator, seed
        )
    else:
        generator, seed = make_generator(generator, seed)
        trainer = Trainer(flow, build_coupling(coupling), config, generator, seed)
    if source is not None:
        trainer.restore(source)
    return trainer.run(progress=progress, callback=callback)
