"""Step coefficients of the exponential-integrator multistep methods (DPM-Solver++, UniPC).

Written for any affine path through the *arriving* parameterisation: integrating towards the
data (forwards) the state is ``x = p·m + q·n`` with ``(p, q) = (a, b)``, ``m = x̂1`` (data
prediction) and ``n = ε̂``; integrating towards the source (backwards) the roles swap,
``(p, q) = (b, a)`` and ``m = ε̂``. With ``ℓ = log(p/q)`` (half the log-SNR, negated backwards),
which increases along the integration, the exact solution of the flow's ODE is::

    x_s = (q_s/q_t)·x_t + q_s·∫_{ℓ_t}^{ℓ_s} e^ℓ·m(ℓ) dℓ

(the variation-of-constants formula of DPM-Solver++, Lu et al. 2022, eq. 9). A method replaces
``m`` by a polynomial in ℓ through the current and previous predictions; every step is then a
linear combination ``x_s = c_x·x_t + Σ_j w_j·m_j`` whose scalars depend on the grid only and are
computed here once per solve, in float64.

``ratio = e^{−h} = p_t·q_s / (p_s·q_t)`` (``h = ℓ_s − ℓ_t``) is taken exactly from the path, so
first-order steps are exact where ℓ is infinite (``p_t = 0`` at the start, ``q_s = 0`` at the
end); the higher-order terms use ``h`` and the step ratios ``r`` from ℓ at times clamped into
``[eps, 1 − eps]`` (finite).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepCoefficients:
    """One multistep step ``x_s = c_x·x_t + Σ_j w[j]·m_{i−j}`` (``m_i`` the current prediction).

    Attributes:
        c_x: ``q_s / q_t``.
        w: weights of the current and previous predictions, newest first.
        corrector: UniPC's corrector weights (newest first, starting with the prediction at
            ``s``) applied once that prediction is known; None for no correction.
    """

    c_x: float
    w: tuple[float, ...]
    corrector: tuple[float, ...] | None = None


def dpm_solver_pp_weights(p_s: float, ratio: float, h: float, r: Sequence[float]) -> list[float]:
    """Weights of DPM-Solver++(k)M on ``(m_0, m_1, …)`` for ``k = len(r) + 1`` ≤ 3.

    ``r_j = h_j / h`` are the previous step sizes in ℓ (newest first). With ``φ1 = 1 − e^{−h}``::

        k = 1:  p_s·φ1·m_0
        k = 2:  p_s·φ1·(m_0 + D1/2),            D1 = (m_0 − m_1)/r_0
        k = 3:  p_s·(φ1·m_0 + φ2·D1 − φ3·D2),   φ2 = 1 − φ1/h,  φ3 = (h − φ1)/h² − ½
                D1 = D1_0 + r_0/(r_0 + r_1)·(D1_0 − D1_1),  D2 = (D1_0 − D1_1)/(r_0 + r_1),
                D1_0 = (m_0 − m_1)/r_0,  D1_1 = (m_1 − m_2)/r_1

    (diffusers' ``multistep_dpm_solver_second_order_update`` "midpoint" and third-order update.)
    """
    phi1 = 1.0 - ratio
    if not r:
        return [p_s * phi1]
    if len(r) == 1:
        d1 = [1.0 / r[0], -1.0 / r[0]]
        return [p_s * (phi1 * (j == 0) + 0.5 * phi1 * d) for j, d in enumerate(d1)]
    r0, r1 = r[0], r[1]
    d10 = [1.0 / r0, -1.0 / r0, 0.0]
    d11 = [0.0, 1.0 / r1, -1.0 / r1]
    diff = [u - v for u, v in zip(d10, d11, strict=True)]
    d1 = [u + r0 / (r0 + r1) * v for u, v in zip(d10, diff, strict=True)]
    d2 = [v / (r0 + r1) for v in diff]
    phi2 = 1.0 - phi1 / h
    phi3 = (h - phi1) / h**2 - 0.5
    return [
        p_s * (phi1 * (j == 0) + phi2 * u - phi3 * v)
        for j, (u, v) in enumerate(zip(d1, d2, strict=True))
    ]


def unipc_weights(
    p_s: float, ratio: float, h: float, rks: Sequence[float], corrector: bool
) -> list[float]:
    """UniPC (``B(h) = e^{−h} − 1``, "bh2") weights, Zhao et al. 2023, as diffusers computes them.

    ``rks[k] = (ℓ_{i−1−k} − ℓ_i)/h`` for the previous points used (negative). The order is
    ``K + 1`` with ``K = len(rks)``. With ``D_k = (m_{k+1} − m_0)/rks[k]``, ``φ1 = 1 − e^{−h}``::

        predictor (UniP):  p_s·φ1·m_0 − p_s·B(h)·Σ_k ρ_k·D_k
        corrector (UniC):  p_s·φ1·m_0 − p_s·B(h)·(Σ_k ρ_k·D_k + ρ_K·(m_new − m_0))

    where ``ρ`` solves ``R·ρ = g`` with ``R_{ij} = r_j^i`` (``r = rks + [1]``) and
    ``g_i = i!·φ_{i+1}(−h)/B(h)`` (predictor: the leading K×K block, and ρ = ½ for K = 1;
    corrector of order 1: ρ = ½). Predictor weights are on ``(m_0, m_1, …)``, corrector weights
    on ``(m_new, m_0, m_1, …)``.
    """
    k = len(rks)
    phi1 = 1.0 - ratio
    b_h = -phi1
    if k == 0:  # order 1: ρ = ½ for the corrector (h is not needed, and may be 0 or ∞)
        rho = [0.5] if corrector else []
    elif k == 1 and not corrector:
        rho = [0.5]
    else:
        g = _unipc_rhs(phi1, h, k + 1)
        nodes = [*rks, 1.0] if corrector else list(rks)
        size = len(nodes)
        mat = torch.tensor([[r**i for r in nodes] for i in range(size)], dtype=torch.float64)
        rho = torch.linalg.solve(mat, torch.tensor(g[:size], dtype=torch.float64)).tolist()
    # Σ_k ρ_k·(m_{k+1} − m_0)/rks[k]  (+ ρ_K·(m_new − m_0) for the corrector)
    hist = [0.0] * (k + 1)
    for j, (rho_j, r) in enumerate(zip(rho, rks, strict=False)):
        hist[j + 1] += rho_j / r
        hist[0] -= rho_j / r
    w = [p_s * phi1 * (j == 0) - p_s * b_h * c for j, c in enumerate(hist)]
    if not corrector:
        return w
    new = -p_s * b_h * rho[-1]
    w[0] += p_s * b_h * rho[-1]
    return [new, *w]


def _unipc_rhs(phi1: float, h: float, n: int) -> list[float]:
    """``g_i = i!·φ_{i+1}(−h)/B(h)``, i = 1..n, by diffusers' recursion (``B(h) = e^{−h} − 1``)."""
    hh, b_h = -h, -phi1
    h_phi_k = -phi1 / hh - 1.0
    factorial = 1.0
    g = []
    for i in range(1, n + 1):
        g.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return g


def flow_time_weights(
    p_s: float, q_s: float, p_t: float, q_t: float, nodes: Sequence[float]
) -> list[float]:
    """Weights on the predictions at ``nodes`` when ``m`` is a polynomial in ``u = q/(p + q)``.

    ``u = 1 − τ`` with ``τ = p/(p + q) = sigmoid(ℓ)``, the time of the rectified path with the
    same log-SNR, which is finite at both ends (u = 1 where p = 0, u = 0 where q = 0). Since
    ``e^ℓ dℓ = dτ/(1 − τ)² = −du/u²``, with the Lagrange basis ``L_j(u) = Σ_k c_{jk}·u^k``::

        w_j = q_s·∫_{u_s}^{u_t} L_j(u)/u² du = Σ_k c_{jk}·I_k,     I_0 = p_s + q_s − q_s/u_t,
        I_1 = q_s·log(u_t/u_s),     I_k = q_s·(u_t^{k−1} − u_s^{k−1})/(k−1)  (k ≥ 2)

    using ``q_s/u_s = p_s + q_s``: exact where ``q_s = 0`` (the step into ℓ = ∞ lands on the
    polynomial's value at u = 0). One node is the first-order step ``p_s·(1 − e^{−h})``.
    """
    u_t, u_s = q_t / (p_t + q_t), q_s / (p_s + q_s)
    k = len(nodes)
    vander = torch.tensor([[u**j for j in range(k)] for u in nodes], dtype=torch.float64)
    basis = torch.linalg.inv(vander)  # L_i(u) = Σ_j basis[j, i]·u^j
    integrals = [p_s + q_s - q_s / u_t]
    if k > 1:
        integrals.append(q_s * math.log(u_t / u_s) if q_s > 0.0 else 0.0)
    integrals += [q_s * (u_t ** (j - 1) - u_s ** (j - 1)) / (j - 1) for j in range(2, k)]
    return (torch.tensor(integrals, dtype=torch.float64) @ basis).tolist()
