"""Gaussian and Gaussian-mixture distributions with exact ``log_prob`` (any dimension).

Both are :class:`GaussianMixture` instances (a Gaussian is a one-component mixture), which is
what the exact-marginal oracle (:mod:`flowkit.data.oracle`) accepts as source and target.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import torch
from einops import einsum
from torch import Tensor

from flowkit.data.base import Distribution, check_num_samples, generator_device
from flowkit.data.gaussian_math import (
    DTYPE,
    as_covariance,
    as_vector,
    cholesky,
    infer_dim,
    mvn_log_density,
)
from flowkit.registry import DISTRIBUTIONS

SOBOL_MAX_DIM = torch.quasirandom.SobolEngine.MAXDIM


class GaussianMixture(Distribution):
    """Mixture ``p(x) = Σ_k w_k N(x; μ_k, Σ_k)`` in ``R^d``.

    Parameters are stored in float64; samples come out in the default dtype.

    Args:
        weights: mixture weights ``(K,)``, non-negative with a positive sum (normalised here);
            None for uniform weights.
        means: component means ``(K, d)``.
        covariances: per component a scalar variance, a length-``d`` vector of variances or a
            ``d×d`` matrix (a list may mix these forms; a tensor has shape ``(K,)``, ``(K, d)`` or
            ``(K, d, d)``); a single scalar applies to every component. None: identity (or
            ``std``).
        std: alternative to ``covariances``: one standard deviation for all components, or one
            per component ``(K,)`` (isotropic).
        labels: a class label per component ``(K,)`` covering ``0 .. C−1`` (several components
            may share a class): a labelled mixture, whose :meth:`sample_conditional` returns
            the label of each sample's component as ``{"y": labels}``; class ``c`` is the
            mixture :meth:`class_mixture` ``(c)``. None: unlabelled.

    Attributes:
        weights, means, covariances, chol: float64 tensors ``(K,)``, ``(K, d)``, ``(K, d, d)``,
            ``(K, d, d)`` (Cholesky factors).
        labels: long tensor ``(K,)`` or None; num_classes: ``C`` (None when unlabelled).

    Example:
        >>> import torch, flowkit as fk
        >>> mix = fk.data.build({"name": "gaussian_mixture", "means": [[-2, 0], [2, 0]],
        ...                      "std": 0.5})
        >>> x = mix.sample(4, generator=torch.Generator().manual_seed(0))
        >>> mix.log_prob(x).shape
        torch.Size([4])
    """

    has_log_prob = True

    def __init__(
        self,
        means: Any,
        weights: Any = None,
        covariances: Any = None,
        std: Any = None,
        labels: Any = None,
    ) -> None:
        mu = torch.as_tensor(means, dtype=DTYPE)
        if mu.ndim != 2 or mu.shape[0] < 1 or mu.shape[1] < 1:
            raise ValueError(f"means must have shape (K, d) with K, d >= 1; got {means!r}")
        if not torch.isfinite(mu).all():
            raise ValueError(f"means must be finite; got {means!r}")
        k, d = mu.shape
        w = torch.ones(k, dtype=DTYPE) if weights is None else as_vector(weights, k, "weights")
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be non-negative with a positive sum; got {weights!r}")
        self.weights = w / w.sum()
        self.means = mu
        self.covariances = torch.stack(
            [
                as_covariance(c, s, d, f"covariances[{i}]")
                for i, (c, s) in enumerate(
                    zip(_per_component(covariances, k), _per_component(std, k), strict=True)
                )
            ]
        )
        self.chol = cholesky(self.covariances, "covariances")
        self.event_shape = (d,)
        self.labels = None if labels is None else component_labels(labels, k)
        self.num_classes = None if labels is None else int(self.labels.max()) + 1

    def sample_conditional(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Samples and, for a labelled mixture, ``{"y": the label of each one's component}``."""
        x, comp = self.sample_with_components(n, generator)
        return x, ({} if self.labels is None else {"y": self.labels.to(comp.device)[comp]})

    def class_mixture(self, label: int) -> GaussianMixture:
        """The mixture of class ``label``: its components, weights renormalised."""
        if self.labels is None:
            raise ValueError("class_mixture needs a labelled mixture (labels=...)")
        keep = self.labels == label
        return GaussianMixture(
            self.means[keep], weights=self.weights[keep], covariances=self.covariances[keep]
        )

    @property
    def dim(self) -> int:
        """Dimension ``d``."""
        return self.event_shape[0]

    @property
    def num_components(self) -> int:
        """Number of components ``K``."""
        return self.weights.shape[0]

    def mean(self) -> Tensor:
        """Mixture mean ``Σ_k w_k μ_k`` (float64)."""
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """Mixture covariance ``Σ_k w_k (Σ_k + μ_k μ_kᵀ) − m mᵀ`` (float64)."""
        second = self.covariances + einsum(self.means, self.means, "k i, k j -> k i j")
        m = self.mean()
        return einsum(self.weights, second, "k, k i j -> i j") - torch.outer(m, m)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``k ~ Categorical(w)``, ``x = μ_k + L_k z`` with ``z ~ N(0, I)``; shape ``(n, d)``."""
        return self.sample_with_components(n, generator)[0]

    def sample_with_components(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Samples ``(n, d)`` and the index of the component each came from ``(n,)``."""
        n = check_num_samples(n)
        device = generator_device(generator)
        if n == 0:
            empty = torch.empty(0, self.dim, device=device)
            return empty, torch.empty(0, dtype=torch.long, device=device)
        comp = torch.multinomial(self.weights.to(device), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=DTYPE, device=device, generator=generator)
        x = self.means.to(device)[comp] + self.correlate(z, comp)
        return x.to(torch.get_default_dtype()), comp

    @cached_property
    def diagonal_factors(self) -> Tensor | None:
        """The diagonals ``(K, d)`` of the Cholesky factors when they are all diagonal, else
        None."""
        diagonal = torch.diagonal(self.chol, dim1=-2, dim2=-1)
        return diagonal if torch.equal(self.chol, torch.diag_embed(diagonal)) else None

    def correlate(self, z: Tensor, comp: Tensor) -> Tensor:
        """``L_k z`` for every row, ``k`` its component: one product per component (a
        diagonal ``L`` scales), never a gather of ``(n, d, d)`` factors (2.4 GB for 32 images
        of 3×32×32)."""
        diagonal = self.diagonal_factors
        if diagonal is not None:
            return z * diagonal.to(z.device)[comp]
        chol = self.chol.to(z.device)
        out = torch.empty_like(z)
        for k in comp.unique().tolist():
            rows = comp == k
            out[rows] = z[rows] @ chol[k].T
        return out

    def component_log_prob(self, x: Tensor) -> Tensor:
        """``log w_k + log N(x; μ_k, Σ_k)`` for every component, shape ``(B, K)`` (float64)."""
        self.check_event(x)
        x64 = x.to(DTYPE)
        diff = x64.unsqueeze(-2) - self.means.to(x.device)
        log_density, _ = mvn_log_density(diff, self.chol.to(x.device))
        return log_density + torch.log(self.weights.to(x.device))

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x) = logsumexp_k (log w_k + log N(x; μ_k, Σ_k))``, shape ``(B,)``."""
        return torch.logsumexp(self.component_log_prob(x), dim=-1).to(x.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(K={self.num_components}, d={self.dim})"


class Gaussian(GaussianMixture):
    """Multivariate normal ``N(μ, Σ)``: a one-component :class:`GaussianMixture`.

    Args:
        mean: the mean ``(d,)`` or a scalar (repeated); None: zero.
        cov: a scalar variance, a vector of variances or a ``d×d`` matrix; None: identity.
        std: alternative to ``cov``: a scalar or per-axis standard deviation.
        dim: the dimension ``d``; by default the length of ``mean``/``cov``/``std``, else 2.
        quasi_random: draw each set as a randomised quasi-Monte Carlo set instead of i.i.d.:
            ``x = μ + L·Φ⁻¹(u)`` with ``u`` the first ``n`` points of a scrambled Sobol sequence
            (scrambling seeded from ``generator``). Each point is still ``N(μ, Σ)``-distributed,
            but a set covers the distribution far more evenly, so metrics computed on samples
            pushed through a smooth map (e.g. a flow's W2 against a reference set) carry much
            less sampling noise. Sets of the same call are not independent points: use it for
            evaluation, not for training batches (d ≤ 21201).

    Example:
        >>> import flowkit as fk
        >>> g = fk.data.build({"name": "gaussian", "dim": 3, "std": 2.0})
        >>> g.covariances[0].diag().tolist()
        [4.0, 4.0, 4.0]
    """

    def __init__(
        self,
        dim: int | None = None,
        mean: Any = None,
        cov: Any = None,
        std: Any = None,
        quasi_random: bool = False,
    ) -> None:
        if not isinstance(quasi_random, bool):
            raise TypeError(f"quasi_random must be a bool; got {quasi_random!r}")
        self.quasi_random = quasi_random
        if dim is None:
            dim = infer_dim(mean, infer_dim(cov, infer_dim(std, 2)))
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer; got {dim!r}")
        if quasi_random and dim > SOBOL_MAX_DIM:
            raise ValueError(
                f"quasi_random=True supports dim <= {SOBOL_MAX_DIM} (torch's SobolEngine); "
                f"got dim={dim}"
            )
        mu = torch.zeros(dim, dtype=DTYPE) if mean is None else as_vector(mean, dim, "mean")
        super().__init__(mu.unsqueeze(0), covariances=as_covariance(cov, std, dim, "cov")[None])

    def sample_with_components(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Samples ``(n, d)`` (quasi-random with ``quasi_random``) and component indices (0)."""
        n = check_num_samples(n)
        if not self.quasi_random or n == 0:
            return super().sample_with_components(n, generator)
        device = generator_device(generator)
        z = sobol_normal(n, self.dim, generator).to(device)
        x = self.means[0].to(device) + z @ self.chol[0].to(device).T
        return x.to(torch.get_default_dtype()), torch.zeros(n, dtype=torch.long, device=device)

    def __repr__(self) -> str:
        extra = ", quasi_random=True" if self.quasi_random else ""
        return f"Gaussian(d={self.dim}{extra})"


def sobol_normal(n: int, dim: int, generator: torch.Generator | None = None) -> Tensor:
    """``Φ⁻¹(u)`` for the first ``n`` points ``u`` of a scrambled Sobol sequence in ``[0, 1)^d``
    (float64, shape ``(n, d)``); the scrambling seed is drawn from ``generator``.

    Each row is ``N(0, I)``-distributed (a scrambled Sobol point is uniform on the cube); the
    rows together are a low-discrepancy set. Points are kept off the cube's faces by
    ``2⁻⁵³`` so that ``Φ⁻¹`` stays finite.
    """
    device = generator_device(generator)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device))
    u = torch.quasirandom.SobolEngine(dim, scramble=True, seed=seed).draw(n, dtype=DTYPE)
    tiny = 2.0**-53
    return torch.special.ndtri(u.clamp(tiny, 1.0 - tiny))


