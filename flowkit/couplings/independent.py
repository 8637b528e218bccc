"""The independent coupling ``π0 ⊗ π1``: source and target drawn separately."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from flowkit.couplings.base import (
    Cond,
    Coupling,
    CouplingBatch,
    build_distribution,
    check_batch_size,
    draw,
)
from flowkit.registry import COUPLINGS


@COUPLINGS.register("independent")
class IndependentCoupling(Coupling):
    """Independent pairs: ``x0 ~ source`` and ``(x1, cond) ~ target`` drawn separately.

    Flow matching on this coupling gives the 1-rectified flow of the rectified-flow paper.

    Args:
        source: source distribution spec (registered name, ``{name: ..., **kwargs}`` or an object
            with ``sample(n, generator)``).
        target: target distribution spec; a conditional target (with
            ``sample_conditional(n, generator) -> (x, cond)``) supplies the conditions.

    Example:
        >>> import flowkit as fk
        >>> c = fk.couplings.build({"name": "independent", "source": "gaussian", "target": "moons"})
        >>> batch = c.sample(256)  # doctest: +SKIP
    """

    def __init__(self, source: Any = "gaussian", target: Any = "moons") -> None:
        self.source = build_distribution(source, "source")
        self.target = build_distribution(target, "target")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(source={self.source!r}, target={self.target!r})"

    def draw_pair(
        self, batch_size: int, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor, Cond]:
        """Independent ``x0`` and ``(x1, cond)`` of equal shape."""
        check_batch_size(batch_size)
        x0 = self.source.sample(batch_size, generator=generator)
        x1, cond = draw(self.target, batch_size, generator)
        if x0.shape != x1.shape:
            raise ValueError(
                f"source samples of shape {tuple(x0.shape)} do not match target samples of shape "
                f"{tuple(x1.shape)}; source and target must have the same event shape"
            )
        return x0, x1.to(x0.dtype), cond

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> CouplingBatch:
        x0, x1, cond = self.draw_pair(batch_size, generator)
        return CouplingBatch(x0=x0, x1=x1, cond=cond)

    def finite_sides(self) -> dict[str, Any]:
        """``source`` / ``target`` when they are finite data (read by epochs), by role."""
        sides = {"source": self.source, "target": self.target}
        return {role: d for role, d in sides.items() if getattr(d, "finite", False)}

    def state_dict(self) -> dict[str, Any]:
        """The epoch positions of finite source / target data (empty for i.i.d. toys)."""
        return {role: d.state_dict() for role, d in self.finite_sides().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sides = self.finite_sides()
        if set(state) - set(sides):
            raise ValueError(f"coupling state for {sorted(state)}, but only {sorted(sides)} "
                             "hold finite data")
        for role, side_state in state.items():
            sides[role].load_state_dict(side_state)

    def epoch_samplers(self) -> list[Any]:
        return [s for d in self.finite_sides().values() for s in d.epoch_samplers()]

    def sample_source(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Cond]:
        """Source samples with the conditions of independently drawn targets."""
        x0, _, cond = self.draw_pair(batch_size, generator)
        return x0, cond
