"""Hardware reports: activity counted exactly, energy and latency consistent with the model's
equations, chunking and simulator independence, the 45 nm comparison, and the CLI."""

import json

import numpy as np
import pytest

from backends.hardware.cost import Activity, price
from backends.hardware.spec import CHIPS_DIR, load_chip, parse_chip
from backends.hardware.mapping import map_network
from backends.ir.integer import IntNetwork, IntNeuron, IntSource, IntSynapse
from backends.report.build import ann_macs
from n2c.cli.main import main
from n2c.data import load_dataset
from n2c.cli.pipeline import export_model, load_network, report_network


def tiny_network() -> IntNetwork:
    """input (3,) → dense → mtn (2,) → dense → readout (2,), every weight non-zero."""
    ones = np.ones((2, 3), np.int64) * 2
    layers = [IntSynapse("fc1", "dense", "x", (3,), (2,), weight=ones),
              IntNeuron("n1", "mtn", ["fc1"], (2,), 1.0, bias=np.zeros(2, np.int64), threshold=np.full(2, 4),
                        v_init=np.zeros(2, np.int64), max_spikes=3),
              IntSynapse("fc2", "dense", "n1", (2,), (2,), weight=np.ones((2, 2), np.int64) * 2),
              IntNeuron("out", "readout", ["fc2"], (2,), 1.0, bias=np.zeros(2, np.int64))]
    return IntNetwork(IntSource("x", (3,), 1.0), layers, "out", 1)


def tiny_messages(x, n1):
    return {"x": np.array(x, np.int64).reshape(1, 1, 3), "n1": np.array(n1, np.int64).reshape(1, 1, 2),
            "out": np.zeros((1, 1, 2), np.int64)}


def test_activity_and_energy_of_a_tiny_network_by_hand():
    net, chip = tiny_network(), load_chip("loihi2")
    act = Activity(net, map_network(net, chip, share="always"))
    act.add(tiny_messages([1, 0, 2], [0, 3]))
    cost = price(act)
    layers = {r["name"]: r for r in cost["activity"]["layers"]}
    # two non-zero inputs, each a graded spike reaching both n1 neurons: 4 ops; as unit spikes 3 units x 2
    assert (layers["n1"]["synops"], layers["n1"]["synops_unit_spikes"]) == (4, 6)
    assert (layers["out"]["synops"], layers["out"]["synops_unit_spikes"]) == (2, 6)
    assert cost["activity"]["input"]["messages"] == 2 and layers["n1"]["messages"] == 1
    assert layers["n1"]["neuron_updates_active"] == 2 and layers["out"]["neuron_updates_active"] == 2
    assert layers["n1"]["unit_spikes"] == 3 and layers["n1"]["spike_rate"] == 1.5
    e = cost["energy"]["components"]
    hops = cost["activity"]["totals"]["hops_ew"] * chip["energy_hop_ew"] + \
        cost["activity"]["totals"]["hops_ns"] * chip["energy_hop_ns"]
    assert e["synaptic_ops"] == pytest.approx(6 * chip["energy_synop"], rel=1e-12)
    assert e["neuron_updates_active"] == pytest.approx(4 * chip["energy_neuron_update_active"], rel=1e-12)
    assert e["neuron_updates_inactive"] == 0
    assert e["spike_messages"] == pytest.approx(3 * chip["energy_spike_in_tile"], rel=1e-12)
    assert e["hops"] == pytest.approx(hops, rel=1e-12)
    lat = cost["latency"]
    # both layers fit one core, which shares them: it does both blocks' work in the step
    assert len(act.mapping.cores) == 1 and act.mapping.cores[0].layers == ["n1", "out"]
    work = (4 + 2) * chip["time_synop"] + (2 + 2) * chip["time_neuron_update_active"]
    assert lat["step_s_mean"] == pytest.approx(work + lat["route_s"] + lat["barrier_s"], rel=1e-12)
    assert e["static"] == pytest.approx(chip["static_power_per_chip"] * lat["inference_s"], rel=1e-12)
    assert cost["energy"]["static_prorated_by_cores"] == pytest.approx(e["static"] * 1 / 128, rel=1e-12)
    assert cost["edp_J_s"] == pytest.approx(cost["energy"]["total"] * lat["inference_s"], rel=1e-12)


