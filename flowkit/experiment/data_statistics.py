"""Standardisation statistics of the run's data, computed once and stored in the run.

A ``tensor_file`` with ``standardize: true`` trains on ``(x − mean) / std``. The statistics
are computed when the run starts and written to ``data_statistics.json`` (a sealed record);
every later use of the run (resume, ``flowkit sample``, ``flowkit eval``) reads them from there,
so the samples of its flows are mapped back to data units with the statistics they were trained
with, even if the data file has changed since.
"""

from __future__ import annotations

from typing import Any

from flowkit.data.finite import Standardization
from flowkit.experiment.rundir import RunDir
from flowkit.integrity import read_json, seal

STATS_FILE = "data_statistics.json"
HINT = "delete it to recompute the statistics from the data files"


def standardized(source: Any, target: Any) -> dict[str, Any]:
    """The run's distributions that standardise their data, by role."""
    sides = {"source": source, "target": target}
    return {role: d for role, d in sides.items() if getattr(d, "standardize", False) is not False}


def keep_statistics(run: RunDir, source: Any, target: Any) -> None:
    """Give the standardising distributions the run's stored statistics, or compute them and
    store them (a run's first start)."""
    sides = standardized(source, target)
    if not sides:
        return
    path = run.path(STATS_FILE)
    if path.exists():
        stored = read_json(path, "data statistics", HINT)
        for role, dist in sides.items():
            if role in stored:
                dist.use_statistics(Standardization.from_state(stored[role]))
    else:
        run.write_json(STATS_FILE, seal({role: d.stats.state_dict() for role, d in sides.items()}))
