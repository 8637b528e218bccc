"""Probability paths: schedules a(t), b(t), the affine path, conversions and time shifts.

Every registered schedule is also a path name: ``fk.paths.build("cosine")`` is
``AffinePath("cosine")``; ``fk.paths.build({"name": "affine", "schedule": "cosine"})`` is the same.
"""

from flowkit.paths.affine import PREDICTIONS, AffinePath, PathSample, path_for_schedule
from flowkit.paths.schedules import RectifiedSchedule, Schedule
from flowkit.registry import PATHS, SCHEDULES

for _name in SCHEDULES.names():
    if _name not in PATHS:
        PATHS.add(_name, path_for_schedule(_name), f"Affine path over the {_name!r} schedule.")

build = PATHS.build
names = PATHS.names

__all__ = [
    "PREDICTIONS",
    "AffinePath",
    "PathSample",
    "RectifiedSchedule",
    "Schedule",
    "build",
    "names",
]
