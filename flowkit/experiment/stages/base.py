"""The stage base classes: what every stage type owns, and what flow-producing stages share.

A stage type is one dataclass registered in :data:`STAGE_TYPES`: its declared options (read
from YAML by the same fields), the earlier stages it reads (:meth:`Stage.references`), the
checks that need the whole experiment (:meth:`Stage.resolve`), how it runs through the public
API (:meth:`Stage.run`), how a finished stage is brought back on resume (:meth:`Stage.restore`)
and its line in ``report.md`` (:meth:`Stage.summary`, :meth:`Stage.report_lines`). Nothing else
in the experiment layer branches on the stage type.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import flowkit
from flowkit.checks import FileName, Nullable
from flowkit.experiment.specs import Problems, join_key, report
from flowkit.flow import Flow
from flowkit.options import declared, option
from flowkit.registry import Registry, split_spec
from flowkit.training.config import TrainConfig

STAGE_TYPES: Registry = Registry("stage type")
#: Bytes a stage directory's name may gain (``<name>.replaced-<n>`` when a resume sets it aside).
STAGE_SUFFIX_BYTES = 16
#: The keys of a flow spec (what ``flow_spec`` returns).
FLOW_KEYS = ("model", "path", "prediction")


def fmt(value: Any) -> str:
    """Compact cell text: 4 significant digits for floats, ``–`` for missing values."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass
class Stage(ABC):
    """One step of the pipeline (subclasses declare their options with ``option``).

    Attributes:
        name: unique name (default: the type, numbered if repeated).
        index: position in the pipeline (names the stage's random stream).
    """

    type: ClassVar[str] = ""
    produces_flow: ClassVar[bool] = False
    needs_flow: ClassVar[bool] = False
    rerun_on_eval: ClassVar[bool] = False

    name: str | None = option(
        "Unique stage name (default: the type, numbered if repeated).",
        Nullable(FileName(STAGE_SUFFIX_BYTES)),
        None,
    )
    index: int = field(default=0, kw_only=True)

    def references(self, key: str) -> list[tuple[str, str]]:
        """``(key path, stage name)`` of each earlier flow stage this stage reads (``key``:
        this stage's own key path)."""
        return []

    def resolve(self, experiment: Any, parts: Any, key: str, problems: Problems) -> None:
        """Merge inherited options and check what needs the whole experiment (``parts``: the
        built data); problems go to ``problems`` at key paths under ``key``. Nothing to do by
        default."""
        return

    @abstractmethod
    def run(self, ctx: Any) -> dict[str, Any]:
        """Do the work; return the record stored in the stage's ``done.json``."""

    def restore(self, ctx: Any, info: Mapping[str, Any]) -> None:
        """Bring a finished stage's results back into ``ctx`` without rerunning it (a stage
        that produces nothing later stages read has nothing to bring back)."""
        return

    def summary(self, info: Mapping[str, Any]) -> str:
        """The stage's cell in the report's stage table."""
        return ""

    def report_lines(self, run: Any) -> list[str]:
        """The stage's own section of ``report.md``, from the run directory ``run``."""
        return []

    def partial(self, name: str, flows: list[str]) -> Stage:
        """A copy named ``name`` that reruns on a partly finished run whose finished flows are
        ``flows`` (``flowkit eval`` on an unfinished run; :attr:`rerun_on_eval` stages only)."""
        return replace(self, name=name)

    def seed(self, ctx: Any) -> int:
        """The stage's own random stream."""
        from flowkit.experiment.context import stage_seed

        return stage_seed(ctx.experiment.seed, self.index)


