"""The ``distill`` stage: a ``steps_k``-step student of a teacher with ``fk.distill``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import flowkit
from flowkit.checks import at_most
from flowkit.experiment.stages.base import STAGE_TYPES
from flowkit.experiment.stages.pairs import PairStage
from flowkit.options import option


@STAGE_TYPES.register("distill")
@dataclass
class DistillStage(PairStage):
    """Distil the teacher into a `steps_k`-step student trained on its pairs."""

    type: ClassVar[str] = "distill"
    needs_flow: ClassVar[bool] = True

    steps_k: int = option("Student steps (1: one-step).", at_most(1000), 1)

    def run(self, ctx: Any) -> dict[str, Any]:
        teacher = self.teacher_name(ctx)
        ctx.log(f"[{self.name}] distilling {teacher!r} into a {self.steps_k}-step student")
        solver = self.solver_spec()
        result = flowkit.distill(
            ctx.flows[teacher],
            self.start_flow(ctx),
            self.steps_k,
            coupling=ctx.base_coupling,
            solver=solver.name,
            solver_options={**solver.sample_args, **solver.options, **self.teacher_guidance()},
            **self.pair_arguments(ctx),
            return_history=True,
            **self.train_options(ctx),
        )
        self.log_losses(ctx, result.history.losses)
        return {**self.finish(ctx, result.student, result.history), "steps_k": self.steps_k}

    def summary(self, info: Mapping[str, Any]) -> str:
        return f"{info.get('steps_k', 1)}-step student; " + super().summary(info)
