"""Stochastic sampling: predict ``(x̂1, ε̂)`` from the velocity, re-noise to the next time.

Each step ``t → s`` (see :mod:`flowkit.solvers.ddim`)::

    x_s = a(s)·x̂1 + sqrt(b(s)² − σ²)·ε̂ + σ·z,        z ~ N(0, I) fresh from the generator

with ``σ = η·σ_mode``:

* ``noise="ancestral"`` (default): ``σ_mode = b(s)·sqrt(1 − SNR(t)/SNR(s))``, the std of the
  posterior ``q(x_s | x_t, x1)`` of the path (DDPM's ancestral step, written for any affine path).
* ``noise="fresh"``: ``σ_mode = b(s)``, i.e. ``x_s = a(s)·x̂1 + b(s)·z``: ε̂ is thrown away and the
  sample is fully re-noised (LTX-Video's ``stochastic_sampling``).

``η = 0`` is DDIM for both.

When the marginals are kept: the re-noising assumes the flow's marginals are those of
``a(t)·x1 + b(t)·z`` with ``z ~ N(0, I)`` independent of ``x1``, i.e. a **standard Gaussian
source and an independent coupling**. Then, with the exact velocity, ``ancestral`` (η = 1) is a
first-order discretisation of the reverse-time SDE with the path's marginals: every marginal
is reached as the number of steps grows (and the mean is exact at any step count for a Gaussian
target). ``fresh`` keeps them only if ``x̂1`` were a *sample* of the data given ``x_t``; the model
predicts the conditional *mean* ``E[x1 | x_t]``, so ``fresh`` shrinks the spread (for
N(0, 1) → N(2, 0.5²) the final std is ≈ 0.35 and does not improve with more steps).

A flow trained on a deterministic coupling (reflow, distillation) has other marginals, so
stochastic sampling is refused for it (``flow.deterministic_coupling``). Sampling only runs
forwards (``t_end > t_start``).
"""

from __future__ import annotations

from torch import Tensor

from flowkit.checks import PROBABILITY, OneOf
from flowkit.paths.affine import AffinePath
from flowkit.registry import SOLVERS
from flowkit.solvers.base import Context
from flowkit.solvers.ddim import Renoise

NOISE_MODES = ("ancestral", "fresh")


def check_stochastic(source: object, grid: Tensor) -> None:
    """Refuse deterministic-coupling flows and backward grids for stochastic sampling."""
    if getattr(source, "deterministic_coupling", False):
        raise ValueError(
            "stochastic sampling re-noises with independent Gaussian noise, which does not "
            "match the marginals of a flow trained on a deterministic coupling (e.g. reflow or "
            "distillation; flow.deterministic_coupling is True). Use an ODE solver such as "
            "'euler' or 'heun' for this flow"
        )
    if grid[-1] <= grid[0]:
        raise ValueError(
            "stochastic sampling runs forwards (t_end > t_start); got a grid from "
            f"{float(grid[0])} to {float(grid[-1])}. Use an ODE solver to integrate backwards"
        )


@SOLVERS.register("stochastic")
class Stochastic(Renoise):
    """Stochastic sampler: predict x1, re-noise to the next time with fresh noise (order 1).

    Args:
        eta: scale of the fresh noise, in [0, 1] (0: DDIM, 1: the full ``noise`` mode).
        noise: ``"ancestral"`` (posterior std, keeps the marginals as steps grow for a Gaussian
            source and independent coupling) or ``"fresh"`` (σ = b(s), LTX-Video style).
        path: the path when the field is not a Flow (see :class:`~flowkit.solvers.ddim.DDIM`).

    Example:
        >>> import torch, flowkit as fk
        >>> field = lambda x, t: -x  # any velocity field; the path is needed to re-noise
        >>> g = torch.Generator().manual_seed(0)
        >>> sol = fk.sample(field, torch.randn(4, 2), solver="stochastic", steps=10,
        ...                 path="rectified", generator=g)
    """

    name = "stochastic"

    def __init__(
        self,
        eta: float = 1.0,
        noise: str = "ancestral",
        path: str | dict | AffinePath | None = None,
    ) -> None:
        super().__init__(path)
        self.noise = OneOf(tuple(NOISE_MODES))(noise, "noise")
        self.eta = PROBABILITY(eta, "eta")

    def __repr__(self) -> str:
        return f"Stochastic(eta={self.eta}, noise={self.noise!r})"

    def noise_std(self, path: AffinePath, t: Tensor, s: Tensor) -> Tensor:
        """``σ = η·b(s)·sqrt(1 − SNR(t)/SNR(s))`` (ancestral) or ``η·b(s)`` (fresh).

        ``SNR(t)/SNR(s) = (a(t)·b(s) / (a(s)·b(t)))²``; it is 0 at t = 0 (first step fully fresh)
        and σ = 0 at s = 1 (the last step lands on x̂1).
        """
        b_s = path.b(s)
        if self.noise == "fresh":
            return self.eta * b_s
        ratio = (path.a(t) * b_s / (path.a(s) * path.b(t))) ** 2
        return self.eta * b_s * (1.0 - ratio).clamp(0.0, 1.0).sqrt()

    def plan(self, grid: Tensor, x: Tensor, ctx: Context) -> list[tuple]:
        check_stochastic(ctx.source, grid)
        return super().plan(grid, x, ctx)
