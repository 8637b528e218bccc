"""Experiment loading: safe YAML, ``extends:`` and typed ``--set`` overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowkit.errors import ConfigError
from flowkit.experiment.config import (
    apply_overrides,
    builtin_path,
    deep_merge,
    load_config,
    parse_key,
    parse_yaml,
    set_path,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("key", "parts"),
    [
        ("training.lr", ["training", "lr"]),
        ("stages[1].solver.steps", ["stages", 1, "solver", "steps"]),
        ("stages.1.training.steps", ["stages", 1, "training", "steps"]),
        ("evaluation.solvers[0].steps[-1]", ["evaluation", "solvers", 0, "steps", -1]),
    ],
)
def test_parse_key(key: str, parts: list) -> None:
    assert parse_key(key) == parts


@pytest.mark.parametrize("key", ["", "a..b", "a[x]", "a]", "a[1"])
def test_parse_key_rejects_malformed_paths(key: str) -> None:
    with pytest.raises(ValueError, match="bad key path"):
        parse_key(key)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1e-3", 1e-3),
        ("3E+2", 300.0),
        (".5", 0.5),
        ("2", 2),
        ("true", True),
        ("null", None),
        ("[1, 2]", [1, 2]),
        ("{name: euler, steps: 4}", {"name": "euler", "steps": 4}),
        ("euler", "euler"),
        ("1.0.0", "1.0.0"),
    ],
)
def test_override_values_are_typed(text: str, value: object) -> None:
    config: dict = {}
    apply_overrides(config, [f"a.b={text}"])
    assert config == {"a": {"b": value}}
    assert type(config["a"]["b"]) is type(value)


def test_yaml_files_read_yaml_1_2_floats() -> None:
    assert parse_yaml("lr: 1e-3\nsteps: 10\nname: 1e3x") == {
        "lr": 1e-3,
        "steps": 10,
        "name": "1e3x",
    }


def test_unsafe_yaml_is_refused() -> None:
    with pytest.raises(ConfigError, match="YAML"):
        parse_yaml("x: !!python/object/apply:os.system ['echo hacked']")


def test_set_path_turns_a_named_component_into_a_mapping() -> None:
    config = {"model": "mlp", "stages": [{"type": "train"}, {"type": "evaluate"}]}
    set_path(config, "model.hidden", 64)
    set_path(config, "stages[0].training.steps", 5)
    set_path(config, "stages[-1].n_samples", 10)
    assert config["model"] == {"name": "mlp", "hidden": 64}
    assert config["stages"][0] == {"type": "train", "training": {"steps": 5}}
    assert config["stages"][1]["n_samples"] == 10


def test_set_path_rejects_missing_list_index() -> None:
    with pytest.raises(ValueError, match="no index 5"):
        set_path({"stages": [{}]}, "stages[5].steps", 1)


def test_override_without_equals_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        apply_overrides({}, ["training.lr"])


def test_deep_merge_merges_mappings_and_replaces_lists() -> None:
    base = {"a": {"x": 1, "y": 2}, "l": [1, 2], "s": "k"}
    merged = deep_merge(base, {"a": {"y": 3}, "l": [9]})
    assert merged == {"a": {"x": 1, "y": 3}, "l": [9], "s": "k"}
    assert base["a"]["y"] == 2


def test_extends_relative_file_and_builtin(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "name: base\ntraining: {steps: 10, lr: 1e-2}\nseed: 3\n")
    (tmp_path / "sub").mkdir()
    child = write(tmp_path / "sub" / "child.yaml", "extends: ../base.yaml\ntraining: {steps: 20}\n")
    config = load_config(child)
    assert config == {"name": "base", "training": {"steps": 20, "lr": 1e-2}, "seed": 3}
    on_default = write(tmp_path / "d.yaml", "extends: default\nseed: 7\n")
    config = load_config(on_default)
    assert config["seed"] == 7
    assert config["stages"] == load_config(None)["stages"]


def test_extends_list_applies_bases_in_order(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "seed: 1\nname: a\n")
    write(tmp_path / "b.yaml", "seed: 2\n")
    config = load_config(write(tmp_path / "c.yaml", "extends: [a.yaml, b.yaml]\n"))
    assert config == {"seed": 2, "name": "a"}


def test_extends_cycle_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "extends: b.yaml\n")
    write(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="circular extends"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="no built-in experiment 'nope'"):
        load_config({"extends": "nope"})


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(write(tmp_path / "l.yaml", "- 1\n- 2\n"))


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_file_is_an_error_not_the_default(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="empty experiment") as info:
        load_config(write(tmp_path / "empty.yaml", text))
    assert str(tmp_path / "empty.yaml") in str(info.value)


def test_default_experiment_is_package_data() -> None:
    assert builtin_path("default").name == "default.yaml"
    assert load_config(None)["data"]["target"] == "moons"


def test_mapping_source_with_overrides_is_not_mutated() -> None:
    source = {"training": {"steps": 5}}
    config = load_config(source, {"training.steps": 7, "seed": 1})
    assert config == {"training": {"steps": 7}, "seed": 1}
    assert source == {"training": {"steps": 5}}
