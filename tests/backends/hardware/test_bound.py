"""The layer lower bound (backends.hardware.mapping.bound) is a bound: brute force over every
rectangular block of small random layers and chips finds none larger than the largest block that
fits, and no split of a layer that fits uses fewer cores than the bound; least_bits is a floor on
every cut of a synapse row; window-balanced cuts are what they claim."""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.hardware.mapping import bound, chains, partition
from backends.hardware.mapping.usage import over_limits, usage_grids
from backends.hardware.spec import load_chip
from backends.ir.integer import IntNetwork, IntNeuron, IntSource, IntSynapse
from tests.backends.hardware.test_mapping import conv_nets, small_chips


def layers_of(net, chip):
    conns = chains.connections(net, chip)
    for neuron in (x for x in net.layers if isinstance(x, IntNeuron)):
        yield neuron, chains.compartments(neuron, chip), [c for c in conns if c.target == neuron.name]


def fits(neuron, comp, conns, fanout, starts, chip, index) -> bool:
    usage = usage_grids(neuron, comp, conns, fanout, starts, chip)
    return not over_limits({k: v[index][None] for k, v in usage.items()}, chip)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_nets(), small_chips(), st.integers(0, 2 ** 16))
def test_no_block_beats_the_largest_block(net, chip, seed):
    """Every block (any shape, any position) larger than the largest-block size S fails some
    limit, and a block of size S fits somewhere (blocks over the compartment limit are skipped:
    they fail it plainly)."""
    rng = np.random.default_rng(seed)
    for neuron, comp, conns in layers_of(net, chip):
        fanout = rng.integers(0, 4, size=neuron.shape)
        most, _ = bound.largest_block(neuron, comp, conns, fanout, chip)
        ranges = [[(a, b) for a in range(n) for b in range(a + 1, n + 1)] for n in neuron.shape]
        for block in itertools.product(*ranges):
            size = math.prod(b - a for a, b in block)
            if size <= most or size * comp > chip.int("neurons_per_core"):
                continue
            cuts = [np.unique([0, a, b]) for a, b in block]
            starts = [c[c < n] for c, n in zip(cuts, neuron.shape)]
            index = tuple(int(np.searchsorted(s, a)) for s, (a, _) in zip(starts, block))
            assert not fits(neuron, comp, conns, fanout, starts, chip, index), (neuron.name, block, most)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_nets(), small_chips(), st.integers(0, 2 ** 16))
def test_no_split_beats_the_lower_bound(net, chip, seed):
    """Random uneven grid splits and the partition's own: whenever every block fits, the block
    count is at least the layer's bound."""
    rng = np.random.default_rng(seed)
    for neuron, comp, conns in layers_of(net, chip):
        fanout = rng.integers(0, 4, size=neuron.shape)
        need, _ = bound.lower_bound(neuron, comp, conns, fanout, chip)
        tried = []
        for _ in range(20):
            tried.append([np.sort(rng.choice(np.arange(1, n), size=rng.integers(0, n), replace=False)) if n > 1
                          else np.zeros(0, np.int64) for n in neuron.shape])
        tried = [[np.r_[0, s].astype(np.int64) for s in cuts] for cuts in tried]
        tried.append([np.arange(n) for n in neuron.shape])
        for starts in tried:
            usage = usage_grids(neuron, comp, conns, fanout, starts, chip)
            if not over_limits(usage, chip):
                assert math.prod(map(len, starts)) >= need, (neuron.name, [list(s) for s in starts], need)


@given(st.lists(st.integers(0, 300), min_size=1, max_size=6), st.sampled_from(["loihi1", "loihi2"]),
       st.integers(1, 9), st.integers(0, 6))
def test_least_bits_is_a_floor_on_every_cut(parts, chip_name, w, d):
    chip = load_chip(chip_name)
    n = sum(parts)
    cost = sum(int(chains.row_bits(p, chip, w, d)) for p in parts)
    assert int(chains.least_bits(n, chip, w, d)) <= cost
    assert int(chains.least_bits(n, chip, w, d)) <= int(chains.row_bits(n, chip, w, d))


def test_least_bits_is_below_one_row_where_word_rounding_favours_cuts():
    """Loihi 1: one row of 4096 synapses costs 36,864 bits, 137 rows of 30 cost 35,072; the
    floor may not exceed the cheaper."""
    chip = load_chip("loihi1")
    assert 137 * int(chains.row_bits(30, chip, 8, 0)) < int(chains.row_bits(4096, chip, 8, 0))
    assert int(chains.least_bits(4096, chip, 8, 0)) <= 137 * int(chains.row_bits(30, chip, 8, 0))


