"""Reference integer simulator: the specification the Lava models are tested against.

Batched over samples and vectorized over neurons. Arithmetic (all int64):

* dense synapse:  a = wrap32((W·s) << weight_exp)   (Lava's effective 8-bit weights; Lava's
  Dense model accumulates in int32 and does not saturate its "16-bit" output)
* conv / sum-pool synapse: a = wrap24(W ⊛ s)   (Lava's Conv wraps its output to signed 24 bits)
* multi-threshold neuron (``n2c.neurons.multi_threshold_step``), per step:
  m = v + Σa + b;  k = clip(m // θ, -K⁻, K);  v = clamp24(m - k·θ);  emit k
* parallel neuron (``n2c.neurons.parallel_count``), once per window of T steps:
  v = clamp24(v + Σa + b) over the window;  n = clip(v // θ, 0, T);  emit 1 at steps 0..n-1
* scale-and-fire neuron (``n2c.neurons.scale_and_fire_step``), per step:
  m = v + Σa + b;  c = codes[#{e_i ≤ m}];  v = clamp24(m - c·u);  emit c
* Loihi CUBA neuron for NIR's neurons (``n2c.backends.loihi_lif.lif_step``), per step:
  u = wrap24(decay(u) + Σa·64);  v = clamp24(decay(v) + u + b);  s = v > θ·64;  v = 0 where s
* readout neuron: v = clamp24(v + Σa + b); the output is v after the last step.

Timing is zero-delay: every layer sees step t of its input at step t. Lava adds
one step per synapse process; ``n2c.backends.lava`` aligns its outputs for that.
Convolutions are computed in float64 by torch, which is exact for integers below
2^53; :func:`_check_exact_range` proves the bound per layer before running.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from n2c.backends.quantize import IntNetwork, IntNeuron, IntSynapse, clamp24
from n2c.backends.loihi_lif import lif_step
from n2c.neurons import multi_threshold_step, parallel_count, parallel_spikes, scale_and_fire_step

EXACT_FLOAT64 = 2 ** 53


def lava_effective_weights(w: np.ndarray) -> np.ndarray:
    """What Lava's fixed-point Dense uses: mixed-sign weights clipped to [-256, 255]
    then the lowest bit dropped (floor), non-negative ones clipped to [0, 255]."""
    w = np.asarray(w, dtype=np.int64)
    if (w < 0).any() and (w > 0).any():
        return np.right_shift(np.clip(w, -256, 255), 1) << 1
    return np.clip(w, -255, 255)


def wrap_signed(x: np.ndarray, bits: int) -> np.ndarray:
    """Two's-complement wrap-around to ``bits`` bits, as fixed-width hardware registers do."""
    half = 1 << (bits - 1)
    return ((x + half) & ((1 << bits) - 1)) - half


@dataclass
class SimResult:
    output: np.ndarray  # (B, ...) int64 readout potentials after the last step
    messages: dict[str, np.ndarray]  # every source/synapse/neuron -> (T, B, ...) int64 values it sent
    readout_current: np.ndarray | None = None  # (T, B, ...) int64 input of the readout at each step
    overflows: dict[str, dict] = field(default_factory=dict)  # layer -> {"limit": what, "count": values}

    def counts(self, net: IntNetwork) -> dict[str, np.ndarray]:
        """Spike counts (T, B, ...) of the multi-threshold neurons."""
        return {layer.name: self.messages[layer.name] for layer in net.layers
                if isinstance(layer, IntNeuron) and layer.spiking}


def _check_exact_range(syn: IntSynapse, max_in: int) -> None:
    w = np.abs(syn.weight).reshape(syn.weight.shape[0], -1).sum(axis=1).max()
    if w * max(max_in, 1) >= EXACT_FLOAT64:
        raise OverflowError(f"synapse '{syn.name}': sums may exceed 2^53; reference simulation would be inexact")


ACCUMULATOR_LIMIT = 2 ** 15  # Loihi's 16-bit synaptic accumulator (Lava's Dense declares it, does not clip)


def _count(overflows: dict, name: str, limit: str, count: int) -> None:
    if count:
        entry = overflows.setdefault(name, {"limit": limit, "count": 0})
        entry["count"] += int(count)


def _synapse(syn: IntSynapse, s: np.ndarray, overflows: dict) -> np.ndarray:
    """s: (N, *in_shape) int64 messages (N = T·B) → (N, *out_shape) int64 currents. Values past
    Loihi's limits are counted in ``overflows`` (the arithmetic stays Lava's)."""
    n = s.shape[0]
    if syn.kind == "dense":
        w = lava_effective_weights(syn.weight)
        _check_exact_range(syn, int(np.abs(s).max(initial=0)))
        a = (s.reshape(n, -1).astype(np.float64) @ w.T.astype(np.float64)).astype(np.int64)
        a = wrap_signed(a, 32)
        a = wrap_signed(a << syn.weight_exp if syn.weight_exp >= 0 else np.right_shift(a, -syn.weight_exp), 32)
        _count(overflows, syn.name, "16-bit synaptic accumulator", (np.abs(a) >= ACCUMULATOR_LIMIT).sum())
        return a
    x = torch.from_numpy(s.astype(np.float64))
    if syn.kind == "conv":
        _check_exact_range(syn, int(np.abs(s).max(initial=0)))
        a = F.conv2d(x, torch.from_numpy(syn.weight.astype(np.float64)), stride=syn.stride,
                     padding=syn.padding, dilation=syn.dilation, groups=syn.groups)
    elif syn.kind == "sumpool":
        a = F.avg_pool2d(x, syn.kernel, syn.stride, syn.padding, count_include_pad=True,
                         divisor_override=1)
    else:
        raise ValueError(f"unknown synapse kind {syn.kind!r}")
    a = a.round().numpy().astype(np.int64)
    _count(overflows, syn.name, "24-bit convolution output (Lava's Conv wraps)", (np.abs(a) >= 2 ** 23).sum())
    return wrap_signed(a, 24)


