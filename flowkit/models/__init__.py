"""Small networks for the examples, registered in ``MODELS``."""

from flowkit.models.conv import ConvNet
from flowkit.models.mlp import MLP
from flowkit.models.time_embedding import FourierTime
from flowkit.models.unet import UNet
from flowkit.registry import MODELS

build = MODELS.build
names = MODELS.names

__all__ = ["MLP", "ConvNet", "FourierTime", "UNet", "build", "names"]
