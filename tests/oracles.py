"""Test oracles: independent statements of equations the library computes another way.

``if_counts`` runs the multi-threshold kernel over T steps (the time loop the simulators
own); ``parallel_spikes_matrix`` is the parallel-neuron paper's O(T²) matrix form, checked
against the closed form ``n2c.neurons.parallel.count``/``spikes``.
"""

from __future__ import annotations

import numpy as np
import torch

from n2c.neurons.multi_threshold import step


def if_counts(currents, theta, v_init, max_spikes=1, min_spikes=0):
    """Run the neuron over ``currents`` of shape (T, ...). Returns (counts (T, ...), v(T))."""
    v = v_init
    counts = []
    for current in currents:
        k, v = step(v, current, theta, max_spikes, min_spikes)
        counts.append(k)
    stack = torch.stack if isinstance(counts[0], torch.Tensor) else np.stack
    return stack(counts), v


def parallel_spikes_matrix(currents, theta, psi=None):
    """The paper's O(T²) form: ``s = H(Λ_pc·I + b - θ)`` in paper order (row x = 1..T:
    Λ_pc[x, :] = 1/(T-x+1), b_x = ψ/(T-x+1), ψ = θ/2). numpy float64.

    In floating point the row factor 1/(T-x+1) is rounded unless T-x+1 is a power of two,
    so at an exact tie (Σ I + ψ = nθ) a row can miss its spike; the closed form has no such
    rounding and is what the simulators use."""
    currents = np.asarray(currents, dtype=np.float64)
    T = currents.shape[0]
    psi = theta / 2 if psi is None else psi
    rows = 1.0 / (T - np.arange(1, T + 1) + 1)  # 1/(T-x+1)
    matrix = np.repeat(rows[:, None], T, axis=1)
    drive = np.tensordot(matrix, currents, axes=1) + rows.reshape(-1, *[1] * (currents.ndim - 1)) * psi
    return (drive >= theta).astype(np.float64)


def placement_cost(tiles: list, traffic: np.ndarray, host: np.ndarray) -> int:
    """The placement objective: Σ_{core pairs} traffic · Manhattan tile distance + Σ_cores host
    traffic · distance to (0, 0)."""
    xy = np.array(tiles, np.int64).reshape(-1, 2)
    dist = np.abs(xy[:, None, :] - xy[None, :, :]).sum(axis=2)
    return int((np.triu(traffic) * dist).sum() + (host * xy.sum(axis=1)).sum())
