"""A reflow job: the teacher, source coupling, solver and seeds that define a set of pairs."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

import flowkit
from flowkit.couplings.base import Cond, Coupling
from flowkit.couplings.store import shard_seed, shard_sizes, teacher_hash
from flowkit.registry import COUPLINGS

ShardCallback = Callable[[int, int], None]


def state_grid_times(state_grid: int | Sequence[float] | None) -> list[float] | None:
    """Times at which teacher states are kept: ``k`` -> ``[0, 1/k, ..., 1]``, or an explicit list.

    Raises:
        ValueError: unless the grid is a positive integer or increasing times from 0 to 1.
    """
    if state_grid is None:
        return None
    if isinstance(state_grid, int) and not isinstance(state_grid, bool):
        if state_grid < 1:
            raise ValueError(f"state_grid must be a positive number of steps, got {state_grid}")
        return torch.linspace(0.0, 1.0, state_grid + 1, dtype=torch.float64).tolist()
    times = [float(t) for t in state_grid]
    if len(times) < 2 or times[0] != 0.0 or times[-1] != 1.0 or sorted(set(times)) != times:
        raise ValueError(
            f"state_grid must be a step count or increasing times from 0.0 to 1.0; got {times}"
        )
    return times


def teacher_solve(
    flow: Any,
    x0: Tensor,
    cond: Cond,
    solver: str,
    grid: list[float] | None,
    solver_options: dict[str, Any],
) -> tuple[Tensor, Tensor | None, int]:
    """Solve ``x1 = Flow(x0)`` with :func:`flowkit.sample`; returns ``(x1, states, nfe)``.

    With a grid, the ODE is solved segment by segment ``[t_i, t_{i+1}]`` (solver options apply to
    each segment) and ``states[:, i]`` is the state at ``t_i``.
    """
    times = grid if grid is not None else [0.0, 1.0]
    states, nfe = [x0], 0
    for t0, t1 in itertools.pairwise(times):
        sol = flowkit.sample(
            flow,
            states[-1],
            solver=solver,
            t_start=t0,
            t_end=t1,
            cond=cond or None,
            **solver_options,
        )
        states.append(sol.x)
        nfe += int(sol.nfe)
    return states[-1], (torch.stack(states, dim=1) if grid is not None else None), nfe


def generate_shard(
    flow: Any,
    coupling: Coupling,
    index: int,
    size: int,
    seed: int,
    solver: str,
    grid: list[float] | None,
    solver_options: dict[str, Any],
) -> tuple[dict[str, Tensor], int]:
    """Pairs of shard ``index``: ``x0`` (and cond) drawn with the shard's own seed, then solved."""
    generator = torch.Generator().manual_seed(shard_seed(seed, index))
    x0, cond = coupling.sample_source(size, generator=generator)
    param = next(iter(flow.parameters()), None) if isinstance(flow, nn.Module) else None
    if param is not None:
        x0, cond = x0.to(param.device), {k: v.to(param.device) for k, v in cond.items()}
    x1, states, nfe = teacher_solve(flow, x0, cond, solver, grid, solver_options)
    tensors = {"x0": x0, "x1": x1, **{f"cond.{k}": v for k, v in cond.items()}}
    if states is not None:
        tensors["states"] = states
    return {k: v.detach().cpu() for k, v in tensors.items()}, nfe


def check_positive(value: Any, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{argument} must be a positive integer, got {value!r}")
    return value


@dataclass
class ReflowJob:
    """Everything that determines a set of reflow pairs, split into shards of ``chunk_size``.

    Build it with :meth:`create`; :meth:`run` solves the requested shards.
    """

    flow: Any
    coupling: Coupling
    solver: str
    num_pairs: int
    chunk_size: int
    seed: int
    grid: list[float] | None
    solver_options: dict[str, Any]
    teacher_digest: str

    @classmethod
    def create(
        cls,
        flow: Any,
        coupling: Any,
        solver: str,
        num_pairs: int,
        chunk_size: int,
        seed: int,
        state_grid: int | Sequence[float] | None,
        solver_options: dict[str, Any],
    ) -> ReflowJob:
        coupling = COUPLINGS.build(coupling)
        check_positive(num_pairs, "num_pairs")
        check_positive(chunk_size, "chunk_size")
        grid = state_grid_times(state_grid)
        digest = teacher_hash(flow)
        return cls(
            flow, coupling, solver, num_pairs, chunk_size, seed, grid, solver_options, digest
        )

    @property
    def sizes(self) -> list[int]:
        return shard_sizes(self.num_pairs, self.chunk_size)

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What identifies the pairs: teacher hash, solver, options, seed, counts and grid."""
        return {
            "teacher_hash": self.teacher_digest,
            "solver": self.solver,
            "solver_options": dict(self.solver_options),
            "seed": self.seed,
            "num_pairs": self.num_pairs,
            "shard_size": self.chunk_size,
            "grid": self.grid,
        }

    def run(
        self, indices: list[int], progress: bool, callback: ShardCallback | None
    ) -> Iterator[tuple[int, dict[str, Tensor], int]]:
        """Yield ``(index, tensors, nfe)`` per shard, the teacher in eval mode meanwhile."""
        sizes = self.sizes
        bar = tqdm(
            total=sum(sizes[i] for i in indices), unit="pair", desc="reflow", disable=not progress
        )
        module = self.flow if isinstance(self.flow, nn.Module) else None
        was_training = module.training if module is not None else False
        if module is not None:
            module.eval()
        done = 0
        try:
            for index in indices:
                tensors, nfe = generate_shard(
                    self.flow,
                    self.coupling,
                    index,
                    sizes[index],
                    self.seed,
                    self.solver,
                    self.grid,
                    self.solver_options,
                )
                yield index, tensors, nfe
                done += sizes[index]
                bar.update(sizes[index])
                if callback is not None:
                    callback(index, done)
        finally:
            bar.close()
            if module is not None:
                module.train(was_training)

    def manifest(self, nfe_per_shard: list[int]) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "num_shards": len(self.sizes),
            "count": self.num_pairs,
            "grid": self.grid,
            "nfe_per_shard": nfe_per_shard,
            "nfe_total": sum(nfe_per_shard),
            "deterministic": True,
            "coupling": repr(self.coupling),
            "flowkit_version": flowkit.__version__,
        }
