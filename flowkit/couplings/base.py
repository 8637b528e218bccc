"""The coupling interface: how (x0, x1, cond) training batches are drawn.

A coupling is a joint distribution of source and target samples. Flow matching regresses the
conditional velocity of the path between the two ends of each pair, so the coupling decides what
the flow learns: the independent coupling gives 1-rectified flow, minibatch optimal transport
straighter paths, stored teacher pairs (reflow) a straight flow of the teacher's map.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

import flowkit.data  # noqa: F401  (registers the distributions named in specs)
from flowkit.registry import DISTRIBUTIONS, RegistryError

Cond = dict[str, Tensor]


@runtime_checkable
class Sampleable(Protocol):
    """Anything with ``sample(n, generator=None) -> Tensor`` (a flowkit ``Distribution``)."""

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor: ...


@dataclass
class CouplingBatch:
    """One batch of coupled samples.

    Attributes:
        x0: source samples, shape ``(B, ...)``.
        x1: target samples paired with ``x0``, same shape.
        cond: keyword conditions for the model, each of leading size ``B`` and aligned with ``x1``.
        t: training times of shape ``(B,)``; when set, the trainer uses them instead of its time
            sampler (distillation fixes the times of its segments this way).
    """

    x0: Tensor
    x1: Tensor
    cond: Cond = field(default_factory=dict)
    t: Tensor | None = None

    def __len__(self) -> int:
        return self.x0.shape[0]


class Coupling(ABC):
    """Base class: a joint distribution of ``(x0, x1, cond)`` sampled in batches.

    Subclasses implement :meth:`sample`; :meth:`sample_source` (the source half with its
    conditions, used by :func:`flowkit.reflow`) defaults to a full batch without its ``x1``.
    """

    @abstractmethod
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> CouplingBatch:
        """Draw ``batch_size`` coupled pairs."""

    @property
    def deterministic(self) -> bool:
        """True when x1 is a function of (x0, cond), as for pairs produced by a teacher flow."""
        return False

    def sample_source(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Cond]:
        """Draw source samples ``x0`` with the conditions they are coupled with."""
        batch = self.sample(batch_size, generator=generator)
        return batch.x0, batch.cond

    def state_dict(self) -> dict[str, Any]:
        """Sampling state to checkpoint (e.g. the epoch order of stored pairs); empty here."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (nothing to restore here)."""
        if state:
            raise ValueError(f"{type(self).__name__} has no sampling state; got keys {list(state)}")

    def epoch_samplers(self) -> list[Any]:
        """The epoch streams of finite data this coupling reads, each advanced by ``batch_size``
        items per batch (:class:`~flowkit.data.epochs.EpochSampler`); none here."""
        return []


def check_batch_size(batch_size: Any) -> int:
    """Return ``batch_size`` if it is a positive integer, else raise ``ValueError``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def build_distribution(spec: Any, argument: str) -> Sampleable:
    """Build ``spec`` through the DISTRIBUTIONS registry (which checks it can be sampled); errors
    name ``argument``."""
    try:
        return DISTRIBUTIONS.build(spec)
    except RegistryError as err:
        raise type(err)(f"{argument}: {err}") from err


def draw(dist: Sampleable, n: int, generator: torch.Generator | None) -> tuple[Tensor, Cond]:
    """Draw ``n`` samples and their conditions from a distribution.

    A conditional distribution (e.g. labelled data) exposes
    ``sample_conditional(n, generator) -> (x, cond)``; a plain one only ``sample`` and gets no
    conditions.
    """
    conditional = getattr(dist, "sample_conditional", None)
    if callable(conditional):
        x, cond = conditional(n, generator=generator)
        return x, dict(cond)
    return dist.sample(n, generator=generator), {}


def index_cond(cond: Cond, index: Tensor) -> Cond:
    """Select rows ``index`` of every condition tensor."""
    return {k: v[index] for k, v in cond.items()}
