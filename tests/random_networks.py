"""Random integer networks (``backends.ir.integer.IntNetwork``) with every neuron kind, for
differential tests between the reference simulator's two timings and Lava."""

from __future__ import annotations

import numpy as np

from backends.ir.integer import IntNetwork, IntNeuron, IntSource, IntSynapse

KINDS = ("mtn", "polarity", "sfn", "parallel", "lif", "li", "lif_subtract", "lif_subtract_now")


def weights(rng: np.random.Generator, shape, even: bool = False) -> np.ndarray:
    """Mixed-sign 8-bit weights; odd ones exercise Lava's LSB truncation in Dense."""
    w = rng.integers(-128, 128, size=shape) * 2 if even else rng.integers(-256, 255, size=shape)
    return w.astype(np.int64)


def neuron(rng: np.random.Generator, kind: str, name: str, inputs: list[str], shape, timesteps: int,
           drive: float) -> IntNeuron:
    """A neuron of ``kind`` whose thresholds suit input currents of typical size ``drive``."""
    theta = rng.integers(max(1, int(drive / 4)), int(drive) + 2, size=shape)
    bias = rng.integers(-int(drive) // 6, int(drive) // 4 + 1, size=shape)
    if kind in ("mtn", "polarity"):
        k = int(rng.integers(1, 4))
        return IntNeuron(name, "mtn", inputs, shape, 1.0, bias=bias, threshold=theta, v_init=rng.integers(0, theta),
                         max_spikes=k, min_spikes=k if kind == "polarity" else 0)
    if kind == "parallel":
        return IntNeuron(name, "parallel", inputs, shape, 1.0, bias=bias, threshold=theta,
                         v_init=rng.integers(0, theta), max_spikes=timesteps)
    if kind == "sfn":
        unit = int(rng.integers(max(1, int(drive / 8)), int(drive / 2) + 2))
        edges = np.sort(rng.choice(np.arange(-2 * unit, 8 * unit), size=4, replace=False)).astype(np.int64)
        codes = np.array([-1, 0, 1, 2, 4], dtype=np.int64)  # graded, negative code included
        return IntNeuron(name, "sfn", inputs, shape, 1.0, bias=bias, threshold=np.full(shape, unit),
                         v_init=np.zeros(shape, np.int64), max_spikes=4, min_spikes=1, edges=edges, codes=codes,
                         code_value=unit)
    du = rng.choice([0, 4095, int(rng.integers(1, 4095))])  # no current memory, slowest decay, anything
    dv = rng.choice([0, int(rng.integers(1, 4095))])
    return IntNeuron(name, kind, inputs, shape, 1.0, bias=rng.integers(-2000, 4000, size=shape),
                     threshold=rng.integers(1, max(2, int(drive)), size=shape) if kind != "li" else None,
                     v_init=np.zeros(shape, np.int64), du=np.full(shape, du), dv=np.full(shape, dv))


def readout(rng, name: str, inputs: list[str], shape) -> IntNeuron:
    return IntNeuron(name, "readout", inputs, shape, 1.0, bias=rng.integers(-50, 50, size=shape))


def dense_network(seed: int, kind: str, timesteps: int, delays: bool = False, recurrent: bool = False
                  ) -> IntNetwork:
    """source (7,) → dense → neuron (6,) → dense → readout (4,), optional per-synapse delays, or
    a recurrent dense synapse from the neuron back onto itself."""
    rng = np.random.default_rng(seed)
    delay = (lambda shape: rng.integers(0, 4, size=shape)) if delays else (lambda shape: None)
    drive = np.sqrt(7) * 150 * 120
    first = neuron(rng, kind, "n1", ["fc1", "rec"] if recurrent else ["fc1"], (6,), timesteps, drive)
    if recurrent:  # silent before its first input (``backends.reference.stream.loops_before_window``)
        first.bias = -np.abs(first.bias)
    loop = [IntSynapse("rec", "dense", "n1", (6,), (6,), weight=weights(rng, (6, 6)), weight_exp=6,
                       recurrent=True)] if recurrent else []
    layers = [IntSynapse("fc1", "dense", "x", (7,), (6,), weight=weights(rng, (6, 7)), delay=delay((6, 7))),
              first, *loop,
              IntSynapse("fc2", "dense", "n1", (6,), (4,), weight=weights(rng, (4, 6)), delay=delay((4, 6))),
              readout(rng, "out", ["fc2"], (4,))]
    return IntNetwork(IntSource("x", (7,), 1.0), layers, "out", timesteps)


def conv_network(seed: int, kind: str, timesteps: int) -> IntNetwork:
    """source (2,6,5) → conv → neuron → sumpool → dense → neuron → dense → readout, with
    non-square shapes so that a swapped H/W fails."""
    rng = np.random.default_rng(seed)
    s0, s1, s2 = (2, 6, 5), (3, 6, 5), (3, 3, 2)
    layers = [IntSynapse("c1", "conv", "x", s0, s1, weight=weights(rng, (3, 2, 3, 3)), padding=(1, 1)),
              neuron(rng, kind, "n1", ["c1"], s1, timesteps, np.sqrt(18) * 150 * 120),
              IntSynapse("pool", "sumpool", "n1", s1, s2, kernel=(2, 2), stride=(2, 2), groups=3),
              IntSynapse("fc1", "dense", "pool", s2, (5,), weight=weights(rng, (5, 18))),
              neuron(rng, "mtn", "n2", ["fc1"], (5,), timesteps, 150 * np.sqrt(18) * 2),
              IntSynapse("fc2", "dense", "n2", (5,), (3,), weight=weights(rng, (3, 5))),
              readout(rng, "out", ["fc2"], (3,))]
    return IntNetwork(IntSource("x", s0, 1.0), layers, "out", timesteps)


def inputs(net: IntNetwork, seed: int, batch: int = 3) -> np.ndarray:
    """Encoded integer input (T, B, *input_shape), 8-bit, a third of it zero."""
    rng = np.random.default_rng(seed + 1000)
    shape = (net.timesteps, batch, *net.source.shape)
    return (rng.integers(0, 256, size=shape) * (rng.random(shape) < 0.67)).astype(np.int64)


def recurrent_nir_graph(seed: int, kind: str = "IF", conv: bool = False, grid: bool = False):
    """A NIR graph (read into the layer IR) whose first spiking layer feeds back onto itself
    through an Affine (or a padded 3×3 Conv2d) with a bias (into a CubaLIF: through an always-on
    input), as snnTorch's RLeaky and the NIR paper's Braille RNN: input → weights → neuron ⟲ →
    Linear → LIF → Output. ``grid``: weights and biases on the 1/16 grid, so that IF networks have
    an exact integer form."""
    import nir

    from backends.nir.to_layers import import_nir

    rng = np.random.default_rng(seed)
    on = (lambda a: np.clip(np.round(a * 16) / 16, -7.5, 7.5)) if grid else (lambda a: a)
    shape = (3, 4, 4) if conv else (8,)
    n = int(np.prod(shape))
    gain = 1.0 if kind == "IF" else 4.0
    common = dict(r=np.ones(shape), v_threshold=np.ones(shape), v_reset=np.zeros(shape))
    if kind == "IF":
        cell = nir.IF(**common)
    elif kind == "LIF":
        cell = nir.LIF(tau=np.full(shape, 4e-3), v_leak=np.zeros(shape), **common)
    else:
        cell = nir.CubaLIF(tau_syn=np.full(shape, 2e-3), tau_mem=np.full(shape, 4e-3), v_leak=np.zeros(shape),
                           w_in=np.ones(shape), **common)
    conv_kw = dict(stride=np.array([1, 1]), padding=np.array([1, 1]), dilation=np.array([1, 1]), groups=1)
    if conv:
        first = nir.Conv2d(input_shape=np.array([4, 4]), weight=on(rng.normal(0, 0.6 * gain, (3, 2, 3, 3))),
                           bias=on(rng.normal(0, 0.1 * gain, 3)), **conv_kw)
        loop = nir.Conv2d(input_shape=np.array([4, 4]), weight=on(rng.normal(0, 0.3 * gain, (3, 3, 3, 3))),
                          bias=np.zeros(3), **conv_kw)
        nodes = {"input": nir.Input(input_type={"input": np.array([2, 4, 4])}), "flat": nir.Flatten(
            input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1)}
        tail = [("cell", "flat"), ("flat", "fc2")]
    else:
        first = nir.Linear(weight=on(rng.normal(0, 0.8 * gain, (n, 5))))
        loop = nir.Affine(weight=on(rng.normal(0, 0.5 * gain, (n, n))), bias=on(rng.normal(0, 0.1 * gain, n)))
        nodes = {"input": nir.Input(input_type={"input": np.array([5])})}
        tail = [("cell", "fc2")]
    nodes |= {"fc1": first, "cell": cell, "loop": loop, "fc2": nir.Linear(weight=on(rng.normal(0, 0.6 * gain, (4, n)))),
              "out": nir.IF(r=np.ones(4), v_threshold=np.ones(4), v_reset=np.zeros(4)) if kind == "IF" else
              nir.LIF(tau=np.full(4, 4e-3), v_leak=np.zeros(4), r=np.ones(4), v_threshold=np.ones(4),
                      v_reset=np.zeros(4)),
              "output": nir.Output(output_type={"output": np.array([4])})}
    edges = [("input", "fc1"), ("fc1", "cell"), ("cell", "loop"), ("loop", "cell"), *tail, ("fc2", "out"),
             ("out", "output")]
    return import_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
