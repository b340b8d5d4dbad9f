"""Hardware report of one network on one chip: mapping, activity measured on real data,
energy, latency and EDP, the 45 nm ANN comparison, and the same network across T.

``ReportBuilder`` accumulates a run chunk by chunk and ``build`` returns a JSON-able dict
(``report_version`` 2, schema in ``docs/hardware-model.md``);
``backends.report.render.write_report`` writes it as report.json, report.md and report.html.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from n2c import __version__
from backends.hardware.cost import Activity, price
from backends.hardware.spec import ANN_ENERGY_PER_AC, ANN_ENERGY_PER_EXP, ANN_ENERGY_PER_MAC, ChipSpec
from backends.hardware.fan_in import fit_fan_in
from backends.hardware.mapping import Mapping, map_network
from backends.ir.integer import IntNetwork, IntProduct, IntSynapse
from n2c import products
from backends.reference.synapses import merge_overflows
from n2c.errors import N2CError

REPORT_VERSION = 2
SIMULATORS = ("reference", "lava")


@dataclass
class RunInfo:
    """Where a report's numbers come from."""
    graph: str
    method: str
    data_name: str
    split: str
    simulator: str = "reference"
    share_cores: str = "auto"  # backends.hardware.mapping.map_network's share


def ann_macs(net: IntNetwork) -> dict[str, int]:
    """Multiply-accumulates of the equivalent ANN per conv/dense layer, as the papers count
    them: output elements × kernel size (padded positions included)."""
    macs = {}
    partial = {r for entry in net.fan_in if entry["why"] == "partial sums" for r in entry["relay"]}
    for layer in net.layers:  # the joins of partial sums (weights of 1) are no MACs of the ANN
        if isinstance(layer, IntSynapse) and layer.kind in ("conv", "dense") and layer.input not in partial:
            macs[layer.name] = int(np.prod(layer.out_shape)) * int(np.prod(layer.weight.shape[1:]))
        if isinstance(layer, IntProduct):  # attention's Q·Kᵀ and A·V
            macs[layer.name] = products.dense_macs(layer.b_shape)
    return macs


def ann_exps(net: IntNetwork) -> int:
    """Exponentials of the ANN's softmax: one per attention weight."""
    return sum(int(np.prod(x.out_shape)) for x in net.layers if isinstance(x, IntProduct) and x.softmax_scale is not None)


def ann_comparison(net: IntNetwork, mapping: Mapping, activity: dict) -> dict:
    """The 45 nm convention: ANN = MACs·E_MAC (+ softmax exponentials·E_exp); SNN = the layer fed by
    the (non-spike) input at E_MAC per MAC, every other synaptic op at E_AC (a graded spike as one
    op, or as its units), and attention's products on integer counts at E_MAC per event-driven MAC
    (+ the same exponentials)."""
    macs = ann_macs(net)
    inputs = [c for c in mapping.connections if c.source == net.source.name]
    first = {c.target for c in inputs}
    first_macs = sum(macs.get(syn.name, 0) for c in inputs for syn in c.chain)
    later = [r for r in activity["layers"] if r["name"] not in first]
    snn = {"graded_as_one": sum(r["synops"] for r in later),
           "unit_spikes": sum(r["synops_unit_spikes"] for r in later)}
    e_mac, e_ac, e_exp = ANN_ENERGY_PER_MAC.value, ANN_ENERGY_PER_AC.value, ANN_ENERGY_PER_EXP.value
    offcore = activity.get("offcore", [])
    attention = sum(r["offcore_macs"] for r in offcore) * e_mac + sum(r["offcore_exps"] for r in offcore) * e_exp
    exps = ann_exps(net)
    return {"macs": sum(macs.values()), "exps": exps, "energy_J": sum(macs.values()) * e_mac + exps * e_exp,
            "snn_45nm_J": {k: first_macs * e_mac + v * e_ac + attention for k, v in snn.items()},
            "first_layer_macs": first_macs,
            "constants": {"energy_per_mac": ANN_ENERGY_PER_MAC.as_dict(), "energy_per_ac": ANN_ENERGY_PER_AC.as_dict(),
                          "energy_per_exp": ANN_ENERGY_PER_EXP.as_dict()}}


class ReportBuilder:
    """Map ``net`` on ``chip``, then feed it runs chunk by chunk (:meth:`add`), then :meth:`build`."""

    def __init__(self, net: IntNetwork, chip: ChipSpec, info: RunInfo):
        if info.simulator not in SIMULATORS:
            raise N2CError(f"unknown simulator {info.simulator!r}; use one of {', '.join(SIMULATORS)}")
        self.net = fit_fan_in(net, chip)  # run this network: relays where fan-in exceeds a core
        self.chip, self.info = chip, info
        # a layer that cannot fit is named, not fatal
        self.mapping = map_network(self.net, chip, unfit_ok=True, share=info.share_cores)
        self.activity = Activity(self.net, self.mapping)
        self.correct = 0
        self.labelled = 0
        self.overflows: dict = {}

    def add(self, messages: dict, output: np.ndarray, labels: np.ndarray | None = None,
            overflows: dict | None = None) -> None:
        """One chunk: every neuron's and the source's messages (T, B, ...), the readout (B, ...), and
        the values past Loihi's limits the run counted (layer -> {"limit", "count"})."""
        self.activity.add(messages)
        self.overflows = merge_overflows([self.overflows, overflows or {}])
        if labels is not None:
            self.correct += int((output.reshape(len(output), -1).argmax(1) == labels).sum())
            self.labelled += len(labels)

    def build(self, across_T: list | None = None) -> dict:
        cost = price(self.activity)
        net, mapping, info = self.net, self.mapping, self.info
        report = {
            "report_version": REPORT_VERSION, "generator": f"n2c {__version__}",
            "graph": info.graph, "method": info.method, "timesteps": int(net.timesteps),
            "data": {"name": info.data_name, "split": info.split, "samples": self.activity.samples,
                     "simulator": info.simulator},
            "accuracy": self.correct / self.labelled if self.labelled else None,
            "hardware": self.chip.as_dict(),
            "mapping": mapping.as_dict(),
            **cost,
            "ann": ann_comparison(net, mapping, cost["activity"]),
            "across_T": across_T or [],
            "quantization": net.report,
            "fan_in_relays": net.fan_in,
            "past_loihi_limits": self.overflows,
            "notes": unfit_notes(mapping) + notes(mapping) + relay_notes(net) + overflow_notes(self.overflows),
        }
        return report


