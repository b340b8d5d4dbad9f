"""Float reference simulator: runs any layer graph (n2c's or another tool's) in float64.

Input: an array (T, B, *input_shape), one frame per step. Output: the Output
node's value at every step, (T, B, *output_shape). Timing is zero-delay along
forward edges: a layer sees step t of its inputs at step t. An edge that closes
a cycle (``LayerGraph.recurrent``) delivers the previous step's value, as
recurrent layers in snnTorch and Norse do.

Feed-forward graphs run layer by layer over all T steps at once (stateless
layers batch over time); graphs with cycles run step by step. Neuron equations:
``n2c.neurons`` for n2c's neurons, ``backends.float.dynamics`` for NIR's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from backends.float.dynamics import Discretization, NeuronState, discretization
from backends.ir.layers import (ConvLayer, DelayLayer, DenseLayer, DynamicsLayer, FlattenLayer, LayerGraph,
                                NeuronLayer, OutputLayer, PoolLayer, ProductLayer, ScaleLayer, SoftmaxLayer,
                                ThresholdLayer)
from n2c import products
from n2c.errors import N2CError
from n2c.neurons import kind


@dataclass
class FloatRun:
    output: np.ndarray  # (T, B, *output_shape)
    values: dict[str, np.ndarray] | None = None  # every layer's output (T, B, ...), when recorded
    firing: dict[str, int] | None = None  # spiking layer -> neuron-steps that sent a spike (or a count)
    traces: dict[str, dict[str, np.ndarray]] | None = None  # traced layer -> {"out", and NIR neurons' "v", "i"}


def _stateless(layer, x: np.ndarray) -> np.ndarray:
    """x: (N, *in_shape) → (N, *out_shape) for layers without state."""
    n = x.shape[0]
    if isinstance(layer, DenseLayer):
        return x.reshape(n, -1) @ layer.weight.T + layer.bias
    if isinstance(layer, ConvLayer):
        conv = F.conv1d if layer.dims == 1 else F.conv2d
        y = conv(torch.from_numpy(x), torch.from_numpy(layer.weight), torch.from_numpy(layer.bias),
                 stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups)
        return y.numpy()
    if isinstance(layer, PoolLayer):
        y = F.avg_pool2d(torch.from_numpy(x), layer.kernel, layer.stride, layer.padding, count_include_pad=True,
                         divisor_override=1)
        return y.numpy() * layer.scale
    if isinstance(layer, FlattenLayer):
        return x.reshape(n, *layer.out_shape)
    if isinstance(layer, ScaleLayer):
        return x * layer.scale
    if isinstance(layer, ThresholdLayer):
        return (x > layer.threshold).astype(np.float64)
    if isinstance(layer, OutputLayer):
        return x
    raise N2CError(f"layer '{layer.name}' ({type(layer).__name__}) cannot be simulated in float")


class _Delay:
    """y(t) = x(t − d) per element, d = round(τ/dt) steps; zeros before the first input.
    A delay of at least the run's T steps outputs zeros throughout; it is clipped there."""

    def __init__(self, layer: DelayLayer, dt: float, batch: int, timesteps: int):
        self.steps = np.minimum(np.rint(layer.delay / dt), timesteps).astype(np.int64)
        self.buffer = np.zeros((int(self.steps.max(initial=0)) + 1, batch, *layer.out_shape))
        self.t = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = np.empty_like(x)
        size = len(self.buffer)
        for k in range(len(x)):
            self.buffer[self.t % size] = x[k]
            idx = (self.t - self.steps) % size  # per element, (*shape)
            out[k] = np.take_along_axis(self.buffer, np.broadcast_to(idx, self.buffer.shape[1:])[None], 0)[0]
            out[k][:, self.t < self.steps] = 0.0
            self.t += 1
        return out


class _N2CNeuron:
    """n2c's neurons in float, by their kind's kernel (``n2c.neurons``): out(t) = a·k(t)."""

    def __init__(self, layer: NeuronLayer, batch: int, timesteps: int):
        self.layer, self.timesteps, self.kind = layer, timesteps, kind(layer.kind)
        self.v = np.broadcast_to(layer.v_init, (batch, *layer.out_shape)).astype(np.float64)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out, self.v = self.kind.run_float(self.layer, self.v, x, self.timesteps)
        return out


