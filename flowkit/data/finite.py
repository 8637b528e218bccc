"""Finite data: a fixed set of rows (and optional labels) read by shuffled epochs.

:class:`FiniteData` is the base of every distribution backed by data rather than a formula
(tensors, files, image folders, torch datasets). Subclasses say how many rows there are and how
to read some of them (:meth:`FiniteData.read_rows`); the base draws batches by shuffled epochs
without replacement (:class:`~flowkit.data.epochs.EpochSampler`, whose position is part of a
training checkpoint), returns the labels as the condition ``cond["y"]`` and optionally
standardises the rows (:class:`Standardization`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from flowkit.data.base import Cond, Distribution, check_num_samples, generator_device
from flowkit.data.epochs import EpochSampler

STATS_CHUNK = 4096
"""Rows read at a time when the standardisation statistics are computed."""


def standardize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``z = (x − mean) / std``, feature by feature."""
    return (x - mean) / std


def unstandardize(z: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``x = z · std + mean``: the inverse of :func:`standardize`."""
    return z * std + mean


@dataclass
class Standardization:
    """Per-feature mean and standard deviation of a data set (shape: one row's).

    Features with zero spread get ``std = 1`` so a constant feature maps to 0 and back.
    """

    mean: Tensor
    std: Tensor

    def state_dict(self) -> dict[str, list]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Standardization:
        mean = torch.as_tensor(state["mean"], dtype=torch.float64)
        std = torch.as_tensor(state["std"], dtype=torch.float64)
        if mean.shape != std.shape or not bool((std > 0).all()):
            raise ValueError("standardization statistics need mean and std of one shape, std > 0")
        return cls(mean, std)

    def to_model(self, x: Tensor) -> Tensor:
        """Data units → the standardised units the flow is trained in."""
        return standardize(x, *self.moments(x)).to(x.dtype)

    def to_data(self, z: Tensor) -> Tensor:
        """Standardised units (e.g. samples of a trained flow) → data units."""
        return unstandardize(z, *self.moments(z)).to(z.dtype)

    def moments(self, like: Tensor) -> tuple[Tensor, Tensor]:
        return self.mean.to(like.device), self.std.to(like.device)


def fit_standardization(data: FiniteData) -> Standardization:
    """Mean and standard deviation of every feature over all rows, read in chunks.

    ``mean = Σx / N``, ``std = sqrt(Σ(x − mean)² / N)`` (two passes in float64, so a data set
    larger than memory is read chunk by chunk and the result does not lose precision).
    """
    n = len(data)
    total = torch.zeros(data.event_shape, dtype=torch.float64)
    for start in range(0, n, STATS_CHUNK):
        total += data.read_rows(torch.arange(start, min(start + STATS_CHUNK, n))).double().sum(0)
    mean = total / n
    squares = torch.zeros_like(mean)
    for start in range(0, n, STATS_CHUNK):
        rows = data.read_rows(torch.arange(start, min(start + STATS_CHUNK, n))).double()
        squares += ((rows - mean) ** 2).sum(0)
    std = (squares / n).sqrt()
    return Standardization(mean, torch.where(std > 0, std, torch.ones_like(std)))


def absolute_paths(
    options: Mapping[str, Any], directory: Path, names: Sequence[str]
) -> dict[str, Any]:
    """``options`` with the relative paths among ``names`` made absolute against ``directory``.

    A data factory's ``resolve_paths(options, directory)`` attribute: the experiment layer
    calls it so that paths in a YAML file are relative to that file.
    """
    resolved = dict(options)
    for name in names:
        value = resolved.get(name)
        if isinstance(value, str) and not Path(value).expanduser().is_absolute():
            resolved[name] = str(directory / value)
    return resolved


def check_labels(labels: Any, n: int, where: str) -> Tensor:
    """Labels as a long tensor ``(n,)`` of non-negative integers; errors name ``where``."""
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{where}: labels must be integers, got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"{where}: labels must have shape ({n},) (one per row); got "
                         f"{tuple(labels.shape)}")
    labels = labels.long()
    if n and int(labels.min()) < 0:
        raise ValueError(f"{where}: labels must be non-negative class indices")
    return labels


class FiniteData(Distribution):
    """A finite set of rows drawn by shuffled epochs without replacement.

    Every call of :meth:`sample` / :meth:`sample_conditional` reads the next ``n`` rows of an
    endless stream of epochs (each a fresh random order, fixed by the seed drawn from the first
    generator it is given; see :mod:`flowkit.data.epochs`); :meth:`state_dict` is that stream's
    position, which a training checkpoint stores. With labels, the condition ``cond["y"]``
    holds them (a long tensor), and ``num_classes`` is one more than the largest label.

    Subclasses implement :meth:`read_rows` and call ``super().__init__``.

    Args:
        n: number of rows.
        event_shape: shape of one row.
        labels: optional class labels ``(n,)``.
        standardize: map rows to zero mean and unit variance per feature
            (:func:`fit_standardization`), or use the given :class:`Standardization`;
            :meth:`to_data` maps samples back to data units.
        where: how errors name this data (a file, ``from_tensor``, ...).
    """

    finite = True

    def __init__(
        self,
        n: int,
        event_shape: tuple[int, ...],
        labels: Tensor | None = None,
        standardize: bool | Standardization = False,
        where: str = "data",
    ) -> None:
        if n < 1:
            raise ValueError(f"{where}: holds no rows; finite data needs at least one")
        self.event_shape = tuple(int(d) for d in event_shape)
        self.where = where
        self.labels = None if labels is None else check_labels(labels, n, where)
        self.num_classes = None if self.labels is None else int(self.labels.max()) + 1
        self.sampler = EpochSampler(n)
        if not isinstance(standardize, bool | Standardization):
            raise TypeError(f"standardize must be true/false, got {standardize!r}")
        self.standardize = standardize
        self._stats = standardize if isinstance(standardize, Standardization) else None

    def __len__(self) -> int:
        return self.sampler.n

    @abstractmethod
    def read_rows(self, index: Tensor) -> Tensor:
        """The rows at ``index`` (a long tensor), shape ``(len(index), *event_shape)``, in data
        units (any real dtype, on the CPU)."""

    @property
    def stats(self) -> Standardization | None:
        """The standardisation statistics (computed on first use), or None without."""
        if self.standardize is True and self._stats is None:
            self._stats = fit_standardization(self)
        return self._stats

    def use_statistics(self, stats: Standardization) -> None:
        """Standardise with ``stats`` (e.g. those stored in a run) instead of computing them."""
        if tuple(stats.mean.shape) != self.event_shape:
            raise ValueError(f"{self.where}: standardization statistics of shape "
                             f"{tuple(stats.mean.shape)} for rows of shape {self.event_shape}")
        self.standardize = self._stats = stats

    def to_data(self, x: Tensor) -> Tensor:
        """Samples in the units the flow is trained in → data units (identity without
        standardisation)."""
        stats = self.stats
        return x if stats is None else stats.to_data(x)

    def rows(self, index: Tensor, device: torch.device) -> Tensor:
        """Rows at ``index`` in the training units, default float dtype, on ``device``."""
        x = self.read_rows(index).to(torch.get_default_dtype())
        stats = self.stats
        if stats is not None:
            x = stats.to_model(x)
        return x.to(device)

    def labelled(self, index: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """The rows at ``index`` (None: every row), in training units on the CPU, and their
        labels (None without labels): the real data a classifier is fitted on
        (``classifier_accuracy``). The epoch stream is left where it is."""
        index = torch.arange(len(self)) if index is None else index
        labels = None if self.labels is None else self.labels[index]
        return self.rows(index, torch.device("cpu")), labels

    def sample_conditional(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Cond]:
        """The next ``n`` rows of the epoch stream and, with labels, ``{"y": labels}``."""
        n = check_num_samples(n)
        index = self.sampler.take(n, generator)
        device = generator_device(generator)
        cond = {} if self.labels is None else {"y": self.labels[index].to(device)}
        return self.rows(index, device), cond

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """The next ``n`` rows of the epoch stream, shape ``(n, *event_shape)``."""
        return self.sample_conditional(n, generator)[0]

    def epoch_samplers(self) -> list[EpochSampler]:
        """The epoch streams this distribution reads (one)."""
        return [self.sampler]

    def state_dict(self) -> dict[str, Any]:
        """The position in the epoch stream."""
        return self.sampler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sampler.load_state_dict(state)

    def __repr__(self) -> str:
        labels = "" if self.labels is None else f", num_classes={self.num_classes}"
        name, shape = type(self).__name__, self.event_shape
        return f"{name}({self.where}, n={len(self)}, shape={shape}{labels})"


class TensorData(FiniteData):
    """Rows of an in-memory tensor (:func:`flowkit.data.from_tensor`)."""

    def __init__(
        self, x: Any, labels: Any = None, standardize: bool | Standardization = False
    ) -> None:
        x = torch.as_tensor(x)
        if x.ndim < 2:
            raise ValueError(f"from_tensor: x must have shape (N, ...) with N rows; got "
                             f"{tuple(x.shape)} (a 1-D array of N values is x[:, None])")
        if not (x.is_floating_point() or x.dtype in INTEGER_DTYPES):
            raise TypeError(f"from_tensor: x must hold numbers, got dtype {x.dtype}")
        self.x = x
        super().__init__(x.shape[0], tuple(x.shape[1:]), labels, standardize, "from_tensor")

    def read_rows(self, index: Tensor) -> Tensor:
        return self.x[index]


INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


class DatasetData(FiniteData):
    """Items of a map-style torch dataset (:func:`flowkit.data.from_dataset`).

    Each item is a tensor ``x`` or a pair ``(x, label)``; the labels of every item are read
    once when the data is built (which reads every item: for large image datasets prefer
    :func:`~flowkit.data.image_folder`, which reads only the file list).
    """

    def __init__(self, dataset: Any, standardize: bool | Standardization = False) -> None:
        if not callable(getattr(dataset, "__getitem__", None)) or not hasattr(dataset, "__len__"):
            raise TypeError(
                "from_dataset needs a map-style dataset (with __len__ and __getitem__), got "
                f"{type(dataset).__name__}"
            )
        self.dataset = dataset
        n = len(dataset)
        if n < 1:
            raise ValueError("from_dataset: the dataset is empty")
        first, label = self.split(dataset[0], 0)
        labels = None
        if label is not None:
            labels = torch.tensor([int(self.split(dataset[i], i)[1]) for i in range(n)])
        super().__init__(n, tuple(first.shape), labels, standardize, "from_dataset")

    @staticmethod
    def split(item: Any, i: int) -> tuple[Tensor, Any]:
        """``(x, label)`` of one item (label None for a bare tensor)."""
        if isinstance(item, tuple | list):
            if len(item) != 2:
                raise ValueError(f"from_dataset: item {i} has {len(item)} parts; expected x or "
                                 "(x, label)")
            return torch.as_tensor(item[0]), item[1]
        return torch.as_tensor(item), None

    def read_rows(self, index: Tensor) -> Tensor:
        rows = []
        for i in index.tolist():
            x = self.split(self.dataset[i], i)[0]
            if tuple(x.shape) != self.event_shape:
                raise ValueError(f"from_dataset: item {i} has shape {tuple(x.shape)}, item 0 "
                                 f"{self.event_shape}; every item must have the same shape")
            rows.append(x)
        return torch.stack(rows)


def from_tensor(x: Any, labels: Any = None, standardize: bool = False) -> TensorData:
    """Finite data from a tensor (or array) ``x`` of shape ``(N, ...)``, read by shuffled epochs.

    Args:
        x: the rows.
        labels: optional integer class labels ``(N,)``, returned as the condition ``cond["y"]``.
        standardize: train on ``(x − mean) / std`` per feature; ``data.to_data(samples)`` maps
            a flow's samples back.

    Example:
        >>> import torch, flowkit as fk
        >>> data = fk.data.from_tensor(torch.randn(100, 3), labels=torch.arange(100) % 4)
        >>> x, cond = data.sample_conditional(8, generator=torch.Generator().manual_seed(0))
        >>> tuple(x.shape), data.num_classes
        ((8, 3), 4)
    """
    return TensorData(x, labels, standardize)


def from_dataset(dataset: Any, standardize: bool = False) -> DatasetData:
    """Finite data from a map-style torch dataset whose items are ``x`` or ``(x, label)``.

    Example:
        >>> import torch, flowkit as fk
        >>> ds = torch.utils.data.TensorDataset(torch.randn(10, 2), torch.arange(10) % 2)
        >>> fk.data.from_dataset(ds).sample(4, torch.Generator().manual_seed(0)).shape
        torch.Size([4, 2])
    """
    return DatasetData(dataset, standardize)
