"""Differential tests: the Lava backend against the reference integer simulator (bit-exact),
plus guard tests pinning the Lava fixed-point quirks the reference relies on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from backends.lava.layout import conv_weight_for_lava, dense_columns_for_lava, lava_shape, regroup_conv_weight, to_lava
from backends.lava.lower import run_lava
from backends.ir.integer import IntNetwork, IntNeuron, IntSource, IntSynapse
from backends.reference.simulate import simulate
from n2c.errors import QuantizationError

# a Lava run costs ~1 s: few examples, no shrinking (a failure reports the drawn seed instead)
LAVA_SETTINGS = settings(max_examples=10, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
                         suppress_health_check=[HealthCheck.too_slow])


# --- random integer networks --------------------------------------------------------------------

def _weights(rng: np.random.Generator, shape, even: bool) -> np.ndarray:
    """Mixed-sign weights in [-256, 254]; odd ones test Lava's LSB truncation in Dense."""
    w = rng.integers(-128, 128, size=shape) * 2 if even else rng.integers(-256, 255, size=shape)
    return w.astype(np.int64)


def _mtn(rng, name, inputs, shape, max_spikes, fan_in, in_rms) -> IntNeuron:
    """Thresholds scaled to the expected current (√fan_in · 150 · rms input), so counts spread over 0..K."""
    spread = np.sqrt(fan_in) * 150 * in_rms
    theta = rng.integers(max(1, int(spread / (3 * max_spikes))), int(spread / max_spikes) + 2, size=shape)
    bias = rng.integers(-int(spread) // 6, int(spread) // 4 + 1, size=shape)  # negative biases included
    return IntNeuron(name, "mtn", inputs, shape, 1.0, bias=bias, threshold=theta, v_init=rng.integers(0, theta),
                     max_spikes=max_spikes)


def _readout(rng, name, inputs, shape) -> IntNeuron:
    return IntNeuron(name, "readout", inputs, shape, 1.0, bias=rng.integers(-50, 50, size=shape))


def _conv_out(in_shape, cout, kernel, stride, padding) -> tuple[int, int, int]:
    h, w = ((n + 2 * p - k) // s + 1 for n, k, s, p in zip(in_shape[1:], kernel, stride, padding))
    return cout, h, w


def dense_net(seed: int, timesteps: int, max_spikes: int, even: bool = False) -> IntNetwork:
    """source (7,) → dense → MTN (5,) → dense → readout (3,)."""
    rng = np.random.default_rng(seed)
    layers = [IntSynapse("fc1", "dense", "x", (7,), (5,), weight=_weights(rng, (5, 7), even)),
              _mtn(rng, "n1", ["fc1"], (5,), max_spikes, 7, 150),
              IntSynapse("fc2", "dense", "n1", (5,), (3,), weight=_weights(rng, (3, 5), even)),
              _readout(rng, "out", ["fc2"], (3,))]
    return IntNetwork(IntSource("x", (7,), 1.0), layers, "out", timesteps)


def conv_net(seed: int, timesteps: int, max_spikes: int, pool_into_dense: bool = False) -> IntNetwork:
    """source (2,6,5) → conv 3x2 (stride (1,2), pad (1,0)) → MTN → sumpool 2x2 → [grouped conv 1x1 → MTN]
    → flatten → dense → readout. Non-square everything, so a swapped H/W fails."""
    rng = np.random.default_rng(seed)
    s0 = (2, 6, 5)
    s1 = _conv_out(s0, 4, (3, 2), (1, 2), (1, 0))
    s2 = _conv_out(s1, 4, (2, 2), (2, 2), (0, 0))
    layers = [IntSynapse("c1", "conv", "x", s0, s1, weight=_weights(rng, (4, 2, 3, 2), False),
                         stride=(1, 2), padding=(1, 0)),
              _mtn(rng, "n1", ["c1"], s1, max_spikes, 12, 150),
              IntSynapse("pool", "sumpool", "n1", s1, s2, kernel=(2, 2), stride=(2, 2), groups=s1[0])]
    last = "pool"
    if not pool_into_dense:
        layers += [IntSynapse("c2", "conv", "pool", s2, s2, weight=_weights(rng, (4, 2, 1, 1), False), groups=2),
                   _mtn(rng, "n2", ["c2"], s2, max_spikes, 2, 6 * max_spikes)]
        last = "n2"
    n_in = int(np.prod(s2))
    layers += [IntSynapse("fc", "dense", last, s2, (3,), weight=_weights(rng, (3, n_in), False)),
               _readout(rng, "out", ["fc"], (3,))]
    return IntNetwork(IntSource("x", s0, 1.0), layers, "out", timesteps)


def conv_skip_net(seed: int) -> IntNetwork:
    """Conv-shaped paths of different depth into a conv-shaped readout:
    source (1,4,3) → c1 2x2 → MTN → c2 1x1 → out (2,3,2), and source → skip 2x2 → out."""
    rng = np.random.default_rng(seed)
    s0, s1 = (1, 4, 3), (2, 3, 2)
    layers = [IntSynapse("c1", "conv", "x", s0, s1, weight=_weights(rng, (2, 1, 2, 2), False)),
              _mtn(rng, "n1", ["c1"], s1, 3, 4, 150),
              IntSynapse("c2", "conv", "n1", s1, s1, weight=_weights(rng, (2, 2, 1, 1), False)),
              IntSynapse("skip", "conv", "x", s0, s1, weight=_weights(rng, (2, 1, 2, 2), False)),
              _readout(rng, "out", ["c2", "skip"], s1)]
    return IntNetwork(IntSource("x", s0, 1.0), layers, "out", 2)


def skip_net(seed: int, timesteps: int) -> IntNetwork:
    """Three paths of different depth into the readout: x → fc1 → n1 → fc2 → n2 → fc3 → out (depth 3),
    n1 → skip → out (depth 2) and a wide x → direct → out (depth 1) whose worst case exceeds 24 bits."""
    rng = np.random.default_rng(seed)
    n_in = 140
    direct = rng.choice([-256, 254], size=(3, n_in)).astype(np.int64)
    layers = [IntSynapse("fc1", "dense", "x", (n_in,), (5,), weight=_weights(rng, (5, n_in), True)),
              _mtn(rng, "n1", ["fc1"], (5,), 2, 14, 150),
              IntSynapse("fc2", "dense", "n1", (5,), (4,), weight=_weights(rng, (4, 5), True)),
              _mtn(rng, "n2", ["fc2"], (4,), 3, 5, 1),
              IntSynapse("fc3", "dense", "n2", (4,), (3,), weight=_weights(rng, (3, 4), True)),
              IntSynapse("skip", "dense", "n1", (5,), (3,), weight=_weights(rng, (3, 5), True)),
              IntSynapse("direct", "dense", "x", (n_in,), (3,), weight=direct),
              _readout(rng, "out", ["fc3", "skip", "direct"], (3,))]
    return IntNetwork(IntSource("x", (n_in,), 1.0), layers, "out", timesteps)


def wide_pool_net() -> IntNetwork:
    """A sum-pool over 130 channels: more groups than Lava's int8 ``groups`` holds (regrouped to 65)."""
    s0, s1 = (130, 3, 2), (130, 2, 1)
    layers = [IntSynapse("pool", "sumpool", "x", s0, s1, kernel=(2, 2), groups=130),
              IntNeuron("out", "readout", ["pool"], s1, 1.0, bias=np.arange(260).reshape(s1) - 100)]
    return IntNetwork(IntSource("x", s0, 1.0), layers, "out", 1)


def _inputs(net: IntNetwork, seed: int, batch: int = 3, density: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed + 1000)
    x = rng.integers(0, 256, size=(batch, *net.source.shape)) * (rng.random((batch, *net.source.shape)) < density)
    return x.astype(float)


def assert_bit_exact(net: IntNetwork, x: np.ndarray) -> None:
    expected = simulate(net, x).output
    got = run_lava(net, x, progress=False)
    assert got.dtype == np.int64 and got.shape == expected.shape
    assert np.array_equal(got, expected), f"lava:\n{got}\nreference:\n{expected}"


# --- layout helpers (no Lava run) ---------------------------------------------------------------

def test_dense_columns_follow_lava_flattening():
    rng = np.random.default_rng(0)
    in_shape = (2, 3, 4)
    w, s = rng.integers(-5, 5, size=(3, 24)), rng.integers(0, 9, size=in_shape)
    lava_flat = to_lava(s).ravel()
    assert lava_shape(in_shape) == (4, 3, 2)
    assert np.array_equal(dense_columns_for_lava(w, in_shape) @ lava_flat, w @ s.ravel())


def test_conv_weight_matches_torch_under_scipy_convolution():
    """Lava's Conv model convolves with scipy (kernel flipped); the lowering flips it back."""
    from lava.proc.conv.utils import conv_scipy

    rng = np.random.default_rng(1)
    x, w = rng.integers(0, 5, size=(2, 5, 4)), rng.integers(-9, 9, size=(3, 2, 3, 2))
    expected = F.conv2d(torch.tensor(x[None], dtype=torch.float64), torch.tensor(w, dtype=torch.float64),
                        stride=(2, 1), padding=(1, 0))[0].numpy()
    got = conv_scipy(to_lava(x), conv_weight_for_lava(w), (2, 3), (1, 2), (0, 1), (1, 1), 1)
    assert np.array_equal(to_lava(got), expected)


def test_regrouped_conv_weight_is_equivalent():
    rng = np.random.default_rng(2)
    x, w = torch.tensor(rng.normal(size=(1, 12, 3, 3))), torch.tensor(rng.normal(size=(6, 2, 2, 2)))
    coarse = torch.tensor(regroup_conv_weight(w.numpy(), groups=6, new_groups=2))
    assert torch.allclose(F.conv2d(x, w, groups=6), F.conv2d(x, coarse, groups=2))


def test_conv_weight_exp_is_rejected():
    net = conv_skip_net(0)
    net.layers[0].weight_exp = 1
    with pytest.raises(QuantizationError, match="weight_exp"):
        run_lava(net, _inputs(net, 0), progress=False)


# --- differential tests -------------------------------------------------------------------------

@pytest.mark.slow
@LAVA_SETTINGS
@given(seed=st.integers(0, 2 ** 16), timesteps=st.sampled_from([1, 3]), max_spikes=st.sampled_from([1, 4]),
       even=st.booleans())
def test_dense_network_is_bit_exact(seed, timesteps, max_spikes, even):
    net = dense_net(seed, timesteps, max_spikes, even)
    assert_bit_exact(net, _inputs(net, seed))


@pytest.mark.slow
@LAVA_SETTINGS
@given(seed=st.integers(0, 2 ** 16), timesteps=st.sampled_from([1, 3]), max_spikes=st.sampled_from([1, 2, 3]))
def test_conv_pool_dense_network_is_bit_exact(seed, timesteps, max_spikes):
    net = conv_net(seed, timesteps, max_spikes)
    assert_bit_exact(net, _inputs(net, seed))


@pytest.mark.slow
def test_pool_feeding_dense_directly_is_bit_exact():
    net = conv_net(3, 2, 2, pool_into_dense=True)
    assert_bit_exact(net, _inputs(net, 3))


@pytest.mark.slow
def test_conv_paths_of_different_depth_are_aligned():
    net = conv_skip_net(4)
    assert_bit_exact(net, _inputs(net, 4))


@pytest.mark.slow
def test_dense_paths_of_different_depth_are_aligned():
    net = skip_net(5, timesteps=3)
    assert_bit_exact(net, _inputs(net, 5, batch=4, density=0.05))


@pytest.mark.slow
def test_sumpool_over_more_than_127_channels():
    net = wide_pool_net()
    assert_bit_exact(net, _inputs(net, 6, batch=2))


@pytest.mark.slow
def test_values_exactly_at_threshold():
    """Currents that are exact multiples of θ fire (m ≥ θ), with negative bias and several samples."""
    layers = [IntSynapse("fc1", "dense", "x", (3,), (4,), weight=np.array([[4, 0, 0], [0, 8, 0], [4, 4, 0],
                                                                            [0, 0, 6]])),
              IntNeuron("n1", "mtn", ["fc1"], (4,), 1.0, bias=np.array([0, 0, -4, -2]),
                        threshold=np.array([4, 4, 4, 2]), v_init=np.zeros(4, dtype=np.int64), max_spikes=3),
              IntSynapse("fc2", "dense", "n1", (4,), (4,), weight=np.eye(4, dtype=np.int64) * 10),
              IntNeuron("out", "readout", ["fc2"], (4,), 1.0, bias=np.zeros(4, dtype=np.int64))]
    net = IntNetwork(IntSource("x", (3,), 1.0), layers, "out", timesteps=2)
    x = np.array([[1, 1, 1], [0, 1, 2], [2, 0, 0]], dtype=float)
    assert_bit_exact(net, x)
    assert run_lava(net, x[:1], progress=False)[0].tolist() == [20, 40, 20, 40]


# --- guard tests: Lava quirks the reference and the lowering rely on ----------------------------

def _lava_synapse_output(synapse, value: np.ndarray) -> np.ndarray:
    """Send ``value`` on two steps into a stock Lava synapse Process; return its output at step 2."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    source = Source(data=np.repeat(value[..., None], 2, axis=-1).astype(np.int32))
    sink = Sink(shape=synapse.a_out.shape, buffer=2)
    source.s_out.connect(synapse.s_in)
    synapse.a_out.connect(sink.a_in)
    try:
        synapse.run(condition=RunSteps(num_steps=2), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        return np.asarray(sink.data.get())[..., 1]
    finally:
        synapse.stop()


@pytest.mark.slow
def test_lava_dense_truncates_mixed_weights_and_does_not_saturate():
    """Mixed-sign weights lose their LSB (3 → 2, -3 → -4, 127 → 126, -1 → -2); the "16-bit" output
    is not clipped (the reference's lava_effective_weights and unsaturated dense currents)."""
    from lava.proc.dense.process import Dense

    dense = Dense(weights=np.array([[3, 0], [0, -3], [127, -1], [254, 254]]), num_message_bits=8)
    out = _lava_synapse_output(dense, np.array([200, 200]))
    assert out.tolist() == [400, -800, 24800, 101600]


@pytest.mark.slow
def test_lava_conv_ignores_weight_exp_and_wraps_at_24_bits():
    """Conv ignores weight_exp (lava #803) and wraps to 24 bits (two's complement) instead of
    saturating: 128·2^16 = 2^23 becomes -2^23. The reference saturates, so the lowering warns
    wherever a conv current can reach 2^23."""
    from lava.proc.conv.process import Conv

    conv = Conv(weight=np.full((2, 1, 1, 1), 128), weight_exp=3, input_shape=(1, 1, 1), num_message_bits=24)
    out = _lava_synapse_output(conv, np.full((1, 1, 1), 2 ** 16))
    assert out.ravel().tolist() == [-(2 ** 23)] * 2


@pytest.mark.slow
def test_lava_conv_groups_overflow_int8():
    """Conv stores groups as int8: 128 groups silently give zeros (why the lowering regroups)."""
    from lava.proc.conv.process import Conv

    conv = Conv(weight=np.ones((128, 1, 1, 1)), input_shape=(1, 1, 128), groups=128, num_message_bits=8)
    assert not _lava_synapse_output(conv, np.ones((1, 1, 128))).any()


def test_conv_that_may_wrap_warns():
    """A conv whose worst-case current reaches 2^23 warns: Lava wraps there, the reference saturates."""
    from backends.lava.lower import _direct, _lower

    rng = np.random.default_rng(7)
    s0, s1 = (16, 3, 3), (1, 1, 1)
    layers = [IntSynapse("c1", "conv", "x", s0, s1, weight=np.full((1, 16, 3, 3), 254)),
              _readout(rng, "out", ["c1"], s1)]
    net = IntNetwork(IntSource("x", s0, 1.0), layers, "out", 1)
    with pytest.warns(UserWarning, match="wraps at 24 bits"):
        _lower(net, _direct(net, _inputs(net, 7, batch=1)))  # builds the Processes; nothing runs
