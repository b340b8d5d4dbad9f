"""Parallel spiking neuron (Hao et al., ICML 2025; kind ``parallel``).

It sees all T input steps of a sample at once. Its count is the multi-threshold equation
applied to the summed input, with ``K = T``::

    n = clip(floor((Σ_t I(t) + v_init) / θ), 0, T),   v_init = θ/2 (Theorem 4.1's shift)
    s(t) = 1 for t < n, else 0                        (spikes first: the sorting property)

The paper's matrix form (step x fires when (1/(T-x+1))·Σ I + b_x ≥ θ, b_x = ψ/(T-x+1),
ψ = θ/2) is the same spikes in reverse order; the tests evaluate it against this closed form.
With DA-QCFS calibration ``v_init = θ/2 + T·ψ`` and the spike value is ``θ + φ``.

Integer form, once per window (``b`` the bias)::

    v = clamp24(v + I + b) at every step of the window, from v = v_init
    n = clip(v // θ, 0, T);   emit 1 at the window's steps 0..n-1

Window rule under Lava timing: the count is known only at the window's end, so the spikes
leave during the next window (output one window, T steps, late). At a window start, at
``t ≥ d + T``: ``pending = clip(v // θ, 0, T)`` (earlier: 0), then ``v = v_init``; every step
``v = clamp24(v + I + b)`` and the neuron sends ``1 if (t - d) % T < pending else 0``.
NIR: ``n2c.neuron = parallel``.
"""

from __future__ import annotations

import numpy as np
import torch

from n2c.errors import N2CError, QuantizationError
from n2c.fixed_point import LOIHI, IntegerFormat, StateClamp
from n2c.neurons.kind import NeuronKind, window_position
from n2c.neurons.multi_threshold import KIND as MULTI_THRESHOLD
from n2c.neurons.multi_threshold import fire_torch
from n2c.neurons.multi_threshold import step as multi_threshold_step


def count(total, theta, timesteps, v_init=None):
    """``n = clip(floor((Σ_t I + v_init)/θ), 0, T)``, ``v_init = θ/2`` by default (numpy or torch)."""
    k, _ = multi_threshold_step(theta / 2 if v_init is None else v_init, total, theta, timesteps)
    return k


def spikes(n, timesteps):
    """Spike train (T, ...) of a neuron with ``n`` spikes: spikes first (sorted)."""
    if isinstance(n, torch.Tensor):
        return spikes_torch(n, timesteps)
    t = np.arange(timesteps).reshape(-1, *[1] * np.ndim(n))
    return (t < np.asarray(n)[None]).astype(np.asarray(n).dtype)


def count_torch(total: torch.Tensor, theta: torch.Tensor, v_init: torch.Tensor, timesteps: int) -> torch.Tensor:
    """:func:`count` in TorchScript-able torch ops."""
    return fire_torch(v_init + total, theta, 0, timesteps)


def spikes_torch(n: torch.Tensor, timesteps: int) -> torch.Tensor:
    """:func:`spikes` in TorchScript-able torch ops."""
    t = torch.arange(timesteps, dtype=n.dtype, device=n.device).reshape([-1] + [1] * n.dim())
    return (t < n.unsqueeze(0)).to(n.dtype)


class Parallel(NeuronKind):
    name = "parallel"
    nir_name = "parallel"
    windows_late = 1
    state = ("v", "pending")  # v: the window's running total; pending: the count being sent

    def run_window(self, neuron, current, clamp: StateClamp):
        """Zero-delay: integrate the window, then emit its n spikes in the same window."""
        timesteps = len(current)
        total = self.initial_state(neuron, current.shape[1:])["v"]
        for t in range(timesteps):  # integrate the window with the membrane's saturation
            total = clamp(total + current[t] + neuron.bias)
        n = count(total, neuron.threshold, timesteps, v_init=0)
        return spikes(n, timesteps), {"v": clamp(total - neuron.threshold * n)}

    def step(self, neuron, state, current, clamp):
        raise QuantizationError(f"parallel neuron '{neuron.name}' acts once per window of T steps; it has no "
                                "per-step update (run it by windows)")

    def stream_step(self, neuron, state, current, t, depth, timesteps, clamp):
        """The window rule above; ``state`` holds v (the window's running total) and pending."""
        position = window_position(t, depth, timesteps)
        if position == 0:
            if t >= depth + timesteps:  # a whole window has been integrated
                state["pending"] = count(state["v"], neuron.threshold, timesteps, v_init=0)
            else:
                state["pending"] = np.zeros_like(state["pending"])
            state["v"] = self.initial_state(neuron, current.shape)["v"]
        state["v"] = clamp(state["v"] + current + neuron.bias)
        return (position < state["pending"]).astype(np.int64)

    def message_range(self, neuron, fmt: IntegerFormat = LOIHI):
        return 0, 1

    def check(self, neuron, fmt: IntegerFormat = LOIHI) -> None:
        MULTI_THRESHOLD.check(neuron, fmt)

    def quantize(self, layer, neuron, scale, fmt: IntegerFormat = LOIHI) -> dict:
        return MULTI_THRESHOLD.quantize(layer, neuron, scale, fmt)

    def run_float(self, layer, v, x, timesteps):
        if len(x) != timesteps:
            raise N2CError(f"parallel neuron '{layer.name}' sees its whole window of {timesteps} steps at "
                           "once; it cannot run step by step (inside a cycle)")
        n = count(v + x.sum(axis=0), layer.threshold, timesteps, v_init=0)
        return spikes(n, timesteps) * layer.spike_value, v

    def nir_metadata(self, module) -> dict:
        return {"n2c.neuron": self.nir_name, "n2c.max_spikes": 1, "n2c.min_spikes": 0}

    def read_nir(self, layer, meta, array) -> None:
        layer.max_spikes, layer.min_spikes = 1, 0


KIND = Parallel()
