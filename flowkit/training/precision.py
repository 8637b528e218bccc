"""Mixed precision and gradient accumulation: the trainer's step for ``precision`` / ``accumulate``.

The default step (``precision="fp32"``, ``accumulate=1``) is the trainer's own plain step and
does not go through this module. Otherwise the trainer builds one :class:`MixedStep` when it is
constructed, which

- splits the step's batch into ``accumulate`` micro-batches of nearly equal size ``n_i`` and
  backpropagates ``(n_i / B) · loss_i`` for each, so the accumulated gradient is the gradient of
  the whole batch's mean loss (the same step as without accumulation, up to rounding; a
  minibatch-OT coupling still pairs the whole batch);
- runs each forward pass and loss under ``torch.autocast(device, dtype)`` for ``bf16`` /
  ``fp16`` (weights, gradients and optimizer state stay in the parameters' dtype);
- for ``fp16`` scales the loss with a :class:`torch.amp.GradScaler` (its state is checkpointed
  with the optimizer's), unscales before gradient clipping, and skips the optimizer step when a
  gradient overflowed (the scale then shrinks).

Example:
    >>> import flowkit as fk
    >>> flow = fk.Flow(fk.models.build({"name": "mlp", "dim": 2}), "rectified")
    >>> history = fk.train(flow, "independent", steps=10, batch_size=64, precision="bf16",
    ...                    accumulate=2, progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from flowkit.training.trainer import TrainBatch, Trainer

PRECISIONS = ("fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def micro_batches(batch: TrainBatch, count: int) -> list[tuple[TrainBatch, float]]:
    """``batch`` cut into ``count`` consecutive micro-batches of sizes differing by at most one,
    each with its weight ``n_i / B`` (the weights sum to 1)."""
    size = batch.x0.shape[0]
    bounds = [size * i // count for i in range(count + 1)]
    parts = []
    for start, end in pairwise(bounds):
        part = slice(start, end)
        micro = replace(
            batch,
            x0=batch.x0[part],
            x1=batch.x1[part],
            t=batch.t[part],
            cond={k: v[part] for k, v in batch.cond.items()},
        )
        parts.append((micro, (end - start) / size))
    return parts


class MixedStep:
    """Backward pass and optimizer update of one step with autocast, a gradient scaler (fp16)
    and gradient accumulation (see the module).

    Args:
        device: the parameters' device (autocast's device type).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        accumulate: micro-batches per optimizer step.
    """

    def __init__(self, device: torch.device, precision: str, accumulate: int) -> None:
        self.device_type = device.type
        self.dtype = AUTOCAST_DTYPES.get(precision)
        self.accumulate = accumulate
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def autocast(self) -> AbstractContextManager[Any]:
        """The forward pass's autocast context (none for fp32)."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, trainer: Trainer, batch: TrainBatch) -> Tensor:
        """Accumulate the gradient of the batch's mean loss over its micro-batches; returns that
        loss, detached (the weighted sum of the micro-batch losses)."""
        parts = micro_batches(batch, self.accumulate)
        total: Any = 0.0
        for index, (micro, weight) in enumerate(parts):
            last = index == len(parts) - 1
            with trainer.micro_step(last):
                with self.autocast():
                    loss = trainer.compute_loss(micro)
                if weight != 1.0:
                    loss = loss * weight
                total = total + loss.detach()
                if last:
                    trainer.before_last_backward(total)
                (loss if self.scaler is None else self.scaler.scale(loss)).backward()
        return total

    def step(self, trainer: Trainer) -> None:
        """Clip (after unscaling) and take the optimizer step through the scaler, if any."""
        clip = trainer.config.grad_clip
        if self.scaler is None:
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(trainer.flow.parameters(), clip)
            trainer.optimizer.step()
            return
        if clip is not None:
            self.scaler.unscale_(trainer.optimizer)
            torch.nn.utils.clip_grad_norm_(trainer.flow.parameters(), clip)
        self.scaler.step(trainer.optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any] | None:
        """The scaler's state (scale, growth tracker) for the checkpoint; None without one."""
        return None if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore what :meth:`state_dict` returned (a checkpoint without one keeps the fresh
        scaler)."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def compile_in_place(flow: torch.nn.Module) -> None:
    """``torch.compile`` the flow's network in place (``nn.Module.compile``: the state dict and
    the module stay the same objects, so checkpoints and EMA are unaffected; the model stays
    compiled after training)."""
    getattr(flow, "model", flow).compile()
