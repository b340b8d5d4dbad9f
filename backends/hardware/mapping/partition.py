"""Partition of a neuron layer into per-core blocks.

Partition
    Layers are cut consumers first (reverse topological order), so fan-out is known. A split is a
    count per dimension with near-equal contiguous slices; only counts giving distinct chunk
    sizes are tried. The split with the fewest cores whose every core fits wins (ties: fewer input
    axons in total, then the first in lexicographic order). All usages shrink with the block, so
    a layer fits iff one neuron per core fits; otherwise ``MappingError`` names the layer and limit.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from backends.hardware.mapping.chains import BlockSums
from backends.hardware.mapping.usage import fit_error, over_limits, usage_grids


def _split_counts(n: int) -> list[int]:
    """Split counts k of n giving distinct largest chunks ⌈n/k⌉ (the smallest k for each)."""
    k = np.arange(1, n + 1)
    chunk = -(-n // k)
    return [int(x) for x in k[np.r_[True, chunk[1:] < chunk[:-1]]]]


def partition(neuron, comp, conns, fanout, chip) -> tuple[list[np.ndarray], dict]:
    """The fitting split with the fewest cores (ties: fewer input axons, then the first option):
    the starts of its slices per axis, and its usage grids."""
    over = over_limits(usage_grids(neuron, comp, conns, fanout, tuple(neuron.shape), chip), chip)
    if over:  # one neuron per core is the finest split; every usage shrinks with the block
        raise fit_error(neuron, chip, over)
    per_axis = [axis_cuts(neuron.shape, conns, axis) for axis in range(len(neuron.shape))]
    fanout = BlockSums(fanout)  # every split below sums the same fan-out
    options = sorted(itertools.product(*per_axis), key=lambda s: (math.prod(map(len, s)), tuple(map(len, s))))
    by_cores = (_fitting(neuron, comp, conns, fanout, list(group), chip)
                for _, group in itertools.groupby(options, key=lambda s: math.prod(map(len, s))))
    _, _, starts, usage = min(next(fits for fits in by_cores if fits), key=lambda f: f[:2])
    return list(starts), usage


def _fitting(neuron, comp, conns, fanout, options, chip) -> list[tuple]:
    """(total input axons, option index, starts, usage) of every split that fits."""
    limit, axons, fits = chip.int("neurons_per_core"), chip.int("input_axons_per_core"), []
    for i, starts in enumerate(options):
        largest = math.prod(int(np.diff(np.append(s, n)).max()) for s, n in zip(starts, neuron.shape))
        if largest * comp > limit:
            continue
        if np.max(sum((c._axons(starts) for c in conns), 0)) > axons:  # cheap first (memoized per axis)
            continue
        usage = usage_grids(neuron, comp, conns, fanout, starts, chip)
        if not over_limits(usage, chip):
            fits.append((int(usage["input_axons"].sum()), i, starts, usage))
    return fits


def axis_cuts(shape: tuple, conns, axis: int) -> list[np.ndarray]:
    """Candidate starts along one axis: near-equal slices for every distinct chunk size and, on a
    spatial axis read through windows (conv, pool), window-balanced slices where they need fewer
    input axons than the near-equal ones of the same count."""
    n = shape[axis]
    equal = {k: np.arange(k) * n // k for k in _split_counts(n)}
    slab = _slab_axons(shape, conns, axis) if axis > 0 and n <= MAX_BALANCED else None
    if slab is None or not slab.any():
        return list(equal.values())
    out = list(equal.values())
    for k, starts in _window_balanced(slab).items():
        near = np.arange(k) * n // k
        if _max_cost(slab, starts, n) < _max_cost(slab, near, n):
            out.append(starts)
    return out


MAX_BALANCED = 256  # window-balanced cuts on axes up to this length (the search is O(n³))


def _slab_axons(shape, conns, axis) -> np.ndarray | None:
    """S[a, b]: input axons of the slab of outputs [a, b) along ``axis`` (whole extent on the
    other axes), for 0 ≤ a < b ≤ n; None when a dense connection reads the layer."""
    n = shape[axis]
    slab = np.zeros((n + 1, n + 1), np.int64)
    for c in conns:
        if c._axes is None:
            return None
        paths = c._axes[axis]
        rest = math.prod(int(a.any(axis=0).sum()) for i, a in enumerate(c._axes) if i != axis)
        for a in range(n):
            slab[a, a + 1:] += np.logical_or.accumulate(paths[a:], axis=0).sum(axis=1) * rest * c.axons_per_source
    return slab


def _window_balanced(slab: np.ndarray) -> dict[int, np.ndarray]:
    """For every count k: the starts of k slices whose largest slab (axons, then length) is least.

    Dynamic programme over prefixes: f_j(b) = min_{a<b} max(f_{j−1}(a), key(a, b)) with
    key(a, b) = S[a, b]·(n + 1) + (b − a), so axons come first and length breaks ties."""
    n = len(slab) - 1
    a, b = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    big = np.iinfo(np.int64).max
    key = np.where(a < b, slab * (n + 1) + (b - a), big)
    f = np.full(n + 1, big, np.int64)
    f[0] = 0
    choices, out = [], {}
    for k in range(1, n + 1):
        cand = np.maximum(f[:, None], key)
        arg = cand.argmin(axis=0)
        f = cand[arg, np.arange(n + 1)]
        choices.append(arg)
        if f[n] < big:
            starts, end = [], n
            for j in range(k - 1, -1, -1):
                end = int(choices[j][end])
                starts.append(end)
            out[k] = np.array(starts[::-1], np.int64)
    return out


def _max_cost(slab, starts, n) -> int:
    edges = np.append(starts, n)
    return int(slab[edges[:-1], edges[1:]].max())
