"""The report as one document model, section by section, that the markdown and HTML renderers both draw.

Blocks: ("h", level, text) · ("p", text) · ("note", title, text) · ("list", [text, ...]) ·
("table", headers, rows, md_limit, omitted_text) · ("plot", name). ``SECTIONS`` lists the sections in order.
"""

from __future__ import annotations

from backends.hardware.cost import ENERGY_COMPONENTS
from backends.hardware.spec import TAGS
from backends.report.build import REPORT_VERSION as SUPPORTED_VERSION
from backends.report.render.format import alternatives, block_text, cell, fmt_count, fmt_edp, fmt_energy, fmt_pct, fmt_quantity, fmt_ratio, fmt_time, is_num, label, shape_text, yes_no
MD_CORE_ROWS = 64  # per-core rows shown in the markdown; the HTML lists every core


def check(report: dict) -> None:
    if not isinstance(report, dict):
        raise TypeError(f"report must be a dict, not {type(report).__name__}")
    version = report.get("report_version")
    if version != SUPPORTED_VERSION:
        raise ValueError(f"report_version {version!r} is not supported (this renderer reads {SUPPORTED_VERSION})")


def static_energy(energy: dict):
    return (energy.get("components") or {}).get("static")


def component_keys(per_layer: dict) -> list[str]:
    keys = [k for k in ENERGY_COMPONENTS if any(k in p for p in per_layer.values())]
    for p in per_layer.values():
        keys.extend(k for k in p if k not in keys)
    return keys


def document(report: dict, plot_names: list[str]) -> list[tuple]:
    """The report as a list of blocks, section after section (``SECTIONS``)."""
    check(report)
    doc: list[tuple] = []
    for section in SECTIONS:
        section(report, plot_names, doc.append)
    return doc


def _header(report: dict, plot_names: list[str], add) -> None:
    """The header section."""
    hw = report["hardware"]
    data = report.get("data") or {}
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


def _summary(report: dict, plot_names: list[str], add) -> None:
    """The Summary section."""
    mapping = report["mapping"]
    energy = report["energy"]
    latency = report.get("latency") or {}
    ann = report.get("ann") or {}
    add(("h", 2, "Summary"))
    rng = energy.get("range") or {}
    rows = [
        ["Accuracy", "—" if report.get("accuracy") is None else fmt_pct(report["accuracy"], 2)],
        ["Fits the chip", "yes" if mapping.get("fits", True) else "no: " + ", ".join(
            str(u.get("layer")) for u in mapping.get("unfit") or []) + " cannot fit one core (see Notes)"],
        ["Cores", f"{fmt_count(mapping.get('cores'))} on {fmt_count(mapping.get('chips'))} chip(s)"
         + (f" of {report['hardware']['system']['name']}" if (report.get("hardware") or {}).get("system") else "")],
        ["Chip-to-chip links per inference",
         f"{fmt_count(((report.get('activity') or {}).get('totals') or {}).get('chip_crossings'))} "
         f"({fmt_energy((energy.get('components') or {}).get('chip_links'))})"],
        ["Core lower bound / gap", f"{fmt_count(mapping.get('lower_bound'))} / {fmt_count(mapping.get('gap'))}"],
        ["Energy per inference, total", fmt_energy(energy.get("total"))],
        ["Energy per inference, dynamic", fmt_energy(energy.get("dynamic"))],
        ["Energy per inference, static", fmt_energy(static_energy(energy))],
        ["Static, prorated to the cores used", fmt_energy(energy.get("static_prorated_by_cores"))],
        ["Total energy range (alternative constants)",
         f"{fmt_energy(rng.get('low'))} – {fmt_energy(rng.get('high'))}" if rng else "—"],
        ["Latency per step (mean / max)",
         f"{fmt_time(latency.get('step_s_mean'))} / {fmt_time(latency.get('step_s_max'))}"],
        ["Latency per inference", fmt_time(latency.get("inference_s"))],
        ["Energy-delay product", fmt_edp(report.get("edp_J_s"))],
        ["Past Loihi's limits", _past_limits(report.get("past_loihi_limits"))],
    ]
    if ann:
        snn45 = ann.get("snn_45nm_J") or {}
        rows.append(["ANN at 45 nm", f"{fmt_energy(ann.get('energy_J'))} for {fmt_count(ann.get('macs'))} MACs"])
        rows.append(["SNN at 45 nm (graded spike = 1 op / unit spikes)",
                     f"{fmt_energy(snn45.get('graded_as_one'))} / {fmt_energy(snn45.get('unit_spikes'))}"])
    add(("table", ["Quantity", "Value"], rows, None, ""))


