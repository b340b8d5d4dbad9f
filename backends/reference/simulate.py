"""Reference integer simulator, zero-delay timing: the specification the Lava models are
tested against.

Batched over samples and vectorized over neurons, all int64. Synapses: ``synapses.py``; the
products of attention: ``IntProduct.run`` (``n2c.products``);
every neuron runs its kind's integer kernel (``n2c.neurons``), its membrane saturating at
24 bits (``n2c.fixed_point``). Every layer sees step t of its input at step t. Lava adds one
step per synapse process (``stream.py`` runs that timing); ``backends.lava`` aligns its
outputs for it. T is the integer network's ``timesteps``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from backends.quantize import IntNetwork, IntNeuron, IntProduct, IntSynapse
from backends.reference.synapses import count_overflow, merge_overflows, synapse
from n2c.fixed_point import StateClamp


@dataclass
class SimResult:
    output: np.ndarray  # (B, ...) int64 readout potentials after the last step
    messages: dict[str, np.ndarray]  # every source/synapse/neuron -> (T, B, ...) int64 values it sent
    readout_current: np.ndarray | None = None  # (T, B, ...) int64 input of the readout at each step
    overflows: dict[str, dict] = field(default_factory=dict)  # layer -> {"limit": what, "count": values}

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


def run_neuron(neuron: IntNeuron, current: np.ndarray, overflows: dict) -> tuple[np.ndarray, dict]:
    """current: (T, B, *shape). Returns (messages (T, B, *shape), final state); membrane saturations
    are counted in ``overflows``."""
    clamp = StateClamp()
    try:
        return neuron.neuron_kind.run_window(neuron, current, clamp)
    finally:
        count_clamp(overflows, neuron.name, clamp)


def simulate(net: IntNetwork, x: np.ndarray, batch_size: int = 1024) -> SimResult:
    """Run float images ``x`` (B, *input_shape) through the integer network (zero-delay timing)."""
    return run_batches(net, lambda batch: net.direct_input(x[batch]), len(x), batch_size)


def predict(net: IntNetwork, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Classes (argmax of the readout) of float samples ``x``, batch by batch, keeping no messages."""
    outputs = [r.output.reshape(r.output.shape[0], -1).argmax(1) for _, r in
               run_chunks(net, lambda batch: net.direct_input(x[batch]), len(x), batch_size, keep=())]
    return np.concatenate(outputs or [np.zeros(0, np.int64)])


def run_chunks(net: IntNetwork, encoded, samples: int, batch_size: int = 1024, keep=None):
    """:func:`run_encoded` over ``samples`` in chunks of ``batch_size``: yields (slice, SimResult)
    per chunk, so that memory is bounded by one chunk whatever the number of samples.
    ``encoded(batch)`` gives the integer input (T, b, ...) of the samples in the slice ``batch``;
    ``keep`` as in :func:`run_encoded`."""
    for i in range(0, samples, batch_size):
        batch = slice(i, min(i + batch_size, samples))
        yield batch, run_encoded(net, encoded(batch), keep)


def run_batches(net: IntNetwork, encoded, samples: int, batch_size: int = 1024, keep=None) -> SimResult:
    """:func:`run_chunks` joined along the batch axis (the messages of all samples in memory:
    for tests and small runs; streaming consumers iterate :func:`run_chunks`)."""
    results = [r for _, r in run_chunks(net, encoded, samples, batch_size, keep)]
    return SimResult(np.concatenate([r.output for r in results]),
                     {k: np.concatenate([r.messages[k] for r in results], axis=1) for k in results[0].messages},
                     np.concatenate([r.readout_current for r in results], axis=1),
                     merge_overflows([r.overflows for r in results]))


def _last_use(net: IntNetwork) -> dict[str, int]:
    """Index of the last layer that reads each value (the source's and every layer's)."""
    last = {}
    for i, layer in enumerate(net.layers):
        for name in ([layer.input] if isinstance(layer, IntSynapse) else layer.inputs):
            last[name] = i
    return last


def run_encoded(net: IntNetwork, s_in: np.ndarray, keep=None) -> SimResult:
    """Run integer input messages ``s_in`` of shape (T, B, *input_shape), T = ``net.timesteps``.

    ``keep``: the names whose messages the result holds (None: every source, synapse and neuron;
    ``()``: none, only the readout). A value not kept is freed once its last reader has run, so
    a run holds only the values still to be read."""
    t, b = net.check_steps(s_in), s_in.shape[1]
    values: dict[str, np.ndarray] = {net.source.name: s_in.reshape(t * b, *s_in.shape[2:])}
    kept: dict[str, np.ndarray] = {}
    last = _last_use(net)
    output = readout_current = None
    overflows: dict = {}

    def done(i: int, name: str, value: np.ndarray) -> None:
        values[name] = value
        if keep is None or name in keep:
            kept[name] = values[name]
        for used in list(values):  # free what no later layer reads
            if last.get(used, -1) <= i:
                del values[used]

    if keep is None or net.source.name in keep:
        kept[net.source.name] = values[net.source.name]
    for i, layer in enumerate(net.layers):
        if isinstance(layer, IntSynapse):
            done(i, layer.name, synapse(layer, values[layer.input], overflows, t))
            continue
        if isinstance(layer, IntProduct):
            a, b_ = (values[name].reshape(t, b, *values[name].shape[1:]) for name in layer.inputs)
            done(i, layer.name, layer.run(a, b_).reshape(t * b, *layer.out_shape))
            continue
        current = sum(values[name] for name in layer.inputs).reshape(t, b, *layer.shape)
        k, state = run_neuron(layer, current, overflows)
        if layer.name == net.output:  # the readout sends nothing: its potential is the result
            output, readout_current = state["v"], current + layer.bias
        else:
            done(i, layer.name, k.reshape(t * b, *layer.shape))
    return SimResult(output, {name: v.reshape(t, b, *v.shape[1:]) for name, v in kept.items()}, readout_current,
                     overflows)
