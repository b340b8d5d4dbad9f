"""Reference integer simulator with Lava's timing: samples stream back to back through a
pipeline in which every synapse Process adds one step.

At global step t (sample i, step j at t = i·T + j, T = ``net.timesteps``):

* a synapse sends what it computed from its input at step t-1 (plus any synaptic delay k:
  from step t-1-k); nothing before step 0;
* a neuron whose aligned input has depth d follows its kind's window rule
  (``NeuronKind.stream_step``): it starts from its initial state at t = 0, returns to it
  before its update at every t with (t - d) % T == 0, and updates and sends at every step
  (also t < d, before the first sample arrives: no gating, as Lava's ``LIFReset``);
* the parallel neuron's output is a window late (``NeuronKind.output_delay``);
* a product of attention (``IntProduct``) acts within the step on its two inputs aligned to the
  deeper one, restarting its running counts with the same window rule;
* a recurrent synapse sends at t what its neuron sent at t-1, across window boundaries too (Lava's
  synapses keep their buffer): a sample's last spikes reach the next sample's first step, so a
  recurrent network streams one sample per run (``backends.lava`` does so) to equal the zero-delay
  run, where a loop delivers nothing at step 0.

``backends.lava`` builds the network the same way; ``tests/contracts`` check both bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from backends.ir.integer import IntNetwork, IntNeuron, IntProduct, IntSynapse, message_bound
from backends.reference.simulate import count_clamp
from backends.reference.synapses import SynapseRun, as_tensor, later, synapse
from n2c.errors import QuantizationError
from n2c import products
from n2c.fixed_point import StateClamp
from n2c.neurons.kind import window_position


@dataclass
class StreamResult:
    """Lava-timed run of B samples back to back, one stream of L = B·T + flush global steps."""
    messages: dict[str, np.ndarray]  # every neuron -> (L, *shape) int64 values sent at each global step
    state: dict[str, dict[str, np.ndarray]]  # neuron -> {"v": ..., "u": ...} after the last step
    depth: dict[str, int]  # pipeline delay in steps of every layer's output
    timesteps: int  # T, the sample window
    overflows: dict[str, dict] = field(default_factory=dict)

    def window(self, name: str, samples: int) -> np.ndarray:
        """The messages of ``name`` during each sample's window, (T, B, *shape): sample i, step j is
        global step i·T + j + depth."""
        return sample_windows(self.messages[name], self.depth[name], self.timesteps, samples)


def sample_windows(stream: np.ndarray, depth: int, timesteps: int, samples: int) -> np.ndarray:
    """Values (L, *shape) of a stream at ``depth`` → (T, B, *shape): sample i, step j is global
    step i·T + j + depth."""
    return stream[np.arange(samples)[None, :] * timesteps + np.arange(timesteps)[:, None] + depth]


def stream_depths(net: IntNetwork) -> dict[str, int]:
    """Pipeline delay in steps of every value under Lava timing: the source 0; a synapse Process
    adds one step (its output at step t is computed from its input at step t-1); a neuron takes
    its deepest input (the others are aligned to it) plus its kind's output delay (a parallel
    neuron: one window, T steps)."""
    depth, layers = {net.source.name: 0}, net.by_name()
    for layer in net.layers:
        if isinstance(layer, IntSynapse):
            depth[layer.name] = depth[layer.input] + 1
        elif isinstance(layer, IntProduct):  # acts within the step, on inputs aligned to the deeper one
            depth[layer.name] = max(depth[name] for name in layer.inputs)
        else:  # a recurrent synapse arrives one step after the neuron's own step: not aligned
            depth[layer.name] = (max((depth[name] for name in net.forward_inputs(layer, layers)), default=0)
                                 + layer.neuron_kind.output_delay(net.timesteps))
    return depth


def flush_steps(net: IntNetwork) -> int:
    """Zero steps after the last sample so that every neuron sends all of it: the deepest neuron
    output (the readout's depth whenever every layer feeds the output)."""
    depth = stream_depths(net)
    return max(depth[layer.name] for layer in net.layers if isinstance(layer, IntNeuron))


def streams_alone(net: IntNetwork) -> bool:
    """Whether each sample streams alone (a run per sample): with synaptic delays or recurrent
    synapses a sample's late contributions would reach the next sample's window."""
    return net.recurrent or any(isinstance(layer, IntSynapse) and layer.delay is not None and np.any(layer.delay)
                                for layer in net.layers)


def loops_before_window(net: IntNetwork) -> list[str]:
    """The neurons with recurrent synapses that send at global step d - 1, the step before their
    first input arrives at depth d. Everything before that step is the network's own (no sample has
    arrived), and the neuron returns to its initial state at d, but what it sent at d - 1 reaches
    step 0 of the sample through its loop, where the zero-delay run delivers nothing. Such a
    network cannot equal the zero-delay run under Lava's timing."""
    if not net.recurrent:
        return []
    run, layers = run_stream(net, np.zeros((net.timesteps, 1, *net.source.shape), np.int64)), net.by_name()
    early = []
    for layer in net.layers:
        if isinstance(layer, IntNeuron) and net.loops(layer, layers):
            d = max((run.depth[name] for name in net.forward_inputs(layer, layers)), default=0)
            if d > 0 and run.messages[layer.name][d - 1].any():
                early.append(layer.name)
    return early


def refuse_loops_before_window(net: IntNetwork, fix: str) -> None:
    """A one-line error naming the first neuron of :func:`loops_before_window`, with ``fix``."""
    early = loops_before_window(net)
    if early:
        raise QuantizationError(f"neuron '{early[0]}' fires from its bias alone in the step before its first input "
                                "arrives under Lava's timing, and its recurrent synapse carries those spikes into "
                                f"every sample's first step; {fix}")


def run_stream(net: IntNetwork, s_in: np.ndarray) -> StreamResult:
    """Run integer inputs ``s_in`` (T, B, *input_shape) with Lava's timing, followed by
    :func:`flush_steps` zero steps that drain the pipeline. Where every window lies inside the
    stream, ``window(name, B)`` equals the zero-delay ``run_encoded`` messages: the timing is
    the only difference."""
    t, b = net.check_steps(s_in), s_in.shape[1]
    depth = stream_depths(net)
    length = b * t + flush_steps(net)
    stream = np.zeros((length, *s_in.shape[2:]), dtype=np.int64)
    stream[:b * t] = np.swapaxes(s_in, 0, 1).reshape(b * t, *s_in.shape[2:])
    values, layers = {net.source.name: stream}, net.by_name()
    messages, state, overflows = {}, {}, {}
    for layer in net.layers:
        if isinstance(layer, IntSynapse):  # one step of Process latency, as a delay of 1 on the whole stream
            if not layer.recurrent:  # (a recurrent one is run with its neuron, step by step)
                values[layer.name] = later(synapse(layer, values[layer.input], overflows, length), 1, length)
            continue
        d = max((depth[name] for name in net.forward_inputs(layer, layers)), default=0)  # 0: a neuron without input
        if isinstance(layer, IntProduct):
            a, b_ = (later(values[name], d - depth[name], length) for name in layer.inputs)
            st = products.initial_state(layer.a_shape, layer.b_shape, layer.out_shape)
            values[layer.name] = np.stack([products.stream_step(st, a[step], b_[step], window_position(step, d, t),
                                                                **layer.params) for step in range(length)])
            continue
        forward = net.forward_inputs(layer, layers)
        current = (sum(later(values[name], d - depth[name], length) for name in forward) if forward else
                   np.zeros((length, *layer.shape), np.int64)).reshape(length, *layer.shape)  # none: always-on
        clamp, kind = StateClamp(), layer.neuron_kind
        st = kind.initial_state(layer, tuple(layer.shape))
        out = np.empty_like(current)
        loops = [(r, SynapseRun(r, message_bound(layer))) for r in net.loops(layer, layers)]
        for r, _ in loops:
            values[r.name] = np.zeros_like(current)
        for step in range(length):
            for r, run in loops:  # what it made of the previous step's messages, window or not (Lava's buffer)
                if step:
                    values[r.name][step] = run(as_tensor(out[step - 1:step]), overflows).to(torch.int64).numpy()[0]
                current[step] += values[r.name][step]
            out[step] = kind.stream_step(layer, st, current[step], step, d, t, clamp)
        state[layer.name] = st
        count_clamp(overflows, layer.name, clamp)
        values[layer.name] = messages[layer.name] = out
    return StreamResult(messages, state, depth, t, overflows)
