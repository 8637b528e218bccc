"""The ``reflow`` stage: teacher pairs with ``fk.reflow``, then the next flow on them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import flowkit
from flowkit.experiment.components import build_coupling
from flowkit.experiment.stages.base import STAGE_TYPES
from flowkit.experiment.stages.pairs import PairStage


@STAGE_TYPES.register("reflow")
@dataclass
class ReflowStage(PairStage):
    """Generate (x0, teacher(x0)) pairs and train the next rectified flow on them."""

    type: ClassVar[str] = "reflow"
    needs_flow: ClassVar[bool] = True

    def run(self, ctx: Any) -> dict[str, Any]:
        teacher = self.teacher_name(ctx)
        ctx.log(f"[{self.name}] generating {self.num_pairs} pairs with {teacher!r}")
        pairs = flowkit.reflow(
            ctx.flows[teacher],
            ctx.base_coupling,
            **self.pair_arguments(ctx),
            **self.solver_spec().arguments(),
            **self.teacher_guidance(),
        )
        ctx.coupling = pairs
        flow = self.start_flow(ctx)
        return self.finish(ctx, flow, self.fit(ctx, flow, pairs))

    def restore(self, ctx: Any, info: Mapping[str, Any]) -> None:
        """The flow, and the stored pairs as the coupling of the following train stages (read
        only if one of them runs: sampling and evaluating need the weights alone)."""
        super().restore(ctx, info)
        spec = {"name": "paired", "store": str(ctx.run.stage_path(self.name, "pairs"))}
        ctx.defer_coupling(partial(build_coupling, spec, ctx.source, ctx.target))
