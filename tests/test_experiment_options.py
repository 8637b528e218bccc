"""Every option is defined once: what the Python API accepts, the YAML accepts, and what the YAML
accepts at its boundaries is what the code accepts."""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import pytest

import flowkit as fk
from flowkit.checks import Integer, Nullable, Real
from flowkit.errors import ConfigError
from flowkit.experiment.config import load_config
from flowkit.experiment.parse import yaml_fields
from flowkit.experiment.schema import Evaluation, Experiment, Plots, validate
from flowkit.experiment.stages import STAGE_TYPES
from flowkit.solvers.sampling import GRID_ARGUMENTS, RUNTIME_ARGUMENTS
from flowkit.training.config import TrainConfig

# fk.train keywords that only Python can give (the experiment sets them per stage).
TRAIN_RUNTIME = {
    "flow",
    "coupling",
    "checkpoint_dir",
    "resume",
    "generator",
    "seed",
    "progress",
    "callback",
    "final_weights",
}
# A valid, non-default YAML value for every training option.
TRAIN_VALUES: dict[str, Any] = {
    "steps": 7,
    "batch_size": 3,
    "optimizer": {"name": "adamw", "weight_decay": 0.01, "betas": [0.8, 0.9]},
    "lr": 0.01,
    "lr_schedule": "cosine",
    "warmup": 2,
    "grad_clip": 1.0,
    "ema": 0.9,
    "cond_dropout": 0.1,
    "time_sampler": {"name": "logit_normal", "m": 0.5},
    "weighting": "velocity",
    "loss": {"name": "pseudo_huber", "c": 0.01},
    "checkpoint_every": 3,
    "log_every": 2,
    "num_workers": 1,
    "precision": "bf16",
    "accumulate": 2,
    "compile": True,
}
# A valid solver spec for every sampling argument of fk.sample.
SAMPLE_VALUES: dict[str, dict[str, Any]] = {
    "steps": {"name": "heun", "steps": 3},
    "step_size": {"name": "euler", "step_size": 0.25},
    "grid": {"name": "euler", "grid": [0.0, 0.3, 1.0]},
    "t_start": {"name": "euler", "steps": 2, "t_start": 0.0},
    "t_end": {"name": "dopri5", "t_end": 1.0},
    "shift": {"name": "euler", "steps": 2, "shift": 3.0},
    "mu": {"name": "euler", "steps": 2, "mu": 1.15},
    "spacing": {"name": "unipc", "steps": 4, "spacing": {"name": "karras", "rho": 7.0}},
    "terminal": {"name": "dpm_solver_pp", "steps": 4, "terminal": 0.9},
}


def default_with(*overrides: str) -> Experiment:
    return validate(load_config(None, list(overrides)))


def keywords(fn: Any) -> set[str]:
    return {
        p.name for p in inspect.signature(fn).parameters.values() if p.kind is not p.VAR_KEYWORD
    }


def test_every_train_keyword_is_a_yaml_training_option_or_set_by_the_stage() -> None:
    yaml_keys = set(yaml_fields(TrainConfig))
    assert keywords(fk.train) == yaml_keys | TRAIN_RUNTIME
    assert set(TRAIN_VALUES) == yaml_keys


@pytest.mark.parametrize("key", sorted(TRAIN_VALUES))
def test_yaml_training_accepts_what_fk_train_accepts(key: str) -> None:
    value = TRAIN_VALUES[key]
    for where, stage in (("training", 0), ("stages[1].training", 1)):
        experiment = validate(load_config(None, {f"{where}.{key}": value}))
        config = experiment.stages[stage].train_config
        expected = getattr(TrainConfig(**{"steps": 1, "batch_size": 4, key: value}), key)
        assert repr(getattr(config, key)) == repr(expected)


def test_every_sample_keyword_is_a_solver_spec_argument_or_runtime_only() -> None:
    plan_keys = set(GRID_ARGUMENTS)
    assert keywords(fk.sample) == plan_keys | set(RUNTIME_ARGUMENTS)
    assert set(SAMPLE_VALUES) == plan_keys


@pytest.mark.parametrize("key", sorted(SAMPLE_VALUES))
def test_yaml_solvers_accept_every_sampling_argument(key: str) -> None:
    spec = SAMPLE_VALUES[key]
    experiment = default_with(f"evaluation.solvers=[{spec}]", f"stages[1].solver={spec}")
    assert experiment.stages[1].solver == spec
    assert experiment.stages[-1].options.solvers == [spec]


@pytest.mark.parametrize("name", fk.solvers.names())
def test_yaml_solvers_accept_every_solver_option(name: str) -> None:
    """Each solver's own options (with their defaults) pass in a YAML solver spec."""
    entry = fk.registry.SOLVERS.get(name)
    options = {k: p.default for k, p in entry.parameters().items() if p.default is not p.empty}
    options = {k: v for k, v in options.items() if isinstance(v, int | float | str | bool)}
    spec = {"name": name, **options}
    if not fk.solvers.build(name).adaptive:
        spec["steps"] = 2
    experiment = validate(load_config(None, {"evaluation.solvers": [spec]}))
    assert experiment.evaluation.solvers == [spec]


