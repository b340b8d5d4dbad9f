"""A layer's lower bound in cores: no mapping that gives each core one rectangular block of one
layer uses fewer (given the cores of the layer's consumers, which fix its neurons' fan-out).

Two bounds, the larger wins:

Totals
    max over resources of ⌈unsplit total / per-core capacity⌉: compartments, input axons (every
    source neuron reaching the layer enters at least one core), output fan-out edges and, per
    memory pool, its uses (synapses of the whole layer in one block; for a dense chain
    Σ_j bits(fan-out of j), which equals it when the weights have no zeros and stays a bound
    when they do).

Largest block
    ⌈N / S⌉, S the most neurons one core can hold: the largest b₁·…·b_d over block shapes whose
    every resource fits at that resource's cheapest position in the layer (so no block of that
    shape fits anywhere when this test fails). Per shape, resource by resource:
        compartments      Π b · compartments per neuron
        input axons       Σ_conn m · Π_axis min_a |window of [a, a + b)|  (conv, pool: the
                          window of an axis depends on that axis alone), or, dense,
                          min_a max_{i ∈ [a, a+b)} fan-in_i
        synapse bits      shared conv: the kernel for b₀ channels (position-free for groups 1
                          and depthwise; otherwise m·E·(b₀·p + H·⌈b₀ / group size⌉));
                          unshared: m·(p · min synapses into the block + H · min axons / m);
                          dense: axons · bits(b);  p = w + d + t bits per synapse, H header bits
        fan-out           Π b · min_i fan-out_i;  state and routing bits follow
    This catches what the totals miss: a convolution whose block must hold the whole kernel
    per core (memory) while its halo of input axons caps the block's area.

With shared cores (``layer_bounds``' third value)
    Per resource, the layer takes at least max(total, N · least use per neuron over the block
    shapes that fit) / capacity cores' worth; these add up over layers (``network.network_bound``).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from backends.hardware.mapping.chains import outer, row_bits
from backends.hardware.mapping.usage import limits, memory_use


def layer_bounds(neuron, comp, conns, fanout, chip, achieved: int | None = None) -> tuple[int, str, dict[str, float]]:
    """The layer's bound alone and what binds it (:func:`lower_bound`), and its floors with
    shared cores (per resource, :func:`_shares`), from one pass over the block shapes.
    ``achieved``: the blocks of a mapping of the layer; the position-aware bound
    (:func:`_by_position`) is computed only when the others leave a gap to it."""
    count, ratio = _shape_grid(neuron, comp, conns, fanout, chip)
    totals = _totals(neuron, comp, conns, fanout, chip)
    bound, binding = _bound(neuron, totals, count, ratio, chip)
    if achieved is None or bound < achieved:
        tighter = _by_position(neuron, comp, conns, fanout, chip, count, ratio)
        if tighter > bound:
            bound, binding = tighter, f"{_largest(count, ratio)[1]} (by position)"
    return bound, binding, _shares(neuron, totals, count, ratio, chip)


def lower_bound(neuron, comp, conns, fanout, chip) -> tuple[int, str]:
    """The largest of the totals, largest-block and by-position bounds, and what binds it."""
    return layer_bounds(neuron, comp, conns, fanout, chip)[:2]


def _bound(neuron, totals, count, ratio, chip) -> tuple[int, str]:
    capacity = limits(chip)
    need = {k: -(-v // capacity[k]) for k, v in totals.items()}  # the totals bound
    binding = max(need, key=need.get)
    bound = max(1, need[binding])
    most, stops = _largest(count, ratio)
    by_block = -(-math.prod(neuron.shape) // most) if most else 0
    return (by_block, stops) if by_block > bound else (bound, binding)


def _totals(neuron, comp, conns, fanout, chip) -> dict[str, int]:
    """Per resource, a floor on the layer's total use over all its cores."""
    n = math.prod(neuron.shape) * comp
    fan = int(fanout.sum()) * comp
    totals = {"neurons": n, "output_fanout": fan, "input_axons": sum(c._source_floor() for c in conns)}
    use = {"synapse_bits": sum(c._synapse_floor(chip) for c in conns),
           "neuron_state_bits": n * chip.int("neuron_state_bits"),
           "routing_bits": fan * chip.int("routing_entry_bits")}
    totals.update(memory_use(use, chip))
    return totals


def largest_block(neuron, comp, conns, fanout, chip) -> tuple[int, str]:
    """S, the most neurons of the layer one core can hold (0 if not even one), and the resource
    that stops its block from growing by one along any axis (the most over its limit)."""
    return _largest(*_shape_grid(neuron, comp, conns, fanout, chip))


