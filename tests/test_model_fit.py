"""flowkit.models.fit: the model checks validation runs, on the meta device and on the CPU."""

from __future__ import annotations

import torch
from torch import nn

from flowkit.models import MLP
from flowkit.models.fit import check_model_fits


class ReadsValues(nn.Module):
    """A forward that reads a value (cannot run on meta tensors); ``out`` sets its output width."""

    def __init__(self, out: int = 2) -> None:
        super().__init__()
        self.linear = nn.Linear(2, out)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * float(t.sum().item() + 1.0)


def problems_of(build: object, x: torch.Tensor, memory: int = 2**30) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    check_model_fits(build, x, {}, memory, None, "model", problems)
    return problems


def test_a_fitting_model_has_no_problems_on_meta_or_cpu() -> None:
    x = torch.zeros(2, 2)
    assert problems_of(lambda: MLP(dim=2), x) == []
    assert problems_of(ReadsValues, x) == []  # meta fails on .item(): run for real on the CPU


def test_wrong_shapes_and_memory_are_reported() -> None:
    x = torch.zeros(2, 2)
    (shape,) = problems_of(lambda: ReadsValues(out=3), x)
    assert shape[0] == "model" and "to (2, 3)" in shape[1]
    (memory,) = problems_of(lambda: MLP(dim=2), x, memory=1000)
    assert "to train with Adam" in memory[1]
