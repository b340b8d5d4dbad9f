"""Rendering of report dicts (report_version 2): markdown, self-contained HTML, plots, atomic writes."""

from __future__ import annotations

import html

import base64
import json
import re

import pytest

from n2c.errors import N2CError

from backends.report import render as rr
from backends.report.render import format as fmt
from backends.report.render.markdown import md_text

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DAVIES = "Davies et al., 'Loihi: a neuromorphic manycore processor with on-chip learning', IEEE Micro 38(1), 2018"
BRIEF = "Intel, 'Taking neuromorphic computing to the next level with Loihi 2', technology brief, 2021"
PILOTNET = "lava-dl tutorials netx pilotnet benchmark outputs, one Oheo Gulch Loihi 2 chip"
HOROWITZ = "Horowitz, 'Computing's energy problem', ISSCC 2014"
NOTE = ("Loihi 2's per-core limits beyond neurons and memory size, its mesh layout, and any per-operation energy "
        "or time are not public: those values are Loihi 1's, tagged [P] (a stated proxy).")
COMPONENTS = ("synaptic_ops", "neuron_updates_active", "neuron_updates_inactive", "spike_messages", "hops")


def q(value, unit, tag, source, where="", alternatives=()):
    return {"value": value, "unit": unit, "tag": tag, "source": source, "where": where,
            "alternatives": [dict(a, alternatives=[]) for a in alternatives]}


