"""Export a SpikingNetwork to NIR.

Standard nodes carry everything NIR can state (weights, shapes, thresholds);
neuron semantics NIR cannot state go into namespaced ``n2c.*`` metadata,
documented in ``docs/nir-conventions.md``. Residual additions become several
edges into one node (NIR sums the inputs of a node).
"""

from __future__ import annotations

import contextlib
import copy
import io
import operator
import os

import nir
import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from n2c.errors import N2CError, UnsupportedLayerError
from n2c.export import nodes as n2c_nodes
from n2c.ingest.canonical import module_of, set_submodule
from n2c.limits import check_elements
from n2c.files import atomic_write
from n2c.neurons import kind
from n2c.snn.modules import NEURON_TYPES, SpikingNetwork, SpikingProduct, SpikingSoftmax

NIR_CONVENTION_VERSION = 2
ATTENTION_CONVENTION_VERSION = 3  # graphs with n2c.Product / n2c.Softmax nodes: n2c before them cannot read them


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def _pair(v) -> np.ndarray:
    return np.array(v if isinstance(v, (tuple, list)) else (v, v), dtype=np.int64)


def _full(t: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(_np(t), shape).copy()


def neuron_metadata(m: nn.Module, shape: tuple[int, ...]) -> dict:
    """The ``n2c.*`` keys of a neuron (see docs/nir-conventions.md): those every n2c neuron
    has, then its kind's own (``n2c.neurons``)."""
    meta = {"n2c.reset": "subtract", "n2c.fire": "inclusive", "n2c.output": "graded",
            "n2c.v_init": _full(m.v_init, shape), "n2c.spike_value": _full(m.spike_value, shape)}
    meta.update(kind(m.kind).nir_metadata(m))
    return meta


def _node_for(module: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...], name: str) -> nir.NIRNode:
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise UnsupportedLayerError(f"Conv2d '{name}': only numeric zero padding is supported")
        bias = _np(module.bias) if module.bias is not None else np.zeros(module.out_channels, np.float32)
        node = nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=_np(module.weight), stride=_pair(module.stride),
                          padding=_pair(module.padding), dilation=_pair(module.dilation),
                          groups=module.groups, bias=bias)
        # nir 1.0.8 infers the input channels from the weight alone (C_in / groups), and the output
        # size from the first kernel dimension for both axes (a 1x3 kernel): state both, as torch has them
        node.input_type = {"input": np.array([module.in_channels, *in_shape[1:]])}
        node.output_type = {"output": np.array(out_shape)}
        return node
    if isinstance(module, nn.Linear):
        if module.bias is None:
            return nir.Linear(weight=_np(module.weight))
        return nir.Affine(weight=_np(module.weight), bias=_np(module.bias))
    if isinstance(module, nn.AvgPool2d):
        stride = module.stride if module.stride is not None else module.kernel_size
        if module.padding and module.count_include_pad is False:  # without padding it changes nothing
            raise UnsupportedLayerError(f"AvgPool2d '{name}': count_include_pad=False with padding is not supported; "
                                        "pad with zeros counted (count_include_pad=True) or drop the padding")
        rests = [(n + 2 * p - k) % s for n, p, k, s in zip(in_shape[1:], _pair(module.padding),
                                                            _pair(module.kernel_size), _pair(stride))]
        if module.ceil_mode and any(rests):  # where the windows tile the input, ceil_mode changes nothing
            raise UnsupportedLayerError(f"AvgPool2d '{name}': ceil_mode adds a partial window on a "
                                        f"{'x'.join(map(str, in_shape[1:]))} input; use ceil_mode=False or an "
                                        "input size the pooling tiles")
        return nir.AvgPool2d(kernel_size=_pair(module.kernel_size), stride=_pair(stride), padding=_pair(module.padding))
    if isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            raise UnsupportedLayerError(f"Flatten '{name}': only flatten(start_dim=1) is supported")
        # NIR shapes have no batch dimension: torch's start_dim=1 is NIR's start_dim=0.
        return nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=0, end_dim=-1)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        out = module.output_size if isinstance(module.output_size, (tuple, list)) else (module.output_size,) * 2
        size = [in_shape[1 + i] if out[i] is None else int(out[i]) for i in range(2)]
        if in_shape[1] % size[0] or in_shape[2] % size[1]:
            raise UnsupportedLayerError(f"AdaptiveAvgPool2d '{name}': input {in_shape[1:]} is not a multiple of "
                                        f"the output size {tuple(size)}; use an AvgPool2d")
        kernel = np.array([in_shape[1] // size[0], in_shape[2] // size[1]])
        return nir.AvgPool2d(kernel_size=kernel, stride=kernel, padding=np.zeros(2, np.int64))
    if isinstance(module, nn.MaxPool2d):
        raise UnsupportedLayerError(f"MaxPool2d '{name}': NIR 1.0 has no max pooling node; n2c runs it in "
                                    "torch before the first spiking layer, but cannot export it (use "
                                    "--maxpool avg, or an AvgPool2d)")
    if isinstance(module, SpikingSoftmax):
        if len(in_shape) != 3:
            raise UnsupportedLayerError(f"Softmax '{name}': n2c exports a softmax over attention scores "
                                        f"(heads, N, N), got input {in_shape}")
        return n2c_nodes.Softmax(shape=np.array(in_shape))
    if isinstance(module, NEURON_TYPES):
        theta = np.broadcast_to(kind(module.kind).nir_threshold(module), out_shape).astype(np.float32)
        return nir.IF(r=np.ones(out_shape, np.float32), v_threshold=theta,
                      v_reset=np.zeros(out_shape, np.float32), metadata=neuron_metadata(module, out_shape))
    raise UnsupportedLayerError(f"layer '{name}' ({type(module).__name__}) has no NIR export")


def max_currents(snn: SpikingNetwork, x: np.ndarray, batch_size: int = 256) -> dict[str, float]:
    """The largest |input| in any step of every neuron module (by target) and of the output
    (key ``""``) over the samples ``x`` (B, *input_shape): what the integer stage needs to keep
    the synaptic accumulators inside the chip's width (``n2c.max_current``)."""
    gm = snn.graph_module
    found: dict[str, float] = {}

    def record(key):
        def hook(module, inputs):
            found[key] = max(found.get(key, 0.0), float(inputs[0].detach().abs().max()))
        return hook

    def record_output(module, inputs, output):  # the graph module's output at every step
        found[""] = max(found.get("", 0.0), float(output.detach().abs().max()))

    hooks = [gm.get_submodule(n.target).register_forward_pre_hook(record(n.target)) for n in gm.graph.nodes
             if n.op == "call_module" and isinstance(gm.get_submodule(n.target), NEURON_TYPES)]
    hooks.append(gm.register_forward_hook(record_output))
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                snn(torch.as_tensor(np.asarray(x[i:i + batch_size], np.float32)))
    finally:
        for h in hooks:
            h.remove()
    return {k: v for k, v in found.items() if v > 0}


def to_nir(snn: SpikingNetwork, input_shape: tuple[int, ...], input_scale: float | None = None,
           nested: bool = False, currents: dict[str, float] | None = None) -> nir.NIRGraph:
    """Build the NIR graph of ``snn`` for inputs of shape ``input_shape`` (no batch dimension).

    ``nested``: each top-level submodule of the model (``features``, ``layer1``, ...) with one
    entry and one exit becomes a nested NIRGraph, mirroring the model's structure. ``currents``
    (:func:`max_currents`) are written as each neuron's and the Output's ``n2c.max_current``."""
    currents = currents or {}
    gm: fx.GraphModule = snn.graph_module
    check_elements("the input", input_shape)
    example = torch.zeros(snn.timesteps, *input_shape)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # fx prints the failing node's traceback itself
            ShapeProp(gm).propagate(example)
    except Exception as e:  # any error the model raises on an input of the wrong shape
        message = " ".join(str(e).split())[:160] or type(e).__name__
        raise N2CError(f"the model does not take inputs of shape {tuple(input_shape)} ({message}); pass the shape "
                       "it was trained on (--input-shape C,H,W or --dataset NAME)") from None
    if any(isinstance(m, nn.AdaptiveAvgPool2d) for m in gm.modules()):
        gm = copy.deepcopy(gm)  # the fold must not change the caller's SNN
        if _fold_adaptive_pools(gm):
            ShapeProp(gm).propagate(example)
    nodes: dict[str, nir.NIRNode] = {}
    sources: dict[str, list[str]] = {}  # fx node -> NIR nodes whose outputs sum to its value
    edges: list[tuple[str, str]] = []
    groups: dict[str, str] = {}  # NIR node -> top-level submodule it belongs to
    shapes: dict[str, tuple[int, ...]] = {"input": tuple(input_shape)}

    def shape_of(n: fx.Node) -> tuple[int, ...]:
        return tuple(n.meta["tensor_meta"].shape[1:])

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            meta = {"n2c.input_scale": float(input_scale)} if input_scale else {}
            nodes["input"] = nir.Input(input_type={"input": np.array(input_shape)}, metadata=meta)
            sources[node.name] = ["input"]
        elif node.op == "call_function" and node.target is operator.add:
            sources[node.name] = [s for a in node.args for s in sources[a.name]]
        elif node.op == "call_module" and isinstance(gm.get_submodule(node.target), SpikingProduct):
            name = node.target.replace(".", "_")
            nodes[name] = _product(gm.get_submodule(node.target), node, name)
            for port, arg in zip(n2c_nodes.PORTS, node.args):
                if len(sources[arg.name]) != 1:
                    raise UnsupportedLayerError(f"product '{node.target}': its operand {port} is a sum of "
                                                f"{len(sources[arg.name])} layers; put a quantizer before the product")
                edges.append((sources[arg.name][0], f"{name}.{port}"))
            sources[node.name] = [name]
            shapes[name] = shape_of(node)
            if "." in node.target:
                groups[name] = node.target.split(".")[0]
        elif node.op == "call_module":
            src = sources[node.args[0].name]
            name = node.target.replace(".", "_")
            nodes[name] = _node_for(gm.get_submodule(node.target), shape_of(node.args[0]), shape_of(node), name)
            if node.target in currents and isinstance(gm.get_submodule(node.target), NEURON_TYPES):
                nodes[name].metadata["n2c.max_current"] = float(currents[node.target])
            edges += [(s, name) for s in src]
            sources[node.name] = [name]
            shapes[name] = shape_of(node)
            if "." in node.target:
                groups[name] = node.target.split(".")[0]
        elif node.op == "output":
            out = node.args[0]
            meta = {"n2c.max_current": float(currents[""])} if "" in currents else {}
            nodes["output"] = nir.Output(output_type={"output": np.array(shape_of(out))}, metadata=meta)
            edges += [(s, "output") for s in sources[out.name]]
    metadata = {
        "n2c.version": NIR_CONVENTION_VERSION,
        "n2c.timesteps": int(snn.timesteps),
        "n2c.encoding": "direct",
        "n2c.readout": "mean",
        "n2c.method": snn.method,
    }
    if input_scale:
        metadata["n2c.input_scale"] = float(input_scale)
    # nir's type check cannot follow edges into a node's named input ports (n2c.Product)
    ports = any(isinstance(n, n2c_nodes.Product) for n in nodes.values())
    if nested:
        nodes, edges = _nest(nodes, edges, groups, shapes)
    if ports:
        metadata["n2c.version"] = ATTENTION_CONVENTION_VERSION
        metadata["n2c.requires"] = ("n2c.Product and n2c.Softmax nodes (attention), which NIR 1.0 does not define: "
                                    "read this graph with n2c (docs/nir-conventions.md)")
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata, type_check=not ports)


def _product(module: SpikingProduct, node: fx.Node, name: str) -> n2c_nodes.Product:
    a, b = (tuple(arg.meta["tensor_meta"].shape[1:]) for arg in node.args)
    try:
        return n2c_nodes.Product(mode=module.mode, heads=module.heads, scale=module.scale,
                                 a_shape=np.array(a), b_shape=np.array(b))
    except ValueError as e:
        raise UnsupportedLayerError(f"product '{name}': {e}") from None


def _fold_adaptive_pools(gm: fx.GraphModule) -> bool:
    """Fold an AdaptiveAvgPool2d whose output size does not divide its input (torchvision's VGG at
    32x32 pools 1x1 up to 7x7) into the Linear after it: Flatten → Linear(W) of the pooled map is
    Flatten → Linear(W·P) of the map itself, P the pooling matrix (each output cell the mean of its
    window). A linear map of a linear map, exactly; needs the shapes (ShapeProp) on ``gm``."""
    folded = False
    for node in list(gm.graph.nodes):
        pool = module_of(gm, node)
        if not isinstance(pool, nn.AdaptiveAvgPool2d):
            continue
        c, h, w = node.args[0].meta["tensor_meta"].shape[-3:]
        oh, ow = node.meta["tensor_meta"].shape[-2:]
        if h % oh == 0 and w % ow == 0:
            continue  # an AvgPool2d in NIR
        flat = next(iter(node.users)) if len(node.users) == 1 else None
        linear = next(iter(flat.users)) if flat is not None and len(flat.users) == 1 else None
        if not isinstance(module_of(gm, flat), nn.Flatten) or not isinstance(module_of(gm, linear), nn.Linear):
            continue  # refused by _node_for, naming the layer
        basis = torch.eye(h * w).reshape(h * w, 1, h, w)
        p = F.adaptive_avg_pool2d(basis, (oh, ow)).reshape(h * w, oh * ow).T  # (oh·ow, h·w)
        layer = gm.get_submodule(linear.target)
        new = copy.deepcopy(layer)
        weight = layer.weight.detach().reshape(layer.out_features, c, oh * ow) @ p
        new.weight = nn.Parameter(weight.reshape(layer.out_features, c * h * w))
        new.in_features = c * h * w
        set_submodule(gm, linear.target, new)
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
        folded = True
    if folded:
        gm.graph.lint()
        gm.recompile()
    return folded


def _nest(nodes: dict, edges: list, groups: dict, shapes: dict) -> tuple[dict, list]:
    """Move each group with ≥ 2 nodes, one external source and one exit node into a subgraph."""
    def node(end: str) -> str:  # an edge's end without its input port ("scores.a": node "scores")
        return end.split(".")[0]

    for group in sorted(set(groups.values())):
        members = {n for n, g in groups.items() if g == group}
        entries = [(s, d) for s, d in edges if node(d) in members and s not in members]
        exits = [(s, d) for s, d in edges if s in members and node(d) not in members]
        if len(members) < 2 or len({s for s, _ in entries}) != 1 or len({s for s, _ in exits}) != 1 \
                or group in nodes:
            continue
        source, exit_node = entries[0][0], exits[0][0]
        prefix = len(group) + 1
        inner = {n[prefix:]: nodes.pop(n) for n in sorted(members)}
        inner["input"] = nir.Input(input_type={"input": np.array(shapes[source])})
        inner["output"] = nir.Output(output_type={"output": np.array(shapes[exit_node])})
        inner_edges = [(s[prefix:], d[prefix:]) for s, d in edges if s in members and node(d) in members]
        inner_edges += [("input", d[prefix:]) for _, d in entries] + [(exit_node[prefix:], "output")]
        nodes[group] = nir.NIRGraph(nodes=inner, edges=inner_edges, type_check=False)
        shapes[group] = shapes[exit_node]
        edges = [e for e in edges if e[0] not in members and node(e[1]) not in members]
        edges += [(source, group)] + [(group, d) for _, d in exits]
    return nodes, edges


def write_nir(graph: nir.NIRGraph, path: str | os.PathLike) -> None:
    """Write atomically: a failed write leaves no partial file behind (the directory must exist)."""
    atomic_write(path, lambda tmp: nir.write(tmp, graph))
