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
* Loihi CUBA neuron for NIR's neurons (``backends.loihi_lif.lif_step``), per step:
  u = wrap24(decay(u) + Σa·64);  v = clamp24(decay(v) + u + b);  s = v > θ·64;  v = 0 where s
* readout neuron: v = clamp24(v + Σa + b); the output is v after the last step.

Timing is zero-delay: every layer sees step t of its input at step t. Lava adds
one step per synapse process; ``backends.lava`` aligns its outputs for that.
Products are computed in floating point by torch/BLAS: float32 where every partial sum is
below 2^24 (exact there, and faster), float64 below 2^53; :func:`_exact_float_type` proves
the bound per layer and batch before running.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from backends.quantize import IntNetwork, IntNeuron, IntSynapse, clamp24
from backends.loihi_lif import lif_step
from n2c.neurons import multi_threshold_step, parallel_count, parallel_spikes, scale_and_fire_step

EXACT_FLOAT64 = 2 ** 53
EXACT_FLOAT32 = 2 ** 24


def lava_effective_weights(w: np.ndarray, num_weight_bits: int = 8) -> np.ndarray:
    """The weights Lava's fixed-point Dense multiplies with: sign mode from the weights
    (excitatory if all ≥ 0, else inhibitory if all ≤ 0, else mixed), magnitudes clipped to
    8 bits ([−256, 255], [0, 255] or [−255, 0]), and 8 − num_weight_bits (+1 when mixed) low
    bits dropped (floor): mixed-sign weights lose their lowest bit even at 8 bits."""
    w = np.asarray(w, dtype=np.int64)
    mixed = bool((w < 0).any() and (w > 0).any())
    sign = -1 if not mixed and (w < 0).any() else 1
    m = np.clip(sign * w, -256 if mixed else 0, 255)
    drop = 8 - num_weight_bits + mixed
    return sign * ((m >> drop) << drop)


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


def _exact_float_type(syn: IntSynapse, s: np.ndarray):
    """The narrowest float type that holds every partial sum of ``W·s`` exactly: the bound is
    max row Σ|w| · max|s|; float32 is exact below 2^24, float64 below 2^53."""
    w = np.abs(syn.weight).reshape(syn.weight.shape[0], -1).sum(axis=1).max()
    bound = int(w) * max(int(np.abs(s).max(initial=0)), 1)
    if bound < EXACT_FLOAT32:
        return np.float32
    if bound < EXACT_FLOAT64:
        return np.float64
    raise OverflowError(f"synapse '{syn.name}': sums may exceed 2^53; reference simulation would be inexact")


ACCUMULATOR_LIMIT = 2 ** 15  # Loihi's 16-bit synaptic accumulator (Lava's Dense declares it, does not clip)


def _count(overflows: dict, name: str, limit: str, count: int) -> None:
    if count:
        entry = overflows.setdefault(name, {"limit": limit, "count": 0})
        entry["count"] += int(count)


def _synapse(syn: IntSynapse, s: np.ndarray, overflows: dict, timesteps: int = 1) -> np.ndarray:
    """s: (N, *in_shape) int64 messages (N = T·B, step-major) → (N, *out_shape) int64 currents. A
    synapse delay k moves a contribution k steps later (``timesteps`` = T gives the step axis); what
    moves past the last step is lost. Values past Loihi's limits are counted in ``overflows`` (the
    arithmetic stays Lava's)."""
    n = s.shape[0]
    if syn.kind == "dense":
        w = lava_effective_weights(syn.weight)
        flat = s.reshape(n, -1).astype(_exact_float_type(syn, s))
        delays = np.zeros(w.shape, np.int64) if syn.delay is None else np.asarray(syn.delay, np.int64)
        a = np.zeros((n, w.shape[0]), dtype=np.int64)
        for k in np.unique(delays):  # Lava's DelayDense sums each delay's product separately
            part = _dense_product(np.where(delays == k, w, 0), flat, syn.weight_exp)
            a = wrap_signed(a + _later(part, int(k), timesteps), 32)
        _count(overflows, syn.name, "16-bit synaptic accumulator", (np.abs(a) >= ACCUMULATOR_LIMIT).sum())
        return a
    if syn.kind == "conv":
        dtype = _exact_float_type(syn, s)
        a = F.conv2d(torch.from_numpy(s.astype(dtype)), torch.from_numpy(syn.weight.astype(dtype)), stride=syn.stride,
                     padding=syn.padding, dilation=syn.dilation, groups=syn.groups)
    elif syn.kind == "sumpool":
        x = torch.from_numpy(s.astype(np.float32 if np.abs(s).max(initial=0) * np.prod(syn.kernel) < EXACT_FLOAT32
                                      else np.float64))
        a = F.avg_pool2d(x, syn.kernel, syn.stride, syn.padding, count_include_pad=True,
                         divisor_override=1)
    else:
        raise ValueError(f"unknown synapse kind {syn.kind!r}")
    a = a.round().numpy().astype(np.int64)
    _count(overflows, syn.name, "24-bit convolution output (Lava's Conv wraps)", (np.abs(a) >= 2 ** 23).sum())
    return wrap_signed(a, 24)


