"""The registry of neuron kinds: every kind answers for itself, and the window rules that the
reference's Lava timing and the Lava models share agree with the zero-delay runs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from n2c.errors import QuantizationError
from n2c.fixed_point import LOIHI, StateClamp
from n2c.neurons import BY_NIR_NAME, KINDS, kind
from n2c.neurons.kind import NeuronKind, window_position


class _Neuron:
    """The attributes a kind reads, as an IntNeuron or a Lava model has them."""

    def __init__(self, shape=(3,), **params):
        self.name, self.shape = "n", shape
        self.bias = np.zeros(shape, np.int64)
        self.__dict__.update(params)


def test_every_kind_is_registered_once_under_its_name():
    assert set(KINDS) == {"mtn", "parallel", "sfn", "lif", "li", "lif_subtract", "lif_subtract_now", "readout",
                          "relay"}
    assert all(isinstance(k, NeuronKind) and KINDS[name] is k and k.name == name for name, k in KINDS.items())
    assert {name: k.name for name, k in BY_NIR_NAME.items()} == \
        {"multi_threshold_if": "mtn", "parallel": "parallel", "scale_and_fire": "sfn"}


def test_an_unknown_kind_is_a_one_line_error():
    with pytest.raises(QuantizationError, match="unknown neuron kind 'lstm'; known: mtn"):
        kind("lstm")


def test_output_delays_and_spiking():
    assert [KINDS[k].output_delay(5) for k in ("mtn", "parallel", "sfn", "lif", "li", "readout", "relay")] == \
        [0, 5, 0, 0, 0, 0, 0]
    assert [KINDS[k].spiking for k in ("mtn", "parallel", "sfn", "lif", "li", "readout", "relay")] == \
        [True, True, True, True, False, False, False]


def test_a_relay_sends_its_input_and_keeps_nothing():
    relay = kind("relay")
    neuron = _Neuron(max_spikes=300, min_spikes=300)
    state = relay.initial_state(neuron, (3,))
    current = np.array([-300, 0, 299])
    assert np.array_equal(relay.step(neuron, state, current, None), current) and not state["v"].any()
    assert relay.message_range(neuron) == (-300, 300)


def test_message_ranges():
    assert kind("mtn").message_range(_Neuron(max_spikes=4, min_spikes=2)) == (-2, 4)
    assert kind("sfn").message_range(_Neuron(codes=np.array([-3, 0, 5]))) == (-3, 5)
    assert kind("parallel").message_range(_Neuron()) == kind("lif").message_range(_Neuron()) == (0, 1)
    assert kind("li").message_range(_Neuron()) == kind("readout").message_range(_Neuron()) == \
        (-LOIHI.state_max, LOIHI.state_max)


def test_window_position():
    assert [window_position(t, 2, 3) for t in range(8)] == [1, 2, 0, 1, 2, 0, 1, 2]


def _stream(k, neuron, currents, depth, timesteps):
    state, clamp = k.initial_state(neuron, neuron.shape), StateClamp()
    return np.stack([k.stream_step(neuron, state, c, t, depth, timesteps, clamp) for t, c in enumerate(currents)])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 16), timesteps=st.integers(1, 4), depth=st.integers(0, 3),
       name=st.sampled_from(["mtn", "sfn", "parallel", "readout", "lif", "li"]))
def test_lava_timed_windows_equal_zero_delay_windows(seed, timesteps, depth, name):
    """Sample by sample, the stream's window (delayed by depth and the kind's output delay) is
    what the zero-delay run of that sample gives."""
    rng = np.random.default_rng(seed)
    params = dict(threshold=rng.integers(1, 20, 3), v_init=rng.integers(0, 10, 3), max_spikes=3, min_spikes=2,
                  edges=np.array([-7, 3, 9]), codes=np.array([-2, 0, 1, 3]), code_value=4, du=rng.integers(0, 4096, 3),
                  dv=rng.integers(0, 4096, 3))
    neuron, k = _Neuron(**params), kind(name)
    samples = 3
    currents = rng.integers(-40, 60, (samples, timesteps, 3))
    late = k.output_delay(timesteps)
    stream = np.zeros((depth + samples * timesteps + late, 3), np.int64)
    stream[depth:depth + samples * timesteps] = currents.reshape(-1, 3)
    out = _stream(k, neuron, stream, depth, timesteps)
    for i in range(samples):
        expected, _ = k.run_window(neuron, currents[i][:, None], StateClamp())
        start = depth + i * timesteps + late
        assert np.array_equal(out[start:start + timesteps], expected[:, 0]), (name, i)
