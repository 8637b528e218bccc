"""Exact conversions between the velocity, epsilon (x0), x1 and score parameterisations.

All follow from the two equations of the affine path::

    x_t = a·x1 + b·x0          v = a'·x1 + b'·x0

a 2×2 linear system in (x1, x0) with determinant ``det = a·b' − a'·b`` (negative for every
schedule whose a increases and b decreases). ``x0`` is called epsilon when the source is standard
Gaussian; the score of the path's marginal is then ``∇log p_t(x) = −ε̂/b``.

The functions take the coefficients already broadcast against ``x_t``; :class:`AffinePath`
computes them from a schedule and handles the endpoints.
"""

from __future__ import annotations

from torch import Tensor


def x1_x0_from_velocity(
    v: Tensor, x_t: Tensor, a: Tensor, b: Tensor, da: Tensor, db: Tensor
) -> tuple[Tensor, Tensor]:
    """Solve the path system for (x1, x0) given the velocity.

    ``x1 = (b'·x_t − b·v) / det``, ``x0 = (a·v − a'·x_t) / det``, ``det = a·b' − a'·b``.
    Rectified path: ``x1 = x_t + (1−t)·v``, ``x0 = x_t − t·v``.
    """
    det = a * db - da * b
    return (db * x_t - b * v) / det, (a * v - da * x_t) / det


def velocity_from_x0(
    x0: Tensor, x_t: Tensor, a: Tensor, b: Tensor, da: Tensor, db: Tensor
) -> Tensor:
    """Velocity from epsilon (x0): ``v = (a'/a)·x_t − (b·λ'/2)·ε`` with ``b·λ'/2 = a'b/a − b'``.

    Divides by ``a``: undefined at ``a = 0`` (t = 0).
    """
    return (da / a) * x_t - (da * b / a - db) * x0


def velocity_from_x1(
    x1: Tensor, x_t: Tensor, a: Tensor, b: Tensor, da: Tensor, db: Tensor
) -> Tensor:
    """Velocity from x1: ``v = (b'/b)·x_t + (a' − a·b'/b)·x1``.

    Divides by ``b``: undefined at ``b = 0`` (t = 1).
    """
    return (db / b) * x_t + (da - a * db / b) * x1


def x0_from_x1(x1: Tensor, x_t: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``x0 = (x_t − a·x1) / b`` (undefined at b = 0)."""
    return (x_t - a * x1) / b


def x1_from_x0(x0: Tensor, x_t: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``x1 = (x_t − b·x0) / a`` (undefined at a = 0)."""
    return (x_t - b * x0) / a
