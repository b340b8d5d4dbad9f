"""Map a quantized network onto the cores and chips of a chip spec.

Every spiking layer (``IntNeuron``) is cut into rectangular blocks, one block per core, so that
every per-core limit of the spec holds; the input (``IntSource``) is not placed: the host injects
its messages, which enter the mesh at tile (0, 0) of chip 0. Cores are then placed on the mesh.

Network model
    A *connection* runs from a spike source (the input or a neuron layer) to a neuron layer
    through a chain of synapse layers (``conv``, ``dense``, ``sumpool→conv``, ``sumpool→dense``,
    ``sumpool``). The chain is folded into one connection: a sum-pool's sums are realized by the
    next layer's synapses (as n2c's netx export does), so ``sumpool→dense`` has the pre-pool
    neurons as fan-in. Source j has a synapse into target i when a path j→i exists through the
    chain (dense: through a nonzero weight; conv: through the kernel window and the groups).

Bit-plane messages (a model assumption of n2c)
    A source whose message is m = ``message_bits`` bits wide, with m above the chip's
    ``graded_spike_bits`` (Loihi 1: binary spikes), sends m binary bit-plane spikes: the sending
    neuron uses m compartments, and each destination core needs m input axons and m synapse rows
    per source neuron. Otherwise a neuron uses one compartment and one axon. Readout neurons send
    nothing (the host reads them) and use one compartment.

Per-core usage of a block
    neurons           = block size · compartments per neuron
    input_axons       = Σ_connections (#sources with a synapse into the block) · m
    synapse_bits      = Σ_axons bits(n), the nengo-loihi rule for an axon with n synapses:
                        bits(n) = Σ_{blocks of ≤ B synapses} W·⌈(n_blk·(w + d + t) + H) / W⌉
                        (B block size, H header bits, W word bits, t tag bits, d delay bits when
                        the chain has a nonzero delay, w = 8 weighted / 1 sum-pool only)
        dense chain:  every axon reaching the block stores a dense row, n = block size
        conv, shared: the folded kernel is stored once per core: per group touched,
                      (Cin/groups · KH · KW) · m entries of bits(block channels in the group);
                      sum-pool then conv folds to extent d·sp·(k−1) + kp, stride s·sp;
                      a sum-pool alone is a depthwise ones kernel (w = 1)
        conv, unshared: each axon stores a row of its n connected targets in the block
    neuron_state_bits = neurons · neuron_state_bits
    output_fanout     = Σ_{neurons of the block} (#destination cores it has a synapse into) ·
                        compartments;  routing_bits = output_fanout · routing_entry_bits
    memory            : per memory pool, Σ of the uses it holds ≤ its bits

Partition
    Layers are cut consumers first (reverse topological order), so fan-out is known. A split is a
    count per dimension with near-equal contiguous slices; only counts giving distinct chunk
    sizes are tried. The split with the fewest cores whose every core fits wins (ties: fewer input
    axons in total, then the first in lexicographic order). All usages shrink with the block, so
    a layer fits iff one neuron per core fits; otherwise ``MappingError`` names the layer and limit.

Lower bound
    Per layer, max over resources of ⌈total / per-core capacity⌉ with totals of the unsplit
    layer: compartments, output fan-out edges and, per memory pool, its uses (synapses of the
    whole layer in one block; for a dense chain Σ_j bits(fan-out of j), which equals it when the
    weights have no zeros and stays a bound when they do). The network's bound is the sum over
    layers, since a core holds one layer (as Lava and nengo-loihi place).

Placement (a heuristic for hops)
    Cores in topological order follow a serpentine walk over each chip's tiles (rows of
    ``mesh_tiles_x`` tiles, alternating direction, ``cores_per_tile`` slots per tile, the first
    ``cores_per_chip`` slots of a chip usable); chip i occupies x ∈ [i·tiles_x, (i+1)·tiles_x).
    A deterministic local search then swaps the contents of two slots (a core, or an empty slot)
    while that lowers  Σ_{core pairs} traffic · (|Δx| + |Δy|)  + Σ_cores host traffic · (x + y),
    traffic being the fan-out edges between the two cores (host: input axons fed by the input).
    Passes over all cores stop when one gains under 1 % of the cost, after 20 passes, or when
    the work (passes · cores · (traffic pairs + slots)) would exceed 2·10⁸. Hop minimization
    is a heuristic: it finds at best a local optimum.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from backends.hardware.spec import ChipSpec
from backends.quantize import IntNetwork, IntNeuron, IntSynapse, message_bits
from n2c.errors import MappingError
from n2c.fixed_point import WEIGHT_BITS
from n2c.neurons.readout import KIND as READOUT

USAGE_KEYS = ("neurons", "input_axons", "output_fanout", "synapse_bits", "neuron_state_bits", "routing_bits")
POOL_USE = {"synapses": "synapse_bits", "neuron_state": "neuron_state_bits", "routing": "routing_bits"}
LIMIT_KEYS = {"neurons": "neurons_per_core", "input_axons": "input_axons_per_core",
              "output_fanout": "output_fanout_per_core"}
LABELS = {"neurons": "compartments", "input_axons": "input axons", "output_fanout": "output fan-out edges"}
HINTS = {"neurons": "use narrower messages or a chip with graded spikes",
         "input_axons": "give it fewer inputs (a pooling stage before it, a smaller previous layer) "
                        "or use a chip with more input axons per core",
         "output_fanout": "give its outputs fewer consumers or use a chip with more fan-out per core"}
MAX_PASSES = 20  # local search: at most this many passes over all cores,
MIN_GAIN = 100  # ... each lowering the hop cost by at least 1/MIN_GAIN of it,
WORK = 2 * 10 ** 8  # ... and at most about this many array-element operations


def _window(n_out: int, n_in: int, stride: int, pad: int, dilation: int, kernel: int) -> np.ndarray:
    """Paths along one axis: M[o, i] = #{k < kernel : i = o·stride − pad + dilation·k, 0 ≤ i < n_in}."""
    i = np.arange(n_out)[:, None] * stride - pad + dilation * np.arange(kernel)[None, :]
    o = np.broadcast_to(np.arange(n_out)[:, None], i.shape)
    ok = (i >= 0) & (i < n_in)
    m = np.zeros((n_out, n_in), np.int64)
    np.add.at(m, (o[ok], i[ok]), 1)
    return m


