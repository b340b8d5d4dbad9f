"""Partition of a neuron layer into per-core blocks, and the layer's lower bound in cores.

Partition
    Layers are cut consumers first (reverse topological order), so fan-out is known. A split is a
    count per dimension with near-equal contiguous slices; only counts giving distinct chunk
    sizes are tried. The split with the fewest cores whose every core fits wins (ties: fewer input
    axons in total, then the first in lexicographic order). All usages shrink with the block, so
    a layer fits iff one neuron per core fits; otherwise ``MappingError`` names the layer and limit.

Lower bound
    Per layer, max over resources of ⌈total / per-core capacity⌉ with totals of the unsplit
    layer: compartments, input axons (every source neuron reaching the layer enters at least
    one core), output fan-out edges and, per memory pool, its uses (synapses of the
    whole layer in one block; for a dense chain Σ_j bits(fan-out of j), which equals it when the
    weights have no zeros and stays a bound when they do). The network's bound is the sum over
    layers, since a core holds one layer (as Lava and nengo-loihi place).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from backends.hardware.mapping.usage import fit_error, limits, memory_use, over_limits, usage_grids


def _split_counts(n: int) -> list[int]:
    """Split counts k of n giving distinct largest chunks ⌈n/k⌉ (the smallest k for each)."""
    k = np.arange(1, n + 1)
    chunk = -(-n // k)
    return [int(x) for x in k[np.r_[True, chunk[1:] < chunk[:-1]]]]


def partition(neuron, comp, conns, fanout, chip) -> tuple[tuple, dict]:
    """The fitting split with the fewest cores (ties: fewer input axons, then lexicographic)."""
    over = over_limits(usage_grids(neuron, comp, conns, fanout, tuple(neuron.shape), chip), chip)
    if over:  # one neuron per core is the finest split; every usage shrinks with the block
        raise fit_error(neuron, chip, over)
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
        usage = usage_grids(neuron, comp, conns, fanout, split, chip)
        if not over_limits(usage, chip):
            fits.append((int(usage["input_axons"].sum()), split, usage))
    return fits


def lower_bound(neuron, comp, conns, fanout, chip) -> tuple[int, str]:
    """max over resources of ⌈unsplit total / per-core capacity⌉, and the binding resource."""
    n = math.prod(neuron.shape) * comp
    fan = int(fanout.sum()) * comp
    totals = {"neurons": n, "output_fanout": fan, "input_axons": sum(c._source_floor() for c in conns)}
    use = {"synapse_bits": sum(c._synapse_floor(chip) for c in conns),
           "neuron_state_bits": n * chip.int("neuron_state_bits"),
           "routing_bits": fan * chip.int("routing_entry_bits")}
    totals.update(memory_use(use, chip))
    capacity = limits(chip)
    need = {k: -(-v // capacity[k]) for k, v in totals.items()}
    binding = max(need, key=need.get)
    return max(1, need[binding]), binding
