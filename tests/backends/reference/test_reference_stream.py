"""The reference simulator's two timings: zero-delay (batched per sample window, what torch
computes) and Lava's (one stream, a step per synapse Process, a window per parallel neuron).
Inside every sample's window they must send the same messages."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from n2c.fixed_point import clamp24
from n2c.neurons import KINDS as NEURON_KINDS
from backends.reference.simulate import run_encoded
from backends.reference.stream import run_stream, stream_depths
from tests.random_networks import KINDS, conv_network, dense_network, inputs


def _readout_potentials(current: np.ndarray) -> np.ndarray:
    """The readout's v after every step of the window (it sends v), from its per-step input."""
    return np.stack([v for v in _accumulate(current)])


def _accumulate(current):
    v = np.zeros_like(current[0])
    for step in current:
        v = clamp24(v + step)
        yield v


def _assert_windows_match(net, s_in):
    t, b = s_in.shape[:2]
    zero_delay, lava_timed = run_encoded(net, s_in), run_stream(net, s_in)
    assert set(lava_timed.messages) == {layer.name for layer in net.layers if not hasattr(layer, "kind") or
                                        layer.kind in set(NEURON_KINDS) - {"relay"}}
    for name, sent in lava_timed.messages.items():
        expected = _readout_potentials(zero_delay.readout_current) if name == net.output else zero_delay.messages[name]
        assert np.array_equal(lava_timed.window(name, b), expected), name
    return zero_delay, lava_timed


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2 ** 16), st.sampled_from(KINDS), st.sampled_from([1, 2, 4]), st.booleans())
def test_lava_timing_equals_zero_delay_inside_sample_windows(seed, kind, timesteps, conv):
    net = conv_network(seed, kind, timesteps) if conv else dense_network(seed, kind, timesteps)
    _, lava_timed = _assert_windows_match(net, inputs(net, seed))
    # a silent hidden layer (seed 943, lif, T = 1) compares nothing: draw another network
    assume(any(m.any() for name, m in lava_timed.messages.items() if name != net.output))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2 ** 16), st.sampled_from(["mtn", "lif"]), st.sampled_from([3, 6]))
def test_synaptic_delays_shift_contributions_in_both_timings(seed, kind, timesteps):
    """One sample per stream: a delayed contribution past the window's end is lost in zero-delay
    timing and drains into the flush steps in Lava timing. The windows agree when the neurons
    before a delay are silent until their input arrives (here: no positive bias)."""
    net = dense_network(seed, kind, timesteps, delays=True)
    net.layers[1].bias = -np.abs(net.layers[1].bias)
    _assert_windows_match(net, inputs(net, seed, batch=1))


def test_a_neuron_that_fires_before_its_input_reaches_the_next_window_through_a_delay():
    """Why the condition above is needed: with a positive bias, n1 fires at step 0, before its
    window; through a delay that spike lands inside the readout's window in Lava timing."""
    net = dense_network(0, "mtn", 3, delays=True)
    net.layers[1].bias = np.full(6, int(net.layers[1].threshold.max()) * 2)
    s_in = np.zeros((3, 1, 7), np.int64)
    zero_delay, lava_timed = run_encoded(net, s_in), run_stream(net, s_in)
    assert lava_timed.messages["n1"][0].any()
    assert not np.array_equal(lava_timed.window("out", 1), _readout_potentials(zero_delay.readout_current))


def test_depths_count_synapse_processes_and_parallel_windows():
    net = conv_network(0, "parallel", 4)
    assert stream_depths(net) == {"x": 0, "c1": 1, "n1": 5, "pool": 6, "fc1": 7, "n2": 7, "fc2": 8, "out": 8}


@pytest.mark.parametrize("kind", ["mtn", "parallel"])
def test_neurons_act_before_the_first_sample_arrives(kind):
    """No gating: as Lava's LIFReset, a neuron updates from step 0, so a positive bias can make it
    send before its first window (d steps in); the reset at the window start hides it."""
    net = dense_network(1, kind, 2)
    n1 = net.layers[1]
    n1.bias = np.full(6, int(n1.threshold.max()) * 3)
    s_in = np.zeros((2, 1, 7), np.int64)
    lava_timed = run_stream(net, s_in)
    if kind == "mtn":
        assert lava_timed.messages["n1"][0].any()  # step 0, before the window at step 1
    else:  # the parallel neuron has nothing to send until a whole window has been integrated
        assert not lava_timed.messages["n1"][:1 + 2].any() and lava_timed.messages["n1"][3:].any()


def test_cli_timing_switch_gives_the_same_windows(digits_nir, tmp_path, capsys):
    """n2c simulate --timing lava streams the samples with Lava's delays; read per window, the
    readout equals the zero-delay run's exactly."""
    from n2c.cli.main import main

    outputs = {}
    for timing in ("zero-delay", "lava"):
        out = tmp_path / f"{timing}.npy"
        assert main(["simulate", str(digits_nir), "--samples", "40", "--timing", timing,
                     "--save-output", str(out)]) == 0
        outputs[timing] = np.load(out)
    assert np.array_equal(outputs["zero-delay"], outputs["lava"])
    assert main(["simulate", str(digits_nir), "--samples", "4", "--timing", "lava", "--backend", "lava"]) == 2
    assert "--timing lava applies to integer runs on the reference" in capsys.readouterr().err
