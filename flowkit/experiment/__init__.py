"""YAML experiments: schema and validation, stages, run directories, plots and reports.

Names are loaded lazily (like ``flowkit`` itself), so ``flowkit --help`` and ``flowkit validate``
do not pay for importing every component.

Example:
    >>> import flowkit as fk
    >>> result = fk.run(overrides=["training.steps=200"], out="runs")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "ConfigError": "flowkit.errors",
    "Experiment": "flowkit.experiment.schema",
    "STAGE_TYPES": "flowkit.experiment.stages",
    "Stage": "flowkit.experiment.stages",
    "RunDir": "flowkit.experiment.rundir",
    "RunResult": "flowkit.experiment.runner",
    "evaluate_run": "flowkit.experiment.runner",
    "load_config": "flowkit.experiment.config",
    "load_run": "flowkit.experiment.runner",
    "resolve": "flowkit.experiment.runner",
    "run": "flowkit.experiment.runner",
    "sample_run": "flowkit.experiment.runner",
    "validate": "flowkit.experiment.schema",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'flowkit.experiment' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