def notes(mapping: Mapping) -> list[str]:
    chip = mapping.chip
    out = []
    if any(lm.compartments_per_neuron > 1 for lm in mapping.layers) or \
            any(c.axons_per_source > 1 for c in mapping.connections):
        out.append(f"{chip.name} spikes carry {chip.int('graded_spike_bits')} bit(s): wider messages travel as "
                   "bit planes (one binary spike per set bit, on its own axon and compartment); this is n2c's "
                   "model, not a published Loihi mapping.")
    proxies = sorted(k for k, q in chip.values.items() if q.tag == "P")
    if proxies:
        out.append(f"Stated proxies [P] (not published for {chip.name}): {', '.join(proxies)}.")
    out += ["Synaptic ops count a graded spike as one op (the Loihi 2 convention); the energy with each unit "
            "spike as an op is given as well.",
            "Static energy is the whole chips' static power over the inference time; the share of the cores used "
            "is shown beside it, not in the total.",
            "Latency excludes host I/O; " + (
                f"chip-to-chip links are priced with {chip.system.name}'s stated assumptions "
                f"({chip.system.values['energy_chip_crossing'].value * 1e12:g} pJ and "
                f"{chip.system.values['time_chip_crossing'].value * 1e9:g} ns per link traversed; no published value)."
                if chip.system else "chip-to-chip crossings are counted but not priced (no published constant; a "
                "system spec such as kapoho_point or hala_point prices them)."),
            "Pooling is folded into the next layer's synapses; cores go to chips in topological order, cut where "
            "the least traffic crosses; hop minimization is a heuristic (serpentine "
            "placement + pairwise swaps)."]
    return out


def unfit_notes(mapping: Mapping) -> list[str]:
    """The layers that cannot fit one core, first of all notes."""
    if not mapping.unfit:
        return []
    return [f"DOES NOT FIT {mapping.chip.name}: " + "; ".join(f"layer '{k}': {v}" for k, v in mapping.unfit.items())
            + ". These layers have no cores: the cores, chips, messages, hops, latency and static energy "
            "exclude them; their synaptic ops and neuron updates are counted and priced."]


def relay_notes(net: IntNetwork) -> list[str]:
    """What n2c added so that every neuron's inputs fit one core (``backends.hardware.fan_in``)."""
    if not net.fan_in:
        return []
    parts = [f"'{r['layer']}' reads {'pooled sums through relay' if r['why'] == 'pooling' else str(r['parts']) + ' partial sums through relays'}"
             for r in net.fan_in]
    return [f"Fan-in wider than a core, split exactly with relay neurons (they send the current they receive; the "
            f"neuron's input is unchanged): {'; '.join(parts)}. The relays are mapped, simulated and priced as "
            "layers of their own."]


def overflow_notes(overflows: dict) -> list[str]:
    if not overflows:
        return []
    total = sum(entry["count"] for entry in overflows.values())
    worst = max(overflows, key=lambda name: overflows[name]["count"])
    return [f"Past Loihi's limits: {total:,} values in {len(overflows)} layer(s) (most in '{worst}': "
            f"{overflows[worst]['count']:,} past its {overflows[worst]['limit']}). A chip would compute something "
            "else than this simulation; the activity and energy above are the simulation's."]


def summary_row(report: dict) -> dict:
    """One row of the across-T table from a full report."""
    return {"graph": report["graph"], "method": report["method"], "timesteps": report["timesteps"],
            "accuracy": report["accuracy"], "fits": report["mapping"]["fits"],
            "reason": "; ".join(f"layer '{u['layer']}': {u['reason']}" for u in report["mapping"]["unfit"]),
            "cores": report["mapping"]["cores"],
            "energy_total_J": report["energy"]["total"], "energy_dynamic_J": report["energy"]["dynamic"],
            "inference_s": report["latency"]["inference_s"], "edp_J_s": report["edp_J_s"],
            "synops": report["activity"]["totals"]["synops"], "ann_energy_J": report["ann"]["energy_J"]}


def unfit_row(graph: str, method: str, timesteps: int, reason: str) -> dict:
    return {"graph": graph, "method": method, "timesteps": timesteps, "accuracy": None, "fits": False,
            "reason": reason, "cores": None, "energy_total_J": None, "energy_dynamic_J": None,
            "inference_s": None, "edp_J_s": None, "synops": None, "ann_energy_J": None}
