"""Example flowkit plugin: importing it registers the model ``tinynet``.

flowkit imports this module (the package's ``flowkit.plugins`` entry point) the first time any
registry is read, so ``model: {name: tinynet}`` works in YAML once the package is installed.
"""

from flowkit.registry import MODELS
from flowkit_tinynet.nets import TinyNet

MODELS.add("tinynet", TinyNet)

__all__ = ["TinyNet"]
