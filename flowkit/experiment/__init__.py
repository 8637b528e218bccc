"""YAML experiments: schema and validation, stages, run directories, plots and reports.

Example:
    >>> import flowkit as fk
    >>> result = fk.run(overrides=["training.steps=200"], out="runs")  # doctest: +SKIP
"""

from flowkit.experiment.config import load_config
from flowkit.experiment.errors import ConfigError
from flowkit.experiment.rundir import RunDir
from flowkit.experiment.runner import RunResult, evaluate_run, load_run, resolve, run, sample_run
from flowkit.experiment.schema import SCHEMA
from flowkit.experiment.validate import validate

__all__ = [
    "SCHEMA",
    "ConfigError",
    "RunDir",
    "RunResult",
    "evaluate_run",
    "load_config",
    "load_run",
    "resolve",
    "run",
    "sample_run",
    "validate",
]
