"""Multi-threshold integrate-and-fire neuron, reset by subtraction (kind ``mtn``).

State ``v``, input current ``I(t)``, threshold ``θ > 0``, at most ``K`` positive and
``K⁻`` negative spikes per step, initial potential ``v(0) = v_init``::

    m(t) = v(t-1) + I(t)                         (charge)
    k(t) = clip(floor(m(t) / θ), -K⁻, K)         (fire; inclusive: m ≥ θ fires)
    v(t) = m(t) - θ·k(t)                         (reset by subtraction)
    out(t) = a·k(t)                              (graded spike of k units; a = θ unless calibrated)

* ``K = 1, K⁻ = 0``: the IF neuron of QCFS conversion over T steps.
* ``K = L, T = 1``: the multi-threshold neuron (MTN). With ``v_init = θ/2`` (the optimal
  initial potential) the count is the QCFS level ``clip(floor(z/θ + 1/2), 0, L)``, θ = λ/L.
* ``K⁻ > 0``: polarity (:mod:`n2c.neurons.polarity`).
* Temporal-to-spatial equivalence (Chen et al.): an MTN with ``θ/T``, ``v_init/T`` and
  ``K = T`` equals the T-step average of the IF neuron for a constant input.

Integer form (per step, ``b`` the bias)::

    m = v + I + b;   k = clip(m // θ, -K⁻, K);   v = clamp24(m - k·θ);   send k

Quantization: θ, v_init to integers at the layer scale S; θ must fit the 23-bit
multi-threshold width and be ≥ 1. NIR: ``n2c.neuron = multi_threshold_if`` with
``n2c.max_spikes`` and ``n2c.min_spikes``.
"""

from __future__ import annotations

import warnings
from typing import Tuple

import numpy as np
import torch

from n2c.errors import QuantizationError
from n2c.fixed_point import LOIHI, IntegerFormat, StateClamp, to_signed
from n2c.neurons.kind import NeuronKind, clip, floor_divide, largest_magnitude


def step(v, current, theta, max_spikes, min_spikes=0):
    """One step. Returns ``(k, v_next)``: ``k = clip(floor((v + I)/θ), -K⁻, K)``,
    ``v_next = v + I - θ·k``. numpy (float or int64) or torch."""
    m = v + current
    if isinstance(m, torch.Tensor) and not m.requires_grad and np.ndim(max_spikes) == 0 and np.ndim(min_spikes) == 0:
        # the same equation in place on m's buffer (the reference's integers held in floats: no rounding)
        k = torch.div(m, theta).floor_().clamp_(-int(min_spikes), int(max_spikes))
        return k, m.addcmul_(k, theta, value=-1) if isinstance(theta, torch.Tensor) else m.sub_(k * theta)
    if isinstance(m, np.ndarray) and m.dtype == np.int64 and np.ndim(max_spikes) == 0 and max_spikes == 1 \
            and np.ndim(min_spikes) == 0 and min_spikes == 0:
        # one spike at most (IF): clip(floor(m/θ), 0, 1) is m ≥ θ for θ ≥ 1, without a division
        k = (m >= theta).astype(np.int64)
        return k, m - theta * k
    k = clip(floor_divide(m, theta), -min_spikes, max_spikes)
    return k, m - theta * k


def fire_torch(m: torch.Tensor, theta: torch.Tensor, lowest: int, highest: int,
               straight_through: bool = False) -> torch.Tensor:
    """``clip(floor(m/θ), lowest, highest)`` (lowest = -K⁻, highest = K) in TorchScript-able
    torch ops. ``straight_through``: the floor passes the gradient unchanged (floor(q) + (q - q)
    keeps the value exactly floor(q))."""
    q = m / theta
    f = torch.floor(q)
    if straight_through:
        f = f.detach() + (q - q.detach())
    return torch.clamp(f, lowest, highest)


