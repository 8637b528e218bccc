"""A stage type is one registered class: the example of docs/stages.md, end to end."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import flowkit as fk
from flowkit.errors import ConfigError
from flowkit.experiment.reference import generate
from flowkit.experiment.schema import validate
from flowkit.experiment.stages import STAGE_TYPES

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "training": {"steps": 3, "batch_size": 8, "checkpoint_every": 3},
    "model": {"name": "mlp", "dim": 2, "hidden": 8, "depth": 1},
    "plots": {"enabled": False},
}


@pytest.fixture
def count_parameters() -> Iterator[type]:
    """The documented stage type, registered for the test only."""
    page = (ROOT / "docs" / "stages.md").read_text()
    code = re.search(r"```python\n(.*?)```", page, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "docs/stages.md", "exec"), namespace)
    yield namespace["CountParameters"]
    STAGE_TYPES._entries.pop("count_parameters")


def test_a_registered_stage_type_is_validated_documented_and_run(
    count_parameters: type, tmp_path: Path
) -> None:
    stages = [{"type": "train"}, {"type": "count_parameters", "trainable_only": False}]
    experiment = validate({**TINY, "stages": stages})
    assert isinstance(experiment.stages[1], count_parameters)
    assert "### stages: count_parameters" in generate()
    with pytest.raises(ConfigError) as info:
        validate(
            {
                **TINY,
                "stages": [{"type": "train"}, {"type": "count_parameters", "trainable_onyl": 1}],
            }
        )
    assert "Did you mean 'trainable_only'" in dict(info.value.problems)["stages[1].trainable_onyl"]
    with pytest.raises(ConfigError) as info:
        validate({**TINY, "stages": [{"type": "count_parameters"}]})
    assert "needs a flow stage" in dict(info.value.problems)["stages[0]"]
    result = fk.run({**TINY, "stages": stages}, out=tmp_path, quiet=True)
    count = sum(p.numel() for p in result.flows["train"].parameters())
    report = (result.run_dir / "report.md").read_text()
    assert f"| count_parameters | count_parameters | done | train: {count} |" in report


def test_partial_copies_rename_and_evaluate_only_finished_flows() -> None:
    """`flowkit eval` on an unfinished run reruns copies of the evaluate stages (`Stage.partial`):
    an evaluate stage with its own `flows` keeps only the finished ones; other stages are
    renamed copies."""
    stages = [
        {"type": "train", "name": "a"},
        {"type": "train", "name": "b"},
        {"type": "evaluate", "flows": ["a", "b"]},
    ]
    experiment = validate({**TINY, "stages": stages})
    evaluate = experiment.stage("evaluate")
    copy = evaluate.partial("evaluate.partial", ["a"])
    assert (copy.name, copy.options.flows) == ("evaluate.partial", ["a"])
    assert (evaluate.name, evaluate.options.flows) == ("evaluate", ["a", "b"])
    train = experiment.stage("a").partial("a.partial", ["a"])
    assert (train.name, train.type, train.training) == ("a.partial", "train", None)
