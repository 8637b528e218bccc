"""Learning-rate schedules: a multiplicative factor per optimizer step, with optional warmup.

The factor multiplies the optimizer's base learning rate through
``torch.optim.lr_scheduler.LambdaLR``, so the scheduler saves and restores like any torch one.

Example:
    >>> from flowkit.training.lr_schedules import lr_factor
    >>> [round(lr_factor(k, "cosine", total_steps=10, warmup=2), 3) for k in (0, 1, 2, 9)]
    [0.5, 1.0, 1.0, 0.038]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from flowkit.checks import NON_NEGATIVE_INT, OneOf


def constant(progress: float) -> float:
    """Constant factor ``1``."""
    return 1.0


def cosine(progress: float) -> float:
    """Cosine decay from 1 to 0: ``½·(1 + cos(π·p))`` at progress ``p ∈ [0, 1]``."""
    return 0.5 * (1.0 + math.cos(math.pi * progress))


LR_SCHEDULES: dict[str, Callable[[float], float]] = {"constant": constant, "cosine": cosine}
SCHEDULE_NAMES = OneOf(tuple(LR_SCHEDULES))


def check_lr_schedule(name: str) -> str:
    """Return ``name`` if it is a known schedule, else raise an ``OptionError`` listing them."""
    return SCHEDULE_NAMES(name, "lr_schedule")


def check_warmup(warmup: int) -> int:
    """Return ``warmup`` if it is a non-negative integer (steps), else raise ``OptionError``."""
    return NON_NEGATIVE_INT(warmup, "warmup")


def lr_factor(step: int, schedule: str, total_steps: int, warmup: int = 0) -> float:
    """Learning-rate factor for the 0-based optimizer step ``step``.

    Linear warmup ``(k + 1) / W`` for ``k < W`` (the first step already moves the weights, the
    W-th reaches the full rate), then the schedule at progress
    ``p = (k − W) / max(1, K − W)`` with ``K = total_steps``:
    constant ``1``, cosine ``½·(1 + cos(π·p))``.

    Args:
        step: 0-based index of the optimizer step.
        schedule: ``"constant"`` or ``"cosine"``.
        total_steps: ``K``, the number of steps of the whole run.
        warmup: ``W``, warmup steps (0: none).
    """
    return scheduled_factor(step, LR_SCHEDULES[check_lr_schedule(schedule)], total_steps, warmup)


def scheduled_factor(
    step: int, schedule: Callable[[float], float], total_steps: int, warmup: int
) -> float:
    """:func:`lr_factor` with the schedule given as its function (checked by the caller)."""
    if step < warmup:
        return (step + 1) / warmup
    return schedule(min(1.0, (step - warmup) / max(1, total_steps - warmup)))


class FlowLR(LambdaLR):
    """``LambdaLR`` whose step is a counter increment when the factor is constant (the
    ``constant`` schedule without warmup: the learning rate never changes, and LambdaLR's step
    would only recompute it); state dicts are LambdaLR's."""

    def __init__(self, optimizer: Optimizer, factor: Callable[[int], float], constant: bool):
        self.constant = constant
        super().__init__(optimizer, factor)

    def step(self, epoch: int | None = None) -> None:  # type: ignore[override]
        if self.constant and epoch is None and self._step_count:
            self._step_count += 1
            self.last_epoch += 1
            return
        super().step(epoch)

    def state_dict(self) -> dict[str, Any]:
        """LambdaLR's state dict (without :attr:`constant`, which the options decide)."""
        state = super().state_dict()
        state.pop("constant", None)
        return state


def build_scheduler(optimizer: Optimizer, schedule: str, total_steps: int, warmup: int) -> FlowLR:
    """A ``LambdaLR`` applying :func:`lr_factor` to every parameter group of ``optimizer``
    (the options are checked here, once, not at every step)."""
    function = LR_SCHEDULES[check_lr_schedule(schedule)]
    check_warmup(warmup)
    return FlowLR(
        optimizer,
        partial(scheduled_factor, schedule=function, total_steps=total_steps, warmup=warmup),
        constant=function is constant and warmup == 0,
    )
