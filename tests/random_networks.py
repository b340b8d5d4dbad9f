"""Random integer networks (``backends.quantize.IntNetwork``) with every neuron kind, for
differential tests between the reference simulator's two timings and Lava."""

from __future__ import annotations

import numpy as np

from backends.quantize import IntNetwork, IntNeuron, IntSource, IntSynapse

KINDS = ("mtn", "polarity", "sfn", "parallel", "lif", "li")


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
                     threshold=rng.integers(1, max(2, int(drive)), size=shape) if kind == "lif" else None,
                     v_init=np.zeros(shape, np.int64), du=np.full(shape, du), dv=np.full(shape, dv))


def readout(rng, name: str, inputs: list[str], shape) -> IntNeuron:
    return IntNeuron(name, "readout", inputs, shape, 1.0, bias=rng.integers(-50, 50, size=shape))


def dense_network(seed: int, kind: str, timesteps: int, delays: bool = False) -> IntNetwork:
    """source (7,) → dense → neuron (6,) → dense → readout (4,), optional per-synapse delays."""
    rng = np.random.default_rng(seed)
    delay = (lambda shape: rng.integers(0, 4, size=shape)) if delays else (lambda shape: None)
    first = neuron(rng, kind, "n1", ["fc1"], (6,), timesteps, np.sqrt(7) * 150 * 120)
    layers = [IntSynapse("fc1", "dense", "x", (7,), (6,), weight=weights(rng, (6, 7)), delay=delay((6, 7))),
              first,
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
