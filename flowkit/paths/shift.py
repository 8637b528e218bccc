"""Time shifts of the grid and helpers between our time t and diffusers' sigma.

Two conventions meet here (``docs/concepts.md``, "Time shift"):

* **Ours** (:func:`shift`): ``t`` runs from the source (0) to the data (1) and ``shift(t, α)``
  multiplies the odds ``t/(1 − t)`` by ``α``. ``α < 1`` spends more of a uniform grid near the
  source (noise); ``α > 1`` near the data.
* **SD3 / diffusers** (:func:`shift_time`, :func:`exponential_shift`): they act on
  ``σ = 1 − t`` as ``σ' = s·σ / (1 + (s − 1)·σ)``, so ``s > 1`` means more steps near the noise.
  That is ``shift(t, 1/s)``. Flux's dynamic shifting uses ``s = e^μ``. User-facing ``shift=``
  arguments in flowkit follow this convention, and ``mu=`` the exponential one.

All functions are elementwise on tensors (or Python floats) and exact at ``t = 0`` and ``t = 1``.

Example:
    >>> import torch
    >>> from flowkit.paths.shift import shift_time, t_to_sigma
    >>> t = torch.linspace(0, 1, 5)
    >>> sigma = t_to_sigma(shift_time(t, 3.0))  # what diffusers' shift=3 gives for σ = 1 − t
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowkit._tensor import check_unit_interval


def _unit_time(t: float | Tensor, name: str) -> Tensor:
    """``t`` as a floating tensor, checked to lie in [0, 1]."""
    t = torch.as_tensor(t)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    check_unit_interval(t, name)
    return t


def _positive(value: float, name: str) -> float:
    value = float(value)
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0; got {value}")
    return value


def shift(t: float | Tensor, alpha: float) -> Tensor:
    """Shift time in our direction: multiply the odds of ``t`` by ``alpha``.

    ``t/(1 − t) ↦ α·t/(1 − t)``, i.e. ``t' = α·t / (1 + (α − 1)·t)``.

    A group action: ``shift(shift(t, α), β) = shift(t, α·β)`` and ``shift(t, 1) = t``; the ends
    0 and 1 are fixed. ``α < 1`` moves a uniform grid towards the source (noise) end. Computed as
    ``α·t / (α·t + (1 − t))`` so that the result stays in [0, 1] in floating point.

    Args:
        t: times in [0, 1].
        alpha: odds multiplier, > 0.
    """
    t = _unit_time(t, "t")
    alpha = _positive(alpha, "alpha")
    scaled = alpha * t
    return scaled / (scaled + (1.0 - t))


def shift_time(t: float | Tensor, s: float) -> Tensor:
    """SD3 / diffusers time shift ``shift=s`` expressed on our time ``t``.

    diffusers: ``σ' = s·σ / (1 + (s − 1)·σ)`` with ``σ = 1 − t``. In our time this is
    ``t' = t / (1 + (s − 1)(1 − t)) = shift(t, 1/s)``: ``s > 1`` puts more steps near the noise.

    Args:
        t: times in [0, 1] (t = 0 noise).
        s: the SD3 shift, > 0 (SD3 uses 3.0 at 1024², see :func:`resolution_shift`).
    """
    return shift(t, 1.0 / _positive(s, "s"))


def exponential_shift(t: float | Tensor, mu: float, power: float = 1.0) -> Tensor:
    """Flux / diffusers dynamic ("exponential") shift with parameter ``mu`` on our time ``t``.

    diffusers: ``σ' = e^μ / (e^μ + (1/σ − 1)^p)`` with ``σ = 1 − t``. Since ``1/σ − 1 = t/(1−t)``,
    in our time ``t' = sigmoid(p·logit(t) − μ)``; for ``p = 1`` this is
    ``shift_time(t, e^μ)``.

    Args:
        t: times in [0, 1].
        mu: log of the shift (:func:`dynamic_shift_mu` gives Flux's value for a sequence length).
        power: the exponent ``p`` (diffusers' ``sigma`` argument of ``time_shift``), > 0.
    """
    t = _unit_time(t, "t")
    power = _positive(power, "power")
    return torch.sigmoid(power * torch.logit(t) - float(mu))


def resolution_shift(m: float, n: float) -> float:
    """SD3's resolution-dependent shift ``s = sqrt(m / n)`` (SD3 paper, section 5.3.2).

    A schedule tuned for images of ``n`` pixels (or latent tokens) is moved to images of ``m``
    pixels by the shift ``s = sqrt(m/n)`` in the SD3 convention: use with :func:`shift_time`.
    """
    return math.sqrt(_positive(m, "m") / _positive(n, "n"))


def dynamic_shift_mu(
    seq_len: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """Flux's ``mu`` for an image of ``seq_len`` latent tokens (diffusers' ``calculate_shift``).

    Linear in the sequence length: ``μ = base_shift + (seq_len − base_seq_len)·m`` with
    ``m = (max_shift − base_shift) / (max_seq_len − base_seq_len)``.
    """
    if max_seq_len == base_seq_len:
        raise ValueError(f"max_seq_len must differ from base_seq_len; both are {base_seq_len}")
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return base_shift + (seq_len - base_seq_len) * slope


def t_to_sigma(t: float | Tensor) -> Tensor:
    """diffusers' ``σ`` (1 = noise, 0 = data) from our ``t``: ``σ = 1 − t``."""
    return 1.0 - _unit_time(t, "t")


def sigma_to_t(sigma: float | Tensor) -> Tensor:
    """Our ``t`` from diffusers' ``σ``: ``t = 1 − σ``. Their velocity is ``−v`` in our terms."""
    return 1.0 - _unit_time(sigma, "sigma")
