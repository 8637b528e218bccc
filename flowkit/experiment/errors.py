"""Errors of the experiment layer: a bad experiment (every problem with its key path) and a run
directory another process is using. A damaged run directory raises
:class:`flowkit.errors.DamagedRunError`."""

from __future__ import annotations


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
