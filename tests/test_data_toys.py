"""2-D toys, torchcfm-equivalent variants and the digits dataset."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

import flowkit as fk
from flowkit.data import digits as digits_module


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def unshift_moons(x: torch.Tensor) -> torch.Tensor:
    """Undo the default scale 2 and shift −(0.5, 0.25): back to make_moons coordinates."""
    return x / 2.0 + torch.tensor([0.5, 0.25])


def test_noiseless_moons_lie_on_the_two_half_circles() -> None:
    x = unshift_moons(fk.data.build({"name": "moons", "noise": 0.0}).sample(2000, generator=gen()))
    upper = (x - torch.tensor([0.0, 0.0])).norm(dim=1)
    lower = (x - torch.tensor([1.0, 0.5])).norm(dim=1)
    on_upper = ((upper - 1).abs() < 1e-5) & (x[:, 1] >= -1e-6)
    on_lower = ((lower - 1).abs() < 1e-5) & (x[:, 1] <= 0.5 + 1e-6)
    assert (on_upper | on_lower).all()
    # Each moon with probability 1/2: binomial SE sqrt(0.25/n); 5 SE.
    assert abs(on_upper.float().mean().item() - 0.5) < 5 * math.sqrt(0.25 / 2000)


def test_moons_mean_and_bounding_box_after_shift_and_scale() -> None:
    clean = fk.data.build({"name": "moons", "noise": 0.0}).sample(5000, generator=gen())
    assert clean[:, 0].min() >= -3 - 1e-5 and clean[:, 0].max() <= 3 + 1e-5
    assert clean[:, 1].min() >= -1.5 - 1e-5 and clean[:, 1].max() <= 1.5 + 1e-5
    assert clean[:, 0].min() < -2.99 and clean[:, 1].max() > 1.49
    x = fk.data.build("moons").sample(20_000, generator=gen(1)).double()
    # Noiseless mean is exactly 0 (outer moon mean (0, 2/π), inner (1, 1/2 − 2/π), then shifted);
    # per-axis std is below 2; 5 SE.
    assert x.mean(0).abs().max() < 5 * 2 / math.sqrt(20_000)
    # The residual to the nearest circle is the noise: std 0.05 before scaling (a slight
    # overestimate near the moon tips, where both circles are far).
    u = unshift_moons(x.float())
    dist = torch.minimum(
        (u.norm(dim=1) - 1).abs(), ((u - torch.tensor([1.0, 0.5])).norm(dim=1) - 1).abs()
    )
    assert 0.03 < dist.pow(2).mean().sqrt().item() < 0.06


def test_circle_radius_and_symmetry() -> None:
    x = fk.data.build({"name": "circle", "noise": 0.0}).sample(4000, generator=gen())
    assert torch.allclose(x.norm(dim=1), torch.ones(4000), atol=1e-5)
    # Upper/lower halves equally likely: binomial SE; 5 SE.
    assert abs((x[:, 1] > 0).float().mean().item() - 0.5) < 5 * math.sqrt(0.25 / 4000)
    noisy = fk.data.build("circle").sample(20_000, generator=gen()).double()
    # Radial residual variance ≈ noise² = 0.01 (plus O(noise⁴)); loose 10% band.
    assert abs((noisy.norm(dim=1) - 1).pow(2).mean().item() - 0.01) < 0.001


def test_checkerboard_density_integrates_to_one_and_covers_dark_squares() -> None:
    board = fk.data.build("checkerboard")
    x = board.sample(16_000, generator=gen())
    assert torch.isfinite(board.log_prob(x)).all()
    h = 0.02
    grid = torch.arange(-4.5 + h / 2, 4.5, h)
    pts = torch.cartesian_prod(grid, grid)
    assert abs(board.log_prob(pts).exp().sum().item() * h * h - 1.0) < 1e-3
    cells = torch.floor(x / 2).long() + 2
    counts = torch.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16).double()
    dark = torch.tensor([(i + j) % 2 == 0 for i in range(4) for j in range(4)])
    assert counts[~dark].sum() == 0
    # Chi-square with 7 degrees of freedom over the 8 dark squares; 99.9% quantile ≈ 24.3.
    expected = 16_000 / 8
    assert ((counts[dark] - expected) ** 2 / expected).sum() < 24.3


def test_scurve_lies_on_the_s_curve() -> None:
    x = fk.data.build({"name": "scurve", "noise": 0.0}).sample(2000, generator=gen())
    # x = sin s, |z| = 1 − cos s  =>  x² + (|z| − 1)² = 1.
    assert torch.allclose(x[:, 0] ** 2 + (x[:, 1].abs() - 1) ** 2, torch.ones(2000), atol=1e-5)
    assert x[:, 1].min() < -1.99 and x[:, 1].max() > 1.99


def test_spirals_are_point_symmetric() -> None:
    spirals = fk.data.build("spirals")
    x = spirals.sample(800, generator=gen())
    y = -spirals.sample(800, generator=gen(1))
    assert fk.metrics.energy_test(x, y, permutations=200, generator=gen(2)) > 0.01
    clean = fk.data.build({"name": "spirals", "noise": 0.0}).sample(2000, generator=gen())
    assert clean.norm(dim=1).max() <= (3 * math.pi + 0.5 * math.sqrt(2)) / 3 + 1e-5


def test_pinwheel_is_invariant_to_its_rotation_only() -> None:
    pin = fk.data.build("pinwheel")

    def rotate(x: torch.Tensor, angle: float) -> torch.Tensor:
        c, s = math.cos(angle), math.sin(angle)
        return x @ torch.tensor([[c, s], [-s, c]])

    x = pin.sample(800, generator=gen())
    y = pin.sample(800, generator=gen(1))
    assert fk.metrics.energy_test(x, rotate(y, 2 * math.pi / 5), generator=gen(2)) > 0.01
    assert fk.metrics.energy_test(x, rotate(y, math.pi / 5), generator=gen(2)) < 0.01


def test_torchcfm_8gaussians_matches_torchcfm() -> None:
    import torchcfm.utils as utils

    torch.manual_seed(0)
    ref = utils.sample_8gaussians(1000)
    ours = fk.data.build("torchcfm_8gaussians").sample(1000, generator=gen())
    # Covariance sqrt(0.1)·I around radius-5 centres: per-axis variance 12.5 + 0.316.
    assert ((ours.double().var(0) - 12.816).abs() < 5 * math.sqrt(2 * 12.816**2 / 1000)).all()
    assert fk.metrics.energy_test(ours, ref, permutations=200, generator=gen(1)) > 0.01
    assert (
        fk.metrics.energy_test(
            fk.data.build("8gaussians").sample(1000, generator=gen()), ref, generator=gen(1)
        )
        < 0.01
    )


def test_torchcfm_moons_matches_torchcfm() -> None:
    import torchcfm.utils as utils

    np.random.seed(0)
    ref = utils.sample_moons(1000)
    ours = fk.data.build("torchcfm_moons").sample(1000, generator=gen())
    ref_mean = torch.tensor([0.5, 0.25]) * 3 - 1 + 0.3
    # Per-axis std below 3; 5 SE.
    assert (ours.mean(0) - ref_mean).abs().max() < 5 * 3 / math.sqrt(1000)
    assert fk.metrics.energy_test(ours, ref, permutations=200, generator=gen(1)) > 0.01
    moons = fk.data.build("moons").sample(1000, generator=gen())
    assert fk.metrics.energy_test(moons, ref, generator=gen(1)) < 0.01


def test_torchcfm_moons_are_torchdyn_grids() -> None:
    # torchdyn's generate_moons puts the points of a set on a fixed grid of angles; the set's
    # only randomness is one uniform offset per point (and, here, the row order).
    import torchcfm.utils as utils
    import torchdyn.datasets.static_datasets as static

    from flowkit.data.moons import torchdyn_moon_grid

    for n in (1, 2, 7, 256):
        ref, _ = static.generate_moons(n, noise=None)
        assert torch.allclose(torchdyn_moon_grid(n), ref, atol=1e-6)
    np.random.seed(0)
    theirs = torch.stack([utils.sample_moons(100).mean(0) for _ in range(300)])
    ours = torch.stack(
        [fk.data.build("torchcfm_moons").sample(100, generator=gen(i)).mean(0) for i in range(300)]
    )
    # The batch mean varies only through the offsets: std 3·0.2/√12/√100 ≈ 0.017 per axis
    # (i.i.d. angles would give about 0.26 and 0.15). 300 batches: the std is known to ±10 %.
    expected = 3 * 0.2 / math.sqrt(12) / math.sqrt(100)
    assert torch.allclose(theirs.std(0), torch.full((2,), expected), rtol=0.25)
    assert torch.allclose(ours.std(0), torch.full((2,), expected), rtol=0.25)


def test_digits_images_labels_and_range() -> None:
    from sklearn.datasets import load_digits

    d = fk.data.build({"name": "digits", "conditional": True})
    x, cond = d.sample_conditional(64, generator=gen())
    assert x.shape == (64, 1, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert x.min() == -1 and x.max() == 1
    images = torch.as_tensor(load_digits().images, dtype=torch.float32) / 8 - 1
    targets = torch.as_tensor(load_digits().target)
    for image, label in zip(x, cond["y"], strict=True):
        match = (images == image[0]).flatten(1).all(1)
        assert match.any() and (targets[match] == label).all()
    plain = fk.data.build("digits")
    assert plain.sample_conditional(4, generator=gen())[1] == {}
    assert torch.equal(plain.sample(4, generator=gen()), d.sample(4, generator=gen()))


def test_digits_class_filter_and_uniform_resampling() -> None:
    d = fk.data.build({"name": "digits", "classes": [3, 7]})
    _, labels = d.sample_with_labels(4000, generator=gen())
    assert set(labels.tolist()) == {3, 7}
    # Draws are uniform over the images: P(label 3) = N3 / (N3 + N7); 5 binomial SE.
    p3 = (d.labels == 3).double().mean().item()
    assert abs((labels == 3).double().mean().item() - p3) < 5 * math.sqrt(p3 * (1 - p3) / 4000)
    with pytest.raises(ValueError, match="classes must be"):
        fk.data.build({"name": "digits", "classes": [10]})


def test_digits_without_sklearn_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    digits_module.load_digits_tensors.cache_clear()
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    try:
        with pytest.raises(ImportError, match=r"pip install flowkit\[digits\]"):
            fk.data.build("digits")
    finally:
        digits_module.load_digits_tensors.cache_clear()


def test_stratified_moons_spread_evenly_with_the_same_distribution() -> None:
    spec = {"name": "moons", "noise": 0.0, "stratified": True}
    x = unshift_moons(fk.data.build(spec).sample(2000, generator=gen()))
    upper = (x.norm(dim=1) - 1).abs() < 1e-5
    assert upper.sum() == 1000
    theta_upper = torch.atan2(x[upper, 1], x[upper, 0])
    lower = x[~upper] - torch.tensor([1.0, 0.5])
    theta_lower = torch.atan2(-lower[:, 1], -lower[:, 0])
    for theta in (theta_upper, theta_lower):
        bins = torch.clamp((theta / math.pi * 1000).floor().long(), 0, 999)
        assert torch.equal(torch.bincount(bins, minlength=1000), torch.ones(1000, dtype=torch.long))
    # The moon of a single point is still random.
    single = fk.data.build(spec)
    points = torch.cat([unshift_moons(single.sample(1, generator=gen(s))) for s in range(20)])
    moons_of_one = set(((points.norm(dim=1) - 1).abs() < 1e-5).tolist())
    assert moons_of_one == {True, False}
    strat = fk.data.build({"name": "moons", "stratified": True}).sample(1000, generator=gen())
    iid = fk.data.build("moons").sample(1000, generator=gen(1))
    assert fk.metrics.energy_test(strat, iid, permutations=200, generator=gen(2)) > 0.01
