"""The experiment: typed sections, each option declared once, and :func:`validate`.

A YAML experiment becomes an :class:`Experiment`: top-level options, the ``data``,
``training`` (the options of ``fk.train``, from :class:`~flowkit.training.TrainConfig`),
``evaluation`` and ``plots`` sections, and the typed stages (one class per stage type, see
:mod:`flowkit.experiment.stages`). :func:`validate` reports every problem with its key path in
one :class:`ConfigError`, and checks each value with the code that will use it, so an
experiment that validates runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flowkit.checks import (
    NON_NEGATIVE_INT,
    Custom,
    FileName,
    Flag,
    Integer,
    ListOf,
    Nullable,
    OneOf,
    OptionError,
    Real,
    Text,
    at_most,
    shown,
)
from flowkit.devices import check_device
from flowkit.errors import ConfigError
from flowkit.experiment.parse import construct, parse_section, yaml_fields
from flowkit.experiment.rundir import RUN_SUFFIX_BYTES
from flowkit.experiment.specs import (
    Problems,
    check_component,
    check_solver,
    join_key,
    registry,
    report,
)
from flowkit.options import check_options, option
from flowkit.paths.affine import PREDICTIONS
from flowkit.solvers.guidance import check_interval
from flowkit.training.config import TrainConfig

Spec = str | dict[str, Any]
TRAINING_DEFAULTS = {"steps": 2000, "batch_size": 256, "checkpoint_every": 500}


@dataclass(frozen=True)
class Collect:
    """A check that appends every problem of a value (``fn(value, key, problems)``) instead of
    raising at the first; the parser runs it with the key path of the value."""

    fn: Callable[[Any, str, Problems], Any]
    text: str

    def collect(self, value: Any, key: str, problems: Problems) -> Any:
        """Append the problems of ``value``; return it resolved (``fn``'s result if any)."""
        resolved = self.fn(value, key, problems)
        return value if resolved is None else resolved

    def describe(self) -> str:
        return self.text


def check_solvers(value: Any, key: str, problems: Problems) -> None:
    """A non-empty list of solver specs whose ``steps`` may be lists."""
    if not isinstance(value, list) or not value:
        problems.append((key, f"must be a non-empty list of solver specs, got {shown(value)}"))
        return
    for i, spec in enumerate(value):
        check_solver(spec, join_key(key, i), problems, many_steps=True)


#: Metric inputs an evaluation can score: sample sets, and samples of requested classes.
EVALUATION_INPUTS = ("samples", "classes")


def check_sample_metrics(value: Any, key: str, problems: Problems) -> None:
    """A list of registered metrics that score generated samples (:data:`EVALUATION_INPUTS`)."""
    if not isinstance(value, list):
        problems.append((key, f"must be a list of metric specs, got {shown(value)}"))
        return
    for i, spec in enumerate(value):
        item = join_key(key, i)
        before = len(problems)
        check_component("metrics", spec, item, problems)
        inputs = registry("metrics").build(spec).inputs if len(problems) == before else None
        if inputs is not None and inputs not in EVALUATION_INPUTS:
            problems.append(
                (
                    item,
                    f"{shown(spec)} does not compare two sample sets; evaluation metrics compare "
                    "generated and target samples, or generated samples and their requested "
                    "classes (classifier_accuracy); straightness and transport cost are "
                    "measured with `straightness: true`",
                )
            )


ONE_SOLVER = Collect(check_solver, "a solver spec")


@dataclass
class Data:
    """Source and target distributions."""

    source: Spec | None = option(
        "Source distribution (null: standard Gaussian of the target's shape).",
        kind="distributions",
        default=None,
    )
    target: Spec = option("Target distribution.", kind="distributions", default="moons")


def check_guidance_interval(value: Any, name: str) -> list[float]:
    """``[t_lo, t_hi]`` with ``0 <= t_lo <= t_hi <= 1`` (as ``fk.sample`` checks it)."""
    return list(check_interval(value, name))


@dataclass
class Evaluation:
    """Evaluation options (the top-level `evaluation` section; an `evaluate` stage may override
    any of them)."""

    n_samples: int = option("Generated and target samples per metric.", Integer(2, 10**6), 2000)
    solvers: list[Spec] = option(
        "Solvers to evaluate; a list of `steps` gives one row per step count.",
        Collect(check_solvers, "a list of solver specs"),
        [
            {"name": "euler", "steps": [1, 2, 4, 8, 100]},
            {"name": "dopri5", "rtol": 1e-5, "atol": 1e-5},
        ],
    )
    metrics: list[Spec] = option(
        "Sample metrics comparing generated and target samples, or generated samples and their "
        "requested classes (`classifier_accuracy`, labelled data) (`flowkit list metrics`).",
        Collect(check_sample_metrics, "a list of metric specs"),
        ["w2", "energy_distance"],
    )
    straightness: bool = option(
        "Also measure straightness and transport cost along each flow's trajectories.",
        Flag(),
        True,
    )
    source: Spec | None = option(
        "Distribution of the evaluation's source samples (null: the data source). "
        "`{name: gaussian, quasi_random: true}` gives an even (scrambled Sobol) set, which "
        "with a stratified `target` measures the flow rather than the luck of the draw.",
        kind="distributions",
        default=None,
    )
    target: Spec | None = option(
        "Distribution of the reference target samples (null: the data target), e.g. "
        "`{name: moons, stratified: true}`; same event shape as the data target.",
        kind="distributions",
        default=None,
    )
    flows: list[str] | None = option(
        "Names of the stages whose flows are evaluated (null: every flow so far).",
        Nullable(ListOf(Text())),
        None,
    )
    guidance: list[float] | None = option(
        "Classifier-free guidance scales w (conditional data): every solve is repeated per "
        "scale, one metrics row each (null: no guidance; 1 is the conditional flow, 0 the "
        "unconditional one).",
        Nullable(ListOf(Real(), scalar_ok=True)),
        None,
    )
    guidance_interval: list[float] | None = option(
        "Apply guidance only for t in [t_lo, t_hi] (the conditional flow elsewhere); null: at "
        "every t.",
        Nullable(Custom(check_guidance_interval, "two times [t_lo, t_hi] in [0, 1]")),
        None,
    )

    def __post_init__(self) -> None:
        check_options(self)


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
