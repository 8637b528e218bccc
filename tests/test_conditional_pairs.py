"""Reflow and distillation of a class-conditional teacher: every pair keeps its condition (in
memory and in the pair store), the teacher may be guided, and the student is trained with it."""

from __future__ import annotations

import pytest
import torch
from conditional_toys import COUPLING, TARGET, LabelNet

import flowkit as fk
from flowkit.couplings.store import StoreMismatchError
from flowkit.errors import ConfigError
from flowkit.experiment.config import load_config
from flowkit.experiment.schema import validate


def test_reflow_pairs_keep_their_labels_in_memory_and_in_the_store(tmp_path) -> None:
    teacher = fk.Flow(LabelNet())
    options = {"solver": "euler", "steps": 4, "num_pairs": 50, "chunk_size": 20, "seed": 1}
    pairs = fk.reflow(teacher, COUPLING, progress=False, **options)
    stored = fk.reflow(teacher, COUPLING, store=tmp_path / "pairs", progress=False, **options)
    assert torch.equal(pairs.cond["y"], stored.cond["y"]) and pairs.cond["y"].shape == (50,)
    loaded = fk.couplings.build({"name": "paired", "store": str(tmp_path / "pairs")})
    assert torch.equal(loaded.cond["y"], pairs.cond["y"])
    assert set(pairs.cond["y"].tolist()) == {0, 1, 2}
    expected = fk.sample(teacher, pairs.x0, "euler", steps=4, cond={"y": pairs.cond["y"]})
    torch.testing.assert_close(pairs.x1, expected.x)


def test_a_guided_teacher_makes_the_guided_pairs(tmp_path) -> None:
    teacher = fk.Flow(LabelNet())
    options = {"solver": "euler", "steps": 4, "num_pairs": 30, "seed": 2, "progress": False}
    guided = fk.reflow(teacher, COUPLING, guidance=3.0, store=tmp_path / "p", **options)
    expected = fk.sample(
        teacher, guided.x0, "euler", steps=4, cond={"y": guided.cond["y"]}, guidance=3.0
    )
    torch.testing.assert_close(guided.x1, expected.x)
    assert not torch.allclose(guided.x1, fk.reflow(teacher, COUPLING, **options).x1)
    with pytest.raises(StoreMismatchError, match="solver_options"):
        fk.reflow(teacher, COUPLING, guidance=2.0, store=tmp_path / "p", **options)


@pytest.mark.parametrize("steps_k", [1, 2])
def test_the_distilled_student_is_trained_with_the_labels_of_its_pairs(steps_k: int) -> None:
    teacher = fk.Flow(LabelNet())
    student_model = LabelNet()
    result = fk.distill(
        teacher,
        fk.Flow(student_model),
        steps_k,
        coupling=COUPLING,
        num_pairs=40,
        solver="euler",
        solver_options={"steps": 4, "guidance": 2.0},
        steps=3,
        batch_size=16,
        progress=False,
    )
    assert result.model is student_model
    seen = torch.cat(student_model.seen)
    assert seen.shape == (3 * 16,) and set(seen.tolist()) <= {0, 1, 2}


def test_pair_stage_guidance_needs_conditional_data() -> None:
    config = {
        "data": {"source": "gaussian", "target": "moons"},
        "model": {"name": "mlp", "dim": 2, "hidden": 16, "depth": 1},
        "stages": [{"type": "train"}, {"type": "reflow", "guidance": 2.0}],
    }
    with pytest.raises(ConfigError) as info:
        validate(load_config(config))
    assert dict(info.value.problems)["stages[1].guidance"].startswith("guides the teacher")
    config["data"]["target"] = TARGET
    config["model"]["num_classes"] = 3
    experiment = validate(load_config(config))
    assert experiment.stages[1].teacher_guidance() == {"guidance": 2.0}
