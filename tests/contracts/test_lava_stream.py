"""Lava equals the reference simulator bit for bit, at every global step of one stream: every
neuron kind, dense/conv/pool, graded and negative messages, plus the edge cases of Loihi's
arithmetic (values exactly at threshold, membranes at ±2^23, odd mixed-sign weights, du 0 and
4095). Compared unaligned: ``backends.reference.stream.run_stream`` (Lava timing) against ``run_lava_stream``."""

from __future__ import annotations

import numpy as np
import pytest

from backends.lava.lower import run_lava_stream
from backends.ir.integer import IntNetwork, IntNeuron, IntSource, IntSynapse
from backends.reference.stream import run_stream
from tests.random_networks import KINDS, conv_network, dense_network, inputs

pytestmark = pytest.mark.slow


def assert_same_stream(net: IntNetwork, s_in: np.ndarray) -> dict:
    messages, state = run_lava_stream(net, s_in)
    ref = run_stream(net, s_in)
    assert set(messages) == set(ref.messages)
    for name, sent in messages.items():
        assert sent.shape == ref.messages[name].shape, name
        bad = np.argwhere(sent != ref.messages[name])
        assert not len(bad), f"{name}: first mismatch at step {bad[0][0]}: lava {sent[tuple(bad[0])]}, " \
                             f"reference {ref.messages[name][tuple(bad[0])]}"
    for name, variables in state.items():
        for var, value in variables.items():
            assert np.array_equal(value, ref.state[name][var]), f"{name}.{var}"
    return messages


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("conv", [False, True], ids=["dense", "conv"])
def test_every_neuron_kind_streams_bit_exactly(kind, conv):
    timesteps = 3 if kind == "parallel" else 2
    net = conv_network(11, kind, timesteps) if conv else dense_network(11, kind, timesteps)
    messages = assert_same_stream(net, inputs(net, 11, batch=2))
    assert messages["n1"].any()  # the layer under test is not silent
    if kind in ("polarity", "sfn"):
        assert (messages["n1"] < 0).any()  # negative graded messages reached the next layer


def test_values_exactly_at_threshold_and_saturated_membranes():
    """mtn: m = k·θ exactly gives k (floor); lif: v = θ·64 exactly does not fire (strict >), one
    step later it does; biases of ±2^22 drive membranes into the ±2^23 clip within a few steps."""
    bias = np.array([0, 0, 2 ** 22, -2 ** 22])
    layers = [IntSynapse("fc", "dense", "x", (4,), (4,), weight=np.diag([2, 4, 6, 8]).astype(np.int64)),
              IntNeuron("m", "mtn", ["fc"], (4,), 1.0, bias=bias, threshold=np.full(4, 100),
                        v_init=np.zeros(4, np.int64), max_spikes=3, min_spikes=3),
              IntSynapse("fc2", "dense", "x", (4,), (4,), weight=np.diag([2, 4, 2, 2]).astype(np.int64)),
              IntNeuron("l", "lif", ["fc2"], (4,), 1.0, bias=bias, threshold=np.array([128, 256, 2 ** 16, 2 ** 16]),
                        v_init=np.zeros(4, np.int64), du=np.full(4, 4095), dv=np.zeros(4, np.int64)),
              IntSynapse("r1", "dense", "m", (4,), (2,), weight=np.full((2, 4), 2, np.int64)),
              IntSynapse("r2", "dense", "l", (4,), (2,), weight=np.full((2, 4), 2, np.int64)),
              IntNeuron("out", "readout", ["r1", "r2"], (2,), 1.0, bias=np.zeros(2, np.int64))]
    net = IntNetwork(IntSource("x", (4,), 1.0), layers, "out", 4)
    s_in = np.zeros((4, 2, 4), np.int64)
    s_in[:, 0] = [50, 50, 0, 0]  # sample 0 into fc: 100 = θ and 200 = 2θ exactly
    s_in[:, 1] = [64, 64, 0, 0]  # sample 1 into fc2: a = 128, 256, so v = a·64 = θ·64 exactly
    messages = assert_same_stream(net, s_in)
    assert run_stream(net, s_in).overflows["m"]["count"] > 0  # the membranes did saturate
    assert messages["m"][1].tolist() == [1, 2, 3, -3]  # sample 0's first step (depth 1)
    assert messages["l"][5, :2].tolist() == [0, 0] and messages["l"][6, :2].tolist() == [1, 1]  # sample 1


@pytest.mark.parametrize("kind", ["mtn", "lif"])
def test_synaptic_delays_on_delay_dense(kind):
    """Per-synapse delays lower to Lava's DelayDense: the stream is bit-exact, and run_lava_steps
    (each sample alone when there are delays) equals the zero-delay reference per sample."""
    from backends.lava.lower import run_lava_steps
    from backends.reference.simulate import run_encoded

    net = dense_network(5, kind, 4, delays=True)
    net.layers[1].bias = -np.abs(net.layers[1].bias)  # silent before its input arrives (see test_reference_timing)
    s_in = inputs(net, 5, batch=2)
    messages = assert_same_stream(net, s_in)
    assert messages["n1"].any()
    current, recorded = run_lava_steps(net, s_in, progress=False, record=True)
    ref = run_encoded(net, s_in)
    assert np.array_equal(current, ref.readout_current) and np.array_equal(recorded["n1"], ref.messages["n1"])


@pytest.mark.parametrize("bits", [1, 8])
def test_relays_of_fan_in_splits_stream_bit_exactly(bits):
    """A network rewritten with relays (pooling relay, conv and dense partial sums, sliced inputs,
    dense delays) streams on Lava as on the reference, and its readout equals the original's."""
    from backends.hardware.fan_in import fit_fan_in
    from backends.lava.lower import run_lava_potentials
    from backends.reference.simulate import run_encoded
    from tests.backends.hardware.test_fan_in import TIGHT, wide_net
    from tests.backends.hardware.test_mapping import LOIHI2_RAW, spec

    net = wide_net(np.random.default_rng(bits), bits=bits)
    fitted = fit_fan_in(net, spec(LOIHI2_RAW, None, **TIGHT))
    assert {r["why"] for r in fitted.fan_in} == {"pooling", "partial sums"}
    s_in = inputs(net, 5, batch=3) % 2 ** bits
    messages = assert_same_stream(fitted, s_in)
    assert any(messages[r].any() for r in fitted.fan_in[0]["relay"])
    potentials, _ = run_lava_potentials(fitted, s_in, progress=False)
    assert np.array_equal(potentials[-1], run_encoded(net, s_in).output)
