"""Core mapping (backends.hardware.mapping): every core re-counted by a brute-force counter built on
explicit connectivity (the synapse chain probed with one-hot inputs), exact hand-computed cases,
the one-line errors, placement and a real network."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.hardware import mapping as mp
from backends.hardware.mapping import chains as chains
from backends.hardware.mapping import placement
from tests.oracles import placement_cost
from backends.hardware.spec import CHIPS_DIR, load_chip, parse_chip
from backends.ir.integer import IntNetwork, IntNeuron, IntSource, IntSynapse, message_bits
from n2c.errors import N2CError
from tests import random_networks as rn

LOIHI2_RAW = json.loads((CHIPS_DIR / "loihi2.json").read_text())
LOIHI1_RAW = json.loads((CHIPS_DIR / "loihi1.json").read_text())


def spec(base: dict = LOIHI2_RAW, pool_bits: dict | None = None, **values):
    """A chip spec from a shipped one with some values (and memory pool sizes) replaced."""
    raw = copy.deepcopy(base)
    for k, v in values.items():
        raw["values"][k]["value"] = v
    for i, bits in (pool_bits or {}).items():
        raw["memory_per_core"][i]["bits"]["value"] = bits
    return parse_chip(raw, "test spec")


# ---------------------------------------------------------------- brute force

def probe(conn: mp.Connection) -> np.ndarray:
    """Connectivity (targets, sources): one-hot inputs pushed through the chain with 0/1 weights."""
    n = math.prod(conn.source_shape)
    x = torch.eye(n, dtype=torch.float64).reshape(n, *conn.source_shape)
    for syn in conn.chain:
        x = syn.read_input(x)  # a sliced synapse reads part of its input
        if syn.kind == "dense":
            x = x.reshape(n, -1) @ torch.tensor((syn.weight != 0).T, dtype=torch.float64)
        elif syn.kind == "sumpool":
            c = syn.in_shape[0]
            x = F.conv2d(x, torch.ones(c, 1, *syn.kernel, dtype=torch.float64), stride=syn.stride,
                         padding=syn.padding, groups=c)
        else:
            x = F.conv2d(x, torch.ones(syn.weight.shape, dtype=torch.float64), stride=syn.stride,
                         padding=syn.padding, dilation=syn.dilation, groups=syn.groups)
    return (x.reshape(n, -1) > 0).T.numpy()


def bits(n: int, chip, w: int, d: int) -> int:
    """nengo-loihi's bits per axon, block by block."""
    total, b = 0, chip.int("synapse_block_size")
    while n > 0:
        blk = min(n, b)
        total += chip.int("synapse_word_bits") * math.ceil(
            (blk * (w + d + chip.int("tag_bits")) + chip.int("synapse_block_header_bits")) / chip.int("synapse_word_bits"))
        n -= blk
    return total


def planes(bits_: int, chip) -> int:
    return bits_ if bits_ > chip.int("graded_spike_bits") else 1


def comp_of(neuron, chip) -> int:
    return 1 if neuron.kind == "readout" else planes(message_bits(neuron), chip)


def folded_kernel(chain) -> tuple[int, int, int]:
    """(Cin/groups, KH, KW) of a pool/conv chain, from the formula d·sp·(k−1) + kp."""
    if chain[-1].kind == "sumpool":
        return 1, *chain[-1].kernel
    conv = chain[-1]
    k, d = conv.weight.shape[2:], conv.dilation
    if len(chain) == 1:
        return conv.weight.shape[1], *(di * (ki - 1) + 1 for di, ki in zip(d, k))
    pool = chain[0]
    return conv.weight.shape[1], *(di * sp * (ki - 1) + kp for di, sp, ki, kp in zip(d, pool.stride, k, pool.kernel))


def flat_rows(shape, block) -> np.ndarray:
    return np.arange(math.prod(shape)).reshape(shape)[block].ravel()


