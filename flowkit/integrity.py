"""Reading back what a run wrote: sha256 digests, strict JSON and sealed JSON records.

Every JSON file flowkit writes is *strict* JSON: a non-finite float (NaN, ±inf), which JSON
cannot represent, is written as ``null``. The records a run reads back later (a checkpoint's
``state.json``, a pair store's ``manifest.json``, a stage's ``done.json``) are *sealed*: they
carry the sha256 of their own canonical text under :data:`SEAL_KEY`, and the files they
describe (weights, optimizer state, shards) by their sha256, so a truncated, emptied or
byte-flipped file is found on load and reported as :class:`~flowkit.errors.DamagedRunError`.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "done.json"
    >>> _ = path.write_text(strict_json(seal({"steps": 10, "loss": float("nan")})))
    >>> read_json(path, "stage record", "delete it")
    {'loss': None, 'steps': 10}
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flowkit.errors import DamagedRunError

#: The key of a sealed record that holds the sha256 of the rest of it.
SEAL_KEY = "sealed_sha256"
CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's content (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (nested dicts, lists, tuples)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def strict_json(
    obj: Any, indent: int | None = None, default: Callable[[Any], Any] | None = None
) -> str:
    """Strict JSON text of ``obj`` (sorted keys; NaN and ±inf written as ``null``)."""
    return json.dumps(finite(obj), indent=indent, sort_keys=True, allow_nan=False, default=default)


def seal(record: Mapping[str, Any], default: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """``record`` plus :data:`SEAL_KEY`: the sha256 of its canonical strict JSON."""
    body = json.loads(strict_json(dict(record), default=default))
    body.pop(SEAL_KEY, None)
    return {**body, SEAL_KEY: sha256_bytes(canonical_text(body))}


def canonical_text(body: Any) -> bytes:
    """The bytes a seal is computed over (sorted keys, no whitespace)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def reject_constant(name: str) -> None:
    raise ValueError(f"non-standard JSON constant {name}")


def read_json(path: str | os.PathLike, what: str, hint: str) -> dict[str, Any]:
    """Parse a strict JSON object flowkit wrote; check and drop its seal if it has one.

    Raises:
        DamagedRunError: the file is missing, not UTF-8, not a strict JSON object, or its seal
            differs.
    """
    path = Path(path)
    try:
        value = json.loads(path.read_bytes().decode("utf-8"), parse_constant=reject_constant)
    except FileNotFoundError:
        raise DamagedRunError(path, what, hint, "missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DamagedRunError(path, what, hint, f"unreadable: {err}") from None
    if not isinstance(value, dict):
        raise DamagedRunError(path, what, hint, f"not a JSON object: {type(value).__name__}")
    if SEAL_KEY in value:
        stored = value.pop(SEAL_KEY)
        if stored != sha256_bytes(canonical_text(value)):
            raise DamagedRunError(path, what, hint, "its content differs from its sha256")
    return value


def check_file(path: str | os.PathLike, expected: str | None, what: str, hint: str) -> Path:
    """Raise :class:`DamagedRunError` unless ``path`` exists and has sha256 ``expected``
    (``expected=None``: a file written before digests were recorded; only existence counts)."""
    path = Path(path)
    if not path.is_file():
        raise DamagedRunError(path, what, hint, "missing")
    if expected is not None and sha256_file(path) != expected:
        raise DamagedRunError(path, what, hint, "its content differs from the recorded sha256")
    return path


def read_checked(
    path: Path, expected: str | None, what: str, hint: str, recorded_in: str
) -> bytes:
    """The bytes of ``path``, checked against the sha256 ``expected`` (None: not recorded).

    Raises:
        DamagedRunError: the file is unreadable or its sha256 differs from the one recorded in
            ``recorded_in`` (``"done.json"``, ``"state.json"``).
    """
    try:
        blob = Path(path).read_bytes()
    except OSError as err:
        raise DamagedRunError(path, what, hint, f"unreadable: {err}") from None
    if expected is not None and sha256_bytes(blob) != expected:
        raise DamagedRunError(path, what, hint, f"its sha256 differs from {recorded_in}")
    return blob
