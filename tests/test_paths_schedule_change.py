"""Schedule change of a trained flow (equal-SNR scale-time transform) against adaptive solves."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchdiffeq import odeint

import flowkit as fk
from flowkit.paths import ScheduleChange, equal_snr_time_change
from flowkit.registry import SCHEDULES

EXTRA = {"custom": {"a": lambda t: t * t * (3 - 2 * t), "b": lambda t: 1 - t * t * (3 - 2 * t)}}
TOL = dict(rtol=1e-9, atol=1e-9)


def schedule(name):
    return SCHEDULES.build({"name": name, **EXTRA.get(name, {})})


def solve(field, x, times):
    """dopri5 through ``times``; step_t keeps every evaluation inside [times[0], times[-1]]."""
    times = torch.as_tensor(times, dtype=x.dtype)
    return odeint(
        lambda t, y: field(y, t.expand(y.shape[0])),
        x,
        times,
        method="dopri5",
        options={"step_t": times[-1:]},
        **TOL,
    )


class SmoothField(nn.Module):
    """A fixed random smooth velocity field v(x, t) (a tanh MLP), in float64."""

    def __init__(self, dim: int = 2, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(dim + 1, 32), nn.Tanh(), nn.Linear(32, dim)).double()

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None].expand(-1, 1)], dim=1))


def gaussian_velocity(sched, mu, std):
    """Exact marginal velocity of N(0, I) -> N(mu, diag(std²)) on ``sched`` (independent coupling).

    ``x_t ~ N(a·mu, a²·std² + b²)``, ``v = a'·mu + (a·a'·std² + b·b')/(a²·std² + b²)·(x − a·mu)``.
    """

    def field(x, t):
        t = t[:, None]
        a, b, da, db = sched.a(t), sched.b(t), sched.da(t), sched.db(t)
        return da * mu + (a * da * std**2 + b * db) / (a**2 * std**2 + b**2) * (x - a * mu)

    return field


@pytest.fixture
def x0():
    return torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


# pairs whose time change t'(t) is smooth up to both ends (finite, non-zero dt'/dt), so a field
# that is not the marginal velocity of A still gives a smooth field for B
SMOOTH_PAIRS = [
    ("rectified", "cosine"),
    ("cosine", "rectified"),
    ("linear_vp", "rectified"),
    ("linear_vp", "cosine"),
    ("rectified", "polynomial"),
]


@pytest.mark.parametrize(("src", "dst"), SMOOTH_PAIRS)
def test_same_endpoints_for_a_random_smooth_field(src, dst, x0):
    field = SmoothField()
    reference = solve(field, x0, [0.0, 1.0])[-1]
    changed = solve(ScheduleChange(field, dst, source=src), x0, [0.0, 1.0])[-1]
    # every sample: the per-sample max error is below 1e-6 (solver tolerance 1e-8, eps 1e-5)
    assert (changed - reference).abs().amax(dim=1).max() < 1e-6


@pytest.mark.parametrize("src", ["rectified", "cosine", "vp"])
@pytest.mark.parametrize("dst", SCHEDULES.names())
def test_exact_transform_in_the_interior(src, dst, x0):
    """x^B_t = c(t)·x^A_{t'} along the whole solve, for every pair of schedules."""
    field = SmoothField(seed=3)
    a_sched, b_sched = schedule(src), schedule(dst)
    # start where λ_B lies inside λ_A's range (vp's λ(0) ≈ −10 is finite)
    lowest = b_sched.t_from_log_snr(a_sched.log_snr(torch.zeros((), dtype=torch.float64)))
    t0, t1 = torch.tensor([max(0.05, lowest.item() + 0.02), 0.95], dtype=torch.float64)
    change = equal_snr_time_change(a_sched, b_sched, torch.stack([t0, t1]))
    ta0, ta1 = change.t.tolist()
    xa = solve(field, x0, [0.0, ta0, ta1])
    start, expected = change.scale[0] * xa[1], change.scale[1] * xa[2]
    wrapped = ScheduleChange(field, b_sched, source=a_sched)
    out = solve(wrapped, start, [t0.item(), t1.item()])[-1]
    assert (out - expected).abs().amax(dim=1).max() < 1e-6


@pytest.mark.parametrize("dst", ["cosine", "linear_vp", "polynomial", "rectified"])
def test_gaussian_flow_keeps_its_endpoints(dst, x0):
    """Rectified marginal velocity, wrapped to ``dst``: x0 still goes to mu + std·x0."""
    mu = torch.tensor([1.5, -0.5], dtype=torch.float64)
    std = torch.tensor([0.5, 2.0], dtype=torch.float64)
    field = gaussian_velocity(schedule("rectified"), mu, std)
    wrapped = ScheduleChange(field, dst, source="rectified")
    out = solve(wrapped, x0, [0.0, 1.0])[-1]
    # the wrapped field equals dst's own exact marginal velocity
    t = torch.full((16,), 0.3, dtype=torch.float64)
    own = gaussian_velocity(schedule(dst), mu, std)(x0, t)
    torch.testing.assert_close(wrapped(x0, t), own, rtol=1e-9, atol=1e-9)
    assert (out - (mu + std * x0)).abs().amax(dim=1).max() < 1e-6


@pytest.mark.parametrize(
    ("src", "dst"), [("rectified", "cosine"), ("vp", "edm"), ("cosine", "ldm_linear")]
)
def test_time_change_quantities(src, dst):
    a_s, b_s = schedule(src), schedule(dst)
    t = torch.linspace(0.1, 0.9, 9, dtype=torch.float64)
    ch = equal_snr_time_change(a_s, b_s, t)
    torch.testing.assert_close(a_s.log_snr(ch.t), b_s.log_snr(t))
    torch.testing.assert_close(ch.scale, b_s.a(t) / a_s.a(ch.t))
    torch.testing.assert_close(ch.scale, b_s.b(t) / a_s.b(ch.t))
    h = 1e-6
    up, down = equal_snr_time_change(a_s, b_s, t + h), equal_snr_time_change(a_s, b_s, t - h)
    torch.testing.assert_close(ch.dt, (up.t - down.t) / (2 * h), rtol=1e-5, atol=1e-7)
    dlog = (up.scale.log() - down.scale.log()) / (2 * h)
    torch.testing.assert_close(ch.dlog_scale, dlog, rtol=1e-5, atol=1e-7)


class EchoModel(nn.Module):
    def forward(self, x, t, shift=0.0):
        return x * t[:, None] + shift


def test_wraps_a_flow_and_passes_conditions():
    flow = fk.Flow(EchoModel(), "rectified")
    wrapped = ScheduleChange(flow, "cosine")
    assert wrapped.source_path.schedule.name == "rectified"
    assert wrapped.path.schedule.name == "cosine"
    x, t = torch.randn(4, 2), torch.full((4,), 0.4)
    manual = ScheduleChange(lambda x, t, shift=0.0: flow(x, t, shift=shift), "cosine", "rectified")
    torch.testing.assert_close(wrapped(x, t, shift=1.0), manual(x, t, shift=1.0))
    assert not torch.allclose(wrapped(x, t, shift=1.0), wrapped(x, t))


def test_bad_arguments():
    with pytest.raises(TypeError, match="field must be a Flow or a callable"):
        ScheduleChange(3, "cosine", "rectified")
    with pytest.raises(ValueError, match="source must be given"):
        ScheduleChange(lambda x, t: x, "cosine")
    with pytest.raises(ValueError, match="Did you mean 'cosine'"):
        ScheduleChange(lambda x, t: x, "cosin", "rectified")