def test_window_balanced_cuts_of_a_padded_3x3_conv():
    """8 outputs of a 3x3 'same' conv: three slices 3 + 2 + 3 each read 4 input rows, where the
    near-equal 2 + 3 + 3 needs 5 for the middle one."""
    paths = chains._window(8, 8, 1, 1, 1, 3) > 0
    slab = np.zeros((9, 9), np.int64)
    for a in range(8):
        slab[a, a + 1:] = np.logical_or.accumulate(paths[a:], axis=0).sum(axis=1)
    cuts = partition._window_balanced(slab)
    assert list(cuts[3]) == [0, 3, 5]
    assert partition._max_cost(slab, cuts[3], 8) == 4 < partition._max_cost(slab, np.arange(3) * 8 // 3, 8) == 5
    assert all(len(s) == k and s[0] == 0 and (np.diff(s) > 0).all() for k, s in cuts.items())


def _guillotine(rng, box: list[tuple[int, int]], depth: int = 0) -> list[list[tuple[int, int]]]:
    """A random partition of ``box`` into rectangles by recursive cuts (not a grid: each part is cut
    on its own)."""
    cuttable = [axis for axis, (a, b) in enumerate(box) if b - a > 1]
    if not cuttable or rng.random() < 0.15 * depth:
        return [box]
    axis = int(rng.choice(cuttable))
    a, b = box[axis]
    at = int(rng.integers(a + 1, b))
    return (_guillotine(rng, [*box[:axis], (a, at), *box[axis + 1:]], depth + 1)
            + _guillotine(rng, [*box[:axis], (at, b), *box[axis + 1:]], depth + 1))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_nets(), small_chips(), st.integers(0, 2 ** 16))
def test_no_partition_into_rectangles_beats_the_bound(net, chip, seed):
    """The by-position bound counts blocks of any partition, not only grids: random guillotine
    partitions (every part cut on its own) whose blocks all fit have at least that many."""
    rng = np.random.default_rng(seed)
    for neuron, comp, conns in layers_of(net, chip):
        fanout = rng.integers(0, 4, size=neuron.shape)
        need, _ = bound.lower_bound(neuron, comp, conns, fanout, chip)
        for _ in range(30):
            blocks = _guillotine(rng, [(0, n) for n in neuron.shape])
            ok = True
            for block in blocks:
                cuts = [np.unique([0, a, b]) for a, b in block]
                starts = [c[c < n] for c, n in zip(cuts, neuron.shape)]
                index = tuple(int(np.searchsorted(s, a)) for s, (a, _) in zip(starts, block))
                if not fits(neuron, comp, conns, fanout, starts, chip, index):
                    ok = False
                    break
            if ok:
                assert len(blocks) >= need, (neuron.name, blocks, need)


def test_the_bound_keeps_a_kernels_channels_whole():
    """A 3x3 conv of 128 channels on Loihi 2 at 16x16 (VGG-16's features_12 at CIFAR size): a core
    holding the kernel for all 128 output channels has room for 8 positions, and blocks of fewer
    channels are no cheaper, so the partition takes 32 cores. A bound from the largest block that
    fits (102 channels at 3x7 positions in a corner, 2,142 neurons) says 16; keeping channels
    whole, the bound says 28 (corner and edge blocks read fewer inputs)."""
    rng = np.random.default_rng(0)
    chip = load_chip("loihi2")
    w = rng.integers(-127, 128, size=(128, 128, 3, 3)) * 2
    w[w == 0] = 2
    syn = IntSynapse("c", "conv", "x", (128, 16, 16), (128, 16, 16), weight=w, padding=(1, 1))
    neuron = IntNeuron("n", "mtn", ["c"], (128, 16, 16), 1.0, bias=np.zeros((128, 16, 16), np.int64),
                       threshold=np.full((128, 16, 16), 10), max_spikes=7)
    net = IntNetwork(IntSource("x", (128, 16, 16), 1.0, bits=3), [syn, neuron], "n")
    (conn,) = chains.connections_into(net, neuron, chip)
    fanout = np.ones((128, 16, 16), np.int64)
    most, _ = bound.largest_block(neuron, 1, [conn], fanout, chip)
    need, binding = bound.lower_bound(neuron, 1, [conn], fanout, chip)
    assert most == 2142 and -(-neuron.shape[0] * 256 // most) == 16
    assert need == 28 and "by position" in binding
    starts, _ = partition.partition(neuron, 1, [conn], fanout, chip)
    assert math.prod(map(len, starts)) == 32
