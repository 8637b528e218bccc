"""Issue 17, section 6: names stay inside, pointers are not followed out, `sample --out` is
careful, files honour the umask, JSON is strict."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
import torch
from run_fixtures import TINY, make_run

import flowkit as fk
from flowkit.checks import FILE_NAME, FileName, OptionError
from flowkit.cli import main
from flowkit.errors import ConfigError, DamagedRunError
from flowkit.experiment.rundir import RunDir
from flowkit.integrity import read_json
from flowkit.training.checkpoint import CheckpointData, latest_checkpoint, write_checkpoint

BAD_NAMES = {
    "..": "must not start with '.'",
    ".": "must not start with '.'",
    ".hidden": "must not start with '.'",
    "../evil": "must not contain '/'",
    "a/b": "must not contain '/'",
    "a/.": "must not contain '/'",
    "/abs": "must not contain '/'",
    "a\\b": "must not contain '/' or",
    "a\x00b": "NUL",
    "a\nb": "control characters",
    "": "must not be empty",
    "x" * 256: "at most 255 bytes",
    "é" * 128: "at most 255 bytes",
}


@pytest.mark.parametrize("value", sorted(BAD_NAMES))
def test_check_name_refuses(value: str) -> None:
    with pytest.raises(OptionError, match=re.escape(BAD_NAMES[value])) as err:
        FILE_NAME(value, "stages[2].name")
    assert err.value.option == "stages[2].name"


@pytest.mark.parametrize("value", ["train", "1-rf", "x" * 255, "é" * 127, "a.b", "a..b"])
def test_check_name_accepts(value: str) -> None:
    assert FILE_NAME(value, "name") == value


def test_check_name_refuses_non_strings_and_reserves_suffix_bytes() -> None:
    with pytest.raises(OptionError, match="must be a string, got int"):
        FILE_NAME(3, "name")
    with pytest.raises(OptionError, match="at most 236 bytes"):
        FileName(reserve=19)("x" * 240, "name")


@pytest.mark.parametrize("names", [["a", "A"], ["Café", "Cafe\u0301"], ["train", "Train"]], ids=str)
def test_stage_names_sharing_a_directory_are_refused(names: list[str]) -> None:
    stages = [{"type": "train", "name": n} for n in ["x", *names]]
    with pytest.raises(ConfigError) as err:
        fk.experiment.validate({"stages": stages})
    assert [key for key, _ in err.value.problems] == ["stages[2].name"]
    assert "would share one directory" in err.value.problems[0][1]
    distinct = [{"type": "train", "name": n} for n in ["a", "b", "a-2"]]
    experiment = fk.experiment.validate({"stages": distinct})
    assert [s.name for s in experiment.stages] == ["a", "b", "a-2"]


@pytest.mark.parametrize("name", ["../evil", "/tmp/evil", "..", "a\x00"])
def test_run_dir_refuses_escaping_names(name: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(OptionError):
        RunDir.create(out, name)
    run = RunDir.create(out, "ok")
    with pytest.raises(OptionError):
        run.stage_path(name)
    with pytest.raises(OptionError):
        run.shared_dir("stages", name, "checkpoints")
    with pytest.raises(OptionError):
        run.mark_done(name, {})
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["out", run.root.name])


def checkpoint(step: int) -> CheckpointData:
    return CheckpointData(flow={"w": torch.zeros(2)}, state={"step": step}, optimizer={})


@pytest.mark.parametrize("target", ["../outside", "/etc", "step_00000001/../../x", "step_1"])
def test_latest_pointer_is_never_followed_outside(target: str, tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    (tmp_path / "outside").mkdir()
    write_checkpoint(tmp_path / "outside", 9, checkpoint(9))
    (root / "latest").parent.mkdir()
    (root / "latest").write_text(target)
    with pytest.raises(DamagedRunError, match="checkpoint pointer"):
        latest_checkpoint(root)
    intact = write_checkpoint(root, 1, checkpoint(1))
    (root / "latest").write_text(target)
    with pytest.warns(UserWarning, match="previous intact checkpoint"):
        assert latest_checkpoint(root) == intact


def test_checkpoint_links_are_not_followed(tmp_path: Path) -> None:
    outside = write_checkpoint(tmp_path / "outside", 5, checkpoint(5))
    root = tmp_path / "checkpoints"
    root.mkdir()
    (root / "step_00000005").symlink_to(outside)
    assert latest_checkpoint(root) is None
    (root / "latest").write_text("step_00000005")
    with pytest.raises(DamagedRunError, match="symbolic link"):
        latest_checkpoint(root)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return make_run(tmp_path_factory.mktemp("finished"))


def sample(run: Path, out: Path, *extra: str) -> list[str]:
    return ["sample", str(run), "--n", "8", "--out", str(out), *extra]


def test_sample_out_is_careful(
    finished: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = finished[0]
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    link = tmp_path / "link.npy"
    link.symlink_to(victim)
    cases = {
        "is a symbolic link": sample(run, link, "--steps", "2", "--force"),
        "is a directory": sample(run, tmp_path, "--steps", "2"),
        "--steps": sample(run, tmp_path / "a.npy"),
        "Did you mean 'euler'": sample(run, tmp_path / "b.npy", "--solver", "eulr"),
        "must end in": sample(run, tmp_path / "c.txt", "--steps", "2"),
    }
    for expected, argv in cases.items():
        assert main(argv) == 2, expected
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, err
    assert victim.read_text() == "keep" and link.is_symlink()
    out = tmp_path / "x.npy"
    assert main(sample(run, out, "--steps", "2")) == 0
    first = out.read_bytes()
    assert main(sample(run, out, "--steps", "2", "--seed", "1")) == 2
    assert "pass --force" in capsys.readouterr().err and out.read_bytes() == first
    assert main(sample(run, out, "--steps", "2", "--seed", "1", "--force")) == 0
    assert out.read_bytes() != first


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_run_files_honour_the_umask(umask: int, tmp_path: Path) -> None:
    previous = os.umask(umask)
    try:
        fk.run({**TINY, "stages": [{"type": "train"}]}, out=tmp_path, quiet=True)
    finally:
        os.umask(previous)
    (run,) = tmp_path.iterdir()
    files = [p for p in run.rglob("*") if p.is_file() and p.name != ".lock"]
    dirs = [run, *(p for p in run.rglob("*") if p.is_dir())]
    assert len(files) > 8 and len(dirs) > 5
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    for path in dirs:
        assert path.stat().st_mode & 0o777 == 0o777 & ~umask, path


def test_json_is_strict(tmp_path: Path) -> None:
    """NaN and ±inf are written as null (JSON has no NaN); every record parses strictly."""
    run = RunDir.create(tmp_path, "exp")
    run.append_metric({"kind": "eval", "w2": math.nan, "cost": [math.inf, 1.0]})
    run.mark_done("train", {"final_loss": -math.inf})
    write_checkpoint(tmp_path / "ck", 1, CheckpointData({"w": torch.zeros(1)}, {"x": math.nan}, {}))

    def strict(text: str) -> object:
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}"))

    (line,) = (run.root / "metrics.jsonl").read_text().splitlines()
    assert strict(line) == {"kind": "eval", "w2": None, "cost": [None, 1.0]}
    assert strict((run.root / "stages/train/done.json").read_text())["final_loss"] is None
    assert strict((tmp_path / "ck/step_00000001/state.json").read_text())["x"] is None
    (tmp_path / "bare.json").write_text('{"x": NaN}')
    with pytest.raises(DamagedRunError, match="NaN"):
        read_json(tmp_path / "bare.json", "record", "hint")
