"""The reference runs layers on floats that hold integers where a bound proves it exact
(``backends.reference.plan``). Differential tests: the float runs against the int64 kernels,
bit for bit, on random networks whose bounds fall in float32's range, in float64's, and past
the wraps; and the bound's choice itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.ir.integer import IntNetwork, IntNeuron, IntSource, IntSynapse
from backends.reference.plan import RunPlan
from backends.reference.simulate import run_encoded
from backends.reference.synapses import SynapseRun, synapse
from n2c.errors import QuantizationError
from tests.random_networks import KINDS, conv_network, dense_network, inputs


def _scaled(net: IntNetwork, weight_exp: int) -> IntNetwork:
    """The dense synapses shifted by ``weight_exp`` and every threshold and bias with them, so that
    currents reach float64's range (and past 32 bits, where Lava's Dense wraps)."""
    for layer in net.layers:
        if isinstance(layer, IntSynapse) and layer.kind == "dense":
            layer.weight_exp = weight_exp
    return net


def _assert_same(net: IntNetwork, s_in: np.ndarray) -> None:
    floats = run_encoded(net, s_in, plan=RunPlan(net))
    ints = run_encoded(net, s_in, plan=RunPlan(net, floats=False))
    assert np.array_equal(floats.output, ints.output)
    assert np.array_equal(floats.readout_current, ints.readout_current)
    assert floats.messages.keys() == ints.messages.keys()
    for name in ints.messages:
        assert floats.messages[name].dtype == np.int64
        assert np.array_equal(floats.messages[name], ints.messages[name]), name
    assert floats.overflows == ints.overflows


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 16), st.sampled_from(KINDS + ("relay",)), st.sampled_from([1, 3]), st.booleans(),
       st.sampled_from([-3, 0, 4, 10, 16]))
def test_float_runs_equal_the_int64_kernels(seed, kind, timesteps, conv, weight_exp):
    kind = "mtn" if kind == "relay" and conv else kind
    net = conv_network(seed, kind, timesteps) if conv else dense_network(seed, kind, timesteps)
    _assert_same(_scaled(net, weight_exp), inputs(net, seed))


def test_the_bound_picks_float32_float64_or_int64():
    net = dense_network(0, "mtn", 1)
    plan = RunPlan(net)
    n1 = net.layers[1]
    assert plan.neuron_type(n1, 1000) is torch.float32
    assert plan.neuron_type(n1, 2 ** 24) is torch.float64  # |v| ≤ 2^23 plus the current passes 2^24
    assert plan.neuron_type(n1, 2 ** 53) is None
    cuba = dense_network(0, "lif", 1).layers[1]
    assert plan.neuron_type(cuba, 10) is None  # CUBA's kernel is int64 only
    assert RunPlan(net, floats=False).neuron_type(n1, 10) is None


def test_a_synapse_takes_the_narrowest_exact_type_and_wraps_only_when_it_can():
    syn = IntSynapse("fc", "dense", "x", (4,), (2,), weight=np.full((2, 4), 254, np.int64))
    assert SynapseRun(syn, 255).dtype is torch.float32 and not SynapseRun(syn, 255).wraps
    syn.weight_exp = 16  # 254·4·255 << 16 ≈ 1.7e10: past int32, Lava's Dense wraps
    run = SynapseRun(syn, 255)
    assert run.wraps and run.dtype is torch.float64 and run.bound == 2 ** 31
    overflows: dict = {}
    out = synapse(syn, np.full((1, 4), 255, np.int64), overflows)
    expected = ((254 * 4 * 255) << 16) % 2 ** 32
    assert out.tolist() == [[expected - 2 ** 32 if expected >= 2 ** 31 else expected] * 2]
    assert overflows["fc"]["count"] == 2


def test_sums_past_2_to_the_53_are_refused():
    syn = IntSynapse("fc", "dense", "x", (4,), (2,), weight=np.full((2, 4), 254, np.int64))
    with pytest.raises(QuantizationError, match="2\\^53"):
        SynapseRun(syn, 2 ** 50)


@pytest.mark.parametrize("bias", [0, 2 ** 23 - 1])
def test_a_readout_near_the_state_limit_runs_in_float64_and_saturates_alike(bias):
    """A bias at the state limit makes the readout's bound pass 2^24: float64, and its saturation
    counted as in int64."""
    src = IntSource("x", (3,), 1.0)
    layers = [IntSynapse("fc", "dense", "x", (3,), (2,), weight=np.full((2, 3), 254, np.int64)),
              IntNeuron("out", "readout", ["fc"], (2,), 1.0, bias=np.full(2, bias, np.int64))]
    net = IntNetwork(src, layers, "out", 4)
    s_in = np.full((4, 2, 3), 255, np.int64)
    _assert_same(net, s_in)
    if bias:
        assert run_encoded(net, s_in).overflows["out"]["count"] > 0