def _mapping(report: dict, plot_names: list[str], add) -> None:
    """The Mapping section."""
    mapping = report["mapping"]
    add(("h", 2, "Mapping per layer"))
    mesh = mapping.get("mesh") or {}
    limits = mapping.get("limits") or {}
    parts = [f"{fmt_count(mapping.get('cores'))} cores on {fmt_count(mapping.get('chips'))} chip(s); "
             f"lower bound {fmt_count(mapping.get('lower_bound'))}, gap {fmt_count(mapping.get('gap'))}."]
    if mapping.get("blocks") is not None:
        parts.append(f"{fmt_count(mapping.get('blocks'))} blocks, {fmt_count(mapping.get('shared_cores'))} cores "
                     f"shared by several layers. Lower bounds: {fmt_count(mapping.get('lower_bound_unshared'))} "
                     f"cores with one layer per core, {fmt_count(mapping.get('lower_bound_shared'))} with shared "
                     f"cores allowed.")
    if mesh:
        parts.append(f"Mesh per chip: {fmt_count(mesh.get('tiles_x'))} × {fmt_count(mesh.get('tiles_y'))} tiles, "
                     f"{fmt_count(mesh.get('cores_per_tile'))} cores per tile, "
                     f"{fmt_count(mesh.get('cores_per_chip'))} cores per chip.")
    if limits:
        lim = [f"{label(k)} {fmt_count(v)}" for k, v in limits.items() if k != "memory"]
        lim += [f"{k} {fmt_count(v)} bits" for k, v in (limits.get("memory") or {}).items()]
        parts.append("Per-core limits: " + ", ".join(lim) + ".")
    add(("p", " ".join(parts)))
    layers = mapping.get("layers") or []
    add(("table", ["Layer", "Kind", "Shape", "Neurons", "Compartments / neuron", "Blocks", "Cores", "Split",
                   "Lower bound (alone)", "Binding", "Synapses", "Synapse bits", "Max input axons", "Max utilization"],
         [[ly.get("name"), ly.get("kind"), shape_text(ly.get("shape")), fmt_count(ly.get("neurons")),
           fmt_count(ly.get("compartments_per_neuron")), fmt_count(ly.get("blocks")), fmt_count(ly.get("cores")),
           shape_text(ly.get("split")),
           fmt_count(ly.get("lower_bound")), ly.get("binding", "—"), fmt_count(ly.get("synapses")),
           fmt_count(ly.get("synapse_bits")), fmt_count(ly.get("input_axons_max")),
           fmt_pct(ly.get("utilization_max"))] for ly in layers], None, ""))


def _per_core(report: dict, plot_names: list[str], add) -> None:
    """The Per core section."""
    mapping = report["mapping"]
    add(("h", 2, "Per core"))
    cores = mapping.get("per_core") or []
    if "core_utilization" in plot_names:
        add(("plot", "core_utilization"))
    usage_keys, mem_keys, util_keys = [], [], []
    for c in cores:
        for src, dst in ((c.get("usage") or {}, usage_keys), (c.get("memory") or {}, mem_keys),
                         (c.get("utilization") or {}, util_keys)):
            dst.extend(k for k in src if k not in dst)
    headers = (["Core", "Layer", "Chip", "Tile (x, y)", "Block"] + [label(k) for k in usage_keys]
               + [f"{k} [bits]" for k in mem_keys] + [f"util. {label(k)}" for k in util_keys] + ["Max util."])
    rows = []
    for c in cores:
        util = c.get("utilization") or {}
        tile = c.get("tile")
        nums = [v for v in util.values() if is_num(v)]
        rows.append([fmt_count(c.get("index")), c.get("layer", "—"), fmt_count(c.get("chip")),
                     f"{tile[0]}, {tile[1]}" if isinstance(tile, (list, tuple)) and len(tile) == 2 else "—",
                     block_text(c.get("block")) if c.get("block") or not c.get("blocks") else
                     "; ".join(f"{b['layer']} {block_text(b['block'])}" for b in c["blocks"])]
                    + [fmt_count((c.get("usage") or {}).get(k)) for k in usage_keys]
                    + [fmt_count((c.get("memory") or {}).get(k)) for k in mem_keys]
                    + [fmt_pct(util.get(k)) for k in util_keys] + [fmt_pct(max(nums)) if nums else "—"])
    omitted = max(len(rows) - MD_CORE_ROWS, 0)
    add(("table", headers, rows, MD_CORE_ROWS,
         f"{omitted:,} more cores omitted here (first {MD_CORE_ROWS} of {len(rows):,} shown); "
         "report.html and report.json list every core."))


