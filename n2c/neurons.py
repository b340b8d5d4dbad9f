"""The neuron equations of n2c, stated once.

Every simulator (the torch SNN, the integer reference simulator, the Lava
process models) calls or mirrors these functions; ``docs/concepts.md`` quotes
them. They work on torch tensors (float) and numpy arrays (float or int64); on
integers ``floor(m/θ)`` is the exact floor division ``m // θ``.

1. Multi-threshold integrate-and-fire neuron, reset by subtraction
------------------------------------------------------------------
State ``v``, input current ``I(t)``, threshold ``θ > 0``, at most ``K`` positive
and ``K⁻`` negative spikes per step, initial potential ``v(0) = v_init``:

    m(t) = v(t-1) + I(t)                         (charge)
    k(t) = clip(floor(m(t) / θ), -K⁻, K)         (fire; inclusive: m ≥ θ fires)
    v(t) = m(t) - θ·k(t)                         (reset by subtraction)
    out(t) = a·k(t)                              (graded spike of k units; a = θ unless calibrated)

* ``K = 1, K⁻ = 0``: the IF neuron of QCFS conversion over T steps.
* ``K = L, T = 1``: the multi-threshold neuron (MTN). With ``v_init = θ/2``
  (the optimal initial potential) the count is the QCFS level
  ``clip(floor(z/θ + 1/2), 0, L)``, ``θ = λ/L``.
* ``K⁻ = K``: the polarity multi-spike neuron (PMSM): positive and negative
  spikes, several per step; at T = 1 with ``v_init = θ/2`` it computes the signed
  quantizer ``clip(floor(z/θ + 1/2), -L, L)``.
* Temporal-to-spatial equivalence (Chen et al.): an MTN with ``θ/T``, ``v_init/T``
  and ``K = T`` equals the T-step average of the IF neuron for a constant input.

2. Parallel spiking neuron (Hao et al., ICML 2025)
---------------------------------------------------
Sees all T input steps at once. Its count is the MTN equation applied to the
summed input, with ``K = T``:

    n = clip(floor((Σ_t I(t) + v_init) / θ), 0, T),   v_init = θ/2 (Theorem 4.1's shift)
    s(t) = 1 for t < n, else 0                        (spikes first: the sorting property)

The paper's matrix form (step x fires when (1/(T-x+1))·Σ I + b_x ≥ θ with
``b_x = ψ/(T-x+1)``, ``ψ = θ/2``) is the same spikes in reverse order;
:func:`parallel_spikes_matrix` evaluates it in O(T²) for the tests, the simulators
use the O(T) closed form.

3. Scale-and-fire neuron (SFN): non-uniform thresholds
-------------------------------------------------------
Ascending thresholds ``e_1 < … < e_N`` (anywhere on the real line: negative ones
form the negative branch), integer output codes ``c_0 < c_1 < … < c_N`` and the
real value ``u`` of one code unit:

    m(t) = v(t-1) + I(t);   k(t) = #{i : e_i ≤ m(t)};   out(t) = u·c_k(t);   v(t) = m(t) - out(t)

The graded spike carries the integer ``c_k`` (so a synapse multiplies it by
``u·W``). Uniform ``e_i = (i - 1/2)·θ``, ``c_i = i``, ``u = θ`` with ``v(0) = 0`` is
the MTN, shifted by the constant θ/2 in v. ``n2c.snn.convert`` places the thresholds
from the measured activation distribution and scales them by the SFN scale factor.
"""

from __future__ import annotations

import numpy as np
import torch


def floor_divide(m, theta):
    """floor(m / θ): of the rounded float quotient for floats (torch or numpy, so both agree
    with the QCFS module bit for bit), the exact floor division for integers."""
    if isinstance(m, torch.Tensor):
        return torch.floor(m / theta)
    if np.issubdtype(np.result_type(m, theta), np.integer):
        return np.floor_divide(m, theta)
    return np.floor(np.divide(m, theta))


def clip(x, lo, hi):
    if isinstance(x, torch.Tensor):
        return torch.clamp(x, lo, hi)
    return np.clip(x, lo, hi)


