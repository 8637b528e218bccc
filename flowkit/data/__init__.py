"""Distributions: Gaussians and mixtures, 2-D toys, digits, the exact-marginal oracle, and
your own finite data (tensors, datasets, array files, image folders; see docs/data.md).

Every distribution is registered in ``DISTRIBUTIONS``: ``fk.data.build("moons")``,
``fk.data.build({"name": "gaussian", "dim": 3, "std": 2.0})``; ``fk.data.names()`` lists them.
"""

from flowkit.data import digits, eight_gaussians, gaussian, image_folder, moons, shapes, tensor_file
from flowkit.data.base import Distribution
from flowkit.data.digits import Digits
from flowkit.data.finite import FiniteData, Standardization, from_dataset, from_tensor
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
    "FiniteData",
    "Gaussian",
    "GaussianMixture",
    "Moons",
    "Pinwheel",
    "SCurve",
    "Spirals",
    "Standardization",
    "TorchCFMMoons",
    "build",
    "digits",
    "eight_gaussians",
    "from_dataset",
    "from_tensor",
    "gaussian",
    "image_folder",
    "moons",
    "names",
    "shapes",
    "tensor_file",
]
