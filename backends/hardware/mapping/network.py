"""The mapping of a whole network: partition every layer, then place its cores.

Cores, layers and the ``Mapping`` the report reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backends.hardware.mapping.chains import Connection, compartments, connections, split_slices
from backends.hardware.mapping.bound import lower_bound
from backends.hardware.mapping.partition import partition
from backends.hardware.mapping.placement import core_traffic, improve_placement, serpentine
from backends.hardware.mapping.usage import (LIMIT_KEYS, USAGE_KEYS, fit_error, fit_reason, limits, memory_use,
                                           over_limits, usage_grids)
from backends.hardware.spec import ChipSpec
from backends.quantize import IntNetwork, IntNeuron
from n2c.errors import MappingError


MAX_SEARCHED_CORES = 4096  # placement's local search on at most this many cores (n x n matrices); else serpentine


@dataclass
class Core:
    index: int
    layer: str
    block: tuple[slice, ...]
    chip: int
    tile: tuple[int, int]  # global (x, y)
    usage: dict[str, int]
    memory: dict[str, int]


@dataclass
class LayerMapping:
    name: str
    kind: str
    shape: tuple
    split: tuple[int, ...]
    cores: list[int]
    lower_bound: int
    binding: str
    compartments_per_neuron: int
    synapses: int
    unfit: str = ""  # why one neuron of the layer cannot fit a core (then it has no cores)


@dataclass
class Mapping:
    chip: ChipSpec
    layers: list[LayerMapping]
    cores: list[Core]
    connections: list[Connection]
    chips: int
    lower_bound: int  # of the layers that fit

    @property
    def unfit(self) -> dict[str, str]:
        """Layers that cannot fit one core, and why (mapped with ``unfit_ok``; they have no cores)."""
        return {lm.name: lm.unfit for lm in self.layers if lm.unfit}

    def limits(self) -> dict:
        """Per-core limits: neurons, input_axons, output_fanout and bits per memory pool."""
        return limits(self.chip)

    def utilization(self, core: Core) -> dict[str, float]:
        """Usage / limit per resource (memory per pool)."""
        used = {**{k: core.usage[k] for k in LIMIT_KEYS}, **core.memory}
        return {k: used[k] / lim for k, lim in self.limits().items()}

    def hops(self, a: int, b: int) -> tuple[int, int, int]:
        """(east-west, north-south, chip crossings) between the tiles of cores a and b."""
        (xa, ya), (xb, yb) = self.cores[a].tile, self.cores[b].tile
        return abs(xa - xb), abs(ya - yb), abs(self.cores[a].chip - self.cores[b].chip)

    def layer(self, name: str) -> LayerMapping:
        return next(lm for lm in self.layers if lm.name == name)

    def as_dict(self) -> dict:
        return {"chip": self.chip.key, "fits": not self.unfit, "unfit": [{"layer": k, "reason": v}
                                                                      for k, v in self.unfit.items()],
                "chips": self.chips, "cores": len(self.cores),
                "lower_bound": self.lower_bound, "gap": len(self.cores) - self.lower_bound, "limits": self.limits(),
                "mesh": {"tiles_x": self.chip.mesh[0], "tiles_y": self.chip.mesh[1],
                         "cores_per_tile": self.chip.int("cores_per_tile"),
                         "cores_per_chip": self.chip.int("cores_per_chip")},
                "layers": [{"name": lm.name, "kind": lm.kind, "shape": list(lm.shape), "split": list(lm.split),
                            "cores": len(lm.cores), "first_core": lm.cores[0] if lm.cores else None,
                            "does_not_fit": lm.unfit or None, "lower_bound": lm.lower_bound,
                            "binding": lm.binding, "compartments_per_neuron": lm.compartments_per_neuron,
                            "synapses": lm.synapses, **self._layer_totals(lm)} for lm in self.layers],
                "per_core": [{"index": c.index, "layer": c.layer, "block": [[s.start, s.stop] for s in c.block],
                              "chip": c.chip, "tile": list(c.tile), "usage": dict(c.usage), "memory": dict(c.memory),
                              "utilization": self.utilization(c)} for c in self.cores]}


    def _layer_totals(self, lm: LayerMapping) -> dict:
        cores = [self.cores[i] for i in lm.cores]
        if not cores:  # a layer that does not fit
            return {"neurons": int(np.prod(lm.shape)), "synapse_bits": None, "input_axons_max": None,
                    "utilization_max": None}
        return {"neurons": int(np.prod(lm.shape)), "synapse_bits": sum(c.usage["synapse_bits"] for c in cores),
                "input_axons_max": max(c.usage["input_axons"] for c in cores),
                "utilization_max": max(max(self.utilization(c).values()) for c in cores)}


def unfit_inputs(neurons, comp: dict, conns, chip: ChipSpec) -> dict:
    """Before any partition: every layer whose single neuron already passes a per-core limit on its
    inputs (axons, synaptic memory): name → the limits passed."""
    unfit = {}
    for neuron in neurons:
        into = [c for c in conns if c.target == neuron.name]
        finest = tuple(neuron.shape)  # one neuron per core: every usage is at its smallest
        # fan-out is not known yet (consumers are partitioned later): zero, so only input limits count
        usage = usage_grids(neuron, comp[neuron.name], into, np.zeros(neuron.shape, np.int64), finest, chip)
        over = over_limits(usage, chip)
        if over:
            unfit[neuron.name] = over
    return unfit


def fan_in_error(neurons, unfit: dict, chip: ChipSpec) -> MappingError:
    """One MappingError naming every layer of ``unfit`` (:func:`unfit_inputs`)."""
    if len(unfit) == 1:
        name, over = next(iter(unfit.items()))
        return fit_error(next(n for n in neurons if n.name == name), chip, over)
    return MappingError(f"{len(unfit)} layers cannot fit one {chip.name} core: " + " | ".join(
        f"layer '{name}': {fit_reason(over)}" for name, over in unfit.items()))


def map_network(net: IntNetwork, chip: ChipSpec, unfit_ok: bool = False) -> Mapping:
    """Partition every neuron layer (consumers first), then place the cores on the mesh. A layer
    that cannot fit one core is a MappingError naming every such layer, or, with ``unfit_ok``,
    is left without cores and named in ``Mapping.unfit`` (the rest is mapped as usual)."""
    conns = connections(net, chip)
    neurons = [x for x in net.layers if isinstance(x, IntNeuron)]
    comp = {x.name: compartments(x, chip) for x in neurons}
    fanout = {x.name: np.zeros(x.shape, np.int64) for x in neurons}
    over_inputs = unfit_inputs(neurons, comp, conns, chip)  # before any partition: all named at once
    if over_inputs and not unfit_ok:
        raise fan_in_error(neurons, over_inputs, chip)
    unfit = {name: fit_reason(over) for name, over in over_inputs.items()}
    masks, plans = {}, {}  # (source, target) → union masks (blocks, *source shape); name → (starts, usage, bound, binding)
    for neuron in reversed(neurons):
        if neuron.name in unfit:
            continue
        into = [c for c in conns if c.target == neuron.name]
        try:
            starts, usage = partition(neuron, comp[neuron.name], into, fanout[neuron.name], chip)
        except MappingError as e:
            if not unfit_ok or e.reason is None:
                raise
            unfit[neuron.name] = e.reason  # its fan-out, known now, is what does not fit
            continue
        plans[neuron.name] = (starts, usage, *lower_bound(neuron, comp[neuron.name], into, fanout[neuron.name], chip))
        for src in dict.fromkeys(c.source for c in into):
            union = np.logical_or.reduce([c._mask_grid(starts) for c in into if c.source == src])
            masks[src, neuron.name] = union.reshape(-1, *union.shape[len(starts):])
            if src in fanout:
                fanout[src] += masks[src, neuron.name].sum(axis=0)
    if len(unfit) == len(neurons):
        raise MappingError(f"no layer of the network fits one {chip.name} core: " + " | ".join(
            f"layer '{name}': {why}" for name, why in unfit.items()))
    layers, cores = [], []
    for neuron in neurons:
        synapses = sum(c._stored_synapses() for c in conns if c.target == neuron.name)
        if neuron.name in unfit:
            layers.append(LayerMapping(neuron.name, neuron.kind, tuple(neuron.shape), (), [], 0, "does not fit",
                                       comp[neuron.name], synapses, unfit[neuron.name]))
            continue
        starts, usage, bound, binding = plans[neuron.name]
        split = tuple(len(s) for s in starts)
        memory = memory_use(usage, chip)
        first = len(cores)
        for i, block in enumerate(split_slices(neuron.shape, starts)):
            idx = np.unravel_index(i, split)
            cores.append(Core(len(cores), neuron.name, block, 0, (0, 0), {k: int(usage[k][idx]) for k in USAGE_KEYS},
                              {k: int(v[idx]) for k, v in memory.items()}))
        layers.append(LayerMapping(neuron.name, neuron.kind, tuple(neuron.shape), split,
                                   list(range(first, len(cores))), bound, binding, comp[neuron.name], synapses))
    chips = -(-len(cores) // chip.int("cores_per_chip"))
    slots = serpentine(chip, chips)
    order = np.arange(len(cores))
    if len(cores) <= MAX_SEARCHED_CORES:  # beyond, the dense traffic and distance matrices are too large
        masks = {key: m for key, m in masks.items() if key[0] not in unfit}
        order = improve_placement(slots, *core_traffic(net, layers, plans, masks, comp, conns, len(cores)))
    for core, s in zip(cores, order):
        core.tile = slots[s]
        core.chip = slots[s][0] // chip.mesh[0]
    return Mapping(chip, layers, cores, conns, chips, sum(lm.lower_bound for lm in layers))
