"""Issue 17, section 5: one writer per run directory, race-free creation, separate evaluations."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from run_fixtures import TINY, copy_run, make_run

import flowkit as fk
from flowkit.cli import main
from flowkit.errors import RunInUseError
from flowkit.experiment.rundir import LOCK_FILE, RunDir

HOLD = """
import sys, time
from flowkit.experiment.rundir import RunDir
run = RunDir(sys.argv[1])
run.acquire_lock()
print("locked", flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return make_run(tmp_path_factory.mktemp("finished"))


def test_second_lock_names_the_holder(tmp_path: Path) -> None:
    first = RunDir(tmp_path)
    first.acquire_lock()
    with pytest.raises(RunInUseError, match=f"is in use by PID {os.getpid()}"):
        RunDir(tmp_path).acquire_lock()
    first.release_lock()
    with RunDir(tmp_path).locked():
        pass


def test_non_writers_take_no_lock(tmp_path: Path) -> None:
    with RunDir(tmp_path).locked():
        RunDir(tmp_path, writer=False).acquire_lock()  # a no-op on other ranks


def test_commands_refuse_a_locked_run_and_kill_9_leaves_no_stale_lock(
    finished: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = copy_run(finished[0], tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        for argv in (["eval", str(run), "--quiet"], ["run", "--resume", str(run), "--quiet"]):
            assert main(argv) == 1
            err = capsys.readouterr().err
            assert f"is in use by PID {holder.pid}" in err and "Traceback" not in err
        before = (run / "metrics.jsonl").read_bytes()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    assert (run / "metrics.jsonl").read_bytes() == before  # the refused commands wrote nothing
    assert main(["eval", str(run), "--quiet"]) == 0
    assert (run / LOCK_FILE).is_file()


def create_at(out: str, barrier: multiprocessing.synchronize.Barrier, queue: object) -> None:
    barrier.wait()
    queue.put(str(RunDir.create(out, "exp").root))


@pytest.mark.parametrize("trial", range(5))
def test_concurrent_creation_gives_each_process_its_own_directory(
    trial: int, tmp_path: Path
) -> None:
    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(4), context.Queue()
    procs = [
        context.Process(target=create_at, args=(str(tmp_path), barrier, queue)) for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 4
    roots = {queue.get(timeout=10) for _ in procs}
    assert len(roots) == 4 and all(Path(r).is_dir() for r in roots)


def test_eval_of_an_unfinished_run_is_kept_apart(
    finished: tuple[Path, dict], tmp_path: Path
) -> None:
    """`flowkit eval` while the run is in stage 2 does not finish the run's own evaluation."""
    reference = RunDir(finished[0]).read_metrics()
    run = copy_run(finished[0], tmp_path)
    for stage in ("reflow", "evaluate"):
        (run / "stages" / stage / "done.json").unlink()
    rundir = RunDir(run)
    rundir.keep_metrics(lambda r: r.get("stage") == "train")
    rows = fk.experiment.runner.evaluate_run(run, quiet=True)
    assert rows and {r["stage"] for r in rows} == {"evaluate.partial"}
    assert {r["flow"] for r in rows} == {"train"}
    assert rundir.done("evaluate") is None and rundir.done("evaluate.partial") is not None
    assert "evaluate.partial" in (run / "report.md").read_text()
    fk.run(resume=run, quiet=True)
    own = [r for r in rundir.read_metrics() if r.get("stage") == "evaluate"]
    expected = [r for r in reference if r.get("stage") == "evaluate"]
    assert len(own) == len(expected) > 0
    assert {r["flow"] for r in own} == {"train", "reflow"}


def test_resume_removes_stale_temporaries(
    finished: tuple[Path, dict], tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    run = copy_run(finished[0], tmp_path)
    (run / "stages/train/done.json").unlink()
    stale = [
        run / "stages/train/.flow.tmp-0123456789ab.safetensors",
        run / ".metrics.tmp-abcdef012345.jsonl",
        run / "stages/reflow/pairs/.shard-00000.tmp-00000000aaaa.safetensors",
    ]
    staging = run / "stages/train/checkpoints/.step_00000060.x1y2z3.tmp"
    staging.mkdir()
    (staging / "flow.safetensors").write_bytes(b"partial")
    for path in stale:
        path.write_bytes(b"partial")
    keep = run / "stages/train/.notes"
    keep.write_text("mine")
    fk.run(resume=run, quiet=True)
    assert not any(p.exists() for p in [*stale, staging])
    assert keep.read_text() == "mine"
    assert sum("left by an interrupted run" in str(w.message) for w in recwarn) == 4


@pytest.mark.slow
def test_two_resumes_at_once_one_is_refused(finished: tuple[Path, dict], tmp_path: Path) -> None:
    long = {**TINY, "training": {**TINY["training"], "steps": 1000, "checkpoint_every": 500}}
    result = fk.run({**long, "stages": [{"type": "train"}]}, out=tmp_path / "a", quiet=True)
    run = result.run_dir
    (run / "stages/train/done.json").unlink()
    checkpoints = run / "stages/train/checkpoints"
    shutil.rmtree(checkpoints / "step_00001000")
    (checkpoints / "latest").write_text("step_00000500")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "flowkit", "run", "--resume", str(run), "--quiet"]
    procs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = sorted((p.wait(timeout=300), p.stderr.read()) for p in procs)
    assert [code for code, _ in outcomes] == [0, 1], outcomes
    assert "is in use by PID" in outcomes[1][1] and "Traceback" not in outcomes[1][1]
    train = [r["step"] for r in RunDir(run).read_metrics() if r["kind"] == "train"]
    assert len(train) == len(set(train)) == 100