def _dense_product(w: np.ndarray, flat: np.ndarray, weight_exp: int) -> np.ndarray:
    """wrap32((W·s) << weight_exp), the shift a floor for negative exponents, as Lava's Dense."""
    a = wrap_signed((flat @ w.T.astype(flat.dtype)).astype(np.int64), 32)
    return wrap_signed(a << weight_exp if weight_exp >= 0 else np.right_shift(a, -weight_exp), 32)


def _later(a: np.ndarray, k: int, timesteps: int) -> np.ndarray:
    """Move step-major values (T·B, ...) k steps later; the first k steps become 0."""
    if k == 0:
        return a
    steps = a.reshape(timesteps, -1, *a.shape[1:])
    moved = np.zeros_like(steps)
    moved[k:] = steps[:timesteps - k]
    return moved.reshape(a.shape)


def _neuron(neuron: IntNeuron, current: np.ndarray, timesteps: int, overflows: dict) -> tuple[np.ndarray, np.ndarray]:
    """current: (T, B, *shape). Returns (counts (T, B, *shape), final v (B, *shape)); membrane
    saturations at 24 bits are counted in ``overflows``."""
    sat = _Saturation()
    try:
        if neuron.kind == "parallel":
            return _parallel_window(neuron, current, timesteps, sat)
        state = _initial_state(neuron, current.shape[1:])
        out = np.empty_like(current)
        for t in range(timesteps):
            out[t] = _step(neuron, state, current[t], sat)
        return out, state["v"]
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


def _initial_state(neuron: IntNeuron, shape: tuple[int, ...]) -> dict:
    """A neuron's state at the start of a sample window: v = v_init (0 for CUBA and readout), u = 0."""
    v0 = neuron.v_init if neuron.kind in ("mtn", "sfn", "parallel") else 0
    return {"v": np.broadcast_to(np.asarray(v0, dtype=np.int64), shape).copy(),
            "u": np.zeros(shape, dtype=np.int64)}


def _step(neuron: IntNeuron, state: dict, current: np.ndarray, clamp: _Saturation) -> np.ndarray:
    """Advance ``state`` by one step with input ``current``; returns the message sent (the
    readout sends its potential). Not for the parallel neuron, which acts once per window."""
    v, bias = state["v"], neuron.bias
    if neuron.kind == "readout":
        state["v"] = clamp(v + current + bias)
        return state["v"]
    if neuron.kind in ("lif", "li"):  # Loihi's CUBA neuron; the bias enters v, not the input
        out, state["u"], state["v"] = lif_step(state["u"], v, current, neuron.du, neuron.dv, bias,
                                               neuron.threshold, neuron.kind == "lif")
        clamp.count += int((np.abs(state["v"]) >= 2 ** 23 - 1).sum())  # v at Lava's clip limit
        return out
    if neuron.kind == "sfn":
        k, v = scale_and_fire_step(v, current + bias, neuron.edges, neuron.codes, neuron.code_value)
    elif neuron.kind == "mtn":
        k, v = multi_threshold_step(v, current + bias, neuron.threshold, neuron.max_spikes, neuron.min_spikes)
    else:
        raise ValueError(f"neuron '{neuron.name}': unknown kind {neuron.kind!r}")
    state["v"] = clamp(v)
    return k


def _parallel_window(neuron: IntNeuron, current: np.ndarray, timesteps: int, clamp: _Saturation):
    """Zero-delay parallel neuron: integrate the window, then emit its n spikes in the same window."""
    total = _initial_state(neuron, current.shape[1:])["v"]
    for t in range(timesteps):  # integrate the window with the membrane's saturation
        total = clamp(total + current[t] + neuron.bias)
    n = parallel_count(total, neuron.threshold, timesteps, v_init=0)
    return parallel_spikes(n, timesteps), clamp(total - neuron.threshold * n)


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
            values[layer.name] = _synapse(layer, values[layer.input], overflows, t)
            continue
        current = sum(values[name] for name in layer.inputs).reshape(t, b, *layer.shape)
        k, v = _neuron(layer, current, t, overflows)
        if layer.kind == "readout":
            output, readout_current = v, current + layer.bias
        else:
            values[layer.name] = k.reshape(t * b, *layer.shape)
    return SimResult(output, {name: v.reshape(t, b, *v.shape[1:]) for name, v in values.items()}, readout_current,
                     overflows)


# --- Lava timing ---------------------------------------------------------------------------------

