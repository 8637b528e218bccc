"""The experiment: typed sections, each option declared once, and :func:`validate`.

A YAML experiment becomes an :class:`Experiment`: top-level options, the ``data``,
``training`` (the options of ``fk.train``, from :class:`~flowkit.training.TrainConfig`),
``evaluation`` (the evaluate stage's options, declared by that stage) and ``plots`` sections,
and the typed stages (one class per stage type, see :mod:`flowkit.experiment.stages`).
:func:`validate` reports every problem with its key path in one :class:`ConfigError`, and checks
each value with the code that will use it, so an experiment that validates runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flowkit.checks import (
    NON_NEGATIVE_INT,
    Custom,
    FileName,
    Flag,
    ListOf,
    Nullable,
    OneOf,
    OptionError,
    Text,
    at_most,
    shown,
)
from flowkit.devices import check_device
from flowkit.errors import ConfigError
from flowkit.experiment.parse import construct, parse_section, yaml_fields
from flowkit.experiment.rundir import RUN_SUFFIX_BYTES
from flowkit.experiment.specs import (
    Collect,
    Problems,
    Spec,
    join_key,
    report,
)
from flowkit.experiment.stages.evaluate import Evaluation
from flowkit.options import check_options, option
from flowkit.paths.affine import PREDICTIONS
from flowkit.training.config import TrainConfig

TRAINING_DEFAULTS = {"steps": 2000, "batch_size": 256, "checkpoint_every": 500}


@dataclass
class Data:
    """Source and target distributions."""

    source: Spec | None = option(
        "Source distribution (null: standard Gaussian of the target's shape).",
        kind="distributions",
        default=None,
    )
    target: Spec = option("Target distribution.", kind="distributions", default="moons")


@dataclass
class Plots:
    """Plot options (`plots/*.png`)."""

    enabled: bool = option("Write PNG plots and embed them in report.md.", Flag(), True)
    nfe: list[int] = option(
        "Euler step counts shown in the samples grid.", ListOf(at_most(10_000)), [1, 2, 8, 100]
    )
    n_points: int = option("Points per scatter panel.", at_most(10**6), 1000)
    trajectories: int = option(
        "Trajectories drawn per flow in trajectories.png (0: no trajectory plot).",
        NON_NEGATIVE_INT,
        64,
    )
    trajectory_steps: int = option("Euler steps of the plotted trajectories.", at_most(10_000), 100)

    def __post_init__(self) -> None:
        check_options(self)


def parse_stages(value: Any, key: str, problems: Problems) -> list[Any] | None:
    """A non-empty list of stages, each a mapping whose registered ``type`` says its options;
    returns the stages with their defaults filled in."""
    from flowkit.experiment.stages import STAGE_TYPES

    if not isinstance(value, list) or not value:
        problems.append((key, f"must be a non-empty list, got {shown(value)}"))
        return None
    out = []
    for i, item in enumerate(value):
        item_key = join_key(key, i)
        out.append(item)
        if not isinstance(item, Mapping):
            problems.append((item_key, f"must be a mapping with a 'type', got {shown(item)}"))
            continue
        try:
            kind = OneOf(tuple(STAGE_TYPES.names()))(item.get("type"), "type")
        except OptionError as err:
            report(problems, item_key, err)
            continue
        fields = yaml_fields(STAGE_TYPES.get(kind).factory)
        out[-1] = parse_section(fields, item, item_key, problems, extra_keys=("type",)) or item
    return out


@dataclass
class Experiment:
    """A validated experiment (what :func:`validate` returns and the runner works on).

    Attributes:
        resolved: the experiment as plain data with every default filled in (``config.yaml``).
    """

    name: str = option(
        "Experiment name (prefix of the run directory).",
        FileName(RUN_SUFFIX_BYTES),
        "experiment",
    )
    description: str = option("One-line description shown in report.md.", Text(), "")
    seed: int = option("Seed of every random stream.", NON_NEGATIVE_INT, 0)
    device: str = option(
        "Where the flows live; checked against the devices torch sees.",
        Custom(check_device, "`cpu`, `cuda`, `cuda:N`, `mps` or `auto`"),
        "cpu",
    )
    threads: int | None = option(
        "torch CPU threads (null: torch's default).", Nullable(at_most(1024)), None
    )
    data: Data = option("Source and target distributions.", None, {}, section=Data)
    path: Spec = option(
        "Probability path (`flowkit list paths`).", kind="paths", default="rectified"
    )
    prediction: str = option("What the model predicts.", OneOf(PREDICTIONS), "velocity")
    model: Spec = option(
        "Network (`flowkit list models`).", kind="models", default={"name": "mlp", "dim": 2}
    )
    coupling: Spec = option(
        "How training pairs are drawn; `source`/`target` default to `data`.",
        kind="couplings",
        default="independent",
    )
    training: TrainConfig = option(
        "Training options (the keywords of `fk.train`).",
        None,
        {},
        section=TrainConfig,
        defaults=TRAINING_DEFAULTS,
    )
    evaluation: Evaluation = option("Evaluation options.", None, {}, section=Evaluation)
    plots: Plots = option("Plot options.", None, {}, section=Plots)
    stages: list[Any] = option(
        "The pipeline, run in order (see the stage types below).",
        Collect(parse_stages, "a list of stages (see below)"),
        [{"type": "train"}, {"type": "evaluate"}],
    )
    resolved: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        check_options(self)

    def stage(self, name: str) -> Any:
        """The stage called ``name``."""
        return next(s for s in self.stages if s.name == name)


def stage_names(stages: list[Mapping[str, Any]]) -> list[str]:
    """Stage names: the given ``name``, else the type, numbered from the second of a type on."""
    names: list[str] = []
    counts: dict[str, int] = {}
    for stage in stages:
        kind = str(stage.get("type"))
        counts[kind] = counts.get(kind, 0) + 1
        default = kind if counts[kind] == 1 else f"{kind}{counts[kind]}"
        names.append(str(stage.get("name") or default))
    return names


def build_stages(resolved: dict[str, Any], problems: Problems) -> list[Any]:
    """The typed stages, named (``resolved["stages"]`` gets the names too)."""
    from flowkit.experiment.stages import STAGE_TYPES

    stages = []
    for i, (raw, name) in enumerate(
        zip(resolved["stages"], stage_names(resolved["stages"]), strict=True)
    ):
        raw["name"] = name
        cls = STAGE_TYPES.get(raw["type"]).factory
        stage = construct(cls, raw, join_key("stages", i), problems, index=i)
        if stage is not None:
            stages.append(stage)
    return stages


def validate(config: Any, source: str = "") -> Experiment:
    """Check ``config`` against the schema, the registries and the code that will run it.

    Returns:
        The typed :class:`Experiment` (defaults filled in, every stage named and resolved).

    Raises:
        ConfigError: listing every problem (unknown keys, wrong types, unknown registry names,
            out-of-range values, bad stage references, data that does not fit) with its key path.
    """
    from flowkit.experiment.pipeline import check_pipeline

    problems: Problems = []
    if not isinstance(config, Mapping):
        raise ConfigError([("", f"must be a mapping at the top level, got {config!r}")], source)
    resolved = parse_section(yaml_fields(Experiment), config, "", problems)
    if problems or resolved is None:
        raise ConfigError(problems, source)
    stages = build_stages(resolved, problems)
    experiment = construct(Experiment, {**resolved, "stages": stages}, "", problems)
    if problems:
        raise ConfigError(problems, source)
    experiment.resolved = resolved
    check_pipeline(experiment, problems)
    if problems:
        raise ConfigError(problems, source)
    return experiment
