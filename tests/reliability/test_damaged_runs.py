"""Issue 17, section 4: every damaged file of a run is found, named, and survived if possible.

The matrix damages each file a finished run reads back (10 kinds) in each of 4 ways and runs
``flowkit sample``, ``flowkit eval`` and ``flowkit run --resume`` (after interrupting the
stage that owns the file) through :func:`flowkit.cli.main`. Each case must end in exactly the
expected way: exit 0 with weights equal to the undamaged run's (checkpoints fall back, shards
are regenerated), or exit 1 with a message naming the damaged file; never a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from run_fixtures import (
    DAMAGE,
    FILES,
    OWNER,
    copy_run,
    make_run,
    same_weights,
    unfinish,
)

import flowkit as fk
from flowkit.cli import main
from flowkit.couplings import PairStore
from flowkit.errors import DamagedRunError
from flowkit.experiment.rundir import RunDir
from flowkit.training.checkpoint import (
    CheckpointData,
    latest_checkpoint,
    read_checkpoint,
    write_checkpoint,
)

#: Exit status of each (file, command) for every kind of damage. Sampling and evaluating need
#: only the weights; resuming falls back to the previous checkpoint and regenerates pairs.
EXPECTED = {
    "ckpt_weights": {"sample": 0, "eval": 0, "resume": 0},
    "ckpt_optimizer": {"sample": 0, "eval": 0, "resume": 0},
    "ckpt_state": {"sample": 0, "eval": 0, "resume": 0},
    "ckpt_coupling": {"sample": 0, "eval": 0, "resume": 0},
    "latest": {"sample": 0, "eval": 0, "resume": 0},
    "shard": {"sample": 0, "eval": 0, "resume": 0},
    "manifest": {"sample": 0, "eval": 0, "resume": 0},
    "done": {"sample": 1, "eval": 1, "resume": 1},
    "config": {"sample": 1, "eval": 1, "resume": 1},
    "weights": {"sample": 1, "eval": 1, "resume": 1},
}
#: A deleted done.json is an unfinished stage: resuming redoes it.
EXPECTED_DELETED = {("done", "resume"): 0}
COMMANDS = ("sample", "eval", "resume")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return make_run(tmp_path_factory.mktemp("finished"))


def run_command(command: str, run: Path, tmp: Path) -> int:
    if command == "sample":
        return main(["sample", str(run), "--steps", "2", "--n", "8", "--out", str(tmp / "x.npy")])
    if command == "eval":
        return main(["eval", str(run), "--quiet"])
    return main(["run", "--resume", str(run), "--quiet"])


def cases() -> list:
    params = []
    for kind in FILES:
        for mode in DAMAGE:
            for command in COMMANDS:
                marks = [] if command == "sample" else [pytest.mark.slow]
                params.append(pytest.param(kind, mode, command, marks=marks))
    return params


@pytest.mark.parametrize(("kind", "mode", "command"), cases())
def test_damage_matrix(
    kind: str,
    mode: str,
    command: str,
    finished: tuple[Path, dict],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    recwarn: pytest.WarningsRecorder,
) -> None:
    reference, weights = finished
    run = copy_run(reference, tmp_path)
    if command == "resume":
        unfinish(run, OWNER[kind])
    DAMAGE[mode](run / FILES[kind])
    status = run_command(command, run, tmp_path)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    expected = EXPECTED_DELETED.get((kind, command), EXPECTED[kind][command])
    if mode != "delete":
        expected = EXPECTED[kind][command]
    assert status == expected, err
    if status == 1:
        named = FILES[kind] if kind != "latest" else "checkpoints"
        assert named in err and "damaged" in err, err
    elif command == "resume":
        for stage, reference_weights in weights.items():
            resumed = RunDir(run).load_tensors(f"stages/{stage}/flow.safetensors")
            assert same_weights(resumed, reference_weights), stage
    if status == 0 and command == "resume" and kind.startswith("ckpt") and mode != "delete":
        said = [str(w.message) for w in recwarn if "previous intact checkpoint" in str(w.message)]
        assert said and FILES[kind].split("/")[-1] in said[0], said


def test_following_the_hint_recovers_damaged_stage_weights(
    finished: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The message says: delete done.json and resume; doing so restores the exact weights."""
    reference, weights = finished
    run = copy_run(reference, tmp_path)
    DAMAGE["flip"](run / FILES["weights"])
    assert main(["run", "--resume", str(run), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"delete '{run / 'stages/train/done.json'}'" in err
    (run / "stages/train/done.json").unlink()
    assert main(["run", "--resume", str(run), "--quiet"]) == 0
    for stage, reference_weights in weights.items():
        resumed = RunDir(run).load_tensors(f"stages/{stage}/flow.safetensors")
        assert same_weights(resumed, reference_weights), stage


def test_debug_shows_the_traceback(
    finished: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = copy_run(finished[0], tmp_path)
    DAMAGE["flip"](run / FILES["done"])
    assert main(["--debug", "eval", str(run)]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert main(["eval", str(run), "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_records_carry_sha256(finished: tuple[Path, dict]) -> None:
    run = finished[0]
    done = json.loads((run / FILES["done"]).read_text())
    assert set(done["files"]) == {"flow.safetensors"}
    state = json.loads((run / FILES["ckpt_state"]).read_text())
    assert set(state["files"]) == {"flow.safetensors", "optimizer.pt"}
    manifest = json.loads((run / FILES["manifest"]).read_text())
    assert len(manifest["shards"]) == manifest["num_shards"] == 1
    assert (run / "config.yaml").read_text().startswith("# flowkit run config, sha256")


def checkpoint(step: int, value: float) -> CheckpointData:
    flow = {"w": torch.full((3,), value)}
    return CheckpointData(flow=flow, state={"step": step}, optimizer={"optimizer": {}})


def test_resume_falls_back_to_the_previous_intact_checkpoint(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, 1, checkpoint(1, 1.0))
    newest = write_checkpoint(tmp_path, 2, checkpoint(2, 2.0))
    assert latest_checkpoint(tmp_path) == newest
    DAMAGE["flip"](newest / "flow.safetensors")
    with pytest.warns(UserWarning, match="previous intact checkpoint .*step_00000001"):
        older = latest_checkpoint(tmp_path)
    assert torch.equal(read_checkpoint(older).flow["w"], torch.ones(3))
    with pytest.raises(DamagedRunError, match=r"flow\.safetensors") as err:
        read_checkpoint(newest)
    assert err.value.path == newest / "flow.safetensors"
    DAMAGE["truncate"](older / "optimizer.pt")
    with pytest.raises(DamagedRunError, match="step_00000002"):
        latest_checkpoint(tmp_path)


def teacher(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return 2.0 * x


REFLOW = {"solver": "euler", "steps": 2, "num_pairs": 40, "chunk_size": 16, "progress": False}
COUPLING = {"name": "independent", "source": "gaussian", "target": "moons"}


@pytest.mark.parametrize("mode", sorted(DAMAGE))
def test_damaged_finished_shard_is_regenerated(mode: str, tmp_path: Path) -> None:
    store = tmp_path / "pairs"
    first = fk.reflow(teacher, COUPLING, store=store, **REFLOW)
    DAMAGE[mode](store / "shard-00001.safetensors")
    if mode != "delete":
        with pytest.raises(DamagedRunError, match="shard-00001"):
            PairStore(store).load()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = fk.reflow(teacher, COUPLING, store=store, **REFLOW)
    assert torch.equal(again.x0, first.x0) and torch.equal(again.x1, first.x1)
    assert any("regenerated" in str(w.message) for w in caught) or mode == "delete"
    PairStore(store).load()  # intact again


@pytest.mark.parametrize("mode", ["truncate", "flip", "empty"])
def test_damaged_manifest_is_named_and_rebuilt(mode: str, tmp_path: Path) -> None:
    store = tmp_path / "pairs"
    first = fk.reflow(teacher, COUPLING, store=store, **REFLOW)
    DAMAGE[mode](store / "manifest.json")
    with pytest.raises(DamagedRunError, match=r"manifest\.json"):
        PairStore(store).read_manifest()
    with pytest.warns(UserWarning, match=r"manifest\.json"):
        again = fk.reflow(teacher, COUPLING, store=store, **REFLOW)
    assert torch.equal(again.x1, first.x1)
    assert PairStore(store).read_manifest()["num_shards"] == 3


def test_unfinished_earlier_stage_is_named(
    finished: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A finished reflow after a train stage without done.json: the missing marker is named."""
    run = copy_run(finished[0], tmp_path)
    (run / FILES["done"]).unlink()
    assert run_command("sample", run, tmp_path) == 1
    assert "stages/train/done.json" in capsys.readouterr().err


@pytest.mark.slow
def test_real_processes_print_no_traceback(finished: tuple[Path, dict], tmp_path: Path) -> None:
    """The same through `python -m flowkit`: exit 1 and one message; warnings as one line."""
    run = copy_run(finished[0], tmp_path)
    unfinish(run, "train")
    DAMAGE["flip"](run / FILES["ckpt_weights"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "flowkit"]
    done = subprocess.run(
        [*cmd, "run", "--resume", str(run), "--quiet"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "flowkit: warning: damaged checkpoint file flow.safetensors" in done.stderr
    DAMAGE["truncate"](run / FILES["weights"])
    done = subprocess.run([*cmd, "eval", str(run)], env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"flowkit eval: damaged weights {run / FILES['weights']}")
