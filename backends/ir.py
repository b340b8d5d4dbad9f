"""Layer IR: a NIR graph read into typed, topologically ordered float layers.

Every backend starts here. Shapes follow torch/NIR order without a batch
dimension: (C, H, W) for images, (N,) for vectors. Each layer lists the
layers whose outputs sum into its input (NIR's rule for several in-edges).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nir
import numpy as np

from n2c.errors import NIRFormatError

SUPPORTED_CONVENTION = 2


@dataclass
class Layer:
    name: str
    inputs: list[str]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


@dataclass
class InputLayer(Layer):
    input_scale: float | None = None  # real value of one integer input unit, if the exporter knew it


@dataclass
class ConvLayer(Layer):
    weight: np.ndarray = None  # (Cout, Cin/groups, kH, kW)
    bias: np.ndarray = None  # (Cout,)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1


@dataclass
class DenseLayer(Layer):
    weight: np.ndarray = None  # (out, in); `in` indexes the C-order flattening of in_shape
    bias: np.ndarray = None


@dataclass
class PoolLayer(Layer):
    """Sum pooling times ``scale`` (1 for SumPool2d, 1/(kH·kW) for AvgPool2d)."""
    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int] = (0, 0)
    scale: float = 1.0


@dataclass
class FlattenLayer(Layer):
    pass


@dataclass
class NeuronLayer(Layer):
    """A spiking layer with reset by subtraction (equations in ``n2c.neurons``).

    ``kind``: "mtn" (multi-threshold IF, polarity when ``min_spikes`` > 0),
    "parallel" (parallel neuron over the T-step window) or "sfn" (scale-and-fire,
    thresholds ``edges`` and integer output ``codes``). A spike of count/code k
    carries the real value ``spike_value``·k.
    """
    threshold: np.ndarray = None  # θ, broadcast to out_shape (sfn: first positive threshold)
    v_init: np.ndarray = None
    max_spikes: int = 1
    kind: str = "mtn"
    min_spikes: int = 0
    spike_value: np.ndarray = None  # broadcast to out_shape
    edges: np.ndarray | None = None  # sfn only, (N,)
    codes: np.ndarray | None = None  # sfn only, (N+1,) integers


@dataclass
class OutputLayer(Layer):
    pass


@dataclass
class LayerGraph:
    layers: list[Layer]  # topological order; layers[0] is the input
    timesteps: int = 1
    metadata: dict = field(default_factory=dict)

    def by_name(self) -> dict[str, Layer]:
        return {layer.name: layer for layer in self.layers}

    @property
    def input(self) -> InputLayer:
        return self.layers[0]

    @property
    def output(self) -> OutputLayer:
        return self.layers[-1]


def _pair(v, name: str) -> tuple[int, int]:
    a = np.atleast_1d(np.asarray(v)).astype(int)
    if a.size == 1:
        a = np.repeat(a, 2)
    if a.size != 2:
        raise NIRFormatError(f"node '{name}': expected one or two integers, got {v!r}")
    return int(a[0]), int(a[1])


def _shape(types: dict, key: str, name: str) -> tuple[int, ...]:
    value = types.get(key)
    if value is None or np.size(value) == 0:
        raise NIRFormatError(f"node '{name}' has no {key} shape; export it with shapes filled in")
    return tuple(int(s) for s in np.atleast_1d(value))


def _topological(graph: nir.NIRGraph) -> list[str]:
    preds = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        for end in (src, dst):
            if end not in graph.nodes:
                raise NIRFormatError(f"edge {src} -> {dst} names node '{end}', which is not in the graph")
        preds[dst].append(src)
    order, state = [], {}

    def visit(n: str) -> None:
        if state.get(n) == 1:
            raise NIRFormatError(f"the graph has a cycle through node '{n}'; recurrent graphs are not supported yet")
        if state.get(n) == 2:
            return
        state[n] = 1
        for p in preds[n]:
            visit(p)
        state[n] = 2
        order.append(n)

    for n in sorted(graph.nodes):
        visit(n)
    return order


def read_graph(path: str | Path) -> nir.NIRGraph:
    path = Path(path)
    if not path.is_file():
        raise NIRFormatError(f"NIR file {path} does not exist")
    try:  # n2c checks shapes itself, with messages that name the node
        return nir.read(str(path), type_check=False)
    except Exception as e:  # h5py and nir raise many types on corrupt files
        raise NIRFormatError(f"{path} is not a readable NIR file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


NEURON_KINDS = {"multi_threshold_if": "mtn", "parallel": "parallel", "scale_and_fire": "sfn"}


def _meta_array(meta: dict, key: str, default, shape: tuple[int, ...], name: str) -> np.ndarray:
    value = np.asarray(meta.get(key, default), dtype=np.float64)
    try:
        return np.broadcast_to(value, shape).copy()
    except ValueError:
        raise NIRFormatError(f"IF node '{name}': {key} has shape {value.shape}, expected {shape}") from None


def _neuron(name: str, node: nir.IF, preds: list[str], shape: tuple[int, ...], graph_meta: dict) -> NeuronLayer:
    meta = node.metadata or {}
    kind = NEURON_KINDS.get(meta.get("n2c.neuron"))
    if kind is None:
        raise NIRFormatError(
            f"IF node '{name}' has no n2c neuron metadata (n2c.neuron {meta.get('n2c.neuron')!r}); NIR files from "
            "other tools are not supported yet (only graphs exported by n2c)")
    if meta.get("n2c.reset") != "subtract" or meta.get("n2c.fire") != "inclusive":
        raise NIRFormatError(f"IF node '{name}': unsupported n2c.reset/n2c.fire "
                             f"{meta.get('n2c.reset')!r}/{meta.get('n2c.fire')!r}")
    theta = np.asarray(node.v_threshold, dtype=np.float64)
    if theta.shape != shape or not (theta > 0).all():
        raise NIRFormatError(f"IF node '{name}': v_threshold must be positive with shape {shape}, got {theta.shape}")
    v_init = _meta_array(meta, "n2c.v_init", theta / 2 if kind != "sfn" else 0.0, shape, name)
    spike_value = _meta_array(meta, "n2c.spike_value", theta, shape, name)
    layer = NeuronLayer(name, preds, shape, shape, threshold=theta, v_init=v_init,
                        max_spikes=int(meta.get("n2c.max_spikes", 1)), kind=kind,
                        min_spikes=int(meta.get("n2c.min_spikes", 0)), spike_value=spike_value)
    if kind == "sfn":
        edges = np.asarray(meta.get("n2c.sfn_edges", []), dtype=np.float64).reshape(-1)
        codes = np.asarray(meta.get("n2c.sfn_codes", []), dtype=np.float64).reshape(-1)
        if edges.size < 1 or codes.size != edges.size + 1 or (np.diff(edges) <= 0).any() \
                or (np.diff(codes) < 0).any() or (codes != np.round(codes)).any():
            raise NIRFormatError(f"IF node '{name}': n2c.sfn_edges must ascend and n2c.sfn_codes be N+1 "
                                 "non-decreasing integers")
        layer.edges, layer.codes = edges, codes.astype(np.int64)
        layer.max_spikes, layer.min_spikes = int(max(codes.max(), 0)), int(max(-codes.min(), 0))
    if kind == "parallel":
        layer.max_spikes, layer.min_spikes = 1, 0
    return layer


def import_nir(graph: nir.NIRGraph | str | Path) -> LayerGraph:
    """Translate an n2c NIR graph into a :class:`LayerGraph`, checking shapes on every edge."""
    if not isinstance(graph, nir.NIRGraph):
        graph = read_graph(graph)
    meta = dict(graph.metadata or {})
    version = int(meta.get("n2c.version", SUPPORTED_CONVENTION))
    if version > SUPPORTED_CONVENTION:
        raise NIRFormatError(f"the graph uses n2c NIR conventions version {version}; this n2c reads up to "
                             f"{SUPPORTED_CONVENTION}: upgrade n2c")
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    outputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NIRFormatError(f"the graph must have exactly one Input and one Output node, "
                             f"found {len(inputs)} and {len(outputs)}")
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    order = _topological(graph)
    for src, dst in graph.edges:
        preds[dst].append(src)
    order.remove(inputs[0])
    order.insert(0, inputs[0])
    layers: list[Layer] = []
    out_shapes: dict[str, tuple[int, ...]] = {}
    for name in order:
        node = graph.nodes[name]
        p = preds[name]
        if not isinstance(node, nir.Input) and not p:
            raise NIRFormatError(f"node '{name}' ({type(node).__name__}) has no incoming edge")
        in_shape = out_shapes[p[0]] if p else None
        for q in p[1:]:
            if out_shapes[q] != in_shape:
                raise NIRFormatError(f"node '{name}' sums inputs of different shapes: "
                                     f"'{p[0]}' {in_shape} and '{q}' {out_shapes[q]}")
        layer = _layer(name, node, p, in_shape, meta)
        out_shapes[name] = layer.out_shape
        layers.append(layer)
    if not isinstance(layers[-1], OutputLayer):
        raise NIRFormatError(f"the Output node must come last; node '{layers[-1].name}' has no path to it")
    return LayerGraph(layers, int(meta.get("n2c.timesteps", 1)), meta)


def _check_in(name: str, expected: tuple[int, ...], actual: tuple[int, ...] | None) -> None:
    if actual is not None and tuple(expected) != tuple(actual):
        raise NIRFormatError(f"node '{name}' expects input shape {tuple(expected)} but receives {tuple(actual)}")


def _layer(name: str, node: nir.NIRNode, preds: list[str], in_shape, meta: dict) -> Layer:
    if isinstance(node, nir.Input):
        shape = _shape(node.input_type, "input", name)
        scale = (node.metadata or {}).get("n2c.input_scale", meta.get("n2c.input_scale"))
        return InputLayer(name, [], shape, shape, input_scale=float(scale) if scale is not None else None)
    if isinstance(node, nir.Output):
        return OutputLayer(name, preds, in_shape, in_shape)
    if isinstance(node, nir.Conv2d):
        w = np.asarray(node.weight, dtype=np.float64)
        if w.ndim != 4 or len(in_shape) != 3:
            raise NIRFormatError(f"Conv2d '{name}': weight must be 4-D and input (C, H, W), got {w.shape} and {in_shape}")
        groups = int(node.groups)
        _check_in(name, (w.shape[1] * groups, *in_shape[1:]), in_shape)
        if isinstance(node.padding, str):
            raise NIRFormatError(f"Conv2d '{name}': string padding {node.padding!r} is not supported; use integers")
        stride, pad, dil = _pair(node.stride, name), _pair(node.padding, name), _pair(node.dilation, name)
        hw = [(in_shape[1 + i] + 2 * pad[i] - dil[i] * (w.shape[2 + i] - 1) - 1) // stride[i] + 1 for i in range(2)]
        bias = np.zeros(w.shape[0]) if node.bias is None else np.asarray(node.bias, dtype=np.float64).reshape(-1)
        return ConvLayer(name, preds, in_shape, (w.shape[0], *hw), weight=w, bias=bias,
                         stride=stride, padding=pad, dilation=dil, groups=groups)
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = np.asarray(node.weight, dtype=np.float64)
        if w.ndim != 2:
            raise NIRFormatError(f"{type(node).__name__} '{name}': weight must be 2-D, got shape {w.shape}")
        if int(np.prod(in_shape)) != w.shape[1] or len(in_shape) != 1:
            raise NIRFormatError(f"node '{name}' expects input shape ({w.shape[1]},) but receives {in_shape}")
        bias = np.asarray(node.bias, dtype=np.float64) if isinstance(node, nir.Affine) else np.zeros(w.shape[0])
        return DenseLayer(name, preds, in_shape, (w.shape[0],), weight=w, bias=bias)
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        k, s, p = _pair(node.kernel_size, name), _pair(node.stride, name), _pair(node.padding, name)
        hw = [(in_shape[1 + i] + 2 * p[i] - k[i]) // s[i] + 1 for i in range(2)]
        scale = 1.0 / (k[0] * k[1]) if isinstance(node, nir.AvgPool2d) else 1.0
        return PoolLayer(name, preds, in_shape, (in_shape[0], *hw), kernel=k, stride=s, padding=p, scale=scale)
    if isinstance(node, nir.Flatten):
        declared = node.input_type.get("input")
        if declared is not None and np.size(declared):
            _check_in(name, tuple(int(s) for s in declared), in_shape)
        if int(node.start_dim) != 0:
            raise NIRFormatError(f"Flatten '{name}': start_dim {node.start_dim} is not supported "
                                 "(n2c graphs have no batch dimension; use start_dim=0)")
        return FlattenLayer(name, preds, in_shape, (int(np.prod(in_shape)),))
    if isinstance(node, nir.IF):
        _check_in(name, tuple(np.shape(node.v_threshold)), in_shape)
        return _neuron(name, node, preds, in_shape, meta)
    raise NIRFormatError(f"node '{name}' has type {type(node).__name__}, which n2c cannot run yet")
