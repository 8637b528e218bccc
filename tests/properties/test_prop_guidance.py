"""Classifier-free guidance against an exact conditional oracle (per-class Gaussian mixtures).

The target is a labelled Gaussian mixture (a class per component, several components per
class); :class:`~flowkit.data.conditional_oracle.ConditionalExactMarginal` is its exact
conditional field ``u_t(x | c)`` per class and, for the null label, the exact unconditional
field ``u_t(x)``: the model a perfect ``cond_dropout`` training would give. Properties:

* guidance ``w = 1`` is the conditional field and ``w = 0`` the unconditional one (in float64,
  to 1e-12), any ``w`` the combination ``u + w·(u_c − u)``, outside a guidance interval the
  conditional field, at one model call of 2B rows per evaluation; ``fk.sample`` with
  ``guidance=1`` / ``0`` gives exactly the conditional / unconditional samples;
* the conditional flow (``guidance=1``, dopri5) preserves each class's marginal: from source
  samples it reaches, at ``t = 1/2`` and ``t = 1``, the path marginal of that class
  (moments at 5 standard errors and the energy test of :mod:`prop_checks`, N = 1000).
"""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st
from prop_checks import assert_matches
from prop_strategies import covariances, generator, scaled, seeds, unit
from torch import Tensor, nn

import flowkit as fk
from flowkit.data.conditional_oracle import ConditionalExactMarginal
from flowkit.data.gaussian import GaussianMixture

N = 1000
N_REFERENCE = 300
TOL = 1e-6


@st.composite
def labelled_mixtures(draw: st.DrawFn, dim: int) -> GaussianMixture:
    """2–3 classes of 1–2 components each (means in [−3, 3]^d), weights in [0.2, 1]."""
    classes = draw(st.integers(2, 3))
    labels = [c for c in range(classes) for _ in range(draw(st.integers(1, 2)))]
    means = [[draw(unit(-3.0, 3.0)) for _ in range(dim)] for _ in labels]
    weights = [draw(unit(0.2, 1.0)) for _ in labels]
    covs = torch.stack([draw(covariances(dim)) for _ in labels])
    return GaussianMixture(means=means, weights=weights, covariances=covs, labels=labels)


@st.composite
def oracles(draw: st.DrawFn) -> ConditionalExactMarginal:
    """A conditional oracle from N(0, I) to a labelled mixture in 1–3 dimensions."""
    dim = draw(st.integers(1, 3))
    path = draw(st.sampled_from(["rectified", "cosine"]))
    return ConditionalExactMarginal(
        {"name": "gaussian", "dim": dim}, draw(labelled_mixtures(dim)), path
    )


class Counted(nn.Module):
    """The oracle, recording the batch size of every call."""

    def __init__(self, oracle: ConditionalExactMarginal) -> None:
        super().__init__()
        self.oracle, self.num_classes, self.calls = oracle, oracle.num_classes, []

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        self.calls.append(x.shape[0])
        return self.oracle(x, t, y)


@scaled(0.4, minimum=3)
@given(oracle=oracles(), w=unit(-2.0, 6.0), seed=seeds, data=st.data())
def test_guidance_weights_one_and_zero_give_the_conditional_and_unconditional_fields(
    oracle: ConditionalExactMarginal, w: float, seed: int, data: st.DataObject
) -> None:
    g = generator(seed)
    b, dim = 16, oracle.unconditional.source.dim
    t = torch.rand(b, generator=g, dtype=torch.float64) * 0.98 + 0.01
    x = oracle.unconditional.sample(b, t, generator=g).double()
    y = torch.randint(oracle.num_classes, (b,), generator=g)
    model = Counted(oracle)
    v_cond, v_null = oracle(x, t, y), oracle.unconditional(x, t)
    for scale, expected in ((1.0, v_cond), (0.0, v_null), (w, v_null + w * (v_cond - v_null))):
        model.calls.clear()
        got = fk.CFGuidance(model, scale, cond={"y": y})(x, t)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
        assert model.calls == [2 * b], "one batched call of conditional and null rows"
    lo, hi = sorted(data.draw(st.tuples(unit(), unit()), label="interval"))
    inside = ((t >= lo) & (t <= hi))[:, None]
    got = fk.CFGuidance(model, w, cond={"y": y}, interval=(lo, hi))(x, t)
    torch.testing.assert_close(got, torch.where(inside, v_null + w * (v_cond - v_null), v_cond))
    assert x.shape == (b, dim)

    x0 = torch.randn(b, dim, generator=g, dtype=torch.float64)
    plain = fk.sample(oracle, x0, "heun", steps=4, cond={"y": y})
    model.calls.clear()
    guided = fk.sample(model, x0, "heun", steps=4, cond={"y": y}, guidance=1.0)
    torch.testing.assert_close(guided.x, plain.x, rtol=1e-12, atol=1e-12)
    assert guided.nfe == plain.nfe == len(model.calls) == 8
    unguided = fk.sample(oracle.unconditional, x0, "heun", steps=4)
    null = fk.sample(model, x0, "heun", steps=4, cond={"y": y}, guidance=0.0)
    torch.testing.assert_close(null.x, unguided.x, rtol=1e-12, atol=1e-12)


def path_moments(oracle: ConditionalExactMarginal, label: int, t: float) -> tuple[Tensor, Tensor]:
    """Mean and covariance of class ``label``'s path marginal at ``t`` (independent ends)."""
    field = oracle.field(label)
    t64 = torch.tensor(t, dtype=torch.float64)
    a, b = field.path.a(t64), field.path.b(t64)
    src, tgt = field.source, field.target
    return a * tgt.mean() + b * src.mean(), a**2 * tgt.covariance() + b**2 * src.covariance()


@scaled(0.08, minimum=2)
@given(oracle=oracles(), seed=seeds)
def test_the_conditional_flow_preserves_each_class_marginal(
    oracle: ConditionalExactMarginal, seed: int
) -> None:
    g = generator(seed)
    dim = oracle.unconditional.source.dim
    for label in range(oracle.num_classes):
        field = oracle.field(label)
        x = torch.randn(N, dim, generator=g, dtype=torch.float64)
        y = torch.full((N,), label)
        for k, (t0, t1) in enumerate(((0.0, 0.5), (0.5, 1.0))):
            x = fk.sample(
                oracle,
                x,
                "dopri5",
                t_start=t0,
                t_end=t1,
                cond={"y": y},
                guidance=1.0,
                rtol=TOL,
                atol=TOL,
            ).x
            mean, cov = path_moments(oracle, label, t1)
            reference = (
                field.target.sample(N_REFERENCE, generator=g)
                if t1 == 1.0
                else field.sample(N_REFERENCE, t1, generator=g)
            ).double()
            assert_matches(x, mean, cov, reference, seed + k, f"class {label}, t = {t1}")
