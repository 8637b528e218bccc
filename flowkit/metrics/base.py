"""Metric registration: a registered metric is built with its options and called on data.

``METRICS.build({"name": "sliced_w2", "projections": 256})`` returns a :class:`Metric`; calling it
passes the data (see :attr:`Metric.inputs`) plus the bound options to the metric function, so a
YAML evaluation block can name metrics like any other component.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowkit.checks import Check
from flowkit.registry import METRICS

INPUTS = {
    "samples": "(generated, reference): two sample sets of shape (n, ...) and (m, ...)",
    "pairs": "(x0, x1): coupled samples of the same shape (n, ...)",
    "flow": "(field, x0): a Flow or velocity field f(x, t) and source samples (n, ...)",
    "classes": "(generated, labels, classifier): conditional samples (n, ...), the class each "
    "was generated for (n,), and a Classifier fitted on real data",
}


def data_arguments(inputs: str) -> int:
    """How many data arguments a metric of ``inputs`` takes before its options."""
    return 3 if inputs == "classes" else 2


@dataclass(frozen=True)
class Metric:
    """A metric function with its options bound.

    Attributes:
        name: the registered name.
        fn: the metric function, called as ``fn(*data, **options)``.
        inputs: what the data arguments are: ``"samples"``, ``"pairs"`` or ``"flow"``
            (see :data:`INPUTS`).
        options: keyword options bound at build time (call-time keywords override them).
    """

    name: str
    fn: Callable[..., Any]
    inputs: str
    options: dict[str, Any] = field(default_factory=dict)

    def __call__(self, *data: Any, **kwargs: Any) -> Any:
        return self.fn(*data, **{**self.options, **kwargs})


def register_metric(
    name: str, inputs: str, checks: Mapping[str, Check] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a metric function taking its data arguments (two, three for ``"classes"``; see
    :data:`INPUTS`) then keyword options.

    The registered factory accepts exactly the function's options (so unknown options in a spec
    are reported with the allowed ones) and returns a :class:`Metric`. ``checks`` maps options to
    their :class:`~flowkit.checks.Check`: they run when the metric is built (so ``flowkit
    validate`` refuses ``projections: 0``) and when the function is called directly; the
    function is returned wrapped by them.
    """
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {', '.join(INPUTS)}; got {inputs!r}")
    checks = dict(checks or {})

    def checked_options(options: Mapping[str, Any]) -> dict[str, Any]:
        return {k: checks[k](v, k) if k in checks else v for k, v in options.items()}

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(fn)
        params = list(signature.parameters.values())[data_arguments(inputs) :]
        options = [p if p.kind is p.VAR_KEYWORD else p.replace(kind=p.KEYWORD_ONLY) for p in params]

        @functools.wraps(fn)
        def metric(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.arguments.update(checked_options(bound.arguments))
            return fn(*bound.args, **bound.kwargs)

        def factory(**opts: Any) -> Metric:
            return Metric(name=name, fn=fn, inputs=inputs, options=checked_options(opts))

        factory.__signature__ = inspect.Signature(options)  # type: ignore[attr-defined]
        factory.__doc__ = fn.__doc__
        METRICS.add(name, factory)
        return metric if checks else fn

    return deco


class NonFiniteSamplesError(ValueError):
    """Samples given to a metric hold NaN or inf values."""


def as_matrix(x: Any, argument: str) -> Tensor:
    """Samples as a float64 matrix ``(n, D)``: every sample flattened (tensors or arrays)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise TypeError(f"{argument} must be a tensor or array of samples; got {type(x).__name__}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"{argument} must hold at least one sample; got shape {tuple(x.shape)}")
    x = x.detach().to(torch.float64)
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).reshape(x.shape[0], -1).any(dim=1).sum())
        raise NonFiniteSamplesError(
            f"{argument} holds {bad} sample(s) with NaN or inf values of {x.shape[0]}; a metric "
            "of non-finite samples is meaningless (did the solver or the training diverge?)"
        )
    return x.reshape(x.shape[0], -1)


def as_sample_pair(x: Any, y: Any, names: tuple[str, str] = ("x", "y")) -> tuple[Tensor, Tensor]:
    """Two sample sets as float64 matrices with the same number of features."""
    xm, ym = as_matrix(x, names[0]), as_matrix(y, names[1])
    if xm.shape[1] != ym.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have samples of the same size; got shapes "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    return xm, ym