@dataclass
class FlowStage(Stage):
    """A stage that trains a flow (``fk.train``), with overrides of the top-level ``training``.

    Attributes:
        train_config: the resolved training options (top level merged with the overrides).
    """

    produces_flow: ClassVar[bool] = True

    training: dict[str, Any] | None = option(
        "Overrides of the top-level `training` options.",
        None,
        None,
        section=TrainConfig,
        partial=True,
    )
    train_config: TrainConfig | None = field(default=None, kw_only=True)

    def resolve(self, experiment: Any, parts: Any, key: str, problems: Problems) -> None:
        """The stage's :class:`TrainConfig`: the top level's, with this stage's overrides."""
        overrides = self.training or {}
        merged = {**experiment.resolved["training"], **overrides}
        ema = "ema" if merged["ema"] is not None else "raw"
        try:
            self.train_config = TrainConfig(**merged, final_weights=ema)
        except (ValueError, TypeError) as err:
            where = "training"
            if getattr(err, "option", "").split(".")[0] in overrides:
                where = join_key(key, "training")
            report(problems, where, err)

    @abstractmethod
    def flow_spec(self, ctx: Any) -> dict[str, Any]:
        """Model, path and prediction of this stage's flow (``ctx`` is read for
        ``experiment``, ``specs`` and ``last_flow()`` only, so validation can ask too)."""

    def named_init(self) -> str | None:
        """The earlier stage whose weights start this one, if ``init`` names one."""
        return None

    def init_owner(self, ctx: Any) -> str:
        """Whose flow spec this stage has, in :meth:`init_conflict`'s message."""
        return "this stage's"

    def init_conflict(self, ctx: Any) -> str | None:
        """Why the stage named by ``init`` cannot start this one, or None: its flow has another
        model, path or prediction (component specs compared as ``(name, options)``, so ``mlp``
        equals ``{name: mlp}``). ``ctx`` is read as by :meth:`flow_spec`; a spec of None (not
        formed: validation has reported why) is not compared."""
        name = self.named_init()
        theirs = None if name is None else ctx.specs[name]
        if theirs is None:
            return None
        ours = self.flow_spec(ctx)
        differs = [k for k in FLOW_KEYS if normal_spec(theirs.get(k)) != normal_spec(ours.get(k))]
        if not differs:
            return None
        shown = "; ".join(f"{k} {theirs.get(k)!r} against {ours.get(k)!r}" for k in differs)
        return (
            f"names {name!r}, whose flow differs from {self.init_owner(ctx)} ({shown}): a stage "
            "starts only from the weights of the same model, path and prediction"
        )

    def fit(self, ctx: Any, flow: Flow, coupling: Any) -> Any:
        """Train ``flow`` on ``coupling`` (resumable); the mean loss of every ``log_every``
        steps goes to metrics.jsonl."""
        history = flowkit.train(
            flow, coupling, **self.train_options(ctx), seed=self.seed(ctx), progress=ctx.progress
        )
        self.log_losses(ctx, history.losses)
        return history

    def train_options(self, ctx: Any) -> dict[str, Any]:
        """``fk.train``'s options for this stage: its :class:`TrainConfig`, checkpointed in
        ``stages/<name>/checkpoints`` and resumed from there."""
        return {
            **train_arguments(self.train_config),
            "checkpoint_dir": ctx.run.shared_dir("stages", self.name, "checkpoints"),
            "resume": True,
        }

    def log_losses(self, ctx: Any, losses: list[float]) -> None:
        """Record the mean loss of each window of ``log_every`` steps in metrics.jsonl."""
        every = self.train_config.log_every
        for start in range(0, len(losses), every):
            window = losses[start : start + every]
            ctx.run.append_metric(
                {
                    "kind": "train",
                    "stage": self.name,
                    "step": start + len(window),
                    "loss": sum(window) / len(window),
                }
            )

    def finish(self, ctx: Any, flow: Flow, history: Any) -> dict[str, Any]:
        """Save the trained flow and return the stage's ``done.json`` record."""
        ctx.save_flow(self.name, flow, self.flow_spec(ctx))
        return {
            "steps": history.steps,
            "final_loss": history.final_loss,
            "wall_time": history.wall_time,
            "effective_batch_size": history.effective_batch_size,
            "deterministic_coupling": bool(flow.deterministic_coupling),
        }

    def restore(self, ctx: Any, info: Mapping[str, Any]) -> None:
        ctx.load_flow(self.name, self.flow_spec(ctx), info)

    def summary(self, info: Mapping[str, Any]) -> str:
        return (
            f"{info['steps']} steps, final loss {fmt(info.get('final_loss'))}, "
            f"{fmt(info.get('wall_time'))} s"
        )


def normal_spec(spec: Any) -> Any:
    """A component spec as ``(name, options)`` (other values as they are)."""
    return split_spec(spec) if isinstance(spec, str | Mapping) else spec


def train_arguments(config: TrainConfig) -> dict[str, Any]:
    """``fk.train``'s keyword arguments from a :class:`TrainConfig` (its directory excepted)."""
    return {f.name: getattr(config, f.name) for f in declared(config) if f.name != "checkpoint_dir"}
