"""What reflow and distill stages share: a teacher flow, its solver and the pairs it makes."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from flowkit.checks import Nullable, OneOf, Text, at_most
from flowkit.experiment.schema import ONE_SOLVER
from flowkit.experiment.specs import SolverSpec, join_key
from flowkit.experiment.stages.base import FlowStage
from flowkit.flow import Flow
from flowkit.options import option

#: Pairs per shard of a stage's pair store (one solve per shard).
PAIR_CHUNK = 10_000


@dataclass
class PairStage(FlowStage):
    """A flow stage trained on ``(x0, teacher(x0))`` pairs from the base coupling's source."""

    teacher: str | None = option(
        "Stage whose flow generates the pairs (default: the last flow).", Nullable(Text()), None
    )
    solver: Any = option(
        "Solver that maps x0 to the teacher's x1.",
        ONE_SOLVER,
        {"name": "dopri5", "rtol": 1e-5, "atol": 1e-5},
    )
    num_pairs: int = option("Pairs generated.", at_most(10**9), 20000)
    init: str = option(
        "Start the new flow from the teacher's weights or from scratch.",
        OneOf(("teacher", "fresh")),
        "teacher",
    )

    def references(self, key: str) -> list[tuple[str, str]]:
        return [(join_key(key, "teacher"), self.teacher)] if self.teacher else []

    def teacher_name(self, ctx: Any) -> str:
        """``teacher``, else the latest flow."""
        return self.teacher or ctx.last_flow()

    def flow_spec(self, ctx: Any) -> dict[str, Any]:
        """A student has its teacher's model, path and prediction."""
        return ctx.specs[self.teacher_name(ctx)]

    def start_flow(self, ctx: Any) -> Flow:
        """A copy of the teacher (``init: teacher``) or a fresh flow of the same spec."""
        if self.init == "teacher":
            return copy.deepcopy(ctx.flows[self.teacher_name(ctx)])
        return ctx.new_flow(self.flow_spec(ctx), self.seed(ctx))

    def pair_arguments(self, ctx: Any) -> dict[str, Any]:
        """Keyword arguments of ``fk.reflow`` and ``fk.distill``: the pair store, its shards,
        the seed of the sources and the progress bar (the solver is given separately)."""
        return {
            "num_pairs": self.num_pairs,
            "store": ctx.run.shared_dir("stages", self.name, "pairs"),
            "chunk_size": PAIR_CHUNK,
            "seed": self.seed(ctx),
            "progress": ctx.progress,
        }

    def solver_spec(self) -> SolverSpec:
        """The teacher's solver."""
        return SolverSpec.parse(self.solver)
