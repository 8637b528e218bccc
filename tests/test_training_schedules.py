"""Learning-rate schedules, EMA arithmetic and which weights the flow holds after training."""

from __future__ import annotations

import math

import pytest
import torch
from training_toys import ShiftCoupling, make_flow, weights_equal

import flowkit as fk
from flowkit.training import EMA, lr_factor
from flowkit.training.optimizers import build_optimizer


def test_constant_and_cosine_factors():
    assert [lr_factor(k, "constant", 10) for k in range(10)] == [1.0] * 10
    assert lr_factor(0, "cosine", 10) == 1.0
    assert lr_factor(5, "cosine", 10) == pytest.approx(0.5)
    assert lr_factor(10, "cosine", 10) == pytest.approx(0.0, abs=1e-15)
    assert lr_factor(9, "cosine", 10) == pytest.approx(0.5 * (1 + math.cos(0.9 * math.pi)))


def test_warmup_is_linear_then_the_schedule():
    warm = [lr_factor(k, "constant", 100, warmup=4) for k in range(6)]
    assert warm == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    # Cosine after warmup: progress counts from the end of warmup over the remaining steps.
    assert lr_factor(4, "cosine", 104, warmup=4) == 1.0
    assert lr_factor(54, "cosine", 104, warmup=4) == pytest.approx(0.5)


def test_history_records_the_lr_of_every_step():
    history = fk.train(
        make_flow(),
        ShiftCoupling(),
        12,
        4,
        lr=0.1,
        lr_schedule="cosine",
        warmup=3,
        seed=0,
        progress=False,
    )
    expected = [0.1 * lr_factor(k, "cosine", 12, warmup=3) for k in range(12)]
    assert history.lrs == pytest.approx(expected, rel=1e-12)
    assert history.lrs[0] == pytest.approx(0.1 / 3)


def test_ema_matches_the_recursion():
    """θ̄_k = β·θ̄_{k−1} + (1 − β)·θ_k, starting from θ̄_0 = θ_0."""
    net = torch.nn.Linear(3, 2)
    ema, beta = EMA(net, decay=0.8), 0.8
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    for step in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p) * (step + 1))
        ema.update(net)
        for k, v in net.state_dict().items():
            expected[k] = beta * expected[k] + (1 - beta) * v
    assert ema.num_updates == 5
    for k, v in expected.items():
        assert torch.allclose(ema.shadow[k], v, atol=1e-6)


def test_ema_of_a_constant_weight_decays_geometrically():
    """With θ fixed after a jump from θ_0: θ̄_k = θ + β^k (θ_0 − θ)."""
    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = EMA(net, decay=0.5)
    with torch.no_grad():
        net.weight.fill_(1.0)
    for _ in range(4):
        ema.update(net)
    assert ema.shadow["weight"].item() == pytest.approx(1 - 0.5**4)


def test_ema_copies_buffers_and_swaps_weights_temporarily():
    net = torch.nn.BatchNorm1d(2)
    ema = EMA(net, decay=0.9)
    net(torch.randn(8, 2) + 5)
    ema.update(net)
    assert torch.equal(ema.shadow["running_mean"], net.running_mean)
    assert torch.equal(ema.shadow["num_batches_tracked"], net.num_batches_tracked)
    raw = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)
    with ema.average_parameters(net):
        assert torch.equal(net.weight, ema.shadow["weight"])
    assert not torch.equal(net.weight, raw["weight"])
    assert torch.equal(net.weight, raw["weight"] + 1.0)


def test_ema_rejects_other_modules_and_bad_decay():
    ema = EMA(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="does not match the EMA shadow"):
        ema.update(torch.nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"decay must be a number in \[0, 1\)"):
        EMA(torch.nn.Linear(2, 2), decay=-0.1)


def test_final_weights_raw_or_ema():
    raw_flow, ema_flow = make_flow(), make_flow()
    raw = fk.train(raw_flow, ShiftCoupling(), 10, 8, ema=0.7, seed=0, progress=False)
    averaged = fk.train(
        ema_flow, ShiftCoupling(), 10, 8, ema=0.7, seed=0, progress=False, final_weights="ema"
    )
    assert raw.flow_weights == "raw" and averaged.flow_weights == "ema"
    assert raw.losses == averaged.losses
    assert not weights_equal(raw_flow, ema_flow)
    raw.ema.copy_to(raw_flow)
    assert weights_equal(raw_flow, ema_flow)


def test_grad_clip_bounds_the_update():
    """With SGD (lr = 1) and clipping at c, one step moves the weights by a norm of at most c."""
    flows = [make_flow(), make_flow()]
    before = torch.cat([p.detach().flatten().clone() for p in flows[0].parameters()])
    for flow, clip in zip(flows, (None, 1e-3), strict=True):
        fk.train(
            flow,
            ShiftCoupling(),
            1,
            16,
            optimizer="sgd",
            lr=1.0,
            grad_clip=clip,
            seed=0,
            progress=False,
        )
    moves = [
        torch.linalg.vector_norm(torch.cat([p.detach().flatten() for p in f.parameters()]) - before)
        for f in flows
    ]
    assert moves[0] > 1e-2
    assert moves[1] == pytest.approx(1e-3, rel=1e-3)


def test_optimizer_specs():
    net = torch.nn.Linear(2, 2)
    adamw = build_optimizer({"name": "adamw", "betas": [0.8, 0.9]}, net.parameters(), 0.01)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["betas"] == (0.8, 0.9)
    assert isinstance(build_optimizer("sgd", net.parameters(), 0.1), torch.optim.SGD)
    with pytest.raises(TypeError, match="optimizer must be a name"):
        build_optimizer(torch.optim.SGD, net.parameters(), 0.1)


@pytest.mark.parametrize(("schedule", "warmup"), [("constant", 0), ("constant", 3), ("cosine", 0)])
def test_scheduler_state_matches_torch_lambda_lr(schedule, warmup) -> None:
    """The constant schedule's step only counts (see ``FlowLR``): its learning rates and state
    dict stay those of torch's ``LambdaLR`` with the same factor, step by step."""
    from functools import partial

    from torch.optim.lr_scheduler import LambdaLR

    from flowkit.training.lr_schedules import build_scheduler

    params = [torch.nn.Parameter(torch.zeros(2))]
    ours_opt = torch.optim.SGD(params, lr=0.5)
    theirs_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.5)
    ours = build_scheduler(ours_opt, schedule, 10, warmup)
    factor = partial(lr_factor, schedule=schedule, total_steps=10, warmup=warmup)
    theirs = LambdaLR(theirs_opt, factor)
    assert ours.constant is (schedule == "constant" and warmup == 0)
    for _ in range(7):
        ours_opt.step()
        theirs_opt.step()
        ours.step()
        theirs.step()
        assert ours_opt.param_groups[0]["lr"] == theirs_opt.param_groups[0]["lr"]
        assert ours.get_last_lr() == theirs.get_last_lr()
    state, expected = ours.state_dict(), theirs.state_dict()
    assert {k: v for k, v in state.items() if k != "lr_lambdas"} == {
        k: v for k, v in expected.items() if k != "lr_lambdas"
    }
