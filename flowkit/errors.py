"""Errors about files a run wrote: the one error type for a damaged run directory.

Checkpoints (:mod:`flowkit.training.checkpoint`), pair stores (:mod:`flowkit.couplings.store`)
and run directories (:mod:`flowkit.experiment.rundir`) raise :class:`DamagedRunError` when a file
they wrote earlier is missing, truncated, unparseable or differs from the sha256 recorded for it.
It lives here, below every layer, so that training and couplings need not import the experiment
layer.

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
