"""Training checkpoints: safetensors weights, a torch optimizer file and a small JSON state.

Layout of ``checkpoint_dir``::

    step_00000100/
        flow.safetensors     weights of the flow (its state dict)
        ema.safetensors      EMA weights (only with ema)
        optimizer.pt         {"optimizer": ..., "scheduler": ...} state dicts (torch.save)
        coupling.pt          sampling state of the coupling, one entry per rank (only for
                             couplings that keep one, e.g. the epoch order of stored pairs)
        state.json           step, RNG states (base64), history so far, configuration, the
                             sha256 of every other file, sealed with its own sha256
    latest                   text file naming the newest complete checkpoint directory

Reads check every sha256 and raise :class:`~flowkit.errors.DamagedRunError` naming the damaged
file; :func:`latest_checkpoint` falls back to the newest intact checkpoint (with a warning).
Writes are atomic: a checkpoint is written into a temporary directory next to its final name and
renamed with ``os.replace``; ``latest`` is written last, through a temporary file and
``os.replace``. An interrupted write therefore leaves the previous checkpoint and ``latest``
untouched. ``optimizer.pt`` is read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from flowkit.atomic import atomic_write_bytes, fsync_directory, honour_umask
from flowkit.errors import DamagedRunError
from flowkit.integrity import read_checked, read_json, seal, sha256_bytes, strict_json

FLOW_FILE = "flow.safetensors"
EMA_FILE = "ema.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
COUPLING_FILE = "coupling.pt"
STATE_FILE = "state.json"
LATEST_FILE = "latest"
#: The key of ``state.json`` holding the sha256 of the checkpoint's other files.
FILES_KEY = "files"
STEP_PATTERN = re.compile(r"^step_\d{8}$")


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

    ``state.json`` records the sha256 of every other file of the checkpoint (``"files"``) and is
    sealed (:func:`flowkit.integrity.seal`), so :func:`read_checkpoint` finds any damage.

    Returns:
        The checkpoint directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / checkpoint_name(step)
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        metadata = {"format": "flowkit", "step": str(step)}
        blobs = {FLOW_FILE: tensors_to_bytes(data.flow, metadata)}
        if data.ema is not None:
            blobs[EMA_FILE] = tensors_to_bytes(data.ema, metadata)
        blobs[OPTIMIZER_FILE] = torch_to_bytes(data.optimizer)
        if data.coupling is not None:
            blobs[COUPLING_FILE] = torch_to_bytes(data.coupling)
        for name, blob in blobs.items():
            atomic_write_bytes(staging / name, blob)
        files = {name: sha256_bytes(blob) for name, blob in blobs.items()}
        state = seal({**data.state, FILES_KEY: files})
        atomic_write_bytes(staging / STATE_FILE, strict_json(state).encode())
        honour_umask(staging, directory=True)
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


def damaged_hint(path: Path) -> str:
    """What to do about a damaged checkpoint ``path``."""
    return (
        f"delete the checkpoint directory {str(path)!r}: resuming then continues from the "
        "checkpoint before it (or from step 0 if there is none)"
    )


def checkpoint_dirs(directory: str | os.PathLike) -> list[Path]:
    """The ``step_XXXXXXXX`` checkpoint directories of ``directory`` (real directories, not
    links), newest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [
        p
        for p in directory.iterdir()
        if STEP_PATTERN.match(p.name) and p.is_dir() and not p.is_symlink()
    ]
    return sorted(found, key=lambda p: p.name, reverse=True)


