"""The mapping of a whole network: cut every layer into blocks, share cores, place the cores.

Blocks, cores, layers and the ``Mapping`` the report reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from backends.hardware.mapping.chains import Connection, compartments, connections, grid_sum, split_slices
from backends.hardware.mapping.bound import layer_bounds
from backends.hardware.mapping.partition import partition
from backends.hardware.mapping.placement import assign_chips, block_traffic, chip_slots, improve_placement
from backends.hardware.mapping.usage import (LIMIT_KEYS, USAGE_KEYS, fit_reason, limits, memory_use,
                                           over_limits, usage_grids)
from backends.hardware.spec import ChipSpec
from backends.ir.integer import IntNetwork, IntNeuron, IntProduct
from n2c.errors import MappingError


@dataclass
class Block:
    """A rectangular block of one layer's neurons, held by one core."""
    index: int
    layer: str
    block: tuple[slice, ...]
    core: int
    chip: int
    tile: tuple[int, int]  # global (x, y), its core's
    usage: dict[str, int]
    memory: dict[str, int]


@dataclass
class Core:
    """A core and the blocks it holds (of one layer, or shared by several); usage is their sum."""
    index: int
    blocks: list[int]
    layers: list[str]
    chip: int
    tile: tuple[int, int]  # global (x, y)
    usage: dict[str, int]
    memory: dict[str, int]

    @property
    def layer(self) -> str:
        return " + ".join(self.layers)


@dataclass
class LayerMapping:
    name: str
    kind: str
    shape: tuple
    split: tuple[int, ...]
    blocks: list[int]
    lower_bound: int  # cores when no other layer shares them
    binding: str
    compartments_per_neuron: int
    synapses: int
    unfit: str = ""  # why one neuron of the layer cannot fit a core (then it has no blocks)
    shares: dict | None = None  # per resource: a floor on the cores' worth it takes, shared cores included
    cores: list[int] = field(default_factory=list)  # the cores holding its blocks (maybe with others')


@dataclass
class Mapping:
    chip: ChipSpec
    layers: list[LayerMapping]
    blocks: list[Block]
    cores: list[Core]
    connections: list[Connection]
    chips: int
    lower_bound: int  # of the mode used: lower_bound_shared when cores are shared, else lower_bound_unshared
    lower_bound_shared: int  # no mapping with shared cores allowed uses fewer (layers that fit)
    lower_bound_unshared: int  # Σ of the layers' bounds: no mapping with one layer per core uses fewer
    crossing: dict = field(default_factory=dict)  # fan-out edges × chip links: this cut's and equal runs'

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
        """(east-west, north-south, chip-to-chip links) between the tiles of blocks a and b."""
        (xa, ya), (xb, yb) = self.blocks[a].tile, self.blocks[b].tile
        return abs(xa - xb), abs(ya - yb), self.chip.chip_distance(self.blocks[a].chip, self.blocks[b].chip)

    def layer(self, name: str) -> LayerMapping:
        return next(lm for lm in self.layers if lm.name == name)

    def as_dict(self) -> dict:
        return {"chip": self.chip.key, "fits": not self.unfit, "unfit": [{"layer": k, "reason": v}
                                                                      for k, v in self.unfit.items()],
                "chips": self.chips, "cores": len(self.cores), "blocks": len(self.blocks),
                "system": self.chip.system.key if self.chip.system else None, "chip_crossing_edges": self.crossing,
                "shared_cores": sum(len(c.layers) > 1 for c in self.cores),
                "lower_bound": self.lower_bound, "gap": len(self.cores) - self.lower_bound,
                "lower_bound_shared": self.lower_bound_shared, "lower_bound_unshared": self.lower_bound_unshared,
                "limits": self.limits(),
                "mesh": {"tiles_x": self.chip.mesh[0], "tiles_y": self.chip.mesh[1],
                         "cores_per_tile": self.chip.int("cores_per_tile"),
                         "cores_per_chip": self.chip.int("cores_per_chip")},
                "layers": [{"name": lm.name, "kind": lm.kind, "shape": list(lm.shape), "split": list(lm.split),
                            "blocks": len(lm.blocks), "cores": len(lm.cores),
                            "first_core": lm.cores[0] if lm.cores else None,
                            "does_not_fit": lm.unfit or None, "lower_bound": lm.lower_bound,
                            "binding": lm.binding, "compartments_per_neuron": lm.compartments_per_neuron,
                            "synapses": lm.synapses, **self._layer_totals(lm)} for lm in self.layers],
                "per_core": [{"index": c.index, "layer": c.layer, "layers": list(c.layers),
                              "block": [[s.start, s.stop] for s in self.blocks[c.blocks[0]].block]
                              if len(c.blocks) == 1 else None,
                              "blocks": [{"layer": self.blocks[i].layer,
                                          "block": [[s.start, s.stop] for s in self.blocks[i].block]}
                                         for i in c.blocks],
                              "chip": c.chip, "tile": list(c.tile), "usage": dict(c.usage), "memory": dict(c.memory),
                              "utilization": self.utilization(c)} for c in self.cores]}

    def _layer_totals(self, lm: LayerMapping) -> dict:
        blocks = [self.blocks[i] for i in lm.blocks]
        if not blocks:  # a layer that does not fit
            return {"neurons": int(np.prod(lm.shape)), "synapse_bits": None, "input_axons_max": None,
                    "utilization_max": None}
        return {"neurons": int(np.prod(lm.shape)), "synapse_bits": sum(b.usage["synapse_bits"] for b in blocks),
                "input_axons_max": max(b.usage["input_axons"] for b in blocks),
                "utilization_max": max(max(self.utilization(self.cores[i]).values()) for i in lm.cores)}


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


