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

import math

import numpy as np

from backends.hardware.mapping.chains import outer, row_bits
from backends.hardware.mapping.usage import limits, memory_use


def layer_bounds(neuron, comp, conns, fanout, chip) -> tuple[int, str, dict[str, float]]:
    """The layer's bound alone and what binds it (:func:`lower_bound`), and its floors with
    shared cores (per resource, :func:`_shares`), from one pass over the block shapes."""
    count, ratio = _shape_grid(neuron, comp, conns, fanout, chip)
    totals = _totals(neuron, comp, conns, fanout, chip)
    bound, binding = _bound(neuron, totals, count, ratio, chip)
    return bound, binding, _shares(neuron, totals, count, ratio, chip)


def lower_bound(neuron, comp, conns, fanout, chip) -> tuple[int, str]:
    """The larger of the totals bound and the largest-block bound, and what binds it."""
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
    n, n_in = paths.shape
    if (paths == paths[0]).all():  # every output reads the same inputs (a dense channel map)
        return np.full(n, int(paths[0].sum()), np.int64)
    lo = paths.argmax(axis=1)
    hi = n_in - paths[:, ::-1].argmax(axis=1)
    if (paths.any(axis=1).all() and (paths.sum(axis=1) == hi - lo).all() and (np.diff(lo) >= 0).all()
            and (np.diff(hi) >= 0).all() and (lo[1:] <= hi[:-1]).all()):
        # intervals that slide forward and overlap: outputs [a, a + b) reach [lo_a, hi_{a+b-1})
        return np.array([(hi[b - 1:] - lo[:n - b + 1]).min() for b in range(1, n + 1)], np.int64)
    out = np.empty(n, np.int64)
    reach = paths.copy()
    for b in range(1, n + 1):
        if b > 1:
            reach = reach[:-1] | paths[b - 1:]
        out[b - 1] = reach.sum(axis=1).min()
    return out


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
