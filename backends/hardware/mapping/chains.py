"""Connections: the synapse chains between spike sources and neuron layers, folded.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from backends.hardware.spec import ChipSpec
from backends.ir.integer import IntNetwork, IntNeuron, IntProduct, IntSynapse, message_bits
from n2c.errors import MappingError
from n2c.fixed_point import EXACT_FLOAT32, WEIGHT_BITS
from n2c.neurons.readout import KIND as READOUT


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
        if syn.in_slice is not None:  # reads only channels [a, b) of its input
            chans[:, np.r_[0:syn.in_slice[0], syn.in_slice[1]:c_in]] = 0
    return [chans] + [_window(o, n, s, p, d, k) for o, n, s, p, d, k in
                      zip((h_out, w_out), (h_in, w_in), syn.stride, syn.padding, dilation, kernel)]


def row_bits(n, chip: ChipSpec, w: int, d: int) -> np.ndarray:
    """bits(n) = Σ over blocks of ≤ B synapses of W·⌈(n_blk·(w + d + t) + H) / W⌉ (0 for n = 0)."""
    b, h, word = chip.int("synapse_block_size"), chip.int("synapse_block_header_bits"), chip.int("synapse_word_bits")
    per = w + d + chip.int("tag_bits")
    full, rest = np.divmod(np.asarray(n, np.int64), b)
    words = full * -(-(b * per + h) // word) + (rest > 0) * -(-(rest * per + h) // word)
    return words * word


def split_starts(shape: tuple, split) -> list[np.ndarray]:
    """First index of each contiguous slice, per axis: a count k gives near-equal slices
    (⌊i·n/k⌋); an array of starts is its own."""
    return [np.arange(k) * n // k if np.ndim(k) == 0 else np.asarray(k, np.int64) for n, k in zip(shape, split)]


def split_slices(shape: tuple, split) -> list[tuple[slice, ...]]:
    """Blocks of a split in C order."""
    edges = [np.append(s, n) for s, n in zip(split_starts(shape, split), shape)]
    return [tuple(slice(int(e[i]), int(e[i + 1])) for e, i in zip(edges, idx))
            for idx in np.ndindex(*(len(e) - 1 for e in edges))]


def grid_sum(x: np.ndarray, starts: list[np.ndarray], first_axis: int = 0) -> np.ndarray:
    """Sums of ``x`` over every block (axes from ``first_axis`` on)."""
    for axis, s in enumerate(starts, first_axis):
        x = np.add.reduceat(x, s, axis=axis)
    return x


class BlockSums:
    """Sums of an array over the blocks of any split, from its running totals (a summed-area
    table): O(blocks) per split instead of a pass over the array."""

    def __init__(self, x: np.ndarray):
        self.total = np.pad(np.asarray(x, np.int64), [(1, 0)] * np.ndim(x))
        for axis in range(np.ndim(x)):
            np.cumsum(self.total, axis=axis, out=self.total)
        self.shape = np.shape(x)

    def of(self, starts: list[np.ndarray]) -> np.ndarray:
        edges = [np.append(s, n) for s, n in zip(starts, self.shape)]
        corners = self.total[np.ix_(*edges)]
        for axis in range(len(edges)):
            corners = np.diff(corners, axis=axis)
        return corners


def outer(vectors: list[np.ndarray]) -> np.ndarray:
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
    weight_bits: int = WEIGHT_BITS  # of the integer network's format
    _axes: list | None = field(default=None, init=False, repr=False)  # per-axis 0/1 maps (conv, pool)
    _dense: np.ndarray | None = field(default=None, init=False, repr=False)  # (targets, sources) bool
    _running: np.ndarray | None = field(default=None, init=False, repr=False)  # cumsum of _dense over targets
    _memo: dict = field(default_factory=dict, init=False, repr=False)  # per-axis results by (what, axis, starts)

    def __post_init__(self):
        kinds = [s.kind for s in self.chain]
        if not kinds or any(k != "sumpool" for k in kinds[:-1]):
            raise MappingError(f"layer '{self.target}': synapse chain {' -> '.join(kinds) or '(none)'} from "
                           f"'{self.source}' is not supported; use sum-pools followed by at most one conv or dense")
        pools = self.chain[:-1] if kinds[-1] == "dense" else self.chain
        # path counts per axis, in float64 (exact for counts < 2^53; BLAS, where int64 matmul is not)
        axes = None
        for syn in pools:  # the first synapse's maps as they are (no product with an identity)
            maps = [m.astype(np.float64) for m in _axis_maps(syn)]
            axes = maps if axes is None else [m @ a for m, a in zip(maps, axes)]
        if kinds[-1] != "dense":
            self._axes = [a > 0 for a in axes]
            return
        last = self.chain[-1]
        paths = (last.full_weight() != 0).astype(np.float64).reshape(-1, *last.in_shape)
        for axis, a in enumerate(axes or []):
            paths = np.moveaxis(np.tensordot(paths, a.astype(np.float64), axes=([axis + 1], [0])), -1, axis + 1)
        self._dense = paths.reshape(len(paths), -1) > 0

    @property
    def _weight_bits(self) -> int:
        return self.weight_bits if self.chain[-1].kind != "sumpool" else 1

    def _delay_bits(self, chip: ChipSpec) -> int:
        delayed = any(s.delay is not None and np.any(s.delay != 0) for s in self.chain)
        return chip.int("delay_bits") if delayed else 0

    def receptive_mask(self, block: tuple[slice, ...]) -> np.ndarray:
        """Source neurons with a synapse into the target block (bool, ``source_shape``)."""
        if self._axes is not None:
            return outer([a[s].any(axis=0) for a, s in zip(self._axes, block)])
        rows = self._dense.reshape(*self.target_shape, -1)[block]
        return rows.reshape(-1, rows.shape[-1]).any(axis=0).reshape(self.source_shape)

    def synapse_counts(self, active: np.ndarray) -> np.ndarray:
        """Per target neuron i: Σ_j active_j · (stored synapses j→i), per source neuron (one row per
        bit plane is not multiplied in). Conv and pool chains store one folded synapse per
        connected pair; a dense chain stores dense rows, counted here as for one core: every source
        j that reaches the layer has a synapse into every target.

        ``active`` (..., *source_shape) → (..., *target_shape), float. Conv chains apply their
        per-axis maps one axis at a time: a channel map of all ones (a full conv) is a sum, an
        identity (pooling, depthwise) nothing, and the result along such an axis a broadcast view.
        Exact: float32 where every sum stays below 2^24, float64 otherwise."""
        active = np.asarray(active)
        nd = len(self.source_shape)
        lead = active.shape[:active.ndim - nd]
        if self._axes is None:
            per = active.reshape(*lead, -1).astype(np.float64) @ self._dense.any(axis=0).astype(np.float64)
            return np.broadcast_to(per.reshape(*lead, *[1] * len(self.target_shape)), (*lead, *self.target_shape))
        fan_in = math.prod(int(a.sum(axis=1).max(initial=0)) for a in self._axes)
        exact32 = float(np.abs(active).max(initial=0)) * fan_in < EXACT_FLOAT32
        x = torch.from_numpy(np.asarray(active, np.float32 if exact32 else np.float64))
        widths = []
        for axis, a in enumerate(self._axes, len(lead)):
            if a.shape[0] == a.shape[1] and (np.diag(a).all() and a.sum() == len(a)):
                widths.append(a.shape[0])  # identity: unchanged
            elif a.all():
                x = x.sum(dim=axis, keepdim=True)  # every source to every target: one sum, broadcast
                widths.append(a.shape[0])
            else:
                m = torch.from_numpy(a).to(x.dtype)
                if axis == x.ndim - 1:
                    x = x @ m.T
                elif axis == x.ndim - 2:
                    x = m @ x
                else:
                    x = torch.movedim(torch.movedim(x, axis, -1) @ m.T, -1, axis)
                widths.append(a.shape[0])
        return x.expand(*lead, *widths).numpy()

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
        grid = self._dense_hits(starts)
        return grid.reshape(*grid.shape[:-1], *self.source_shape)

    def _per_axis(self, what: str, axis: int, starts: np.ndarray, compute):
        """``compute()`` for one axis's starts, remembered: a partition tries every combination of
        the axes' candidate cuts, so each axis's cut recurs many times."""
        key = (what, axis, np.asarray(starts).tobytes())
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def _axis_sources(self, axis: int, starts: np.ndarray) -> np.ndarray:
        """Per slice of the cut along ``axis``: how many source positions on that axis reach it."""
        a = self._axes[axis]

        def count():
            # every target reads the same sources (a conv's channels, or a slice of them): no per-slice work
            if self._per_axis("same rows", axis, b"", lambda: bool((a == a[0]).all())):
                return np.full(len(starts), int(a[0].sum()), np.int64)
            # one source each, its own (an identity or residual connection's channels): the slice lengths
            if self._per_axis("identity", axis, b"", lambda: a.shape[0] == a.shape[1] and int(a.sum()) == len(a)
                              and bool(np.diagonal(a).all())):
                return np.diff(np.append(starts, len(a)))
            return (np.add.reduceat(a.astype(np.int32), starts, axis=0) > 0).sum(axis=1)
        return self._per_axis("sources", axis, starts, count)

    def _axis_hits(self, axis: int, starts: np.ndarray) -> np.ndarray:
        """Conv chain: per slice of the cut along ``axis``, the source positions on that axis that
        reach it, bool (slices, source positions)."""
        a = self._axes[axis]
        return self._per_axis("hits", axis, starts, lambda: np.add.reduceat(a.astype(np.int32), starts, axis=0) > 0)

    def block_fanout(self, starts: list[np.ndarray]) -> np.ndarray | None:
        """Per source neuron: how many blocks of the target's split it reaches (conv chains,
        from the per-axis hits without a mask per block; None for dense chains)."""
        if self._axes is None:
            return None
        return outer([self._axis_hits(axis, s).sum(axis=0) for axis, s in enumerate(starts)])

    def block_pairs(self, starts: list[np.ndarray], source_starts: list[np.ndarray] | None) -> np.ndarray | None:
        """(target blocks, source blocks): how many neurons of each source block reach each target
        block (conv chains, from the per-axis hits; one column when ``source_starts`` is None, the
        source unsplit; None for dense chains)."""
        if self._axes is None:
            return None
        total = np.ones((1, 1), np.int64)
        for axis, s in enumerate(starts):
            hits = self._axis_hits(axis, s).astype(np.int64)
            per = hits.sum(axis=1, keepdims=True) if source_starts is None else \
                np.add.reduceat(hits, source_starts[axis], axis=1)
            total = (total[:, None, :, None] * per[None, :, None, :]).reshape(total.shape[0] * per.shape[0], -1)
        return total

    def _axons(self, starts: list[np.ndarray]) -> np.ndarray:
        """Input axons of every block: #sources reaching it · m."""
        if self._axes is not None:
            return outer([self._axis_sources(axis, s) for axis, s in enumerate(starts)]) * self.axons_per_source
        return self._dense_hits(starts).sum(axis=-1) * self.axons_per_source

    def _dense_hits(self, starts: list[np.ndarray]) -> np.ndarray:
        """Dense chain: (*split, sources) bool, source j reaches block b. A flat target (every
        dense layer of n2c) reads the differences of running totals at the block edges, so a
        split costs O(blocks · sources) once the totals are known, not O(targets · sources)."""
        if len(self.target_shape) != 1:
            return grid_sum(self._dense.reshape(*self.target_shape, -1).astype(np.int32), starts) > 0
        if self._running is None:
            self._running = np.zeros((len(self._dense) + 1, self._dense.shape[1]), np.int32)
            np.cumsum(self._dense, axis=0, dtype=np.int32, out=self._running[1:])
        edges = np.append(starts[0], len(self._dense))
        return self._running[edges[1:]] > self._running[edges[:-1]]

    def _synapse_bits(self, starts: list[np.ndarray], chip: ChipSpec) -> np.ndarray:
        """Synaptic memory of every block of a split (see the module docstring)."""
        w, d = self._weight_bits, self._delay_bits(chip)
        if w > chip.int("weight_bits"):
            syn = self.chain[-1]
            raise MappingError(f"layer '{self.target}': synapse '{syn.name}' has {w}-bit weights but {chip.name} stores "
                           f"at most {chip.int('weight_bits')}-bit weights; quantize to fewer bits or use another chip")
        if self._axes is None:
            sizes = outer([np.diff(np.append(s, n)) for s, n in zip(starts, self.target_shape)])
            return self._axons(starts) * row_bits(sizes, chip, w, d)
        if chip.int("conv_weight_sharing"):
            return self._shared_bits(starts, chip, w, d)
        return self._unshared_bits(starts, chip, w, d)

    def kernel_entries(self) -> tuple[int, int]:
        """(groups, E) of a conv or pool chain: its folded kernel has E = (Cin/g · KH · KW) · m
        entries per output channel (sum-pool then conv: extent d·sp·(k−1) + kp, stride s·sp)."""
        weighted = self.chain[-1] if self.chain[-1].kind == "conv" else None
        groups = weighted.groups if weighted else self.target_shape[0]
        cin_per_group = weighted.weight.shape[1] if weighted else 1
        extent, stride = [1, 1], [1, 1]
        for syn in self.chain:
            kernel = syn.weight.shape[2:] if syn.kind == "conv" else syn.kernel
            dil = syn.dilation if syn.kind == "conv" else (1, 1)
            for a in range(2):
                extent[a] += stride[a] * dil[a] * (kernel[a] - 1)
                stride[a] *= syn.stride[a]
        return groups, cin_per_group * extent[0] * extent[1] * self.axons_per_source

    def _shared_bits(self, starts, chip, w, d) -> np.ndarray:
        """Kernel once per core: Σ_groups touched E · bits(block channels in the group)."""
        c_out = self.target_shape[0]
        groups, entries = self.kernel_entries()
        ends = np.append(starts[0], c_out)

        def per_chunk():
            if groups == 1:  # one group: a row of the chunk's channels per kernel entry
                return entries * row_bits(np.diff(ends), chip, w, d)
            return np.array([int((entries * row_bits(np.bincount(np.arange(a, b) // (c_out // groups)), chip, w,
                                                     d)).sum()) for a, b in zip(ends[:-1], ends[1:])])
        chunks = self._per_axis(f"shared{w},{d}", 0, starts[0], per_chunk)
        return np.broadcast_to(chunks.reshape(-1, 1, 1), tuple(len(s) for s in starts)).copy()

    def _unshared_bits(self, starts, chip, w, d) -> np.ndarray:
        """Each axon stores a row of its n connected targets in the block: Σ_j m · bits(n_j)."""
        counts = [self._per_axis("counts", axis, s, lambda a=a, s=s: np.add.reduceat(a.astype(np.int64), s, axis=0))
                  for axis, (a, s) in enumerate(zip(self._axes, starts))]
        out = np.zeros(tuple(len(s) for s in starts), np.int64)
        for idx in np.ndindex(*out.shape):
            n = outer([c[i] for c, i in zip(counts, idx)])
            out[idx] = int(row_bits(n, chip, w, d).sum()) * self.axons_per_source
        return out

    def _source_floor(self) -> int:
        """Input axons the layer needs over all its cores at the least: every source neuron with a
        synapse into it enters at least one core, on ``axons_per_source`` axons."""
        if self._axes is not None:
            reached = math.prod(int(a.any(axis=0).sum()) for a in self._axes)
        else:
            reached = int(self._dense.any(axis=0).sum())
        return reached * self.axons_per_source

    def _synapse_floor(self, chip: ChipSpec) -> int:
        """A lower bound on the layer's synapse bits over all splits: every source's row (shared
        conv: every kernel entry's row) of n synapses costs at least ``least_bits(n)`` however
        the targets are cut."""
        w, d = self._weight_bits, self._delay_bits(chip)
        if self._axes is None:
            fan = self._dense.sum(axis=0)
        elif chip.int("conv_weight_sharing"):
            groups, entries = self.kernel_entries()
            return entries * groups * int(least_bits(self.target_shape[0] // groups, chip, w, d))
        else:
            fan = outer([a.sum(axis=0) for a in self._axes]).ravel()
        return int(least_bits(fan, chip, w, d).sum()) * self.axons_per_source


def least_bits(n, chip: ChipSpec, w: int, d: int) -> np.ndarray:
    """A floor on Σ_p bits(n_p) over every way to cut a row of n synapses into parts n_p:
    ⌈n · min_{1≤k≤n} bits(k)/k⌉ (bits is not superadditive: word rounding can make small parts
    cheaper per synapse than one long row)."""
    n = np.asarray(n, np.int64)
    top = int(n.max()) if n.size else 0
    if top == 0:
        return np.zeros_like(n)
    k = np.arange(1, top + 1)
    cost = row_bits(k, chip, w, d)
    best = np.zeros(top + 1, np.int64)  # best[n]: the k ≤ n of least bits(k)/k
    best[1] = 1
    for i in range(2, top + 1):  # compare bits(i)/i with bits(b)/b exactly: bits(i)·b < bits(b)·i
        b = best[i - 1]
        best[i] = i if cost[i - 1] * b < cost[b - 1] * i else b
    kk = np.maximum(best[n], 1)
    return np.where(n > 0, -(-n * cost[kk - 1] // kk), 0)


def message_width(bits: int, chip: ChipSpec) -> int:
    """Bit planes per message: m when m exceeds the chip's graded spike width, else 1."""
    return bits if bits > chip.int("graded_spike_bits") else 1


def compartments(neuron: IntNeuron, chip: ChipSpec) -> int:
    return 1 if neuron.neuron_kind is READOUT else message_width(message_bits(neuron), chip)


def product_connection(prod: IntProduct, neuron: IntNeuron, chip: ChipSpec, weight_bits: int) -> Connection:
    """An off-core product's currents into its neuron layer: one axon per neuron (per bit plane of
    its 24-bit current), a one-to-one synapse of weight 1."""
    shape = tuple(neuron.shape)
    if len(shape) != 3:
        raise MappingError(f"layer '{neuron.name}': a product's neuron layer must be (C, H, W), got {shape}")
    syn = IntSynapse(f"{prod.name}_in", "conv", prod.name, shape, shape, weight=np.ones((shape[0], 1, 1, 1), np.int64),
                     groups=shape[0])
    return Connection(prod.name, neuron.name, [syn], shape, shape, message_width(prod.message_bits, chip), weight_bits)


def connections(net: IntNetwork, chip: ChipSpec) -> list[Connection]:
    """Every (source, neuron) connection, synapse chains folded, in topological order."""
    layers = net.by_name()
    return [c for neuron in net.layers if isinstance(neuron, IntNeuron)
            for c in connections_into(net, neuron, chip, layers)]


def connections_into(net: IntNetwork, neuron: IntNeuron, chip: ChipSpec, layers: dict | None = None
                     ) -> list[Connection]:
    """The connections into one neuron layer (``layers``: ``net.by_name()``, when known)."""
    layers = layers or net.by_name()
    out = []
    for name in neuron.inputs:
        if isinstance(layers[name], IntProduct):
            out.append(product_connection(layers[name], neuron, chip, net.fmt.weight_bits))
            continue
        chain = []
        while isinstance(layers[name], IntSynapse):
            chain.insert(0, layers[name])
            name = layers[name].input
        src = layers[name]
        bits = net.source.bits if src is net.source else message_bits(src)
        out.append(Connection(name, neuron.name, chain, tuple(src.shape), tuple(neuron.shape),
                              message_width(bits, chip), net.fmt.weight_bits))
    return out
