"""``tensor_file``: the rows of an array stored in a ``.npy``, ``.npz``, ``.pt`` or
``.safetensors`` file, read by shuffled epochs.

The file is opened by its header (:func:`flowkit.data.arrays.open_array`): building the
distribution, and so ``flowkit validate``, reads no data. Rows are read when a batch needs them;
a ``.npy`` or ``.safetensors`` file is memory-mapped, so it may be larger than memory.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from flowkit.data.arrays import SUFFIXES, ArrayFile, ArrayFileError, open_array
from flowkit.data.finite import FiniteData, Standardization, absolute_paths
from flowkit.registry import DISTRIBUTIONS


def labels_from(path: Path, labels: str, data_key: str | None) -> Tensor:
    """The labels named by ``labels``: a file holding one array, or a key of the data file."""
    if Path(labels).suffix.lower() in SUFFIXES:
        array = open_array(labels, what="labels")
    else:
        if path.suffix.lower() == ".npy":
            raise ArrayFileError(f"labels: {labels!r} is not a file name (suffix one of "
                                 f"{', '.join(SUFFIXES)}), and a .npy data file has no keys")
        if labels == data_key:
            raise ArrayFileError(f"labels: {labels!r} is the data's own key")
        array = open_array(path, labels, what="labels")
    if len(array.shape) != 1:
        raise ArrayFileError(f"labels: {array.path} must hold a 1-D array of class indices; got "
                             f"shape {array.shape}")
    return array.rows(torch.arange(array.shape[0]))


def check_event_shape(shape: Sequence[int] | None, array: ArrayFile) -> tuple[int, ...]:
    """One row's shape: the file's ``shape[1:]``, or ``shape`` when its size matches."""
    if len(array.shape) < 2:
        raise ArrayFileError(f"file: {array.path} holds an array of shape {array.shape}; expected "
                             "(N, ...) with one row per sample (a 1-D array of N values needs "
                             "shape: [1])")
    row = tuple(array.shape[1:])
    if shape is None:
        return row
    shape = tuple(shape)
    if not all(isinstance(d, int) and d > 0 for d in shape) or math.prod(shape) != math.prod(row):
        raise ArrayFileError(f"shape: {list(shape)} does not fit rows of shape {row} "
                             f"({math.prod(row)} values each)")
    return shape


@DISTRIBUTIONS.register("tensor_file")
class TensorFile(FiniteData):
    """Rows of an array in a .npy / .npz / .pt / .safetensors file, read by shuffled epochs.

    Args:
        file: the file; in YAML, relative to the YAML file.
        key: the array's name in a file holding several (.npz, a dict in .pt, .safetensors).
        labels: class labels returned as ``cond["y"]``: a key of the same file, or a file
            holding one 1-D integer array.
        shape: reshape each row to this shape (same number of values), e.g. ``[1, 28, 28]``.
        standardize: train on ``(x − mean) / std`` per feature (statistics computed once over
            the file and stored in the run); samples are mapped back to data units.

    Example:
        >>> import numpy as np, torch, flowkit as fk, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
        >>> np.save(path, np.random.default_rng(0).normal(size=(100, 3)))
        >>> data = fk.data.build({"name": "tensor_file", "file": path})
        >>> tuple(data.sample(8, torch.Generator().manual_seed(0)).shape)
        (8, 3)
    """

    @staticmethod
    def resolve_paths(options: dict[str, Any], directory: Path) -> dict[str, Any]:
        """``file``, and ``labels`` when it names a file, made absolute against ``directory``."""
        labels_file = Path(str(options.get("labels"))).suffix.lower() in SUFFIXES
        names = ("file", "labels") if labels_file else ("file",)
        return absolute_paths(options, directory, names)

    def __init__(
        self,
        file: str | os.PathLike,
        key: str | None = None,
        labels: str | None = None,
        shape: Sequence[int] | None = None,
        standardize: bool | Standardization = False,
    ) -> None:
        path = Path(file).expanduser()
        self.array = open_array(path, key)
        event_shape = check_event_shape(shape, self.array)
        label_values = None if labels is None else labels_from(path, labels, self.array.key)
        n = self.array.shape[0]
        if label_values is not None and label_values.shape[0] != n:
            raise ArrayFileError(f"labels: {label_values.shape[0]} labels for {n} rows of {path}")
        super().__init__(n, event_shape, label_values, standardize, str(path))

    def read_rows(self, index: Tensor) -> Tensor:
        return self.array.rows(index).reshape(index.shape[0], *self.event_shape)