def _activity(report: dict, plot_names: list[str], add) -> None:
    """The Activity section."""
    activity = report.get("activity") or {}
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


def _offcore(report: dict, plot_names: list[str], add) -> None:
    """The off-core section: attention's products and softmax, on the embedded processors."""
    rows_in = (report.get("activity") or {}).get("offcore") or []
    if not rows_in:
        return
    add(("h", 2, "Off-core operations"))
    add(("p", "Attention's products of two spiking tensors (Q·Kᵀ, A·V) and the quantized softmax are no neuro-core "
              "operation: they run on the chip's embedded processors, which receive the operands' spikes at the host "
              "entry and send the integer currents back. Multiply-accumulates are counted event-driven (each new "
              "spike times the other operand's non-zero running counts); a dense product would take the ANN's count. "
              "Energy and time per operation are stated estimates (see Constants)."))
    per_layer = (report.get("energy") or {}).get("per_layer") or {}
    rows = [[r.get("name"), r.get("mode"), fmt_count(r.get("dense_macs")), fmt_count(r.get("offcore_macs")),
             fmt_count(r.get("offcore_exps")), fmt_count(r.get("messages")),
             fmt_energy((per_layer.get(r.get("name")) or {}).get("offcore_ops"))] for r in rows_in]
    add(("table", ["Operation", "Kind", "MACs (dense)", "MACs (event-driven)", "Exponentials", "Messages back",
                   "Energy"], rows, None, ""))


def _energy(report: dict, plot_names: list[str], add) -> None:
    """The Energy section."""
    energy = report["energy"]
    values = report["hardware"].get("values") or {}
    rng = energy.get("range") or {}
    add(("h", 2, "Energy per layer and by component"))
    total = energy.get("total")
    add(("p", f"Energy in {energy.get('unit', 'J per inference')}: total {fmt_energy(total)}, dynamic "
              f"{fmt_energy(energy.get('dynamic'))}, static {fmt_energy(static_energy(energy))}; range over "
              f"alternative constants {fmt_energy(rng.get('low'))} – {fmt_energy(rng.get('high'))}. "
              f"If every unit spike of a graded message cost one operation, dynamic energy would be "
              f"{fmt_energy(energy.get('graded_as_unit_spikes'))}."))
    if "energy_per_layer" in plot_names:
        add(("plot", "energy_per_layer"))
    comps = energy.get("components") or {}
    share = (lambda v: fmt_pct(v / total) if is_num(v) and is_num(total) and total else "—")
    rows = [[label(k), fmt_energy(v), share(v)] for k, v in comps.items()]
    rows.append(["dynamic", fmt_energy(energy.get("dynamic")), share(energy.get("dynamic"))])
    rows.append(["total", fmt_energy(total), share(total)])
    add(("table", ["Component", "Energy", "Share of total"], rows, None, ""))
    per_layer = energy.get("per_layer") or {}
    comp_keys = component_keys(per_layer)
    rows = []
    for name, parts_ in per_layer.items():
        s = sum(v for v in parts_.values() if is_num(v))
        rows.append([name] + [fmt_energy(parts_.get(k)) for k in comp_keys] + [fmt_energy(s)])
    add(("table", ["Layer"] + [label(k) for k in comp_keys] + ["Layer total"], rows, None, ""))
    used = energy.get("constants") or []
    if used:
        add(("p", "Constants used: " + "; ".join(
            f"{n} = {fmt_quantity(values.get(n))} [{(values.get(n) or {}).get('tag', '?')}]" for n in used) + "."))


