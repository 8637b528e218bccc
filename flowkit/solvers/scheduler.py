"""A step-wise scheduler for hand-written sampling loops (diffusers / video-pipeline style).

Example:
    >>> import torch, flowkit as fk
    >>> sched = fk.solvers.FlowScheduler()
    >>> sched.set_timesteps(8, shift=3.0)
    >>> x = torch.randn(4, 2)
    >>> model = lambda x, t: -x
    >>> for t in sched.timesteps:
    ...     x = sched.step(model(x, t.expand(4)), t, x)

The loop above equals ``fk.sample(model, x0, "euler", steps=8, shift=3.0)``; with
``stochastic=True`` it equals ``fk.sample(..., solver="stochastic")`` with the same generator, and
with ``FlowScheduler(multistep={"name": "unipc", "order": 2})`` it equals
``fk.sample(..., solver="unipc", order=2)`` (the scheduler keeps the previous predictions).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from flowkit._tensor import expand_time
from flowkit.paths.affine import AffinePath
from flowkit.registry import PATHS, SOLVERS
from flowkit.solvers.ddim import renoise_coefficients, renoise_step
from flowkit.solvers.exponential import StepCoefficients
from flowkit.solvers.grid import grid_from_sigmas, make_grid
from flowkit.solvers.mask import TokenMask
from flowkit.solvers.multistep import Multistep, combine
from flowkit.solvers.stochastic import Stochastic, check_stochastic


class FlowScheduler:
    """Euler (or stochastic) steps along a time grid, one model output at a time.

    ``step`` finds the next grid time after ``t`` (t need not lie exactly on the grid: the
    next point is the first grid time greater than ``t + eps``) and moves by ``dt = t_next − t``.

    Args:
        path: the path used by stochastic steps (default rectified).
        eta, noise: the options of the ``stochastic`` solver used when ``stochastic=True``.
        eps: tolerance when locating ``t`` on the grid and in the conditioning mask.
        multistep: a multistep solver (``"dpm_solver_pp"``, ``"unipc"`` or a spec with its
            options, e.g. ``{"name": "unipc", "order": 2}``): ``step`` then takes that solver's
            steps, in grid order, one time for the whole batch.

    Attributes:
        grid: the ``n + 1`` grid times (float64), after :meth:`set_timesteps`.
        timesteps: the ``n`` times at which the model is evaluated (``grid[:-1]``).
    """

    def __init__(
        self,
        path: str | dict | AffinePath = "rectified",
        eta: float = 1.0,
        noise: str = "ancestral",
        eps: float = 1e-6,
        multistep: str | dict | Multistep | None = None,
    ) -> None:
        self.path: AffinePath = PATHS.build(path)
        self.stochastic = Stochastic(eta, noise)
        self.eps = float(eps)
        self.multistep = None if multistep is None else SOLVERS.build(multistep)
        if self.multistep is not None and not isinstance(self.multistep, Multistep):
            raise ValueError(
                f"multistep must be a multistep solver (dpm_solver_pp, unipc); got {multistep!r}"
            )
        self.grid: Tensor | None = None
        self.timesteps: Tensor | None = None
        self._history: MultistepState | None = None

    def set_timesteps(
        self,
        num_steps: int | None = None,
        *,
        shift: float | None = None,
        mu: float | None = None,
        timesteps: Sequence[float] | Tensor | None = None,
        sigmas: Sequence[float] | Tensor | None = None,
        spacing: str | dict | None = None,
        terminal: float | None = None,
    ) -> None:
        """Set the grid from ``num_steps`` (optionally spaced, shifted and stretched, as
        :func:`~flowkit.solvers.grid.make_grid` does), ``timesteps`` or ``sigmas``.

        ``timesteps`` is a full grid in flowkit time (t = 0 noise) including the final time;
        ``sigmas`` a diffusers-convention list (σ = 1 − t, ending at 0 for a full solve).
        """
        if timesteps is not None and sigmas is not None:
            raise ValueError("pass at most one of timesteps= and sigmas=")
        grid = grid_from_sigmas(sigmas) if sigmas is not None else timesteps
        g = make_grid(
            steps=num_steps, grid=grid, shift=shift, mu=mu, spacing=spacing, terminal=terminal
        )
        if g[-1] <= g[0]:
            raise ValueError("FlowScheduler samples forwards: the grid must increase")
        self.grid = g
        self.timesteps = g[:-1]
        if self.multistep is not None:
            self._history = MultistepState(self.multistep.coefficients(self.path, g))

    def next_time(self, t: Tensor | float) -> Tensor:
        """The first grid time greater than ``t + eps`` (same shape as ``t``, float64)."""
        if self.grid is None:
            raise RuntimeError("call set_timesteps(...) before step(...)")
        t64 = torch.as_tensor(t, dtype=torch.float64, device="cpu")
        idx = torch.searchsorted(self.grid, t64 + self.eps, right=True)
        if (idx >= len(self.grid)).any():
            raise ValueError(
                f"t={t64.max().item()} is at or past the last grid time {self.grid[-1].item()}; "
                "there is no next step"
            )
        return self.grid[idx]

    def step(
        self,
        model_output: Tensor,
        t: Tensor | float,
        x: Tensor,
        generator: torch.Generator | None = None,
        conditioning_mask: Tensor | None = None,
        stochastic: bool = False,
    ) -> Tensor:
        """The state at the next grid time after ``t``.

        Args:
            model_output: the velocity ``v(x, t)`` (flowkit convention; diffusers models give −v).
            t: current time: a float, a 0-d tensor, or a ``(B,)`` tensor (per-sample times).
            x: current state ``(B, ...)``.
            generator: noise of stochastic steps.
            conditioning_mask: ``(B, N)`` per-token mask (see :mod:`flowkit.solvers.mask`);
                frozen tokens are returned unchanged.
            stochastic: re-noise (the ``stochastic`` solver's step) instead of an Euler step.
        """
        t64 = torch.as_tensor(t, dtype=torch.float64, device="cpu")
        s64 = self.next_time(t64)
        if self._history is not None:
            if stochastic or t64.ndim != 0:
                raise ValueError("multistep steps take a scalar t and no stochastic=True")
            i = int(torch.searchsorted(self.grid, t64 + self.eps, right=True)) - 1
            out = self._history.step(self.path, i, t64, model_output, x)
        elif t64.ndim == 0:
            if stochastic:
                t_, s_ = t64.reshape(1), s64.reshape(1)
                check_stochastic(self.path, torch.cat([t_, s_]))
                sigma = self.stochastic.noise_std(self.path, t_, s_)
                c_x, c_v = renoise_coefficients(self.path, t_, s_, sigma)
                out = renoise_step(x, model_output, c_x.item(), c_v.item(), sigma.item(), generator)
            else:
                out = x.add(model_output, alpha=(s64 - t64).item())
        else:
            if stochastic:
                raise ValueError("stochastic steps need a scalar t (one time for the batch)")
            dt = expand_time((s64 - t64).to(dtype=x.dtype, device=x.device), x)
            out = x + dt * model_output
        if conditioning_mask is not None:
            out = torch.where(TokenMask(conditioning_mask, x, self.eps).moving(t64), out, x)
        return out

    def model_times(self, t: Tensor | float, x: Tensor, conditioning_mask: Tensor) -> Tensor:
        """Per-token times ``max(t, m)`` of shape ``(B, N)`` to feed the model with a mask."""
        return TokenMask(conditioning_mask, x, self.eps).times(t)


class MultistepState:
    """The predictions a multistep scheduler keeps between calls of :meth:`FlowScheduler.step`."""

    def __init__(self, plan: list[StepCoefficients]) -> None:
        self.plan = plan
        self.preds: list[Tensor] = []
        self.prev: tuple[Tensor, StepCoefficients] | None = None
        self.index = -1

    def step(self, path: AffinePath, i: int, t: Tensor, v: Tensor, x: Tensor) -> Tensor:
        """Step ``i`` of the solver from ``x`` with the velocity ``v`` at grid time ``t``."""
        if i == 0:
            self.preds, self.prev = [], None
        elif i != self.index + 1:
            raise ValueError(
                f"multistep steps must follow the grid in order: step {i} after step {self.index}"
            )
        self.index = i
        m = path.convert(v, src="velocity", dst="x1", x_t=x, t=t.to(x.dtype))
        if self.prev is not None and self.prev[1].corrector is not None:
            x = combine(self.prev[1].c_x, self.prev[0], self.prev[1].corrector, [m, *self.preds])
        self.preds = [m, *self.preds][: Multistep.max_order]
        self.prev = (x, self.plan[i])
        return combine(self.plan[i].c_x, x, self.plan[i].w, self.preds)
