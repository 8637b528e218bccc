"""Small couplings and flows shared by the training tests (no dependence on flowkit.couplings)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

import flowkit as fk


@dataclass
class ToyBatch:
    """Duck-typed ``CouplingBatch``."""

    x0: Tensor
    x1: Tensor
    cond: dict[str, Tensor] = field(default_factory=dict)
    t: Tensor | None = None


class ShiftCoupling:
    """``x0 ~ N(0, I)``; ``x1 = x0 + shift`` (deterministic) or ``shift + 0.5·N(0, I)``."""

    def __init__(self, dim: int = 2, shift: float = 3.0, deterministic: bool = False) -> None:
        self.dim, self.shift, self.deterministic = dim, shift, deterministic
        self.draws = 0

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> ToyBatch:
        self.draws += 1
        x0 = torch.randn(batch_size, self.dim, generator=generator)
        if self.deterministic:
            return ToyBatch(x0, x0 + self.shift)
        return ToyBatch(
            x0, self.shift + 0.5 * torch.randn(batch_size, self.dim, generator=generator)
        )


class NaNAfter(ShiftCoupling):
    """A coupling whose ``bad_draw``-th batch (1-based) holds a NaN target."""

    def __init__(self, bad_draw: int) -> None:
        super().__init__()
        self.bad_draw = bad_draw

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> ToyBatch:
        batch = super().sample(batch_size, generator)
        if self.draws == self.bad_draw:
            batch.x1[0, 0] = float("nan")
        return batch


class DropoutMLP(nn.Module):
    """An MLP with dropout, so exact resumption also needs the global torch RNG state."""

    def __init__(self, dim: int = 2) -> None:
        super().__init__()
        self.mlp = fk.models.build({"name": "mlp", "dim": dim, "hidden": 16, "depth": 2})
        self.drop = nn.Dropout(0.1)

    def forward(self, x: Tensor, t: Tensor, **cond: object) -> Tensor:
        return self.drop(self.mlp(x, t))


def make_flow(seed: int = 0, dropout: bool = False, dtype: torch.dtype = torch.float32) -> fk.Flow:
    """A small rectified flow with weights drawn from ``seed``."""
    torch.manual_seed(seed)
    model = (
        DropoutMLP()
        if dropout
        else fk.models.build({"name": "mlp", "dim": 2, "hidden": 16, "depth": 2})
    )
    return fk.Flow(model.to(dtype), "rectified")


def weights_equal(a: nn.Module, b: nn.Module) -> bool:
    """Bitwise equality of two modules' state dicts."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class Interrupt(Exception):
    """Raised by a callback to stop a run midway, like a killed process."""


def stop_at(step: int):
    """A ``fk.train`` callback that raises :class:`Interrupt` after step ``step``."""

    def callback(current: int, loss: float) -> None:
        if current == step:
            raise Interrupt

    return callback
