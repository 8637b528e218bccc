"""Loss weights relating the velocity, epsilon, x1 and score parameterisations.

For a prediction ``P`` of the path ``x_t = a·x1 + b·x0`` the squared error is a multiple of the
epsilon error: ``||P̂ − P||² = c_P·||ε̂ − ε||²`` with::

    c_epsilon = 1,   c_velocity = (b·λ'/2)² = (a'·b/a − b')²,   c_x1 = (b/a)²,   c_score = 1/b²

(from ``v = (a'/a)·x_t − (b·λ'/2)·ε``, ``x1 = (x_t − b·ε)/a`` and ``score = −ε/b``). Hence

* the weight making a ``P``-MSE equal to the velocity MSE is ``c_velocity / c_P``, and
* SD3's weighted objective (Esser et al. 2024, eq. 5, written in our direction where λ' > 0)
  ``L_w = ½·E[w_t·λ'_t·||ε̂ − ε||²]`` equals the ``P``-MSE for ``w_t = 2·c_P / λ'_t``; e.g. the
  rectified velocity loss has ``w_t = (1 − t)/t`` (SD3's ``t/(1 − t)`` with ``t_sd3 = 1 − t``).

The coefficients come broadcast against the data (see :meth:`AffinePath.coefficients`); every
function divides by ``a`` or ``b``, so callers clamp t away from the endpoints.
"""

from __future__ import annotations

import torch
from torch import Tensor


def dlog_snr(a: Tensor, b: Tensor, da: Tensor, db: Tensor) -> Tensor:
    """``λ' = 2(a'/a − b'/b)``."""
    return 2.0 * (da / a - db / b)


def epsilon_error_factor(prediction: str, a: Tensor, b: Tensor, da: Tensor, db: Tensor) -> Tensor:
    """``c_P`` with ``||P̂ − P||² = c_P·||ε̂ − ε||²`` (see the module docstring)."""
    if prediction == "epsilon":
        return torch.ones_like(a)
    if prediction == "velocity":
        return (da * b / a - db) ** 2
    if prediction == "x1":
        return (b / a) ** 2
    if prediction == "score":
        return 1.0 / b**2
    raise ValueError(f"prediction must be one of velocity, epsilon, x1, score; got {prediction!r}")


def velocity_weight(prediction: str, a: Tensor, b: Tensor, da: Tensor, db: Tensor) -> Tensor:
    """Weight ``w = c_velocity / c_P`` with ``w·||P̂ − P||² = ||v̂ − v||²``.

    velocity: 1; epsilon: ``(a'b/a − b')²``; x1: ``(a' − a·b'/b)²``; score: ``(a'b/a − b')²·b²``.
    """
    c_v = epsilon_error_factor("velocity", a, b, da, db)
    return c_v / epsilon_error_factor(prediction, a, b, da, db)


def sd3_weight(prediction: str, a: Tensor, b: Tensor, da: Tensor, db: Tensor) -> Tensor:
    """SD3's ``w_t = 2·c_P / λ'`` for which ``½·w_t·λ'·||ε̂ − ε||² = ||P̂ − P||²``.

    velocity: ``b²·λ'/2``; epsilon: ``2/λ'``; x1: ``2·e^{−λ}/λ'``; score: ``2/(b²·λ')``.
    """
    return 2.0 * epsilon_error_factor(prediction, a, b, da, db) / dlog_snr(a, b, da, db)
