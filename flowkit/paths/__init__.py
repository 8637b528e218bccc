"""Probability paths: schedules a(t), b(t), the affine path, conversions and time shifts.

Every registered schedule is also a path name: ``fk.paths.build("cosine")`` is
``AffinePath("cosine")``; ``fk.paths.build({"name": "affine", "schedule": "cosine"})`` is the same.
"""

from flowkit.paths.affine import PREDICTIONS, AffinePath, PathSample, path_for_schedule
from flowkit.paths.schedule_change import ScheduleChange, TimeChange, equal_snr_time_change
from flowkit.paths.schedules import (
    CosineSchedule,
    CustomSchedule,
    EDMSchedule,
    LDMLinearSchedule,
    LinearVPSchedule,
    PolynomialSchedule,
    RectifiedSchedule,
    Schedule,
    VPSchedule,
)
from flowkit.paths.shift import (
    dynamic_shift_mu,
    exponential_shift,
    resolution_shift,
    shift,
    shift_time,
    sigma_to_t,
    t_to_sigma,
)
from flowkit.registry import PATHS, SCHEDULES

for _name in sorted(SCHEDULES._entries):
    if _name not in PATHS:
        PATHS.add(_name, path_for_schedule(_name), f"Affine path over the {_name!r} schedule.")

build = PATHS.build
names = PATHS.names

__all__ = [
    "PREDICTIONS",
    "AffinePath",
    "CosineSchedule",
    "CustomSchedule",
    "EDMSchedule",
    "LDMLinearSchedule",
    "LinearVPSchedule",
    "PathSample",
    "PolynomialSchedule",
    "RectifiedSchedule",
    "Schedule",
    "ScheduleChange",
    "TimeChange",
    "VPSchedule",
    "build",
    "dynamic_shift_mu",
    "equal_snr_time_change",
    "exponential_shift",
    "names",
    "resolution_shift",
    "shift",
    "shift_time",
    "sigma_to_t",
    "t_to_sigma",
]