def component_labels(labels: Any, k: int) -> Tensor:
    """``labels`` as a long tensor ``(K,)`` of class indices covering ``0 .. C−1``."""
    try:
        out = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        out = None
    if out is None or out.shape != (k,) or out.is_floating_point() or out.dtype == torch.bool:
        raise ValueError(f"labels must be one integer class per component (K={k}); got {labels!r}")
    out = out.long()
    if set(out.tolist()) != set(range(int(out.max()) + 1)):
        raise ValueError(f"labels must cover the classes 0 .. C-1 without gaps; got {labels!r}")
    return out


def _per_component(value: Any, k: int) -> list[Any]:
    """Split a per-component option into ``k`` entries (a scalar or None is shared)."""
    if value is None:
        return [None] * k
    if isinstance(value, list | tuple):
        entries = list(value)
    else:
        t = torch.as_tensor(value, dtype=DTYPE)
        entries = [t] * k if t.ndim == 0 else list(t)
    if len(entries) != k:
        raise ValueError(f"expected one entry per component (K={k}); got {value!r}")
    return entries


@DISTRIBUTIONS.register("gaussian")
def gaussian(
    dim: int | None = None,
    mean: Any = None,
    cov: Any = None,
    std: Any = None,
    quasi_random: bool = False,
) -> Gaussian:
    """Multivariate normal N(mean, cov) in any dimension (default: standard 2-D)."""
    return Gaussian(dim=dim, mean=mean, cov=cov, std=std, quasi_random=quasi_random)


@DISTRIBUTIONS.register("gaussian_mixture")
def gaussian_mixture(
    means: Any = ((-2.0, 0.0), (2.0, 0.0)),
    weights: Any = None,
    covariances: Any = None,
    std: Any = None,
    labels: Any = None,
) -> GaussianMixture:
    """Gaussian mixture with given weights, means and covariances (any dimension); with
    ``labels`` (a class per component) its samples carry the class as condition ``y``."""
    return GaussianMixture(
        means=means, weights=weights, covariances=covariances, std=std, labels=labels
    )
