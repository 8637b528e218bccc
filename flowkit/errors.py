"""flowkit's own errors: a damaged run directory, an invalid experiment, a run in use.

Checkpoints (:mod:`flowkit.training.checkpoint`), pair stores (:mod:`flowkit.couplings.store`)
and run directories (:mod:`flowkit.experiment.rundir`) raise :class:`DamagedRunError` when a file
they wrote earlier is missing, truncated, unparseable or differs from the sha256 recorded for it.
They live here, below every layer, so that training and couplings need not import the
experiment layer. :class:`ConfigError` lists every problem of an experiment with its key path;
:class:`RunInUseError` names the process holding a run directory's lock.

Example:
    >>> err = DamagedRunError("runs/x/stages/train/done.json", "stage completion record",
    ...                       "delete it to rerun the stage")
    >>> print(err)
    damaged stage completion record runs/x/stages/train/done.json; delete it to rerun the stage
"""

from __future__ import annotations

import os
from pathlib import Path


class DamagedRunError(RuntimeError):
    """A file a run wrote is missing, unreadable or fails its recorded sha256.

    ``flowkit`` commands print it without a traceback and exit with status 1.

    Args:
        path: the damaged file (or directory).
        what: what the file holds, in words (``"checkpoint weights"``, ``"pair shard"``, ...).
        hint: what to do about it (``"delete it and resume the run"``).
        reason: optionally, how it is damaged (``"sha256 differs"``, the parser's message).
    """

    def __init__(self, path: str | os.PathLike, what: str, hint: str, reason: str = "") -> None:
        self.path = Path(path)
        self.what = what
        self.hint = hint
        self.reason = reason
        detail = f" ({reason})" if reason else ""
        super().__init__(f"damaged {what} {self.path}{detail}; {hint}")

    def __reduce__(self) -> tuple[type[DamagedRunError], tuple[str, str, str, str]]:
        """Pickle with the arguments (rank 0 of a distributed run sends errors to the others)."""
        return type(self), (str(self.path), self.what, self.hint, self.reason)


class ConfigError(ValueError):
    """An invalid experiment: a list of ``(key path, message)`` problems, all reported at once.

    ``str(err)`` is the report printed by the CLI (which exits with status 2), e.g.::

        invalid experiment examples/bad.yaml (2 problems):
          stages[1].solver.steps: must be a positive integer, got -3
          training.lrr: unknown key; valid keys: steps, batch_size, ... Did you mean 'lr'?
    """

    def __init__(self, problems: list[tuple[str, str]], source: str = "") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(self.report())

    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[tuple[str, str]], str]]:
        """Pickle with the problems (rank 0 of a distributed run sends the error to the others)."""
        return type(self), (self.problems, self.source)

    def report(self) -> str:
        n = len(self.problems)
        where = f" {self.source}" if self.source else ""
        lines = [f"invalid experiment{where} ({n} problem{'s' if n != 1 else ''}):"]
        lines += [f"  {key or '<top level>'}: {message}" for key, message in self.problems]
        return "\n".join(lines)


class RunInUseError(RuntimeError):
    """Another process holds the run directory's lock (``flowkit`` exits with status 1).

    Args:
        root: the run directory.
        pid: the process holding it, as written in its lock file (None if unknown).
    """

    def __init__(self, root: str, pid: int | None) -> None:
        self.root = str(root)
        self.pid = pid
        holder = f"PID {pid}" if pid is not None else "another process"
        super().__init__(
            f"run {self.root} is in use by {holder}; wait for it to finish (or stop it) and try "
            "again"
        )

    def __reduce__(self) -> tuple[type[RunInUseError], tuple[str, int | None]]:
        return type(self), (self.root, self.pid)