def unfit_error(unfit: dict[str, str], chip: ChipSpec) -> MappingError:
    """One MappingError naming every layer of ``unfit`` (name → why one neuron passes a limit)."""
    if len(unfit) == 1:
        name, why = next(iter(unfit.items()))
        return MappingError(f"layer '{name}' cannot fit one {chip.name} core: {why}")
    return MappingError(f"{len(unfit)} layers cannot fit one {chip.name} core: " + " | ".join(
        f"layer '{name}': {why}" for name, why in unfit.items()))


SHARE_MODES = ("auto", "always", "never")


def map_network(net: IntNetwork, chip: ChipSpec, unfit_ok: bool = False, share: str = "auto") -> Mapping:
    """Cut every neuron layer into blocks (consumers first), give the blocks cores, then place the
    cores on the mesh. A layer that cannot fit one core is a MappingError naming every such
    layer, or, with ``unfit_ok``, is left without cores and named in ``Mapping.unfit``.

    ``share``: ``"always"`` packs blocks of several layers onto one core where their summed uses
    fit (fewest cores; a shared core works through all its blocks each step, so steps grow);
    ``"never"`` gives each block a core of its own; ``"auto"`` shares only when that needs
    fewer chips."""
    if share not in SHARE_MODES:
        raise MappingError(f"unknown core sharing {share!r}; use one of {', '.join(SHARE_MODES)}")
    conns = connections(net, chip)
    neurons = [x for x in net.layers if isinstance(x, IntNeuron)]
    comp = {x.name: compartments(x, chip) for x in neurons}
    fanout = {x.name: np.zeros(x.shape, np.int64) for x in neurons}
    for prod in (x for x in net.layers if isinstance(x, IntProduct)):
        for name in set(prod.inputs):  # an operand's spikes travel to the embedded processors: one route each
            fanout[name] += 1
    # before any partition, every layer whose inputs alone pass a limit: all named at once
    unfit = {name: fit_reason(over) for name, over in unfit_inputs(neurons, comp, conns, chip).items()}
    if unfit and not unfit_ok:
        raise unfit_error(unfit, chip)
    pairs, plans = [], {}  # (source, target) with synapses; name → (starts, usage, bound, binding, shares)
    for neuron in reversed(neurons):
        if neuron.name in unfit:
            continue
        into = [c for c in conns if c.target == neuron.name]
        try:
            starts, usage = partition(neuron, comp[neuron.name], into, fanout[neuron.name], chip)
        except MappingError as e:
            if e.reason is None:
                raise
            unfit[neuron.name] = e.reason  # its fan-out, known now, is what does not fit
            continue
        plans[neuron.name] = (starts, usage, *layer_bounds(neuron, comp[neuron.name], into, fanout[neuron.name], chip,
                                                           math.prod(map(len, starts))))
        for src in dict.fromkeys(c.source for c in into):
            pairs.append((src, neuron.name))
            if src in fanout:  # blocks of this layer each source neuron reaches
                fanout[src] += block_fanout(into, src, starts)
    if unfit and not unfit_ok:  # fan-out limits: the consumers had to be cut first; all named at once
        raise unfit_error({n.name: unfit[n.name] for n in neurons if n.name in unfit}, chip)
    if len(unfit) == len(neurons):
        raise MappingError(f"no layer of the network fits one {chip.name} core: " + " | ".join(
            f"layer '{name}': {why}" for name, why in unfit.items()))
    layers, blocks = [], []
    for neuron in neurons:
        synapses = sum(c._stored_synapses() for c in conns if c.target == neuron.name)
        if neuron.name in unfit:
            layers.append(LayerMapping(neuron.name, neuron.kind, tuple(neuron.shape), (), [], 0, "does not fit",
                                       comp[neuron.name], synapses, unfit[neuron.name]))
            continue
        starts, usage, bound, binding, shares = plans[neuron.name]
        split = tuple(len(s) for s in starts)
        memory = memory_use(usage, chip)
        first = len(blocks)
        for i, block in enumerate(split_slices(neuron.shape, starts)):
            idx = np.unravel_index(i, split)
            blocks.append(Block(len(blocks), neuron.name, block, -1, 0, (0, 0),
                                {k: int(usage[k][idx]) for k in USAGE_KEYS}, {k: int(v[idx]) for k, v in memory.items()}))
        layers.append(LayerMapping(neuron.name, neuron.kind, tuple(neuron.shape), split,
                                   list(range(first, len(blocks))), bound, binding, comp[neuron.name], synapses,
                                   shares=shares))
    cores = share_cores(blocks, chip) if share != "never" else own_cores(blocks)
    per_chip = chip.int("cores_per_chip")
    if share == "auto" and -(-len(cores) // per_chip) == -(-len(blocks) // per_chip):
        cores = own_cores(blocks)  # sharing saves no chip: keep the steps short
    for lm in layers:
        lm.cores = sorted({blocks[i].core for i in lm.blocks})
    chips = -(-len(cores) // per_chip)
    if chip.max_chips is not None and chips > chip.max_chips:
        raise MappingError(f"the network needs {chips} chips ({len(cores)} cores) but {chip.system.name} has "
                           f"{chip.max_chips}; use a larger system or a smaller network")
    crossing = place(cores, blocks, layers, plans, pairs, unfit, comp, conns, chip)
    placed = [lm for lm in layers if not lm.unfit]
    shared, alone = network_bound(placed), sum(lm.lower_bound for lm in placed)
    return Mapping(chip, layers, blocks, cores, conns, chips, shared if len(cores) < len(blocks) else alone,
                   shared, alone, crossing)


def place(cores: list[Core], blocks: list[Block], layers, plans, pairs, unfit, comp, conns, chip: ChipSpec) -> dict:
    """Give every core a chip (fewest crossings: ``placement.assign_chips``) and a tile on it
    (serpentine, then the local search per chip), and every block its core's. Returns the
    fan-out edges times the chip-to-chip links they cross, for this cut and for the plain cut
    into equal runs (what the cut saves)."""
    def edges(src, dst):  # (target blocks, source blocks) neurons reaching; one column for the host
        into = [c for c in conns if c.target == dst]
        return block_pairs(into, src, plans[dst][0], plans[src][0] if src in plans else None)
    rows, cols, weights, host = block_traffic(layers, plans, ((src, dst, edges(src, dst)) for src, dst in pairs
                                                              if src not in unfit), comp, conns, len(blocks))
    core_of = np.array([b.core for b in blocks], np.int64)
    rows, cols = core_of[rows], core_of[cols]
    inside = rows != cols  # inside a core: no hops
    rows, cols, weights = rows[inside], cols[inside], weights[inside]
    host = np.bincount(core_of, host, len(cores)).astype(np.int64)
    least = assign_chips(len(cores), chip.int("cores_per_chip"), rows, cols, weights)
    in_order = np.arange(len(cores)) // chip.int("cores_per_chip")
    grid = np.array([chip.chip_position(c) for c in range(int(least.max(initial=0)) + 1)], np.int64)

    def links(chips_of_cores):  # fan-out edges × chip-to-chip links between their cores, on the grid
        a, b = grid[chips_of_cores[rows]], grid[chips_of_cores[cols]]
        return int((np.abs(a - b).sum(axis=1) * weights).sum())
    # the cut counts an edge once per boundary in chip order; on a grid far chips may be nearer, so
    # the plain cut into equal runs can cross fewer links: the fewer of the two is kept
    chip_of = least if links(least) <= links(in_order) else in_order
    crossing = {"edges_x_links": links(chip_of), "edges_x_links_in_order": links(in_order),
                "cut": "least crossing" if chip_of is least else "equal runs"}
    chip_slots_of = [chip_slots(chip, c) for c in range(int(chip_of.max(initial=0)) + 1)]
    where = np.zeros((len(cores), 2), np.int64)  # every core's tile: serpentine first, then improved chip by chip
    for c, slots in enumerate(chip_slots_of):
        members = np.flatnonzero(chip_of == c)
        where[members] = np.array(slots, np.int64)[:len(members)]
    for c, slots in enumerate(chip_slots_of):
        members = np.flatnonzero(chip_of == c)
        local = np.full(len(cores), -1)
        local[members] = np.arange(len(members))
        xy = np.array(slots, np.int64)
        fixed = np.outer(host[members], xy.sum(axis=1))  # the input enters at tile (0, 0) of chip 0
        for a, b in ((rows, cols), (cols, rows)):  # traffic to other chips' cores, at their current tiles
            out = (local[a] >= 0) & (local[b] < 0)
            far = np.abs(xy[None, :, :] - where[b[out]][:, None, :]).sum(axis=2) * weights[out][:, None]
            np.add.at(fixed, local[a[out]], far)
        keep = (local[rows] >= 0) & (local[cols] >= 0)
        traffic = np.zeros((len(members), len(members)), np.int64)
        np.add.at(traffic, (local[rows[keep]], local[cols[keep]]), weights[keep])
        order = improve_placement(slots, traffic + traffic.T, fixed)
        where[members] = xy[order]
        for core_index, s in zip(members, order):
            core = cores[core_index]
            core.tile, core.chip = slots[s], c
            for i in core.blocks:
                blocks[i].tile, blocks[i].chip = core.tile, core.chip
    return crossing


def union_masks(into: list[Connection], src: str, starts: list[np.ndarray]) -> np.ndarray:
    """Per block of a split of the target: the neurons of ``src`` with a synapse into it, bool
    (blocks, *source shape)."""
    union = np.logical_or.reduce([c._mask_grid(starts) for c in into if c.source == src])
    return union.reshape(-1, *union.shape[len(starts):])


def block_fanout(into: list[Connection], src: str, starts: list[np.ndarray]) -> np.ndarray:
    """Per neuron of ``src``: the blocks of the target's split it reaches (from one conv chain's
    per-axis hits; else from the union of the chains' masks)."""
    from_src = [c for c in into if c.source == src]
    quick = from_src[0].block_fanout(starts) if len(from_src) == 1 else None
    return quick if quick is not None else union_masks(into, src, starts).sum(axis=0)


def block_pairs(into: list[Connection], src: str, starts: list[np.ndarray],
                source_starts: list[np.ndarray] | None) -> np.ndarray:
    """(target blocks, source blocks): neurons of each block of ``src`` (split by
    ``source_starts``; None: one column, all of it) with a synapse into each target block."""
    from_src = [c for c in into if c.source == src]
    quick = from_src[0].block_pairs(starts, source_starts) if len(from_src) == 1 else None
    if quick is not None:
        return quick
    union = union_masks(into, src, starts)
    if source_starts is None:
        return union.reshape(len(union), -1).sum(axis=1, keepdims=True)
    return grid_sum(union.astype(np.int64), source_starts, 1).reshape(len(union), -1)


def own_cores(blocks: list) -> list[Core]:
    """One core per block."""
    for b in blocks:
        b.core = b.index
    return [Core(b.index, [b.index], [b.layer], 0, (0, 0), dict(b.usage), dict(b.memory)) for b in blocks]


def share_cores(blocks: list, chip: ChipSpec) -> list[Core]:
    """Pack the blocks onto cores: several blocks share a core when the sums of their uses stay
    inside every per-core limit (each keeps its own input axons, synapses and routing entries).

    First-fit decreasing on the vector of use / limit: blocks in order of their largest share,
    each onto the open core where it fits and whose largest share becomes the largest (best
    fit), or onto a new core."""
    lim = limits(chip)
    keys = list(lim)
    use = np.array([[{**b.usage, **b.memory}[k] for k in keys] for b in blocks], np.int64).reshape(-1, len(keys))
    cap = np.array([lim[k] for k in keys], np.int64)
    frac = use / cap
    loads = np.zeros((len(blocks), len(keys)), np.int64)  # of the opened cores, the first ``opened`` rows
    opened = 0
    for i in np.lexsort((-frac.sum(axis=1), -frac.max(axis=1))):
        new = loads[:opened] + use[i]
        ok = np.flatnonzero((new <= cap).all(axis=1))
        if len(ok):
            j = int(ok[(new[ok] / cap).max(axis=1).argmax()])
        else:
            j, opened = opened, opened + 1
        loads[j] += use[i]
        blocks[i].core = j
    # cores numbered by their first block, so a network of unshared layers keeps its order
    held: dict[int, list] = {}
    for b in blocks:
        held.setdefault(b.core, []).append(b)
    cores = []
    for new, group in enumerate(held.values()):
        for b in group:
            b.core = new
        cores.append(Core(new, [b.index for b in group], list(dict.fromkeys(b.layer for b in group)), 0, (0, 0),
                          {k: sum(b.usage[k] for b in group) for k in USAGE_KEYS},
                          {k: sum(b.memory[k] for b in group) for k in group[0].memory}))
    return cores


def network_bound(layers: list[LayerMapping]) -> int:
    """Cores at the least with shared cores allowed: per resource, the layers' floors on their
    cores' worth add up (``bound.layer_bounds``); and no layer touches fewer cores than its own
    bound (its uses must fit in the cores that hold it; its largest block caps each)."""
    if not layers:
        return 0
    keys = layers[0].shares.keys()
    summed = max(math.ceil(sum(lm.shares[k] for lm in layers) - 1e-9) for k in keys)
    return max(1, summed, *(lm.lower_bound for lm in layers))
