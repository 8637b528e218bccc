"""Schedules a(t), b(t): one family per module, all registered in ``SCHEDULES``.

Importing this package registers every built-in schedule; :mod:`flowkit.paths` then exposes each
schedule name as a path name.
"""

from flowkit.paths.schedules.base import Schedule
from flowkit.paths.schedules.cosine import CosineSchedule
from flowkit.paths.schedules.custom import CustomSchedule
from flowkit.paths.schedules.diffusion import DiffusionSchedule
from flowkit.paths.schedules.edm import EDMSchedule
from flowkit.paths.schedules.ldm_linear import LDMLinearSchedule
from flowkit.paths.schedules.linear_vp import LinearVPSchedule
from flowkit.paths.schedules.polynomial import PolynomialSchedule
from flowkit.paths.schedules.rectified import RectifiedSchedule
from flowkit.paths.schedules.vp import VPSchedule

__all__ = [
    "CosineSchedule",
    "CustomSchedule",
    "DiffusionSchedule",
    "EDMSchedule",
    "LDMLinearSchedule",
    "LinearVPSchedule",
    "PolynomialSchedule",
    "RectifiedSchedule",
    "Schedule",
    "VPSchedule",
]
