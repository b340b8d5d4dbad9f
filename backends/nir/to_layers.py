"""Read any NIR graph (n2c's or another tool's) into the layer IR.

Steps: read the file (``backends.nir.read``); inline nested ``NIRGraph`` nodes (their Input/Output and
``Identity`` nodes become plain wiring); order the nodes from the Input, marking
the edge that closes each cycle as recurrent (it delivers the previous step's
value); translate every node into a layer, checking shapes on every edge.
Every problem is a :class:`NIRFormatError` that names the node.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nir
import numpy as np
from nir.ir.graph import Identity

from backends.ir.layers import (ConvLayer, DelayLayer, DenseLayer, DynamicsLayer, FlattenLayer, InputLayer, Layer,
                                LayerGraph, NeuronLayer, OutputLayer, PoolLayer, ProductLayer, ScaleLayer,
                                SoftmaxLayer, ThresholdLayer)
from backends.nir.read import read_graph, show as _show
from n2c.errors import NIRFormatError
from n2c.export import nodes as n2c_nodes
from n2c.limits import MAX_NESTING, MAX_NODES, check_elements, check_timesteps, elements
from n2c.neurons import BY_NIR_NAME

SUPPORTED_CONVENTION = 3  # 3: graphs with n2c.Product / n2c.Softmax nodes (attention)
STATEFUL = (nir.I, nir.LI, nir.IF, nir.LIF, nir.CubaLI, nir.CubaLIF, nir.Delay)
RUNNABLE = ("Input, Output, Affine, Linear, Scale, Conv1d, Conv2d, SumPool2d, AvgPool2d, Flatten, Delay, "
            "Threshold, I, LI, IF, LIF, CubaLI, CubaLIF, Identity, nested NIRGraph, n2c.Product, n2c.Softmax")


# ---------------------------------------------------------------- flattening


def _inline(graph: nir.NIRGraph, prefix: str = "", depth: int = 0,
            ports: dict | None = None) -> tuple[dict, list, set]:
    """Nodes and edges of ``graph`` with nested graphs inlined (names ``outer.inner``).
    Returns (nodes, edges, pass-through node names). An edge into an input port of an n2c.Product
    (``prod.a``) becomes an edge into ``prod``, its port recorded in ``ports[(src, prod)]``."""
    ports = {} if ports is None else ports
    if not isinstance(graph.nodes, dict) or not isinstance(graph.edges, (list, tuple, np.ndarray)):
        raise NIRFormatError(f"graph '{prefix or 'top'}' has malformed nodes or edges")
    if depth > MAX_NESTING:
        raise NIRFormatError(f"subgraph '{prefix[:-1]}' is nested {depth} deep, over n2c's limit of {MAX_NESTING}; "
                             "flatten the graph")
    nodes, edges, passes = {}, [], set()
    ends: dict[str, tuple[str, str]] = {}  # subgraph name -> (its input, its output), full names
    for name, node in graph.nodes.items():
        full = f"{prefix}{name}"
        if isinstance(node, nir.NIRGraph):
            inner_nodes, inner_edges, inner_passes = _inline(node, f"{full}.", depth + 1, ports)
            ins = [n for n, v in node.nodes.items() if isinstance(v, nir.Input)]
            outs = [n for n, v in node.nodes.items() if isinstance(v, nir.Output)]
            if len(ins) != 1 or len(outs) != 1:
                raise NIRFormatError(f"subgraph '{full}' must have one Input and one Output node, "
                                     f"found {len(ins)} and {len(outs)}")
            ends[full] = (f"{full}.{ins[0]}", f"{full}.{outs[0]}")
            nodes.update(inner_nodes)
            edges += inner_edges
            passes |= inner_passes | set(ends[full])
        elif isinstance(node, nir.NIRNode):
            if node.metadata is not None and not isinstance(node.metadata, dict):
                raise NIRFormatError(f"node '{full}': metadata must be a dict, got {type(node.metadata).__name__}")
            nodes[full] = node
            if isinstance(node, Identity):
                passes.add(full)
        else:
            raise NIRFormatError(f"node '{full}' is a {type(node).__name__}, not a NIR node")
    for edge in graph.edges:
        if not isinstance(edge, (tuple, list, np.ndarray)) or len(edge) != 2 \
                or not all(isinstance(e, str) for e in edge):
            raise NIRFormatError(f"graph '{prefix or 'top'}' has a malformed edge {_show(edge)}")
        src, dst = (f"{prefix}{e}" for e in edge)
        src = ends[src][1] if src in ends else src
        dst = ends[dst][0] if dst in ends else dst
        base, _, port = dst.rpartition(".")
        if dst not in nodes and isinstance(nodes.get(base), n2c_nodes.Product):
            if port not in n2c_nodes.PORTS:
                raise NIRFormatError(f"edge {edge[0]} -> {edge[1]}: n2c.Product '{base}' has inputs "
                                     f"{' and '.join(n2c_nodes.PORTS)}, not {port!r}")
            dst = base
            ports[(src, dst)] = port
        elif isinstance(nodes.get(dst), n2c_nodes.Product):
            raise NIRFormatError(f"edge {edge[0]} -> {edge[1]}: an edge into n2c.Product '{dst}' must name its "
                                 f"input, {dst}.a or {dst}.b")
        for end in (src, dst):
            if end not in nodes:
                raise NIRFormatError(f"edge {edge[0]} -> {edge[1]} names node '{end}', which is not in the graph")
        edges.append((src, dst))
    if len(nodes) > MAX_NODES:
        raise NIRFormatError(f"the graph has {len(nodes):,} nodes, over n2c's limit of {MAX_NODES:,}")
    seen: set = set()
    for edge in edges:
        if edge in seen:
            raise NIRFormatError(f"edge {edge[0]} -> {edge[1]} appears twice; remove the duplicate (NIR edges are "
                                 "a set: to add a signal twice, scale its weights by 2)")
        seen.add(edge)
    return nodes, edges, passes


def _remove_passes(nodes: dict, edges: list, passes: set, ports: dict) -> list:
    """Replace each pass-through node P by edges from P's sources to P's targets (appended after
    the remaining edges, whose order is kept: it is the order in which a node sums its inputs);
    an edge into a product's port keeps its port."""
    order = dict.fromkeys(edges)  # insertion-ordered set of edges
    succ, pred = _adjacency(nodes, edges)
    for p in sorted(passes):
        if p in succ[p]:
            raise NIRFormatError(f"node '{p}' (identity) feeds itself: a cycle without a neuron or Delay")
        for s in pred[p]:
            del order[(s, p)]
            succ[s].remove(p)
        for d in succ[p]:
            del order[(p, d)]
            pred[d].remove(p)
        for s in pred[p]:
            for d in succ[p]:
                if (s, d) in order:
                    raise NIRFormatError(f"node '{s}' reaches '{d}' twice, directly and through identity '{p}'; "
                                         "n2c sums each input once: merge the two paths into one")
                order[(s, d)] = None
                if (p, d) in ports:
                    ports[(s, d)] = ports[(p, d)]
                succ[s].append(d)
                pred[d].append(s)
        del nodes[p], succ[p], pred[p]
    return list(order)


