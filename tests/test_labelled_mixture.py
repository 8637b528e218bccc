"""Labelled Gaussian mixtures (a class per component) and the exact conditional oracle: labels
follow the components, class mixtures renormalise, and bad input is refused clearly."""

from __future__ import annotations

import pytest
import torch
from conditional_toys import TARGET

import flowkit as fk
from flowkit.data.conditional_oracle import ConditionalExactMarginal

MEANS = [[-2.0, 0.0], [2.0, 0.0], [0.0, 3.0]]


def test_samples_carry_the_label_of_their_component() -> None:
    mix = fk.data.build(
        {"name": "gaussian_mixture", "means": MEANS, "labels": [0, 1, 0], "std": 0.01}
    )
    assert mix.num_classes == 2
    x, cond = mix.sample_conditional(500, generator=torch.Generator().manual_seed(0))
    nearest = torch.cdist(x, torch.tensor(MEANS)).argmin(1)
    assert torch.equal(cond["y"], torch.tensor([0, 1, 0])[nearest])
    class0 = mix.class_mixture(0)
    torch.testing.assert_close(
        class0.means, torch.tensor([MEANS[0], MEANS[2]], dtype=torch.float64)
    )
    torch.testing.assert_close(class0.weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    unlabelled = fk.data.build({"name": "gaussian_mixture", "means": MEANS})
    assert unlabelled.sample_conditional(3)[1] == {} and unlabelled.num_classes is None


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        ([0, 1], "one integer class per component"),
        ([0.5, 1, 1], "one integer class per component"),
        ([True, False, True], "one integer class per component"),
        ("abc", "one integer class per component"),
        ([0, 2, 2], "cover the classes 0 .. C-1 without gaps"),
        ([-1, 0, 1], "cover the classes 0 .. C-1 without gaps"),
    ],
)
def test_bad_labels_are_refused(labels, match) -> None:
    with pytest.raises(ValueError, match=match):
        fk.data.build({"name": "gaussian_mixture", "means": MEANS, "labels": labels})


def test_oracle_errors() -> None:
    with pytest.raises(ValueError, match="class_mixture needs a labelled mixture"):
        fk.data.build({"name": "gaussian_mixture", "means": MEANS}).class_mixture(0)
    with pytest.raises(ValueError, match="target must be a labelled mixture"):
        ConditionalExactMarginal("gaussian", {"name": "gaussian_mixture", "means": MEANS})
    oracle = ConditionalExactMarginal("gaussian", TARGET)
    x, t = torch.zeros(2, 2), torch.full((2,), 0.5)
    with pytest.raises(ValueError, match=r"labels must lie in 0 \.\. 3"):
        oracle(x, t, y=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="y must be integer labels of shape"):
        oracle(x, t, y=torch.zeros(2))
