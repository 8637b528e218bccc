"""Distillation of a teacher flow into a k-step student, as a coupling fed to the trainer.

On a fixed grid ``0 = t_0 < ... < t_k = 1`` the student regresses the teacher's displacement
over each segment: ``v(x_{t_i}, t_i) ≈ (x_{t_{i+1}} − x_{t_i}) / (t_{i+1} − t_i)`` with ``x_{t_i}``
the teacher's states. :class:`DistillationCoupling` writes each segment as an ordinary
flow-matching pair ``(x0', x1')`` whose conditional path passes through ``x_{t_i}`` at ``t_i``
with exactly that velocity, and fixes the training time ``t = t_i``; the standard flow-matching
loss is then the segment regression, so :func:`flowkit.train` needs no special case. For one
step (``k = 1``) it is ``||x1 − x0 − v(x0, 0)||²`` on the teacher pairs.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import flowkit
from flowkit._tensor import expand_time
from flowkit.couplings.base import Coupling, CouplingBatch, index_cond
from flowkit.couplings.paired import PairedCoupling
from flowkit.couplings.reflow import reflow
from flowkit.paths.affine import AffinePath
from flowkit.paths.conversions import x1_x0_from_velocity
from flowkit.registry import COUPLINGS, PATHS


@COUPLINGS.register("distillation")
class DistillationCoupling(Coupling):
    """Teacher segments on a k-step grid as flow-matching pairs with fixed times.

    For a pair ``n`` and a segment ``i`` drawn uniformly, with teacher states ``x_i = x_{t_i}``
    and ``v_i = (x_{i+1} − x_i)/(t_{i+1} − t_i)``, the 2×2 path system
    ``a(t_i)·x1' + b(t_i)·x0' = x_i``, ``a'(t_i)·x1' + b'(t_i)·x0' = v_i`` gives ``(x1', x0')``
    (:func:`~flowkit.paths.conversions.x1_x0_from_velocity`), and the batch carries
    ``t = t_i``. In the velocity parameterisation the flow-matching loss at ``t_i`` is
    ``||v_θ(x_i, t_i) − v_i||²``; in another it is the same regression up to the path's weight.

    Args:
        pairs: teacher pairs (a :class:`PairedCoupling`, a spec, or a pair store directory);
            for ``k > 1`` they must hold the teacher's states on the grid (``state_grid=k`` in
            :func:`flowkit.reflow`). Without states they are used as a one-step grid ``[0, 1]``.
        path: the student's path (name, spec or :class:`AffinePath`).
        steps_k: number of segments the student is trained for; must match the stored grid.

    Example:
        >>> pairs = fk.reflow(teacher, coupling, num_pairs=20_000, state_grid=4)  # doctest: +SKIP
        >>> segments = DistillationCoupling(pairs, "rectified", steps_k=4)  # doctest: +SKIP
        >>> fk.train(student, segments, steps=2000, batch_size=512)  # doctest: +SKIP
    """

    def __init__(self, pairs: Any, path: Any = "rectified", steps_k: int = 1) -> None:
        if isinstance(pairs, str | os.PathLike):
            pairs = PairedCoupling.from_store(pairs)
        pairs = COUPLINGS.build(pairs)
        if not isinstance(pairs, PairedCoupling):
            raise TypeError(f"pairs must be a PairedCoupling, got {type(pairs).__name__}")
        if isinstance(steps_k, bool) or not isinstance(steps_k, int) or steps_k < 1:
            raise ValueError(f"steps_k must be a positive integer, got {steps_k!r}")
        grid = pairs.grid if pairs.grid is not None else [0.0, 1.0]
        if steps_k == 1:
            grid = [0.0, 1.0]
        elif len(grid) != steps_k + 1:
            raise ValueError(
                f"steps_k={steps_k} needs teacher states on a {steps_k}-step grid; the pairs hold "
                f"{'no states' if pairs.grid is None else f'a {len(grid) - 1}-step grid'}. "
                f"Make them with fk.reflow(..., state_grid={steps_k})"
            )
        self.pairs = pairs
        self.path: AffinePath = PATHS.build(path)
        self.grid = torch.tensor(grid, dtype=torch.float64)
        self.steps_k = steps_k

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pairs={self.pairs!r}, path={self.path!r}, k={self.steps_k})"

    @property
    def deterministic(self) -> bool:
        return True

    def state_dict(self) -> dict[str, Any]:
        return self.pairs.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pairs.load_state_dict(state)

    def epoch_samplers(self) -> list[Any]:
        return self.pairs.epoch_samplers()

    def states(self, idx: Tensor, seg: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher states at the start and end of segment ``seg`` for pairs ``idx``."""
        pairs = self.pairs
        if self.steps_k == 1:
            return pairs.x0[idx], pairs.x1[idx]
        return pairs.states[idx, seg], pairs.states[idx, seg + 1]

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> CouplingBatch:
        idx = self.pairs.next_indices(batch_size, generator)
        seg = torch.randint(self.steps_k, (idx.numel(),), generator=generator)
        start, end = self.states(idx, seg)
        t0 = self.grid[seg].to(start.dtype)
        dt = (self.grid[seg + 1] - self.grid[seg]).to(start.dtype)
        velocity = (end - start) / expand_time(dt, start)
        # solved at the clamped time where det = a·b' − a'·b is 0 or inf (polynomial, edm at t = 0)
        tc = self.path.velocity_time(t0)
        x1, x0 = x1_x0_from_velocity(velocity, start, *self.path.coefficients(tc, start))
        return CouplingBatch(x0=x0, x1=x1, cond=index_cond(self.pairs.cond, idx), t=t0)


