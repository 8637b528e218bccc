"""Eight Gaussians on a circle: ``8gaussians`` and torchcfm's variant (both Gaussian mixtures).

Being :class:`~flowkit.data.gaussian.GaussianMixture` instances, they have an exact ``log_prob``
and work with the exact-marginal oracle.
"""

from __future__ import annotations

import math

import torch

from flowkit.data.gaussian import GaussianMixture
from flowkit.data.toy import check_positive
from flowkit.registry import DISTRIBUTIONS


def circle_centers(radius: float, k: int = 8) -> torch.Tensor:
    """``k`` points ``radius·(cos 2πi/k, sin 2πi/k)``, shape ``(k, 2)`` (float64)."""
    angles = torch.arange(k, dtype=torch.float64) * (2.0 * math.pi / k)
    return radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)


@DISTRIBUTIONS.register("8gaussians")
def eight_gaussians(radius: float = 2.0 * math.sqrt(2.0), std: float = 0.5 / math.sqrt(2.0)):
    """Eight equally weighted isotropic Gaussians on a circle (FFJORD's 8gaussians).

    ``p(x) = (1/8) Σ_k N(x; r·(cos kπ/4, sin kπ/4), s² I)``. The defaults ``r = 4/√2``,
    ``s = 0.5/√2`` are FFJORD's (centres at radius 4 with std 0.5, all divided by √2).
    """
    check_positive(radius, "radius")
    check_positive(std, "std")
    return GaussianMixture(means=circle_centers(radius), std=std)


@DISTRIBUTIONS.register("torchcfm_8gaussians")
def torchcfm_eight_gaussians() -> GaussianMixture:
    """Eight Gaussians distributed exactly as torchcfm.utils.sample_8gaussians.

    torchcfm's ``eight_normal_sample(n, 2, scale=5, var=0.1)`` uses centres at radius 5 and a
    covariance ``sqrt(var)·I``, i.e. a standard deviation of ``0.1**0.25 ≈ 0.562``.
    """
    return GaussianMixture(means=circle_centers(5.0), std=0.1**0.25)