def pointed_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The checkpoint the ``latest`` pointer names, or None without a pointer.

    The pointer must name a ``step_XXXXXXXX`` directory inside ``directory`` itself: it is never
    followed anywhere else.

    Raises:
        DamagedRunError: the pointer is unreadable or names anything else.
    """
    directory = Path(directory)
    pointer = directory / LATEST_FILE
    if not pointer.is_file():
        return None
    hint = f"delete {str(pointer)!r}; resuming then uses the newest intact checkpoint"
    try:
        name = pointer.read_bytes().decode("ascii").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise DamagedRunError(pointer, "checkpoint pointer", hint, f"unreadable: {err}") from None
    if not STEP_PATTERN.match(name):
        shown = name if len(name) <= 40 else name[:40] + "..."
        raise DamagedRunError(
            pointer, "checkpoint pointer", hint, f"names {shown!r}, not a step_XXXXXXXX directory"
        )
    if (directory / name).is_symlink():
        raise DamagedRunError(pointer, "checkpoint pointer", hint, f"{name} is a symbolic link")
    return directory / name


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The newest intact checkpoint of ``directory``, or None if it holds none yet.

    That is the checkpoint ``latest`` points at; if it (or the pointer) is damaged, the newest
    intact checkpoint before it, with a warning naming the damaged file.

    Raises:
        DamagedRunError: ``directory`` holds checkpoints but none of them is intact.
    """
    directory = Path(directory)
    damaged: list[DamagedRunError] = []
    try:
        pointed = pointed_checkpoint(directory)
    except DamagedRunError as err:
        damaged.append(err)
        pointed = None
    candidates = checkpoint_dirs(directory)
    if pointed is not None:
        older = [p for p in candidates if p.name < pointed.name]
        candidates = [pointed, *older]
    if not candidates and not damaged:
        return None
    for path in candidates:
        try:
            verify_checkpoint(path)
        except DamagedRunError as err:
            damaged.append(err)
            continue
        if damaged:
            warnings.warn(
                f"{damaged[-1]}. Resuming from the previous intact checkpoint {str(path)!r}",
                stacklevel=2,
            )
        return path
    if damaged:
        raise damaged[0]
    return None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint directory from itself or from a checkpoint root holding ``latest``.

    Raises:
        FileNotFoundError: if ``path`` is neither.
        DamagedRunError: if the checkpoints there are damaged.
    """
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is not None:
        return latest
    raise FileNotFoundError(
        f"checkpoint {str(path)!r} not found: expected a checkpoint directory holding "
        f"{STATE_FILE} or a checkpoint_dir holding a {LATEST_FILE!r} pointer"
    )


def read_state(path: Path) -> tuple[dict[str, Any], dict[str, str] | None]:
    """A checkpoint's state and the sha256 of its files (None: written before they were kept)."""
    state = read_json(path / STATE_FILE, "checkpoint state", damaged_hint(path))
    files = state.pop(FILES_KEY, None)
    if files is not None and not isinstance(files, dict):
        raise DamagedRunError(path / STATE_FILE, "checkpoint state", damaged_hint(path))
    return state, files


def read_blob(path: Path, name: str, files: dict[str, str] | None) -> bytes | None:
    """The bytes of checkpoint file ``name`` after checking its sha256; None for an optional
    file (EMA, coupling) the checkpoint does not have."""
    file = path / name
    if files is not None and name not in files:
        return None
    if files is None and name in (EMA_FILE, COUPLING_FILE) and not file.exists():
        return None
    return read_checked(
        file,
        None if files is None else files[name],
        f"checkpoint file {name}",
        damaged_hint(path),
        "state.json",
    )


def parse_blob(path: Path, name: str, blob: bytes | None) -> Any:
    """Safetensors or ``torch.load(weights_only=True)`` content of a checkpoint file."""
    if blob is None:
        return None
    try:
        if name.endswith(".safetensors"):
            return safetensors_load(blob)
        return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as err:  # any parser error of a file whose digest was not recorded
        raise DamagedRunError(
            path / name, f"checkpoint file {name}", damaged_hint(path), f"unreadable: {err}"
        ) from None


def verify_checkpoint(path: Path) -> None:
    """Raise :class:`DamagedRunError` unless every file of checkpoint ``path`` is intact."""
    _, files = read_state(path)
    for name in (FLOW_FILE, EMA_FILE, OPTIMIZER_FILE, COUPLING_FILE):
        blob = read_blob(path, name, files)
        if files is None:  # no recorded digests: only parsing can tell
            parse_blob(path, name, blob)


def read_checkpoint(path: str | os.PathLike) -> CheckpointData:
    """Read a checkpoint written by :func:`write_checkpoint` (tensors on CPU).

    Raises:
        DamagedRunError: a file is missing, unreadable or differs from its recorded sha256.
    """
    path = resolve_checkpoint(path)
    state, files = read_state(path)
    data = {
        name: parse_blob(path, name, read_blob(path, name, files))
        for name in (FLOW_FILE, EMA_FILE, OPTIMIZER_FILE, COUPLING_FILE)
    }
    return CheckpointData(
        flow=data[FLOW_FILE],
        state=state,
        optimizer=data[OPTIMIZER_FILE],
        ema=data[EMA_FILE],
        coupling=data[COUPLING_FILE],
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
    state, files = read_state(path)
    name = EMA_FILE if ema else FLOW_FILE
    blob = read_blob(path, name, files)
    if blob is None:
        raise FileNotFoundError(f"checkpoint {str(path)!r} has no {name} (trained without ema?)")
    flow.load_state_dict(parse_blob(path, name, blob))
    if hasattr(flow, "deterministic_coupling"):
        flow.deterministic_coupling = bool(state.get("deterministic_coupling", False))
    return path
