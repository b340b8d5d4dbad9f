"""What one inference costs on a mapped chip: activity counted from a simulation, priced with
the chip spec's constants (``docs/hardware-model.md`` has the model and its limits).

Counts, per inference (one sample of T steps), from the messages (T, B, ...) of a run:

* spike packets of a source neuron at a step: 1 when its message is non-zero (a graded
  spike is one packet), or, when the chip's spikes are narrower than the message
  (bit-plane code, ``backends.hardware.mapping``), the number of set bits of the message;
* synaptic ops landing on neuron i: Σ_j packets_j · (stored synapses j→i)
  (``Connection.synapse_counts``); the alternative that counts a graded spike of k units as
  k ops uses |message| instead of packets;
* messages: one per (packet, destination core it reaches); hops: the mesh distance of each;
* neuron updates: every compartment every step, *active* when it received a synaptic op or
  sent a message that step, *inactive* otherwise;
* off-core work (the products of attention and their softmax, on the embedded processors):
  multiply-accumulates as an event-driven product performs them (``n2c.products.event_macs``:
  each new spike times the other operand's non-zero running counts), one exponential per
  attention weight and step under a softmax; the operands' spikes travel to the host entry
  (tile (0, 0) of chip 0, where the mapper puts the embedded processors) and the products'
  currents come back from there.

Energy:   E = synops·e_syn + N_act·e_act + N_inact·e_inact + messages·e_spike
              + hops_EW·e_EW + hops_NS·e_NS + MACs_off·e_mac + exps_off·e_exp + links·e_link
              + P_static·chips·T·t_step
          (links: chip-to-chip links traversed, one per message per step of chip-grid distance,
          priced by a system spec's energy_chip_crossing; 0 on a bare chip)
          (and, for comparison only, the static share of the cores used: × cores / (chips·cores per chip))
Latency:  t_step = max over cores (synops_c·t_syn + N_act,c·t_act + N_inact,c·t_inact)
              + t_spike + longest route (hops_EW·t_EW + hops_NS·t_NS + links·t_link) + barrier sync
              + (MACs_off + exps_off)·t_op / (embedded processors · chips)  (products after the cores),
          taken per (sample, step) and averaged; an inference streams in T steps and its
          first output leaves after T + pipeline depth steps.
"""

from __future__ import annotations

import math

import numpy as np

from backends.hardware.mapping import Connection, Mapping
from backends.ir.integer import IntNetwork, IntNeuron, IntProduct, message_bits, message_range
from backends.reference.stream import stream_depths
from n2c import products

# energy component -> the chip values that price it
COMPONENT_CONSTANTS = {"synaptic_ops": ("energy_synop",), "neuron_updates_active": ("energy_neuron_update_active",),
                       "neuron_updates_inactive": ("energy_neuron_update_inactive",),
                       "spike_messages": ("energy_spike_in_tile",), "hops": ("energy_hop_ew", "energy_hop_ns"),
                       "offcore_ops": ("energy_offcore_mac", "energy_offcore_exp")}
ENERGY_COMPONENTS = tuple(COMPONENT_CONSTANTS) + ("chip_links",)  # links: a system spec's constant


def _popcount(values: np.ndarray, bits: int) -> np.ndarray:
    """Set bits of the two's-complement ``bits``-bit form of each value."""
    v = np.asarray(values, dtype=np.int64) & ((1 << bits) - 1)
    count = np.zeros(v.shape, dtype=np.float32)
    for b in range(bits):
        count += (v >> b) & 1
    return count


def packets(messages: np.ndarray, conn: Connection, bits: int) -> np.ndarray:
    """Spike packets per source neuron and step: non-zero messages, or set bits under bit planes."""
    if conn.axons_per_source > 1:
        return _popcount(messages, bits)
    return (messages != 0).astype(np.float32)


COUNTS = ("messages", "unit_spikes", "synops", "synops_unit_spikes", "neuron_updates_active",
          "neuron_updates_inactive", "hops_ew", "hops_ns", "chip_crossings", "offcore_macs", "offcore_exps")


