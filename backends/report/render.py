"""Render a report dict (``report_version`` 2, built by :mod:`backends.report.build`) for people.

Public API:

* :func:`to_markdown` — ``report.md`` text.
* :func:`to_html` — one self-contained HTML page (inline CSS, plots as base64 PNG, no
  external resources, no JavaScript) with the markdown's content plus the plots.
* :func:`plots` — PNG bytes per plot name (``core_utilization``, ``energy_per_layer``,
  ``spike_activity`` and, with two or more ``across_T`` rows, ``accuracy_energy_vs_T``).
* :func:`write_report` — ``report.json``, ``report.md`` and ``report.html`` written
  atomically: everything is rendered before any file is touched.

Both text renderers share one document model (a list of blocks), so the markdown and the
HTML always say the same thing. Plots use matplotlib's Agg canvas directly (no pyplot).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import secrets
from pathlib import Path

from backends.hardware.cost import ENERGY_COMPONENTS
from backends.hardware.spec import TAGS
from backends.report.build import REPORT_VERSION as SUPPORTED_VERSION
MD_CORE_ROWS = 64  # per-core rows shown in the markdown; the HTML lists every core

COMPONENT_LABELS = {
    "synaptic_ops": "synaptic ops", "neuron_updates_active": "neuron updates (active)",
    "neuron_updates_inactive": "neuron updates (inactive)", "spike_messages": "spike messages",
    "hops": "mesh hops", "static": "static",
}
PLOT_TITLES = {
    "core_utilization": "Core map: utilization per core",
    "energy_per_layer": "Energy per layer by component",
    "spike_activity": "Spike activity per layer",
    "accuracy_energy_vs_T": "Accuracy and energy against T",
}

# ---------------------------------------------------------------------------------------------
# number formatting

_PREFIXES = [(1e-12, "p"), (1e-9, "n"), (1e-6, "µ"), (1e-3, "m"), (1.0, ""), (1e3, "k")]


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def si_prefix(x: float) -> tuple[float, str]:
    """(scale, prefix) that puts |x| in [1, 1000) for the prefixes p…k; 0 gets no prefix."""
    a = abs(x)
    if a == 0 or not math.isfinite(a):
        return 1.0, ""
    chosen = _PREFIXES[0]
    for scale, prefix in _PREFIXES:
        if a >= scale * (1 - 5e-4):  # 999.96 pJ rounds to 1 nJ, not "1e+03 pJ"
            chosen = (scale, prefix)
    return chosen


def fmt_si(x, unit: str, digits: int = 3) -> str:
    """``2.36e-11, "J"`` → ``23.6 pJ``; None → ``—``."""
    if x is None:
        return "—"
    if not _is_num(x):
        return str(x)
    if x == 0:
        return f"0 {unit}"
    if not math.isfinite(x):
        return f"{x} {unit}"
    scale, prefix = si_prefix(x)
    return f"{x / scale:.{digits}g} {prefix}{unit}"


def fmt_energy(x) -> str:
    return fmt_si(x, "J")


def fmt_time(x) -> str:
    return fmt_si(x, "s")


def fmt_count(x) -> str:
    """Counts with thousands separators; fractional counts (means per inference) keep 1–3 digits."""
    if x is None:
        return "—"
    if isinstance(x, bool) or not _is_num(x):
        return str(x)
    if not math.isfinite(x):
        return str(x)
    if float(x).is_integer():
        return f"{int(x):,}"
    if abs(x) >= 100:
        return f"{x:,.1f}"
    return f"{x:.3g}"


def fmt_pct(x, digits: int = 1) -> str:
    if x is None:
        return "—"
    if not _is_num(x):
        return str(x)
    return f"{100 * x:.{digits}f} %"


def fmt_ratio(x) -> str:
    """A dimensionless rate such as spikes per neuron per step."""
    if x is None:
        return "—"
    if not _is_num(x):
        return str(x)
    return f"{x:.3g}"


def fmt_edp(x) -> str:
    if x is None:
        return "—"
    if not _is_num(x):
        return str(x)
    return "0 J·s" if x == 0 else f"{x:.3g} J·s"


def fmt_quantity(q: dict | None) -> str:
    """A spec value with its unit: J, s and W get SI prefixes, counts get separators."""
    if not q:
        return "—"
    value, unit = q.get("value"), (q.get("unit") or "")
    if unit in ("J", "s", "W", "Hz", "V"):
        return fmt_si(value, unit)
    if unit == "bool":
        return "yes" if value else "no"
    return (fmt_count(value) + (f" {unit}" if unit else "")).strip()


def cite(q: dict | None) -> str:
    """``[S] source (where)``."""
    if not q:
        return "—"
    text = f"[{q.get('tag', '?')}] {q.get('source', '')}".rstrip()
    return text + (f" ({q['where']})" if q.get("where") else "")


def _alternatives(q: dict) -> str:
    alts = q.get("alternatives") or []
    if not alts:
        return ""
    return "; ".join(f"{fmt_quantity({'unit': q.get('unit'), **a})} {cite(a)}" for a in alts)


def _shape(shape) -> str:
    if shape is None:
        return "—"
    if isinstance(shape, (list, tuple)):
        return "×".join(str(s) for s in shape)
    return str(shape)


def _block(block) -> str:
    """``[[0, 16], [0, 8]]`` → ``0:16, 0:8``."""
    if not block:
        return "—"
    parts = []
    for r in block:
        if isinstance(r, (list, tuple)) and len(r) == 2:
            parts.append(f"{r[0]}:{r[1]}")
        else:
            parts.append(str(r))
    return ", ".join(parts)


def _label(key: str) -> str:
    return COMPONENT_LABELS.get(key, key.replace("_", " "))


def _yes_no(x) -> str:
    return "—" if x is None else ("yes" if x else "no")


# ---------------------------------------------------------------------------------------------
# document model: a list of blocks rendered both as markdown and as HTML
#   ("h", level, text) · ("p", text) · ("note", title, text) · ("list", [text, ...])
#   ("table", headers, rows, md_limit, omitted_text) · ("plot", name)


def _check(report: dict) -> None:
    if not isinstance(report, dict):
        raise TypeError(f"report must be a dict, not {type(report).__name__}")
    version = report.get("report_version")
    if version != SUPPORTED_VERSION:
        raise ValueError(f"report_version {version!r} is not supported (this renderer reads {SUPPORTED_VERSION})")


def _static_energy(energy: dict):
    return (energy.get("components") or {}).get("static")


def _document(report: dict, plot_names: list[str]) -> list[tuple]:
    _check(report)
    hw = report["hardware"]
    mapping = report["mapping"]
    energy = report["energy"]
    activity = report.get("activity") or {}
    latency = report.get("latency") or {}
    ann = report.get("ann") or {}
    data = report.get("data") or {}
    values = hw.get("values") or {}
    doc: list[tuple] = []
    add = doc.append

    title = f"n2c report: {report.get('graph', '')} on {hw.get('name', hw.get('key', '?'))}"
    add(("h", 1, title))
    if hw.get("note"):
        add(("note", f"Hardware note ({hw.get('name', hw.get('key', ''))})", hw["note"]))
    meta = [f"generator {report.get('generator', '—')}", f"report version {report.get('report_version')}",
            f"graph {report.get('graph', '—')}", f"method {report.get('method', '—')}",
            f"T = {report.get('timesteps', '—')} timestep(s)"]
    if data:
        meta.append(f"data {data.get('name', '—')}/{data.get('split', '—')}, "
                    f"{fmt_count(data.get('samples'))} samples, "
                    f"simulator {data.get('simulator', '—')}")
    if hw.get("spec_file"):
        meta.append(f"chip spec {hw['spec_file']}")
    add(("p", " · ".join(meta)))
    notes = report.get("notes") or []
    if notes:
        add(("h", 2, "Notes"))
        add(("list", [str(n) for n in notes]))

    # Summary ---------------------------------------------------------------------------------
    add(("h", 2, "Summary"))
    rng = energy.get("range") or {}
    rows = [
        ["Accuracy", "—" if report.get("accuracy") is None else fmt_pct(report["accuracy"], 2)],
        ["Cores", f"{fmt_count(mapping.get('cores'))} on {fmt_count(mapping.get('chips'))} chip(s)"],
        ["Core lower bound / gap", f"{fmt_count(mapping.get('lower_bound'))} / {fmt_count(mapping.get('gap'))}"],
        ["Energy per inference, total", fmt_energy(energy.get("total"))],
        ["Energy per inference, dynamic", fmt_energy(energy.get("dynamic"))],
        ["Energy per inference, static", fmt_energy(_static_energy(energy))],
        ["Static, prorated to the cores used", fmt_energy(energy.get("static_prorated_by_cores"))],
        ["Total energy range (alternative constants)",
         f"{fmt_energy(rng.get('low'))} – {fmt_energy(rng.get('high'))}" if rng else "—"],
        ["Latency per step (mean / max)",
         f"{fmt_time(latency.get('step_s_mean'))} / {fmt_time(latency.get('step_s_max'))}"],
        ["Latency per inference", fmt_time(latency.get("inference_s"))],
        ["Energy-delay product", fmt_edp(report.get("edp_J_s"))],
    ]
    if ann:
        snn45 = ann.get("snn_45nm_J") or {}
        rows.append(["ANN at 45 nm", f"{fmt_energy(ann.get('energy_J'))} for {fmt_count(ann.get('macs'))} MACs"])
        rows.append(["SNN at 45 nm (graded spike = 1 op / unit spikes)",
                     f"{fmt_energy(snn45.get('graded_as_one'))} / {fmt_energy(snn45.get('unit_spikes'))}"])
    add(("table", ["Quantity", "Value"], rows, None, ""))

    # Mapping -----------------------------------------------------------------------------------
    add(("h", 2, "Mapping per layer"))
    mesh = mapping.get("mesh") or {}
    limits = mapping.get("limits") or {}
    parts = [f"{fmt_count(mapping.get('cores'))} cores on {fmt_count(mapping.get('chips'))} chip(s); "
             f"lower bound {fmt_count(mapping.get('lower_bound'))}, gap {fmt_count(mapping.get('gap'))}."]
    if mesh:
        parts.append(f"Mesh per chip: {fmt_count(mesh.get('tiles_x'))} × {fmt_count(mesh.get('tiles_y'))} tiles, "
                     f"{fmt_count(mesh.get('cores_per_tile'))} cores per tile, "
                     f"{fmt_count(mesh.get('cores_per_chip'))} cores per chip.")
    if limits:
        lim = [f"{_label(k)} {fmt_count(v)}" for k, v in limits.items() if k != "memory"]
        lim += [f"{k} {fmt_count(v)} bits" for k, v in (limits.get("memory") or {}).items()]
        parts.append("Per-core limits: " + ", ".join(lim) + ".")
    add(("p", " ".join(parts)))
    layers = mapping.get("layers") or []
    add(("table", ["Layer", "Kind", "Shape", "Neurons", "Compartments / neuron", "Cores", "Split", "Lower bound",
                   "Binding", "Synapses", "Synapse bits", "Max input axons", "Max utilization"],
         [[ly.get("name"), ly.get("kind"), _shape(ly.get("shape")), fmt_count(ly.get("neurons")),
           fmt_count(ly.get("compartments_per_neuron")), fmt_count(ly.get("cores")), _shape(ly.get("split")),
           fmt_count(ly.get("lower_bound")), ly.get("binding", "—"), fmt_count(ly.get("synapses")),
           fmt_count(ly.get("synapse_bits")), fmt_count(ly.get("input_axons_max")),
           fmt_pct(ly.get("utilization_max"))] for ly in layers], None, ""))

    # Per core ----------------------------------------------------------------------------------
    add(("h", 2, "Per core"))
    cores = mapping.get("per_core") or []
    if "core_utilization" in plot_names:
        add(("plot", "core_utilization"))
    usage_keys, mem_keys, util_keys = [], [], []
    for c in cores:
        for src, dst in ((c.get("usage") or {}, usage_keys), (c.get("memory") or {}, mem_keys),
                         (c.get("utilization") or {}, util_keys)):
            dst.extend(k for k in src if k not in dst)
    headers = (["Core", "Layer", "Chip", "Tile (x, y)", "Block"] + [_label(k) for k in usage_keys]
               + [f"{k} [bits]" for k in mem_keys] + [f"util. {_label(k)}" for k in util_keys] + ["Max util."])
    rows = []
    for c in cores:
        util = c.get("utilization") or {}
        tile = c.get("tile")
        nums = [v for v in util.values() if _is_num(v)]
        rows.append([fmt_count(c.get("index")), c.get("layer", "—"), fmt_count(c.get("chip")),
                     f"{tile[0]}, {tile[1]}" if isinstance(tile, (list, tuple)) and len(tile) == 2 else "—",
                     _block(c.get("block"))]
                    + [fmt_count((c.get("usage") or {}).get(k)) for k in usage_keys]
                    + [fmt_count((c.get("memory") or {}).get(k)) for k in mem_keys]
                    + [fmt_pct(util.get(k)) for k in util_keys] + [fmt_pct(max(nums)) if nums else "—"])
    omitted = max(len(rows) - MD_CORE_ROWS, 0)
    add(("table", headers, rows, MD_CORE_ROWS,
         f"{omitted:,} more cores omitted here (first {MD_CORE_ROWS} of {len(rows):,} shown); "
         "report.html and report.json list every core."))

    # Activity ----------------------------------------------------------------------------------
    add(("h", 2, "Activity per layer"))
    add(("p", f"Counts per {activity.get('per', 'inference')}. Spike rate is unit spikes per neuron per step; "
              "active fraction is the share of neurons that sent at least one message."))
    if "spike_activity" in plot_names:
        add(("plot", "spike_activity"))
    act_keys = ["messages", "unit_spikes", "synops", "synops_unit_spikes", "neuron_updates_active",
                "neuron_updates_inactive", "hops_ew", "hops_ns", "chip_crossings"]
    act_labels = ["Messages", "Unit spikes", "Synaptic ops", "Synaptic ops (unit spikes)", "Neuron updates (active)",
                  "Neuron updates (inactive)", "Hops E–W", "Hops N–S", "Chip crossings"]
    rows = [[ly.get("name"), ly.get("kind"), fmt_count(ly.get("neurons")), fmt_ratio(ly.get("spike_rate")),
             fmt_pct(ly.get("active_fraction"))] + [fmt_count(ly.get(k)) for k in act_keys]
            for ly in activity.get("layers") or []]
    inp = activity.get("input")
    if inp:
        rows.insert(0, [f"{inp.get('name', 'input')} (input)", "—", "—", "—", "—",
                        fmt_count(inp.get("messages"))]
                    + ["—"] * (len(act_keys) - 1))
    totals = activity.get("totals")
    if totals:
        rows.append(["total", "", "", "", ""] + [fmt_count(totals.get(k)) for k in act_keys])
    add(("table", ["Layer", "Kind", "Neurons", "Spike rate", "Active fraction"] + act_labels, rows, None, ""))

    # Energy ------------------------------------------------------------------------------------
    add(("h", 2, "Energy per layer and by component"))
    total = energy.get("total")
    add(("p", f"Energy in {energy.get('unit', 'J per inference')}: total {fmt_energy(total)}, dynamic "
              f"{fmt_energy(energy.get('dynamic'))}, static {fmt_energy(_static_energy(energy))}; range over "
              f"alternative constants {fmt_energy(rng.get('low'))} – {fmt_energy(rng.get('high'))}. "
              f"If every unit spike of a graded message cost one operation, dynamic energy would be "
              f"{fmt_energy(energy.get('graded_as_unit_spikes'))}."))
    if "energy_per_layer" in plot_names:
        add(("plot", "energy_per_layer"))
    comps = energy.get("components") or {}
    share = (lambda v: fmt_pct(v / total) if _is_num(v) and _is_num(total) and total else "—")
    rows = [[_label(k), fmt_energy(v), share(v)] for k, v in comps.items()]
    rows.append(["dynamic", fmt_energy(energy.get("dynamic")), share(energy.get("dynamic"))])
    rows.append(["total", fmt_energy(total), share(total)])
    add(("table", ["Component", "Energy", "Share of total"], rows, None, ""))
    per_layer = energy.get("per_layer") or {}
    comp_keys = _component_keys(per_layer)
    rows = []
    for name, parts_ in per_layer.items():
        s = sum(v for v in parts_.values() if _is_num(v))
        rows.append([name] + [fmt_energy(parts_.get(k)) for k in comp_keys] + [fmt_energy(s)])
    add(("table", ["Layer"] + [_label(k) for k in comp_keys] + ["Layer total"], rows, None, ""))
    used = energy.get("constants") or []
    if used:
        add(("p", "Constants used: " + "; ".join(
            f"{n} = {fmt_quantity(values.get(n))} [{(values.get(n) or {}).get('tag', '?')}]" for n in used) + "."))

    # Latency -----------------------------------------------------------------------------------
    add(("h", 2, "Latency"))
    rows = [["Step time, mean", fmt_time(latency.get("step_s_mean"))],
            ["Step time, max", fmt_time(latency.get("step_s_max"))],
            ["Barrier synchronization per step", fmt_time(latency.get("barrier_s"))],
            ["Critical core (layer)", f"{fmt_count(latency.get('critical_core'))} "
                                      f"({latency.get('critical_layer', '—')})"],
            ["Steps per inference", fmt_count(latency.get("steps_per_inference"))],
            ["Pipeline depth", f"{fmt_count(latency.get('pipeline_depth_steps'))} steps"],
            ["Time per inference", fmt_time(latency.get("inference_s"))],
            ["Time to first output", fmt_time(latency.get("first_output_s"))],
            ["Energy-delay product", fmt_edp(report.get("edp_J_s"))]]
    add(("table", ["Quantity", "Value"], rows, None, ""))

    # ANN comparison ----------------------------------------------------------------------------
    add(("h", 2, "ANN comparison (45 nm)"))
    if ann:
        snn45 = ann.get("snn_45nm_J") or {}
        ann_e = ann.get("energy_J")

        def ratio(v):
            return f"{ann_e / v:.3g}×" if _is_num(ann_e) and _is_num(v) and v else "—"
        rows = [["ANN (one MAC per synapse)", fmt_count(ann.get("macs")) + " MACs", fmt_energy(ann_e), "1×"],
                ["SNN, graded spike = one op", "", fmt_energy(snn45.get("graded_as_one")),
                 ratio(snn45.get("graded_as_one"))],
                ["SNN, one op per unit spike", "", fmt_energy(snn45.get("unit_spikes")),
                 ratio(snn45.get("unit_spikes"))]]
        add(("table", ["Network", "Operations", "Energy per inference", "ANN energy ÷ this"], rows, None, ""))
        consts = ann.get("constants") or {}
        if consts:
            add(("table", ["Constant", "Value", "Tag", "Source", "Where"],
                 [[k, fmt_quantity(q), f"[{q.get('tag', '?')}]", q.get("source", ""), q.get("where", "")]
                  for k, q in consts.items()], None, ""))
    else:
        add(("p", "No ANN comparison in this report."))

    # Across T ----------------------------------------------------------------------------------
    across = report.get("across_T") or []
    if across:
        add(("h", 2, "Across T"))
        if "accuracy_energy_vs_T" in plot_names:
            add(("plot", "accuracy_energy_vs_T"))
        rows = []
        for r in across:
            rows.append([r.get("graph", "—"), r.get("method", "—"), fmt_count(r.get("timesteps")),
                         "—" if r.get("accuracy") is None else fmt_pct(r.get("accuracy"), 2), _yes_no(r.get("fits")),
                         fmt_count(len(r["cores"]) if isinstance(r.get("cores"), list) else r.get("cores")),
                         fmt_energy(r.get("energy_total_J")),
                         fmt_energy(r.get("energy_dynamic_J")), fmt_time(r.get("inference_s")),
                         fmt_edp(r.get("edp_J_s")), fmt_count(r.get("synops")), fmt_energy(r.get("ann_energy_J")),
                         r.get("reason") or ""])
        add(("table", ["Graph", "Method", "T", "Accuracy", "Fits", "Cores", "Energy total", "Energy dynamic",
                       "Time per inference", "EDP", "Synaptic ops", "ANN energy", "Reason"], rows, None, ""))

    # Quantization ------------------------------------------------------------------------------
    add(("h", 2, "Quantization summary"))
    quant = report.get("quantization") or []
    if quant:
        keys: list = []
        for q in quant:
            keys.extend(k for k in q if k not in keys)
        add(("table", [k.replace("_", " ") for k in keys],
             [[_cell(q.get(k)) for k in keys] for q in quant], None, ""))
    else:
        add(("p", "No quantization details in this report."))

    # Constants ---------------------------------------------------------------------------------
    add(("h", 2, "Constants"))
    add(("p", "Every constant with its provenance tag: " +
         "; ".join(f"[{t}] {d}" for t, d in TAGS.items()) + "."))
    rows = [[name, fmt_quantity(q), f"[{q.get('tag', '?')}]", q.get("source", ""), q.get("where", ""),
             _alternatives(q)] for name, q in values.items()]
    for m in hw.get("memory_per_core") or []:
        q = m.get("bits") or {}
        rows.append([f"memory per core: {m.get('name', '')} (holds {', '.join(m.get('holds', []))})",
                     fmt_quantity(q), f"[{q.get('tag', '?')}]", q.get("source", ""), q.get("where", ""),
                     _alternatives(q)])
    for name, q in (ann.get("constants") or {}).items():
        rows.append([f"ANN: {name}", fmt_quantity(q), f"[{q.get('tag', '?')}]", q.get("source", ""),
                     q.get("where", ""), _alternatives(q)])
    add(("table", ["Name", "Value", "Tag", "Source", "Where", "Alternatives"], rows, None, ""))
    return doc


def _cell(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return _yes_no(v)
    if _is_num(v):
        return fmt_count(v) if float(v).is_integer() else f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_cell(x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_cell(x)}" for k, x in v.items())
    return str(v)


def _component_keys(per_layer: dict) -> list[str]:
    keys = [k for k in ENERGY_COMPONENTS if any(k in p for p in per_layer.values())]
    for p in per_layer.values():
        keys.extend(k for k in p if k not in keys)
    return keys


# ---------------------------------------------------------------------------------------------
# markdown


def _md_text(s) -> str:
    """Escape the characters that would turn text into markup or raw HTML (``[P]`` stays as is)."""
    s = str(s)
    for ch in ("\\", "`", "*", "<", ">"):
        s = s.replace(ch, "\\" + ch)
    return s


def _md_cell(s) -> str:
    return _md_text(s).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _md_table(headers, rows) -> list[str]:
    out = ["| " + " | ".join(_md_cell(h) for h in headers) + " |",
           "| " + " | ".join("---" for _ in headers) + " |"]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return out


def to_markdown(report: dict) -> str:
    """The report as markdown (plots are in the HTML only)."""
    lines: list[str] = []
    for block in _document(report, []):
        kind = block[0]
        if kind == "h":
            lines += ["#" * block[1] + " " + _md_text(block[2]), ""]
        elif kind == "p":
            lines += [_md_text(block[1]), ""]
        elif kind == "note":
            lines += [f"> **{_md_text(block[1])}:** " + _md_text(block[2]).replace("\n", "\n> "), ""]
        elif kind == "list":
            lines += [f"- {_md_text(item)}" for item in block[1]] + [""]
        elif kind == "table":
            _, headers, rows, limit, omitted = block
            shown = rows if limit is None else rows[:limit]
            lines += _md_table(headers, shown) + [""]
            if len(shown) < len(rows):
                lines += [f"*{_md_text(omitted)}*", ""]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #345;padding-bottom:.2em}
h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ccd;padding-bottom:.15em}
.note{background:#fff6d6;border-left:5px solid #e0a800;padding:.7em 1em;margin:1em 0}
.meta{color:#555;font-size:.92em}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.86em}
th,td{border:1px solid #ccd;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#eef1f6;position:sticky;top:0}
tr:nth-child(even) td{background:#f8f9fb}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
figure{margin:1em 0}
figure img{max-width:100%;height:auto;border:1px solid #dde}
figcaption{color:#555;font-size:.9em}
nav{font-size:.9em}
""".strip()


