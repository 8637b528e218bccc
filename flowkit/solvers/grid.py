"""Time grids for fixed-step solvers, and the (t_start, t_end) span of adaptive ones.

A grid is a 1-D float64 tensor, strictly monotone, from ``t_start`` to ``t_end`` inside [0, 1]
(increasing for sampling, decreasing for backward integration). Fixed-step solvers need exactly
one of ``steps``, ``step_size`` or ``grid``: there is no default grid, so the torchdiffeq pitfall
(a fixed-step method handed ``t = [0, 1]`` silently takes one step) cannot happen here.

Generated grids (``steps=``) may be placed by a ``spacing`` (:mod:`flowkit.solvers.spacing`:
uniform, logsnr, karras, beta), then shifted, then stretched to a ``terminal`` time. Shifts follow
the SD3 / diffusers convention, see :mod:`flowkit.paths.shift`: ``shift=s`` maps
``t ↦ t / (1 + (s − 1)(1 − t))`` (s > 1: more steps near the noise) and ``mu`` is Flux's
exponential shift ``s = e^μ``.

Example:
    >>> make_grid(steps=4)
    tensor([0.0000, 0.2500, 0.5000, 0.7500, 1.0000], dtype=torch.float64)
    >>> grid_from_sigmas([1.0, 0.5, 0.0])
    tensor([0.0000, 0.5000, 1.0000], dtype=torch.float64)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from flowkit._tensor import check_unit_interval
from flowkit.checks import POSITIVE_REAL, Nullable, OptionError, Real, at_most
from flowkit.paths.shift import exponential_shift, shift_time, sigma_to_t
from flowkit.registry import SPACINGS
from flowkit.solvers.spacing import Spacing, stretch_to_terminal

UNIT = Real(minimum=0, maximum=1)
MAX_STEPS = at_most(10**7)


def _given(**kwargs: object) -> list[str]:
    return [f"{k}={v!r}" for k, v in kwargs.items() if v is not None]


def check_grid(grid: Sequence[float] | Tensor, name: str = "grid") -> Tensor:
    """Validate a user grid: 1-D, at least 2 points, finite, in [0, 1], strictly monotone."""
    try:
        g = torch.as_tensor(grid, dtype=torch.float64).detach().to(device="cpu")
    except (TypeError, ValueError, RuntimeError) as err:
        raise OptionError(name, f"must be a sequence of times in [0, 1]; {err}") from None
    if g.ndim != 1 or g.numel() < 2:
        raise OptionError(
            name, f"must be a 1-D sequence of at least 2 times; got shape {tuple(g.shape)}"
        )
    try:
        check_unit_interval(g, name)
    except ValueError as err:
        raise OptionError(name, str(err).removeprefix(f"{name} ")) from None
    d = g.diff()
    if not ((d > 0).all() or (d < 0).all()):
        raise OptionError(
            name,
            f"must be strictly monotone (increasing to sample, decreasing to integrate "
            f"backwards); got {g.tolist()[:8]}",
        )
    return g


def _span(t_start: float | None, t_end: float | None) -> tuple[float, float]:
    t0 = 0.0 if t_start is None else UNIT(t_start, "t_start")
    t1 = 1.0 if t_end is None else UNIT(t_end, "t_end")
    if t0 == t1:
        raise OptionError("t_end", f"must differ from t_start; both are {t0}")
    return t0, t1


def _shift(shift: float | None, mu: float | None) -> tuple[float | None, float | None]:
    """Check the time shift: ``shift > 0`` (SD3) or a finite ``mu`` (Flux), at most one."""
    if shift is not None and mu is not None:
        raise OptionError(
            "mu", f"pass at most one of shift= and mu=; got shift={shift!r} and mu={mu!r}"
        )
    return Nullable(POSITIVE_REAL)(shift, "shift"), Nullable(Real())(mu, "mu")


def make_grid(
    steps: int | None = None,
    step_size: float | None = None,
    grid: Sequence[float] | Tensor | None = None,
    t_start: float | None = None,
    t_end: float | None = None,
    shift: float | None = None,
    mu: float | None = None,
    spacing: str | dict | Spacing | None = None,
    terminal: float | None = None,
) -> Tensor:
    """The float64 time grid of a fixed-step solve.

    Exactly one of:

    * ``steps``: ``steps + 1`` evenly spaced times from ``t_start`` (default 0) to ``t_end``
      (default 1), then shifted by ``shift`` or ``mu`` if given;
    * ``step_size``: times ``t_start + k·step_size`` (towards ``t_end``), the last step shortened
      to land on ``t_end`` (as torchdiffeq's ``step_size`` option), then shifted;
    * ``grid``: the explicit grid (``t_start``/``t_end``, if given, must equal its ends; shifting an
      explicit grid is refused: shift it yourself with :mod:`flowkit.paths.shift`).

    ``spacing`` (``steps=`` only): a registered spacing name or ``{name: ..., **options}``
    (``uniform``, ``logsnr``, ``karras``, ``beta``; see :mod:`flowkit.solvers.spacing`), applied
    before the shift. ``terminal`` (``steps=`` only): stretch the grid so that its last step
    starts at this time (diffusers' ``shift_terminal = 1 − terminal``), applied last.

    Raises:
        ValueError: naming the conflicting or invalid arguments.
    """
    given = _given(steps=steps, step_size=step_size, grid=None if grid is None else "[...]")
    if not given:
        raise OptionError(
            "steps",
            "is required: a fixed-step solver needs exactly one of steps=, step_size= or grid=; "
            "got none of them",
        )
    if len(given) > 1:
        raise ValueError(
            "a fixed-step solver needs exactly one of steps=, step_size= or grid=; got "
            f"{' and '.join(given)} (give at most one)"
        )
    shift, mu = _shift(shift, mu)
    if steps is None and (spacing is not None or terminal is not None):
        raise OptionError(
            "spacing" if spacing is not None else "terminal",
            "applies to grids generated from steps=, not to step_size= or an explicit grid=",
        )
    if grid is not None:
        if shift is not None or mu is not None:
            raise OptionError(
                "shift" if shift is not None else "mu",
                "applies to generated grids (steps= or step_size=), not to an explicit grid=; "
                "shift the grid yourself, e.g. with flowkit.paths.shift_time",
            )
        g = check_grid(grid)
        for name, v, end in (("t_start", t_start, g[0]), ("t_end", t_end, g[-1])):
            if v is not None and float(v) != float(end):
                raise OptionError(
                    name,
                    f"must equal the grid's end; {name}={v} conflicts with grid, which "
                    f"runs from {g[0]} to {g[-1]}",
                )
        return g
    t0, t1 = _span(t_start, t_end)
    if steps is not None:
        g = _spaced(t0, t1, MAX_STEPS(steps, "steps"), spacing)
    else:
        h = POSITIVE_REAL(step_size, "step_size")
        n = max(1, math.ceil(abs(t1 - t0) / h - 1e-9))
        if n > MAX_STEPS.maximum:
            raise OptionError("step_size", f"gives {n} steps; at most {MAX_STEPS.maximum} allowed")
        g = t0 + math.copysign(h, t1 - t0) * torch.arange(n + 1, dtype=torch.float64)
        g[-1] = t1
    if shift is not None:
        g = shift_time(g, shift)
    elif mu is not None:
        g = exponential_shift(g, mu)
    if terminal is not None:
        forward = t1 > t0
        g = stretch_to_terminal(g if forward else g.flip(0), UNIT(terminal, "terminal"))
        g = g if forward else g.flip(0)
    return g


def _spaced(t0: float, t1: float, steps: int, spacing: str | dict | Spacing | None) -> Tensor:
    """``steps + 1`` times from t0 to t1: evenly spaced, or placed by ``spacing`` on the
    increasing span (reversed for a backward grid)."""
    if spacing is None or spacing == "uniform":
        return torch.linspace(t0, t1, steps + 1, dtype=torch.float64)
    g = SPACINGS.build(spacing).times(min(t0, t1), max(t0, t1), steps)
    return g if t1 > t0 else g.flip(0)


def time_span(
    t_start: float | None = None,
    t_end: float | None = None,
    shift: float | None = None,
    mu: float | None = None,
    **grid_args: object,
) -> Tensor:
    """``[t_start, t_end]`` (float64) for an adaptive solver, which chooses its own steps.

    Raises:
        ValueError: if any of ``steps``, ``step_size``, ``grid``, ``shift`` or ``mu`` is given.
    """
    given = _given(**grid_args, shift=shift, mu=mu)
    if given:
        raise OptionError(
            given[0].split("=")[0],
            f"is not taken here: adaptive solvers choose their own steps and take only "
            f"t_start/t_end (and rtol, atol); got {', '.join(given)}. Use a fixed-step solver "
            "for an explicit grid",
        )
    return torch.tensor(_span(t_start, t_end), dtype=torch.float64)


def grid_from_sigmas(sigmas: Sequence[float] | Tensor) -> Tensor:
    """Our grid from a diffusers-convention list of sigmas (1 = noise, 0 = data): ``t = 1 − σ``.

    E.g. ``grid_from_sigmas(scheduler.sigmas)`` for a diffusers ``FlowMatchEulerDiscreteScheduler``
    after ``set_timesteps``; decreasing sigmas give an increasing (sampling) grid.
    """
    sig = torch.as_tensor(sigmas, dtype=torch.float64).detach().to(device="cpu")
    return check_grid(sigma_to_t(sig), "grid_from_sigmas(sigmas)")