def _adjacency(nodes: dict, edges: list) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Successors and predecessors of every node, in edge order."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    pred: dict[str, list[str]] = {n: [] for n in nodes}
    for s, d in edges:
        succ[s].append(d)
        pred[d].append(s)
    return succ, pred


# ---------------------------------------------------------------- ordering


def _order(nodes: dict, edges: list, start: str) -> tuple[list[str], set]:
    """Depth-first order from ``start``. An edge into a node still being visited closes a
    cycle: it is recurrent. Returns (topological order over the other edges, recurrent edges)."""
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for s, d in edges:
        succ[s].append(d)
    state: dict[str, int] = {}
    post: list[str] = []
    back: set = set()
    stack = [(start, iter(succ[start]))]
    state[start] = 1
    while stack:
        node, it = stack[-1]
        nxt = next(it, None)
        if nxt is None:
            stack.pop()
            state[node] = 2
            post.append(node)
        elif state.get(nxt) == 1:
            back.add((node, nxt))
        elif nxt not in state:
            state[nxt] = 1
            stack.append((nxt, iter(succ[nxt])))
    unreached = sorted(set(nodes) - set(state))
    if unreached:
        raise NIRFormatError(f"node '{unreached[0]}' ({type(nodes[unreached[0]]).__name__}) is not reachable "
                             "from the Input node; connect it or remove it")
    return post[::-1], back


