"""Distributions: Gaussians and mixtures, 2-D toys, digits, and the exact-marginal oracle.

Every distribution is registered in ``DISTRIBUTIONS``: ``fk.data.build("moons")``,
``fk.data.build({"name": "gaussian", "dim": 3, "std": 2.0})``; ``fk.data.names()`` lists them.
"""

from flowkit.data import digits, eight_gaussians, gaussian, moons, shapes
from flowkit.data.base import Distribution
from flowkit.data.digits import Digits
from flowkit.data.gaussian import Gaussian, GaussianMixture
from flowkit.data.moons import Circle, Moons, TorchCFMMoons
from flowkit.data.oracle import ExactMarginal
from flowkit.data.shapes import Checkerboard, Pinwheel, SCurve, Spirals
from flowkit.registry import DISTRIBUTIONS

build = DISTRIBUTIONS.build
names = DISTRIBUTIONS.names

__all__ = [
    "Checkerboard",
    "Circle",
    "Digits",
    "Distribution",
    "ExactMarginal",
    "Gaussian",
    "GaussianMixture",
    "Moons",
    "Pinwheel",
    "SCurve",
    "Spirals",
    "TorchCFMMoons",
    "build",
    "digits",
    "eight_gaussians",
    "gaussian",
    "moons",
    "names",
    "shapes",
]