def sample_report(n_cores: int = 9, across_T: int = 3, layer_names=None) -> dict:
    """A realistic report_version 2 dict for a small CNN on Loihi 2, spread over ``n_cores`` cores."""
    names = (layer_names or ["features_0", "features_2", "features_5", "classifier_1"])[:n_cores]
    shapes = [[16, 8, 8], [32, 4, 4], [64, 2, 2], [10]]
    shapes = (shapes * len(names))[:len(names)]
    mesh = {"tiles_x": 8, "tiles_y": 4, "cores_per_tile": 4, "cores_per_chip": 128}
    values = {
        "cores_per_chip": q(128, "cores", "C", BRIEF, "Hala Point implies 122 usable"),
        "mesh_tiles_x": q(8, "tiles", "P", "Boyle et al., SANA-FE, IEEE TCAD 2025"),
        "neurons_per_core": q(8192, "neurons", "C", "WikiChip, Intel Loihi 2", "1 M neurons / 128 cores"),
        "conv_weight_sharing": q(1, "bool", "C", BRIEF, "native convolutional connectivity"),
        "energy_synop": q(2.36e-11, "J", "P", DAVIES, "no Loihi 2 per-op energy is published",
                          [{"value": 6.8e-12, "unit": "J", "tag": "D",
                            "source": "Intel Hala Point release, Apr 2024", "where": "2600 W / 380 T ops/s"}]),
        "energy_neuron_update_active": q(8.1e-11, "J", "P", DAVIES),
        "energy_neuron_update_inactive": q(5.2e-11, "J", "P", DAVIES),
        "energy_spike_in_tile": q(1.7e-12, "J", "P", DAVIES),
        "energy_hop_ew": q(3e-12, "J", "P", DAVIES),
        "static_power_per_chip": q(0.232, "W", "M", PILOTNET, "PilotNet LIF: 0.232 W static",
                                   [{"value": 0.28, "unit": "W", "tag": "M", "source": PILOTNET,
                                     "where": "PilotNet SDNN run"}]),
        "time_synop": q(3.5e-9, "s", "P", DAVIES),
        "barrier_sync_chip": q(4.65e-7, "s", "P", DAVIES),
        "barrier_sync_multichip": q(1.43e-5, "s", "U", "Frady et al., NICE 2020"),
    }
    mem = q(1572864, "bits", "C", BRIEF, "192 KB flexible")
    # cores: at least one per layer, the rest spread over the layers in order
    per_layer = [n_cores // len(names) + (1 if i < n_cores % len(names) else 0) for i in range(len(names))]
    cores, layers, idx = [], [], 0
    cpc, cpt = mesh["cores_per_chip"], mesh["cores_per_tile"]
    for li, (name, shape, k) in enumerate(zip(names, shapes, per_layer)):
        neurons = 1
        for s in shape:
            neurons *= s
        for j in range(k):
            local = idx % cpc
            tile = local // cpt
            util = {"neurons": round(0.05 + 0.9 * ((idx * 37) % 100) / 100, 3), "input_axons": 0.02,
                    "output_fanout": 0.07, "core memory (shared)": 0.14}
            cores.append({"index": idx, "layer": name, "block": [[j, j + 1], [0, 8], [0, 8]][:len(shape)],
                          "chip": idx // cpc, "tile": [tile % mesh["tiles_x"], tile // mesh["tiles_x"]],
                          "usage": {"neurons": neurons // k, "input_axons": 100, "output_fanout": 300,
                                    "synapse_bits": 12345, "neuron_state_bits": 196608, "routing_bits": 12000},
                          "memory": {"core memory (shared)": 220953}, "utilization": util})
            idx += 1
        layers.append({"name": name, "kind": "mtn", "shape": shape, "neurons": neurons,
                       "compartments_per_neuron": 1, "cores": k, "split": [k, 1, 1][:len(shape)],
                       "lower_bound": max(1, k - 1), "binding": "neurons", "synapses": 9216 * (li + 1),
                       "synapse_bits": 123456 * (li + 1), "input_axons_max": 100 + li,
                       "utilization_max": max(c["utilization"]["neurons"] for c in cores if c["layer"] == name)})
    act_layers = []
    for li, ly in enumerate(layers):
        act_layers.append({"name": ly["name"], "kind": "mtn", "neurons": ly["neurons"], "messages": 210.5 + li,
                           "unit_spikes": 400.25 * (li + 1), "spike_rate": round(0.39 / (li + 1), 4),
                           "active_fraction": round(0.2 + 0.15 * li, 3) if li < 3 else 0.0,
                           "synops": 5000.0 * (li + 1), "synops_unit_spikes": 9000.0 * (li + 1),
                           "neuron_updates_active": 0.8 * ly["neurons"], "neuron_updates_inactive": 0.2 * ly["neurons"],
                           "hops_ew": 50.0, "hops_ns": 20.0, "chip_crossings": 0.0})
    totals = {k: sum(a[k] for a in act_layers) for k in
              ("messages", "unit_spikes", "synops", "synops_unit_spikes", "neuron_updates_active",
               "neuron_updates_inactive", "hops_ew", "hops_ns", "chip_crossings")}
    e_layer = {ly["name"]: {"synaptic_ops": 1.2e-10 * (li + 1), "neuron_updates_active": 7.3e-11,
                            "neuron_updates_inactive": 4.1e-11, "spike_messages": 3.6e-13, "hops": 0.0}
               for li, ly in enumerate(layers)}
    dynamic = sum(sum(v.values()) for v in e_layer.values())
    static = 0.232 * 1.2e-6
    components = {k: sum(v[k] for v in e_layer.values()) for k in COMPONENTS}
    components["static"] = static
    rows = []
    for t in [1, 2, 4, 8, 16][:across_T]:
        rows.append({"graph": f"out/digits_T{t}.nir", "method": "mtn" if t < 8 else "rate", "timesteps": t,
                     "accuracy": 0.9 + 0.01 * min(t, 7), "fits": True, "reason": "", "cores": n_cores,
                     "energy_total_J": (static + dynamic) * t, "energy_dynamic_J": dynamic * t,
                     "inference_s": 1.2e-6 * t, "edp_J_s": (static + dynamic) * t * 1.2e-6 * t,
                     "synops": 20000.0 * t, "ann_energy_J": 4.6e-7})
    if across_T >= 3:
        rows[-1].update({"fits": False, "reason": "layer 'x' cannot fit one Intel Loihi 1 core: 9000 neurons > 1024",
                         "accuracy": None, "cores": None, "energy_total_J": None, "energy_dynamic_J": None,
                         "inference_s": None, "edp_J_s": None, "synops": None, "ann_energy_J": None})
    return {
        "report_version": 2, "generator": "n2c 0.1.0", "graph": "out/digits.nir", "method": "mtn", "timesteps": 1,
        "data": {"name": "digits", "split": "test", "samples": 360, "simulator": "reference"},
        "accuracy": 0.9722,
        "hardware": {"key": "loihi2", "name": "Intel Loihi 2", "note": NOTE,
                     "spec_file": "backends/hardware/chips/loihi2.json", "values": values,
                     "memory_per_core": [{"name": "core memory (shared)",
                                          "holds": ["synapses", "neuron_state", "routing"], "bits": mem}]},
        "mapping": {"chips": (n_cores - 1) // cpc + 1, "lower_bound": n_cores - 2, "gap": 2,
                    "mesh": mesh,
                    "limits": {"neurons": 8192, "input_axons": 4096, "output_fanout": 4096,
                               "memory": {"core memory (shared)": 1572864}},
                    "layers": layers, "cores": n_cores, "per_core": cores},
        "activity": {"per": "inference", "layers": act_layers, "input": {"name": "input", "messages": 50.1},
                     "totals": totals},
        "energy": {"unit": "J per inference", "components": components, "dynamic": dynamic,
                   "total": dynamic + static,
                   "range": {"low": 0.8 * (dynamic + static), "high": 1.3 * (dynamic + static)},
                   "per_layer": e_layer, "graded_as_unit_spikes": 1.7 * dynamic,
                   "constants": ["energy_synop", "energy_neuron_update_active", "energy_neuron_update_inactive",
                                 "energy_spike_in_tile", "energy_hop_ew", "static_power_per_chip"]},
        "latency": {"step_s_mean": 1.2e-6, "step_s_max": 1.5e-6, "barrier_s": 1.2e-7, "critical_core": 3,
                    "critical_layer": "features_5", "steps_per_inference": 1, "pipeline_depth_steps": 5,
                    "inference_s": 1.2e-6, "first_output_s": 7.2e-6},
        "edp_J_s": (dynamic + static) * 1.2e-6,
        "ann": {"macs": 100000, "energy_J": 4.6e-7, "snn_45nm_J": {"graded_as_one": 1e-8, "unit_spikes": 2e-8},
                "constants": {"energy_per_mac": q(4.6e-12, "J", "E", HOROWITZ, "fp32 multiply 3.7 pJ + add 0.9 pJ"),
                              "energy_per_ac": q(0.9e-12, "J", "E", HOROWITZ, "fp32 add")}},
        "across_T": rows,
        "quantization": [{"layer": n, "scale": 64.0, "weight_bits": 8, "weight_exp": -3, "threshold": 127}
                         for n in names],
        "notes": ["Latency excludes host I/O.", "Static energy is the whole chip's, over the inference time."],
    }


def _images(html_text: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html_text)]


