"""Fan-in splits (``backends.hardware.fan_in``): relays make every neuron's inputs fit one core,
and the rewritten integer network computes exactly what the original does."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from backends.hardware import mapping as mp
from backends.hardware.fan_in import fit_fan_in
from backends.hardware.mapping.chains import compartments, connections_into
from backends.hardware.mapping.usage import over_limits, usage_grids
from backends.ir.integer import IntNetwork, IntSource
from backends.reference.simulate import run_encoded
from backends.reference.stream import run_stream
from tests import random_networks as rn
from tests.backends.hardware.test_mapping import (LOIHI1_RAW, LOIHI2_RAW, check_mapping, conv, conv_nets, dense, mtn,
                                                  small_chips, spec, sumpool)


def over(net, name, chip) -> dict:
    neuron = net.by_name()[name]
    usage = usage_grids(neuron, compartments(neuron, chip), connections_into(net, neuron, chip),
                        np.zeros(neuron.shape, np.int64), tuple(neuron.shape), chip)
    return over_limits(usage, chip)


def runnable(net: IntNetwork) -> IntNetwork:
    """The mapping tests' neurons with v(0) = 0, so that they can be simulated."""
    layers = [dataclasses.replace(x, v_init=np.zeros(x.shape, np.int64)) if getattr(x, "kind", "") == "mtn"
              and x.v_init is None else x for x in net.layers]
    return dataclasses.replace(net, layers=layers)


def wide_net(rng, bits: int = 8) -> IntNetwork:
    """x (16, 6, 6) → 3x3 conv (144 axons per neuron) → n1 → 2x2 sum-pool → 3x3 conv (8·36 axons
    folded) → n2 → dense over all 36 (with delays) → n3 (10,) → dense → readout."""
    s0 = (16, 6, 6)
    c1 = conv(rng, "c1", "x", s0, 8, 3, (1, 1), (1, 1), (1, 1), 1)
    p = sumpool("p", "n1", c1.out_shape, 2, 2, 0)
    c2 = conv(rng, "c2", "p", p.out_shape, 4, 3, (1, 1), (1, 1), (1, 1), 1)
    fc1 = dense(rng, "fc1", "n2", c2.out_shape, 10, zeros=0.0, delays=True)
    layers = [c1, mtn(rng, "n1", ["c1"], c1.out_shape, 3), p, c2, mtn(rng, "n2", ["c2"], c2.out_shape, 3),
              fc1, mtn(rng, "n3", ["fc1"], (10,), 2), dense(rng, "fc2", "n3", (10,), 3),
              rn.readout(rng, "out", ["fc2"], (3,))]
    return runnable(IntNetwork(IntSource("x", s0, 1.0, bits=bits), layers, "out"))


TIGHT = dict(input_axons_per_core=30, neurons_per_core=64)


def test_relays_make_every_layer_fit_and_change_nothing():
    net = wide_net(np.random.default_rng(1))
    chip = spec(LOIHI2_RAW, None, **TIGHT)
    assert over(net, "n1", chip) and over(net, "n2", chip) and over(net, "n3", chip)
    fitted = fit_fan_in(net, chip)
    by_layer = {(r["layer"], r["why"]) for r in fitted.fan_in}
    assert ("n1", "partial sums") in by_layer and ("n2", "pooling") in by_layer and ("n3", "partial sums") in by_layer
    for layer in fitted.layers:
        if hasattr(layer, "neuron_kind"):
            assert not over(fitted, layer.name, chip), layer.name
    m = mp.map_network(fitted, chip)
    check_mapping(m, fitted, chip)
    x = rn.inputs(net, 7, batch=6)
    a, b = run_encoded(net, x), run_encoded(fitted, x)
    assert np.array_equal(a.output, b.output)
    for name in ("n1", "n2", "n3"):  # every original neuron sends the same messages
        assert np.array_equal(a.messages[name], b.messages[name])


def test_the_joined_current_is_the_sum_of_the_relays():
    net = wide_net(np.random.default_rng(2))
    fitted = fit_fan_in(net, spec(LOIHI2_RAW, None, **TIGHT))
    x = rn.inputs(net, 3, batch=4)
    run = run_encoded(fitted, x)
    relays = next(r["relay"] for r in fitted.fan_in if r["layer"] == "n1")
    whole = run_encoded(net, x).messages["c1"]
    assert np.array_equal(sum(run.messages[r] for r in relays), whole)


