"""Validation before any work: every problem reported with its key path, in one ConfigError."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from flowkit.errors import ConfigError
from flowkit.experiment.config import load_config
from flowkit.experiment.schema import stage_names, validate

# (override, key path expected in the report, a phrase expected in its message)
BAD_CASES = [
    ("training.lrr=3", "training.lrr", "Did you mean 'lr'"),
    ("training.steps=many", "training.steps", "positive integer up to 1000000000, got 'many'"),
    ("training.lr=-1", "training.lr", "number > 0"),
    ("training.ema=1.5", "training.ema", "[0, 1)"),
    ("training.ema=1.0", "training.ema", "[0, 1)"),  # validated OK before; the EMA refused it
    ("training.optimizer={name: adamw, weight_decay: -1}", "training.optimizer", "weight_decay"),
    (
        "training.optimizer={name: adamw, weight_decy: 0.1}",
        "training.optimizer.weight_decy",
        "Did you mean 'weight_decay'",
    ),
    ("stages[1].solver.steps=-3", "stages[1].solver.steps", "must be a positive integer, got -3"),
    ("stages[1].solver.name=eulr", "stages[1].solver.name", "Did you mean 'euler'"),
    ("stages[1].solver.rtoll=1e-3", "stages[1].solver.rtoll", "Did you mean 'rtol'"),
    ("stages[1].solver={name: euler, steps: 2, step_size: 0.5}", "stages[1].solver", "at most one"),
    ("path=cosin", "path", "Did you mean 'cosine'"),
    ("data.target=moon", "data.target", "Did you mean 'moons'"),
    ("model.hiden=3", "model.hiden", "Did you mean 'hidden'"),
    ("model.hidden=-2", "model.hidden", "positive integer"),
    ("model.depth=2.5", "model.depth", "must be an integer"),
    ("coupling.method=exact", "coupling.method", "allowed options: source, target"),
    ("coupling={name: minibatch_ot, method: magic}", "coupling", "magic"),
    ("stages[0].coupling={name: minibatch_ot, reg: -1}", "stages[0].coupling", "reg"),
    ("coupling.source=gausian", "coupling.source", "Did you mean 'gaussian'"),
    ("training.time_sampler={name: logit_normal, mm: 1}", "training.time_sampler.mm", "m, s"),
    ("training.time_sampler.mm=1", "training.time_sampler.name", "no 'name' key"),
    ("prediction=noise", "prediction", "velocity, epsilon, x1, score"),
    ("device=gpu", "device", "cpu, auto, mps, cuda or cuda:N"),
    ("stages[2].teacher=1rf", "stages[2].teacher", "Did you mean '1-rf'"),
    ("stages[2].type=distil", "stages[2].type", "Did you mean 'distill'"),
    ("stages[0].name=evaluate", "stages[3].name", "duplicate stage name"),
    ("evaluation.metrics=[w2, straightness]", "evaluation.metrics[1]", "sample sets"),
    ("evaluation.metrics=[w3]", "evaluation.metrics[0]", "Did you mean 'w2'"),
    ("evaluation.n_samples=1", "evaluation.n_samples", "integer in [2, 1000000]"),
    ("evaluation.flows=[2rf]", "evaluation.flows[0]", "Did you mean '2-rf'"),
    ("evaluation.source=gausian", "evaluation.source", "Did you mean 'gaussian'"),
    ("evaluation.source={name: gaussian, dim: 3}", "evaluation.source", "cannot be reshaped"),
    ("evaluation.target={name: gaussian, dim: 3}", "evaluation.target", "event shape (3,)"),
    ("stages[3].target={name: gaussian, dim: 3}", "stages[3].target", "event shape (3,)"),
    ("plots.nfe=[]", "plots.nfe", "at least 1"),
    ("stages=[]", "stages", "non-empty list"),
    ("stages=[{type: evaluate}]", "stages[0]", "needs a flow stage"),
    ("stages=[{type: reflow}]", "stages[0]", "needs a flow stage"),
    (  # validated, then the run trained the init stage's model and saved it under this spec
        "stages=[{type: train, name: a}, "
        "{type: train, name: b, init: a, model: {name: mlp, dim: 2, hidden: 64}}]",
        "stages[1].init",
        "names 'a', whose flow differs from this stage's (model",
    ),
    (  # validated, then the distill stage stopped with a ValueError when it started
        "stages=[{type: train, name: a}, {type: train, name: b, path: cosine}, "
        "{type: distill, teacher: a, init: b}]",
        "stages[2].init",
        "differs from the teacher 'a''s (path",
    ),
    ("seed=-1", "seed", "integer >= 0"),
    ("name=[1]", "name", "must be a string"),
]


def default_with(override: str) -> dict[str, Any]:
    return load_config(None, [override])


@pytest.mark.parametrize(("override", "key", "phrase"), BAD_CASES)
def test_bad_config_reports_key_path(override: str, key: str, phrase: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(default_with(override))
    keys = [k for k, _ in info.value.problems]
    assert key in keys, info.value.report()
    message = dict(info.value.problems)[key]
    assert phrase in message, message
    assert f"  {key}: " in str(info.value)


def test_valid_overrides_pass() -> None:
    config = validate(default_with("coupling={name: minibatch_ot, method: sinkhorn, reg: 0.1}"))
    assert config.coupling["method"] == "sinkhorn"
    source, target = "{name: gaussian, quasi_random: true}", "{name: moons, stratified: true}"
    config = validate(
        load_config(None, [f"evaluation.source={source}", f"evaluation.target={target}"])
    )
    assert config.evaluation.target == {"name": "moons", "stratified": True}
    assert config.evaluation.n_samples == 2000  # the other evaluation keys keep defaults


def test_init_of_the_same_flow_validates() -> None:
    stages = (
        "stages=[{type: train, name: a}, {type: train, name: b, init: a, model: "
        "{name: mlp, dim: 2, hidden: 128, depth: 3, time_frequencies: 0}}, "
        "{type: train, name: c, path: cosine}, {type: distill, teacher: c, init: fresh}, "
        "{type: reflow, teacher: a, init: b}]"
    )
    config = validate(default_with(stages))
    assert [s.name for s in config.stages] == ["a", "b", "c", "distill", "reflow"]


def test_every_problem_is_reported_at_once() -> None:
    raw = load_config(None, ["training.lrr=3", "stages[1].solver.steps=-3", "path=cosin", "seed=x"])
    with pytest.raises(ConfigError) as info:
        validate(raw)
    assert len(info.value.problems) == 4
    assert info.value.report().startswith("invalid experiment (4 problems):")


def test_default_resolves_with_defaults_and_names() -> None:
    config = validate(load_config(None))
    assert [s.name for s in config.stages] == ["1-rf", "2-rf", "distilled", "evaluate"]
    assert config.training.warmup == 0
    assert config.training.ema is None
    assert config.training.lr_schedule == "cosine"
    assert config.data.source == "gaussian"
    assert config.stages[1].init == "teacher"
    # stage training sections are partial: only the keys given, the rest inherited ...
    assert config.stages[2].training == {"steps": 10000, "lr": 2e-3}
    assert config.stages[0].training is None
    assert config.resolved["stages"][0]["training"] is None
    # ... and merged into the typed options the stage trains with
    assert config.stages[2].train_config.steps == 10000
    assert config.stages[2].train_config.lr_schedule == "cosine"
    assert config.stages[0].train_config == config.training


def test_minimal_config_gets_the_documented_defaults() -> None:
    config = validate({"name": "tiny"})
    assert [s.type for s in config.stages] == ["train", "evaluate"]
    assert config.model == {"name": "mlp", "dim": 2}
    assert config.path == "rectified"
    assert config.evaluation.metrics == ["w2", "energy_distance"]


def test_stage_names_number_repeated_types() -> None:
    stages = [{"type": "train"}, {"type": "train"}, {"type": "evaluate", "name": "e"}]
    assert stage_names(stages) == ["train", "train2", "e"]


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        validate([1, 2])  # type: ignore[arg-type]


def test_resolved_config_is_a_fixed_point() -> None:
    resolved = validate(load_config(None)).resolved
    assert validate(resolved).resolved == resolved


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_reported_before_any_work() -> None:
    with pytest.raises(ConfigError) as info:
        validate(default_with("device=cuda:0"))
    assert dict(info.value.problems)["device"] == "'cuda:0' requested, but CUDA is not available"