def test_bit_planes_on_binary_spikes_count_set_bits():
    net, chip = tiny_network(), load_chip("loihi1")  # binary spikes: 8-bit input and 2-bit counts as bit planes
    act = Activity(net, map_network(net, chip, share="always"))
    act.add(tiny_messages([3, 0, 2], [0, 3]))
    layers = {r["name"]: r for r in price(act)["activity"]["layers"]}
    assert layers["n1"]["synops"] == 2 * (2 + 1)  # 3 = 0b11 two spikes, 2 = 0b10 one, each to both targets
    assert layers["out"]["synops"] == 2 * 2  # 3 = 0b11
    assert price(act)["activity"]["input"]["messages"] == 3


def test_idle_neurons_count_as_inactive_updates():
    net, chip = tiny_network(), load_chip("loihi2")
    act = Activity(net, map_network(net, chip, share="always"))
    act.add(tiny_messages([0, 0, 0], [0, 0]))
    cost = price(act)
    assert cost["activity"]["totals"]["neuron_updates_inactive"] == 4
    assert cost["activity"]["totals"]["synops"] == 0 and cost["energy"]["components"]["synaptic_ops"] == 0


@pytest.fixture(scope="module")
def digits_reports(digits_nir):
    data = load_dataset("digits", "test")
    return data, {chip: report_network(str(digits_nir), load_chip(chip), data) for chip in ("loihi1", "loihi2")}


@pytest.mark.parametrize("chip", ["loihi1", "loihi2"])
def test_digits_report_is_consistent(digits_reports, chip):
    data, reports = digits_reports
    r = reports[chip]
    e, lat, m = r["energy"], r["latency"], r["mapping"]
    assert r["data"]["samples"] == len(data.y) and 0.9 < r["accuracy"] <= 1
    assert sum(e["components"].values()) == pytest.approx(e["total"], rel=1e-12)
    per_layer = sum(sum(v.values()) for v in e["per_layer"].values())
    assert per_layer == pytest.approx(e["dynamic"], rel=1e-9)
    assert e["range"]["low"] <= e["total"] <= e["range"]["high"]
    assert lat["step_s_mean"] <= lat["step_s_max"] and lat["inference_s"] == pytest.approx(lat["step_s_mean"])
    assert m["blocks"] >= m["lower_bound_unshared"] >= len(m["layers"]) and m["cores"] >= m["lower_bound"] >= 1
    assert all(all(u <= 1 for u in core["utilization"].values()) for core in m["per_core"])
    totals = r["activity"]["totals"]
    assert totals["synops_unit_spikes"] >= totals["synops"] > 0
    assert e["graded_as_unit_spikes"] >= e["dynamic"]


def test_loihi1_needs_bit_planes_for_multi_spike_messages(digits_reports):
    _, reports = digits_reports
    l1, l2 = (reports[c]["mapping"] for c in ("loihi1", "loihi2"))
    assert [lm["compartments_per_neuron"] for lm in l2["layers"]] == [1, 1, 1, 1]
    assert [lm["compartments_per_neuron"] for lm in l1["layers"]] == [4, 4, 4, 1]  # counts 0..8: 4 bits
    assert any("bit planes" in note for note in reports["loihi1"]["notes"])


def test_ann_macs_of_the_digits_cnn_by_hand(digits_nir):
    _, net = load_network(str(digits_nir))
    # conv 1→16 3x3 on 8x8, conv 16→32 3x3 on 4x4, fc 128→64, fc 64→10
    assert sum(ann_macs(net).values()) == 16 * 64 * 9 + 32 * 16 * 16 * 9 + 128 * 64 + 64 * 10


