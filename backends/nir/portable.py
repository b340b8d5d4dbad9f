"""Portable NIR: a one-timestep n2c network in standard NIR nodes only.

NIR has no multi-level or negative spikes, so each n2c neuron with at most K
positive and K⁻ negative spikes becomes a population of K + K⁻ binary neurons.
At T = 1 the neuron computes k = clip(floor((v0 + I)/θ), −K⁻, K), which is a sum
of staggered thresholds:

    k = Σ_{j=1..K} [I > jθ − v0]  −  Σ_{j=1..K⁻} [−I > (j−1)θ + v0]

(strict where n2c is inclusive: the two differ only when v0 + I lands exactly on
a multiple of θ). Unit block j receives s_j·I + c_j, with s_j = ±1 and the shift
c_j moving its threshold to a common θ_u = 1 (importers such as snnTorch's take
one threshold per layer); the producing Affine/Conv2d is replicated once per
block with sign s_j and bias s_j·b + c_j. The graded value a·k is rebuilt in the
next layer, whose weights for block j are multiplied by s_j·a. Pooling and
Flatten act per channel, so they run on the expanded channels unchanged (blocks
are contiguous channels, hence contiguous after a C-order flatten); AvgPool2d is
written as SumPool2d with 1/(kH·kW) moved into the next weights. A residual
shortcut between populations becomes an explicit 1x1 Conv2d (or Affine) node.

The neurons are NIR ``LIF`` nodes with τ = 1 ms, r = 10, v_leak = v_reset = 0,
v_threshold = 1: one step of dt = 0.1 ms (``n2c.dt``) gives v = (dt/τ)·r·I = I in
forward Euler and in snnTorch (dt 1e-4), and Norse's importer (dt 1e-3, r
ignored) gives v = (dt/τ)·I = I as well. Only the first step is meaningful: the
network is a T = 1 network.
"""

from __future__ import annotations

import nir
import numpy as np

from backends.ir.layers import (ConvLayer, DenseLayer, FlattenLayer, InputLayer, LayerGraph, NeuronLayer, OutputLayer,
                                PoolLayer, ProductLayer, SoftmaxLayer)
from backends.lava.layout import regroup_conv_weight
from backends.quantize import identity_layer
from n2c.errors import N2CError
from n2c.neurons import kind
from n2c.neurons.multi_threshold import KIND as MULTI_THRESHOLD


class _Value:
    """How a layer's real output V is stored: U = concat of n blocks along dim 0, V = Σ_j coef_j ⊙ U_j."""

    def __init__(self, coef: np.ndarray):
        self.coef = coef  # (n, *shape)

    @property
    def blocks(self) -> int:
        return len(self.coef)

    @staticmethod
    def plain(shape) -> "_Value":
        return _Value(np.ones((1, *shape)))


def _channel_coef(coef: np.ndarray, name: str) -> np.ndarray:
    """(n, C, H, W) → (n, C): convolution and pooling need it constant over H, W."""
    flat = coef.reshape(*coef.shape[:2], -1)
    if not np.all(flat == flat[..., :1]):
        raise N2CError(f"portable export: spike values of '{name}' vary within a channel; only per-channel "
                       "thresholds can feed a convolution")
    return flat[..., 0]


def _fold_input(layer, value: _Value) -> np.ndarray:
    """The layer's weights acting on the stored blocks U instead of V."""
    if isinstance(layer, DenseLayer):
        coef = value.coef.reshape(value.blocks, -1)  # (n, in)
        return np.concatenate([layer.weight * coef[j][None, :] for j in range(value.blocks)], axis=1)
    w = regroup_conv_weight(layer.weight, layer.groups, 1)  # one group: zeros outside each original group
    coef = _channel_coef(value.coef, layer.name)  # (n, Cin)
    return np.concatenate([w * coef[j][None, :, None, None] for j in range(value.blocks)], axis=1)


PORTABLE_DT, PORTABLE_TAU, PORTABLE_R, PORTABLE_THRESHOLD = 1e-4, 1e-3, 10.0, 1.0


