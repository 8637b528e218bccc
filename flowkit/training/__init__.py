"""Training: ``fk.train``, time samplers, learning-rate schedules, EMA and checkpoints.

``build``/``names`` are those of the ``TIME_SAMPLERS`` registry (``fk.training.build("mode")``).
"""

from flowkit.registry import TIME_SAMPLERS
from flowkit.training.api import train
from flowkit.training.checkpoint import latest_checkpoint, load_weights, read_checkpoint
from flowkit.training.config import TrainConfig
from flowkit.training.ema import EMA
from flowkit.training.history import History
from flowkit.training.lr_schedules import LR_SCHEDULES, lr_factor
from flowkit.training.optimizers import OPTIMIZERS
from flowkit.training.time_samplers import (
    CosMap,
    LogitNormal,
    Mode,
    TimeSampler,
    Uniform,
    UShaped,
)
from flowkit.training.trainer import NonFiniteLossError, Trainer, TrainingError

build = TIME_SAMPLERS.build
names = TIME_SAMPLERS.names

__all__ = [
    "EMA",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "CosMap",
    "History",
    "LogitNormal",
    "Mode",
    "NonFiniteLossError",
    "TimeSampler",
    "TrainConfig",
    "Trainer",
    "TrainingError",
    "UShaped",
    "Uniform",
    "build",
    "latest_checkpoint",
    "load_weights",
    "lr_factor",
    "names",
    "read_checkpoint",
    "train",
]
