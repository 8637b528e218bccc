"""The exact marginal velocity (the oracle) for Gaussian / Gaussian-mixture problems.

For independent ``x0 ~ source`` and ``x1 ~ target`` (Gaussians or Gaussian mixtures) and any
affine path ``x_t = a(t)·x1 + b(t)·x0``, the marginal velocity field

    u_t(x) = E[a'(t)·x1 + b'(t)·x0 | x_t = x]

and the marginal density ``p_t`` are available in closed form (see
:mod:`flowkit.data.gaussian_posterior`). Integrating ``dx/dt = u_t(x)`` from source samples gives
samples of ``p_t`` at every t and of the target at t = 1: the "perfect model" every learned flow
approximates, and the test oracle of flowkit's property suite.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

import flowkit.paths  # noqa: F401  (registers the paths)
from flowkit._tensor import check_unit_interval
from flowkit.data.gaussian import GaussianMixture
from flowkit.data.gaussian_math import DTYPE
from flowkit.data.gaussian_posterior import PairPosterior, pair_posterior
from flowkit.paths.affine import AffinePath, check_prediction
from flowkit.registry import DISTRIBUTIONS, PATHS


class ExactMarginal(nn.Module):
    """Exact marginal velocity, posterior means, score and density of a Gaussian-mixture path.

    Computations run in float64 (Cholesky factors, log-sum-exp over component pairs) and are
    vectorised over points and pairs; results come back in ``x``'s dtype. When every point shares
    one time (as in a solver step), one factorisation per pair serves the whole batch.

    Endpoints: at ``t = 0`` (``a = 0``) only the source covariances and at ``t = 1`` (``b = 0``)
    only the target covariances need to be positive definite; there ``E[x1|x_0] = E[x1]`` and
    ``E[x0|x_1] = E[x0]``.

    Args:
        source: the source distribution (t = 0): a :class:`GaussianMixture` (or a
            :class:`~flowkit.data.gaussian.Gaussian`) or a spec building one.
        target: the target distribution (t = 1), likewise.
        path: an :class:`AffinePath` or a path spec (any schedule).

    Attributes:
        deterministic_coupling: always False (the oracle is the independent coupling's field).

    Example:
        >>> import torch, flowkit as fk
        >>> from flowkit.data.oracle import ExactMarginal
        >>> oracle = ExactMarginal("gaussian", {"name": "gaussian", "mean": [3.0, 0.0]},
        ...                        "rectified")
        >>> v = oracle(torch.zeros(1, 2), torch.tensor([0.5]))
        >>> torch.allclose(v, torch.tensor([[3.0, 0.0]]))
        True
    """

    def __init__(self, source: Any, target: Any, path: Any = "rectified") -> None:
        super().__init__()
        self.source = _mixture(source, "source")
        self.target = _mixture(target, "target")
        if self.source.dim != self.target.dim:
            raise ValueError(
                f"source and target must have the same dimension; got {self.source.dim} and "
                f"{self.target.dim}"
            )
        self.path: AffinePath = PATHS.build(path)
        self.deterministic_coupling = False

    def extra_repr(self) -> str:
        return f"source={self.source!r}, target={self.target!r}, path={self.path!r}"

    def posterior(self, x: Tensor, t: Tensor | float) -> PairPosterior:
        """All posterior summaries at ``(x, t)`` in float64 (see :class:`PairPosterior`)."""
        return self._posterior(x, _times(t, x))

    def _posterior(self, x: Tensor, t64: Tensor) -> PairPosterior:
        self.source.check_event(x)
        schedule = self.path.schedule
        return pair_posterior(
            x.to(DTYPE), schedule.a(t64), schedule.b(t64), self.source, self.target
        )

    def velocity(self, x: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        """``u_t(x) = a'(t)·E[x1|x_t = x] + b'(t)·E[x0|x_t = x]``, shape ``(B, d)``.

        ``t``: a float, a 0-d tensor or a tensor of shape ``(B,)`` in [0, 1]. For schedules
        with infinite ``a'``/``b'`` at an endpoint (``finite_derivatives`` False: ``vp``,
        ``linear_vp``, ``ldm_linear``, ``edm``) t is clamped into ``[eps, 1 − eps]`` with the
        path's ``eps``, as :meth:`AffinePath.sample` does. Conditions are accepted for the
        solver interface and ignored.
        """
        t64 = _times(t, x)
        if not self.path.schedule.finite_derivatives:
            t64 = self.path.clamp_time(t64)
        post = self._posterior(x, t64)
        da = self.path.schedule.da(t64)[:, None]
        db = self.path.schedule.db(t64)[:, None]
        return (da * post.x1 + db * post.x0).to(x.dtype)

    def forward(self, x: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        """Same as :meth:`velocity` (so the oracle is a field ``f(x, t)`` and a model)."""
        return self.velocity(x, t)

    def epsilon(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Posterior mean of the source sample ``E[x0 | x_t = x]``, shape ``(B, d)``."""
        return self.posterior(x, t).x0.to(x.dtype)

    def x1(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Posterior mean of the target sample ``E[x1 | x_t = x]``, shape ``(B, d)``."""
        return self.posterior(x, t).x1.to(x.dtype)

    def score(self, x: Tensor, t: Tensor | float) -> Tensor:
        """``∇_x log p_t(x)``, shape ``(B, d)`` (for a standard Gaussian source: ``−E[x0|x]/b``)."""
        return self.posterior(x, t).score.to(x.dtype)

    def predict(self, x: Tensor, t: Tensor | float, prediction: str) -> Tensor:
        """The oracle in any parameterisation: ``velocity``, ``epsilon``, ``x1`` or ``score``."""
        check_prediction(prediction, "prediction")
        if prediction == "velocity":
            return self.velocity(x, t)
        return getattr(self, prediction)(x, t)

    def log_prob(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Exact log density of the path's marginal ``log p_t(x)``, shape ``(B,)``."""
        return self.posterior(x, t).log_prob.to(x.dtype)

    def sample(self, n: int, t: Tensor | float, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples of ``p_t``: ``a(t)·x1 + b(t)·x0`` with independent ``x0``, ``x1``.

        ``t``: a float or a tensor of shape ``()`` or ``(n,)``.
        """
        x0 = self.source.sample(n, generator=generator)
        x1 = self.target.sample(n, generator=generator)
        return self.path.sample(x0, x1, t).x_t


def _mixture(spec: Any, argument: str) -> GaussianMixture:
    dist = DISTRIBUTIONS.build(spec)
    if not isinstance(dist, GaussianMixture):
        raise TypeError(
            f"{argument} must be a Gaussian or Gaussian mixture (e.g. 'gaussian', "
            f"'gaussian_mixture', '8gaussians'); got {type(dist).__name__}"
        )
    return dist


def _times(t: Tensor | float, x: Tensor) -> Tensor:
    """Times as float64 of shape ``(1,)`` (one shared time) or ``(B,)`` (one per point)."""
    t = torch.as_tensor(t, dtype=DTYPE, device=x.device)
    if t.ndim == 0:
        t = t.reshape(1)
    elif t.shape != (x.shape[0],):
        raise ValueError(
            f"t must be a scalar or have shape ({x.shape[0]},) to match x of shape "
            f"{tuple(x.shape)}; got shape {tuple(t.shape)}"
        )
    check_unit_interval(t)
    if t.numel() > 1 and bool((t == t[0]).all()):
        t = t[:1]
    return t