def step_torch(v: torch.Tensor, current: torch.Tensor, theta: torch.Tensor, max_spikes: int,
               min_spikes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`step` in TorchScript-able torch ops (the same operations in the same order)."""
    m = v + current
    k = fire_torch(m, theta, -min_spikes, max_spikes)
    return k, m - theta * k


def qcfs_count(z, theta, levels):
    """QCFS level of pre-activation ``z``: ``clip(floor((z + θ/2)/θ), 0, L)``: the neuron's
    count after one step from ``v_init = θ/2``, so the one-step SNN and the QCFS ANN agree bit
    for bit in floating point."""
    k, _ = step(theta / 2, z, theta, levels)
    return k


class MultiThreshold(NeuronKind):
    name = "mtn"
    nir_name = "multi_threshold_if"

    def step(self, neuron, state, current, clamp: StateClamp):
        k, v = step(state["v"] + neuron.bias, current, neuron.threshold, neuron.max_spikes, neuron.min_spikes)
        state["v"] = clamp(v)
        return k

    def message_range(self, neuron, fmt: IntegerFormat = LOIHI):
        return -int(neuron.min_spikes), int(neuron.max_spikes)

    def float_bound(self, neuron, current_bound, fmt: IntegerFormat = LOIHI):
        """|v| ≤ 2^23, so |m| ≤ 2^23 + |I| + |b| and |v - θk| ≤ |m| + θ·max(K, K⁻)."""
        spikes = max(int(np.max(neuron.max_spikes)), int(np.max(neuron.min_spikes)))
        return (fmt.state_max + 1 + current_bound + largest_magnitude(neuron.bias)
                + largest_magnitude(neuron.threshold) * spikes)

    def check(self, neuron, fmt: IntegerFormat = LOIHI) -> None:
        super().check(neuron, fmt)
        if (np.asarray(neuron.threshold) < 1).any():
            raise QuantizationError(f"neuron '{neuron.name}': threshold below 1; quantize the layer at a larger scale")

    def quantize(self, layer, neuron, scale: float, fmt: IntegerFormat = LOIHI) -> dict:
        self.quantize_threshold(layer, neuron, scale, fmt)
        return self.threshold_summary(neuron, layer.name)

    def quantize_threshold(self, layer, neuron, scale: float, fmt: IntegerFormat = LOIHI) -> None:
        """θ and v_init at scale S; the spike counts and the spike value as they are."""
        shape = neuron.shape
        neuron.threshold = to_signed(np.broadcast_to(layer.threshold, shape) * scale, fmt.multi_threshold_bits,
                                     layer.name, "the threshold")
        if (neuron.threshold < 1).any():
            theta = float(np.min(layer.threshold))
            raise QuantizationError(
                f"layer '{layer.name}': threshold {theta:.3g} rounds to zero at scale {scale:g}, which the "
                f"layer's largest weight sets (one {fmt.weight_bits}-bit scale per layer: a weight over "
                f"{fmt.weight_max:g}x the threshold leaves it below one unit); a channel whose BatchNorm variance is "
                "near zero (a dead channel) folds into such weights: prune dead channels, or fine-tune")
        neuron.v_init = to_signed(np.broadcast_to(layer.v_init, shape) * scale, fmt.state_bits, layer.name, "v_init")
        neuron.max_spikes, neuron.min_spikes = layer.max_spikes, layer.min_spikes
        neuron.spike_value = np.broadcast_to(layer.spike_value, shape).astype(np.float64)

    @staticmethod
    def threshold_summary(neuron, name: str) -> dict:
        """The smallest integer threshold, with a warning when it leaves little precision."""
        smallest = int(neuron.threshold.min())
        if smallest < 16:
            warnings.warn(f"layer '{name}': integer threshold {smallest} leaves little precision; the float and "
                          "integer networks may disagree more than usual")
        return {"threshold_int_min": smallest}

    def run_float(self, layer, v, x, timesteps):
        out = np.empty_like(x)
        for t in range(len(x)):
            k, v = step(v, x[t], layer.threshold, layer.max_spikes, layer.min_spikes)
            out[t] = k * layer.spike_value
        return out, v

    def nir_metadata(self, module) -> dict:
        return {"n2c.neuron": self.nir_name, "n2c.max_spikes": int(module.max_spikes),
                "n2c.min_spikes": int(module.min_spikes)}


KIND = MultiThreshold()