def _check_reaches(nodes: dict, edges: list, output: str) -> None:
    """Every node must have a path to the Output (a dead end is most likely a wiring mistake)."""
    _, pred = _adjacency(nodes, edges)
    reached, todo = {output}, [output]
    while todo:
        for s in pred[todo.pop()]:
            if s not in reached:
                reached.add(s)
                todo.append(s)
    dead = sorted(set(nodes) - reached)
    if dead:
        raise NIRFormatError(f"node '{dead[0]}' ({type(nodes[dead[0]]).__name__}) has no path to the Output node; "
                             "connect it or remove it")


def _check_cycles_have_state(nodes: dict, edges: list) -> None:
    """A cycle made only of stateless nodes is an algebraic loop no time-stepped simulator can run.
    Depth-first over the stateless nodes with an explicit stack (graphs may be deep)."""
    stateless = {n for n, v in nodes.items() if not isinstance(v, STATEFUL)}
    succ = {n: [] for n in stateless}
    for s, d in edges:
        if s in stateless and d in stateless:
            succ[s].append(d)
    state: dict[str, int] = {}
    for root in sorted(stateless):
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(succ[root]))]
        while stack:
            node, it = stack[-1]
            d = next(it, None)
            if d is None:
                state[node] = 2
                stack.pop()
            elif state.get(d) == 1:
                raise NIRFormatError(f"the cycle through node '{d}' has no neuron or Delay, so each step would "
                                     "need its own output; put a neuron or a Delay node in the loop")
            elif d not in state:
                state[d] = 1
                stack.append((d, iter(succ[d])))


# ---------------------------------------------------------------- nodes


def _ints(v, name: str, what: str, dims: int) -> tuple[int, ...]:
    try:
        a = np.atleast_1d(np.asarray(v))
    except (TypeError, ValueError):  # ragged sequences
        a = np.array([], dtype=object)
    if a.dtype.kind not in "iuf" or a.ndim != 1 or not np.all(np.isfinite(a)) or (a != np.round(a)).any():
        raise NIRFormatError(f"node '{name}': {what} must be {dims} integer(s), got {_show(v)}")
    if (np.abs(a) >= 2 ** 31).any():
        raise NIRFormatError(f"node '{name}': {what} {_show(v)} is out of range; values must be below 2**31")
    if a.size == 1:
        a = np.repeat(a, dims)
    if a.size != dims:
        raise NIRFormatError(f"node '{name}': {what} must be {dims} integer(s), got {_show(v)}")
    return tuple(int(x) for x in a)


def _array(v, name: str, what: str) -> np.ndarray:
    try:  # strings ("0.5") and complex numbers would convert, silently
        kind = np.asarray(v).dtype.kind
        a = np.asarray(v, dtype=np.float64) if kind not in "USVc" else None
    except (TypeError, ValueError):
        kind, a = "O", None
    if a is None:
        raise NIRFormatError(f"node '{name}': {what} is not numeric ({type(v).__name__}, dtype kind {kind!r}); "
                             "give real numbers")
    if not np.all(np.isfinite(a)):
        raise NIRFormatError(f"node '{name}': {what} contains NaN or infinity")
    return a


def _param(node, attr: str, name: str, shape: tuple[int, ...], positive: bool = False) -> np.ndarray:
    a = _array(getattr(node, attr), name, attr)
    try:
        a = np.broadcast_to(a, shape).copy()
    except ValueError:
        raise NIRFormatError(f"node '{name}': {attr} has shape {a.shape}, which does not fit the node's "
                             f"input shape {shape}") from None
    if positive and not (a > 0).all():
        raise NIRFormatError(f"node '{name}': {attr} must be positive")
    return a


def _shape(types, key: str, name: str) -> tuple[int, ...]:
    value = types.get(key) if isinstance(types, dict) else None
    if value is None or np.size(value) == 0:
        raise NIRFormatError(f"node '{name}' has no {key} shape; export it with shapes filled in")
    shape = _ints(value, name, f"the {key} shape", int(np.size(value)))
    if min(shape) < 1:
        raise NIRFormatError(f"node '{name}': {key} shape {shape} has an empty dimension")
    return shape


