"""Solvers and sampling: fixed-step, DDIM-style, adaptive, stochastic, per-token, likelihood.

``fk.sample(flow, x0, solver="heun", steps=8)`` integrates a flow; every solver is registered in
``SOLVERS`` (``fk.solvers.names()``, ``fk.solvers.build(...)``). See ``docs/solvers.md``.
"""

from flowkit.registry import SOLVERS
from flowkit.solvers import adaptive, ddim, fixed, multistep, stochastic
from flowkit.solvers.base import Solution, Solver
from flowkit.solvers.grid import grid_from_sigmas, make_grid
from flowkit.solvers.guidance import CFGuidance
from flowkit.solvers.inputs import NonFiniteSampleError
from flowkit.solvers.likelihood import LogLikelihood, log_likelihood
from flowkit.solvers.mask import TokenMask
from flowkit.solvers.sampling import SamplePlan, plan, sample
from flowkit.solvers.scheduler import FlowScheduler

build = SOLVERS.build
names = SOLVERS.names

__all__ = [
    "CFGuidance",
    "FlowScheduler",
    "LogLikelihood",
    "NonFiniteSampleError",
    "SamplePlan",
    "Solution",
    "Solver",
    "TokenMask",
    "adaptive",
    "build",
    "ddim",
    "fixed",
    "grid_from_sigmas",
    "log_likelihood",
    "make_grid",
    "multistep",
    "names",
    "plan",
    "sample",
    "stochastic",
]
