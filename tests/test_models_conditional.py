"""Models that read conditions (labels ``y``, vectors ``c``), their errors, and the validation of
a model against the data's conditions (issue 13, point 1)."""

from __future__ import annotations

import re

import pytest
import torch

import flowkit as fk
from flowkit.errors import ConfigError
from flowkit.experiment import validate
from flowkit.models.conditioning import ConditionError

IMAGE_MODELS = [
    {"name": "conv", "hidden": 16},
    {"name": "unet", "width": 16, "mults": [1, 2]},
]
SHAPES = {"conv": (4, 1, 8, 8), "unet": (4, 1, 8, 8), "mlp": (4, 2)}
MODELS = [{"name": "mlp", "hidden": 32}, *IMAGE_MODELS]


def build(spec: dict, **options: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return fk.models.build({**spec, **options})


def inputs(spec: dict) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    shape = SHAPES[spec["name"]]
    return torch.randn(shape, generator=g), torch.rand(shape[0], generator=g)


def randomise_output(net: torch.nn.Module) -> None:
    """Models start with a zero output layer; give every weight a value so outputs differ."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("spec", MODELS, ids=lambda s: s["name"])
def test_labels_and_vectors_change_the_output(spec: dict) -> None:
    net = build(spec, num_classes=3, cond_dim=2)
    randomise_output(net)
    x, t = inputs(spec)
    c = torch.randn(4, 2, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 3])  # 3: the null label
    out = net(x, t, y=y, c=c)
    assert out.shape == x.shape
    assert not torch.allclose(out, net(x, t, y=torch.tensor([1, 2, 3, 0]), c=c))
    assert not torch.allclose(out, net(x, t, y=y, c=c + 1))
    assert net.num_classes == 3 and net.cond_dim == 2


@pytest.mark.parametrize("spec", MODELS, ids=lambda s: s["name"])
def test_unconditional_models_keep_their_weights_and_declare_no_conditions(spec: dict) -> None:
    net = build(spec)
    assert net.num_classes is None and net.cond_dim is None
    assert not any("cond_embed" in k for k in net.state_dict())


@pytest.mark.parametrize("spec", MODELS, ids=lambda s: s["name"])
@pytest.mark.parametrize(
    ("options", "cond", "message"),
    [
        ({}, {"y": torch.zeros(4, dtype=torch.long)}, "is unconditional but was given"),
        ({"num_classes": 3}, {}, r"is conditional and needs y \(class labels"),
        ({"cond_dim": 2}, {}, r"needs c \(condition vectors \(B, 2\)"),
        ({"num_classes": 3}, {"y": torch.zeros(4)}, "must be an integer tensor"),
        ({"num_classes": 3}, {"y": torch.zeros(5, dtype=torch.long)}, r"shape \(4,\)"),
        ({"num_classes": 3}, {"y": torch.tensor([0, 1, 2, 4])}, r"outside \[0, 3\]"),
        ({"num_classes": 3}, {"y": torch.tensor([0, 1, 2, -1])}, r"outside \[0, 3\]"),
        ({"cond_dim": 2}, {"c": torch.zeros(4, 3)}, r"must have shape \(4, 2\)"),
        ({"cond_dim": 2}, {"c": torch.zeros(4, 2, dtype=torch.long)}, "must be a float tensor"),
        (
            {"num_classes": 3},
            {"y": torch.zeros(4, dtype=torch.long), "mask": torch.ones(4)},
            "unknown condition",
        ),
    ],
)
def test_condition_errors(spec: dict, options: dict, cond: dict, message: str) -> None:
    net = build(spec, **options)
    x, t = inputs(spec)
    with pytest.raises(ConditionError, match=message):
        net(x, t, **cond)


@pytest.mark.parametrize("option", ["num_classes", "cond_dim"])
@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_condition_sizes_are_checked(option: str, value: object) -> None:
    with pytest.raises(ValueError, match=option):
        fk.models.build({"name": "conv", option: value})


def digits_config(target: dict, model: dict) -> dict:
    return {
        "name": "cond",
        "data": {"target": target},
        "model": model,
        "training": {"steps": 1, "batch_size": 4},
        "evaluation": {"n_samples": 8, "solvers": [{"name": "euler", "steps": [1]}]},
        "stages": [{"type": "train", "name": "fm"}],
    }


CONDITIONAL = {"name": "digits", "conditional": True}


@pytest.mark.parametrize(
    ("target", "model", "keys", "message"),
    [
        (CONDITIONAL, {"name": "conv"}, ["model"], r"set model\.num_classes: 10"),
        (CONDITIONAL, {"name": "unet"}, ["model"], r"unconditional, but the data"),
        ("digits", {"name": "conv", "num_classes": 10}, ["model.num_classes"], "no condition 'y'"),
        (CONDITIONAL, {"name": "conv", "num_classes": 5}, ["model.num_classes"], "data.* have 10"),
        (
            CONDITIONAL,
            {"name": "conv", "cond_dim": 4},
            ["model", "model.cond_dim"],
            "no condition 'c'",
        ),
    ],
)
def test_validate_pairs_conditional_data_with_conditional_models(
    target: object, model: dict, keys: list[str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        validate(digits_config(target, model))
    assert [k for k, _ in info.value.problems] == keys
    assert any(re.search(message, m) for _, m in info.value.problems)


def test_validate_checks_a_stage_model_at_its_key() -> None:
    config = digits_config(CONDITIONAL, {"name": "conv", "num_classes": 10})
    config["stages"][0]["model"] = {"name": "conv"}
    with pytest.raises(ConfigError) as info:
        validate(config)
    assert [k for k, _ in info.value.problems] == ["stages[0].model"]


def test_validate_accepts_a_matching_conditional_model() -> None:
    experiment = validate(digits_config(CONDITIONAL, {"name": "unet", "num_classes": 10}))
    assert experiment.model["num_classes"] == 10