class _Neuron:
    """NIR's neurons stepped by the discretization; ``trace`` keeps v and i after every step (v
    after the reset where the neuron fired)."""

    def __init__(self, layer: DynamicsLayer, disc: Discretization, batch: int, trace: bool = False):
        self.state = NeuronState(layer, disc, batch)
        self.trace = {"v": [], "i": []} if trace else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = []
        for t in range(len(x)):
            out.append(self.state.step(x[t]))
            if self.trace is not None:
                self.trace["v"].append(np.array(self.state.v))
                self.trace["i"].append(np.array(self.state.i))
        return np.stack(out)


def _running(f, *steps: np.ndarray) -> np.ndarray:
    """The increments of F(t) = t·f(running means) of inputs (T, B, ...) (``n2c.products``)."""
    t, b = steps[0].shape[:2]
    seen = products.steps_seen(t, steps[0].ndim)
    means = [s.cumsum(axis=0) / seen for s in steps]
    total = f(*(m.reshape(t * b, *m.shape[2:]) for m in means))
    return products.increments_numpy(total.reshape(t, b, *total.shape[1:]) * products.steps_seen(t, total.ndim + 1))


def _product(layer: ProductLayer, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _running(lambda x, y: products.product_numpy(x, y, layer.heads, layer.mode) * layer.scale, a, b)


def _runner(layer, disc: Discretization, batch: int, timesteps: int, trace: bool = False):
    if isinstance(layer, SoftmaxLayer):
        return lambda x: _running(products.softmax_numpy, x)
    if isinstance(layer, DynamicsLayer):
        return _Neuron(layer, disc, batch, trace)
    if isinstance(layer, NeuronLayer):
        return _N2CNeuron(layer, batch, timesteps)
    if isinstance(layer, DelayLayer):
        return _Delay(layer, disc.dt, batch, timesteps)

    def run(x: np.ndarray) -> np.ndarray:
        t, b = x.shape[:2]
        return _stateless(layer, x.reshape(t * b, *x.shape[2:])).reshape(t, b, *layer.out_shape)
    return run


def check_input(graph: LayerGraph, x: np.ndarray) -> np.ndarray:
    """The input array must be (T, B, *input_shape) of finite numbers; n2c graphs fix T. Returns
    ``x`` itself, not a copy."""
    shape = tuple(graph.input.out_shape)
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise N2CError(f"the input array has dtype {x.dtype}; give numbers, shape (T, B, {', '.join(map(str, shape))})")
    if x.ndim != len(shape) + 2 or tuple(x.shape[2:]) != shape:
        raise N2CError(f"the input array has shape {tuple(x.shape)} but the graph expects (T, B, "
                       f"{', '.join(map(str, shape))}): time, batch, then the Input node's shape")
    if graph.is_n2c and x.shape[0] != graph.timesteps:
        raise N2CError(f"the input has {x.shape[0]} steps but this n2c graph runs T = {graph.timesteps}; "
                       f"give (T={graph.timesteps}, B, ...) (n2c graphs present the same frame every step)")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise N2CError(f"the input array {tuple(x.shape)} has no steps or no samples")
    step = max(1, 2 ** 22 // max(1, x[:1, :1].size))  # checked a slice at a time: no copy of a large input
    if not all(np.isfinite(x[:, i:i + step]).all() for i in range(0, x.shape[1], step)):
        raise N2CError("the input array contains NaN or infinity")
    return x  # unchanged (a broadcast view stays one): the simulators convert a chunk at a time


def _recurrent_start(graph: LayerGraph, disc: Discretization, batch: int) -> dict[str, np.ndarray]:
    """Zeros, or (``rest``) every layer's output when all neurons are silent and the input is zero."""
    last = {layer.name: np.zeros((batch, *layer.out_shape)) for layer in graph.layers}
    if disc.recurrent_start == "rest":
        for layer in graph.layers[1:]:
            if not isinstance(layer, (DynamicsLayer, NeuronLayer, DelayLayer)):
                total = sum(last[p] for p in layer.inputs if (p, layer.name) not in graph.recurrent)
                last[layer.name] = _stateless(layer, total)
    return last


def simulate_float(graph: LayerGraph, x: np.ndarray, disc: Discretization | None = None,
                   record: bool = False, batch_size: int | None = None, trace: tuple[str, ...] = ()) -> FloatRun:
    """Run ``x`` (T, B, *input_shape) through ``graph``, ``batch_size`` samples at a time (all at
    once by default); see the module docstring for timing. ``trace``: layers whose outputs (and
    for NIR's neurons v and i) are kept at every step (:attr:`FloatRun.traces`)."""
    x = check_input(graph, x)
    names = {layer.name for layer in graph.layers}
    unknown = [t for t in trace if t not in names]
    if unknown:
        raise N2CError(f"no layer '{unknown[0]}' to record in this graph; its layers are "
                       f"{', '.join(layer.name for layer in graph.layers[1:])}")
    disc = disc or discretization("nir")
    size = batch_size or x.shape[1]
    runs = [_simulate(graph, x[:, i:i + size].astype(np.float64), disc, record or bool(trace), tuple(trace))
            for i in range(0, x.shape[1], size)]
    values = {k: np.concatenate([r.values[k] for r in runs], axis=1) for k in runs[0].values} \
        if record or trace else None
    traces = {name: {key: np.concatenate([r.traces[name][key] for r in runs], axis=1) for key in runs[0].traces[name]}
              for name in trace}
    for name in trace:
        traces[name]["out"] = values[name]
    firing = {k: sum(r.firing[k] for r in runs) for k in runs[0].firing}
    return FloatRun(np.concatenate([r.output for r in runs], axis=1), values if record else None, firing,
                    traces or None)


def _spiking(layer) -> bool:
    if isinstance(layer, DynamicsLayer):
        return bool(layer.spiking)
    return isinstance(layer, NeuronLayer) and kind(layer.kind).spiking


def _simulate(graph: LayerGraph, x: np.ndarray, disc: Discretization, record: bool,
              trace: tuple[str, ...] = ()) -> FloatRun:
    steps, batch = x.shape[:2]
    # T is the input's: check_input has held an n2c graph's input to the graph's own T
    runners = {layer.name: _runner(layer, disc, batch, steps, layer.name in trace) for layer in graph.layers[1:]}

    def traced() -> dict:
        return {name: {k: np.stack(v) for k, v in (getattr(runners.get(name), "trace", None) or {}).items()}
                for name in trace}
    if not graph.recurrent:
        values = {graph.input.name: x}
        for layer in graph.layers[1:]:
            if isinstance(layer, ProductLayer):
                values[layer.name] = _product(layer, *(values[p] for p in layer.inputs))
            else:
                values[layer.name] = runners[layer.name](sum(values[p] for p in layer.inputs))
        firing = {layer.name: int(np.count_nonzero(values[layer.name])) for layer in graph.layers if _spiking(layer)}
        return FloatRun(values[graph.output.name], values if record else None, firing, traced())
    if any(isinstance(layer, (ProductLayer, SoftmaxLayer)) for layer in graph.layers):
        raise N2CError("a graph with both recurrent edges and attention (n2c.Product, n2c.Softmax) cannot be "
                       "simulated: attention runs over the running means of a feed-forward pass")
    last = _recurrent_start(graph, disc, batch)  # the "previous step" of step 0
    history: dict[str, list] = {layer.name: [] for layer in graph.layers}
    firing = {layer.name: 0 for layer in graph.layers if _spiking(layer)}
    for t in range(steps):
        now = {graph.input.name: x[t]}
        for layer in graph.layers[1:]:
            total = sum(last[p] if (p, layer.name) in graph.recurrent else now[p] for p in layer.inputs)
            now[layer.name] = runners[layer.name](total[None])[0]
        for name, value in now.items():
            last[name] = value
            if name in firing:
                firing[name] += int(np.count_nonzero(value))
            if record or name == graph.output.name:
                history[name].append(value)
    values = {name: np.stack(h) for name, h in history.items() if h}
    return FloatRun(values[graph.output.name], values if record else None, firing, traced())
