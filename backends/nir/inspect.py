"""``n2c inspect``: a NIR graph as a table, and which backend can run it."""

from __future__ import annotations

import json
import warnings

import nir
import numpy as np

from backends.nir.read import read_graph
from backends.nir.to_layers import import_nir
from n2c.errors import N2CError
from n2c.export import nodes as n2c_nodes

PARAMETERS = ("weight", "bias", "scale", "delay", "threshold", "r", "tau", "tau_mem", "tau_syn", "v_leak",
              "v_threshold", "v_reset", "w_in")


def _summary(value) -> str:
    a = np.asarray(value)
    if a.dtype.kind not in "biuf":
        return str(value)
    if a.size == 1:
        return f"{a.reshape(-1)[0]:.4g}"
    if a.size and (a == a.reshape(-1)[0]).all():
        return f"{a.reshape(-1)[0]:.4g} ×{a.size}"
    return f"{tuple(a.shape)} [{a.min():.3g}, {a.max():.3g}]" if a.size else "empty"


def _params(node: nir.NIRNode) -> dict[str, str]:
    if isinstance(node, n2c_nodes.Product):
        return {"mode": str(node.mode), "heads": str(node.heads), "scale": _summary(node.scale),
                "a": str(tuple(node.input_type["a"].tolist())), "b": str(tuple(node.input_type["b"].tolist()))}
    out = {p: _summary(getattr(node, p)) for p in PARAMETERS if getattr(node, p, None) is not None}
    for p in ("kernel_size", "stride", "padding", "dilation", "groups", "start_dim", "end_dim"):
        if getattr(node, p, None) is not None:
            out[p] = str(np.asarray(getattr(node, p)).tolist())
    return out


def _rows(graph: nir.NIRGraph, prefix: str = "") -> list[dict]:
    rows = []
    for name, node in graph.nodes.items():
        full = f"{prefix}{name}"
        if isinstance(node, nir.NIRGraph):
            rows.append({"node": full, "type": "NIRGraph (nested)", "params": {}, "n2c": {}})
            rows += _rows(node, f"{full}.")
            continue
        node_meta = node.metadata if isinstance(node.metadata, dict) else {}  # import_nir names a malformed one
        meta = {k: _summary(v) if not isinstance(v, str) else v for k, v in node_meta.items()
                if str(k).startswith("n2c.")}
        kind = node.to_dict()["type"] if isinstance(node, (n2c_nodes.Product, n2c_nodes.Softmax)) else type(node).__name__
        rows.append({"node": full, "type": kind, "params": _params(node), "n2c": meta})
    return rows


def _backends(nir_graph) -> tuple[dict[str, str], dict, list, set]:
    """What each backend says about the graph ('yes' or the reason it cannot run it), the layer
    shapes, the integer form's per-layer quantization summary, and the recurrent edges."""
    try:
        graph = import_nir(nir_graph)
    except N2CError as e:
        return {b: f"no: {e}" for b in ("reference float", "reference int", "lava")}, {}, [], set()
    shapes = {layer.name: (layer.in_shape, layer.out_shape) for layer in graph.layers}
    verdict = {"reference float": "yes"}
    from backends.quantize import quantize
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = quantize(graph, graph.input.input_scale or 1.0)
        verdict["reference int"] = "yes" if graph.input.input_scale else \
            "yes, given --input-scale (the graph does not state it)"
    except N2CError as e:
        verdict["reference int"] = f"no: {e}"
        verdict["lava"] = "no: needs the integer form first"
        return verdict, shapes, [], graph.recurrent
    from backends.lava.lower import check_network
    try:
        check_network(net)
        verdict["lava"] = "yes"
    except N2CError as e:
        verdict["lava"] = f"no: {e}"
    return verdict, shapes, net.report, graph.recurrent


def describe(path, as_json: bool = False, isolate: bool = False) -> str:
    graph = read_graph(path, isolate=isolate)
    rows = _rows(graph)
    backends, shapes, quantization, recurrent = _backends(graph)
    order = list(shapes)  # the graph's topological order, when it imports
    rows.sort(key=lambda r: order.index(r["node"]) if r["node"] in order else len(order))
    for row in rows:
        if row["node"] in shapes:
            row["input_shape"], row["output_shape"] = (list(s) if s else None for s in shapes[row["node"]])
    graph_meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    meta = {k: v if isinstance(v, (str, int, float)) else _summary(v) for k, v in graph_meta.items()}
    edges = _edges(graph)
    if as_json:
        return json.dumps({"file": str(path), "metadata": meta, "nodes": rows, "edges": edges,
                           "recurrent_edges": sorted(recurrent), "backends": backends,
                           "quantization": quantization}, default=str)
    lines = [f"{path}: {len(rows)} nodes, {len(edges)} edges"]
    if meta:
        lines.append("graph metadata: " + ", ".join(f"{k}={v}" for k, v in meta.items()))
    header = ("node", "type", "shape in → out", "parameters", "n2c metadata")
    table = [header] + [(r["node"], r["type"], _shape_text(r), ", ".join(f"{k} {v}" for k, v in r["params"].items()),
                         ", ".join(f"{k.removeprefix('n2c.')}={v}" for k, v in r["n2c"].items()))
                        for r in rows]
    widths = [min(max(len(t[i]) for t in table), 60) for i in range(len(header))]
    for t in table:
        lines.append("  ".join(_clip(c, w).ljust(w) for c, w in zip(t, widths)).rstrip())
    lines.append("edges: " + ", ".join(f"{s}→{d}" + (" (recurrent: one step late)" if (s, d) in recurrent else "")
                                       for s, d in edges))
    if any(r["type"] in n2c_nodes.TYPES for r in rows):
        lines.append("n2c.Product / n2c.Softmax: n2c's own node types for attention (docs/nir-conventions.md); "
                     "other NIR readers cannot load this file")
    lines.append("backends:")
    lines += [f"  {k:<16} {v}" for k, v in backends.items()]
    if quantization:
        lines.append("integer form (per neuron layer): scale S, weight bits used of 8, max weight error, "
                     "weights rounded to 0, smallest integer threshold")
        for q in quantization:
            lines.append(f"  {q['layer']:<20} S={q['scale']:<10g} bits {q['weight_bits_used']}/{q['weight_bits']}  "
                         f"err {q['weight_max_abs_error']:.2e}  zeroed {q['weights_zeroed']}/{q['weight_count']}"
                         + (f"  θ_int ≥ {q['threshold_int_min']}" if "threshold_int_min" in q else "")
                         + ("  (S capped: accumulator width)" if q.get("scale_capped") else ""))
    return "\n".join(lines)


def _edges(graph: nir.NIRGraph, prefix: str = "") -> list[tuple[str, str]]:
    edges = [(f"{prefix}{s}", f"{prefix}{d}") for s, d in graph.edges]
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            edges += _edges(node, f"{prefix}{name}.")
    return edges


def _shape_text(row: dict) -> str:
    if "input_shape" not in row:
        return ""
    return f"{tuple(row['input_shape']) if row['input_shape'] else '-'} → {tuple(row['output_shape'])}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"