def test_report_does_not_depend_on_the_chunk_size(digits_nir, digits_reports):
    data, reports = digits_reports
    again = report_network(str(digits_nir), load_chip("loihi2"), data, chunk=50)
    assert again["activity"] == reports["loihi2"]["activity"]
    assert again["energy"]["dynamic"] == pytest.approx(reports["loihi2"]["energy"]["dynamic"], rel=1e-12)
    assert again["latency"]["step_s_max"] == reports["loihi2"]["latency"]["step_s_max"]


@pytest.mark.slow
def test_lava_activity_equals_the_reference(digits_nir):
    data = load_dataset("digits", "test").head(12)
    chip = load_chip("loihi2")
    ref = report_network(str(digits_nir), chip, data)
    lava = report_network(str(digits_nir), chip, data, simulator="lava")
    assert lava["activity"] == ref["activity"] and lava["accuracy"] == ref["accuracy"]
    assert lava["data"]["simulator"] == "lava"


@pytest.fixture(scope="module")
def digits_if_nir(qcfs_model, digits_test, tmp_path_factory):
    path = tmp_path_factory.mktemp("if") / "digits_if_T2.nir"
    export_model(qcfs_model, str(path), (1, 8, 8), digits_test.input_scale, timesteps=2, method="if")
    return path


def narrow_chip(tmp_path, axons: int = 4096, neurons: int = 1024):
    spec = json.loads((CHIPS_DIR / "loihi1.json").read_text())
    spec["values"]["input_axons_per_core"]["value"] = axons
    spec["values"]["neurons_per_core"]["value"] = neurons
    parse_chip(spec)
    path = tmp_path / f"axons{axons}_neurons{neurons}.json"
    path.write_text(json.dumps(spec))
    return str(path)