def _largest(count, ratio) -> tuple[int, str]:
    fits = _fits(ratio)
    if not fits.any():
        return 0, max(ratio, key=lambda k: ratio[k].flat[0])
    best = np.unravel_index(np.where(fits, count, 0).argmax(), count.shape)
    grown = [tuple(i + (a == axis) for a, i in enumerate(best)) for axis in range(count.ndim)
             if best[axis] + 1 < count.shape[axis]]
    over = {k: max((r[g] for g in grown), default=0.0) for k, r in ratio.items()}
    return int(count[best]), max(over, key=over.get)


def _shares(neuron, totals, count, ratio, chip) -> dict[str, float]:
    """Per resource r, a floor on the cores' worth of r the layer takes in any mapping, shared
    cores included: the larger of (unsplit total / capacity) and N · min over blocks that fit of
    (use of r / neurons) / capacity, since every block of every mapping fits a core."""
    n, fits, capacity = math.prod(neuron.shape), _fits(ratio), limits(chip)
    return {k: max(totals[k] / capacity[k], n * float((r[fits] / count[fits]).min()) if fits.any() else 0.0)
            for k, r in ratio.items()}


def _fits(ratio: dict) -> np.ndarray:
    """Block shapes whose every resource is within its limit."""
    return np.logical_and.reduce([r <= 1 for r in ratio.values()])


def _shape_grid(neuron, comp, conns, fanout, chip) -> tuple[np.ndarray, dict]:
    """Neurons of every block shape and its use of every resource over the limit (see above)."""
    shape = tuple(neuron.shape)
    sizes = [np.arange(1, n + 1, dtype=np.int64) for n in shape]
    count = outer(sizes)
    least_fan = int(fanout.min()) if fanout.size else 0
    use = {"neurons": count * comp, "input_axons": np.zeros(shape, np.int64),
           "synapse_bits": np.zeros(shape, np.int64), "output_fanout": count * least_fan * comp}
    for c in conns:
        axons, bits = _connection_floor(c, shape, chip)
        use["input_axons"] = use["input_axons"] + axons
        use["synapse_bits"] = use["synapse_bits"] + bits
    use["neuron_state_bits"] = use["neurons"] * chip.int("neuron_state_bits")
    use["routing_bits"] = use["output_fanout"] * chip.int("routing_entry_bits")
    used = {**{k: use[k] for k in ("neurons", "input_axons", "output_fanout")}, **memory_use(use, chip)}
    return count, {k: used[k] / lim for k, lim in limits(chip).items()}


# --- by position ---------------------------------------------------------------------------------
#
# Every block B of a (C, H, W) layer holds c_B channels at |sp(B)| positions, so the blocks number
# Σ_B 1 = Σ_p Σ_{B ∋ p} 1/|sp(B)| (p over positions, B over the blocks holding p). The blocks
# holding p cover its C channels (Σ c_B ≥ C) and each is at most s_p(c_B) positions, the most
# positions of a block of c_B channels that contains p and fits. So any mapping needs at least
# Σ_p g_p(C) blocks, g_p(C) = min Σ_k 1/s_p(c_k) over channel counts with Σ c_k ≥ C (a knapsack,
# :func:`_cover_cost`). It keeps channels whole (a core holding a conv's kernel for 128 channels
# may have room for few positions, and the channels it leaves over still need blocks of their
# own), which a bound from the largest block alone cannot. s_p is taken per class of positions:
# along each spatial axis, positions grouped by their distance to the nearer edge (a block near an
# edge reads fewer inputs through its window), a block shape fitting a class if it fits with the
# fewest inputs of any block of that shape touching the class; any s'_p ≥ s_p keeps the bound.
# Dense layers take the exact largest block instead (:func:`_dense_largest`).

EDGE_CLASSES = 8  # distance to the nearer edge: 0, 1, ..., 6, and 7 or more


def _edge_classes(n: int) -> list[np.ndarray]:
    d = np.minimum(np.minimum(np.arange(n), n - 1 - np.arange(n)), EDGE_CLASSES - 1)
    return [np.flatnonzero(d == k) for k in np.unique(d)]