def recount(m: mp.Mapping, net: IntNetwork, chip) -> dict[int, dict]:
    """Usage of every core counted from explicit connectivity."""
    layers = net.by_name()
    conn_a = [(c, probe(c)) for c in m.connections]
    cores_of = {lm.name: [m.blocks[i] for i in lm.blocks] for lm in m.layers}
    out = {}
    for core in m.blocks:
        neuron = layers[core.layer]
        comp = comp_of(neuron, chip)
        rows = flat_rows(neuron.shape, core.block)
        axons = syn_bits = 0
        for c, a in conn_a:
            if c.target != core.layer:
                continue
            mult = planes(net.source.bits if c.source == net.source.name else message_bits(layers[c.source]), chip)
            reach = a[rows].any(axis=0)
            axons += int(reach.sum()) * mult
            delayed = any(s.delay is not None and np.any(s.delay) for s in c.chain)
            d = chip.int("delay_bits") if delayed else 0
            w = 1 if c.chain[-1].kind == "sumpool" else 8
            if c.chain[-1].kind == "dense":
                syn_bits += int(reach.sum()) * mult * bits(len(rows), chip, w, d)
            elif chip.int("conv_weight_sharing"):
                cin, kh, kw = folded_kernel(c.chain)
                groups = c.chain[-1].groups if c.chain[-1].kind == "conv" else c.target_shape[0]
                per_group = c.target_shape[0] // groups
                chans = np.arange(c.target_shape[0])[core.block[0]]
                for g in set(chans // per_group):
                    syn_bits += cin * kh * kw * mult * bits(int((chans // per_group == g).sum()), chip, w, d)
            else:
                syn_bits += sum(mult * bits(int(n), chip, w, d) for n in a[rows].sum(axis=0))
        fanout = 0
        for j in rows:
            dests = {(c.target, k.index) for c, a in conn_a if c.source == core.layer
                     for k in cores_of[c.target] if a[flat_rows(c.target_shape, k.block), j].any()}
            fanout += len(dests) * comp
        usage = {"neurons": len(rows) * comp, "input_axons": axons, "output_fanout": fanout, "synapse_bits": syn_bits,
                 "neuron_state_bits": len(rows) * comp * chip.int("neuron_state_bits"),
                 "routing_bits": fanout * chip.int("routing_entry_bits")}
        pools = {"synapses": "synapse_bits", "neuron_state": "neuron_state_bits", "routing": "routing_bits"}
        usage["memory"] = {p.name: sum(usage[pools[h]] for h in p.holds) for p in chip.memory}
        out[core.index] = usage
    return out


def core_traffic(m: mp.Mapping, net: IntNetwork, chip) -> tuple[np.ndarray, np.ndarray]:
    """Fan-out edges between cores (symmetric) and from the host, from explicit connectivity."""
    n, layers = len(m.blocks), net.by_name()
    t, host = np.zeros((n, n), np.int64), np.zeros(n, np.int64)
    for c in m.connections:
        a = probe(c)
        for b in (m.blocks[i] for i in m.layer(c.target).blocks):
            reach = a[flat_rows(c.target_shape, b.block)].any(axis=0)
            if c.source == net.source.name:
                host[b.index] += reach.sum() * c.axons_per_source
                continue
            for s in (m.blocks[i] for i in m.layer(c.source).blocks):
                t[s.index, b.index] += reach[flat_rows(c.source_shape, s.block)].sum() * comp_of(layers[c.source], chip)
    return t + t.T, host


def check_mapping(m: mp.Mapping, net: IntNetwork, chip) -> None:
    """Every block's re-counted usage equals the reported one; every core's blocks together stay
    inside every limit; every neuron is in exactly one block; cores ≥ the bound with sharing,
    every layer's blocks ≥ its bound alone; placement legal."""
    limits = m.limits()
    for index, usage in recount(m, net, chip).items():
        block = m.blocks[index]
        assert {k: block.usage[k] for k in usage if k != "memory"} == {k: v for k, v in usage.items() if k != "memory"}
        assert block.memory == usage["memory"]
    for core in m.cores:
        held = [m.blocks[i] for i in core.blocks]
        assert all(b.core == core.index and b.tile == core.tile for b in held)
        assert core.usage == {k: sum(b.usage[k] for b in held) for k in core.usage}
        for k in ("neurons", "input_axons", "output_fanout"):
            assert core.usage[k] <= limits[k], (core, k)
        for pool, used in core.memory.items():
            assert used == sum(b.memory[pool] for b in held) <= limits[pool], (core, pool)
    assert sorted(i for c in m.cores for i in c.blocks) == list(range(len(m.blocks)))
    for neuron in (x for x in net.layers if isinstance(x, IntNeuron)):
        cover = np.zeros(neuron.shape, int)
        lm = m.layer(neuron.name)
        for i in lm.blocks:
            assert m.blocks[i].layer == neuron.name
            cover[m.blocks[i].block] += 1
        assert (cover == 1).all() and len(lm.blocks) >= lm.lower_bound
    assert len(m.cores) >= m.lower_bound and m.lower_bound_unshared == sum(lm.lower_bound for lm in m.layers)
    assert m.lower_bound_shared <= m.lower_bound_unshared
    assert m.lower_bound == (m.lower_bound_shared if len(m.cores) < len(m.blocks) else m.lower_bound_unshared)
    check_placement(m, chip)


def check_placement(m: mp.Mapping, chip) -> None:
    tiles, chips = {}, {}
    tx, ty = chip.mesh
    for core in m.cores:
        x, y = core.tile
        assert core.chip == x // tx and 0 <= y < ty and 0 <= core.chip < m.chips
        tiles[core.tile] = tiles.get(core.tile, 0) + 1
        chips[core.chip] = chips.get(core.chip, 0) + 1
    assert max(tiles.values()) <= chip.int("cores_per_tile")
    assert max(chips.values()) <= chip.int("cores_per_chip")
    assert m.chips == -(-len(m.cores) // chip.int("cores_per_chip"))


def check_counts(m: mp.Mapping, seed: int) -> None:
    """synapse_counts agrees with explicit connectivity."""
    rng = np.random.default_rng(seed)
    for c in m.connections:
        a = probe(c).astype(float)
        top = 3 if seed % 2 else 2 ** 23  # small counts (float32 path) and large currents (float64 path)
        active = rng.integers(0, top, size=(2, *c.source_shape)).astype(float)
        flat = active.reshape(2, -1)
        want = flat @ (a.T if c.chain[-1].kind != "dense" else np.repeat(a.any(axis=0)[:, None], len(a), axis=1))
        assert np.array_equal(c.synapse_counts(active).reshape(2, -1), want)  # exact, not close
        mask = c.receptive_mask(tuple(slice(0, max(1, n // 2)) for n in c.target_shape))
        assert (mask.ravel() == probe(c)[flat_rows(c.target_shape, tuple(slice(0, max(1, n // 2))
                                                                          for n in c.target_shape))].any(axis=0)).all()


# ---------------------------------------------------------------- random networks

def mtn(rng, name, inputs, shape, levels=None):
    k = int(levels or rng.integers(1, 16))
    return IntNeuron(name, "mtn", inputs, shape, 1.0, bias=np.zeros(shape, np.int64),
                     threshold=np.full(shape, 10), max_spikes=k)


def conv(rng, name, src, in_shape, cout, k, stride, pad, dil, groups):
    c, h, w = in_shape
    out = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, p, d, s in zip((h, w), pad, dil, stride))
    weight = rn.weights(rng, (cout, c // groups, k, k))
    return IntSynapse(name, "conv", src, in_shape, (cout, *out), weight=weight, stride=stride, padding=pad,
                      dilation=dil, groups=groups)


def sumpool(name, src, in_shape, k, s, p):
    c, h, w = in_shape
    out = tuple((n + 2 * p - k) // s + 1 for n in (h, w))
    return IntSynapse(name, "sumpool", src, in_shape, (c, *out), kernel=(k, k), stride=(s, s), padding=(p, p),
                      groups=c)


def dense(rng, name, src, in_shape, n, zeros=0.2, delays=False):
    w = rn.weights(rng, (n, math.prod(in_shape)))
    w[w == 0] = 2
    w[rng.random(w.shape) < zeros] = 0
    delay = rng.integers(0, 3, size=w.shape) if delays else None
    return IntSynapse(name, "dense", src, in_shape, (n,), weight=w, delay=delay)


@st.composite
def conv_nets(draw):
    """source → conv (stride, padding, dilation, groups) → neuron → [residual conv + identity] →
    (sumpool →) conv or dense or sumpool → neuron → dense → readout."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    g = draw(st.sampled_from([1, 2]))
    s0 = (g * draw(st.integers(1, 2)), draw(st.integers(5, 8)), draw(st.integers(5, 8)))
    k, pad = draw(st.integers(1, 3)), draw(st.integers(0, 1))
    c1 = conv(rng, "c1", "x", s0, g * draw(st.integers(1, 2)), k, (draw(st.integers(1, 2)),) * 2, (pad, pad),
              (draw(st.integers(1, 2)),) * 2 if k > 1 else (1, 1), g)
    s1 = c1.out_shape
    layers = [c1, mtn(rng, "n1", ["c1"], s1)]
    last, shape = "n1", s1
    if draw(st.booleans()):  # residual sum: conv 3x3 'same' + identity
        r = conv(rng, "r", "n1", s1, s1[0], 3, (1, 1), (1, 1), (1, 1), 1)
        ident = IntSynapse("skip", "conv", "n1", s1, s1, weight=np.ones((s1[0], 1, 1, 1), np.int64), groups=s1[0])
        layers += [r, ident, mtn(rng, "n2", ["r", "skip"], s1)]
        last = "n2"
    tail = draw(st.sampled_from(["conv", "pool-conv", "pool-dense", "pool", "dense"]))
    if tail.startswith("pool") and min(shape[1:]) >= 2:
        kp = draw(st.integers(1, 2))
        sp = draw(st.integers(1, 2))
        layers.append(sumpool("p", last, shape, kp, sp, 0))
        last, shape = "p", layers[-1].out_shape
    if tail.endswith("conv"):
        layers.append(conv(rng, "c2", last, shape, 3, 2 if min(shape[1:]) >= 2 else 1, (1, 1), (1, 1), (1, 1), 1))
    elif tail.endswith("dense"):
        layers.append(dense(rng, "c2", last, shape, draw(st.integers(3, 12)), delays=draw(st.booleans())))
    top = layers[-1]
    if top.name in ("c2", "p"):
        layers.append(mtn(rng, "n3", [top.name], top.out_shape))
        last, shape = "n3", top.out_shape
    layers += [dense(rng, "fc", last, shape, 4), rn.readout(rng, "out", ["fc"], (4,))]
    return IntNetwork(IntSource("x", s0, 1.0, bits=draw(st.sampled_from([1, 4, 8]))), layers, "out")


@st.composite
def small_chips(draw):
    """Loihi-2-derived specs with tight limits (some share one pool, some have Loihi 1's three)."""
    base = draw(st.sampled_from([LOIHI1_RAW, LOIHI2_RAW]))
    pools = {0: draw(st.integers(20_000, 200_000))} if base is LOIHI2_RAW else \
        {0: draw(st.integers(5_000, 60_000)), 1: draw(st.integers(2_000, 20_000)), 2: draw(st.integers(1_000, 20_000))}
    return spec(base, pools, neurons_per_core=draw(st.integers(4, 64)),
                input_axons_per_core=draw(st.integers(100, 1500)), output_fanout_per_core=draw(st.integers(40, 400)),
                graded_spike_bits=draw(st.sampled_from([1, 2, 32])), conv_weight_sharing=draw(st.integers(0, 1)),
                weight_bits=8, cores_per_chip=draw(st.integers(4, 8)), mesh_tiles_x=2, mesh_tiles_y=2,
                cores_per_tile=draw(st.integers(2, 4)))


def map_or_verify_error(net, chip):
    """The mapping, or None when it raised the one-line cannot-fit error (an input-axon one is
    checked: the named layer has a neuron with that fan-in, over the limit)."""
    try:
        return mp.map_network(net, chip)
    except N2CError as e:
        msg = str(e)
        assert "cannot fit one" in msg and "\n" not in msg
        for part in msg.split(" | "):  # several unfit layers are named in one error
            layer = part.split("'")[1]
            if "input axons" in part:
                fan_in = sum(probe(c).sum(axis=1) * c.axons_per_source
                             for c in mp.connections(net, chip) if c.target == layer)
                assert f" {fan_in.max()} input axons (limit" in part and fan_in.max() > chip.int("input_axons_per_core")
        return None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_nets(), small_chips(), st.integers(0, 100))
def test_random_conv_networks_fit_every_limit(net, chip, seed):
    m = map_or_verify_error(net, chip)
    if m is not None:
        check_mapping(m, net, chip)
        check_counts(m, seed)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["dense", "conv"]), st.sampled_from(rn.KINDS), st.integers(0, 1000), small_chips())
def test_random_networks_module_fit_every_limit(builder, kind, seed, chip):
    net = rn.dense_network(seed, kind, 2, delays=seed % 2 == 0) if builder == "dense" else \
        rn.conv_network(seed, kind, 2)
    m = map_or_verify_error(net, chip)
    if m is not None:
        check_mapping(m, net, chip)
        check_counts(m, seed)


# ---------------------------------------------------------------- exact cases

def readout_net(src_shape, syn, bits=1, kind="readout", levels=1):
    out = IntNeuron("out", kind, [syn.name], syn.out_shape, 1.0, bias=np.zeros(syn.out_shape, np.int64),
                    threshold=np.ones(syn.out_shape, np.int64), max_spikes=levels)
    return IntNetwork(IntSource("x", src_shape, 1.0, bits=bits), [syn, out], "out")


def test_dense_100_to_300_on_loihi1_is_one_core():
    rng = np.random.default_rng(0)
    net = readout_net((100,), dense(rng, "fc", "x", (100,), 300, zeros=0))
    m = mp.map_network(net, load_chip("loihi1"))
    per_axon = 4 * 576 + 64 * math.ceil((44 * 8 + 10) / 64)  # 4 blocks of 64 and one of 44
    assert per_axon == 2688
    (core,) = m.cores
    assert core.usage == {"neurons": 300, "input_axons": 100, "output_fanout": 0, "synapse_bits": 100 * 2688,
                          "neuron_state_bits": 300 * 192, "routing_bits": 0}
    assert core.memory == {"synaptic memory": 268800, "neuron state": 57600, "routing tables": 0}
    assert (m.lower_bound, m.layer("out").binding, m.layer("out").synapses) == (1, "neurons", 30000)
    assert m.as_dict()["gap"] == 0 and json.dumps(m.as_dict())


def test_dense_splits_on_synaptic_memory():
    """1000 → 1000: 9024 bits per axon; a core holds ≤ 1048576 / 1000 bits per axon, i.e. ≤ 118
    synapses (bits(118) = 576 + 64·7 = 1024, bits(119) = 1088), so 9 cores of 111-112."""
    rng = np.random.default_rng(1)
    net = readout_net((1000,), dense(rng, "fc", "x", (1000,), 1000, zeros=0))
    m = mp.map_network(net, load_chip("loihi1"))
    assert chains.row_bits(1000, m.chip, 8, 0) == 15 * 576 + 384
    assert chains.row_bits(118, m.chip, 8, 0) == 1024 and chains.row_bits(119, m.chip, 8, 0) == 1088
    lm = m.layer("out")
    assert (lm.split, len(lm.cores), lm.lower_bound, lm.binding) == ((9,), 9, 9, "synaptic memory")
    assert {c.usage["neurons"] for c in m.cores} == {111, 112}
    assert max(c.memory["synaptic memory"] for c in m.cores) == 1000 * chains.row_bits(112, m.chip, 8, 0)


def test_conv_splits_on_neurons_on_loihi1():
    """16×28×28 = 12544 neurons: bound ⌈12544/1024⌉ = 13, but 13 is prime and no single-axis
    13-way split fits (16·3·28 = 1344), so 14 cores; of the 14-core splits that fit, (1,2,7) and
    (1,7,2) need the fewest input axons (30·40 = 1200; (1,14,1) needs 54·28 = 1512)."""
    rng = np.random.default_rng(2)
    net = readout_net((1, 28, 28), conv(rng, "c", "x", (1, 28, 28), 16, 3, (1, 1), (1, 1), (1, 1), 1))
    m = mp.map_network(net, load_chip("loihi1"))
    lm = m.layer("out")
    assert (lm.lower_bound, lm.binding, lm.split, len(lm.cores)) == (13, "neurons", (1, 2, 7), 14)
    assert sum(c.usage["input_axons"] for c in m.cores) == 1200
    assert {c.usage["synapse_bits"] for c in m.cores} == {9 * 192}  # 9 kernel entries of bits(16 channels)
    check_mapping(m, net, m.chip)


def test_bit_planes_on_loihi1():
    """A 4-bit source needs 4 axons per source neuron on Loihi 1 (binary spikes), one on Loihi 2;
    a neuron sending 4-bit messages uses 4 compartments."""
    rng = np.random.default_rng(3)
    net = readout_net((10,), dense(rng, "fc", "x", (10,), 5, zeros=0), bits=4, kind="mtn", levels=15)
    one, two = mp.map_network(net, load_chip("loihi1")), mp.map_network(net, load_chip("loihi2"))
    assert one.connections[0].axons_per_source == 4 and two.connections[0].axons_per_source == 1
    assert one.cores[0].usage["input_axons"] == 40 and two.cores[0].usage["input_axons"] == 10
    assert one.cores[0].usage["synapse_bits"] == 40 * 64 and one.layer("out").synapses == 200
    assert one.layer("out").compartments_per_neuron == 4 and one.cores[0].usage["neurons"] == 20
    assert two.layer("out").compartments_per_neuron == 1


def test_fan_in_over_the_axon_limit_is_one_line():
    rng = np.random.default_rng(4)
    net = readout_net((5000,), dense(rng, "fc", "x", (5000,), 2, zeros=0), bits=8)
    with pytest.raises(N2CError) as e:
        mp.map_network(net, load_chip("loihi2"))
    msg = str(e.value)
    assert "'out'" in msg and "5000 input axons" in msg and "4096" in msg and "\n" not in msg


def test_weights_wider_than_the_chip_are_an_error():
    rng = np.random.default_rng(5)
    net = readout_net((10,), dense(rng, "fc", "x", (10,), 3))
    with pytest.raises(N2CError, match="layer 'out'.*'fc' has 8-bit weights.*at most 4"):
        mp.map_network(net, spec(weight_bits=4))


# ---------------------------------------------------------------- placement

def test_placement_over_several_chips_and_local_search():
    """A 4-layer dense net on chips of 6 cores (2×2 tiles of 2): ⌈cores/6⌉ chips, hops symmetric,
    and the local search never worsens the serpentine start."""
    rng = np.random.default_rng(6)
    layers = [dense(rng, "f1", "x", (12,), 20), mtn(rng, "n1", ["f1"], (20,), 1),
              dense(rng, "f2", "n1", (20,), 16), mtn(rng, "n2", ["f2"], (16,), 1),
              dense(rng, "f3", "n2", (16,), 10), rn.readout(rng, "out", ["f3"], (10,))]
    net = IntNetwork(IntSource("x", (12,), 1.0, bits=1), layers, "out")
    chip = spec(neurons_per_core=4, cores_per_chip=6, mesh_tiles_x=2, mesh_tiles_y=2, cores_per_tile=2)
    m = mp.map_network(net, chip)
    assert len(m.blocks) == 5 + 4 + 3 and len(m.cores) == 12 and m.chips == 2  # every block fills a core
    check_mapping(m, net, chip)
    for a in range(len(m.blocks)):
        assert m.hops(a, a) == (0, 0, 0)
        for b in range(len(m.blocks)):
            assert m.hops(a, b) == m.hops(b, a)
            if m.blocks[a].tile == m.blocks[b].tile:
                assert m.hops(a, b) == (0, 0, 0)
    traffic, host = core_traffic(m, net, chip)
    slots = placement.serpentine(chip, m.chips)
    start = [slots[b.core] for b in m.blocks]
    assert placement_cost([b.tile for b in m.blocks], traffic, host) <= placement_cost(start, traffic, host)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_nets(), small_chips())
def test_core_sharing_modes(net, chip):
    """never: a core per block; always: never more cores than blocks, every limit held (check_mapping);
    auto: shared only when that saves a chip."""
    try:
        never = mp.map_network(net, chip, share="never")
    except N2CError:
        return
    always, auto = mp.map_network(net, chip, share="always"), mp.map_network(net, chip)
    assert len(never.cores) == len(never.blocks) and never.lower_bound == never.lower_bound_unshared
    assert len(always.blocks) == len(never.blocks) and len(always.cores) <= len(never.cores)
    check_mapping(always, net, chip)
    assert len(auto.cores) == (len(always.cores) if always.chips < never.chips else len(never.cores))


def test_a_tiny_network_shares_one_core_when_asked():
    rng = np.random.default_rng(7)
    layers = [dense(rng, "f1", "x", (12,), 20), mtn(rng, "n1", ["f1"], (20,), 1),
              dense(rng, "f2", "n1", (20,), 10), rn.readout(rng, "out", ["f2"], (10,))]
    net = IntNetwork(IntSource("x", (12,), 1.0, bits=1), layers, "out")
    chip = load_chip("loihi2")
    always, auto = mp.map_network(net, chip, share="always"), mp.map_network(net, chip)
    assert [c.layers for c in always.cores] == [["n1", "out"]] and always.as_dict()["shared_cores"] == 1
    assert [c.layers for c in auto.cores] == [["n1"], ["out"]] and auto.lower_bound == 2
    assert always.lower_bound == always.lower_bound_shared == 1
    with pytest.raises(N2CError, match="unknown core sharing 'some'"):
        mp.map_network(net, chip, share="some")


def test_serpentine_walk():
    chip = spec(cores_per_chip=5, mesh_tiles_x=2, mesh_tiles_y=2, cores_per_tile=2)
    assert placement.serpentine(chip, 2) == [(0, 0), (0, 0), (1, 0), (1, 0), (1, 1),
                                       (2, 0), (2, 0), (3, 0), (3, 0), (3, 1)]


# ---------------------------------------------------------------- a real network

@pytest.mark.parametrize("key", ["loihi1", "loihi2"])
def test_digits_network_maps(digits_nir, key):
    from n2c.cli.pipeline import load_network
    _, net = load_network(str(digits_nir))
    chip = load_chip(key)
    m = mp.map_network(net, chip)
    check_mapping(m, net, chip)
    assert m.as_dict()["cores"] == len(m.cores) >= m.lower_bound


def test_every_layer_that_cannot_fit_is_named_before_any_mapping():
    """Two layers over the input-axon limit: one error names both (once the first was reported after
    mapping everything after it, consumers first)."""
    rng = np.random.default_rng(0)
    chip = load_chip("loihi2")
    axons = chip.int("input_axons_per_core")
    fc1 = dense(rng, "fc1", "x", (axons + 8,), 4, zeros=0)
    h = mtn(rng, "h", ["fc1"], (4,), levels=1)
    fc2 = dense(rng, "fc2", "h", (4,), axons + 20, zeros=0)
    h2 = mtn(rng, "h2", ["fc2"], (axons + 20,), levels=1)
    fc3 = dense(rng, "fc3", "h2", (axons + 20,), 3, zeros=0)
    out = IntNeuron("out", "readout", ["fc3"], (3,), 1.0, bias=np.zeros(3, np.int64),
                    threshold=np.ones(3, np.int64), max_spikes=1)
    net = IntNetwork(IntSource("x", (axons + 8,), 1.0, bits=1), [fc1, h, fc2, h2, fc3, out], "out")
    with pytest.raises(N2CError) as info:
        mp.map_network(net, chip)
    msg = str(info.value)
    assert msg.startswith("2 layers cannot fit one") and "'h'" in msg and "'out'" in msg and "\n" not in msg
    assert f"{axons + 8} input axons" in msg and f"{axons + 20} input axons" in msg
    # asked to, the mapper leaves both without cores, names them, and maps the layer between
    m = mp.map_network(net, chip, unfit_ok=True)
    assert set(m.unfit) == {"h", "out"} and f"{axons + 8} input axons" in m.unfit["h"]
    assert [lm.name for lm in m.layers if lm.cores] == ["h2"] and all(c.layers == ["h2"] for c in m.cores)
    assert m.lower_bound == m.layer("h2").lower_bound and not m.as_dict()["fits"]
    # and the fan-in split fits both exactly, through partial sums
    from backends.hardware.fan_in import fit_fan_in
    fitted = fit_fan_in(net, chip)
    assert {r["layer"] for r in fitted.fan_in} == {"h", "out"}
    assert not mp.map_network(fitted, chip).unfit


def test_every_layer_whose_fan_out_cannot_fit_is_named_in_one_error():
    """Fan-out is known only once the consumers are cut: the mapper goes on past the first layer
    whose one neuron reaches more consumer cores than a core's routing holds, and names every such
    layer in one error."""
    rng = np.random.default_rng(1)
    chip = spec(neurons_per_core=4, output_fanout_per_core=8)
    layers = [dense(rng, "fc1", "x", (3,), 2, zeros=0), mtn(rng, "h1", ["fc1"], (2,), levels=1),
              dense(rng, "fc2", "h1", (2,), 40, zeros=0), mtn(rng, "h2", ["fc2"], (40,), levels=1),
              dense(rng, "fc3", "h2", (40,), 2, zeros=0), mtn(rng, "h3", ["fc3"], (2,), levels=1),
              dense(rng, "fc4", "h3", (2,), 40, zeros=0), mtn(rng, "h4", ["fc4"], (40,), levels=1),
              dense(rng, "fc5", "h4", (40,), 2, zeros=0), rn.readout(rng, "out", ["fc5"], (2,))]
    net = IntNetwork(IntSource("x", (3,), 1.0, bits=1), layers, "out")
    with pytest.raises(N2CError) as info:
        mp.map_network(net, chip)
    msg = str(info.value)
    assert msg.startswith("2 layers cannot fit one") and "\n" not in msg
    assert "layer 'h1': one neuron needs 10 output fan-out edges (limit 8 per core)" in msg
    assert "layer 'h3': one neuron needs 10 output fan-out edges (limit 8 per core)" in msg
    m = mp.map_network(net, chip, unfit_ok=True)
    assert set(m.unfit) == {"h1", "h3"}