def _message_bits(net: IntNetwork) -> dict[str, int]:
    bits = {net.source.name: net.source.bits}
    bits.update({layer.name: message_bits(layer) for layer in net.layers if isinstance(layer, IntNeuron)})
    bits.update({layer.name: layer.message_bits for layer in net.layers if isinstance(layer, IntProduct)})
    return bits


def _compact(a: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """A broadcast view's stored values (its stride-0 axes cut to length 1) and those axes."""
    zero = [axis for axis, (n, st) in enumerate(zip(a.shape, a.strides)) if st == 0 and n > 1]
    return a[tuple(slice(0, 1) if axis in zero else slice(None) for axis in range(a.ndim))], zero


def _total(a: np.ndarray) -> float:
    """Σ a in float64, over a broadcast view's stored values times the repeats (synapse counts
    of a full conv are one channel's, broadcast)."""
    stored, zero = _compact(a)
    return float(stored.sum(dtype=np.float64)) * float(np.prod([a.shape[axis] for axis in zero]))


def _row_totals(a: np.ndarray) -> np.ndarray:
    """Σ over every axis but the first (one total per step and sample), float64, as :func:`_total`."""
    stored, zero = _compact(a)
    repeats = float(np.prod([a.shape[axis] for axis in zero if axis > 0]))
    rows = stored.sum(axis=tuple(range(1, a.ndim)), dtype=np.float64) * repeats
    return np.broadcast_to(rows, (a.shape[0],)) if 0 in zero else rows


class ExactSum:
    """A float sum kept exactly (Shewchuk's non-overlapping partials, as ``math.fsum``), so that
    a total accumulated chunk by chunk is the correctly rounded sum of all values, whatever the
    chunks."""

    def __init__(self):
        self.partials: list[float] = []

    def add(self, values) -> None:
        partials = self.partials
        for x in np.asarray(values, np.float64).ravel().tolist():
            i = 0
            for y in partials:
                if abs(x) < abs(y):
                    x, y = y, x
                hi = x + y
                lo = y - (hi - x)
                if lo:
                    partials[i] = lo
                    i += 1
                x = hi
            partials[i:] = [x]

    def value(self) -> float:
        return math.fsum(self.partials)


class Activity:
    """Counts of runs on a mapping, accumulated chunk by chunk (:meth:`add`), so that a large test
    set never has to be held in memory at once. :meth:`per_inference` divides by the samples."""

    def __init__(self, net: IntNetwork, mapping: Mapping):
        self.net, self.mapping = net, mapping
        self.bits = _message_bits(net)
        # sources whose every message is 0 or 1: a unit-spike count is then the packet count
        self.binary = {x.name for x in net.layers if isinstance(x, IntNeuron) and message_range(x)[0] >= 0
                       and message_range(x)[1] <= 1}
        self.unsigned = {x.name for x in net.layers if isinstance(x, IntNeuron) and message_range(x)[0] >= 0}
        chip = mapping.chip
        host = len(mapping.blocks)  # the input enters at tile (0, 0) of chip 0
        self.layers = {lm.name: {"name": lm.name, "kind": lm.kind, "neurons": int(np.prod(lm.shape)),
                                 **dict.fromkeys(COUNTS, 0.0), "spiking_steps": 0.0} for lm in mapping.layers}
        self.source = {"name": net.source.name, **dict.fromkeys(COUNTS, 0.0)}
        self.products = [x for x in net.layers if isinstance(x, IntProduct)]
        self.offcore = {p.name: {"name": p.name, "kind": "product", "mode": p.mode + (
            " + softmax" if p.softmax_scale is not None else ""), "dense_macs": products.dense_macs(p.b_shape),
            **dict.fromkeys(COUNTS, 0.0)} for p in self.products}
        self.processors = chip.int("embedded_processors_per_chip") * mapping.chips
        # an operand's spikes, sent to the embedded processors at the host entry: hops per neuron
        self.to_host = {name: _block_ids(mapping, name, mapping.layer(name).shape, host)
                        for p in self.products for name in p.inputs}
        # routes: per connection and destination block, the source neurons that reach it and their blocks
        self.routes = []
        longest = (0, 0, 0)
        for conn in mapping.connections:
            src_block = _block_ids(mapping, conn.source, conn.source_shape, host)
            for i in mapping.layer(conn.target).blocks:
                mask = conn.receptive_mask(mapping.blocks[i].block).ravel()
                senders = src_block[mask]
                hops = {a: _hops(mapping, int(a), i) for a in np.unique(senders) if a >= 0}
                longest = max([longest, *hops.values()], key=self._route_time)
                self.routes.append((conn, i, mask, senders, hops))
        self.route_s = chip["time_spike_in_tile"] + self._route_time(longest)
        self.longest_route = {"hops_ew": int(longest[0]), "hops_ns": int(longest[1]), "chip_links": int(longest[2])}
        self.barrier_s = chip.barrier_sync(len({(c.chip, c.tile) for c in mapping.cores}), mapping.chips)
        self.samples = 0
        self.timesteps = net.timesteps
        self.step_sum = ExactSum()  # the same total however the samples are chunked
        self.step_max = 0.0
        self.critical = np.zeros(len(mapping.cores))

    def _route_time(self, hops) -> float:
        """Time of one route (east-west hops, north-south hops, chip-to-chip links)."""
        chip = self.mapping.chip
        return hops[0] * chip["time_hop_ew"] + hops[1] * chip["time_hop_ns"] + hops[2] * chip.crossing("time_chip_crossing")

    def add(self, messages: dict[str, np.ndarray]) -> None:
        """Count one chunk of a run: ``messages`` (T, B, ...) of the source and every neuron."""
        net, mapping = self.net, self.mapping
        t, b = net.check_steps(messages[net.source.name]), messages[net.source.name].shape[1]
        self.samples += b
        received: dict[str, np.ndarray] = {}
        packets_of: dict[str, np.ndarray] = {}
        for conn in mapping.connections:
            s = messages[conn.source].reshape(t * b, *conn.source_shape)
            p = packets(s, conn, self.bits[conn.source])
            packets_of[(conn.source, conn.target)] = p.sum(axis=0, dtype=np.float64).ravel()
            syn = conn.synapse_counts(p)
            received[conn.target] = syn if conn.target not in received else received[conn.target] + syn.astype(np.float64)
            self.layers[conn.target]["synops"] += _total(syn)
            if conn.source in self.offcore or (conn.source in self.binary and conn.axons_per_source == 1):
                units = syn  # a current is no spike count; a 0/1 message is one unit
            else:
                units = conn.synapse_counts(np.abs(s))
            self.layers[conn.target]["synops_unit_spikes"] += _total(units)
        for conn, _, mask, senders, hops in self.routes:
            per_block = np.bincount(senders[senders >= 0], packets_of[(conn.source, conn.target)][mask][senders >= 0])
            row = self.source if conn.source == net.source.name else \
                self.offcore[conn.source] if conn.source in self.offcore else self.layers[conn.source]
            for a, (ew, ns, cross) in hops.items():
                n = float(per_block[a])
                row["messages"] += n
                row["hops_ew"] += n * ew
                row["hops_ns"] += n * ns
                row["chip_crossings"] += n * cross
        self.source["unit_spikes"] += float(np.abs(messages[net.source.name]).sum())
        offcore_ops = self._add_offcore(messages, t, b)
        chip = mapping.chip
        work = np.zeros((t * b, len(mapping.cores)))  # per core: the work of all its blocks
        for lm in mapping.layers:
            row, shape, comp = self.layers[lm.name], tuple(lm.shape), lm.compartments_per_neuron
            got = received.get(lm.name)
            got = np.zeros((t * b, *shape), np.float32) if got is None else got
            sent = messages[lm.name].reshape(t * b, *shape) if lm.name != net.output else np.zeros((1, *shape))
            active = (got > 0) | (sent != 0)
            row["unit_spikes"] += float((sent if lm.name in self.unsigned else np.abs(sent)).sum())
            row["spiking_steps"] += float(np.count_nonzero(sent))
            n_active = np.count_nonzero(active)
            row["neuron_updates_active"] += float(n_active) * comp
            row["neuron_updates_inactive"] += float(active.size - n_active) * comp
            for i in lm.blocks:
                block = (slice(None), *mapping.blocks[i].block)
                n_act = np.count_nonzero(active[block].reshape(t * b, -1), axis=1) * comp
                n_all = int(np.prod([sl.stop - sl.start for sl in mapping.blocks[i].block])) * comp
                synops = _row_totals(got[block])
                work[:, mapping.blocks[i].core] += (synops * chip["time_synop"] + n_act * chip["time_neuron_update_active"]
                                                    + (n_all - n_act) * chip["time_neuron_update_inactive"])
        step = work.max(axis=1) + self.route_s + self.barrier_s + offcore_ops * chip["time_offcore_op"] / self.processors
        self.step_sum.add(step)
        self.step_max = max(self.step_max, float(step.max()))
        self.critical += np.bincount(work.argmax(axis=1), minlength=len(mapping.cores))

    def _add_offcore(self, messages: dict, t: int, b: int) -> np.ndarray:
        """Count the products' work and their operands' trips to the host; the off-core operations
        of every (step, sample), (t·b,), for the step time."""
        ops = np.zeros((t, b))
        for p in self.products:
            row = self.offcore[p.name]
            a, c = (messages[name] for name in p.inputs)  # (T, B, ...)
            macs = products.event_macs(a, c, p.heads, p.mode)
            row["offcore_macs"] += float(macs.sum())
            ops += macs[None, :] / t  # spread over the window's steps
            if p.softmax_scale is not None:
                exps = int(np.prod(p.out_shape)) * t * b
                row["offcore_exps"] += float(exps)
                ops += exps / (t * b)
            for name, spikes in zip(p.inputs, (a, c)):
                if name not in self.to_host:
                    continue
                sent = (spikes != 0).reshape(t * b, -1).sum(axis=0)
                ids = self.to_host[name]
                for block in np.unique(ids[ids >= 0]):
                    n = float(sent[ids == block].sum())
                    ew, ns, cross = _hops(self.mapping, len(self.mapping.blocks), int(block))
                    r = self.layers[name]
                    r["messages"] += n
                    r["hops_ew"] += n * ew
                    r["hops_ns"] += n * ns
                    r["chip_crossings"] += n * cross
        return ops.reshape(t * b)

    def per_inference(self) -> dict:
        """Per-layer and input counts divided by the samples, with spike rates."""
        n, t = self.samples, self.timesteps
        layers = []
        for row in self.layers.values():
            r = {k: (v / n if k in COUNTS else v) for k, v in row.items() if k != "spiking_steps"}
            r["spike_rate"] = row["unit_spikes"] / (n * t * row["neurons"])
            r["active_fraction"] = row["spiking_steps"] / (n * t * row["neurons"])
            layers.append(r)
        source = {k: (v / n if k in COUNTS else v) for k, v in self.source.items()}
        offcore = [{k: (v / n if k in COUNTS else v) for k, v in row.items()} for row in self.offcore.values()]
        totals = {k: sum(r[k] for r in layers + offcore) + source.get(k, 0.0) for k in COUNTS}
        return {"per": "inference", "samples": n, "layers": layers, "input": source, "offcore": offcore,
                "totals": totals}


def _block_ids(mapping: Mapping, name: str, shape: tuple, host: int) -> np.ndarray:
    """Block index of each neuron of ``name`` (flat); every input neuron is at the host entry, every
    neuron of a layer that does not fit at -1 (its messages have no route)."""
    placed = name in {lm.name for lm in mapping.layers}
    ids = np.full(shape, -1 if placed else host, dtype=np.int64)
    if placed:
        for i in mapping.layer(name).blocks:
            ids[tuple(mapping.blocks[i].block)] = i
    return ids.ravel()


def _hops(mapping: Mapping, a: int, b: int) -> tuple[int, int, int]:
    """Hops from block a (len(blocks) = the host's entry at tile (0, 0) of chip 0) to block b."""
    if a < len(mapping.blocks):
        return mapping.hops(a, b)
    x, y = mapping.blocks[b].tile
    return x, y, mapping.chip.chip_distance(0, mapping.blocks[b].chip)


def price(act: Activity) -> dict:
    """Activity per inference, energy per inference by component and per layer (with the low–high
    range over each constant's published alternatives), latency and energy-delay product."""
    mapping, chip = act.mapping, act.mapping.chip
    activity = act.per_inference()
    tot = activity["totals"]
    latency = _latency(act)

    def components(c: dict, counts: dict) -> dict:
        return {"synaptic_ops": counts["synops"] * c["energy_synop"],
                "neuron_updates_active": counts["neuron_updates_active"] * c["energy_neuron_update_active"],
                "neuron_updates_inactive": counts["neuron_updates_inactive"] * c["energy_neuron_update_inactive"],
                "spike_messages": counts["messages"] * c["energy_spike_in_tile"],
                "hops": counts["hops_ew"] * c["energy_hop_ew"] + counts["hops_ns"] * c["energy_hop_ns"],
                "offcore_ops": counts["offcore_macs"] * c["energy_offcore_mac"]
                + counts["offcore_exps"] * c["energy_offcore_exp"],
                "chip_links": counts["chip_crossings"] * crossing}

    crossing = chip.crossing("energy_chip_crossing")  # a system's links; 0 for a bare chip (not priced)
    names = [n for group in COMPONENT_CONSTANTS.values() for n in group] + ["static_power_per_chip"]
    options = {n: [chip.values[n].value] + [a.value for a in chip.values[n].alternatives] for n in names}
    main = {n: chip[n] for n in names}
    static = {k: v * mapping.chips * latency["inference_s"] for k, v in
              (("main", main["static_power_per_chip"]), ("low", min(options["static_power_per_chip"])),
               ("high", max(options["static_power_per_chip"])))}
    parts = {**components(main, tot), "static": static["main"]}
    low = sum(components({n: min(v) for n, v in options.items()}, tot).values()) + static["low"]
    high = sum(components({n: max(v) for n, v in options.items()}, tot).values()) + static["high"]
    dynamic = sum(v for k, v in parts.items() if k != "static")
    per_layer = {r["name"]: components(main, r) for r in activity["layers"]}
    per_layer[activity["input"]["name"]] = components(main, {**activity["input"], "synops": 0.0,
                                                           "neuron_updates_active": 0.0, "neuron_updates_inactive": 0.0})
    for row in activity["offcore"]:
        per_layer[row["name"]] = components(main, row)
    share = len(mapping.cores) / (mapping.chips * mapping.chip.int("cores_per_chip"))
    energy = {"unit": "J per inference", "components": parts, "dynamic": dynamic, "total": dynamic + parts["static"],
              "static_prorated_by_cores": parts["static"] * share,
              "range": {"low": low, "high": high}, "per_layer": per_layer,
              "graded_as_unit_spikes": dynamic + (tot["synops_unit_spikes"] - tot["synops"]) * main["energy_synop"],
              "constants": names}
    return {"activity": activity, "energy": energy, "latency": latency,
            "edp_J_s": energy["total"] * latency["inference_s"]}


def _latency(act: Activity) -> dict:
    mapping = act.mapping
    mean = act.step_sum.value() / (act.samples * act.timesteps)
    core = int(act.critical.argmax())
    depth = max(stream_depths(act.net).values())
    return {"step_s_mean": mean, "step_s_max": act.step_max, "barrier_s": act.barrier_s, "route_s": act.route_s,
            "critical_core": core, "critical_layer": mapping.cores[core].layer,
            "steps_per_inference": act.timesteps, "pipeline_depth_steps": int(depth),
            "inference_s": act.timesteps * mean, "first_output_s": (act.timesteps + depth) * mean,
            "longest_route": act.longest_route}
