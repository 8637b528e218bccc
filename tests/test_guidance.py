"""Classifier-free guidance wrapper."""

from __future__ import annotations

import pytest
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
    no_label = fk.CFGuidance(model, w, cond={"y": y}, uncond={})
    torch.testing.assert_close(no_label(x, t), model(x, t) + w * y)


def test_scale_one_is_conditional_sampling() -> None:
    model = Conditional()
    x0, y = torch.randn(4, 2), torch.randn(4, 2)
    guided = fk.sample(fk.CFGuidance(model, 1.0, cond={"y": y}, uncond={}), x0, "heun", steps=5)
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


class Labelled(torch.nn.Module):
    """A small class-conditional model (labels 0..2, null label 3) for tokens ``(B, N, D)`` or
    points ``(B, D)``; per-token times ``(B, N)`` are accepted. Records its batch sizes."""

    num_classes = 3

    def __init__(self, dim: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(4, dim)
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        t = t.reshape(*t.shape, *([1] * (x.ndim - t.ndim)))
        e = self.embed(y).reshape(x.shape[0], *([1] * (x.ndim - 2)), x.shape[-1])
        return -x * (1 + t) + e * torch.cos(3 * t)


def two_call_reference(model: Labelled, y: torch.Tensor, w: float, interval=None):
    """Guidance written out with two separate model calls (what the batched call must equal)."""
    null = torch.full_like(y, model.num_classes)

    def field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v_c, v_u = model(x, t, y), model(x, t, null)
        scale = w
        if interval is not None:
            inside = (t >= interval[0]) & (t <= interval[1])
            scale = torch.where(inside, w, 1.0).reshape(*t.shape, *([1] * (x.ndim - t.ndim)))
        return v_u + scale * (v_c - v_u)

    return field


ADAPTIVE = {"rtol": 1e-3, "atol": 1e-3}
SOLVER_OPTIONS = {name: ADAPTIVE for name in ("dopri5", "bosh3", "adaptive_heun", "dopri8")}


@pytest.mark.parametrize("solver", fk.solvers.names())
def test_guidance_composes_with_every_solver_at_one_batched_call(solver: str) -> None:
    model = Labelled()
    flow = fk.Flow(model, "rectified")
    x0 = torch.randn(5, 2, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 1, 0])
    kw = SOLVER_OPTIONS.get(solver, {"steps": 4})

    model.calls.clear()
    got = fk.sample(
        flow,
        x0,
        solver,
        cond={"y": y},
        guidance=2.5,
        guidance_interval=(0.3, 0.7),
        generator=torch.Generator().manual_seed(2),
        **kw,
    )
    assert got.nfe == len(model.calls) and set(model.calls) == {10}
    ref_field = two_call_reference(model, y, 2.5, (0.3, 0.7))
    guided = fk.CFGuidance(flow, 2.5, cond={"y": y}, interval=(0.3, 0.7))
    x, t = torch.randn(5, 2), torch.rand(5)
    torch.testing.assert_close(guided(x, t), ref_field(x, t))
    ref = fk.sample(guided, x0, solver, generator=torch.Generator().manual_seed(2), **kw)
    torch.testing.assert_close(got.x, ref.x, rtol=0, atol=0)


def test_guidance_in_sample_equals_the_two_call_formula() -> None:
    model = Labelled()
    x0, y = torch.randn(5, 2), torch.tensor([0, 1, 2, 1, 0])
    got = fk.sample(model, x0, "rk4", steps=6, cond={"y": y}, guidance=3.0)
    ref = fk.sample(two_call_reference(model, y, 3.0), x0, "rk4", steps=6)
    torch.testing.assert_close(got.x, ref.x)
    inside = fk.sample(
        model, x0, "rk4", steps=6, cond={"y": y}, guidance=3.0, guidance_interval=(0.25, 0.6)
    )
    ref = fk.sample(two_call_reference(model, y, 3.0, (0.25, 0.6)), x0, "rk4", steps=6)
    torch.testing.assert_close(inside.x, ref.x)
    assert not torch.allclose(inside.x, got.x)
    everywhere = fk.sample(
        model, x0, "rk4", steps=6, cond={"y": y}, guidance=3.0, guidance_interval=(0.0, 1.0)
    )
    torch.testing.assert_close(everywhere.x, got.x, rtol=0, atol=0)


