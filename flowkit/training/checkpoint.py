"""Training checkpoints: safetensors weights, a torch optimizer file and a small JSON state.

Layout of ``checkpoint_dir``::

    step_00000100/
        flow.safetensors     weights of the flow (its state dict)
        ema.safetensors      EMA weights (only with ema)
        optimizer.pt         {"optimizer": ..., "scheduler": ...} state dicts (torch.save)
        coupling.pt          sampling state of the coupling, one entry per rank (only for
                             couplings that keep one, e.g. the epoch order of stored pairs)
        state.json           step, RNG states (base64), history so far, configuration
    latest                   text file naming the newest complete checkpoint directory

Writes are atomic: a checkpoint is written into a temporary directory next to its final name and
renamed with ``os.replace``; ``latest`` is written last, through a temporary file and
``os.replace``. An interrupted write therefore leaves the previous checkpoint and ``latest``
untouched. ``optimizer.pt`` is read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from flowkit.atomic import atomic_write_bytes, fsync_directory

FLOW_FILE = "flow.safetensors"
EMA_FILE = "ema.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
COUPLING_FILE = "coupling.pt"
STATE_FILE = "state.json"
LATEST_FILE = "latest"


def tensors_to_bytes(tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Serialise a state dict to safetensors bytes (on CPU, contiguous, tied weights untied)."""
    flat = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    return safetensors_bytes(flat, metadata=metadata)


def torch_to_bytes(obj: Any) -> bytes:
    """``torch.save`` into bytes."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def encode_rng_state(state: Tensor) -> str:
    """A generator state (a uint8 tensor) as base64 text for JSON."""
    return base64.b64encode(state.cpu().numpy().tobytes()).decode("ascii")


def decode_rng_state(text: str) -> Tensor:
    """Inverse of :func:`encode_rng_state`."""
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def checkpoint_name(step: int) -> str:
    """Directory name of the checkpoint after ``step`` optimizer steps."""
    return f"step_{step:08d}"


@dataclass
class CheckpointData:
    """Everything one checkpoint holds, as written by :func:`write_checkpoint`.

    Attributes:
        flow: the flow's state dict.
        state: JSON-compatible state (step, RNG states, history, configuration, ...).
        optimizer: ``{"optimizer": ..., "scheduler": ...}`` state dicts.
        ema: EMA weights, or None.
        coupling: the coupling's sampling state of every rank (``coupling[rank]``), or None
            for a coupling that keeps none.
    """

    flow: dict[str, Tensor]
    state: dict[str, Any]
    optimizer: dict[str, Any]
    ema: dict[str, Tensor] | None = None
    coupling: list[Any] | None = None


def write_checkpoint(directory: str | os.PathLike, step: int, data: CheckpointData) -> Path:
    """Write ``data`` as ``directory/step_XXXXXXXX`` atomically, then point ``latest`` at it.

    Returns:
        The checkpoint directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / checkpoint_name(step)
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        metadata = {"format": "flowkit", "step": str(step)}
        atomic_write_bytes(staging / FLOW_FILE, tensors_to_bytes(data.flow, metadata))
        if data.ema is not None:
            atomic_write_bytes(staging / EMA_FILE, tensors_to_bytes(data.ema, metadata))
        atomic_write_bytes(staging / OPTIMIZER_FILE, torch_to_bytes(data.optimizer))
        if data.coupling is not None:
            atomic_write_bytes(staging / COUPLING_FILE, torch_to_bytes(data.coupling))
        atomic_write_bytes(staging / STATE_FILE, json.dumps(data.state).encode())
        replace_directory(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    atomic_write_bytes(directory / LATEST_FILE, final.name.encode())
    return final


def replace_directory(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; an existing ``target`` is moved aside, then deleted."""
    if target.exists():
        trash = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
        os.replace(target, trash / target.name)
        os.replace(source, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(source, target)
    fsync_directory(target.parent)


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The checkpoint ``directory/latest`` points at, or None if there is none yet."""
    pointer = Path(directory) / LATEST_FILE
    if not pointer.is_file():
        return None
    return Path(directory) / pointer.read_text().strip()


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint directory from itself or from a checkpoint root holding ``latest``.

    Raises:
        FileNotFoundError: if ``path`` is neither.
    """
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is not None and (latest / STATE_FILE).is_file():
        return latest
    raise FileNotFoundError(
        f"checkpoint {str(path)!r} not found: expected a checkpoint directory holding "
        f"{STATE_FILE} or a checkpoint_dir holding a {LATEST_FILE!r} pointer"
    )


def read_checkpoint(path: str | os.PathLike) -> CheckpointData:
    """Read a checkpoint written by :func:`write_checkpoint` (tensors on CPU)."""
    path = resolve_checkpoint(path)
    ema_file, coupling_file = path / EMA_FILE, path / COUPLING_FILE
    return CheckpointData(
        flow=load_file(path / FLOW_FILE, device="cpu"),
        state=json.loads((path / STATE_FILE).read_text()),
        optimizer=torch.load(path / OPTIMIZER_FILE, map_location="cpu", weights_only=True),
        ema=load_file(ema_file, device="cpu") if ema_file.is_file() else None,
        coupling=(
            torch.load(coupling_file, map_location="cpu", weights_only=True)
            if coupling_file.is_file()
            else None
        ),
    )


def load_weights(flow: nn.Module, path: str | os.PathLike, ema: bool = False) -> Path:
    """Load a checkpoint's flow weights (or its EMA weights with ``ema=True``) into ``flow``.

    Args:
        flow: the flow (same architecture as the one trained).
        path: a checkpoint directory or a checkpoint_dir holding ``latest``.
        ema: load the EMA average instead of the raw weights.

    Returns:
        The checkpoint directory read.
    """
    path = resolve_checkpoint(path)
    file = path / (EMA_FILE if ema else FLOW_FILE)
    if not file.is_file():
        raise FileNotFoundError(
            f"checkpoint {str(path)!r} has no {file.name} (trained without ema?)"
        )
    flow.load_state_dict(load_file(file, device="cpu"))
    state = json.loads((path / STATE_FILE).read_text())
    if hasattr(flow, "deterministic_coupling"):
        flow.deterministic_coupling = bool(state.get("deterministic_coupling", False))
    return path
