"""Reference integer simulator, zero-delay timing: the specification the Lava models are
tested against.

Batched over samples and vectorized over neurons, in integers: int64, or floats that hold
integers where a bound proves them exact (``plan.py``). Synapses: ``synapses.py``; the
products of attention: ``IntProduct.run`` (``n2c.products``); every neuron runs its kind's
integer kernel (``n2c.neurons``), its membrane saturating at 24 bits (``n2c.fixed_point``).
Every layer sees step t of its input at step t. Lava adds one step per synapse process
(``stream.py`` runs that timing); ``backends.lava`` aligns its outputs for it. T is the
integer network's ``timesteps``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from backends.ir.integer import IntNetwork, IntNeuron, IntProduct, IntSynapse, message_bound
from backends.reference.plan import RunPlan, as_int64, float_tensor
from backends.reference.synapses import count_overflow, merge_overflows
from n2c.fixed_point import EXACT_FLOAT32, StateClamp


@dataclass
class SimResult:
    output: np.ndarray  # (B, ...) int64 readout potentials after the last step
    messages: dict[str, np.ndarray]  # every source/synapse/neuron -> (T, B, ...) int64 values it sent
    readout_current: np.ndarray | None = None  # (T, B, ...) int64 input of the readout at each step
    overflows: dict[str, dict] = field(default_factory=dict)  # layer -> {"limit": what, "count": values}
    spikes: dict[str, int] = field(default_factory=dict)  # counted neuron -> unit spikes Σ|messages|

    def counts(self, net: IntNetwork) -> dict[str, np.ndarray]:
        """Spike counts (T, B, ...) of the spiking neurons."""
        return {layer.name: self.messages[layer.name] for layer in net.layers
                if isinstance(layer, IntNeuron) and layer.spiking}


SATURATION = "24-bit membrane state (saturated)"
CURRENT_WRAP = "24-bit synaptic current (wrapped)"


def count_clamp(overflows: dict, name: str, clamp: StateClamp) -> None:
    """The saturations and current wraps one neuron layer's clamp counted."""
    count_overflow(overflows, name, SATURATION, clamp.count)
    count_overflow(overflows, name, CURRENT_WRAP, clamp.wraps)


def run_neuron(neuron, current, overflows: dict) -> tuple:
    """current: (T, B, *shape), int64 or a tensor of floats holding integers (``plan``). Returns
    (messages (T, B, *shape), final state); membrane saturations are counted in ``overflows``."""
    clamp = StateClamp()
    try:
        return neuron.neuron_kind.run_window(neuron, current, clamp)
    finally:
        count_clamp(overflows, neuron.name, clamp)


def run_recurrent(neuron, forward: np.ndarray, loops: list, overflows: dict) -> tuple[np.ndarray, list]:
    """A neuron layer with recurrent synapses (``loops``, prepared :class:`SynapseRun`), step by
    step: at step t its input is ``forward[t]`` plus what each loop makes of its messages at t-1
    (nothing at step 0). Returns (messages (T, B, *shape), each loop's currents (T, B, *shape)),
    int64."""
    clamp, kind = StateClamp(), neuron.neuron_kind
    state = kind.initial_state(neuron, forward.shape[1:])
    out = np.empty_like(forward)
    fed = [np.zeros_like(forward) for _ in loops]
    try:
        for step in range(len(forward)):
            current = forward[step].copy()
            for run, into in zip(loops, fed):
                if step:
                    into[step] = as_int64(run(torch.from_numpy(out[step - 1]), overflows))
                current += into[step]
            out[step] = kind.step(neuron, state, current, clamp)
    finally:
        count_clamp(overflows, neuron.name, clamp)
    return out, fed


def simulate(net: IntNetwork, x: np.ndarray, batch_size: int = 1024) -> SimResult:
    """Run float images ``x`` (B, *input_shape) through the integer network (zero-delay timing)."""
    return run_batches(net, lambda batch: net.direct_input(x[batch]), len(x), batch_size)