def _reach(paths: np.ndarray) -> np.ndarray:
    """R[a, b - 1]: the inputs reached by outputs [a, a + b) (a large number where a + b > n)."""
    n, n_in = paths.shape
    a, b = np.arange(n)[:, None], np.arange(1, n + 1)[None, :]
    inside = a + b <= n
    far = np.iinfo(np.int64).max // 4
    if (paths == paths[0]).all():  # every output reads the same inputs (a full conv's channels)
        return np.where(inside, int(paths[0].sum()), far)
    lo, hi = paths.argmax(axis=1), n_in - paths[:, ::-1].argmax(axis=1)
    if (paths.any(axis=1).all() and (paths.sum(axis=1) == hi - lo).all() and (np.diff(lo) >= 0).all()
            and (np.diff(hi) >= 0).all() and (lo[1:] <= hi[:-1]).all()):  # sliding, overlapping intervals
        return np.where(inside, hi[np.minimum(a + b - 1, n - 1)] - lo[a], far)
    out = np.full((n, n), far, np.int64)
    reach = paths.copy()
    for size in range(1, n + 1):
        if size > 1:
            reach = reach[:-1] | paths[size - 1:]
        out[:n - size + 1, size - 1] = reach.sum(axis=1)
    return out


def _class_windows(reach: np.ndarray, members: np.ndarray) -> np.ndarray:
    """For b = 1..n: the fewest inputs of any window [a, a + b) that contains a member position."""
    n = len(reach)
    run = np.concatenate([[0], np.cumsum(np.isin(np.arange(n), members))])
    a = np.arange(n)[:, None]
    b = np.arange(1, n + 1)[None, :]
    touches = run[np.minimum(a + b, n)] - run[a] > 0
    return np.where(touches, reach, reach.max()).min(axis=0)


def _cover_cost(most: np.ndarray) -> float:
    """min Σ_k 1/most[c_k - 1] over channel counts c_k with Σ c_k ≥ C = len(most) (most[c - 1]:
    the most positions of a block of c channels; 0 where none fits): dynamic programme over the
    channels still to cover."""
    c = len(most)
    cost = np.where(most > 0, 1.0 / np.maximum(most, 1), np.inf)
    best, take = np.zeros(c + 1), np.arange(1, c + 1)
    for x in range(1, c + 1):
        best[x] = (best[np.maximum(x - take, 0)] + cost).min()
    return float(best[c])


