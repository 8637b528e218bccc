"""Minibatch optimal-transport coupling (OT-CFM) with a true permutation per batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowkit.conditions import LABEL_KEY
from flowkit.couplings.assignment import (
    exact_assignment,
    exact_permutation,
    per_class_assignment,
    sinkhorn_assignment,
    squared_distances,
)
from flowkit.couplings.base import CouplingBatch
from flowkit.couplings.chunking import chunked_assignment
from flowkit.couplings.independent import IndependentCoupling
from flowkit.registry import COUPLINGS, did_you_mean

METHODS = ("exact", "sinkhorn")


@COUPLINGS.register("minibatch_ot")
class MinibatchOTCoupling(IndependentCoupling):
    """Minibatch OT: independent batches re-paired by the optimal assignment of ``||x0 − x1||²``.

    Each call draws ``B`` source and ``B`` target samples and pairs them by a permutation ``σ``
    of the source batch: ``method="exact"`` minimises ``Σ_j ||x0_σ(j) − x1_j||²`` exactly;
    ``method="sinkhorn"`` draws ``σ`` from the entropic plan with regularisation ``reg`` (see
    :func:`~flowkit.couplings.assignment.sinkhorn_assignment`). Unlike torchcfm's OT sampler, pairs
    are never drawn with replacement from the plan: every sample of the batch is used once, so
    the batch marginals are exactly the drawn samples. Only the source is permuted; targets and
    their conditions keep their order, so conditions stay aligned with ``x1``.

    With ``chunk_size=k``, a batch larger than ``k`` is cut into cells of at most ``k`` sources
    and as many targets by a k-d tree over the pooled batch in its principal axes, and the
    assignment is solved within each cell (:func:`~flowkit.couplings.chunking.chunked_assignment`):
    ``⌈B/k⌉`` problems of size ``k`` instead of one of size ``B``, an approximation of the exact
    plan whose cost and quality are measured in ``docs/couplings.md``.

    Args:
        source: source distribution spec.
        target: target distribution spec.
        method: ``"exact"`` or ``"sinkhorn"``.
        reg: entropic regularisation relative to the mean batch cost (``"sinkhorn"`` only).
        num_iter: maximum Sinkhorn iterations.
        chunk_size: solve within cells of at most this many pairs (None: the whole batch).
        by_class: when the target gives class labels (``cond["y"]``), pair each target only
            with sources of its class (:func:`~flowkit.couplings.assignment.per_class_assignment`:
            the sources are split among the classes independently of their values, then OT runs
            within each class). Without it, OT across classes mixes them: a source near one
            class's data is paired with that class whatever its label. Continuous conditions
            (``cond["c"]``) are not grouped.

    Example:
        >>> import flowkit as fk
        >>> spec = {"name": "minibatch_ot", "source": "gaussian", "target": "moons"}
        >>> batch = fk.couplings.build(spec).sample(256)  # doctest: +SKIP
    """

    def __init__(
        self,
        source: Any = "gaussian",
        target: Any = "moons",
        method: str = "exact",
        reg: float = 0.05,
        num_iter: int = 1000,
        chunk_size: int | None = None,
        by_class: bool = True,
    ) -> None:
        super().__init__(source, target)
        if method not in METHODS:
            raise ValueError(
                f"method must be one of {', '.join(METHODS)}; got {method!r}."
                + did_you_mean(str(method), list(METHODS))
            )
        if not reg > 0:
            raise ValueError(f"reg must be positive, got {reg!r}")
        if not isinstance(num_iter, int) or num_iter < 1:
            raise ValueError(f"num_iter must be a positive integer, got {num_iter!r}")
        self.method = method
        self.reg = float(reg)
        self.num_iter = num_iter
        self.chunk_size = check_chunk_size(chunk_size)
        if not isinstance(by_class, bool):
            raise TypeError(f"by_class must be true or false, got {by_class!r}")
        self.by_class = by_class

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(source={self.source!r}, target={self.target!r}, "
            f"method={self.method!r}, reg={self.reg}, chunk_size={self.chunk_size})"
        )

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> CouplingBatch:
        x0, x1, cond = self.draw_pair(batch_size, generator)
        labels = cond.get(LABEL_KEY) if self.by_class else None
        if labels is None:
            perm = self.assignment(x0, x1, generator)
        else:
            perm = self.class_assignment(x0, x1, labels, generator)
        return CouplingBatch(x0=x0[perm.to(x0.device)], x1=x1, cond=cond)

    def class_assignment(
        self, x0: Tensor, x1: Tensor, labels: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        """The assignment within each class of a labelled target
        (:func:`~flowkit.couplings.assignment.per_class_assignment`)."""

        def solve(src: Tensor, tgt: Tensor) -> Tensor:
            return self.assignment(x0[src.to(x0.device)], x1[tgt.to(x1.device)], generator)

        return per_class_assignment(labels, solve)

    def assignment(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None) -> Tensor:
        """The permutation ``σ`` pairing target ``j`` with source ``σ(j)``: the configured
        method on the whole batch, or cell by cell with ``chunk_size``."""
        if self.chunk_size is None:
            cost = squared_distances(x0, x1)
            if self.method == "exact":
                return exact_assignment(cost)
            return sinkhorn_assignment(cost, self.reg, generator, self.num_iter)

        def assign(cost: np.ndarray) -> np.ndarray:
            if self.method == "exact":
                return exact_permutation(cost)
            c = torch.from_numpy(cost)
            return sinkhorn_assignment(c, self.reg, generator, self.num_iter).numpy()

        return chunked_assignment(x0, x1, self.chunk_size, assign)


def check_chunk_size(chunk_size: Any) -> int | None:
    """``None`` or a positive integer (the largest cell of chunked OT)."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    return chunk_size
