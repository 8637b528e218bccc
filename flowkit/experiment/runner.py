"""Run an experiment: validate, create (or resume) the run directory, run the stages, report.

``fk.run`` is the Python twin of ``flowkit run``; :func:`load_run`, :func:`evaluate_run` and
:func:`sample_run` serve ``flowkit eval`` and ``flowkit sample`` on a finished run.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import flowkit
from flowkit import distributed
from flowkit.checks import OptionError
from flowkit.conditions import LABEL_KEY, num_classes_of
from flowkit.errors import ConfigError, DamagedRunError
from flowkit.experiment.config import load_config
from flowkit.experiment.context import Context, restored_threads
from flowkit.experiment.report import write_report
from flowkit.experiment.resume import accept_changes
from flowkit.experiment.rundir import DONE_FILE, RunDir
from flowkit.experiment.schema import Experiment, validate
from flowkit.experiment.specs import Problems, check_solver
from flowkit.experiment.stages import STAGE_TYPES
from flowkit.flow import Flow
from flowkit.solvers.spec import SolverSpec

ConfigSource = str | os.PathLike | Mapping[str, Any] | None


@dataclass
class RunResult:
    """What :func:`run` returns.

    Attributes:
        run_dir: the run directory.
        config: the validated experiment.
        flows: the trained flows by stage name.
        metrics: the records of metrics.jsonl.
    """

    run_dir: Path
    config: Experiment
    flows: dict[str, Flow]
    metrics: list[dict[str, Any]]


def resolve(
    config: ConfigSource = None, overrides: Iterable[str] | Mapping[str, Any] = ()
) -> Experiment:
    """Load, override and validate an experiment (raises :class:`ConfigError`)."""
    source = "" if config is None or isinstance(config, Mapping) else str(config)
    return validate(load_config(config, overrides), source)


def open_run(
    config: ConfigSource,
    overrides: Iterable[str] | Mapping[str, Any],
    out: str | os.PathLike,
    resume: bool | str | os.PathLike,
) -> tuple[Experiment, RunDir]:
    """The validated experiment and its run directory (new, or the one to resume), locked.

    On resume, the temporary files a killed run left are deleted (with the lock held).

    Raises:
        ConfigError: an invalid experiment, or one that differs from the resumed run's where a
            finished stage depends on it (see :mod:`flowkit.experiment.resume`).
        RunInUseError: another process is writing the run.
        DamagedRunError: the resumed run's config.yaml is damaged.
    """
    if resume is False:
        experiment = resolve(config, overrides)
        run = RunDir.create(out, experiment.name)
        run.acquire_lock()
        run.write_config(experiment.resolved)
        return experiment, run
    if resume is True:
        experiment = resolve(config, overrides)
        run = RunDir.latest(out, experiment.name)
    else:
        run = RunDir.existing(resume)
        experiment = None if config is None and not overrides else resolve(config, overrides)
    run.acquire_lock()
    try:
        stored = validate(run.read_config(), str(run.path("config.yaml")))
        if experiment is not None:
            stored = accept_changes(stored, experiment, run)
        for path in run.remove_stale_temporaries():
            warnings.warn(f"removed {path}, left by an interrupted run", stacklevel=2)
    except BaseException:
        run.release_lock()
        raise
    return stored, run


def run(
    config: ConfigSource = None,
    overrides: Iterable[str] | Mapping[str, Any] = (),
    out: str | os.PathLike = "runs",
    resume: bool | str | os.PathLike = False,
    quiet: bool = False,
) -> RunResult:
    """Run an experiment end to end.

    Args:
        config: a YAML path, a mapping, or None for the built-in default experiment.
        overrides: ``["key.path=value", ...]`` or ``{"key.path": value}``.
        out: parent directory of new run directories.
        resume: False (a new run), True (the latest run of this experiment under ``out``) or a
            run directory; finished stages are skipped, training resumes from its last
            checkpoint and reflow from its finished shards.
        quiet: no progress bars or log lines.

    Raises:
        ConfigError: for an invalid experiment (every problem with its key path).

    Example:
        >>> import flowkit as fk
        >>> result = fk.run("examples/moons_reflow.yaml", ["training.steps=200"])  # doctest: +SKIP
        >>> result.run_dir / "report.md"  # doctest: +SKIP
    """
    with restored_threads():
        experiment, run_dir = distributed.from_rank_zero(open_run, config, overrides, out, resume)
        try:
            return run_locked(experiment, run_dir, resume, quiet)
        finally:
            run_dir.release_lock()


def run_locked(
    experiment: Experiment, run_dir: RunDir, resume: bool | str | os.PathLike, quiet: bool
) -> RunResult:
    """Run the stages of ``experiment`` in ``run_dir`` (whose lock rank 0 holds)."""
    run_dir.writer = distributed.is_writer()  # under torchrun: rank 0 writes, all ranks work
    ctx = Context.create(experiment, run_dir, quiet=quiet or not run_dir.writer)
    finished = {s.name for s in experiment.stages if run_dir.done(s.name) is not None}
    if resume is not False:
        run_dir.keep_metrics(lambda r: r.get("stage") in finished)
    ctx.log(f"run directory: {run_dir.root}")
    for stage in experiment.stages:
        info = run_dir.done(stage.name)
        if info is not None:
            ctx.log(f"[{stage.name}] finished earlier; skipped")
            stage.restore(ctx, info)
            continue
        ctx.log(f"[{stage.name}] {stage.type}")
        run_dir.mark_done(stage.name, stage.run(ctx))
        distributed.barrier()
    write_report(ctx)
    ctx.log(f"report: {run_dir.path('report.md')}")
    return RunResult(run_dir.root, experiment, dict(ctx.flows), run_dir.read_metrics())


def load_run(run_dir: str | os.PathLike | RunDir, quiet: bool = True) -> Context:
    """A finished (or partly finished) run with the flows of its finished stages loaded."""
    if not isinstance(run_dir, RunDir):
        run_dir = RunDir.existing(run_dir)
    experiment = validate(run_dir.read_config(), str(run_dir.path("config.yaml")))
    ctx = Context.create(experiment, run_dir, quiet=quiet)
    unfinished = None
    for stage in experiment.stages:
        info = run_dir.done(stage.name)
        if info is None:
            unfinished = unfinished or (stage.name if stage.produces_flow else None)
            continue
        if unfinished is not None and stage.produces_flow:
            raise DamagedRunError(
                run_dir.stage_path(unfinished, DONE_FILE),
                "stage completion record",
                f"run `flowkit run --resume {run_dir.root}` to redo stage {unfinished!r}",
                f"missing, but the later stage {stage.name!r} finished",
            )
        stage.restore(ctx, info)
    if not ctx.flows:
        raise ConfigError([("run", f"{str(run_dir.root)!r} has no finished flow stage yet")])
    return ctx


def evaluate_run(run_dir: str | os.PathLike, quiet: bool = False) -> list[dict[str, Any]]:
    """Re-run the evaluate stages of a run on its saved flows; rewrite plots and report.md.

    The run is locked meanwhile (:class:`RunInUseError` if another process writes it). For an
    unfinished run see :func:`evaluate_stages`.
    """
    with restored_threads(), RunDir.existing(run_dir).locked() as run:
        return evaluate_stages(load_run(run, quiet=quiet))


def evaluate_stages(ctx: Context) -> list[dict[str, Any]]:
    """The body of :func:`evaluate_run`.

    In a finished run the run's own evaluate stages are rerun. In an unfinished one they are
    rerun as separate evaluations of the finished flows, named ``<stage>.partial``: the run's
    own evaluate stages stay unfinished, and resuming the run still runs them.
    """
    experiment = ctx.experiment
    stages = [s for s in experiment.stages if s.rerun_on_eval]
    if not stages:
        stage = STAGE_TYPES.get("evaluate").factory(name="evaluate", index=len(experiment.stages))
        stage.resolve(experiment, None, "", [])
        stages = [stage]
    if any(ctx.run.done(s.name) is None for s in experiment.stages):
        stages = [partial_evaluation(s, ctx) for s in stages]
    experiment.stages += [s for s in stages if s not in experiment.stages]
    names = {s.name for s in stages}
    ctx.run.keep_metrics(lambda r: r.get("stage") not in names)
    for stage in stages:
        ctx.run.mark_done(stage.name, stage.run(ctx))
    write_report(ctx)
    return [r for r in ctx.run.read_metrics() if r.get("stage") in names]


def partial_evaluation(stage: Any, ctx: Context) -> Any:
    """A copy of evaluate stage ``stage`` named ``<name>.partial`` (a name no stage of the run
    has) that evaluates only the flows finished so far."""
    taken = {s.name for s in ctx.experiment.stages}
    name = f"{stage.name}.partial"
    while name in taken:
        name += ".partial"
    return stage.partial(name, list(ctx.flows))


#: The arguments of :func:`sample_run` that ``fk.sample`` checks itself.
SAMPLE_ARGUMENTS = ("steps", "guidance", "guidance_interval")


def sample_run(
    run_dir: str | os.PathLike,
    n: int = 1000,
    solver: str | Mapping[str, Any] = "euler",
    steps: int | None = None,
    stage: str | None = None,
    seed: int = 0,
    label: int | None = None,
    guidance: float | None = None,
    guidance_interval: tuple[float, float] | None = None,
) -> torch.Tensor:
    """``n`` samples of a run's flow (``stage``, default the last finished flow stage), in the
    data's units (a standardised target's samples are mapped back with the run's statistics).

    The conditions are those of the run's data (drawn with the sources), or every sample of
    class ``label``; ``guidance`` (and ``guidance_interval``) guide a class-conditional flow
    (:func:`flowkit.sample`).

    Raises:
        ConfigError: naming the argument (``stage``, ``solver``, ``steps``, ``label``,
            ``guidance``, ``guidance_interval``) whose value the run cannot sample with.
    """
    ctx = load_run(run_dir)
    name = stage or next(reversed(ctx.flows))
    if name not in ctx.flows:
        raise ConfigError([("stage", f"must be one of {', '.join(ctx.flows)}, got {name!r}")])
    spec = solver_option(solver, steps)
    g = torch.Generator().manual_seed(seed)
    x0, cond = ctx.base_coupling.sample_source(n, generator=g)
    flow = ctx.flows[name].eval()
    cond = {k: v.to(ctx.device) for k, v in class_condition(cond, label, flow).items()}
    try:
        sol = flowkit.sample(
            flow,
            x0.to(ctx.device),
            cond=cond or None,
            guidance=guidance,
            guidance_interval=guidance_interval,
            **spec.arguments(),
        )
    except OptionError as err:
        key = err.option.split("[")[0]
        raise ConfigError([(key if key in SAMPLE_ARGUMENTS else "solver", err.detail)]) from None
    except ValueError as err:  # a condition without a null label (guidance)
        raise ConfigError([("guidance", str(err))]) from None
    to_data = getattr(ctx.target, "to_data", None)
    return sol.x.cpu() if to_data is None else to_data(sol.x.cpu())


def class_condition(cond: dict[str, Any], label: int | None, flow: Flow) -> dict[str, Any]:
    """The run's conditions, with every class label set to ``label`` when one is given.

    Raises:
        ConfigError: at ``label``, for a run without class labels or a label out of range.
    """
    if label is None:
        return cond
    if LABEL_KEY not in cond:
        why = "the run's data has no class labels (a conditional target gives them)"
        raise ConfigError([("label", why)])
    classes = num_classes_of(flow)
    if label < 0 or (classes is not None and label >= classes):
        allowed = f"0 .. {classes - 1}" if classes is not None else "a label >= 0"
        raise ConfigError([("label", f"must be {allowed}, got {label}")])
    return {**cond, LABEL_KEY: torch.full_like(cond[LABEL_KEY], label)}


def solver_option(solver: str | Mapping[str, Any], steps: int | None) -> SolverSpec:
    """The solver of :func:`sample_run`, checked like a YAML one.

    Raises:
        ConfigError: an unknown solver or bad options, at ``solver`` (or ``steps``).
    """
    spec = {"name": solver} if isinstance(solver, str) else dict(solver)
    if steps is not None:
        spec["steps"] = steps
    problems: Problems = []
    check_solver(spec, "solver", problems)
    if problems:
        keys = {"solver.steps": "steps"}
        raise ConfigError([(keys.get(key, "solver"), message) for key, message in problems])
    return SolverSpec.parse(spec)