def _check_in(name: str, expected: tuple[int, ...], actual: tuple[int, ...]) -> None:
    if tuple(expected) != tuple(actual):
        raise NIRFormatError(f"node '{name}' expects input shape {tuple(expected)} but receives {tuple(actual)}")


def _meta_array(meta: dict, key: str, default, shape: tuple[int, ...], name: str) -> np.ndarray:
    value = _array(meta.get(key, default), name, key)
    try:
        return np.broadcast_to(value, shape).copy()
    except ValueError:
        raise NIRFormatError(f"IF node '{name}': {key} has shape {value.shape}, expected {shape}") from None


def _n2c_neuron(name: str, node: nir.IF, preds: list[str], shape: tuple[int, ...]) -> NeuronLayer:
    meta = node.metadata
    kind = BY_NIR_NAME.get(meta.get("n2c.neuron")) if isinstance(meta.get("n2c.neuron"), str) else None
    if kind is None:
        raise NIRFormatError(f"IF node '{name}': unknown n2c.neuron {_show(meta.get('n2c.neuron'))} "
                             f"(known: {', '.join(BY_NIR_NAME)})")
    if not (isinstance(meta.get("n2c.reset"), str) and meta["n2c.reset"] == "subtract"
            and isinstance(meta.get("n2c.fire"), str) and meta["n2c.fire"] == "inclusive"):
        raise NIRFormatError(f"IF node '{name}': unsupported n2c.reset/n2c.fire "
                             f"{_show(meta.get('n2c.reset'))}/{_show(meta.get('n2c.fire'))}")
    theta = _array(node.v_threshold, name, "v_threshold")
    if theta.shape != shape or not (theta > 0).all():
        raise NIRFormatError(f"IF node '{name}': v_threshold must be positive with shape {shape}, got {theta.shape}")
    v_init = _meta_array(meta, "n2c.v_init", kind.default_v_init(theta), shape, name)
    spike_value = _meta_array(meta, "n2c.spike_value", theta, shape, name)
    counts = meta.get("n2c.max_spikes", 1), meta.get("n2c.min_spikes", 0)
    if not all(isinstance(c, (int, np.integer, float, np.floating)) and not isinstance(c, bool)
               and np.isfinite(float(c)) and float(c).is_integer() and abs(float(c)) < 2 ** 31 for c in counts):
        raise NIRFormatError(f"IF node '{name}': n2c.max_spikes/n2c.min_spikes must be integers below 2**31, "
                             f"got {_show(counts)}")
    max_spikes, min_spikes = int(counts[0]), int(counts[1])
    if max_spikes < 1 or min_spikes < 0:
        raise NIRFormatError(f"IF node '{name}': n2c.max_spikes must be >= 1 and n2c.min_spikes >= 0")
    layer = NeuronLayer(name, preds, shape, shape, threshold=theta, v_init=v_init, max_spikes=max_spikes,
                        kind=kind.name, min_spikes=min_spikes, spike_value=spike_value,
                        max_current=_max_current(meta, name), scale=_pinned_scale(meta, name))
    kind.read_nir(layer, meta, lambda key: _array(meta.get(key, []), name, key))
    return layer


def _max_current(meta: dict | None, name: str) -> float | None:
    """``n2c.max_current``: one positive finite number, or absent."""
    if not meta or "n2c.max_current" not in meta:
        return None
    value = np.asarray(meta["n2c.max_current"])
    if value.dtype.kind not in "iuf" or value.size != 1 or not np.isfinite(value).all() or not value.reshape(-1)[0] > 0:
        raise NIRFormatError(f"node '{name}': n2c.max_current must be one positive number, got {_show(meta['n2c.max_current'])}")
    return float(value.reshape(-1)[0])


def _pinned_scale(meta: dict | None, name: str) -> float | None:
    """``n2c.scale``: the layer's integer scale S (a power of two) pinned by integer-exact training,
    or absent."""
    if not meta or "n2c.scale" not in meta:
        return None
    value = np.asarray(meta["n2c.scale"])
    ok = value.dtype.kind in "iuf" and value.size == 1 and np.isfinite(value).all() and value.reshape(-1)[0] > 0
    if not ok or not float(np.log2(float(value.reshape(-1)[0]))).is_integer():
        raise NIRFormatError(f"node '{name}': n2c.scale must be one power of two, got {_show(meta['n2c.scale'])}")
    return float(value.reshape(-1)[0])


