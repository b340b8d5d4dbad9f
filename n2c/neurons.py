"""The neuron equations of n2c, stated once.

Every simulator (the torch SNN, the integer reference simulator, the Lava
process models) calls or mirrors these functions; ``docs/concepts.md`` quotes
them.

Multi-threshold integrate-and-fire neuron with reset by subtraction
--------------------------------------------------------------------
State ``v`` (membrane potential), input current ``I(t)``, threshold ``θ > 0``,
at most ``K`` spikes per step, initial potential ``v(0) = v_init``:

    m(t) = v(t-1) + I(t)                         (charge)
    k(t) = clip(floor(m(t) / θ), 0, K)           (fire: k spikes; inclusive, m ≥ θ fires)
    v(t) = m(t) - θ·k(t)                         (reset by subtraction)
    out(t) = θ·k(t)                              (graded spike: k units of θ)

``K = 1`` is the classic IF neuron of QCFS conversion (T = L steps);
``K = L, T = 1`` is the multi-threshold neuron (MTN) that runs a QCFS network in
one timestep. With ``v_init = θ/2`` (the optimal initial potential) and
``T = 1`` the spike count is exactly the QCFS level:

    k = clip(floor((z + θ/2) / θ), 0, L)  ==  clip(floor(z·L/λ + 1/2), 0, L),  θ = λ/L.

The functions work on torch tensors (float) and numpy arrays (float or int64);
on integers ``floor(m/θ)`` is the exact floor division ``m // θ``.
"""

from __future__ import annotations

import numpy as np
import torch


def floor_divide(m, theta):
    """floor(m / θ) for torch tensors, numpy floats and numpy integers (exact)."""
    if isinstance(m, torch.Tensor):
        return torch.floor(m / theta)
    return np.floor_divide(m, theta)


def clip(x, lo, hi):
    if isinstance(x, torch.Tensor):
        return torch.clamp(x, lo, hi)
    return np.clip(x, lo, hi)


def multi_threshold_step(v, current, theta, max_spikes):
    """One step of the multi-threshold IF neuron. Returns ``(k, v_next)``.

    ``k = clip(floor((v + I)/θ), 0, K)`` spikes; ``v_next = v + I - θ·k``.
    """
    m = v + current
    k = clip(floor_divide(m, theta), 0, max_spikes)
    return k, m - theta * k


def qcfs_count(z, theta, levels):
    """QCFS level of pre-activation ``z``: ``clip(floor((z + θ/2)/θ), 0, L)``.

    This is the multi-threshold neuron's spike count after one step from
    ``v_init = θ/2``, written with the same operations in the same order, so the
    one-step SNN and the QCFS ANN agree bit for bit in floating point.
    """
    k, _ = multi_threshold_step(theta / 2, z, theta, levels)
    return k
