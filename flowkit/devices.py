"""Device names as users write them (``cpu``, ``auto``, ``mps``, ``cuda``, ``cuda:N``): checked
against the devices torch sees, and resolved to a :class:`torch.device`.

Example:
    >>> pick_device(check_device("cpu"))
    device(type='cpu')
"""

from __future__ import annotations

from typing import Any

import torch

from flowkit.checks import OptionError


def check_device(device: Any, name: str = "device") -> str:
    """``device`` if it is ``cpu``, ``auto``, ``mps``, ``cuda`` or ``cuda:N`` and available here.

    Raises:
        OptionError: naming ``name``, for another value or a device this machine lacks.
    """
    head, _, index = str(device).partition(":")
    valid = head in ("cpu", "auto", "mps", "cuda") and (
        not index or (head, index.isdigit()) == ("cuda", True)
    )
    if not isinstance(device, str) or not valid:
        raise OptionError(name, f"must be cpu, auto, mps, cuda or cuda:N, got {device!r}")
    if head == "cuda" and not torch.cuda.is_available():
        raise OptionError(name, f"{device!r} requested, but CUDA is not available")
    if head == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise OptionError(
            name, f"{device!r} requested, but {torch.cuda.device_count()} GPU(s) seen"
        )
    if head == "mps" and not torch.backends.mps.is_available():
        raise OptionError(name, f"{device!r} requested, but MPS is not available")
    return device


def pick_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