def _groups(c_out: int, c_in: int, groups: int) -> np.ndarray:
    """Channels: M[co, ci] = 1 when both lie in the same group."""
    return (np.arange(c_out)[:, None] // (c_out // groups) == np.arange(c_in)[None, :] // (c_in // groups)).astype(np.int64)


def _axis_maps(syn: IntSynapse) -> list[np.ndarray]:
    """Per-axis path matrices (C, H, W) of a conv or sum-pool layer."""
    (c_in, h_in, w_in), (c_out, h_out, w_out) = syn.in_shape, syn.out_shape
    if syn.kind == "sumpool":
        kernel, dilation, chans = syn.kernel, (1, 1), np.eye(c_in, dtype=np.int64)
    else:
        kernel, dilation, chans = syn.weight.shape[2:], syn.dilation, _groups(c_out, c_in, syn.groups)
    return [chans] + [_window(o, n, s, p, d, k) for o, n, s, p, d, k in
                      zip((h_out, w_out), (h_in, w_in), syn.stride, syn.padding, dilation, kernel)]


def _row_bits(n, chip: ChipSpec, w: int, d: int) -> np.ndarray:
    """bits(n) = Σ over blocks of ≤ B synapses of W·⌈(n_blk·(w + d + t) + H) / W⌉ (0 for n = 0)."""
    b, h, word = chip.int("synapse_block_size"), chip.int("synapse_block_header_bits"), chip.int("synapse_word_bits")
    per = w + d + chip.int("tag_bits")
    full, rest = np.divmod(np.asarray(n, np.int64), b)
    words = full * -(-(b * per + h) // word) + (rest > 0) * -(-(rest * per + h) // word)
    return words * word


def _starts(shape: tuple, split: tuple) -> list[np.ndarray]:
    """First index of each near-equal contiguous slice: ⌊i·n/k⌋."""
    return [np.arange(k) * n // k for n, k in zip(shape, split)]


def _slices(shape: tuple, split: tuple) -> list[tuple[slice, ...]]:
    """Blocks of a split in C order."""
    edges = [np.append(s, n) for s, n in zip(_starts(shape, split), shape)]
    return [tuple(slice(int(e[i]), int(e[i + 1])) for e, i in zip(edges, idx)) for idx in np.ndindex(*split)]


def _grid_sum(x: np.ndarray, starts: list[np.ndarray], first_axis: int = 0) -> np.ndarray:
    """Sums of ``x`` over every block (axes from ``first_axis`` on)."""
    for axis, s in enumerate(starts, first_axis):
        x = np.add.reduceat(x, s, axis=axis)
    return x


def _outer(vectors: list[np.ndarray]) -> np.ndarray:
    """Outer product of one vector per axis."""
    out = np.ones((), vectors[0].dtype)
    for v in vectors:
        out = np.multiply.outer(out, v)
    return out


@dataclass
class Connection:
    """Source layer → target neuron layer through a folded synapse chain."""
    source: str
    target: str
    chain: list
    source_shape: tuple
    target_shape: tuple
    axons_per_source: int
    _axes: list | None = field(default=None, init=False, repr=False)  # per-axis 0/1 maps (conv, pool)
    _dense: np.ndarray | None = field(default=None, init=False, repr=False)  # (targets, sources) bool

    def __post_init__(self):
        kinds = [s.kind for s in self.chain]
        if not kinds or any(k != "sumpool" for k in kinds[:-1]):
            raise MappingError(f"layer '{self.target}': synapse chain {' -> '.join(kinds) or '(none)'} from "
                           f"'{self.source}' is not supported; use sum-pools followed by at most one conv or dense")
        pools = self.chain[:-1] if kinds[-1] == "dense" else self.chain
        axes = [np.eye(n, dtype=np.int64) for n in self.chain[0].in_shape] if pools else None
        for syn in pools:
            axes = [m @ a for m, a in zip(_axis_maps(syn), axes)]
        if kinds[-1] != "dense":
            self._axes = [a > 0 for a in axes]
            return
        last = self.chain[-1]
        paths = (last.weight != 0).astype(np.float64).reshape(-1, *last.in_shape)
        for axis, a in enumerate(axes or []):
            paths = np.moveaxis(np.tensordot(paths, a.astype(np.float64), axes=([axis + 1], [0])), -1, axis + 1)
        self._dense = paths.reshape(len(paths), -1) > 0

    @property
    def _weight_bits(self) -> int:
        return WEIGHT_BITS if self.chain[-1].kind != "sumpool" else 1

    def _delay_bits(self, chip: ChipSpec) -> int:
        delayed = any(s.delay is not None and np.any(s.delay != 0) for s in self.chain)
        return chip.int("delay_bits") if delayed else 0

    def receptive_mask(self, block: tuple[slice, ...]) -> np.ndarray:
        """Source neurons with a synapse into the target block (bool, ``source_shape``)."""
        if self._axes is not None:
            return _outer([a[s].any(axis=0) for a, s in zip(self._axes, block)])
        rows = self._dense.reshape(*self.target_shape, -1)[block]
        return rows.reshape(-1, rows.shape[-1]).any(axis=0).reshape(self.source_shape)

    def synapse_counts(self, active: np.ndarray) -> np.ndarray:
        """Per target neuron i: Σ_j active_j · (stored synapses j→i), per source neuron (one row per
        bit plane is not multiplied in). Conv and pool chains store one folded synapse per
        connected pair; a dense chain stores dense rows, counted here as for one core: every source
        j that reaches the layer has a synapse into every target."""
        active = np.asarray(active, np.float64)
        nd = len(self.source_shape)
        if self._axes is not None:
            for axis, a in enumerate(self._axes, active.ndim - nd):
                active = np.moveaxis(np.tensordot(active, a.astype(np.float64), axes=([axis], [1])), -1, axis)
            return active
        lead = active.shape[:active.ndim - nd]
        per = active.reshape(*lead, -1) @ self._dense.any(axis=0).astype(np.float64)
        return np.broadcast_to(per.reshape(*lead, *[1] * len(self.target_shape)), (*lead, *self.target_shape)).copy()

    def _stored_synapses(self) -> int:
        """Synapses of the folded connection (pairs j→i as ``synapse_counts`` counts them) · m."""
        if self._axes is not None:
            pairs = math.prod(int(a.sum()) for a in self._axes)
        else:
            pairs = int(self._dense.any(axis=0).sum()) * len(self._dense)
        return pairs * self.axons_per_source

    def _mask_grid(self, starts: list[np.ndarray]) -> np.ndarray:
        """Receptive masks of every block of a split, bool (*split, *source_shape)."""
        if self._axes is not None:
            hit = [np.add.reduceat(a, s, axis=0) > 0 for a, s in zip(self._axes, starts)]
            nd = len(hit)
            out = np.ones((1,) * 2 * nd, bool)
            for axis, h in enumerate(hit):
                shape = [1] * 2 * nd
                shape[axis], shape[nd + axis] = h.shape
                out = out & h.reshape(shape)
            return out
        grid = _grid_sum(self._dense.reshape(*self.target_shape, -1).astype(np.int32), starts) > 0
        return grid.reshape(*grid.shape[:-1], *self.source_shape)

    def _axons(self, starts: list[np.ndarray]) -> np.ndarray:
        """Input axons of every block: #sources reaching it · m."""
        if self._axes is not None:
            return _outer([(np.add.reduceat(a, s, axis=0) > 0).sum(axis=1) for a, s in zip(self._axes, starts)]) \
                * self.axons_per_source
        grid = _grid_sum(self._dense.reshape(*self.target_shape, -1).astype(np.int32), starts) > 0
        return grid.sum(axis=-1) * self.axons_per_source

    def _synapse_bits(self, starts: list[np.ndarray], chip: ChipSpec) -> np.ndarray:
        """Synaptic memory of every block of a split (see the module docstring)."""
        w, d = self._weight_bits, self._delay_bits(chip)
        if w > chip.int("weight_bits"):
            syn = self.chain[-1]
            raise MappingError(f"layer '{self.target}': synapse '{syn.name}' has {w}-bit weights but {chip.name} stores "
                           f"at most {chip.int('weight_bits')}-bit weights; quantize to fewer bits or use another chip")
        if self._axes is None:
            sizes = _outer([np.diff(np.append(s, n)) for s, n in zip(starts, self.target_shape)])
            return self._axons(starts) * _row_bits(sizes, chip, w, d)
        if chip.int("conv_weight_sharing"):
            return self._shared_bits(starts, chip, w, d)
        return self._unshared_bits(starts, chip, w, d)

    def _shared_bits(self, starts, chip, w, d) -> np.ndarray:
        """Kernel once per core: Σ_groups touched (Cin/g · KH · KW) · m · bits(block channels in group)."""
        weighted = self.chain[-1] if self.chain[-1].kind == "conv" else None
        c_out = self.target_shape[0]
        groups = weighted.groups if weighted else c_out
        cin_per_group = weighted.weight.shape[1] if weighted else 1
        extent, stride = [1, 1], [1, 1]
        for syn in self.chain:
            kernel = syn.weight.shape[2:] if syn.kind == "conv" else syn.kernel
            dil = syn.dilation if syn.kind == "conv" else (1, 1)
            for a in range(2):
                extent[a] += stride[a] * dil[a] * (kernel[a] - 1)
                stride[a] *= syn.stride[a]
        entries = cin_per_group * extent[0] * extent[1] * self.axons_per_source
        ends = np.append(starts[0], c_out)
        per_chunk = [int((entries * _row_bits(np.bincount(np.arange(a, b) // (c_out // groups)), chip, w, d)).sum())
                     for a, b in zip(ends[:-1], ends[1:])]
        return np.broadcast_to(np.array(per_chunk).reshape(-1, 1, 1), tuple(len(s) for s in starts)).copy()

    def _unshared_bits(self, starts, chip, w, d) -> np.ndarray:
        """Each axon stores a row of its n connected targets in the block: Σ_j m · bits(n_j)."""
        counts = [np.add.reduceat(a.astype(np.int64), s, axis=0) for a, s in zip(self._axes, starts)]
        out = np.zeros(tuple(len(s) for s in starts), np.int64)
        for idx in np.ndindex(*out.shape):
            n = _outer([c[i] for c, i in zip(counts, idx)])
            out[idx] = int(_row_bits(n, chip, w, d).sum()) * self.axons_per_source
        return out

    def _synapse_floor(self, chip: ChipSpec) -> int:
        """A lower bound on the layer's synapse bits over all splits (module docstring)."""
        if self._axes is not None:
            return int(self._synapse_bits([np.zeros(1, np.int64)] * len(self.target_shape), chip).sum())
        fan = self._dense.sum(axis=0)
        w, d = self._weight_bits, self._delay_bits(chip)
        return int(_row_bits(fan, chip, w, d).sum()) * self.axons_per_source


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


@dataclass
class Mapping:
    chip: ChipSpec
    layers: list[LayerMapping]
    cores: list[Core]
    connections: list[Connection]
    chips: int
    lower_bound: int

    def limits(self) -> dict:
        """Per-core limits: neurons, input_axons, output_fanout and bits per memory pool."""
        return _limits(self.chip)

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
        return {"chip": self.chip.key, "chips": self.chips, "cores": len(self.cores),
                "lower_bound": self.lower_bound, "gap": len(self.cores) - self.lower_bound, "limits": self.limits(),
                "mesh": {"tiles_x": self.chip.mesh[0], "tiles_y": self.chip.mesh[1],
                         "cores_per_tile": self.chip.int("cores_per_tile"),
                         "cores_per_chip": self.chip.int("cores_per_chip")},
                "layers": [{"name": lm.name, "kind": lm.kind, "shape": list(lm.shape), "split": list(lm.split),
                            "cores": len(lm.cores), "first_core": lm.cores[0], "lower_bound": lm.lower_bound,
                            "binding": lm.binding, "compartments_per_neuron": lm.compartments_per_neuron,
                            "synapses": lm.synapses, **self._layer_totals(lm)} for lm in self.layers],
                "per_core": [{"index": c.index, "layer": c.layer, "block": [[s.start, s.stop] for s in c.block],
                              "chip": c.chip, "tile": list(c.tile), "usage": dict(c.usage), "memory": dict(c.memory),
                              "utilization": self.utilization(c)} for c in self.cores]}


    def _layer_totals(self, lm: LayerMapping) -> dict:
        cores = [self.cores[i] for i in lm.cores]
        return {"neurons": int(np.prod(lm.shape)), "synapse_bits": sum(c.usage["synapse_bits"] for c in cores),
                "input_axons_max": max(c.usage["input_axons"] for c in cores),
                "utilization_max": max(max(self.utilization(c).values()) for c in cores)}

def _limits(chip: ChipSpec) -> dict:
    return {**{k: chip.int(v) for k, v in LIMIT_KEYS.items()}, **{p.name: int(p.bits.value) for p in chip.memory}}


def _width(bits: int, chip: ChipSpec) -> int:
    """Bit planes per message: m when m exceeds the chip's graded spike width, else 1."""
    return bits if bits > chip.int("graded_spike_bits") else 1


def _compartments(neuron: IntNeuron, chip: ChipSpec) -> int:
    return 1 if neuron.neuron_kind is READOUT else _width(message_bits(neuron), chip)


def connections(net: IntNetwork, chip: ChipSpec) -> list[Connection]:
    """Every (source, neuron) connection, synapse chains folded, in topological order."""
    layers = net.by_name()
    out = []
    for neuron in (x for x in net.layers if isinstance(x, IntNeuron)):
        for name in neuron.inputs:
            chain = []
            while isinstance(layers[name], IntSynapse):
                chain.insert(0, layers[name])
                name = layers[name].input
            src = layers[name]
            bits = net.source.bits if src is net.source else message_bits(src)
            out.append(Connection(name, neuron.name, chain, tuple(src.shape), tuple(neuron.shape), _width(bits, chip)))
    return out


def _usage(neuron, comp, conns, fanout, split, chip) -> dict[str, np.ndarray]:
    """Usage grids (one entry per block) of a split."""
    starts = _starts(neuron.shape, split)
    sizes = _outer([np.diff(np.append(s, n)) for s, n in zip(starts, neuron.shape)])
    u = {"neurons": sizes * comp,
         "input_axons": sum((c._axons(starts) for c in conns), np.zeros(split, np.int64)),
         "output_fanout": _grid_sum(fanout, starts) * comp,
         "synapse_bits": sum((c._synapse_bits(starts, chip) for c in conns), np.zeros(split, np.int64))}
    u["neuron_state_bits"] = u["neurons"] * chip.int("neuron_state_bits")
    u["routing_bits"] = u["output_fanout"] * chip.int("routing_entry_bits")
    return u


def _memory(usage: dict, chip: ChipSpec) -> dict:
    """Bits per memory pool: Σ of the uses it holds."""
    return {p.name: sum(usage[POOL_USE[h]] for h in p.holds) for p in chip.memory}


def _over(usage: dict, chip: ChipSpec) -> dict:
    """Resources over their limit in some block: name → (largest use, limit)."""
    used = {**{k: usage[k] for k in LIMIT_KEYS}, **_memory(usage, chip)}
    return {k: (int(np.max(used[k])), lim) for k, lim in _limits(chip).items() if np.max(used[k]) > lim}


def _split_counts(n: int) -> list[int]:
    """Split counts k of n giving distinct largest chunks ⌈n/k⌉ (the smallest k for each)."""
    k = np.arange(1, n + 1)
    chunk = -(-n // k)
    return [int(x) for x in k[np.r_[True, chunk[1:] < chunk[:-1]]]]


def _fit_error(neuron, chip, over: dict) -> MappingError:
    needs = " and ".join(f"{used} {LABELS.get(k, 'bits of ' + k)} (limit {lim} per core)"
                         for k, (used, lim) in over.items())
    hint = HINTS.get(next(iter(over)), "give it fewer or narrower inputs or use a chip with more memory per core")
    return MappingError(f"layer '{neuron.name}' cannot fit one {chip.name} core: one neuron needs {needs}; {hint}")


def _partition(neuron, comp, conns, fanout, chip) -> tuple[tuple, dict]:
    """The fitting split with the fewest cores (ties: fewer input axons, then lexicographic)."""
    over = _over(_usage(neuron, comp, conns, fanout, tuple(neuron.shape), chip), chip)
    if over:  # one neuron per core is the finest split; every usage shrinks with the block
        raise _fit_error(neuron, chip, over)
    options = sorted(itertools.product(*map(_split_counts, neuron.shape)), key=lambda s: (math.prod(s), s))
    by_cores = (_fitting(neuron, comp, conns, fanout, group, chip)
                for _, group in itertools.groupby(options, key=math.prod))
    _, split, usage = min(next(fits for fits in by_cores if fits), key=lambda f: f[:2])
    return split, usage


def _fitting(neuron, comp, conns, fanout, splits, chip) -> list[tuple]:
    """(total input axons, split, usage) of every split that fits."""
    limit, fits = chip.int("neurons_per_core"), []
    for split in splits:
        if math.prod(-(-n // k) for n, k in zip(neuron.shape, split)) * comp > limit:
            continue
        usage = _usage(neuron, comp, conns, fanout, split, chip)
        if not _over(usage, chip):
            fits.append((int(usage["input_axons"].sum()), split, usage))
    return fits


def _lower_bound(neuron, comp, conns, fanout, chip) -> tuple[int, str]:
    """max over resources of ⌈unsplit total / per-core capacity⌉, and the binding resource."""
    n = math.prod(neuron.shape) * comp
    fan = int(fanout.sum()) * comp
    totals = {"neurons": n, "output_fanout": fan}
    use = {"synapse_bits": sum(c._synapse_floor(chip) for c in conns), "neuron_state_bits": n * chip.int("neuron_state_bits"),
           "routing_bits": fan * chip.int("routing_entry_bits")}
    totals.update(_memory(use, chip))
    limits = _limits(chip)
    need = {k: -(-v // limits[k]) for k, v in totals.items()}
    binding = max(need, key=need.get)
    return max(1, need[binding]), binding


def _serpentine(chip: ChipSpec, chips: int) -> list[tuple[int, int]]:
    """Global tile (x, y) of every usable core slot, in walk order, chip after chip."""
    tx, ty = chip.mesh
    slots = []
    for c in range(chips):
        walk = [(c * tx + (x if y % 2 == 0 else tx - 1 - x), y) for y in range(ty) for x in range(tx)]
        slots += [t for t in walk for _ in range(chip.int("cores_per_tile"))][:chip.int("cores_per_chip")]
    return slots


def _hop_cost(tiles: list, traffic: np.ndarray, host: np.ndarray) -> int:
    """Σ_{core pairs} traffic · Manhattan tile distance + Σ_cores host traffic · distance to (0, 0)."""
    xy = np.array(tiles, np.int64).reshape(-1, 2)
    dist = np.abs(xy[:, None, :] - xy[None, :, :]).sum(axis=2)
    return int((np.triu(traffic) * dist).sum() + (host * xy.sum(axis=1)).sum())


def _improve(slots: list, traffic: np.ndarray, host: np.ndarray) -> np.ndarray:
    """Local search: slot index of every core after best-improvement swaps, core by core.

    Swapping items u and v (cores or empty slots) changes the cost by
    Δ_v = Σ_{k≠u,v} (T_uk − T_vk)(D_vk − D_uk) + (h_u − h_v)(r_v − r_u)
        = a_v − c_u − c_v + b_v + 2·T_uv·D_uv + (h_u − h_v)(r_v − r_u),
    with T traffic, D the distance between the items' slots, r a slot's distance to the host
    tile, a_v = Σ_k T_uk·D_vk, b_v = Σ_k T_vk·D_uk and c_v = Σ_k T_vk·D_vk."""
    p, n = len(slots), len(traffic)
    rows, cols = np.nonzero(traffic)
    weights = traffic[rows, cols]
    first = np.searchsorted(rows, np.arange(n + 1))  # u's neighbours: cols[first[u]:first[u + 1]]
    h = np.zeros(p, np.int64)
    h[:n] = host
    xy = np.array(slots, np.int64)
    dist = np.abs(xy[:, None, :] - xy[None, :, :]).sum(axis=2)
    r = xy.sum(axis=1)
    pos = np.arange(p)  # slot of every item

    def b_of(d_u):  # b_v for every v, from d_u = D_u·
        return np.bincount(rows, weights * d_u[cols], minlength=p)

    def c_of(items):  # c_v for the given items (0 elsewhere)
        chosen = np.zeros(p, bool)
        chosen[items] = True
        sel = chosen[rows]
        return np.bincount(rows[sel], weights[sel] * dist[pos[rows[sel]], pos[cols[sel]]], minlength=p)

    c = c_of(np.arange(n))
    cost = c.sum() // 2 + (h * r[pos]).sum()
    for _ in range(max(1, min(MAX_PASSES, WORK // (n * (len(rows) + p))))):
        gain = 0
        for u in range(n):
            nbr, w = cols[first[u]:first[u + 1]], weights[first[u]:first[u + 1]]
            t_u = np.zeros(p, np.int64)
            t_u[nbr] = w
            d_u = dist[pos[u], pos]
            delta = dist[np.ix_(pos, pos[nbr])] @ w - c[u] - c + b_of(d_u) + 2 * t_u * d_u \
                + (h[u] - h) * (r[pos] - r[pos[u]])
            v = int(np.argmin(delta))
            if delta[v] < 0:
                pos[u], pos[v] = pos[v], pos[u]
                moved = np.concatenate([[u, v], nbr, cols[first[v]:first[v + 1]] if v < n else []]).astype(np.int64)
                c[moved] = c_of(moved)[moved]
                gain -= int(delta[v])
        if gain * MIN_GAIN <= cost:  # a pass that gains under 1/MIN_GAIN of the cost ends the search
            break
        cost -= gain
    return pos[:n]


def map_network(net: IntNetwork, chip: ChipSpec) -> Mapping:
    """Partition every neuron layer (consumers first), then place the cores on the mesh."""
    conns = connections(net, chip)
    neurons = [x for x in net.layers if isinstance(x, IntNeuron)]
    comp = {x.name: _compartments(x, chip) for x in neurons}
    fanout = {x.name: np.zeros(x.shape, np.int64) for x in neurons}
    masks, plans = {}, {}  # (source, target) → union masks (blocks, *source shape); name → (split, usage)
    for neuron in reversed(neurons):
        into = [c for c in conns if c.target == neuron.name]
        split, usage = _partition(neuron, comp[neuron.name], into, fanout[neuron.name], chip)
        plans[neuron.name] = (split, usage, *_lower_bound(neuron, comp[neuron.name], into, fanout[neuron.name], chip))
        starts = _starts(neuron.shape, split)
        for src in dict.fromkeys(c.source for c in into):
            union = np.logical_or.reduce([c._mask_grid(starts) for c in into if c.source == src])
            masks[src, neuron.name] = union.reshape(-1, *union.shape[len(split):])
            if src in fanout:
                fanout[src] += masks[src, neuron.name].sum(axis=0)
    layers, cores = [], []
    for neuron in neurons:
        split, usage, bound, binding = plans[neuron.name]
        memory = _memory(usage, chip)
        first = len(cores)
        for i, block in enumerate(_slices(neuron.shape, split)):
            idx = np.unravel_index(i, split)
            cores.append(Core(len(cores), neuron.name, block, 0, (0, 0), {k: int(usage[k][idx]) for k in USAGE_KEYS},
                              {k: int(v[idx]) for k, v in memory.items()}))
        synapses = sum(c._stored_synapses() for c in conns if c.target == neuron.name)
        layers.append(LayerMapping(neuron.name, neuron.kind, tuple(neuron.shape), split,
                                   list(range(first, len(cores))), bound, binding, comp[neuron.name], synapses))
    traffic, host = _traffic(net, layers, plans, masks, comp, conns, len(cores))
    chips = -(-len(cores) // chip.int("cores_per_chip"))
    slots = _serpentine(chip, chips)
    for core, s in zip(cores, _improve(slots, traffic, host)):
        core.tile = slots[s]
        core.chip = slots[s][0] // chip.mesh[0]
    return Mapping(chip, layers, cores, conns, chips, sum(lm.lower_bound for lm in layers))


def _traffic(net, layers, plans, masks, comp, conns, n) -> tuple[np.ndarray, np.ndarray]:
    """Fan-out edges between cores (symmetric) and from the host to each core."""
    by_name = {lm.name: lm for lm in layers}
    traffic, host = np.zeros((n, n), np.int64), np.zeros(n, np.int64)
    for (src, dst), union in masks.items():
        into = by_name[dst].cores
        if src == net.source.name:
            m = next(c.axons_per_source for c in conns if c.source == src and c.target == dst)
            host[into] += union.reshape(len(union), -1).sum(axis=1) * m
            continue
        starts = _starts(by_name[src].shape, plans[src][0])
        edges = _grid_sum(union.astype(np.int64), starts, 1).reshape(len(union), -1) * comp[src]
        traffic[np.ix_(into, by_name[src].cores)] += edges
    return traffic + traffic.T, host