def _by_position(neuron, comp, conns, fanout, chip, count, ratio) -> int:
    """Σ_p g_p(C) over classes of positions (see above), or 0 where it does not apply."""
    if any(c._axes is None for c in conns):
        if not all(c._axes is None for c in conns) or len(neuron.shape) != 1:
            return 0
        most = _dense_largest(neuron, comp, conns, fanout, chip, _largest(count, ratio)[0])
        return -(-math.prod(neuron.shape) // most) if most else 0
    shape = tuple(neuron.shape)
    if not conns or len(shape) < 2:
        return 0
    capacity, limit = limits(chip), chip.int("input_axons_per_core")
    axons_least = sum(_connection_floor(c, shape, chip)[0] for c in conns)
    others = _fits({k: r for k, r in ratio.items() if k != "input_axons"})
    header = 0 if chip.int("conv_weight_sharing") else chip.int("synapse_block_header_bits")  # bits per axon
    synapse_pools = [p.name for p in chip.memory if "synapses" in p.holds]
    reaches = [[_reach(a) for a in c._axes] for c in conns]
    spatial = np.broadcast_to(outer([np.arange(1, n + 1) for n in shape[1:]]), shape)  # positions per block shape
    per_axis = [[[shape[0], [_class_windows(r[0], np.arange(shape[0])) for r in reaches]]]]  # channels: one class
    for axis in range(1, len(shape)):
        groups: dict[bytes, list] = {}
        for members in _edge_classes(shape[axis]):
            windows = [_class_windows(r[axis], members) for r in reaches]
            groups.setdefault(b"".join(w.tobytes() for w in windows), [0, windows])[0] += len(members)
        per_axis.append(list(groups.values()))
    total, costs = 0.0, {}
    for combo in itertools.product(*per_axis[1:]):
        classes = (per_axis[0][0], *combo)
        axons = sum(outer([classes[axis][1][i] for axis in range(len(shape))]) * c.axons_per_source
                    for i, c in enumerate(conns))
        fits = others & (axons <= limit)
        for pool in synapse_pools:  # unshared kernels store a header per axon: more axons, more bits
            fits &= ratio[pool] + header * (axons - axons_least) / capacity[pool] <= 1
        most = np.where(fits, spatial, 0).reshape(shape[0], -1).max(axis=1)
        key = most.tobytes()
        if key not in costs:
            costs[key] = _cover_cost(most)
        total += math.prod(size for size, _ in combo) * costs[key]
    return math.ceil(total - 1e-9) if np.isfinite(total) else 0


def _dense_largest(neuron, comp, conns, fanout, chip, most: int) -> int:
    """The largest contiguous block of a flat layer read by dense chains that fits at some
    position, every resource counted exactly (input axons: the union of the sources reaching the
    block); at most ``most``, the largest block of the relaxed grid. Binary search: a block that
    fits holds blocks one smaller that fit."""
    capacity = limits(chip)
    n = neuron.shape[0]
    run_fan = np.concatenate([[0], np.cumsum(np.asarray(fanout, np.int64))])
    rows = []  # per connection: (running counts of sources reached, axons per source, weight bits, delay bits)
    for c in conns:
        c._dense_hits([np.zeros(1, np.int64)])  # fills c._running
        rows.append((c._running, c.axons_per_source, c._weight_bits, c._delay_bits(chip)))

    def fits(b: int) -> bool:
        a = np.arange(n - b + 1)
        axons, bits = 0, 0
        for running, m, w, d in rows:
            reached = (running[a + b] > running[a]).sum(axis=1) * m
            axons, bits = axons + reached, bits + reached * int(row_bits(b, chip, w, d))
        fan = (run_fan[a + b] - run_fan[a]) * comp
        use = {"neurons": b * comp, "input_axons": axons, "output_fanout": fan, "synapse_bits": bits,
               "neuron_state_bits": b * comp * chip.int("neuron_state_bits"),
               "routing_bits": fan * chip.int("routing_entry_bits")}
        used = {**{k: use[k] for k in ("neurons", "input_axons", "output_fanout")}, **memory_use(use, chip)}
        return bool(np.logical_and.reduce([np.broadcast_to(used[k] <= lim, a.shape) for k, lim in capacity.items()]).any())

    lo, hi = 0, most  # fits(lo) (0: trivially), the answer ≤ hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def _connection_floor(c, shape: tuple, chip) -> tuple[np.ndarray, np.ndarray]:
    """Per block shape (array of ``shape``, entry b - 1 for size b): the least input axons and
    synapse bits a block of that shape takes from connection ``c`` at any position."""
    m = c.axons_per_source
    w, d = c._weight_bits, c._delay_bits(chip)
    per, head = w + d + chip.int("tag_bits"), chip.int("synapse_block_header_bits")
    if c._axes is None:  # dense: a flat target
        (n,) = shape
        fan_in = c._dense.sum(axis=1)
        least = _least_window_max(fan_in)
        axons = least * m
        return axons, axons * row_bits(np.arange(1, n + 1), chip, w, d)
    windows = [_least_windows(a) for a in c._axes]
    axons = outer(windows) * m
    if chip.int("conv_weight_sharing"):
        return axons, _shared_floor(c, shape, chip, w, d, per, head)
    synapses = outer([_least_window_sums(a.sum(axis=1)) for a in c._axes])
    return axons, m * per * synapses + head * axons


def _shared_floor(c, shape, chip, w, d, per, head) -> np.ndarray:
    """The kernel stored once per core for b₀ channels (see ``Connection._shared_bits``)."""
    c_out = shape[0]
    groups, entries = c.kernel_entries()
    b = np.arange(1, c_out + 1)
    if groups == 1:
        per_channel = entries * row_bits(b, chip, w, d)
    elif groups == c_out:
        per_channel = entries * b * row_bits(1, chip, w, d)
    else:  # a block of b channels touches at least ⌈b / group size⌉ groups, each with a header
        per_channel = entries * (b * per + head * -(-b // (c_out // groups)))
    return np.broadcast_to(per_channel.reshape(-1, *[1] * (len(shape) - 1)), shape).copy()


def _least_windows(paths: np.ndarray) -> np.ndarray:
    """For b = 1..n_out: min over a of the inputs reached by outputs [a, a + b) (bool paths)."""
    if (paths == paths[0]).all():  # every output reads the same inputs (a dense channel map): no n x n table
        return np.full(len(paths), int(paths[0].sum()), np.int64)
    return _reach(paths).min(axis=0)


def _least_window_sums(x: np.ndarray) -> np.ndarray:
    """For b = 1..n: min over a of x[a] + … + x[a + b − 1]."""
    run = np.concatenate([[0], np.cumsum(x, dtype=np.int64)])
    return np.array([(run[b:] - run[:-b]).min() for b in range(1, len(x) + 1)], np.int64)


def _least_window_max(x: np.ndarray) -> np.ndarray:
    """For b = 1..n: min over a of max(x[a], …, x[a + b − 1])."""
    out = np.empty(len(x), np.int64)
    top = np.asarray(x, np.int64).copy()
    for b in range(1, len(x) + 1):
        if b > 1:
            top = np.maximum(top[:-1], x[b - 1:])
        out[b - 1] = top.min()
    return out