def test_nothing_changes_when_everything_fits():
    net = wide_net(np.random.default_rng(3))
    assert fit_fan_in(net, spec(LOIHI2_RAW)) is net


def test_loihi1_relays_travel_as_bit_planes():
    """Binary spikes: a relay's message is wide, so the neuron reading it needs a compartment per bit,
    and the join reads one axon per bit plane per relay neuron."""
    net = wide_net(np.random.default_rng(4))
    chip = spec(LOIHI1_RAW, None, input_axons_per_core=600, neurons_per_core=1024)
    fitted = fit_fan_in(net, chip)
    relay = next(x for x in fitted.layers if getattr(x, "kind", None) == "relay")
    assert compartments(relay, chip) > 1


def test_a_layer_no_split_can_fit_is_left_for_the_mapper_to_name():
    """A 1x1 source over 400 inputs through a dense layer cannot fit 3 axons per core whatever the
    split (the join alone needs 2 axons per relay part and neuron)."""
    rng = np.random.default_rng(5)
    layers = [dense(rng, "fc", "x", (400,), 4, zeros=0.0), mtn(rng, "n", ["fc"], (4,), 1),
              dense(rng, "fc2", "n", (4,), 2, zeros=0.0), rn.readout(rng, "out", ["fc2"], (2,))]
    net = IntNetwork(IntSource("x", (400,), 1.0), layers, "out")
    chip = spec(LOIHI2_RAW, None, input_axons_per_core=3, neurons_per_core=64)
    fitted = fit_fan_in(net, chip)
    assert not any(r["layer"] == "n" for r in fitted.fan_in)
    with pytest.raises(Exception, match="layer 'n'"):
        mp.map_network(fitted, chip)


def test_a_neuron_over_a_limit_no_split_touches_is_left_at_once():
    """n reads x through a wide dense layer (splittable) and m through 40 axons that cannot be
    split (a negative weight exponent): past 30 axons whatever happens to the first. Its
    joins are never split in turn (they once were, without end: each split added joins)."""
    rng = np.random.default_rng(6)
    fb = dataclasses.replace(dense(rng, "fb", "m", (40,), 4, zeros=0.0), weight_exp=-1)
    layers = [dense(rng, "fm", "x", (60,), 40, zeros=0.0), mtn(rng, "m", ["fm"], (40,), 1),
              dense(rng, "fa", "x", (60,), 4, zeros=0.0), fb, mtn(rng, "n", ["fa", "fb"], (4,), 1),
              dense(rng, "fc2", "n", (4,), 2, zeros=0.0), rn.readout(rng, "out", ["fc2"], (2,))]
    net = IntNetwork(IntSource("x", (60,), 1.0), layers, "out")
    chip = spec(LOIHI2_RAW, None, input_axons_per_core=30, neurons_per_core=64)
    fitted = fit_fan_in(net, chip)
    assert over(fitted, "n", chip) and not any(r["layer"] == "n" for r in fitted.fan_in)
    assert len(fitted.layers) < 3 * len(net.layers)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_nets(), small_chips(), st.integers(0, 100))
def test_random_networks_after_relays_compute_the_same(net, chip, seed):
    """Any network, any chip: the rewritten network's output and every original neuron's messages
    equal the original's, in zero-delay and in Lava timing; what it maps fits every limit."""
    net = runnable(net)
    fitted = fit_fan_in(net, chip)
    x = rn.inputs(net, seed, batch=3)
    a, b = run_encoded(net, x), run_encoded(fitted, x)
    assert np.array_equal(a.output, b.output)
    names = [x.name for x in net.layers if hasattr(x, "neuron_kind") and x.name != net.output]
    assert all(np.array_equal(a.messages[n], b.messages[n]) for n in names)
    before, after = run_stream(net, x), run_stream(fitted, x)  # Lava's timing: deeper, and the same values
    assert np.array_equal(before.window(net.output, 3), after.window(fitted.output, 3))
    for r in fitted.fan_in:
        assert over(net, r["layer"], chip)  # relays only where a neuron did not fit
    try:
        m = mp.map_network(fitted, chip)
    except Exception as e:
        assert "cannot fit one" in str(e)
    else:
        check_mapping(m, fitted, chip)