DYNAMICS = {nir.I: "I", nir.LI: "LI", nir.IF: "IF", nir.LIF: "LIF", nir.CubaLI: "CubaLI", nir.CubaLIF: "CubaLIF"}


def _dynamics(name: str, node, preds: list[str], shape: tuple[int, ...]) -> DynamicsLayer:
    kind = DYNAMICS[type(node)]
    taus = [getattr(node, a, None) for a in ("tau", "tau_mem")]
    if any(t is not None and np.isinf(np.asarray(t, dtype=float)).any() for t in taus):
        raise NIRFormatError(f"{kind} node '{name}': τ is infinite (snnTorch writes τ = r = inf for β = 1), which "
                             "leaves the input gain r/τ undefined; export with β < 1 (e.g. 0.9999) or use an IF")
    layer = DynamicsLayer(name, preds, shape, shape, kind=kind, r=_param(node, "r", name, shape))
    if kind in ("LI", "LIF"):
        layer.tau_mem = _param(node, "tau", name, shape, positive=True)
    if kind in ("CubaLI", "CubaLIF"):
        layer.tau_mem = _param(node, "tau_mem", name, shape, positive=True)
        layer.tau_syn = _param(node, "tau_syn", name, shape, positive=True)
        layer.w_in = _param(node, "w_in", name, shape)
    if kind in ("LI", "LIF", "CubaLI", "CubaLIF"):
        layer.v_leak = _param(node, "v_leak", name, shape)
    if layer.spiking:
        layer.v_threshold = _param(node, "v_threshold", name, shape)
        layer.v_reset = _param(node, "v_reset", name, shape)
    return layer