def predict(net: IntNetwork, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Classes (argmax of the readout) of float samples ``x``, batch by batch, keeping no messages."""
    outputs = [r.output.reshape(r.output.shape[0], -1).argmax(1) for _, r in
               run_chunks(net, lambda batch: net.direct_input(x[batch]), len(x), batch_size, keep=())]
    return np.concatenate(outputs or [np.zeros(0, np.int64)])


def run_chunks(net: IntNetwork, encoded, samples: int, batch_size: int = 1024, keep=None, count=()):
    """:func:`run_encoded` over ``samples`` in chunks of ``batch_size``: yields (slice, SimResult)
    per chunk, so that memory is bounded by one chunk whatever the number of samples.
    ``encoded(batch)`` gives the integer input (T, b, ...) of the samples in the slice ``batch``;
    ``keep`` and ``count`` as in :func:`run_encoded`."""
    plan = RunPlan(net)
    for i in range(0, samples, batch_size):
        batch = slice(i, min(i + batch_size, samples))
        yield batch, run_encoded(net, encoded(batch), keep, count, plan)


def run_batches(net: IntNetwork, encoded, samples: int, batch_size: int = 1024, keep=None, count=()) -> SimResult:
    """:func:`run_chunks` joined along the batch axis (the messages of all samples in memory:
    for tests and small runs; streaming consumers iterate :func:`run_chunks`)."""
    results = [r for _, r in run_chunks(net, encoded, samples, batch_size, keep, count)]
    return SimResult(np.concatenate([r.output for r in results]),
                     {k: np.concatenate([r.messages[k] for r in results], axis=1) for k in results[0].messages},
                     np.concatenate([r.readout_current for r in results], axis=1),
                     merge_overflows([r.overflows for r in results]),
                     {k: sum(r.spikes[k] for r in results) for k in results[0].spikes})


def exact_total(value: torch.Tensor, bound: int) -> int:
    """Σ of integers |v| ≤ ``bound`` held in floats, exactly: per row (one step of one sample) in
    the value's type where a row's sum stays inside its exact range, then in float64."""
    rows = value.reshape(len(value), -1)
    if value.dtype == torch.float32 and rows.shape[1] * bound < EXACT_FLOAT32:
        rows = rows.sum(dim=1)
    return int(rows.sum(dtype=torch.float64))


def _last_use(net: IntNetwork) -> dict[str, int]:
    """Index of the last layer that reads each value (the source's and every layer's)."""
    last = {}
    for i, layer in enumerate(net.layers):
        for name in ([layer.input] if isinstance(layer, IntSynapse) else layer.inputs):
            last[name] = i
    return last


def run_encoded(net: IntNetwork, s_in: np.ndarray, keep=None, count=(), plan: RunPlan | None = None) -> SimResult:
    """Run integer input messages ``s_in`` of shape (T, B, *input_shape), T = ``net.timesteps``.

    ``keep``: the names whose messages the result holds (None: every source, synapse and neuron;
    ``()``: none, only the readout). A value not kept is freed once its last reader has run, so
    a run holds only the values still to be read. ``count``: the neurons whose unit spikes
    (Σ|messages|) the result totals in ``spikes``, kept or not. Layers run on floats holding
    integers where that is exact (``plan``)."""
    t, b = net.check_steps(s_in), s_in.shape[1]
    plan = plan or RunPlan(net)
    frames = np.asarray(s_in, np.int64).reshape(t * b, *s_in.shape[2:])
    largest = int(np.abs(frames).max(initial=0))
    source = float_tensor(frames, largest)
    values: dict[str, torch.Tensor] = {net.source.name: source}
    # the source's range (one prepared first synapse for every chunk), or the input's own largest value past it
    bounds = {net.source.name: max(max(abs(v) for v in net.source.message_range), largest)}
    kept: dict[str, np.ndarray] = {}
    spikes: dict[str, int] = {}
    last, layers = _last_use(net), net.by_name()
    output = readout_current = None
    overflows: dict = {}

    def done(i: int, name: str, value: torch.Tensor, bound: int) -> None:
        values[name], bounds[name] = value, bound
        if keep is None or name in keep:
            kept[name] = as_int64(value).reshape(t, b, *value.shape[1:])
        if name in count:  # unit spikes: |k| summed
            signed = layers[name].neuron_kind.message_range(layers[name])[0] < 0
            spikes[name] = exact_total(value.abs() if signed else value, bound)
        for used in list(values):  # free what no later layer reads
            if last.get(used, -1) <= i:
                del values[used]

    if keep is None or net.source.name in keep:
        kept[net.source.name] = as_int64(source).reshape(t, b, *source.shape[1:])
    fed: dict[str, tuple] = {}  # recurrent synapse -> (its currents, bound), computed with its neuron
    for i, layer in enumerate(net.layers):
        if isinstance(layer, IntSynapse):
            if layer.recurrent:
                done(i, layer.name, *fed.pop(layer.name))
                continue
            run = plan.synapse(layer, bounds[layer.input])
            done(i, layer.name, run(values[layer.input], overflows, t), run.bound)
            continue
        if isinstance(layer, IntProduct):  # int64 (the embedded processors' arithmetic), its bound measured
            a, b_ = (as_int64(values[name]).reshape(t, b, *values[name].shape[1:]) for name in layer.inputs)
            product = layer.run(a, b_).reshape(t * b, *layer.out_shape)
            largest = int(np.abs(product).max(initial=0))
            done(i, layer.name, float_tensor(product, largest), largest)
            continue
        loops = net.loops(layer, layers) if isinstance(layer, IntNeuron) else []
        if loops:
            current = sum(as_int64(values[name]) for name in net.forward_inputs(layer, layers)).reshape(
                t, b, *layer.shape)
            runs = [plan.synapse(r, message_bound(layer)) for r in loops]
            k, currents = run_recurrent(layer, current, runs, overflows)
            for r, run, c in zip(loops, runs, currents):
                fed[r.name] = (float_tensor(c.reshape(t * b, *c.shape[2:]), run.bound), run.bound)
            done(i, layer.name, float_tensor(k.reshape(t * b, *layer.shape), message_bound(layer)),
                 message_bound(layer))
            continue
        current_bound = sum(bounds[name] for name in layer.inputs)
        dtype = plan.neuron_type(layer, current_bound)
        if dtype is None:  # the kind's int64 kernel
            current = sum(as_int64(values[name]) for name in layer.inputs) if layer.inputs else \
                np.zeros((t * b, *layer.shape), np.int64)  # none: the always-on neuron
            current = current.reshape(t, b, *layer.shape)
            k, state = run_neuron(layer, current, overflows)
            k, state = torch.from_numpy(k), {key: torch.from_numpy(v) for key, v in state.items()}
            current = torch.from_numpy(current)
        else:
            current = sum(values[name].to(dtype) for name in layer.inputs) if layer.inputs else \
                torch.zeros((t * b, *layer.shape), dtype=dtype)
            current = current.reshape(t, b, *layer.shape)
            k, state = run_neuron(plan.neuron(layer, dtype), current, overflows)
        if layer.name == net.output:  # the readout sends nothing: its potential is the result
            output = as_int64(state["v"])
            readout_current = as_int64(current) + np.asarray(layer.bias, np.int64)
        else:
            done(i, layer.name, k.reshape(t * b, *layer.shape), message_bound(layer))
    return SimResult(output, kept, readout_current, overflows, spikes)
