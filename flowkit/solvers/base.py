"""Shared pieces of every solver: the :class:`Solution`, the solver interfaces and field adapters.

A *field* is what solvers integrate: a callable ``f(x, t) -> v`` with ``t`` of shape ``(B,)`` (or
``(B, N)`` per token). :func:`as_field` turns a :class:`~flowkit.flow.Flow` (or any callable plus
keyword conditions) into one without adding a layer per call when it can avoid it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import pairwise
from typing import Any, ClassVar

import torch
from torch import Tensor

from flowkit.paths.affine import AffinePath
from flowkit.registry import PATHS

Field = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Solution:
    """Result of :func:`flowkit.sample`.

    Attributes:
        x: the final state, same shape as the input.
        nfe: number of field (model) evaluations actually made.
        times: the times of the grid (fixed-step) or of the accepted steps (adaptive), ``(T+1,)``,
            float64 on the CPU (exact grid values).
        trajectory: states at ``times``, shape ``(T+1, B, ...)``; None unless requested.
        stats: solver statistics (``solver``, ``steps``; ``accepted``/``rejected`` for adaptive).
    """

    x: Tensor
    nfe: int
    times: Tensor
    trajectory: Tensor | None = None
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """Everything a solver may need besides the field, the state and the grid."""

    source: Any
    generator: torch.Generator | None = None
    record: bool = False
    progress: bool = False
    gates: Callable[[Tensor], Tensor] | None = None


class Solver(ABC):
    """A registered integration method. ``adaptive`` solvers take only (t_start, t_end)."""

    name: ClassVar[str] = "solver"
    adaptive: ClassVar[bool] = False

    @abstractmethod
    def solve(self, f: Field, x: Tensor, times: Tensor, ctx: Context) -> Solution:
        """Integrate ``dx/dt = f(x, t)`` over ``times`` (a float64 grid or a 2-point span)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FixedStepSolver(Solver):
    """A method stepping along an explicit grid: subclasses define :meth:`plan` and :meth:`step`.

    ``plan`` precomputes, once per solve, the per-step arguments (times, step sizes, coefficients)
    so the loop itself only calls ``step(f, x, *args)``.
    """

    nfe_per_step: ClassVar[int] = 1
    order: ClassVar[int] = 1

    @abstractmethod
    def plan(self, grid: Tensor, x: Tensor, ctx: Context) -> list[tuple]:
        """Per-step argument tuples for :meth:`step` (``len(grid) − 1`` of them)."""

    @abstractmethod
    def step(self, f: Field, x: Tensor, *args: Any) -> Tensor:
        """One step from the state ``x`` with the planned arguments."""

    def solve(self, f: Field, x: Tensor, times: Tensor, ctx: Context) -> Solution:
        plan = self.plan(times, x, ctx)
        steps: Iterable = plan
        if ctx.progress:
            from tqdm.auto import tqdm

            steps = tqdm(plan, desc=self.name, unit="step")
        traj = [x] if ctx.record else None
        if ctx.gates is None:
            for args in steps:
                x = self.step(f, x, *args)
                if traj is not None:
                    traj.append(x)
        else:
            gates = [ctx.gates(t) for t in times[:-1].tolist()]
            for args, gate in zip(steps, gates, strict=True):
                x = torch.where(gate, self.step(f, x, *args), x)
                if traj is not None:
                    traj.append(x)
        return Solution(
            x=x,
            nfe=self.nfe_per_step * len(plan),
            times=times,
            trajectory=None if traj is None else torch.stack(traj),
            stats={"solver": self.name, "steps": len(plan)},
        )


def stage_times(grid: Tensor, nodes: Sequence[float], x: Tensor) -> list[tuple[Tensor, ...]]:
    """Per-step tuples of time tensors ``t_i + c_j·(t_{i+1} − t_i)`` of shape ``(B,)``.

    Computed once per solve in float64 (nodes 0 and 1 are the grid points themselves), moved to
    ``x``'s dtype and device in one tensor, and expanded over the batch without copying.
    """
    g = grid.tolist()
    flat = [t1 if c == 1.0 else t0 + c * (t1 - t0) for t0, t1 in pairwise(g) for c in nodes]
    tt = torch.tensor(flat, dtype=x.dtype, device=x.device)
    views = tt.unsqueeze(1).expand(len(flat), x.shape[0]).unbind(0)
    s = len(nodes)
    return [views[i : i + s] for i in range(0, len(flat), s)]


def step_sizes(grid: Tensor) -> list[float]:
    """The step sizes ``t_{i+1} − t_i`` of a float64 grid as Python floats."""
    g = grid.tolist()
    return [t1 - t0 for t0, t1 in pairwise(g)]


def as_field(source: Any, cond: dict[str, Any] | None = None) -> Field:
    """The velocity field ``f(x, t)`` of a :class:`Flow` or of any callable ``f(x, t, **cond)``.

    A velocity-predicting Flow is unwrapped to its model, so a solver calls ``model(x, t)``
    directly; other parameterisations go through :meth:`Flow.velocity`.
    """
    from flowkit.flow import Flow  # here, not at the top: flowkit.flow -> paths -> registry
    # loads the built-in components (this module included) while flowkit.flow is half imported

    cond = cond or {}
    if isinstance(source, Flow):
        fn = source.model if source.prediction == "velocity" else source.velocity
    elif callable(source):
        fn = source
    else:
        raise TypeError(
            f"field must be a flowkit Flow or a callable f(x, t); got {type(source).__name__}"
        )
    return partial(fn, **cond) if cond else fn


def resolve_path(source: Any, path: Any, solver: str) -> AffinePath:
    """The path a path-aware solver (ddim, stochastic) uses: the field's own, or ``path=``."""
    own = getattr(source, "path", None)
    if path is not None:
        if isinstance(own, AffinePath):
            raise ValueError(
                f"solver {solver!r}: the field already has a path ({own!r}); do not also pass "
                f"path={path!r}"
            )
        return PATHS.build(path)
    if isinstance(own, AffinePath):
        return own
    raise ValueError(
        f"solver {solver!r} needs the probability path to convert velocities into (x1, ε) "
        "predictions: pass a Flow, a field with a .path attribute, or path='rectified' (any "
        "registered path name)"
    )