def _looks_numeric(s: str) -> bool:
    s = s.strip()
    return bool(s) and (s[0].isdigit() or (s[0] in "-—" and len(s) <= 1) or (s[0] == "-" and s[1:2].isdigit()))


def _h(s) -> str:
    return html.escape(str(s), quote=True)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")


def to_html(report: dict, images: dict[str, bytes] | None = None) -> str:
    """One self-contained HTML page: the markdown's content plus the plots as base64 PNG.

    ``images`` (name → PNG bytes, as from :func:`plots`) avoids drawing the plots twice.
    """
    _check(report)
    if images is None:
        images = plots(report)
    doc = _document(report, list(images))
    heads = [b for b in doc if b[0] == "h" and b[1] == 2]
    body: list[str] = []
    for block in doc:
        kind = block[0]
        if kind == "h":
            level, text = block[1], block[2]
            body.append(f'<h{level} id="{_slug(text)}">{_h(text)}</h{level}>')
        elif kind == "p":
            body.append(f"<p>{_h(block[1])}</p>")
        elif kind == "note":
            body.append(f'<div class="note"><strong>{_h(block[1])}:</strong> {_h(block[2])}</div>')
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{_h(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            _, headers, rows, _limit, _omitted = block
            t = ['<div class="scroll"><table>', "<thead><tr>" + "".join(f"<th>{_h(x)}</th>" for x in headers)
                 + "</tr></thead>", "<tbody>"]
            for row in rows:
                t.append("<tr>" + "".join(
                    f'<td class="num">{_h(c)}</td>' if _looks_numeric(str(c)) else f"<td>{_h(c)}</td>"
                    for c in row) + "</tr>")
            t.append("</tbody></table></div>")
            body.append("\n".join(t))
        elif kind == "plot":
            name = block[1]
            b64 = base64.b64encode(images[name]).decode("ascii")
            caption = PLOT_TITLES.get(name, name)
            body.append(f'<figure><img alt="{_h(caption)}" src="data:image/png;base64,{b64}">'
                        f"<figcaption>{_h(caption)}</figcaption></figure>")
    # a table of contents after the title, hardware note and meta line
    nav = ('<nav><strong>Sections:</strong> '
           + " · ".join(f'<a href="#{_slug(b[2])}">{_h(b[2])}</a>' for b in heads) + "</nav>")
    insert_at = next((i + 1 for i, line in enumerate(body) if line.startswith("<p>")), 1)
    body[insert_at - 1] = body[insert_at - 1].replace("<p>", '<p class="meta">', 1)
    body.insert(insert_at, nav)
    title = next((b[2] for b in doc if b[0] == "h" and b[1] == 1), "n2c report")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_h(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


# ---------------------------------------------------------------------------------------------
# plots (matplotlib Agg canvas, no pyplot)


def _new_figure(width: float, height: float):
    # an Agg canvas attached to a bare Figure: no pyplot, no global backend state, no display
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    # a bare Figure is registered nowhere (unlike pyplot's), so dropping it frees it: nothing to close
    return buf.getvalue()


def _sub_grid(cores_per_tile: int) -> tuple[int, int]:
    """(columns, rows) of the cells inside one tile, e.g. 4 → 2×2."""
    n = max(int(cores_per_tile), 1)
    cols = math.ceil(math.sqrt(n))
    return cols, math.ceil(n / cols)


def _core_positions(mapping: dict) -> tuple[list, int, int, int, int]:
    """Place every core in its chip/tile; cores sharing a tile fill its cells in index order."""
    mesh = mapping.get("mesh") or {}
    cores = mapping.get("per_core") or []
    tx, ty = int(mesh.get("tiles_x") or 1), int(mesh.get("tiles_y") or 1)
    cpt = int(mesh.get("cores_per_tile") or 1)
    cpc = int(mesh.get("cores_per_chip") or tx * ty * cpt)
    placed, slots = [], {}
    for c in sorted(cores, key=lambda c: c.get("index", 0)):
        idx = int(c.get("index", 0))
        chip = c.get("chip")
        tile = c.get("tile")
        if chip is None:
            chip = idx // cpc
        if not (isinstance(tile, (list, tuple)) and len(tile) == 2):
            t = (idx % cpc) // cpt
            tile = (t % tx, t // tx)
        key = (int(chip), int(tile[0]), int(tile[1]))
        slot = slots.get(key, 0)
        slots[key] = slot + 1
        placed.append((c, key, slot % cpt))
    chips = max([int(mapping.get("chips") or 1)] + [k[0] + 1 for _, k, _ in placed])
    return placed, chips, tx, ty, cpt


def plot_core_utilization(report: dict) -> bytes:
    """Chip meshes side by side; each used core colored by its highest utilization, labeled by layer."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    mapping = report["mapping"]
    placed, chips, tx, ty, cpt = _core_positions(mapping)
    sc, sr = _sub_grid(cpt)
    tile_w, tile_h = sc + 0.5, sr + 0.5  # 0.25 margin around each tile's cells
    chip_w, chip_h = tx * tile_w, ty * tile_h
    gap = 1.5
    layer_names: list = [ly.get("name") for ly in mapping.get("layers") or []]
    for c, _, _ in placed:
        if c.get("layer") not in layer_names:
            layer_names.append(c.get("layer"))
    layer_no = {name: i for i, name in enumerate(layer_names)}
    edge_cmap = colormaps["tab20" if len(layer_names) > 10 else "tab10"]
    cmap, norm = colormaps["viridis"], Normalize(0.0, 1.0)

    total_w = chips * chip_w + (chips - 1) * gap
    cell_in = min(0.42, 15.0 / max(total_w, 1))
    legend_rows = math.ceil(len(layer_names) / 4)
    fig = _new_figure(max(total_w * cell_in + 2.2, 6.5), chip_h * cell_in + 1.6 + 0.22 * legend_rows)
    ax = fig.add_subplot(1, 1, 1)
    font = max(4.5, min(8.0, cell_in * 17))
    for chip in range(chips):
        x0 = chip * (chip_w + gap)
        ax.add_patch(Rectangle((x0 - 0.1, -0.1), chip_w + 0.2, chip_h + 0.2, fill=False, lw=1.8, ec="#333"))
        ax.text(x0 + chip_w / 2, -0.35, f"chip {chip}", ha="center", va="bottom", fontsize=10, weight="bold")
        for x in range(tx):
            for y in range(ty):
                ox, oy = x0 + x * tile_w, y * tile_h
                ax.add_patch(Rectangle((ox + 0.1, oy + 0.1), tile_w - 0.2, tile_h - 0.2, fill=True,
                                       fc="#f3f3f3", ec="#999", lw=0.6))
                for s in range(cpt):
                    ax.add_patch(Rectangle((ox + 0.25 + s % sc, oy + 0.25 + s // sc), 1, 1, fc="white",
                                           ec="#cfcfcf", lw=0.4))
    for c, (chip, x, y), s in placed:
        util = [v for v in (c.get("utilization") or {}).values() if _is_num(v)]
        u = max(util) if util else 0.0
        cx = chip * (chip_w + gap) + x * tile_w + 0.25 + s % sc
        cy = y * tile_h + 0.25 + s // sc
        n = layer_no[c.get("layer")]
        ax.add_patch(Rectangle((cx + 0.06, cy + 0.06), 0.88, 0.88, fc=cmap(norm(min(max(u, 0.0), 1.0))),
                               ec=edge_cmap(n % edge_cmap.N), lw=2.0))
        r, g, b, _ = cmap(norm(min(max(u, 0.0), 1.0)))
        ax.text(cx + 0.5, cy + 0.5, f"L{n}", ha="center", va="center", fontsize=font,
                color="black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white")
    ax.set_xlim(-0.6, total_w + 0.6)
    ax.set_ylim(chip_h + 0.4, -0.9)  # tile row 0 at the top
    ax.set_aspect("equal")
    ax.axis("off")
    used, slots = len(placed), chips * tx * ty * cpt
    ax.set_title(f"Core map: {used:,} of {slots:,} cores used on {chips} chip(s) "
                 f"({tx}×{ty} tiles, {cpt} cores per tile); color = highest utilization", fontsize=10)
    sm = ScalarMappable(norm=norm, cmap=cmap)
    cb = fig.colorbar(sm, ax=ax, fraction=0.03, pad=0.01)
    cb.set_label("highest utilization of the core (0–1)")
    handles = [Line2D([], [], marker="s", ls="", ms=9, mfc="white", mec=edge_cmap(i % edge_cmap.N), mew=2,
                      label=f"L{i}: {name}") for i, name in enumerate(layer_names)]
    if handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=min(4, len(handles)),
                  fontsize=8, frameon=False, title="layer (outline color, label in cell)", title_fontsize=8)
    return _png(fig)


def plot_energy_per_layer(report: dict) -> bytes:
    """Stacked horizontal bars of each layer's dynamic energy by component; static energy in the title."""
    from matplotlib import colormaps
    energy = report["energy"]
    per_layer = energy.get("per_layer") or {}
    names = list(per_layer)
    keys = _component_keys(per_layer)
    totals = [sum(v for v in p.values() if _is_num(v)) for p in per_layer.values()]
    scale, prefix = si_prefix(max(totals + [0.0]) or 1.0)
    fig = _new_figure(9.0, max(2.8, 0.42 * len(names) + 1.8))
    ax = fig.add_subplot(1, 1, 1)
    colors = colormaps["tab10"]
    left = [0.0] * len(names)
    ypos = list(range(len(names)))
    for i, k in enumerate(keys):
        vals = [(per_layer[n].get(k) or 0.0) / scale for n in names]
        ax.barh(ypos, vals, left=left, color=colors(i % 10), label=_label(k), height=0.7)
        left = [a + b for a, b in zip(left, vals)]
    for y, t in zip(ypos, totals):
        ax.text(t / scale, y, " " + fmt_energy(t), va="center", fontsize=8)
    ax.set_yticks(ypos)
    ax.set_yticklabels(names, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel(f"dynamic energy per inference ({prefix}J)")
    ax.set_xlim(0, max(left + [1e-30]) * 1.18 if any(left) else 1)
    static = _static_energy(energy)
    ax.set_title(f"Dynamic energy per layer by component (total dynamic {fmt_energy(energy.get('dynamic'))});\n"
                 f"static energy {fmt_energy(static)} per inference for the whole chip(s) is not shown as bars",
                 fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    if keys:
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(len(keys), 5),
                  frameon=False)
    return _png(fig)


def plot_spike_activity(report: dict) -> bytes:
    """Grouped bars per spiking layer: spike rate (left axis) and fraction of active neurons (right axis)."""
    layers = (report.get("activity") or {}).get("layers") or []
    names = [ly.get("name", "?") for ly in layers]
    rate = [ly.get("spike_rate") or 0.0 for ly in layers]
    frac = [ly.get("active_fraction") or 0.0 for ly in layers]
    fig = _new_figure(max(6.5, 0.7 * len(names) + 3), 4.4)
    ax = fig.add_subplot(1, 1, 1)
    ax2 = ax.twinx()
    x = list(range(len(names)))
    w = 0.38
    b1 = ax.bar([i - w / 2 for i in x], rate, w, color="#1f77b4", label="spike rate (left axis)")
    b2 = ax2.bar([i + w / 2 for i in x], frac, w, color="#ff7f0e", label="active fraction (right axis)")
    ax.set_ylabel("spike rate (unit spikes / neuron / step)", color="#1f77b4")
    ax2.set_ylabel("fraction of neurons active", color="#ff7f0e")
    ax.set_ylim(0, max(rate + [0.0]) * 1.15 or 1.0)
    ax2.set_ylim(0, max(1.0, max(frac + [0.0]) * 1.05))
    ax.set_xticks(x)
    rotate = len(names) > 5 or max((len(n) for n in names), default=0) > 12
    ax.set_xticklabels(names, rotation=35 if rotate else 0, ha="right" if rotate else "center", fontsize=9)
    ax.set_xlabel("spiking layer")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    per = (report.get("activity") or {}).get("per", "inference")
    ax.set_title(f"Spike activity per layer (averaged per {per})", fontsize=10)
    ax.legend(handles=[b1, b2], fontsize=8, loc="upper right")
    return _png(fig)


def plot_accuracy_energy_vs_T(report: dict) -> bytes:
    """Two panels against T: energy per inference (log y) and accuracy, one point per fitting row."""
    from matplotlib import colormaps
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
    rows = report.get("across_T") or []
    methods: list = []
    for r in rows:
        if r.get("method") not in methods:
            methods.append(r.get("method"))
    colors = colormaps["tab10"]
    markers = "osD^v<>ph*"
    fig = _new_figure(7.5, 6.2)
    ax_e, ax_a = fig.subplots(2, 1, sharex=True)
    ts = sorted({r["timesteps"] for r in rows if _is_num(r.get("timesteps"))})
    energies = [r.get(k) for r in rows for k in ("energy_total_J", "energy_dynamic_J")
                if r.get("fits", True) and _is_num(r.get(k))]
    log_e = any(e > 0 for e in energies)
    for i, m in enumerate(methods):
        sel = sorted((r for r in rows if r.get("method") == m and r.get("fits", True)
                      and _is_num(r.get("timesteps"))), key=lambda r: r["timesteps"])
        color, marker = colors(i % 10), markers[i % len(markers)]
        for key, style, what in (("energy_total_J", "-", "total"), ("energy_dynamic_J", "--", "dynamic")):
            pts = [(r["timesteps"], r[key]) for r in sel if _is_num(r.get(key)) and (r[key] > 0 or not log_e)]
            if pts:
                ax_e.plot([p[0] for p in pts], [p[1] for p in pts], style, marker=marker, color=color,
                          mfc=color if what == "total" else "white", label=f"{m}: {what}")
        pts = [(r["timesteps"], 100 * r["accuracy"]) for r in sel if _is_num(r.get("accuracy"))]
        if pts:
            ax_a.plot([p[0] for p in pts], [p[1] for p in pts], "-", marker=marker, color=color, label=str(m))
    misfits = [r for r in rows if r.get("fits") is False and _is_num(r.get("timesteps"))]
    for r in misfits:
        ax_e.axvline(r["timesteps"], color="#c00", ls=":", lw=1)
    if misfits:
        ax_e.plot([], [], color="#c00", ls=":", label="does not fit")
    if log_e:
        ax_e.set_yscale("log")
    ax_e.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt_energy(v)))
    ax_e.set_ylabel("energy per inference (log scale)" if log_e else "energy per inference")
    ax_e.set_title("Energy and accuracy against timesteps T", fontsize=10)
    ax_e.grid(True, which="both", alpha=0.3)
    ax_a.set_ylabel("accuracy (%)")
    ax_a.set_xlabel("timesteps T")
    ax_a.grid(True, alpha=0.3)
    if ts and ts[0] > 0 and ts[-1] / ts[0] >= 8:
        ax_a.set_xscale("log", base=2)
    if ts:
        ax_a.xaxis.set_major_locator(FixedLocator(ts))
        ax_a.xaxis.set_minor_locator(NullLocator())
        ax_a.set_xticklabels([str(t) for t in ts])
    for ax in (ax_e, ax_a):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
        else:
            ax.text(0.5, 0.5, "no values to plot (no row fits, or none was measured)", transform=ax.transAxes,
                    ha="center", va="center")
    return _png(fig)


def plot_names(report: dict) -> list[str]:
    """The plots this report gets."""
    names = ["core_utilization", "energy_per_layer", "spike_activity"]
    if len(report.get("across_T") or []) >= 2:
        names.append("accuracy_energy_vs_T")
    return names


def plots(report: dict) -> dict[str, bytes]:
    """PNG bytes per plot name (see :func:`plot_names`)."""
    _check(report)
    out = {}
    for name in plot_names(report):
        # looked up by name at call time, so each drawing function can be replaced (tests do)
        out[name] = globals()[f"plot_{name}"](report)
    return out


# ---------------------------------------------------------------------------------------------
# writing


def render_all(report: dict) -> dict[str, bytes]:
    """File name → contents of report.json, report.md and report.html, all rendered in memory."""
    images = plots(report)
    return {"report.json": (json.dumps(report, indent=2) + "\n").encode("utf-8"),
            "report.md": to_markdown(report).encode("utf-8"),
            "report.html": to_html(report, images).encode("utf-8")}


def write_report(report: dict, out_dir) -> list[Path]:
    """Write report.json, report.md and report.html into ``out_dir`` (created if missing).

    All three are rendered before anything is written; each goes to a temporary file in
    ``out_dir`` and is moved into place with :func:`os.replace` once every one is written.
    On any failure the temporary files are removed and existing reports stay as they were.
    """
    contents = render_all(report)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    temps: dict[str, str] = {}
    try:
        for name, data in contents.items():
            tmp = str(out / f".{name}.{secrets.token_hex(6)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies, as for open()
            temps[name] = tmp
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        paths = []
        for name, tmp in list(temps.items()):
            os.replace(tmp, out / name)
            del temps[name]
            paths.append(out / name)
        return paths
    finally:
        for tmp in temps.values():
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
