"""Classifier-free guidance wrapper."""

from __future__ import annotations

import torch

import flowkit as fk


class Conditional(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None):
        self.calls.append(x.shape[0])
        base = -x * (1 + t[:, None])
        return base if y is None else base + y


def test_guidance_formula_and_batching() -> None:
    model = Conditional()
    x, t = torch.randn(4, 2), torch.rand(4)
    y, null = torch.randn(4, 2), torch.zeros(4, 2)
    w = 2.5
    expected = model(x, t, y=null) + w * (model(x, t, y=y) - model(x, t, y=null))
    model.calls.clear()
    batched = fk.CFGuidance(model, w, cond={"y": y}, uncond={"y": null})
    torch.testing.assert_close(batched(x, t), expected)
    assert model.calls == [8]
    model.calls.clear()
    split = fk.CFGuidance(model, w, cond={"y": y}, uncond={"y": null}, batched=False)
    torch.testing.assert_close(split(x, t), expected)
    assert model.calls == [4, 4]
    no_label = fk.CFGuidance(model, w, cond={"y": y})
    torch.testing.assert_close(no_label(x, t), model(x, t) + w * y)


def test_scale_one_is_conditional_sampling() -> None:
    model = Conditional()
    x0, y = torch.randn(4, 2), torch.randn(4, 2)
    guided = fk.sample(fk.CFGuidance(model, 1.0, cond={"y": y}), x0, "heun", steps=5)
    plain = fk.sample(model, x0, "heun", steps=5, cond={"y": y})
    torch.testing.assert_close(guided.x, plain.x)
    assert guided.nfe == plain.nfe == 10


def test_guidance_passes_the_flow_path_to_ddim() -> None:
    torch.manual_seed(0)
    flow = fk.Flow(fk.models.build({"name": "mlp", "dim": 2, "hidden": 8, "depth": 1}), "cosine")
    guided = fk.CFGuidance(flow, 0.0)
    x0 = torch.randn(3, 2)
    torch.testing.assert_close(
        fk.sample(guided, x0, "ddim", steps=4).x, fk.sample(flow, x0, "ddim", steps=4).x
    )