def test_guidance_with_the_conditioning_mask_and_the_step_wise_scheduler() -> None:
    model = Labelled(dim=3)
    x0 = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([2, 0])
    mask = torch.tensor([[0.0, 1.0, 0.4, 0.0], [0.7, 0.0, 0.0, 1.0]])
    got = fk.sample(
        model,
        x0,
        "euler",
        steps=5,
        cond={"y": y},
        guidance=2.0,
        guidance_interval=(0.1, 0.5),
        conditioning_mask=mask,
    )
    ref = fk.sample(
        two_call_reference(model, y, 2.0, (0.1, 0.5)), x0, "euler", steps=5, conditioning_mask=mask
    )
    torch.testing.assert_close(got.x, ref.x, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.x[mask == 1.0], x0[mask == 1.0], rtol=0, atol=0)

    sched = fk.solvers.FlowScheduler()
    sched.set_timesteps(5)
    guided = fk.CFGuidance(model, 2.0, cond={"y": y}, interval=(0.1, 0.5))
    x = x0
    model.calls.clear()
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(guided(x, sched.model_times(t, x, mask)), t, x, conditioning_mask=mask)
    assert model.calls == [4] * 5
    torch.testing.assert_close(x, got.x, rtol=0, atol=1e-6)


def test_continuous_conditions_use_the_zero_vector_as_null() -> None:
    calls = []

    def field(x, t, c):
        calls.append(c.clone())
        return c - x

    x0, c = torch.zeros(3, 2), torch.ones(3, 2)
    sol = fk.sample(field, x0, "euler", steps=1, cond={"c": c}, guidance=2.0)
    torch.testing.assert_close(calls[0], torch.cat([c, torch.zeros_like(c)]))
    torch.testing.assert_close(sol.x, 2.0 * c)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"guidance": 2.0}, "guidance is 2.0 but there are no conditions"),
        ({"guidance": float("nan"), "cond": "y"}, "guidance must be a number, got nan"),
        ({"guidance": "strong", "cond": "y"}, "guidance must be a number"),
        ({"guidance_interval": (0.2, 0.8), "cond": "y"}, "guidance_interval needs guidance"),
        ({"guidance": 2.0, "guidance_interval": (0.8, 0.2), "cond": "y"}, "t_lo <= t_hi"),
        (
            {"guidance": 2.0, "guidance_interval": (0.2, 1.5), "cond": "y"},
            r"guidance_interval\[1\] must be a number in \[0, 1\], got 1.5",
        ),
        ({"guidance": 2.0, "guidance_interval": 0.5, "cond": "y"}, "two times"),
        ({"guidance": 2.0, "cond": "z"}, "cond\\['z'\\] has no null value"),
        ({"guidance": 2.0, "cond": "y", "model": "plain"}, "no num_classes attribute"),
    ],
)
def test_guidance_errors(kwargs: dict, match: str) -> None:
    model = Labelled() if kwargs.pop("model", None) is None else Conditional()
    key = kwargs.pop("cond", None)
    if key is not None:
        kwargs["cond"] = {key: torch.zeros(3, dtype=torch.long)}
    with pytest.raises(ValueError, match=match):
        fk.sample(model, torch.zeros(3, 2), "euler", steps=2, **kwargs)


def test_cfguidance_errors() -> None:
    with pytest.raises(ValueError, match="scale must be a number, got inf"):
        fk.CFGuidance(Labelled(), float("inf"), cond={"y": torch.zeros(2, dtype=torch.long)})


def test_guidance_of_an_epsilon_model_equals_guidance_of_its_epsilon() -> None:
    """Converting an epsilon prediction to a velocity is affine with the same coefficients for
    both branches, so guiding velocities equals guiding the epsilons (the docs' claim)."""
    model = Labelled()
    flow = fk.Flow(model, "cosine", prediction="epsilon")
    x, t, y = torch.randn(5, 2), torch.rand(5) * 0.9 + 0.05, torch.tensor([0, 1, 2, 1, 0])
    null = torch.full_like(y, 3)
    eps = torch.lerp(model(x, t, null), model(x, t, y), 2.5)
    expected = flow.path.convert(eps, src="epsilon", dst="velocity", x_t=x, t=t)
    got = fk.CFGuidance(flow, 2.5, cond={"y": y})(x, t)
    torch.testing.assert_close(got, expected)