def test_across_T_rows_and_a_graph_that_does_not_fit(digits_nir, digits_if_nir, tmp_path):
    # with 3 compartments per core, binary IF fits but 4-bit mtn messages (4 bit planes, 4 compartments) do not
    chip = narrow_chip(tmp_path, neurons=3)
    out = tmp_path / "rep"
    assert main(["report", str(digits_if_nir), str(digits_nir), "--hardware", chip, "--samples", "30",
                 "-o", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    rows = report["across_T"]
    assert [(r["method"], r["timesteps"], r["fits"]) for r in rows] == [("mtn", 1, False), ("if", 2, True)]
    assert "4 compartments (limit 3 per core)" in rows[0]["reason"]
    assert rows[1]["energy_total_J"] == report["energy"]["total"]
    assert report["timesteps"] == 2 and report["method"] == "if"


def test_a_primary_graph_that_does_not_fit_still_gets_a_report_naming_the_layers(digits_nir, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", str(digits_nir), "--hardware", narrow_chip(tmp_path, neurons=3), "-o", str(out)]) == 0
    err = capsys.readouterr().err.strip()
    report = json.loads((out / "report.json").read_text())
    unfit = {u["layer"] for u in report["mapping"]["unfit"]}
    assert not report["mapping"]["fits"] and unfit and err.count("\n") == 0 and "cannot fit" in err
    assert all(f"'{name}'" in err for name in unfit) and report["notes"][0].startswith("DOES NOT FIT")
    layers = {ly["name"]: ly for ly in report["mapping"]["layers"]}
    assert all(layers[n]["cores"] == 0 and layers[n]["does_not_fit"] for n in unfit)
    placed = [ly for ly in layers.values() if ly["name"] not in unfit]
    assert placed and all(ly["cores"] > 0 for ly in placed)  # the layers that fit are mapped as usual
    assert sum(ly["cores"] for ly in placed) == report["mapping"]["cores"]
    assert "Fits the chip | no: " in (out / "report.md").read_text()


def test_fan_in_past_a_core_runs_through_relays_and_predicts_the_same(digits_nir, tmp_path):
    """1024 axons per core: the 4-bit classifier input (512 neurons · 4 bit planes) is split into
    partial sums through relays; the predictions equal those of the unsplit network."""
    narrow, wide = tmp_path / "narrow", tmp_path / "wide"
    assert main(["report", str(digits_nir), "--hardware", narrow_chip(tmp_path, axons=1024), "--samples", "60",
                 "-o", str(narrow)]) == 0
    assert main(["report", str(digits_nir), "--hardware", "loihi1", "--samples", "60", "-o", str(wide)]) == 0
    a, b = (json.loads((d / "report.json").read_text()) for d in (narrow, wide))
    assert a["mapping"]["fits"] and a["fan_in_relays"] and not b["fan_in_relays"]
    assert a["accuracy"] == b["accuracy"]
    relays = {r for entry in a["fan_in_relays"] for r in entry["relay"]}
    assert relays <= {ly["name"] for ly in a["mapping"]["layers"] if ly["kind"] == "relay"}
    assert any("relay" in note for note in a["notes"])
    activity = {row["name"]: row for row in a["activity"]["layers"]}
    assert all(activity[r]["synops"] > 0 for r in relays)  # the relays' ops are counted and priced
    assert a["ann"]["macs"] == b["ann"]["macs"]  # the ANN's MACs are the network's, without the joins


def test_graphs_of_different_networks_are_refused(digits_nir, tmp_path, capsys):
    from n2c.models import DigitsCNN
    other = tmp_path / "wide.nir"
    export_model(DigitsCNN(levels=8, width=8), str(other), (1, 8, 8), 1 / 16, timesteps=1)
    assert main(["report", str(digits_nir), str(other), "-o", str(tmp_path / "rep")]) == 2
    assert "is not the same network" in capsys.readouterr().err
    assert not (tmp_path / "rep").exists()


def test_report_output_that_is_a_file_is_refused(digits_nir, tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("keep")
    assert main(["report", str(digits_nir), "-o", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err and target.read_text() == "keep"


def test_data_of_the_wrong_shape_is_refused(digits_nir, tmp_path, capsys):
    npz = tmp_path / "d.npz"
    np.savez(npz, x=np.zeros((4, 1, 5, 5), np.float32), y=np.zeros(4, np.int64))
    assert main(["report", str(digits_nir), "--dataset", str(npz), "-o", str(tmp_path / "rep")]) == 2
    assert "expects (1, 8, 8)" in capsys.readouterr().err


def test_the_documented_schema_lists_exactly_the_report_keys(digits_reports):
    """docs/hardware-model.md §4 documents every top-level key of report.json, and no other."""
    import re
    from pathlib import Path
    doc = (Path(__file__).resolve().parents[3] / "docs" / "hardware-model.md").read_text()
    section = doc[doc.index("## 4. `report.json`"):doc.index("## 5.")]
    documented = {key for row in section.splitlines() if row.startswith("| `")
                  for key in re.findall(r"`([a-z_A-Z]+)`", row.split("|")[1])}
    _, reports = digits_reports
    assert documented == set(reports["loihi2"])
    assert reports["loihi2"]["report_version"] == 2


def test_a_recurrent_synapse_is_mapped_and_counted_in_its_neurons_layer():
    """n1's loop onto itself: its weights are stored with n1's synapses, its axons are n1's own
    outputs, and each of n1's messages costs synaptic ops in fc2 and in the loop."""
    net = tiny_network()
    n1 = net.layers[1]
    n1.inputs = ["fc1", "loop"]
    net.layers.insert(2, IntSynapse("loop", "dense", "n1", (2,), (2,), weight=np.ones((2, 2), np.int64) * 2,
                                    recurrent=True))
    chip = load_chip("loihi2")
    mapping = map_network(net, chip, share="never")
    assert mapping.layer("n1").synapses == 6 + 4  # fc1's and the loop's
    act = Activity(net, mapping)
    act.add(tiny_messages([1, 0, 2], [0, 3]))
    layers = {r["name"]: r for r in price(act)["activity"]["layers"]}
    # the input's two graded spikes reach both n1 neurons (4 ops), n1's one message comes back (2 ops)
    assert (layers["n1"]["synops"], layers["n1"]["synops_unit_spikes"]) == (4 + 2, 6 + 6)
    assert (layers["out"]["synops"], layers["out"]["synops_unit_spikes"]) == (2, 6)