def _all_constants(report):
    yield from report["hardware"]["values"].values()
    yield from (m["bits"] for m in report["hardware"]["memory_per_core"])
    yield from report["ann"]["constants"].values()


def test_formatting():
    assert fmt.fmt_energy(2.36e-11) == "23.6 pJ"
    assert fmt.fmt_energy(4.6e-7) == "460 nJ"
    assert fmt.fmt_energy(3e-6) == "3 µJ"
    assert fmt.fmt_energy(0.0012) == "1.2 mJ"
    assert fmt.fmt_energy(0) == "0 J" and fmt.fmt_energy(None) == "—"
    assert fmt.fmt_energy(9.9996e-10) == "1 nJ" and fmt.fmt_energy(9e-13) == "0.9 pJ"
    assert fmt.fmt_time(1.2e-6) == "1.2 µs" and fmt.fmt_time(4.65e-7) == "465 ns" and fmt.fmt_time(0.0143) == "14.3 ms"
    assert fmt.fmt_count(1572864) == "1,572,864" and fmt.fmt_count(1234.5) == "1,234.5" and fmt.fmt_count(0) == "0"
    assert fmt.fmt_quantity(q(1572864, "bits", "C", "x")) == "1,572,864 bits"
    assert fmt.fmt_quantity(q(0.232, "W", "M", "x")) == "232 mW"
    assert fmt.cite(q(1, "J", "S", "src", "Table 2")) == "[S] src (Table 2)"


def test_write_report(tmp_path):
    report = sample_report(n_cores=9, across_T=3)
    with pytest.raises(N2CError, match="does not exist"):  # the output directory is made, never its parents
        rr.write_report(report, tmp_path / "missing" / "dir")
    out = tmp_path / "new"
    paths = rr.write_report(report, out)
    assert sorted(p.name for p in paths) == ["report.html", "report.json", "report.md"]
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]
    assert json.loads((out / "report.json").read_text()) == report

    page = (out / "report.html").read_text(encoding="utf-8")
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', page, re.I)
    assert "http://" not in page and "https://" not in page and "<script" not in page.lower()
    images = _images(page)
    assert len(images) == 4 and all(i.startswith(PNG_MAGIC) for i in images)
    assert html.escape(NOTE) in page
    assert page.index(html.escape(NOTE)) < page.index("Summary")
    for c in _all_constants(report):
        assert f"[{c['tag']}]" in page and html.escape(c["source"]) in page
    for row in report["across_T"]:
        assert html.escape(row["reason"]) in page  # the row that does not fit shows why

    md = (out / "report.md").read_text(encoding="utf-8")
    for title in ("Summary", "Mapping per layer", "Per core", "Activity per layer", "Energy per layer and by component",
                  "Latency", "ANN comparison (45 nm)", "Across T", "Quantization summary", "Constants", "Notes"):
        assert f"## {title}" in md
    assert md.index("Hardware note") < md.index("## Summary")
    assert "9 on 1 chip(s)" in md
    assert fmt.fmt_energy(report["energy"]["total"]) in md and fmt.fmt_energy(report["energy"]["total"]) == "280 nJ"
    assert "97.22 %" in md and "1.2 µs" in md and "460 nJ" in md and "1,572,864 bits" in md
    for note in report["notes"]:
        assert note in md
    for c in _all_constants(report):
        assert f"[{c['tag']}]" in md and md_text(c["source"]) in md


