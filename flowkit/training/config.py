"""``TrainConfig``: the options of :func:`flowkit.train`, each declared once with its check.

The YAML ``training`` section of an experiment is read from the same fields (those declared
with ``yaml=True``), so a value the experiment accepts is one ``fk.train`` accepts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from flowkit.checks import (
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    POSITIVE_REAL,
    PROBABILITY,
    Custom,
    Flag,
    Integer,
    Nullable,
    OneOf,
    OptionError,
    OptionTypeError,
    at_most,
)
from flowkit.losses import Loss, build_loss
from flowkit.options import check_options, option
from flowkit.registry import TIME_SAMPLERS
from flowkit.training.ema import DECAY
from flowkit.training.lr_schedules import SCHEDULE_NAMES
from flowkit.training.optimizers import OptimizerSpec, check_optimizer
from flowkit.training.precision import PRECISIONS

Weighting = str | Callable[[Tensor], Tensor] | None
FINAL_WEIGHTS = ("raw", "ema")


def build_time_sampler(spec: Any, name: str = "time_sampler") -> Any:
    """Build a time sampler from a name, ``{name: ..., **kwargs}`` or an instance."""
    if not isinstance(spec, str | Mapping) and not callable(getattr(spec, "sample", None)):
        raise OptionTypeError(
            name,
            f"must be a registered name ({', '.join(TIME_SAMPLERS.names())}), a "
            f"{{name: ..., **options}} mapping or an object with sample(n, generator); "
            f"got {type(spec).__name__}",
        )
    return TIME_SAMPLERS.build(spec)


def check_weighting(value: Any, name: str = "weighting") -> Weighting:
    """``None``, ``"velocity"`` or a callable ``w(t)``."""
    if value is None or value == "velocity" or callable(value):
        return value
    raise OptionError(name, f"must be None, 'velocity' or a callable w(t); got {value!r}")


@dataclass
class TrainConfig:
    """Options of one training run, checked on construction (see :func:`flowkit.train`).

    Every field has the meaning of the :func:`flowkit.train` argument of the same name;
    ``time_sampler`` may be given as a spec and is stored built.
    """

    steps: int = option("Optimisation steps.", at_most(10**9))
    batch_size: int = option("Pairs per step.", at_most(2**24))
    optimizer: OptimizerSpec = option(
        "Optimizer: `adam`, `adamw`, `sgd` or `{name: ..., **options}` (e.g. weight_decay).",
        Custom(check_optimizer, "`adam`, `adamw`, `sgd` or an optimizer spec"),
        "adam",
    )
    lr: float = option("Learning rate.", POSITIVE_REAL, 1e-3)
    lr_schedule: str = option("Learning-rate schedule.", SCHEDULE_NAMES, "constant")
    warmup: int = option("Linear warm-up steps.", NON_NEGATIVE_INT, 0)
    grad_clip: float | None = option(
        "Clip the gradient norm to this value (null: no clipping).", Nullable(POSITIVE_REAL), None
    )
    ema: float | None = option(
        "Decay of an exponential moving average of the weights, used for evaluation (null: none).",
        Nullable(DECAY),
        None,
    )
    cond_dropout: float = option(
        "Probability of replacing a pair's conditions by the null condition (label "
        "`num_classes`, zero vector for `c`), so one model learns the conditional and the "
        "unconditional field for classifier-free guidance.",
        PROBABILITY,
        0.0,
    )
    time_sampler: Any = option(
        "Training-time distribution (`flowkit list time_samplers`).",
        Custom(build_time_sampler, "time sampler spec"),
        "uniform",
        kind="time_samplers",
    )
    weighting: Weighting = option(
        "Loss weighting: null (plain loss in the model's parameterisation) or `velocity` "
        "(the weight that makes any parameterisation's loss equal the velocity MSE).",
        Custom(check_weighting, "null, `velocity` (or, in Python, a callable)"),
        None,
    )
    loss: Loss = option(
        "Regression loss: `mse`, `l1`, `pseudo_huber` (`sqrt(‖d‖² + c²) − c`, c = "
        "0.00054·sqrt(dim) by default) or `{name: pseudo_huber, c: ...}`.",
        Custom(lambda value, name: build_loss(value), "`mse`, `l1`, `pseudo_huber` or a spec"),
        "mse",
    )
    checkpoint_every: int | None = option(
        "Write a resumable checkpoint every this many steps.", Nullable(POSITIVE_INT), None
    )
    log_every: int = option(
        "Show (and, in an experiment, record in metrics.jsonl) the mean loss every this many "
        "steps.",
        POSITIVE_INT,
        10,
    )
    num_workers: int = option(
        "Processes that prepare batches (the coupling's samples and work, e.g. the minibatch-OT "
        "assignment, and the times) while the model trains; 0: drawn in the training process. "
        "Any value >= 1 gives the same batches for the same seed (docs/data.md).",
        Integer(minimum=0, maximum=256),
        0,
    )
    precision: str = option(
        "Autocast precision of the forward pass and loss: `fp32` (no autocast), `bf16`, or "
        "`fp16` (with a gradient scaler); weights and optimizer state stay float32.",
        OneOf(PRECISIONS),
        "fp32",
    )
    accumulate: int = option(
        "Split each step's batch into this many micro-batches whose gradients are accumulated "
        "(less memory, the same step: `batch_size` stays the pairs per optimizer step).",
        POSITIVE_INT,
        1,
    )
    compile: bool = option(
        "torch.compile the model in place (`nn.Module.compile`) before training.", Flag(), False
    )
    checkpoint_dir: str | os.PathLike | None = option(
        "Where checkpoints go.", None, None, yaml=False
    )
    final_weights: str = option(
        "Weights left in the flow: `raw` or `ema`.", OneOf(FINAL_WEIGHTS), "raw", yaml=False
    )

    def __post_init__(self) -> None:
        check_options(self)
        if self.final_weights == "ema" and self.ema is None:
            raise OptionError("final_weights", "is 'ema', which needs ema=<decay>")
        if self.accumulate > self.batch_size:
            raise OptionError(
                "accumulate",
                f"is {self.accumulate}, more micro-batches than the {self.batch_size} pairs of "
                "batch_size",
            )

    def check_checkpointing(self) -> None:
        """``checkpoint_every`` needs ``checkpoint_dir`` (checked when training starts)."""
        if self.checkpoint_every is not None and self.checkpoint_dir is None:
            raise OptionError("checkpoint_every", "needs checkpoint_dir (where to write them)")

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
            **({"cond_dropout": self.cond_dropout} if self.cond_dropout else {}),
            "loss": self.loss.spec(),
            **({"worker_batches": True} if self.num_workers else {}),
            **({"precision": self.precision} if self.precision != "fp32" else {}),
            **({"accumulate": self.accumulate} if self.accumulate != 1 else {}),
        }
