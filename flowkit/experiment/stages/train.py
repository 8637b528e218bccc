"""The ``train`` stage: train a flow on the current coupling with ``fk.train``."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

from flowkit.checks import Nullable, OneOf, Text
from flowkit.experiment.components import build_coupling
from flowkit.experiment.pipeline import check_model
from flowkit.experiment.specs import Problems, join_key, report
from flowkit.experiment.stages.base import STAGE_TYPES, FlowStage
from flowkit.options import option
from flowkit.paths.affine import PREDICTIONS


@STAGE_TYPES.register("train")
@dataclass
class TrainStage(FlowStage):
    """Train a flow on the current coupling (`fk.train`).

    The current coupling is the top-level `coupling`, or the pairs of the last reflow stage.
    """

    type: ClassVar[str] = "train"

    model: Any = option("Model (default: the top-level `model`).", kind="models", default=None)
    path: Any = option("Path (default: the top-level `path`).", kind="paths", default=None)
    prediction: str | None = option(
        "Model output (default: top-level).", Nullable(OneOf(PREDICTIONS)), None
    )
    coupling: Any = option(
        "Coupling for this stage (default: the current coupling).", kind="couplings", default=None
    )
    init: str | None = option(
        "Stage whose final weights initialise this flow (default: none); it must have this "
        "stage's model, path and prediction.",
        Nullable(Text()),
        None,
    )

    def references(self, key: str) -> list[tuple[str, str]]:
        return [(join_key(key, "init"), self.init)] if self.init else []

    def resolve(self, experiment: Any, parts: Any, key: str, problems: Problems) -> None:
        super().resolve(experiment, parts, key, problems)
        if parts is None:
            return
        if self.model is not None:
            check_model(self.model, parts, join_key(key, "model"), problems)
        if self.coupling is not None:
            try:
                build_coupling(self.coupling, parts.source, parts.target)
            except (ValueError, TypeError, OSError) as err:
                report(problems, join_key(key, "coupling"), err)

    def flow_spec(self, ctx: Any) -> dict[str, Any]:
        exp = ctx.experiment
        own = {"model": self.model, "path": self.path, "prediction": self.prediction}
        return {k: getattr(exp, k) if v is None else v for k, v in own.items()}

    def named_init(self) -> str | None:
        return self.init

    def run(self, ctx: Any) -> dict[str, Any]:
        coupling = ctx.coupling
        if self.coupling is not None:
            coupling = build_coupling(self.coupling, ctx.source, ctx.target)
        if self.init is None:
            flow = ctx.new_flow(self.flow_spec(ctx), self.seed(ctx))
        else:
            flow = copy.deepcopy(ctx.flows[self.init])
        return self.finish(ctx, flow, self.fit(ctx, flow, coupling))