def test_two_rows_across_T_nulls_and_zeros(tmp_path):
    report = sample_report(n_cores=5, across_T=2)
    report["accuracy"] = None
    report["energy"]["per_layer"]["features_0"] = dict.fromkeys(COMPONENTS, 0.0)
    report["activity"]["layers"][0].update(spike_rate=0.0, active_fraction=0.0)
    report["across_T"][1].update({"fits": False, "reason": "does not fit", "accuracy": None, "cores": None,
                                  "energy_total_J": None, "energy_dynamic_J": None, "inference_s": None,
                                  "edp_J_s": None, "synops": None, "ann_energy_J": None})
    pngs = rr.plots(report)
    assert list(pngs) == ["core_utilization", "energy_per_layer", "spike_activity", "accuracy_energy_vs_T"]
    assert all(p.startswith(PNG_MAGIC) for p in pngs.values())
    md = rr.to_markdown(report)
    assert "| Accuracy | — |" in md and "does not fit" in md


def test_no_across_T_gives_three_plots():
    report = sample_report(n_cores=4, across_T=0)
    page = rr.to_html(report)
    images = _images(page)
    assert len(images) == 3 and all(i.startswith(PNG_MAGIC) for i in images)
    assert "Across T" not in rr.to_markdown(report)
    report["across_T"] = sample_report(across_T=1)["across_T"]
    assert len(rr.plots(report)) == 3


def _previous(out):
    out.mkdir()
    for name in ("report.json", "report.md", "report.html"):
        (out / name).write_text(f"old {name}")


def test_atomic_when_a_plot_fails(tmp_path, monkeypatch):
    def boom(report):
        raise RuntimeError("plot failed")
    monkeypatch.setitem(rr.PLOTS, "spike_activity", boom)
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="plot failed"):
        rr.write_report(sample_report(), fresh)
    assert not fresh.exists() or list(fresh.iterdir()) == []
    old = tmp_path / "old"
    _previous(old)
    with pytest.raises(RuntimeError):
        rr.write_report(sample_report(), old)
    assert sorted(p.name for p in old.iterdir()) == ["report.html", "report.json", "report.md"]
    assert all((old / n).read_text() == f"old {n}" for n in ("report.json", "report.md", "report.html"))


def test_atomic_when_the_dict_is_incomplete(tmp_path):
    out = tmp_path / "old"
    _previous(out)
    report = sample_report()
    del report["energy"]
    with pytest.raises(KeyError):
        rr.write_report(report, out)
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]
    assert (out / "report.md").read_text() == "old report.md"


def test_atomic_when_writing_fails(tmp_path, monkeypatch):
    out = tmp_path / "old"
    _previous(out)
    real_replace = rr.os.replace
    calls = []

    def flaky(src, dst):
        calls.append(dst)
        raise OSError("disk full")
    monkeypatch.setattr(rr.os, "replace", flaky)
    with pytest.raises(OSError, match="disk full"):
        rr.write_report(sample_report(n_cores=3, across_T=0), out)
    monkeypatch.setattr(rr.os, "replace", real_replace)
    assert calls and sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]
    assert (out / "report.json").read_text() == "old report.json"


def test_unsupported_version():
    report = sample_report(n_cores=2, across_T=0)
    report["report_version"] = 1
    with pytest.raises(ValueError, match="report_version"):
        rr.to_markdown(report)


def test_html_escaping():
    report = sample_report(n_cores=4, across_T=0, layer_names=["<script>", "a|b & c"])
    report["notes"].append("x < y & \"quoted\"")
    page = rr.to_html(report)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "a|b &amp; c" in page and "x &lt; y &amp; &quot;quoted&quot;" in page
    md = rr.to_markdown(report)
    assert "<script>" not in md and "\\<script\\>" in md
    assert "a\\|b & c" in md  # a pipe in a table cell does not split the cell


def test_big_mapping(tmp_path):
    report = sample_report(n_cores=300, across_T=0,
                           layer_names=[f"features_{i}" for i in range(0, 14, 2)] + ["classifier_1"])
    assert report["mapping"]["chips"] == 3
    md = rr.to_markdown(report)
    core_rows = [line for line in md.splitlines() if re.match(r"\| \d+ \| features_|\| \d+ \| classifier_", line)]
    assert len(core_rows) == 64
    assert "236 more cores omitted here (first 64 of 300 shown)" in md
    page = rr.to_html(report)
    for i in (0, 63, 64, 299):
        assert f'<td class="num">{i}</td><td>{report["mapping"]["per_core"][i]["layer"]}</td>' in page
    assert len(_images(page)) == 3


def test_a_mapping_without_per_core_rows_still_renders():
    report = sample_report(n_cores=6, across_T=0)
    del report["mapping"]["per_core"]
    assert "| Cores | 6 on 1 chip(s) |" in rr.to_markdown(report)
    assert rr.plots(report)["core_utilization"].startswith(PNG_MAGIC)
