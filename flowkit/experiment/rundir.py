"""The run directory: the one object through which an experiment writes anything.

Layout of ``runs/<name>-<timestamp>/``::

    config.yaml              the resolved experiment (defaults filled in)
    metrics.jsonl            one JSON record per line (training losses, evaluation rows)
    stages/<stage>/          checkpoints/ (resumable training), pairs/ (reflow store),
                             flow.safetensors (final weights), done.json (completion marker)
    plots/*.png              figures
    report.md                metrics table and embedded plots

Every file is written atomically and durably (:func:`flowkit.atomic.atomic_write`), and a stage's
``done.json`` is written last, so a killed run never leaves a file that a resume would trust.
Only a *writer* (``writer=True``, rank 0 of a distributed run) touches the disk: on other ranks
every write method is a no-op, so rank-0-only output needs no checks elsewhere.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import load_file, save_file
from torch import Tensor

from flowkit.atomic import atomic_write
from flowkit.experiment.errors import ConfigError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
DONE_FILE = "done.json"
WEIGHTS_FILE = "flow.safetensors"


class RunDir:
    """Paths of a run directory and atomic writes into it.

    Args:
        root: the run directory.
        writer: whether this process writes (False on non-zero ranks of a distributed run).
    """

    def __init__(self, root: str | Path, writer: bool = True) -> None:
        self.root = Path(root)
        self.writer = writer

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r}, writer={self.writer})"

    @classmethod
    def create(cls, out: str | Path, name: str, writer: bool = True) -> RunDir:
        """A new directory ``out/<name>-<YYYYmmdd-HHMMSS>`` (suffixed if that exists)."""
        stem = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        root = Path(out) / stem
        suffix = 1
        while root.exists():
            suffix += 1
            root = Path(out) / f"{stem}-{suffix}"
        run = cls(root, writer)
        if writer:
            root.mkdir(parents=True)
        return run

    @classmethod
    def existing(cls, root: str | Path, writer: bool = True) -> RunDir:
        """An existing run directory (one holding ``config.yaml``)."""
        run = cls(root, writer)
        if not (run.root / CONFIG_FILE).is_file():
            raise ConfigError([("run", f"{str(root)!r} is not a flowkit run (no {CONFIG_FILE})")])
        return run

    @classmethod
    def latest(cls, out: str | Path, name: str, writer: bool = True) -> RunDir:
        """The most recent run of experiment ``name`` under ``out``."""
        runs = [p for p in Path(out).glob(f"{name}-*") if (p / CONFIG_FILE).is_file()]
        if not runs:
            raise ConfigError([("--resume", f"no run of {name!r} under {str(out)!r} to resume")])
        return cls(max(runs, key=lambda p: (p / CONFIG_FILE).stat().st_mtime), writer)

    def path(self, *parts: str) -> Path:
        """``root / parts`` (nothing is created)."""
        return self.root.joinpath(*parts)

    def stage_path(self, stage: str, *parts: str) -> Path:
        return self.path("stages", stage, *parts)

    def writable_dir(self, *parts: str) -> Path | None:
        """Create and return ``root / parts`` for a writer; None on other ranks."""
        if not self.writer:
            return None
        directory = self.path(*parts)
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def shared_dir(self, *parts: str) -> Path:
        """``root / parts`` on every rank, created by the writer.

        For directories all ranks of a torchrun launch must name alike: training checkpoints
        (rank 0 writes them, every rank resumes from them) and reflow pair stores (every rank
        writes its own shards).
        """
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
        return self.write_with(rel, lambda p: p.write_text(text))

    def write_json(self, rel: str, obj: Any) -> Path:
        return self.write_text(rel, json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def write_config(self, config: Mapping[str, Any]) -> Path:
        return self.write_text(CONFIG_FILE, yaml.safe_dump(dict(config), sort_keys=False))

    def read_config(self) -> dict[str, Any]:
        return yaml.safe_load(self.path(CONFIG_FILE).read_text())

    def save_tensors(self, rel: str, tensors: Mapping[str, Tensor]) -> Path:
        """Atomically save a flat ``{name: tensor}`` map as safetensors."""
        state = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        return self.write_with(rel, lambda p: save_file(state, str(p)))

    def load_tensors(self, rel: str) -> dict[str, Tensor]:
        return load_file(str(self.path(rel)))

    def save_figure(self, rel: str, figure: Any) -> Path:
        """Atomically save a matplotlib figure as PNG."""
        return self.write_with(rel, lambda p: figure.savefig(p, format="png", dpi=110))

    def append_metric(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl`` (flushed, so a crash loses at most it)."""
        if not self.writer:
            return
        with self.path(METRICS_FILE).open("a") as fh:
            fh.write(json.dumps(dict(record)) + "\n")
            fh.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        """Records of ``metrics.jsonl``; a truncated last line (killed run) is skipped."""
        path = self.path(METRICS_FILE)
        if not path.is_file():
            return []
        records = []
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def keep_metrics(self, keep: Callable[[dict[str, Any]], bool]) -> None:
        """Rewrite ``metrics.jsonl`` with only the records ``keep`` accepts (used on resume)."""
        kept = [r for r in self.read_metrics() if keep(r)]
        self.write_text(METRICS_FILE, "".join(json.dumps(r) + "\n" for r in kept))

    def mark_done(self, stage: str, info: Mapping[str, Any]) -> None:
        """Write the stage's completion marker (always the stage's last write)."""
        self.write_json(f"stages/{stage}/{DONE_FILE}", dict(info))

    def done(self, stage: str) -> dict[str, Any] | None:
        """The completion marker of ``stage``, or None if the stage has not finished."""
        path = self.stage_path(stage, DONE_FILE)
        return json.loads(path.read_text()) if path.is_file() else None