def distill(
    teacher: Any,
    student: Any = None,
    steps_k: int = 1,
    *,
    coupling: Any = None,
    num_pairs: int = 10_000,
    solver: str = "dopri5",
    store: str | os.PathLike | None = None,
    chunk_size: int = 10_000,
    seed: int = 0,
    steps: int = 2000,
    batch_size: int = 512,
    progress: bool = True,
    solver_options: dict[str, Any] | None = None,
    return_history: bool = False,
    **train_options: Any,
) -> Any:
    """Train a student flow for ``steps_k``-step generation on a teacher's pairs.

    One step: ``min E||x1 − x0 − v(x0, 0)||²`` over teacher pairs ``x1 = Flow(x0)``; k steps: the
    segment regression of :class:`DistillationCoupling` on the uniform grid ``t_i = i/k``. The
    student is trained by :func:`flowkit.train` on that coupling; sample it with
    ``fk.sample(student, x0, solver="euler", steps=steps_k)``.

    Args:
        teacher: a teacher :class:`~flowkit.Flow` (pairs are made with :func:`flowkit.reflow`
            from ``coupling``'s source), or teacher pairs (a :class:`PairedCoupling` or a pair
            store directory), with states on the k-grid when ``steps_k > 1``.
        student: the flow to train; default: a copy of the teacher flow (warm start).
        steps_k: number of generation steps of the student.
        coupling: source coupling for the teacher's pairs (required with a teacher flow).
        num_pairs, solver, store, chunk_size, seed: passed to :func:`flowkit.reflow`; ``seed``
            also seeds the student's training unless ``train_options`` gives ``generator``.
        steps, batch_size: training steps and batch size.
        progress: progress bars for the solve and the training.
        solver_options: teacher solver options (e.g. ``{"rtol": 1e-5, "atol": 1e-5}``; with
            ``"guidance": w`` a class-conditional teacher is guided). The pairs keep their
            conditions and the student is trained with them.
        return_history: also return the training :class:`~flowkit.training.History`.
        **train_options: passed to :func:`flowkit.train` (``lr``, ``ema``, ``seed``, ...).

    Returns:
        The trained student flow; with ``return_history=True`` a :class:`Distilled` holding
        the student and its training history.
    """
    if isinstance(teacher, PairedCoupling | str | os.PathLike):
        pairs = teacher
        if student is None:
            raise ValueError(
                "student is required when distilling from teacher pairs (got student=None); "
                "pass a Flow to train, or pass the teacher Flow itself"
            )
    else:
        if coupling is None:
            raise ValueError(
                "coupling is required to draw the teacher's source samples (got coupling=None), "
                "e.g. coupling={'name': 'independent', 'source': 'gaussian', 'target': 'moons'}"
            )
        pairs = reflow(
            teacher,
            coupling,
            solver=solver,
            num_pairs=num_pairs,
            store=store,
            chunk_size=chunk_size,
            seed=seed,
            progress=progress,
            state_grid=steps_k if steps_k > 1 else None,
            **(solver_options or {}),
        )
        if student is None:
            student = copy.deepcopy(teacher)
    if not isinstance(student, torch.nn.Module) or not hasattr(student, "path"):
        raise TypeError(f"student must be a flowkit Flow, got {type(student).__name__}")
    distillation = DistillationCoupling(pairs, student.path, steps_k)
    if "generator" not in train_options:
        train_options.setdefault("seed", seed)
    history = flowkit.train(
        student, distillation, steps, batch_size, progress=progress, **train_options
    )
    return Distilled(student, history) if return_history else student


@dataclass
class Distilled:
    """What :func:`distill` returns with ``return_history=True``.

    Attributes:
        student: the trained student flow.
        history: its training history (losses, wall time, EMA).
    """

    student: Any
    history: Any
