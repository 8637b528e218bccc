"""Stored pairs as a coupling: tensors in memory or a pair store on disk."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from flowkit.couplings.base import Cond, Coupling, CouplingBatch, check_batch_size, index_cond
from flowkit.couplings.store import PairStore
from flowkit.data.epochs import EpochSampler
from flowkit.registry import COUPLINGS


class PairedCoupling(Coupling):
    """Fixed pairs ``(x0_i, x1_i, cond_i)`` sampled in batches without replacement per epoch.

    Args:
        x0, x1: paired samples of equal shape ``(N, ...)``.
        cond: conditions aligned with the pairs, each of leading size ``N``.
        deterministic: True when ``x1`` is a function of ``(x0, cond)`` (reflow pairs).
        states: optional teacher states on a time grid, shape ``(N, K+1, ...)`` with
            ``states[:, 0] = x0`` and ``states[:, K] = x1`` (used by distillation).
        grid: the ``K+1`` increasing times of ``states``, from 0 to 1.
        manifest: the store manifest the pairs were loaded from, if any.

    Example:
        >>> import torch
        >>> x0 = torch.randn(100, 2)
        >>> pairs = PairedCoupling(x0, 2 * x0 + 1, deterministic=True)
        >>> batch = pairs.sample(32, generator=torch.Generator().manual_seed(0))
        >>> torch.allclose(batch.x1, 2 * batch.x0 + 1)
        True
    """

    def __init__(
        self,
        x0: Tensor,
        x1: Tensor,
        cond: Cond | None = None,
        *,
        deterministic: bool = False,
        states: Tensor | None = None,
        grid: list[float] | None = None,
        manifest: dict | None = None,
    ) -> None:
        x0, x1 = torch.as_tensor(x0), torch.as_tensor(x1)
        if x0.shape != x1.shape or x0.ndim < 1:
            raise ValueError(
                f"x0 and x1 must be paired tensors of equal shape (N, ...); got {tuple(x0.shape)} "
                f"and {tuple(x1.shape)}"
            )
        cond = dict(cond or {})
        for key, value in cond.items():
            if value.shape[0] != x0.shape[0]:
                raise ValueError(
                    f"cond[{key!r}] has {value.shape[0]} rows but there are {x0.shape[0]} pairs"
                )
        if (states is None) != (grid is None):
            raise ValueError("states and grid must be given together (or neither)")
        if states is not None and (
            states.shape[0] != x0.shape[0]
            or tuple(states.shape[2:]) != tuple(x0.shape[1:])
            or states.shape[1] != len(grid)
        ):
            raise ValueError(
                f"states must have shape (N, len(grid), ...) = ({x0.shape[0]}, {len(grid)}, "
                f"{', '.join(map(str, x0.shape[1:]))}); got {tuple(states.shape)}"
            )
        self.x0, self.x1, self.cond = x0, x1, cond
        self.states, self.grid = states, (None if grid is None else [float(t) for t in grid])
        self.manifest = manifest
        self._deterministic = bool(deterministic)
        self.sampler = EpochSampler(x0.shape[0])

    def __len__(self) -> int:
        return self.x0.shape[0]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_pairs={len(self)}, shape={tuple(self.x0.shape[1:])}, "
            f"deterministic={self.deterministic})"
        )

    @property
    def deterministic(self) -> bool:
        return self._deterministic

    @classmethod
    def from_store(cls, directory: str | os.PathLike) -> PairedCoupling:
        """Load a complete pair store written by :func:`flowkit.reflow`."""
        tensors, manifest = PairStore(directory).load()
        cond = {k.removeprefix("cond."): v for k, v in tensors.items() if k.startswith("cond.")}
        return cls(
            tensors["x0"],
            tensors["x1"],
            cond,
            deterministic=manifest.get("deterministic", True),
            states=tensors.get("states"),
            grid=manifest.get("grid"),
            manifest=manifest,
        )

    def state_dict(self) -> dict[str, Any]:
        """The epoch seed and position (restoring them resumes the same batches)."""
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)

    def epoch_samplers(self) -> list[EpochSampler]:
        return [self.sampler]

    def next_indices(self, batch_size: int, generator: torch.Generator | None) -> Tensor:
        """Indices of the next batch (without replacement within an epoch)."""
        return self.sampler.take(check_batch_size(batch_size), generator)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> CouplingBatch:
        idx = self.next_indices(batch_size, generator)
        return CouplingBatch(x0=self.x0[idx], x1=self.x1[idx], cond=index_cond(self.cond, idx))

    def sample_source(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Cond]:
        idx = self.next_indices(batch_size, generator)
        return self.x0[idx], index_cond(self.cond, idx)


@COUPLINGS.register("paired")
def paired(
    x0: Tensor | None = None,
    x1: Tensor | None = None,
    cond: Cond | None = None,
    store: str | None = None,
    deterministic: bool | None = None,
) -> PairedCoupling:
    """Stored pairs: tensors x0, x1 (and cond), or a pair store directory written by reflow.

    Args:
        x0, x1, cond: paired tensors (Python use).
        store: a pair store directory (YAML use); exclusive with the tensors.
        deterministic: overrides the flag (default: the store's manifest, False for tensors).
    """
    if (store is None) == (x0 is None or x1 is None):
        raise ValueError(
            "paired coupling needs either store=DIR or both x0= and x1= tensors (not both); "
            f"got store={store!r}, x0 {'set' if x0 is not None else 'None'}, "
            f"x1 {'set' if x1 is not None else 'None'}"
        )
    if store is not None:
        coupling = PairedCoupling.from_store(store)
        if deterministic is not None:
            coupling._deterministic = bool(deterministic)
        return coupling
    return PairedCoupling(x0, x1, cond, deterministic=bool(deterministic))
