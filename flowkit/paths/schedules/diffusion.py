"""Variance-preserving diffusion schedules defined by their cumulative noise ``ᾱ``.

A DDPM-style schedule is stated in diffusion time ``s = 1 − t`` (s = 0 data, s = 1 noise) by
``G(s) = −log ᾱ(s)``, the integrated noise rate. In our direction::

    a(t) = sqrt(ᾱ) = exp(−G/2),      b(t) = sqrt(1 − ᾱ) = sqrt(−expm1(−G)),     s = 1 − t
    a'(t) = ½·G'(s)·a,               b'(t) = −a·a'/b = −½·G'(s)·a²/b
    λ(t) = −log(expm1(G)),           λ'(t) = G'(s)/b²,        G = softplus(−λ)

Such schedules reach ``a = 1, b = 0`` at t = 1 but only approach ``a = 0`` at t = 0
(``reaches_endpoints = False``), and ``b' = −∞`` at t = 1 since ``b ~ sqrt(G'(0)·s)``
(``finite_derivatives = False``).
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor

from flowkit.paths.schedules.base import Schedule


class DiffusionSchedule(Schedule):
    """Base class of the VP diffusion schedules given by ``G(s) = −log ᾱ(s)``, ``s = 1 − t``.

    Subclasses implement :meth:`integrated_rate` (``G``) and :meth:`rate` (``G' = dG/ds``).
    """

    reaches_endpoints = False
    finite_derivatives = False

    @abstractmethod
    def integrated_rate(self, s: Tensor) -> Tensor:
        """``G(s) = −log ᾱ(s)`` in diffusion time ``s = 1 − t``."""

    @abstractmethod
    def rate(self, s: Tensor) -> Tensor:
        """``G'(s) = dG/ds`` (the continuous β(s) of the diffusion SDE)."""

    def a(self, t: Tensor) -> Tensor:
        """``a = exp(−G(1 − t)/2)``."""
        return torch.exp(-0.5 * self.integrated_rate(1.0 - t))

    def b(self, t: Tensor) -> Tensor:
        """``b = sqrt(1 − exp(−G(1 − t)))``."""
        return torch.sqrt(-torch.expm1(-self.integrated_rate(1.0 - t)))

    def da(self, t: Tensor) -> Tensor:
        """``a'(t) = ½·G'(s)·a`` with ``s = 1 − t``."""
        return 0.5 * self.rate(1.0 - t) * self.a(t)

    def db(self, t: Tensor) -> Tensor:
        """``b'(t) = −½·G'(s)·a²/b`` (−∞ at t = 1)."""
        s = 1.0 - t
        g = self.integrated_rate(s)
        return -0.5 * self.rate(s) * torch.exp(-g) / torch.sqrt(-torch.expm1(-g))

    def log_snr(self, t: Tensor) -> Tensor:
        """``λ(t) = −G − log(1 − e^{−G})`` = ``−log(expm1(G))``, stable for small and large G."""
        g = self.integrated_rate(1.0 - t)
        return -g - torch.log(-torch.expm1(-g))

    def dlog_snr(self, t: Tensor) -> Tensor:
        """``λ'(t) = G'(s) / (1 − e^{−G(s)})``."""
        s = 1.0 - t
        return self.rate(s) / -torch.expm1(-self.integrated_rate(s))
