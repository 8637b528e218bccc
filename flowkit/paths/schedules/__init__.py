"""Schedules a(t), b(t): one family per module, all registered in ``SCHEDULES``."""

from flowkit.paths.schedules.base import Schedule
from flowkit.paths.schedules.rectified import RectifiedSchedule

__all__ = ["RectifiedSchedule", "Schedule"]
