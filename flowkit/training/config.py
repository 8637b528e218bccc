"""``TrainConfig``: the validated options of :func:`flowkit.train`."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from flowkit.registry import TIME_SAMPLERS, did_you_mean
from flowkit.training.ema import check_decay
from flowkit.training.lr_schedules import check_lr_schedule, check_warmup
from flowkit.training.optimizers import OptimizerSpec, split_optimizer_spec

Weighting = str | Callable[[Tensor], Tensor] | None
FINAL_WEIGHTS = ("raw", "ema")


def check_positive_int(value: Any, name: str) -> int:
    """Return ``value`` if it is a positive integer, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_positive_float(value: Any, name: str) -> float:
    """Return ``value`` as a float if it is a finite positive number, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` listing them."""
    if value not in choices:
        raise ValueError(
            f"{name} must be one of {', '.join(choices)}; got {value!r}."
            + did_you_mean(str(value), list(choices))
        )
    return value


def build_time_sampler(spec: Any) -> Any:
    """Build a time sampler from a name, ``{name: ..., **kwargs}`` or an instance."""
    sampler = TIME_SAMPLERS.build(spec)
    if not callable(getattr(sampler, "sample", None)):
        raise TypeError(
            f"time_sampler must be a registered name ({', '.join(TIME_SAMPLERS.names())}), "
            f"a {{name: ..., **options}} mapping or an object with sample(n, generator); "
            f"got {type(sampler).__name__}"
        )
    return sampler


@dataclass
class TrainConfig:
    """Options of one training run, validated on construction (see :func:`flowkit.train`).

    Every field has the meaning of the :func:`flowkit.train` argument of the same name;
    ``time_sampler`` may be given as a spec and is stored built.
    """

    steps: int
    batch_size: int
    optimizer: OptimizerSpec = "adam"
    lr: float = 1e-3
    lr_schedule: str = "constant"
    warmup: int = 0
    grad_clip: float | None = None
    ema: float | None = None
    time_sampler: Any = "uniform"
    weighting: Weighting = None
    checkpoint_every: int | None = None
    checkpoint_dir: str | os.PathLike | None = None
    final_weights: str = "raw"

    def __post_init__(self) -> None:
        check_positive_int(self.steps, "steps")
        check_positive_int(self.batch_size, "batch_size")
        split_optimizer_spec(self.optimizer)
        self.lr = check_positive_float(self.lr, "lr")
        check_lr_schedule(self.lr_schedule)
        check_warmup(self.warmup)
        if self.grad_clip is not None:
            self.grad_clip = check_positive_float(self.grad_clip, "grad_clip")
        if self.ema is not None:
            self.ema = check_decay(self.ema)
        self.time_sampler = build_time_sampler(self.time_sampler)
        if not (self.weighting is None or self.weighting == "velocity" or callable(self.weighting)):
            raise ValueError(
                f"weighting must be None, 'velocity' or a callable w(t); got {self.weighting!r}"
            )
        if self.checkpoint_every is not None:
            check_positive_int(self.checkpoint_every, "checkpoint_every")
            if self.checkpoint_dir is None:
                raise ValueError("checkpoint_every needs checkpoint_dir (where to write them)")
        check_choice(self.final_weights, "final_weights", FINAL_WEIGHTS)
        if self.final_weights == "ema" and self.ema is None:
            raise ValueError("final_weights='ema' needs ema=<decay>")

    def fingerprint(self) -> dict[str, Any]:
        """JSON-compatible summary stored in checkpoints and compared on resume.

        ``steps`` only enters through the learning-rate schedule, so it is left out (None) for
        the constant schedule: a run may then be resumed with more steps and stay exact.
        """
        weighting = self.weighting
        if callable(weighting):
            weighting = getattr(weighting, "__qualname__", repr(weighting))
        optimizer = self.optimizer
        if isinstance(optimizer, Mapping):
            optimizer = {k: list(v) if isinstance(v, tuple) else v for k, v in optimizer.items()}
        return {
            "steps": None if self.lr_schedule == "constant" else self.steps,
            "batch_size": self.batch_size,
            "optimizer": optimizer,
            "lr": self.lr,
            "lr_schedule": self.lr_schedule,
            "warmup": self.warmup,
            "grad_clip": self.grad_clip,
            "ema": self.ema,
            "time_sampler": repr(self.time_sampler),
            "weighting": weighting,
        }
