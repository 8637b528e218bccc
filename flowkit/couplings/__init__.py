"""Couplings: how (x0, x1, cond) pairs are drawn — independent, minibatch OT, stored pairs —
and the coupling transformations reflow and distillation.

Example:
    >>> import flowkit as fk
    >>> c = fk.couplings.build({"name": "minibatch_ot", "source": "gaussian", "target": "moons"})
    >>> batch = c.sample(128)  # doctest: +SKIP
"""

from flowkit.couplings.base import Coupling, CouplingBatch
from flowkit.couplings.distill import DistillationCoupling, distill
from flowkit.couplings.independent import IndependentCoupling
from flowkit.couplings.minibatch_ot import MinibatchOTCoupling
from flowkit.couplings.paired import PairedCoupling, paired
from flowkit.couplings.reflow import reflow, write_shards
from flowkit.couplings.reflow_job import ReflowJob
from flowkit.couplings.store import PairStore, StoreMismatchError, teacher_hash
from flowkit.registry import COUPLINGS

build = COUPLINGS.build
names = COUPLINGS.names

__all__ = [
    "Coupling",
    "CouplingBatch",
    "DistillationCoupling",
    "IndependentCoupling",
    "MinibatchOTCoupling",
    "PairStore",
    "PairedCoupling",
    "ReflowJob",
    "StoreMismatchError",
    "build",
    "distill",
    "names",
    "paired",
    "reflow",
    "teacher_hash",
    "write_shards",
]