def _latency(report: dict, plot_names: list[str], add) -> None:
    """The Latency section."""
    latency = report.get("latency") or {}
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


def _ann_comparison(report: dict, plot_names: list[str], add) -> None:
    """The ANN comparison section."""
    ann = report.get("ann") or {}
    add(("h", 2, "ANN comparison (45 nm)"))
    if ann:
        snn45 = ann.get("snn_45nm_J") or {}
        ann_e = ann.get("energy_J")

        def ratio(v):
            return f"{ann_e / v:.3g}×" if is_num(ann_e) and is_num(v) and v else "—"
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


def _across_t(report: dict, plot_names: list[str], add) -> None:
    """The Across T section."""
    across = report.get("across_T") or []
    if across:
        add(("h", 2, "Across T"))
        if "accuracy_energy_vs_T" in plot_names:
            add(("plot", "accuracy_energy_vs_T"))
        rows = []
        for r in across:
            rows.append([r.get("graph", "—"), r.get("method", "—"), fmt_count(r.get("timesteps")),
                         "—" if r.get("accuracy") is None else fmt_pct(r.get("accuracy"), 2), yes_no(r.get("fits")),
                         fmt_count(len(r["cores"]) if isinstance(r.get("cores"), list) else r.get("cores")),
                         fmt_energy(r.get("energy_total_J")),
                         fmt_energy(r.get("energy_dynamic_J")), fmt_time(r.get("inference_s")),
                         fmt_edp(r.get("edp_J_s")), fmt_count(r.get("synops")), fmt_energy(r.get("ann_energy_J")),
                         r.get("reason") or ""])
        add(("table", ["Graph", "Method", "T", "Accuracy", "Fits", "Cores", "Energy total", "Energy dynamic",
                       "Time per inference", "EDP", "Synaptic ops", "ANN energy", "Reason"], rows, None, ""))


def _past_limits(overflows: dict | None) -> str:
    if overflows is None:
        return "—"
    if not overflows:
        return "none"
    return "; ".join(f"{name}: {fmt_count(entry['count'])} ({entry['limit']})" for name, entry in overflows.items())


def _quantization(report: dict, plot_names: list[str], add) -> None:
    """The Quantization section."""
    add(("h", 2, "Quantization summary"))
    quant = report.get("quantization") or []
    if quant:
        keys: list = []
        for q in quant:
            keys.extend(k for k in q if k not in keys)
        add(("table", [k.replace("_", " ") for k in keys],
             [[cell(q.get(k)) for k in keys] for q in quant], None, ""))
    else:
        add(("p", "No quantization details in this report."))


def _constants(report: dict, plot_names: list[str], add) -> None:
    """The Constants section."""
    hw = report["hardware"]
    ann = report.get("ann") or {}
    values = report["hardware"].get("values") or {}
    add(("h", 2, "Constants"))
    add(("p", "Every constant with its provenance tag: " +
         "; ".join(f"[{t}] {d}" for t, d in TAGS.items()) + "."))
    rows = [[name, fmt_quantity(q), f"[{q.get('tag', '?')}]", q.get("source", ""), q.get("where", ""),
             alternatives(q)] for name, q in values.items()]
    for m in hw.get("memory_per_core") or []:
        q = m.get("bits") or {}
        rows.append([f"memory per core: {m.get('name', '')} (holds {', '.join(m.get('holds', []))})",
                     fmt_quantity(q), f"[{q.get('tag', '?')}]", q.get("source", ""), q.get("where", ""),
                     alternatives(q)])
    for name, q in (ann.get("constants") or {}).items():
        rows.append([f"ANN: {name}", fmt_quantity(q), f"[{q.get('tag', '?')}]", q.get("source", ""),
                     q.get("where", ""), alternatives(q)])
    add(("table", ["Name", "Value", "Tag", "Source", "Where", "Alternatives"], rows, None, ""))
SECTIONS = (_header, _summary, _mapping, _per_core, _activity, _offcore, _energy, _latency, _ann_comparison, _across_t, _quantization, _constants)
