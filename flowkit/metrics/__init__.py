"""Metrics: sample discrepancies, transport costs and trajectory measures (registry ``METRICS``).

Functions return floats (or a small dataclass for :func:`trajectory_metrics`)::

    fk.metrics.w2(x, y)                 # exact W2 (POT), not W2²
    fk.metrics.sliced_w2(x, y, projections=128, generator=g)
    fk.metrics.energy_distance(x, y)    # 2E||X−Y|| − E||X−X'|| − E||Y−Y'||
    fk.metrics.energy_test(x, y, permutations=200, generator=g)   # p-value
    fk.metrics.mmd(x, y)                # RBF MMD², median-heuristic bandwidth
    fk.metrics.transport_cost(x0, x1)   # E||x1 − x0||²
    fk.metrics.straightness(flow, x0)   # ∫ E||(Z1 − Z0) − v(Z_t, t)||² dt
    fk.metrics.path_energy(flow, x0)    # E∫||v||² dt / E||Z1 − Z0||²  (≥ 1)
    fk.metrics.nfe(flow, x0, solver="dopri5", rtol=1e-5, atol=1e-5)
    fk.metrics.classifier_accuracy(x, labels, fk.metrics.fit_classifier(x_real, y_real))
    fk.metrics.evaluate(flow, x0, x1, solvers=["dopri5", {"name": "euler", "steps": [1, 8]}])

``fk.metrics.build({"name": "sliced_w2", "projections": 256})`` returns a :class:`Metric` with
the options bound; its ``inputs`` says which data it takes.
"""

from flowkit.metrics.base import INPUTS, Metric, NonFiniteSamplesError, register_metric
from flowkit.metrics.classifier import Classifier, classifier_accuracy, fit_classifier
from flowkit.metrics.discrepancy import energy_distance, energy_test, median_bandwidth, mmd
from flowkit.metrics.evaluation import evaluate
from flowkit.metrics.trajectory import (
    TrajectoryMetrics,
    nfe,
    path_energy,
    straightness,
    trajectory_metrics,
)
from flowkit.metrics.transport import sliced_w2, transport_cost, w2, wasserstein_1d_squared
from flowkit.registry import METRICS

build = METRICS.build
names = METRICS.names

__all__ = [
    "INPUTS",
    "Classifier",
    "Metric",
    "NonFiniteSamplesError",
    "TrajectoryMetrics",
    "build",
    "classifier_accuracy",
    "energy_distance",
    "energy_test",
    "evaluate",
    "fit_classifier",
    "median_bandwidth",
    "mmd",
    "names",
    "nfe",
    "path_energy",
    "register_metric",
    "sliced_w2",
    "straightness",
    "trajectory_metrics",
    "transport_cost",
    "w2",
    "wasserstein_1d_squared",
]
