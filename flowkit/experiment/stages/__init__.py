"""Stage types of an experiment, one module each, registered in :data:`STAGE_TYPES`.

Built in: ``train``, ``reflow``, ``distill`` and ``evaluate``. A new stage type is one module
with a :class:`Stage` subclass registered under its type name (plugins included): the YAML
schema, validation, the runner, resume and the report read everything from the class.
"""

from __future__ import annotations

from flowkit.experiment.stages import distill, evaluate, reflow, train
from flowkit.experiment.stages.base import STAGE_TYPES, FlowStage, Stage
from flowkit.experiment.stages.pairs import PAIR_CHUNK

__all__ = [
    "PAIR_CHUNK",
    "STAGE_TYPES",
    "FlowStage",
    "Stage",
    "distill",
    "evaluate",
    "reflow",
    "train",
]
