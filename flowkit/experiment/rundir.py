"""The run directory: the one object through which an experiment writes anything.

Layout of ``runs/<name>-<timestamp>/``::

    config.yaml              the resolved experiment (defaults filled in); its first line is a
                             comment with the sha256 of the rest
    metrics.jsonl            one strict JSON record per line (training losses, evaluation rows)
    stages/<stage>/          checkpoints/ (resumable training), pairs/ (reflow store),
                             flow.safetensors (final weights), done.json (completion marker,
                             with the sha256 of the weights, sealed)
    plots/*.png              figures
    report.md                metrics table and embedded plots
    .lock                    the lock file (``flock``) of the process writing the run

Every file is written atomically and durably (:func:`flowkit.atomic.atomic_write`), and a stage's
``done.json`` is written last, so a killed run never leaves a file that a resume would trust.
Files read back later are checked against their recorded sha256; a damaged one raises
:class:`~flowkit.errors.DamagedRunError` naming it and what to do. Only a *writer*
(``writer=True``, rank 0 of a distributed run) touches the disk: on other ranks every write
method is a no-op, so rank-0-only output needs no checks elsewhere.

Names (the run's and the stages') become directory names: :class:`~flowkit.checks.FileName`
keeps them inside.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from flowkit.atomic import atomic_write, atomic_write_bytes, remove_stale_temporaries
from flowkit.checks import FILE_NAME, FileName
from flowkit.errors import ConfigError, DamagedRunError, RunInUseError
from flowkit.integrity import read_checked, read_json, seal, sha256_bytes, strict_json
from flowkit.yamlio import read_sealed_yaml, sealed_yaml

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
DONE_FILE = "done.json"
WEIGHTS_FILE = "flow.safetensors"
LOCK_FILE = ".lock"
#: The key of ``done.json`` holding the sha256 of the stage's files (``{name: sha256}``).
FILES_KEY = "files"
#: Bytes a run name leaves for the directory's ``-YYYYmmdd-HHMMSS-NN`` suffix.
RUN_SUFFIX_BYTES = 19


def directory_key(name: str) -> str:
    """What a directory name is on a case-insensitive, normalising file system."""
    return unicodedata.normalize("NFC", name).casefold()


class RunDir:
    """Paths of a run directory and atomic writes into it.

    Args:
        root: the run directory.
        writer: whether this process writes (False on non-zero ranks of a distributed run).
    """

    def __init__(self, root: str | Path, writer: bool = True) -> None:
        self.root = Path(root)
        self.writer = writer
        self.digests: dict[str, str] = {}
        self.lock_fd: int | None = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r}, writer={self.writer})"

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the lock (rank 0 sends the run directory to the other ranks)."""
        return {**self.__dict__, "lock_fd": None}

    @classmethod
    def create(cls, out: str | Path, name: str, writer: bool = True) -> RunDir:
        """A new directory ``out/<name>-<YYYYmmdd-HHMMSS>`` (suffixed ``-2``, ``-3``, ... if that
        exists); processes creating the same name at once each get their own."""
        FileName(RUN_SUFFIX_BYTES)(name, "name")
        stem = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        if not writer:
            return cls(Path(out) / stem, writer)
        Path(out).mkdir(parents=True, exist_ok=True)
        for suffix in range(1, 100):
            root = Path(out) / (stem if suffix == 1 else f"{stem}-{suffix}")
            try:
                root.mkdir()
            except FileExistsError:
                continue
            return cls(root, writer)
        raise ConfigError([("--out", f"over 99 runs named {stem!r} under {str(out)!r}")])

    @classmethod
    def existing(cls, root: str | Path, writer: bool = True) -> RunDir:
        """An existing run directory (one holding ``config.yaml``)."""
        run = cls(root, writer)
        if not (run.root / CONFIG_FILE).is_file() and (run.root / "stages").is_dir():
            raise DamagedRunError(
                run.root / CONFIG_FILE, "run config", "restore it from a backup", "missing"
            )
        if not (run.root / CONFIG_FILE).is_file():
            raise ConfigError([("run", f"{str(root)!r} is not a flowkit run (no {CONFIG_FILE})")])
        return run

    @classmethod
    def latest(cls, out: str | Path, name: str, writer: bool = True) -> RunDir:
        """The most recent run of experiment ``name`` under ``out``."""
        FileName(RUN_SUFFIX_BYTES)(name, "name")
        runs = [p for p in Path(out).glob(f"{name}-*") if (p / CONFIG_FILE).is_file()]
        if not runs:
            raise ConfigError([("--resume", f"no run of {name!r} under {str(out)!r} to resume")])
        return cls(max(runs, key=lambda p: (p / CONFIG_FILE).stat().st_mtime), writer)

    def acquire_lock(self) -> None:
        """Take the run's exclusive lock (writer only; held until :meth:`release_lock` or the
        process ends, so a killed process leaves no stale lock).

        Raises:
            RunInUseError: another process holds it (its PID in the message).
        """
        if not self.writer or self.lock_fd is not None:
            return
        fd = os.open(self.path(LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            raise RunInUseError(str(self.root), int(holder) if holder.isdigit() else None) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.lock_fd = fd

    def release_lock(self) -> None:
        """Release the lock taken by :meth:`acquire_lock` (if held)."""
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    @contextmanager
    def locked(self) -> Iterator[RunDir]:
        """Hold the run's lock for the ``with`` block."""
        self.acquire_lock()
        try:
            yield self
        finally:
            self.release_lock()

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete temporary files a killed writer left (call with the lock held)."""
        return remove_stale_temporaries(self.root) if self.writer else []

    def path(self, *parts: str) -> Path:
        """``root / parts`` (nothing is created)."""
        return self.root.joinpath(*parts)

    def stage_path(self, stage: str, *parts: str) -> Path:
        """``root/stages/<stage>/parts`` (``stage`` must be a safe name)."""
        return self.path("stages", FILE_NAME(stage, "stage name"), *parts)

    def shared_dir(self, *parts: str) -> Path:
        """``root / parts`` on every rank, created by the writer.

        For directories all ranks of a torchrun launch must name alike: training checkpoints
        (rank 0 writes them, every rank resumes from them) and reflow pair stores (every rank
        writes its own shards).
        """
        if parts[:1] == ("stages",) and len(parts) > 1:
            FILE_NAME(parts[1], "stage name")
        directory = self.path(*parts)
        if self.writer:
            directory.mkdir(parents=True, exist_ok=True)
        return directory

    def write_with(self, rel: str, write: Callable[[Path], None]) -> Path:
        """Atomically and durably write ``rel`` by calling ``write(temporary_path)`` (writer
        only; see :func:`flowkit.atomic.atomic_write`)."""
        target = self.path(rel)
        if self.writer:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, write)
        return target

    def write_text(self, rel: str, text: str) -> Path:
        return self.write_with(rel, lambda p: p.write_text(text, encoding="utf-8"))

    def write_json(self, rel: str, obj: Any) -> Path:
        """Write strict JSON (NaN and ±inf as ``null``)."""
        return self.write_text(rel, strict_json(obj, indent=2) + "\n")

    def write_config(self, config: Mapping[str, Any]) -> Path:
        """Write ``config.yaml``, sealed (:func:`flowkit.yamlio.sealed_yaml`)."""
        return self.write_text(CONFIG_FILE, sealed_yaml(config))

    def read_config(self) -> dict[str, Any]:
        """The experiment in ``config.yaml``, checked against its recorded sha256.

        Raises:
            DamagedRunError: the file is missing, unreadable or differs from its sha256.
        """
        return read_sealed_yaml(self.path(CONFIG_FILE), "run config")

    def save_tensors(self, rel: str, tensors: Mapping[str, Tensor]) -> Path:
        """Atomically save a flat ``{name: tensor}`` map as safetensors (its sha256 is kept
        for the stage's ``done.json``)."""
        state = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        blob = safetensors_bytes(state)
        self.digests[rel] = sha256_bytes(blob)
        target = self.path(rel)
        if self.writer:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, blob)
        return target

    def load_tensors(
        self, rel: str, sha256: str | None = None, hint: str = ""
    ) -> dict[str, Tensor]:
        """Load a safetensors file, checked against ``sha256`` when given.

        Raises:
            DamagedRunError: the file is missing, unreadable or differs from ``sha256``.
        """
        path = self.path(rel)
        hint = hint or "restore it, or delete the run and start again"
        blob = read_checked(path, sha256, "weights", hint, "done.json")
        try:
            return safetensors_load(blob)
        except Exception as err:  # any safetensors parse error
            raise DamagedRunError(path, "weights", hint, f"unreadable: {err}") from None

    def save_figure(self, rel: str, figure: Any) -> Path:
        """Atomically save a matplotlib figure as PNG."""
        return self.write_with(rel, lambda p: figure.savefig(p, format="png", dpi=110))

    def append_metric(self, record: Mapping[str, Any]) -> None:
        """Append one strict JSON line to ``metrics.jsonl`` (NaN and ±inf as ``null``; flushed,
        so a crash loses at most it)."""
        if not self.writer:
            return
        with self.path(METRICS_FILE).open("a", encoding="utf-8") as fh:
            fh.write(strict_json(dict(record)) + "\n")
            fh.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        """Records of ``metrics.jsonl``; a damaged line (e.g. the truncated last line of a
        killed run) is skipped."""
        path = self.path(METRICS_FILE)
        if not path.is_file():
            return []
        records = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def keep_metrics(self, keep: Callable[[dict[str, Any]], bool]) -> None:
        """Rewrite ``metrics.jsonl`` with only the records ``keep`` accepts (used on resume)."""
        kept = [r for r in self.read_metrics() if keep(r)]
        self.write_text(METRICS_FILE, "".join(strict_json(r) + "\n" for r in kept))

    def mark_done(self, stage: str, info: Mapping[str, Any]) -> None:
        """Write the stage's completion marker (always the stage's last write), sealed and with
        the sha256 of the files this process saved directly in the stage's directory."""
        prefix = f"stages/{FILE_NAME(stage, 'stage name')}/"
        files = {
            rel.removeprefix(prefix): digest
            for rel, digest in self.digests.items()
            if rel.startswith(prefix) and "/" not in rel.removeprefix(prefix)
        }
        self.write_json(f"{prefix}{DONE_FILE}", seal({**info, FILES_KEY: files}))

    def done_hint(self, stage: str) -> str:
        """What to do about a damaged file of finished stage ``stage``."""
        marker = self.stage_path(stage, DONE_FILE)
        return (
            f"delete {str(marker)!r} and run `flowkit run --resume {self.root}`: stage "
            f"{stage!r} is redone from its last intact checkpoint"
        )

    def done(self, stage: str) -> dict[str, Any] | None:
        """The completion marker of ``stage``, or None if the stage has not finished.

        Raises:
            DamagedRunError: the marker is unreadable or fails its seal.
        """
        path = self.stage_path(stage, DONE_FILE)
        if not path.exists():
            return None
        info = read_json(path, "stage completion record", self.done_hint(stage))
        if not isinstance(info.get(FILES_KEY, {}), dict):
            raise DamagedRunError(path, "stage completion record", self.done_hint(stage))
        return info

    def load_stage_tensors(
        self, stage: str, info: Mapping[str, Any], name: str
    ) -> dict[str, Tensor]:
        """File ``name`` of finished stage ``stage``, checked against the sha256 its ``done.json``
        (``info``) recorded."""
        digest = info.get(FILES_KEY, {}).get(name)
        return self.load_tensors(f"stages/{stage}/{name}", digest, self.done_hint(stage))
