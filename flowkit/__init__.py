"""flowkit: flow matching, rectified flow, reflow and distillation in PyTorch.

Conventions: t = 0 is the source (noise), t = 1 the target (data); ``x_t = a(t)·x1 + b(t)·x0``.
See ``docs/concepts.md``. Public names are loaded lazily, so ``import flowkit`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = (
    "couplings",
    "data",
    "distributed",
    "experiment",
    "metrics",
    "models",
    "paths",
    "registry",
    "solvers",
    "training",
)

_NAMES = {
    "Flow": "flowkit.flow",
    "AffinePath": "flowkit.paths",
    "PathSample": "flowkit.paths",
    "Schedule": "flowkit.paths",
    "sample": "flowkit.solvers",
    "Solution": "flowkit.solvers",
    "log_likelihood": "flowkit.solvers",
    "CFGuidance": "flowkit.solvers",
    "reflow": "flowkit.couplings",
    "distill": "flowkit.couplings",
    "train": "flowkit.training",
    "History": "flowkit.training",
    "run": "flowkit.experiment",
}

__all__ = sorted([*_SUBMODULES, *_NAMES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"flowkit.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'flowkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
