"""Your own model: ``model: {name: "package.module:Name"}`` and the ``flowkit.plugins`` entry
point, with the example plugin package of docs/models.md (tests/plugins/flowkit_tinynet)."""

from __future__ import annotations

import importlib.metadata
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import flowkit as fk
import flowkit.registry as registry_module
from flowkit.errors import ConfigError
from flowkit.experiment.schema import validate
from flowkit.registry import MODELS, RegistryError, RegistryTypeError

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "tests" / "plugins" / "flowkit_tinynet"
TINY = {
    "data": {"target": "moons"},
    "training": {"steps": 3, "batch_size": 8},
    "evaluation": {"n_samples": 16, "solvers": [{"name": "euler", "steps": [2]}]},
    "plots": {"enabled": False},
    "stages": [{"type": "train", "name": "fm"}, {"type": "evaluate"}],
}


def forget_plugin() -> None:
    MODELS._entries.pop("tinynet", None)
    for name in [m for m in sys.modules if m.split(".")[0] == "flowkit_tinynet"]:
        del sys.modules[name]


@pytest.fixture
def plugin_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The example plugin importable (as if installed), and forgotten afterwards."""
    forget_plugin()
    monkeypatch.syspath_prepend(str(PLUGIN))
    yield PLUGIN
    forget_plugin()


@pytest.fixture
def installed_plugin(plugin_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The plugin's entry point (read from its pyproject.toml) as importlib.metadata lists it."""
    pyproject = (plugin_path / "pyproject.toml").read_text()
    section = r'\[project.entry-points."flowkit.plugins"\]\n(\w+) = "(.+)"'
    name, value = re.search(section, pyproject).groups()
    point = importlib.metadata.EntryPoint(name=name, value=value, group="flowkit.plugins")
    real = importlib.metadata.entry_points

    def entry_points(**kwargs: str) -> object:
        return [point] if kwargs.get("group") == "flowkit.plugins" else real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(registry_module, "_plugins_loaded", False)
    return plugin_path


def test_an_importable_model_is_validated_and_run(plugin_path: Path, tmp_path: Path) -> None:
    config = {**TINY, "model": {"name": "flowkit_tinynet.nets:TinyNet", "hidden": 16}}
    validate(config)
    result = fk.run(config, out=tmp_path, quiet=True)
    assert type(result.flows["fm"].model).__name__ == "TinyNet"
    assert result.flows["fm"].model.inp.out_features == 16


def test_the_entry_point_registers_the_documented_model(installed_plugin: Path) -> None:
    assert "tinynet" in fk.models.names()
    net = fk.models.build({"name": "tinynet", "num_classes": 3})
    out = net(torch.zeros(4, 2), torch.rand(4), y=torch.tensor([0, 1, 2, 3]))
    assert out.shape == (4, 2)
    validate({**TINY, "model": "tinynet"})


def test_docs_show_the_plugin_as_it_is(installed_plugin: Path) -> None:
    page = (ROOT / "docs" / "models.md").read_text()
    blocks = re.findall(r"```(?:python|toml)\n(.*?)```", page, re.S)
    init = (installed_plugin / "flowkit_tinynet" / "__init__.py").read_text()
    pyproject = (installed_plugin / "pyproject.toml").read_text()
    assert any(block.strip() in init for block in blocks), "docs/models.md lacks __init__.py"
    assert any("[project.entry-points" in b and b.strip() in pyproject for b in blocks)


@pytest.mark.parametrize(
    ("name", "key", "message"),
    [
        ("flowkit_tinynet.nope:Net", "model.name", r"cannot import module 'flowkit_tinynet.nope'"),
        ("no_such_package.nets:Net", "model.name", "No module named 'no_such_package'"),
        ("flowkit_tinynet.nets:TinyNett", "model.name", "Did you mean 'TinyNet'"),
        ("flowkit_tinynet.broken:NOT_CALLABLE", "model.name", "is a int, not a class"),
        ("flowkit_tinynet.crashes:Net", "model.name", "RuntimeError: this module needs a GPU"),
        ("flowkit_tinynet.nets:", "model.name", "package.module:Name"),
        ("flowkit_tinynet.broken:NoTime", "model", r"forward\(x: .*cannot be called as model"),
        ("flowkit_tinynet.broken:not_a_module", "model", "built a Tensor, not a Module"),
    ],
)
def test_errors_of_importable_models(plugin_path: Path, name: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate({**TINY, "model": {"name": name}})
    problems = dict(info.value.problems)
    assert list(problems) == [key]
    assert re.search(message, problems[key]), problems[key]


def test_the_python_api_raises_the_same_errors(plugin_path: Path) -> None:
    with pytest.raises(RegistryError, match="has no attribute 'TinyNett'"):
        fk.models.build("flowkit_tinynet.nets:TinyNett")
    with pytest.raises(RegistryTypeError, match="not a Module"):
        fk.models.build("flowkit_tinynet.broken:not_a_module")
    with pytest.raises(RegistryError, match=r"unknown option.*'width'"):
        fk.models.build({"name": "flowkit_tinynet.nets:TinyNet", "width": 3})


def test_a_conditional_dataset_needs_a_model_that_takes_its_labels(plugin_path: Path) -> None:
    config = {
        **TINY,
        "data": {"target": {"name": "digits", "conditional": True}},
        "model": {"name": "flowkit_tinynet.broken:NoTime"},
    }
    with pytest.raises(ConfigError) as info:
        validate(config)
    assert "model(x, t, y=...)" in dict(info.value.problems)["model"]