@dataclass
class StreamResult:
    """Lava-timed run of B samples back to back, one stream of L = B·T + flush global steps."""
    messages: dict[str, np.ndarray]  # every neuron -> (L, *shape) int64 values sent at each global step
    state: dict[str, dict[str, np.ndarray]]  # neuron -> {"v": ..., "u": ...} after the last step
    depth: dict[str, int]  # pipeline delay in steps of every layer's output
    overflows: dict[str, dict] = field(default_factory=dict)

    def window(self, name: str, timesteps: int, samples: int) -> np.ndarray:
        """The messages of ``name`` during each sample's window, (T, B, *shape): sample i, step j is
        global step i·T + j + depth."""
        d = self.depth[name]
        steps = (np.arange(samples)[None, :] * timesteps + np.arange(timesteps)[:, None] + d)
        return self.messages[name][steps]


def stream_depths(net: IntNetwork, period: int | None = None) -> dict[str, int]:
    """Pipeline delay in steps of every value under Lava timing, for samples of ``period`` steps
    (default T): the source 0; a synapse Process adds one step (its output at step t is computed
    from its input at step t-1); a neuron takes its deepest input (the others are aligned to it)
    and a parallel neuron adds one window (it knows its count only at the window's end)."""
    period = period or net.timesteps
    depth = {net.source.name: 0}
    for layer in net.layers:
        if isinstance(layer, IntSynapse):
            depth[layer.name] = depth[layer.input] + 1
        else:
            depth[layer.name] = max(depth[name] for name in layer.inputs) + (period if layer.kind == "parallel" else 0)
    return depth


def flush_steps(net: IntNetwork, period: int | None = None) -> int:
    """Zero steps after the last sample so that every neuron sends all of it: the deepest neuron
    output (the readout's depth whenever every layer feeds the output)."""
    depth = stream_depths(net, period)
    return max(depth[layer.name] for layer in net.layers if isinstance(layer, IntNeuron))


def run_stream(net: IntNetwork, s_in: np.ndarray) -> StreamResult:
    """Run integer inputs ``s_in`` (T, B, *input_shape) with Lava's timing, as ``backends.lava``
    builds the network: samples stream back to back (sample i, step j at global step t = i·T + j),
    followed by ``flush`` zero steps that drain the pipeline. At step t:

    * a synapse sends what it computed from its input at step t-1 (plus any synaptic delay k:
      from step t-1-k); nothing before step 0;
    * a neuron whose aligned input has depth d starts from its initial state at t = 0, returns to
      it before its update at every t with (t - d) % T == 0, and updates and sends at every step
      (also t < d, before the first sample arrives: no gating, as Lava's ``LIFReset``);
    * the parallel neuron integrates the window [d + iT, d + (i+1)T) and sends its n unit spikes
      at the first n steps of the next window.

    Where every window lies inside the stream, ``window(name, T, B)`` equals the zero-delay
    :func:`run_encoded` messages: the timing is the only difference."""
    t, b = s_in.shape[:2]
    depth = stream_depths(net, t)
    length = b * t + flush_steps(net, t)
    stream = np.zeros((length, *s_in.shape[2:]), dtype=np.int64)
    stream[:b * t] = np.swapaxes(s_in, 0, 1).reshape(b * t, *s_in.shape[2:])
    values = {net.source.name: stream}
    messages, state, overflows = {}, {}, {}
    for layer in net.layers:
        if isinstance(layer, IntSynapse):  # one step of Process latency, as a delay of 1 on the whole stream
            values[layer.name] = _later(_synapse(layer, values[layer.input], overflows, length), 1, length)
            continue
        d = max(depth[name] for name in layer.inputs)
        current = sum(_later(values[name], d - depth[name], length) for name in layer.inputs)
        sat = _Saturation()
        if layer.kind == "parallel":
            out, state[layer.name] = _parallel_stream(layer, current, t, d, sat)
        else:
            st = _initial_state(layer, tuple(layer.shape))
            out = np.empty_like(current)
            for step in range(length):
                if (step - d) % t == 0:
                    st = _initial_state(layer, tuple(layer.shape))
                out[step] = _step(layer, st, current[step], sat)
            state[layer.name] = st
        _count(overflows, layer.name, "24-bit membrane state (saturated)", sat.count)
        values[layer.name] = messages[layer.name] = out
    return StreamResult(messages, state, depth, overflows)


def _parallel_stream(neuron: IntNeuron, current: np.ndarray, timesteps: int, d: int, clamp: _Saturation):
    """Lava-timed parallel neuron (see :func:`run_stream`); its state "v" is the window's total."""
    fresh = _initial_state(neuron, tuple(neuron.shape))["v"]
    total, pending = fresh.copy(), np.zeros_like(fresh)
    out = np.empty_like(current)
    for step in range(len(current)):
        if (step - d) % timesteps == 0:
            if step >= d + timesteps:  # a whole window has been integrated
                pending = parallel_count(total, neuron.threshold, timesteps, v_init=0)
            else:
                pending = np.zeros_like(fresh)
            total = fresh.copy()
        total = clamp(total + current[step] + neuron.bias)
        out[step] = ((step - d) % timesteps < pending).astype(np.int64)
    return out, {"v": total, "u": np.zeros_like(total)}
