"""What reflow and distill stages share: a teacher flow, its solver and the pairs it makes."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from flowkit.checks import Custom, Nullable, Real, Text, at_most
from flowkit.conditions import NULLABLE_KEYS
from flowkit.experiment.specs import ONE_SOLVER, Problems, join_key
from flowkit.experiment.stages.base import FlowStage
from flowkit.flow import Flow
from flowkit.options import option
from flowkit.solvers.spec import SolverSpec

#: Pairs per shard of a stage's pair store (one solve per shard).
PAIR_CHUNK = 10_000
#: ``init`` values that name no stage.
INIT_WORDS = ("teacher", "fresh")


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
        "Initial weights of the new flow: `teacher` (a copy of the teacher), `fresh` (new "
        "weights) or the name of an earlier flow stage of the same model (e.g. a student "
        "distilled from the 1-RF that starts from the 2-RF).",
        Custom(Text(), "`teacher`, `fresh` or a flow stage's name"),
        "teacher",
    )

    guidance: float | None = option(
        "Classifier-free guidance scale of the teacher when it makes the pairs (conditional "
        "data): the pairs carry their labels, so the new flow learns the guided map and samples "
        "it without guidance (null: the teacher unguided).",
        Nullable(Real()),
        None,
    )

    def references(self, key: str) -> list[tuple[str, str]]:
        refs = [(join_key(key, "teacher"), self.teacher)] if self.teacher else []
        if self.init not in INIT_WORDS:
            refs.append((join_key(key, "init"), self.init))
        return refs

    def teacher_name(self, ctx: Any) -> str:
        """``teacher``, else the latest flow."""
        return self.teacher or ctx.last_flow()

    def flow_spec(self, ctx: Any) -> dict[str, Any]:
        """A student has its teacher's model, path and prediction."""
        return ctx.specs[self.teacher_name(ctx)]

    def start_flow(self, ctx: Any) -> Flow:
        """A copy of the teacher (``init: teacher``) or of the named stage's flow, or a fresh
        flow of the teacher's spec (``init: fresh``)."""
        if self.init == "fresh":
            return ctx.new_flow(self.flow_spec(ctx), self.seed(ctx))
        start = self.teacher_name(ctx) if self.init == "teacher" else self.init
        conflict = self.init_conflict(ctx)  # validation reports it first
        if conflict is not None:
            raise ValueError(f"init {conflict}")
        return copy.deepcopy(ctx.flows[start])

    def named_init(self) -> str | None:
        return None if self.init in INIT_WORDS else self.init

    def init_owner(self, ctx: Any) -> str:
        """A student has its teacher's spec."""
        return f"the teacher {self.teacher_name(ctx)!r}'s"

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

    def teacher_guidance(self) -> dict[str, float]:
        """``fk.sample``'s guidance argument of the teacher's solve (empty: unguided)."""
        return {} if self.guidance is None else {"guidance": self.guidance}

    def resolve(self, experiment: Any, parts: Any, key: str, problems: Problems) -> None:
        """The training options, and teacher guidance only with conditions to guide by."""
        super().resolve(experiment, parts, key, problems)
        unguidable = parts is not None and not set(parts.cond) & set(NULLABLE_KEYS)
        if self.guidance is not None and unguidable:
            why = "guides the teacher, but the data give no labels y or vectors c"
            problems.append((join_key(key, "guidance"), why))