def _conv(name: str, node, preds: list[str], in_shape: tuple[int, ...]) -> ConvLayer:
    dims = 1 if isinstance(node, nir.Conv1d) else 2
    w = _array(node.weight, name, "weight")
    if w.ndim != dims + 2 or len(in_shape) != dims + 1 or min(w.shape) < 1:
        layout = "(C, L)" if dims == 1 else "(C, H, W)"
        raise NIRFormatError(f"Conv{dims}d '{name}': weight must be {dims + 2}-D and the input {layout}, "
                             f"got {w.shape} and {in_shape}")
    groups = _ints(node.groups, name, "groups", 1)[0]
    if groups < 1 or w.shape[0] % groups:
        raise NIRFormatError(f"Conv{dims}d '{name}': groups {groups} does not divide {w.shape[0]} output channels")
    _check_in(name, (w.shape[1] * groups, *in_shape[1:]), in_shape)
    stride, dil = _ints(node.stride, name, "stride", dims), _ints(node.dilation, name, "dilation", dims)
    if min(stride) < 1 or min(dil) < 1:
        raise NIRFormatError(f"Conv{dims}d '{name}': stride and dilation must be positive")
    kernel = [dil[i] * (w.shape[2 + i] - 1) for i in range(dims)]
    if isinstance(node.padding, str):
        if node.padding == "valid":
            pad = (0,) * dims
        elif node.padding == "same" and max(stride) == 1 and all(k % 2 == 0 for k in kernel):
            pad = tuple(k // 2 for k in kernel)
        else:
            raise NIRFormatError(f"Conv{dims}d '{name}': padding {_show(node.padding)} is not supported (use integers; "
                                 "'same' only with stride 1 and odd kernels)")
    else:
        pad = _ints(node.padding, name, "padding", dims)
    out = [(in_shape[1 + i] + 2 * pad[i] - kernel[i] - 1) // stride[i] + 1 for i in range(dims)]
    if min(out) < 1 or min(pad) < 0:
        raise NIRFormatError(f"Conv{dims}d '{name}': input {in_shape} is too small for its kernel and padding")
    bias = np.zeros(w.shape[0]) if node.bias is None else _array(node.bias, name, "bias").reshape(-1)
    if bias.size == 1 and w.shape[0] > 1:
        bias = np.repeat(bias, w.shape[0])
    if bias.shape != (w.shape[0],):
        raise NIRFormatError(f"Conv{dims}d '{name}': bias has {bias.size} values for {w.shape[0]} channels")
    return ConvLayer(name, preds, in_shape, (w.shape[0], *out), weight=w, bias=bias,
                     stride=stride, padding=pad, dilation=dil, groups=groups)


def _flatten(name: str, node: nir.Flatten, preds: list[str], in_shape: tuple[int, ...]) -> FlattenLayer:
    declared = node.input_type.get("input") if isinstance(node.input_type, dict) else None
    if declared is not None and np.size(declared):
        _check_in(name, _shape(node.input_type, "input", name), in_shape)
    n = len(in_shape)
    start, end = _ints(node.start_dim, name, "start_dim", 1)[0], _ints(node.end_dim, name, "end_dim", 1)[0]
    start, end = start + n if start < 0 else start, end + n if end < 0 else end
    if not 0 <= start <= end < n:
        raise NIRFormatError(f"Flatten '{name}': start_dim {node.start_dim} / end_dim {node.end_dim} do not fit its "
                             f"input {in_shape} (NIR shapes have no batch dimension: torch's flatten(x, 1) is "
                             "start_dim 0)")
    out = (*in_shape[:start], int(np.prod(in_shape[start:end + 1])), *in_shape[end + 1:])
    return FlattenLayer(name, preds, in_shape, out, start_dim=start, end_dim=end)


def _layer(name: str, node: nir.NIRNode, preds: list[str], in_shape, graph_meta: dict) -> Layer:
    if isinstance(node, nir.Input):
        shape = _shape(node.input_type, "input", name)
        scale = (node.metadata or {}).get("n2c.input_scale", graph_meta.get("n2c.input_scale"))
        if scale is not None:
            scale = _array(scale, name, "n2c.input_scale")
            if scale.size != 1 or not scale.reshape(-1)[0] > 0:
                raise NIRFormatError(f"node '{name}': n2c.input_scale must be one positive number, "
                                     f"got {_show(scale.tolist())}")
            scale = float(scale.reshape(-1)[0])
        return InputLayer(name, [], shape, shape, input_scale=scale)
    if isinstance(node, nir.Output):
        declared = node.output_type.get("output") if isinstance(node.output_type, dict) else None
        if declared is not None and np.size(declared) and _shape(node.output_type, "output", name) != in_shape:
            stated = _shape(node.output_type, "output", name)
            if elements(stated) != elements(in_shape):
                raise NIRFormatError(f"Output node '{name}' declares shape {stated} but receives {in_shape}")
            # rockpool writes (1, 1, 1) for a (1,) output: the same values, another shape
            warnings.warn(f"Output node '{name}' declares shape {stated} but receives {in_shape} (the same "
                          f"{elements(in_shape)} values); running with {in_shape}")
        return OutputLayer(name, preds, in_shape, in_shape, max_current=_max_current(node.metadata, name),
                           scale=_pinned_scale(node.metadata, name))
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        return _conv(name, node, preds, in_shape)
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = _array(node.weight, name, "weight")
        if w.ndim != 2 or min(w.shape) < 1:
            raise NIRFormatError(f"{type(node).__name__} '{name}': weight must be 2-D, got shape {w.shape}")
        if len(in_shape) != 1 or in_shape[0] != w.shape[1]:
            raise NIRFormatError(f"node '{name}' expects input shape ({w.shape[1]},) but receives {in_shape}")
        bias = np.zeros(w.shape[0])
        if isinstance(node, nir.Affine) and node.bias is not None:
            bias = _array(node.bias, name, "bias")
            if bias.shape not in ((w.shape[0],), (), (1,)):
                raise NIRFormatError(f"Affine '{name}': bias has shape {bias.shape}, expected ({w.shape[0]},)")
            bias = np.broadcast_to(bias.reshape(-1) if bias.size == 1 else bias, (w.shape[0],)).copy()
        return DenseLayer(name, preds, in_shape, (w.shape[0],), weight=w, bias=bias)
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        if len(in_shape) != 3:
            raise NIRFormatError(f"{type(node).__name__} '{name}' needs a (C, H, W) input, receives {in_shape}")
        k, s, p = (_ints(v, name, w, 2) for v, w in ((node.kernel_size, "kernel_size"), (node.stride, "stride"),
                                                      (node.padding, "padding")))
        hw = [(in_shape[1 + i] + 2 * p[i] - k[i]) // s[i] + 1 if s[i] > 0 else 0 for i in range(2)]
        if min(k) < 1 or min(s) < 1 or min(p) < 0 or min(hw) < 1:
            raise NIRFormatError(f"{type(node).__name__} '{name}': kernel {k}, stride {s}, padding {p} do not fit "
                                 f"the input {in_shape}")
        if p[0] > k[0] // 2 or p[1] > k[1] // 2:
            raise NIRFormatError(f"{type(node).__name__} '{name}': padding {p} exceeds half the kernel {k}; "
                                 "pooling needs padding <= kernel_size // 2")
        scale = 1.0 / (k[0] * k[1]) if isinstance(node, nir.AvgPool2d) else 1.0
        return PoolLayer(name, preds, in_shape, (in_shape[0], *hw), kernel=k, stride=s, padding=p, scale=scale)
    if isinstance(node, nir.Flatten):
        return _flatten(name, node, preds, in_shape)
    if isinstance(node, n2c_nodes.Softmax):
        _check_in(name, _shape(node.input_type, "input", name), in_shape)
        return SoftmaxLayer(name, preds, in_shape, in_shape)
    if isinstance(node, nir.Scale):
        return ScaleLayer(name, preds, in_shape, in_shape, scale=_param(node, "scale", name, in_shape))
    if isinstance(node, nir.Delay):
        delay = _param(node, "delay", name, in_shape)
        if (delay < 0).any():
            raise NIRFormatError(f"Delay '{name}': delays must be non-negative")
        return DelayLayer(name, preds, in_shape, in_shape, delay=delay)
    if isinstance(node, nir.Threshold):
        return ThresholdLayer(name, preds, in_shape, in_shape, threshold=_param(node, "threshold", name, in_shape))
    if isinstance(node, nir.IF) and (node.metadata or {}).get("n2c.neuron") is not None:
        _check_in(name, tuple(np.shape(node.v_threshold)), in_shape)
        return _n2c_neuron(name, node, preds, in_shape)
    if isinstance(node, nir.IF) and "n2c.version" in graph_meta:
        raise NIRFormatError(f"IF node '{name}' has no n2c neuron metadata (n2c.neuron) in a graph written by n2c; "
                             "the file is damaged: export it again")
    if type(node) in DYNAMICS:
        return _dynamics(name, node, preds, in_shape)
    raise NIRFormatError(f"node '{name}' has type {type(node).__name__}, which n2c cannot run "
                         f"(it runs {RUNNABLE})")


def _operands(name: str, forward: list[str], ports: dict, back: set) -> list[str]:
    """The sources of a product's inputs a and b, in that order: one each, both forward."""
    found = {port: [q for q in forward if ports.get((q, name)) == port] for port in n2c_nodes.PORTS}
    late = [s for s, d in back if d == name]
    if late or any(len(v) != 1 for v in found.values()):
        raise NIRFormatError(f"n2c.Product '{name}' needs exactly one edge into each of {name}.a and {name}.b "
                             f"from the Input side, got {sum(map(len, found.values()))} and {len(late)} recurrent")
    return [found[p][0] for p in n2c_nodes.PORTS]


def _product(name: str, node, operands: list[str], out_shapes: dict) -> ProductLayer:
    a, b = (out_shapes[q] for q in operands)
    declared = tuple(tuple(int(v) for v in node.input_type[p]) for p in n2c_nodes.PORTS)
    if (a, b) != declared:
        raise NIRFormatError(f"n2c.Product '{name}' declares inputs {declared[0]} and {declared[1]} but receives "
                             f"{a} and {b}")
    out = tuple(int(v) for v in node.output_type["output"])
    return ProductLayer(name, list(operands), a, out, mode=node.mode, heads=int(node.heads), scale=float(node.scale),
                        b_shape=b)


def import_nir(graph: nir.NIRGraph | str | Path, isolate: bool = False) -> LayerGraph:
    """Translate a NIR graph (a file or an in-memory graph) into a :class:`LayerGraph`;
    ``isolate`` probes a file in a child process first (``backends.nir.read.probe_hdf5``)."""
    if not isinstance(graph, nir.NIRGraph):
        graph = read_graph(graph, isolate)
    if graph.metadata is not None and not isinstance(graph.metadata, dict):
        raise NIRFormatError(f"graph metadata must be a dict, got {type(graph.metadata).__name__}")
    meta = dict(graph.metadata or {})
    if "n2c.version" in meta:
        version = meta["n2c.version"]
        if not isinstance(version, (int, np.integer)) or isinstance(version, bool) or version < 1:
            raise NIRFormatError(f"graph metadata n2c.version must be a positive integer, got {_show(version)}")
        if version > SUPPORTED_CONVENTION:
            raise NIRFormatError(f"the graph uses n2c NIR conventions version {version}; this n2c reads up to "
                                 f"{SUPPORTED_CONVENTION}: upgrade n2c")
    ports: dict[tuple[str, str], str] = {}
    nodes, edges, passes = _inline(graph, ports=ports)
    inputs = [n for n, node in nodes.items() if isinstance(node, nir.Input) and n not in passes]
    outputs = [n for n, node in nodes.items() if isinstance(node, nir.Output) and n not in passes]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NIRFormatError(f"the graph must have exactly one Input and one Output node, "
                             f"found {len(inputs)} and {len(outputs)}")
    edges = _remove_passes(nodes, edges, passes, ports)
    _check_cycles_have_state(nodes, edges)
    order, back = _order(nodes, edges, inputs[0])
    _check_reaches(nodes, edges, outputs[0])
    if any(s == outputs[0] for s, _ in edges):
        raise NIRFormatError(f"the Output node '{outputs[0]}' has outgoing edges")
    order.remove(outputs[0])
    order.append(outputs[0])  # a sink: last is still topological, and backends read the output there
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    for src, dst in edges:
        preds[dst].append(src)
    if preds[inputs[0]]:
        raise NIRFormatError(f"the Input node '{inputs[0]}' has incoming edges")
    layers: list[Layer] = []
    out_shapes: dict[str, tuple[int, ...]] = {}
    for name in order:
        node, p = nodes[name], preds[name]
        forward = [q for q in p if (q, name) not in back]
        if not isinstance(node, nir.Input) and not forward:
            raise NIRFormatError(f"node '{name}' ({type(node).__name__}) has no incoming edge from the Input side")
        if isinstance(node, n2c_nodes.Product):
            p = forward = _operands(name, forward, ports, back)
        in_shape = out_shapes[forward[0]] if forward else None
        for q in forward[1:] if not isinstance(node, n2c_nodes.Product) else ():
            if out_shapes[q] != in_shape:
                raise NIRFormatError(f"node '{name}' sums inputs of different shapes: "
                                     f"'{forward[0]}' {in_shape} and '{q}' {out_shapes[q]}")
        try:
            layer = _product(name, node, p, out_shapes) if isinstance(node, n2c_nodes.Product) else \
                _layer(name, node, p, in_shape, meta)
        except NIRFormatError:
            raise
        except Exception as e:  # malformed parameters nir itself did not check
            raise NIRFormatError(f"node '{name}' ({type(node).__name__}) has malformed parameters "
                                 f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None
        check_elements(f"node '{name}' ({type(node).__name__})", layer.out_shape, error=NIRFormatError)
        out_shapes[name] = layer.out_shape
        layers.append(layer)
    in_shapes = {layer.name: layer.in_shape for layer in layers}
    for src, dst in sorted(back):
        if out_shapes[src] != in_shapes[dst]:
            raise NIRFormatError(f"recurrent edge {src} -> {dst}: '{src}' outputs {out_shapes[src]} but "
                                 f"'{dst}' takes {in_shapes[dst]}")
    timesteps = meta.get("n2c.timesteps", 1)
    if not isinstance(timesteps, (int, np.integer)) or isinstance(timesteps, bool) or timesteps < 1:
        raise NIRFormatError(f"graph metadata n2c.timesteps must be a positive integer, got {_show(timesteps)}")
    check_timesteps("graph metadata n2c.timesteps", int(timesteps), NIRFormatError)
    return LayerGraph(layers, int(timesteps), meta, back)
