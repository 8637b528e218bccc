"""Arrays in files, opened by their header and read row by row.

:func:`open_array` returns an :class:`ArrayFile` whose ``shape`` comes from the file's header
alone (cheap, so ``flowkit validate`` can check it); rows are read on demand:

- ``.npy``: memory-mapped (``numpy.load(mmap_mode="r")``): only the rows asked for are read,
  so a file larger than memory works;
- ``.safetensors``: the header (an 8-byte length and a JSON table) gives each tensor's dtype,
  shape and byte range, which is memory-mapped the same way;
- ``.pt``: ``torch.load(weights_only=True, mmap=True)`` (a tensor or a dict of tensors saved by
  ``torch.save``): the storage is mapped, not read;
- ``.npz``: the member's header is read from the archive; its data is read whole on the first
  access (archive members cannot be mapped; save a ``.npy`` for data larger than memory).
"""

from __future__ import annotations

import json
import struct
import zipfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

SUFFIXES = (".npy", ".npz", ".pt", ".safetensors")
SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}  # fmt: skip
MAX_HEADER = 100 * 2**20


class ArrayFileError(ValueError):
    """A data file that cannot be used (missing, unreadable, wrong key or shape)."""


@dataclass
class ArrayFile:
    """One array in a file: its shape from the header, its rows read on demand.

    Attributes:
        path: the file.
        key: the array's name inside the file (None for a bare ``.npy`` or tensor).
        shape: the array's shape.
        dtype: its dtype (a numpy dtype, or a torch dtype for ``.pt``).
    """

    path: Path
    key: str | None
    shape: tuple[int, ...]
    dtype: Any
    loader: Any = field(repr=False)
    _data: Any = field(default=None, repr=False)

    @property
    def data(self) -> Any:
        """The (mapped or loaded) array, opened on first use."""
        if self._data is None:
            self._data = self.loader()
        return self._data

    def rows(self, index: Tensor) -> Tensor:
        """Rows at ``index`` as a CPU tensor (only those rows are read from a mapped file)."""
        data = self.data
        if isinstance(data, Tensor):
            return data[index]
        picked = np.asarray(data[index.numpy()])
        if self.dtype == "BF16":
            return torch.from_numpy(picked.astype(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(picked)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_data": None}  # worker processes map the file themselves

    def __len__(self) -> int:
        return self.shape[0]


def check_exists(path: Path, what: str) -> None:
    if not path.exists():
        raise ArrayFileError(f"{what}: file not found: {path}")
    if not path.is_file():
        raise ArrayFileError(f"{what}: not a regular file: {path}")


def pick_key(keys: list[str], key: str | None, path: Path, what: str) -> str:
    """``key``, or the only key of the file; errors list the keys there are."""
    if key is None:
        if len(keys) == 1:
            return keys[0]
        raise ArrayFileError(f"{what}: {path} holds {len(keys)} arrays ({', '.join(keys)}); "
                             "name one with key")
    if key not in keys:
        raise ArrayFileError(f"{what}: {path} has no array {key!r}; it holds: {', '.join(keys)}")
    return key


def npy_header(handle: Any) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a ``.npy`` header (the data is not read)."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    return tuple(shape), dtype


def open_npy(path: Path, key: str | None, what: str) -> ArrayFile:
    with path.open("rb") as handle:
        shape, dtype = npy_header(handle)
    return ArrayFile(path, None, shape, dtype, partial(np.load, path, mmap_mode="r"))


def open_npz(path: Path, key: str | None, what: str) -> ArrayFile:
    with zipfile.ZipFile(path) as archive:
        names = [n.removesuffix(".npy") for n in archive.namelist() if n.endswith(".npy")]
        key = pick_key(names, key, path, what)
        with archive.open(f"{key}.npy") as handle:
            shape, dtype = npy_header(handle)
    return ArrayFile(path, key, shape, dtype, partial(load_npz_member, path, key))


def load_npz_member(path: Path, key: str) -> np.ndarray:
    with np.load(path) as archive:
        return archive[key]


def load_pt(path: Path, key: str | None = None) -> Any:
    """``torch.load`` with ``weights_only=True``, memory-mapped unless the file has the legacy
    (non-zip) format; with ``key``, that entry of the saved dict."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj if key is None else obj[key]


def open_pt(path: Path, key: str | None, what: str) -> ArrayFile:
    obj = load_pt(path)
    if isinstance(obj, dict):
        keys = [k for k, v in obj.items() if isinstance(v, Tensor)]
        key = pick_key(keys, key, path, what)
        obj = obj[key]
    elif not isinstance(obj, Tensor):
        raise ArrayFileError(f"{what}: {path} holds a {type(obj).__name__}; expected a tensor or "
                             "a dict of tensors saved with torch.save")
    elif key is not None:
        raise ArrayFileError(f"{what}: {path} holds a single tensor; key {key!r} does not apply")
    return ArrayFile(path, key, tuple(obj.shape), obj.dtype, partial(load_pt, path, key), obj)


def open_safetensors(path: Path, key: str | None, what: str) -> ArrayFile:
    with path.open("rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        if size > MAX_HEADER:
            raise ArrayFileError(f"{what}: {path} is not a safetensors file (header size {size})")
        header = json.loads(handle.read(size))
    header.pop("__metadata__", None)
    key = pick_key(sorted(header), key, path, what)
    entry = header[key]
    if entry["dtype"] not in SAFETENSORS_DTYPES:
        raise ArrayFileError(f"{what}: {path}[{key!r}] has dtype {entry['dtype']}, not one of "
                             f"{', '.join(SAFETENSORS_DTYPES)}")
    shape, (begin, _) = tuple(entry["shape"]), entry["data_offsets"]
    np_dtype = SAFETENSORS_DTYPES[entry["dtype"]]
    load = partial(map_bytes, path, np.dtype(np_dtype), 8 + size + begin, shape)
    dtype = "BF16" if entry["dtype"] == "BF16" else np.dtype(np_dtype)
    return ArrayFile(path, key, shape, dtype, load)


def map_bytes(path: Path, dtype: np.dtype, offset: int, shape: tuple[int, ...]) -> np.ndarray:
    """The array of ``shape`` stored at byte ``offset`` of ``path``, memory-mapped."""
    if 0 in shape or not shape:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


def is_real(dtype: Any) -> bool:
    """Whether ``dtype`` (numpy, torch or ``"BF16"``) holds real numbers or booleans."""
    if isinstance(dtype, torch.dtype):
        return not dtype.is_complex
    return dtype == "BF16" or np.dtype(dtype).kind in "fiub"


OPENERS = {".npy": open_npy, ".npz": open_npz, ".pt": open_pt, ".safetensors": open_safetensors}


def open_array(path: str | Path, key: str | None = None, what: str = "file") -> ArrayFile:
    """Open one array of a ``.npy``, ``.npz``, ``.pt`` or ``.safetensors`` file by its header.

    Args:
        path: the file (its suffix picks the format).
        key: the array's name in a file holding several (``.npz``, a dict in ``.pt``,
            ``.safetensors``); optional when the file holds one.
        what: how errors name the option (``file``, ``labels``).

    Raises:
        ArrayFileError: a missing or unreadable file, an unknown suffix or key.
    """
    path = Path(path)
    opener = OPENERS.get(path.suffix.lower())
    if opener is None:
        raise ArrayFileError(f"{what}: {path} has suffix {path.suffix or '(none)'!r}; supported: "
                             f"{', '.join(SUFFIXES)}")
    check_exists(path, what)
    if key is not None and path.suffix.lower() == ".npy":
        raise ArrayFileError(f"{what}: {path} is a .npy file holding one array; key {key!r} "
                             "does not apply")
    try:
        array = opener(path, key, what)
    except ArrayFileError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, zipfile.BadZipFile, struct.error) as err:
        raise ArrayFileError(f"{what}: cannot read {path}: {err}") from err
    if not is_real(array.dtype):
        raise ArrayFileError(f"{what}: {path} holds {array.dtype} values; expected numbers")
    return array