def test_the_reported_bugs_are_gone() -> None:
    """AdamW options and Flux's mu were rejected; ema = 1.0 validated and crashed later."""
    default_with("training.optimizer={name: adamw, weight_decay: 0.01}")
    default_with("evaluation.solvers=[{name: euler, steps: 4, mu: 1.15}]")
    with pytest.raises(ConfigError) as info:
        default_with("training.ema=1.0")
    assert "training.ema" in dict(info.value.problems)


def test_adaptive_and_fixed_step_solvers_need_the_right_grid_arguments() -> None:
    for override, key in (
        ("evaluation.solvers=[euler]", "evaluation.solvers[0].steps"),
        ("evaluation.solvers=[{name: dopri5, steps: 4}]", "evaluation.solvers[0].steps"),
        ("stages[1].solver={name: dopri5, rtol: 0}", "stages[1].solver.rtol"),
        ("stages[1].solver={name: euler, steps: 2, grid: [0, 1]}", "stages[1].solver"),
        ("stages[1].solver={name: euler, grid: [0, 0.6, 0.5, 1]}", "stages[1].solver.grid"),
        ("evaluation.solvers=[{name: euler, steps: 2, mu: .nan}]", "evaluation.solvers[0].mu"),
    ):
        with pytest.raises(ConfigError) as info:
            default_with(override)
        assert key in dict(info.value.problems), info.value.report()


def numeric_options() -> list[tuple[str, Any]]:
    """``(key path, check)`` of every bounded numeric option of the default experiment."""
    sections = {
        "": Experiment,
        "training.": TrainConfig,
        "evaluation.": Evaluation,
        "plots.": Plots,
    }
    stages = {"train": 0, "reflow": 1, "distill": 2, "evaluate": 3}
    sections.update({f"stages[{i}].": STAGE_TYPES.get(t).factory for t, i in stages.items()})
    out = []
    for prefix, cls in sections.items():
        for name, f in yaml_fields(cls).items():
            check = f.metadata["check"]
            check = check.inner if isinstance(check, Nullable) else check
            if isinstance(check, Integer | Real) and check.minimum is not None:
                out.append((prefix + name, check))
    return out


def boundary_values(check: Integer | Real) -> tuple[list[Any], list[Any]]:
    """Values at the bounds (valid) and just outside them (invalid)."""
    step = (lambda v, d: v + d) if isinstance(check, Integer) else math.nextafter
    lo, hi = check.minimum, check.maximum
    lo_open = getattr(check, "exclusive_minimum", False)
    hi_open = getattr(check, "exclusive_maximum", False)
    inside_lo = step(lo, 1 if isinstance(check, Integer) else math.inf) if lo_open else lo
    outside_lo = lo if lo_open else step(lo, -1 if isinstance(check, Integer) else -math.inf)
    valid, invalid = [inside_lo], [outside_lo]
    if hi is not None:
        inside_hi = step(hi, -1 if isinstance(check, Integer) else -math.inf) if hi_open else hi
        outside_hi = hi if hi_open else step(hi, 1 if isinstance(check, Integer) else math.inf)
        valid.append(inside_hi)
        invalid.append(outside_hi)
    return valid, invalid


def test_numeric_options_are_enumerated() -> None:
    keys = [k for k, _ in numeric_options()]
    for key in (
        "seed",
        "training.lr",
        "training.ema",
        "evaluation.n_samples",
        "plots.trajectories",
        "stages[1].num_pairs",
        "stages[2].steps_k",
        "stages[3].n_samples",
    ):
        assert key in keys


@pytest.mark.parametrize(("key", "check"), numeric_options(), ids=lambda v: str(v)[:40])
def test_numeric_options_at_their_boundaries(key: str, check: Integer | Real) -> None:
    valid, invalid = boundary_values(check)
    for value in valid:
        validate(load_config(None, {key: value}))
    for value in invalid:
        with pytest.raises(ConfigError) as info:
            validate(load_config(None, {key: value}))
        assert key in dict(info.value.problems), info.value.report()


@pytest.mark.slow
def test_boundary_values_that_validate_run(tmp_path: Path) -> None:
    """The extreme values of the options a run uses most, end to end."""
    overrides = {
        "training.steps": 1,
        "training.batch_size": 1,
        "training.checkpoint_every": 1,
        "training.log_every": 1,
        "training.warmup": 0,
        "training.ema": math.nextafter(1.0, 0.0),
        "training.grad_clip": math.nextafter(0.0, 1.0),
        "training.lr": math.nextafter(0.0, 1.0),
        "stages[1].num_pairs": 1,
        "stages[1].solver": {"name": "euler", "steps": 1},
        "stages[1].training.steps": 1,
        "stages[2].num_pairs": 1,
        "stages[2].training.steps": 1,
        "stages[2].solver": {"name": "euler", "steps": 1},
        "evaluation.n_samples": 2,
        "evaluation.solvers": [{"name": "euler", "steps": 1}],
        "plots.trajectories": 0,
        "plots.n_points": 1,
        "plots.trajectory_steps": 1,
        "model.hidden": 1,
        "model.depth": 1,
    }
    result = fk.run(None, overrides, out=tmp_path, quiet=True)
    assert [s.name for s in result.config.stages] == ["1-rf", "2-rf", "distilled", "evaluate"]
    assert all(r.get("w2") is not None for r in result.metrics if r["kind"] == "eval")