def _neuron(neuron: IntNeuron, current: np.ndarray, timesteps: int, overflows: dict) -> tuple[np.ndarray, np.ndarray]:
    """current: (T, B, *shape). Returns (counts (T, B, *shape), final v (B, *shape)); membrane
    saturations at 24 bits are counted in ``overflows``."""
    sat = _Saturation()
    try:
        return _neuron_steps(neuron, current, timesteps, neuron.bias, sat)
    finally:
        _count(overflows, neuron.name, "24-bit membrane state (saturated)", sat.count)


class _Saturation:
    """clamp24 that counts the values it changes."""

    def __init__(self):
        self.count = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = clamp24(x)
        self.count += int((y != x).sum())
        return y


def _neuron_steps(neuron: IntNeuron, current: np.ndarray, timesteps: int, bias, clamp: _Saturation):
    if neuron.kind == "readout":
        v = np.zeros(current.shape[1:], dtype=np.int64)
        for t in range(timesteps):
            v = clamp(v + current[t] + bias)
        return np.zeros((0,)), v
    v = np.broadcast_to(neuron.v_init, current.shape[1:]).astype(np.int64)
    if neuron.kind in ("lif", "li"):  # Loihi's CUBA neuron; the bias enters v, not the input
        u, out = np.zeros_like(v), np.empty_like(current)
        for t in range(timesteps):
            out[t], u, v = lif_step(u, v, current[t], neuron.du, neuron.dv, bias, neuron.threshold,
                                    neuron.kind == "lif")
            clamp.count += int((np.abs(v) >= 2 ** 23 - 1).sum())  # v at Lava's clip limit
        return out, v
    if neuron.kind == "parallel":
        total = v
        for t in range(timesteps):  # integrate the window with the membrane's saturation
            total = clamp(total + current[t] + bias)
        n = parallel_count(total, neuron.threshold, timesteps, v_init=0)
        return parallel_spikes(n, timesteps), clamp(total - neuron.threshold * n)
    counts = np.empty_like(current)
    for t in range(timesteps):
        if neuron.kind == "sfn":
            k, v = scale_and_fire_step(v, current[t] + bias, neuron.edges, neuron.codes, neuron.code_value)
        else:
            k, v = multi_threshold_step(v, current[t] + bias, neuron.threshold, neuron.max_spikes,
                                        neuron.min_spikes)
        v = clamp(v)
        counts[t] = k
    return counts, v


def simulate(net: IntNetwork, x: np.ndarray, batch_size: int = 1024) -> SimResult:
    """Run float images ``x`` (B, *input_shape) through the integer network (zero-delay timing)."""
    return run_batches(net, lambda batch: net.direct_input(x[batch]), len(x), batch_size)


def run_batches(net: IntNetwork, encoded, samples: int, batch_size: int = 1024) -> SimResult:
    """:func:`run_encoded` over ``samples`` in batches; ``encoded(batch)`` gives the integer input
    (T, b, ...) of the samples in the slice ``batch``. Results are joined along the batch axis."""
    results = [run_encoded(net, encoded(slice(i, i + batch_size))) for i in range(0, samples, batch_size)]
    return SimResult(np.concatenate([r.output for r in results]),
                     {k: np.concatenate([r.messages[k] for r in results], axis=1) for k in results[0].messages},
                     np.concatenate([r.readout_current for r in results], axis=1),
                     merge_overflows([r.overflows for r in results]))


def merge_overflows(parts: list[dict]) -> dict:
    merged: dict = {}
    for part in parts:
        for name, entry in part.items():
            _count(merged, name, entry["limit"], entry["count"])
    return merged


def run_encoded(net: IntNetwork, s_in: np.ndarray) -> SimResult:
    """Run integer input messages ``s_in`` of shape (T, B, *input_shape)."""
    t, b = s_in.shape[:2]
    values: dict[str, np.ndarray] = {net.source.name: s_in.reshape(t * b, *s_in.shape[2:])}
    output = readout_current = None
    overflows: dict = {}
    for layer in net.layers:
        if isinstance(layer, IntSynapse):
            values[layer.name] = _synapse(layer, values[layer.input], overflows)
            continue
        current = sum(values[name] for name in layer.inputs).reshape(t, b, *layer.shape)
        k, v = _neuron(layer, current, t, overflows)
        if layer.kind == "readout":
            output, readout_current = v, current + layer.bias
        else:
            values[layer.name] = k.reshape(t * b, *layer.shape)
    return SimResult(output, {name: v.reshape(t, b, *v.shape[1:]) for name, v in values.items()}, readout_current,
                     overflows)
