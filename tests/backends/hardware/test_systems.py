"""Systems of many chips: system specs, the chip assignment that minimizes crossings, block
traffic from per-axis hits, and reports that price chip-to-chip links."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.hardware import mapping as mp
from backends.hardware.mapping import network
from backends.hardware.mapping.chains import grid_sum, split_starts
from backends.hardware.mapping.placement import assign_chips
from backends.hardware.spec import load_chip
from n2c.errors import N2CError
from tests.backends.hardware.test_mapping import conv_nets, small_chips, spec


def _cut_cost(chip_of, rows, cols, weights):
    return float(np.sum(weights * np.abs(chip_of[rows] - chip_of[cols])))


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 9), st.integers(1, 4), st.data())
def test_chip_assignment_is_the_cheapest_contiguous_cut(n, per_chip, data):
    """Exhaustively: no cut into K = ⌈n/C⌉ contiguous runs of at most C cores crosses less traffic."""
    edges = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1), st.integers(1, 9)),
                               max_size=12))
    rows, cols, weights = (np.array([e[i] for e in edges], np.int64) for i in range(3))
    chip_of = assign_chips(n, per_chip, rows, cols, weights)
    k = -(-n // per_chip)
    assert chip_of.max() + 1 == k and np.all(np.diff(chip_of) >= 0) and np.bincount(chip_of).max() <= per_chip
    best = min(_cut_cost(np.repeat(np.arange(k), np.diff((0, *cuts, n))), rows, cols, weights)
               for cuts in itertools.combinations(range(1, n), k - 1)
               if np.diff((0, *cuts, n)).max() <= per_chip)
    assert _cut_cost(chip_of, rows, cols, weights) == best


def test_a_chain_is_cut_where_the_least_traffic_crosses():
    # cores 0-1-2-3-4-5 in a chain, heavy edges except between 2 and 3; two chips of 4 cores
    rows, cols = np.arange(5), np.arange(1, 6)
    weights = np.array([9, 9, 1, 9, 9])
    assert assign_chips(6, 4, rows, cols, weights).tolist() == [0, 0, 0, 1, 1, 1]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_nets(), small_chips(), st.integers(0, 3))
def test_block_traffic_from_hits_equals_the_masks(net, chip, seed):
    """The per-axis products (no mask per block) count what the union masks count."""
    try:
        m = mp.map_network(net, chip)
    except N2CError:
        return
    rng = np.random.default_rng(seed)
    for c in m.connections:
        if c._axes is None:
            continue
        starts = split_starts(c.target_shape, [int(rng.integers(1, n + 1)) for n in c.target_shape])
        src = split_starts(c.source_shape, [int(rng.integers(1, n + 1)) for n in c.source_shape])
        union = network.union_masks([c], c.source, starts)
        assert np.array_equal(c.block_fanout(starts), union.sum(axis=0))
        assert np.array_equal(c.block_pairs(starts, src), grid_sum(union.astype(np.int64), src, 1).reshape(len(union), -1))
        assert np.array_equal(c.block_pairs(starts, None)[:, 0], union.reshape(len(union), -1).sum(axis=1))


def test_shipped_systems_name_their_chip_and_grid():
    hala, kapoho = load_chip("hala_point"), load_chip("kapoho_point")
    assert hala.system.chips == 1152 and kapoho.system.chips == 8 and hala.key == "loihi2"
    assert {q.tag for q in hala.system.values.values()} == {"A"}  # every link value a stated assumption
    positions = [hala.chip_position(c) for c in range(hala.system.chips)]
    assert len(set(positions)) == 1152  # each chip its own place
    steps = [hala.chip_distance(c, c + 1) for c in range(1151)]
    assert max(steps) <= 4 and sum(s > 1 for s in steps) <= 8  # neighbours, but where a band turns
    assert max(hala.chip_distance(c, c + 8) for c in range(1144)) <= 8 // 4 + 4  # near in order, near on the grid
    assert all(0 <= x < 36 and 0 <= y < 32 for x, y in positions)
    assert load_chip("loihi2").system is None and load_chip("loihi2").chip_distance(0, 3) == 3


@pytest.mark.parametrize("change, message", [
    ({"chip": "loihi9"}, "chip 'loihi9' is not a shipped chip"),
    ({"values": {"chips_x": {"value": 2, "tag": "A", "source": "s"}}}, "missing values: chips_y"),
    ({"format_version": 7}, "format_version 7"),
])
def test_bad_system_specs_are_one_line_errors(tmp_path, change, message):
    raw = {"format": "n2c-system-spec", "format_version": 1, "key": "s", "name": "S", "chip": "loihi2",
           "sources": {"s": "a source"},
           "values": {k: {"value": v, "tag": "A", "source": "s"} for k, v in
                      {"chips_x": 2, "chips_y": 1, "energy_chip_crossing": 1e-10, "time_chip_crossing": 1e-7}.items()}}
    raw.update(change)
    path = tmp_path / "system.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(N2CError, match=message):
        load_chip(str(path))


def test_a_network_larger_than_the_system_is_refused(tmp_path):
    raw = {"format": "n2c-system-spec", "format_version": 1, "key": "tiny", "name": "Tiny", "chip": "loihi1",
           "sources": {"s": "a source"},
           "values": {k: {"value": v, "tag": "A", "source": "s"} for k, v in
                      {"chips_x": 1, "chips_y": 1, "energy_chip_crossing": 1e-10, "time_chip_crossing": 1e-7}.items()}}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(raw))
    from tests.random_networks import dense_network
    net = dense_network(0, "mtn", timesteps=1)
    small = load_chip(str(path))
    assert mp.map_network(net, small).chips == 1
    many = spec(neurons_per_core=1, cores_per_chip=2, mesh_tiles_x=1, mesh_tiles_y=1, cores_per_tile=2)
    from backends.hardware.spec import ChipSpec
    boxed = ChipSpec(many.key, many.name, many.note, many.values, many.memory, many.path, small.system)
    with pytest.raises(N2CError, match=r"needs \d+ chips .* but Tiny has 1"):
        mp.map_network(net, boxed)


def test_reports_price_chip_links_on_a_system(digits_nir, digits_test):
    """A network spread over chips: links counted; on a system priced (energy and route time),
    on a bare chip counted only."""
    from backends.hardware.spec import ChipSpec
    from n2c.cli.pipeline import report_network
    bare = load_chip("loihi1")
    small = ChipSpec(bare.key, bare.name, bare.note, {**bare.values}, bare.memory, bare.path)
    kapoho = load_chip("kapoho_point")
    tiny_chip = dict(small.values)
    from dataclasses import replace
    tiny_chip["cores_per_chip"] = replace(tiny_chip["cores_per_chip"], value=2.0)
    tiny = ChipSpec(small.key, small.name, small.note, tiny_chip, small.memory, small.path)
    boxed = ChipSpec(small.key, small.name, small.note, tiny_chip, small.memory, small.path, kapoho.system)
    data = digits_test.head(20)
    plain = report_network(str(digits_nir), tiny, data)
    system = report_network(str(digits_nir), boxed, data)
    assert plain["mapping"]["chips"] > 1 and plain["activity"]["totals"]["chip_crossings"] > 0
    assert plain["energy"]["components"]["chip_links"] == 0.0
    links = system["activity"]["totals"]["chip_crossings"]
    assert system["energy"]["components"]["chip_links"] == pytest.approx(links * 320e-12, rel=1e-12) and links > 0
    assert system["latency"]["route_s"] > plain["latency"]["route_s"]
    assert system["hardware"]["system"]["name"].startswith("Intel Kapoho Point")
