"""First resource and energy report: static per-layer counts plus activity measured
by the reference simulator on real data.

Definitions (per inference = per sample of T steps):

* synapses: existing connections (padding excluded), counted exactly by
  convolving all-ones inputs with all-ones kernels.
* messages: non-zero graded spikes sent by a layer (one message per active
  neuron per step, whatever its count); unit spikes: the sum of the counts.
* synaptic ops: messages × the synapses each one reaches (a graded spike is one
  op) and, as the disputed alternative, unit spikes × synapses.
* neuron updates: every neuron of every layer, every step.
* energy: synops·E_syn + neuron updates·E_neuron + messages·E_spike, with the
  constants of :mod:`n2c.backends.hardware`; static power is not included yet.
* ANN baseline: one MAC per synapse of each conv/dense layer, at 4.6 pJ.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from n2c.backends.hardware import ANN_ENERGY_PER_MAC, hardware
from n2c.backends.quantize import IntNetwork, IntNeuron, IntSynapse
from n2c.backends.reference import SimResult

REPORT_VERSION = 1


def _fanout_sum(syn: IntSynapse, s: np.ndarray) -> float:
    """Σ over input elements of value × number of synapses leaving that element."""
    n = s.shape[0]
    if syn.kind == "dense":
        return float(s.reshape(n, -1).sum() * syn.out_shape[0])
    cin = syn.in_shape[0]
    cout = syn.out_shape[0]
    if syn.kind == "sumpool":
        weight = torch.ones(cin, 1, *syn.kernel, dtype=torch.float64)
        groups, stride, padding, dilation = cin, syn.stride, syn.padding, (1, 1)
    else:
        weight = torch.ones(cout, syn.weight.shape[1], *syn.weight.shape[2:], dtype=torch.float64)
        groups, stride, padding, dilation = syn.groups, syn.stride, syn.padding, syn.dilation
    out = F.conv2d(torch.from_numpy(s.astype(np.float64)), weight, stride=stride, padding=padding,
                   dilation=dilation, groups=groups)
    return float(out.sum())


def _synapse_count(syn: IntSynapse) -> int:
    return int(round(_fanout_sum(syn, np.ones((1, *syn.in_shape)))))


def build_report(net: IntNetwork, sim: SimResult, hardware_name: str, labels: np.ndarray | None = None,
                 dataset: str = "") -> dict:
    hw = hardware(hardware_name)
    energy = hw["energy"]
    t, b = next(iter(sim.messages.values())).shape[:2]
    layers = []
    totals = {"synops": 0.0, "synops_unit_spikes": 0.0, "neuron_updates": 0.0, "messages": 0.0, "ann_macs": 0}
    for layer in net.layers:
        if isinstance(layer, IntSynapse):
            s = sim.messages[layer.input].reshape(t * b, *layer.in_shape)
            synapses = _synapse_count(layer)
            synops = _fanout_sum(layer, (s != 0).astype(np.float64)) / b
            unit = _fanout_sum(layer, np.abs(s).astype(np.float64)) / b
            row = {"name": layer.name, "kind": layer.kind, "shape": list(layer.out_shape), "synapses": synapses,
                   "weight_bits": 8 if layer.weight is not None else 0, "weight_exp": layer.weight_exp,
                   "synops": synops, "synops_unit_spikes": unit}
            totals["synops"] += synops
            totals["synops_unit_spikes"] += unit
            if layer.kind != "sumpool":
                totals["ann_macs"] += synapses
        else:
            neurons = int(np.prod(layer.shape))
            row = {"name": layer.name, "kind": layer.kind, "shape": list(layer.shape), "neurons": neurons,
                   "neuron_updates": neurons * t}
            totals["neuron_updates"] += neurons * t
            if layer.spiking:
                k = np.abs(sim.messages[layer.name])  # unit spikes: |count| (polarity), code (SFN)
                messages = float((k != 0).sum()) / b
                row.update({"threshold_int_min": int(layer.threshold.min()), "max_spikes": layer.max_spikes,
                            "messages": messages, "unit_spikes": float(k.sum()) / b,
                            "spike_rate": float(k.sum()) / (b * t * neurons),
                            "active_fraction": float((k != 0).mean())})
                totals["messages"] += messages
        layers.append(row)
    src_msgs = float((sim.messages[net.source.name] != 0).sum()) / b
    totals["messages"] += src_msgs
    parts = {
        "synaptic_ops": totals["synops"] * energy["energy_per_synop"].value,
        "neuron_updates": totals["neuron_updates"] * energy["energy_per_neuron_update"].value,
        "spike_messages": totals["messages"] * energy["energy_per_spike_message"].value,
    }
    report = {
        "report_version": REPORT_VERSION,
        "hardware": {"key": hardware_name, "name": hw["name"], "note": hw["note"]},
        "dataset": dataset, "samples": int(b), "timesteps": int(t),
        "input": {"name": net.source.name, "shape": list(net.source.shape), "scale": net.source.scale,
                  "messages": src_msgs},
        "layers": layers,
        "quantization": net.report,
        "totals_per_inference": totals,
        "energy_per_inference_J": {**parts, "total": sum(parts.values()),
                                   "excludes": "static power and routing hops (not modelled yet)"},
        "ann_energy_per_inference_J": totals["ann_macs"] * ANN_ENERGY_PER_MAC.value,
        "constants": {**{k: c.as_dict() for k, c in energy.items()}, "ann_energy_per_mac": ANN_ENERGY_PER_MAC.as_dict()},
    }
    if labels is not None:
        report["accuracy"] = float((sim.output.reshape(b, -1).argmax(1) == labels).mean())
    return report


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def to_markdown(r: dict) -> str:
    lines = [f"# n2c report: {r['hardware']['name']}", "",
             f"Data: {r['dataset']} ({r['samples']} samples, T = {r['timesteps']})"
             + (f", integer SNN accuracy {100 * r['accuracy']:.2f} %" if "accuracy" in r else ""), ""]
    if r["hardware"]["note"]:
        lines += [f"> {r['hardware']['note']}", ""]
    lines += ["## Layers (activity per inference, measured by the reference simulator)", "",
              "| layer | kind | shape | neurons | synapses | weight bits | synops | synops (unit spikes) | "
              "messages out | spike rate |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["layers"]:
        lines.append("| {name} | {kind} | {shape} | {n} | {syn} | {wb} | {so} | {su} | {msg} | {rate} |".format(
            name=row["name"], kind=row["kind"], shape="×".join(map(str, row["shape"])),
            n=row.get("neurons", ""), syn=row.get("synapses", ""), wb=row.get("weight_bits", "") or "",
            so=_fmt(row["synops"]) if "synops" in row else "", su=_fmt(row["synops_unit_spikes"]) if "synops" in row else "",
            msg=_fmt(row["messages"]) if "messages" in row else "",
            rate=f"{row['spike_rate']:.3f}" if "spike_rate" in row else ""))
    e = r["energy_per_inference_J"]
    lines += ["", "## Energy per inference (estimate)", "", "| component | energy |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {v * 1e9:.3f} nJ |" for k, v in e.items() if k not in ("total", "excludes")]
    lines += [f"| **total** | **{e['total'] * 1e9:.3f} nJ** |",
              f"| ANN baseline (45 nm fp32 MACs) | {r['ann_energy_per_inference_J'] * 1e9:.3f} nJ |", "",
              f"Not included: {e['excludes']}.", "", "## Constants", "", "| constant | value | tag | source |",
              "|---|---|---|---|"]
    lines += [f"| {k} | {c['value']:.3g} {c['unit']} | [{c['tag']}] | {c['source']} |" for k, c in r["constants"].items()]
    lines += ["", "Tags: [S] pre-silicon simulation, [P] proxy from another chip, [M] measured, [D] derived.", ""]
    return "\n".join(lines)


def write_report(report: dict, out_dir: str | os.PathLike) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {out / "report.json": json.dumps(report, indent=2), out / "report.md": to_markdown(report)}
    for path, text in files.items():
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return list(files)