def _population(neuron: NeuronLayer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signs s_j (n,), input shifts c_j (n, *shape) and output coefficients (n, *shape)."""
    if kind(neuron.kind) is not MULTI_THRESHOLD:
        raise N2CError(f"portable export: neuron '{neuron.name}' is a {neuron.kind} neuron; only multi-threshold "
                       "and polarity neurons (methods mtn, pmsm) have a standard-NIR form")
    theta, v0, a = neuron.threshold, neuron.v_init, neuron.spike_value
    signs, thresholds, coefs = [], [], []
    for j in range(1, neuron.max_spikes + 1):
        signs.append(1.0), thresholds.append(j * theta - v0), coefs.append(a)
    for j in range(1, neuron.min_spikes + 1):
        signs.append(-1.0), thresholds.append((j - 1) * theta + v0), coefs.append(-a)
    return np.array(signs), PORTABLE_THRESHOLD - np.stack(thresholds), np.stack(coefs)


def to_portable_nir(graph: LayerGraph) -> nir.NIRGraph:
    """The standard-NIR form of a one-timestep n2c graph (see the module docstring)."""
    if not graph.is_n2c or graph.timesteps != 1:
        raise N2CError(f"portable export needs a one-timestep n2c network (T = 1), got T = {graph.timesteps}; "
                       "convert with --timesteps 1 and --method mtn or pmsm")
    if graph.recurrent:
        raise N2CError("portable export: recurrent graphs are not supported")
    attention = [layer.name for layer in graph.layers if isinstance(layer, (ProductLayer, SoftmaxLayer))]
    if attention:
        raise N2CError(f"portable export: '{attention[0]}' is a product of two activations (attention), which "
                       "standard NIR 1.0 cannot state; export without --portable (n2c's n2c.Product nodes, "
                       "docs/nir-conventions.md)")
    f32 = np.float32
    consumers: dict[str, list[str]] = {layer.name: [] for layer in graph.layers}
    for layer in graph.layers:
        for p in layer.inputs:
            consumers[p].append(layer.name)
    by_name = graph.by_name()
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    values: dict[str, _Value] = {}
    pending: dict[str, tuple] = {}  # linear layers waiting to learn the signs of the population they feed

    def emit_linear(name, layer, weight, bias, signs, shifts, src, in_shape):
        """Write ``layer``'s linear map on stored blocks, replicated once per output block j
        with sign s_j and bias s_j·b + c_j."""
        if isinstance(layer, ConvLayer):
            shifts = _channel_coef(shifts, name)
        w = np.concatenate([s * weight for s in signs])
        b = np.concatenate([s * bias + c for s, c in zip(signs, shifts)])
        if isinstance(layer, DenseLayer):
            nodes[name] = nir.Affine(weight=w.astype(f32), bias=b.astype(f32))
        else:
            nodes[name] = nir.Conv2d(input_shape=np.array(in_shape[1:]), weight=w.astype(f32),
                                     stride=np.array(layer.stride), padding=np.array(layer.padding),
                                     dilation=np.array(layer.dilation), groups=1, bias=b.astype(f32))
        edges.append((src, name))

    for layer in graph.layers:
        name = layer.name
        if isinstance(layer, InputLayer):
            nodes[name] = nir.Input(input_type={"input": np.array(layer.out_shape)})
            values[name] = _Value.plain(layer.out_shape)
        elif isinstance(layer, (ConvLayer, DenseLayer)):
            (src,) = layer.inputs
            if len(consumers[name]) != 1:
                raise N2CError(f"portable export: '{name}' feeds {len(consumers[name])} layers; expected one")
            pending[name] = (layer, _fold_input(layer, values[src]), src, values[src])
        elif isinstance(layer, PoolLayer):
            (src,) = layer.inputs
            v = values[src]
            coef = _channel_coef(v.coef, name)[:, :, None, None] * np.ones((1, *layer.out_shape))
            nodes[name] = nir.SumPool2d(kernel_size=np.array(layer.kernel), stride=np.array(layer.stride),
                                        padding=np.array(layer.padding))
            edges.append((src, name))
            values[name] = _Value(coef * layer.scale)  # AvgPool's 1/(kH·kW) moves into the next weights
            _set_types(nodes[name], (v.blocks * layer.in_shape[0], *layer.in_shape[1:]),
                       (v.blocks * layer.out_shape[0], *layer.out_shape[1:]))
        elif isinstance(layer, FlattenLayer):
            (src,) = layer.inputs
            v = values[src]
            shape = (v.blocks * layer.in_shape[0], *layer.in_shape[1:])
            nodes[name] = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1)
            edges.append((src, name))
            values[name] = _Value(v.coef.reshape(v.blocks, -1))
        elif isinstance(layer, (NeuronLayer, OutputLayer)):
            if isinstance(layer, NeuronLayer):
                signs, shifts, coefs = _population(layer)
            else:
                signs, shifts, coefs = np.ones(1), np.zeros((1, *layer.out_shape)), None
            for src in layer.inputs:
                if src in pending:
                    lin, weight, lin_src, _ = pending.pop(src)
                    emit_linear(src, lin, weight, lin.bias, signs, shifts, lin_src, by_name[lin_src].out_shape)
                    edges.append((src, name))
                else:  # shortcut from a population: an explicit linear node
                    shortcut = f"{name}_from_{src}"
                    shape = by_name[src].out_shape
                    ident = identity_layer(shortcut, shape)
                    emit_linear(shortcut, ident, _fold_input(ident, values[src]), ident.bias, signs, shifts, src,
                                shape)
                    edges.append((shortcut, name))
            shape = (len(signs) * layer.out_shape[0], *layer.out_shape[1:])
            if isinstance(layer, NeuronLayer):
                nodes[name] = nir.LIF(tau=np.full(shape, PORTABLE_TAU, f32), r=np.full(shape, PORTABLE_R, f32),
                                      v_leak=np.zeros(shape, f32), v_threshold=np.full(shape, PORTABLE_THRESHOLD, f32),
                                      v_reset=np.zeros(shape, f32))
                values[name] = _Value(coefs)
            else:
                nodes[name] = nir.Output(output_type={"output": np.array(layer.out_shape)})
    if pending:
        raise N2CError(f"portable export: {sorted(pending)} feed no neuron")
    meta = {"n2c.portable": 1, "n2c.dt": PORTABLE_DT, "n2c.timesteps": 1,
            "n2c.source_method": str(graph.metadata.get("n2c.method", "mtn"))}
    if graph.input.input_scale:
        meta["n2c.input_scale"] = float(graph.input.input_scale)
    out = nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)
    out.infer_types()
    return out


def _set_types(node: nir.NIRNode, in_shape, out_shape) -> None:
    node.input_type = {"input": np.array(in_shape)}
    node.output_type = {"output": np.array(out_shape)}