def multi_threshold_step(v, current, theta, max_spikes, min_spikes=0):
    """One step of the multi-threshold IF neuron. Returns ``(k, v_next)``.

    ``k = clip(floor((v + I)/θ), -min_spikes, max_spikes)``; ``v_next = v + I - θ·k``.
    """
    m = v + current
    k = clip(floor_divide(m, theta), -min_spikes, max_spikes)
    return k, m - theta * k


def if_counts(currents, theta, v_init, max_spikes=1, min_spikes=0):
    """Run the neuron over ``currents`` of shape (T, ...). Returns (counts (T, ...), v(T))."""
    v = v_init
    counts = []
    for current in currents:
        k, v = multi_threshold_step(v, current, theta, max_spikes, min_spikes)
        counts.append(k)
    stack = torch.stack if isinstance(counts[0], torch.Tensor) else np.stack
    return stack(counts), v


def qcfs_count(z, theta, levels):
    """QCFS level of pre-activation ``z``: ``clip(floor((z + θ/2)/θ), 0, L)``.

    This is the multi-threshold neuron's spike count after one step from
    ``v_init = θ/2``, written with the same operations in the same order, so the
    one-step SNN and the QCFS ANN agree bit for bit in floating point.
    """
    k, _ = multi_threshold_step(theta / 2, z, theta, levels)
    return k


def signed_qcfs_count(z, theta, levels):
    """Signed quantizer level (PMSM): ``clip(floor((z + θ/2)/θ), -L, L)``."""
    k, _ = multi_threshold_step(theta / 2, z, theta, levels, levels)
    return k


def parallel_count(total, theta, timesteps, v_init=None):
    """Parallel neuron: ``n = clip(floor((Σ_t I + v_init)/θ), 0, T)``, ``v_init = θ/2`` by default."""
    k, _ = multi_threshold_step(theta / 2 if v_init is None else v_init, total, theta, timesteps)
    return k


def parallel_spikes(count, timesteps):
    """Spike train (T, ...) of a parallel neuron with ``count`` spikes: spikes first (sorted)."""
    if isinstance(count, torch.Tensor):
        t = torch.arange(timesteps, device=count.device).reshape(-1, *[1] * count.dim())
        return (t < count.unsqueeze(0)).to(count.dtype)
    t = np.arange(timesteps).reshape(-1, *[1] * np.ndim(count))
    return (t < np.asarray(count)[None]).astype(np.asarray(count).dtype)


def parallel_spikes_matrix(currents, theta, psi=None):
    """The paper's O(T²) form, for testing: ``s = H(Λ_pc·I + b - θ)`` in paper order
    (row x = 1..T: Λ_pc[x, :] = 1/(T-x+1), b_x = ψ/(T-x+1), ψ = θ/2). numpy float64.

    In floating point the row factor 1/(T-x+1) is rounded unless T-x+1 is a power of
    two, so at an exact tie (Σ I + ψ = nθ) a row can miss its spike; the closed form
    (:func:`parallel_count`) has no such rounding and is what the simulators use."""
    currents = np.asarray(currents, dtype=np.float64)
    T = currents.shape[0]
    psi = theta / 2 if psi is None else psi
    rows = 1.0 / (T - np.arange(1, T + 1) + 1)  # 1/(T-x+1)
    matrix = np.repeat(rows[:, None], T, axis=1)
    drive = np.tensordot(matrix, currents, axes=1) + rows.reshape(-1, *[1] * (currents.ndim - 1)) * psi
    return (drive >= theta).astype(np.float64)


def scale_and_fire_step(v, current, edges, codes, unit):
    """One SFN step. Returns ``(code, v_next)`` with ``code = c_k``, ``k = #{i: e_i ≤ m}``;
    the output is ``unit·code`` and ``v_next = m - unit·code``."""
    m = v + current
    if isinstance(m, torch.Tensor):
        code = codes[torch.searchsorted(edges, m.contiguous(), right=True)]
    else:
        code = np.asarray(codes)[np.searchsorted(np.asarray(edges), m, side="right")]
    return code, m - unit * code
