"""Every neuron kind on Lava, bit-exact with the reference simulator step by step: polarity
(into dense, conv and sum-pool), scale-and-fire, parallel (output one window late), the CUBA
neuron with per-neuron parameters ("lif" custom) and its potential-sending form ("li"); edge
cases (values exactly at thresholds, membranes saturating at ±2^23, u wrapping, du ∈ {0, 4095});
and streaming B samples equals running each alone."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.reference.stream import flush_steps, stream_depths as pipeline_depths
from backends.lava.lower import _lower, check_network, run_lava_stream, \
    run_lava_steps
from backends.lava.neurons import stock_lif_mismatch
from backends.ir.integer import IntNetwork, IntNeuron, IntSource, IntSynapse, message_bits
from n2c.fixed_point import STATE_MAX, clamp24
from backends.reference.simulate import run_encoded
from n2c.errors import QuantizationError
from tests.contracts.test_reference_equals_lava import LAVA_SETTINGS

FEW = settings(LAVA_SETTINGS, max_examples=3)  # ~1 s per Lava run
BIG = STATE_MAX  # 2^23 - 1, the largest 24-bit bias


# --- network builders ---------------------------------------------------------------------------

def _weights(rng, shape) -> np.ndarray:
    """Mixed-sign weights in [-256, 254], odd ones included (Lava drops their LSB; the reference knows)."""
    return rng.integers(-256, 255, size=shape).astype(np.int64)


def _dense(name, src, n_in, n_out, rng, weight=None) -> IntSynapse:
    return IntSynapse(name, "dense", src, (n_in,), (n_out,), weight=_weights(rng, (n_out, n_in)) if weight is None
                      else np.asarray(weight, dtype=np.int64))


def _mtn(rng, name, src, shape, spread, max_spikes, min_spikes=0) -> IntNeuron:
    """Thresholds scaled to the expected current ``spread``, so counts spread over -K⁻..K."""
    theta = rng.integers(max(1, int(spread / (3 * max_spikes))), int(spread / max_spikes) + 2, size=shape)
    bias = rng.integers(-int(spread) // 4, int(spread) // 4 + 1, size=shape)
    return IntNeuron(name, "mtn", [src], shape, 1.0, bias=bias, threshold=theta, v_init=rng.integers(0, theta),
                     max_spikes=max_spikes, min_spikes=min_spikes)


def _sfn(rng, name, src, shape, spread, codes) -> IntNeuron:
    codes = np.asarray(codes, dtype=np.int64)
    unit = max(1, int(spread / (2 * max(abs(codes).max(), 1))))
    edges = unit * (codes[:-1] + codes[1:]) // 2 + rng.integers(-unit // 4, unit // 4 + 1, size=len(codes) - 1)
    edges = np.maximum.accumulate(edges) + np.arange(len(edges))  # strictly ascending
    return IntNeuron(name, "sfn", [src], shape, 1.0, bias=rng.integers(-unit, unit + 1, size=shape),
                     v_init=rng.integers(-unit, unit + 1, size=shape), edges=edges, codes=codes, code_value=unit,
                     max_spikes=max(int(codes.max()), 0), min_spikes=max(-int(codes.min()), 0))


def _parallel(rng, name, src, shape, spread) -> IntNeuron:
    theta = rng.integers(max(1, int(spread / 2)), int(1.5 * spread) + 2, size=shape)
    return IntNeuron(name, "parallel", [src], shape, 1.0, bias=rng.integers(-int(spread) // 3, int(spread) // 3 + 1,
                                                                             size=shape),
                     threshold=theta, v_init=theta // 2)


def _cuba(rng, name, src, shape, spiking: bool) -> IntNeuron:
    """Per-neuron du, dv (0 and 4095 included), threshold, and biases with no 13-bit mantissa."""
    n = int(np.prod(shape))
    du = np.resize(np.concatenate([[0, 4095], rng.integers(0, 4096, size=n)]), n).reshape(shape)
    dv = np.resize(np.concatenate([[4095, 0], rng.integers(0, 2048, size=n)]), n).reshape(shape)
    bias = rng.integers(-9000, 9000, size=shape) * 2 + 1  # odd and beyond 4095: no mantissa/exponent
    neuron = IntNeuron(name, "lif" if spiking else "li", [src], shape, 1.0, bias=bias,
                       v_init=np.zeros(shape, dtype=np.int64), du=du, dv=dv)
    if spiking:
        neuron.threshold = rng.integers(20, 600, size=shape)
    return neuron


def _readout(rng, name, inputs, shape) -> IntNeuron:
    return IntNeuron(name, "readout", list(inputs), shape, 1.0, bias=rng.integers(-50, 50, size=shape))


def polarity_dense_net(seed: int) -> IntNetwork:
    """signed x (6,) → fc1 → polarity (5,) K=3, K⁻=2 → fc2 → polarity (4,) K=2, K⁻=4 → fc3 → readout."""
    rng = np.random.default_rng(seed)
    layers = [_dense("fc1", "x", 6, 5, rng), _mtn(rng, "n1", "fc1", (5,), 26000, 3, 2),
              _dense("fc2", "n1", 5, 4, rng), _mtn(rng, "n2", "fc2", (4,), 500, 2, 4),
              _dense("fc3", "n2", 4, 3, rng), _readout(rng, "out", ["fc3"], (3,))]
    return IntNetwork(IntSource("x", (6,), 1.0, signed=True), layers, "out", 3)


def polarity_conv_net(seed: int) -> IntNetwork:
    """signed x (2,5,4) → conv 3x3 → polarity → conv 3x2 (pad 1,0) → polarity → sum-pool 2x2 → dense
    → readout: negative graded spikes into a Conv and into a SumPool."""
    rng = np.random.default_rng(seed)
    s0, s1, s2, s3 = (2, 5, 4), (3, 5, 4), (2, 5, 3), (2, 2, 1)
    layers = [IntSynapse("c1", "conv", "x", s0, s1, weight=_weights(rng, (3, 2, 3, 3)), padding=(1, 1)),
              _mtn(rng, "n1", "c1", s1, 130000, 2, 2),
              IntSynapse("c2", "conv", "n1", s1, s2, weight=_weights(rng, (2, 3, 3, 2)), padding=(1, 0)),
              _mtn(rng, "n2", "c2", s2, 1500, 3, 1),
              IntSynapse("pool", "sumpool", "n2", s2, s3, kernel=(2, 2), stride=(2, 2), groups=2),
              IntSynapse("fc", "dense", "pool", s3, (3,), weight=_weights(rng, (3, 4))),
              _readout(rng, "out", ["fc"], (3,))]
    return IntNetwork(IntSource("x", s0, 1.0, signed=True), layers, "out", 2)


def sfn_net(seed: int) -> IntNetwork:
    """x (6,) → fc1 → SFN with signed codes (-9..12; |min| > max + 1) → fc2 → SFN (unsigned) → readout."""
    rng = np.random.default_rng(seed)
    layers = [_dense("fc1", "x", 6, 5, rng), _sfn(rng, "n1", "fc1", (5,), 60000, [-9, -3, 0, 1, 4, 12]),
              _dense("fc2", "n1", 5, 4, rng), _sfn(rng, "n2", "fc2", (4,), 3000, [0, 2, 5, 6]),
              _dense("fc3", "n2", 4, 3, rng), _readout(rng, "out", ["fc3"], (3,))]
    return IntNetwork(IntSource("x", (6,), 1.0), layers, "out", 3)


def parallel_net(seed: int, timesteps: int) -> IntNetwork:
    """x → fc1 → parallel → fc2 → parallel → fc3 → readout, plus x → skip → readout: the skip is
    2T + 2 steps shallower (a DelayLine aligns it)."""
    rng = np.random.default_rng(seed)
    layers = [_dense("fc1", "x", 6, 5, rng), _parallel(rng, "p1", "fc1", (5,), 30000),
              _dense("fc2", "p1", 5, 4, rng), _parallel(rng, "p2", "fc2", (4,), 250),
              _dense("fc3", "p2", 4, 3, rng), _dense("skip", "x", 6, 3, rng),
              _readout(rng, "out", ["fc3", "skip"], (3,))]
    return IntNetwork(IntSource("x", (6,), 1.0), layers, "out", timesteps)


def cuba_net(seed: int) -> IntNetwork:
    """binary x (6,) → fc1 → custom LIF (per-neuron du, dv, θ, odd biases) → fc2 → LI (sends v)
    → identity → readout, as quantize builds NIR's LI before the Output."""
    rng = np.random.default_rng(seed)
    layers = [_dense("fc1", "x", 6, 8, rng), _cuba(rng, "n1", "fc1", (8,), True),
              _dense("fc2", "n1", 8, 4, rng), _cuba(rng, "li", "fc2", (4,), False),
              _dense("id", "li", 4, 4, rng, weight=np.eye(4)), _readout(rng, "out", ["id"], (4,))]
    return IntNetwork(IntSource("x", (6,), 1.0), layers, "out", 8)


def mixed_net(seed: int) -> IntNetwork:
    """Every kind in one chain, x → polarity → parallel → SFN → custom LIF → LI → readout, with a
    skip from the polarity layer to the readout."""
    rng = np.random.default_rng(seed)
    layers = [_dense("fc1", "x", 6, 5, rng), _mtn(rng, "pol", "fc1", (5,), 26000, 2, 2),
              _dense("fc2", "pol", 5, 5, rng), _parallel(rng, "par", "fc2", (5,), 350),
              _dense("fc3", "par", 5, 5, rng), _sfn(rng, "sfn", "fc3", (5,), 400, [-2, 0, 1, 3]),
              _dense("fc4", "sfn", 5, 6, rng), _cuba(rng, "lif", "fc4", (6,), True),
              _dense("fc5", "lif", 6, 3, rng), _cuba(rng, "li", "fc5", (3,), False),
              _dense("id", "li", 3, 3, rng, weight=np.eye(3)), _dense("skip", "pol", 5, 3, rng),
              _readout(rng, "out", ["id", "skip"], (3,))]
    par = layers[3]
    par.v_init[0] = 8 * par.threshold[0]  # it would fire at once if it counted before its first whole window
    return IntNetwork(IntSource("x", (6,), 1.0, signed=True), layers, "out", 3)


def _inputs(net: IntNetwork, seed: int, batch: int = 3, binary: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed + 1000)
    shape = (net.timesteps, batch, *net.source.shape)
    if binary:
        return (rng.random(shape) < 0.5).astype(np.int64)
    lo, hi = (-128, 128) if net.source.signed else (0, 256)
    return rng.integers(lo, hi, size=shape).astype(np.int64)


# --- comparison ---------------------------------------------------------------------------------

def _potentials(current: np.ndarray) -> np.ndarray:
    """Readout potentials per step from its input per step (v = clamp24(v + input), from 0)."""
    v, out = np.zeros(current.shape[1:], dtype=np.int64), []
    for c in current:
        v = clamp24(v + c)
        out.append(v)
    return np.stack(out)


def assert_steps_equal(net: IntNetwork, s_in: np.ndarray, active: tuple[str, ...] = ()) -> None:
    """Lava's aligned per-step messages equal the reference's for every neuron, and so do the
    readout potentials (compared as potentials, so a saturating readout is compared exactly)."""
    ref = run_encoded(net, s_in)
    current, messages = run_lava_steps(net, s_in, progress=False, record=True)
    neurons = [layer.name for layer in net.layers if isinstance(layer, IntNeuron) and layer.name != net.output]
    assert sorted(messages) == sorted(neurons)
    for name in neurons:
        assert messages[name].shape == ref.messages[name].shape, name
        steps = len(s_in)
        assert np.array_equal(messages[name], ref.messages[name]), \
            f"{name}\nlava:\n{messages[name].reshape(steps, -1)}\nreference:\n{ref.messages[name].reshape(steps, -1)}"
    assert np.array_equal(np.cumsum(current, axis=0), _potentials(ref.readout_current))
    assert np.array_equal(np.cumsum(current, axis=0)[-1], ref.output)
    for name in active:  # the comparison is not between silent layers
        assert np.count_nonzero(ref.messages[name]) > 0.1 * ref.messages[name].size, name


# --- differential tests -------------------------------------------------------------------------

@pytest.mark.slow
@FEW
@given(seed=st.integers(0, 2 ** 16))
def test_polarity_into_dense(seed):
    net = polarity_dense_net(seed)
    assert_steps_equal(net, _inputs(net, seed), active=("n1", "n2"))
    assert (run_encoded(net, _inputs(net, seed)).messages["n1"] < 0).any()


@pytest.mark.slow
@settings(FEW, max_examples=2)
@given(seed=st.integers(0, 2 ** 16))
def test_polarity_into_conv_and_sumpool(seed):
    net = polarity_conv_net(seed)
    s_in = _inputs(net, seed, batch=2)
    assert_steps_equal(net, s_in, active=("n1", "n2"))
    ref = run_encoded(net, s_in).messages
    assert (ref["n1"] < 0).any() and (ref["n2"] < 0).any()


@pytest.mark.slow
@FEW
@given(seed=st.integers(0, 2 ** 16))
def test_scale_and_fire(seed):
    net = sfn_net(seed)
    assert_steps_equal(net, _inputs(net, seed), active=("n1", "n2"))


@pytest.mark.slow
@pytest.mark.parametrize("timesteps", [2, 4])
def test_parallel_neuron_one_window_late(timesteps):
    net = parallel_net(7 + timesteps, timesteps)
    assert pipeline_depths(net)["p2"] == 2 + 2 * timesteps
    assert_steps_equal(net, _inputs(net, timesteps), active=("p1", "p2"))


@pytest.mark.slow
@settings(FEW, max_examples=2)
@given(seed=st.integers(0, 2 ** 16))
def test_custom_lif_and_li_output(seed):
    net = cuba_net(seed)
    assert stock_lif_mismatch(net.by_name()["n1"]) is not None  # the custom CUBA Process runs it
    assert_steps_equal(net, _inputs(net, seed, binary=True), active=("n1", "li"))


def edge_net(timesteps: int = 6) -> IntNetwork:
    """One source (5,), nine branches into one readout, each neuron with its edge cases.

    Channels 0-3: m exactly at ±θ, SFN thresholds and parallel totals at multiples of θ (weights
    2, even inputs); v = vth·64 exactly (no spike, strict) in a LIF with du = 4095, dv = 0; biases
    ±(2^23 − 1) that saturate every membrane; u wrapping at 2^23 (du = 0, input 127·254·64 per
    step). Channel 4 drives an LI whose potential (±2^21) swings the next layers by ±2^23 per
    step, so a membrane that saturated comes back earlier than an unsaturated one would."""
    rng = np.random.default_rng(0)

    def cols(w):  # (4, 4) weights on channels 0-3
        return np.hstack([np.asarray(w, dtype=np.int64), np.zeros((len(w), 1), dtype=np.int64)])

    two, lif_w, z4 = cols(2 * np.eye(4)), cols(np.diag([1, 1, 1, 254])), np.zeros(4, np.int64)
    sat = np.array([0, 0, BIG, -BIG])
    swing = [[4]] * 4
    branches = {
        "pol": IntNeuron("pol", "mtn", ["f_pol"], (4,), 1.0, bias=sat, threshold=np.full(4, 4), v_init=z4,
                         max_spikes=2, min_spikes=2),
        "sat": IntNeuron("sat", "mtn", ["f_sat"], (4,), 1.0, bias=np.array([BIG, -BIG, 3, -4]),
                         threshold=np.full(4, 1000), v_init=z4),
        "sfn": IntNeuron("sfn", "sfn", ["f_sfn"], (4,), 1.0, bias=sat, v_init=z4, edges=np.array([-4, 2, 8]),
                         codes=np.array([-2, 0, 1, 3]), code_value=4, max_spikes=3, min_spikes=2),
        "par": IntNeuron("par", "parallel", ["f_par"], (4,), 1.0, bias=np.array([0, 2, BIG, -BIG]),
                         threshold=np.full(4, 4), v_init=z4),
        "lif": IntNeuron("lif", "lif", ["f_lif"], (4,), 1.0, bias=np.array([0, BIG, -BIG, 0]),
                         threshold=np.array([1, 2, 3, 100]), v_init=z4, du=np.array([4095, 4095, 0, 0]),
                         dv=np.array([0, 0, 4095, 1])),
        "li": IntNeuron("li", "li", ["f_li"], (4,), 1.0, bias=np.array([5, BIG, -BIG, 0]), v_init=z4,
                        du=np.array([4095, 0, 4095, 0]), dv=np.array([0, 4095, 1, 0])),
        "smtn": IntNeuron("smtn", "mtn", ["f_smtn"], (4,), 1.0, bias=z4, v_init=z4, max_spikes=1, min_spikes=1,
                          threshold=np.array([2 ** 21, 2 ** 22, 3 * 2 ** 21, BIG])),
        "ssfn": IntNeuron("ssfn", "sfn", ["f_ssfn"], (4,), 1.0, bias=z4, v_init=z4, edges=np.array([-2 ** 22, 2 ** 22]),
                          codes=np.array([-1, 0, 1]), code_value=2 ** 21, max_spikes=1, min_spikes=1),
        "spar": IntNeuron("spar", "parallel", ["f_spar"], (4,), 1.0, bias=np.array([0, 2 ** 22, -2 ** 22, BIG]),
                          threshold=np.array([2 ** 20, 2 ** 21, 2 ** 19, 2 ** 22]), v_init=z4),
    }
    weights = {"pol": two, "sat": two, "sfn": two, "par": two, "lif": lif_w, "li": lif_w}
    layers = [_dense("f_drv", "x", 5, 1, rng, [[0, 0, 0, 0, 254]]),
              IntNeuron("drv", "li", ["f_drv"], (1,), 1.0, bias=np.zeros(1, np.int64), v_init=np.zeros(1, np.int64),
                        du=np.array([4095]), dv=np.array([4095]))]
    for name, neuron in branches.items():
        src, n_in, w = ("x", 5, weights[name]) if name in weights else ("drv", 1, swing)
        layers += [_dense(f"f_{name}", src, n_in, 4, rng, w), neuron, _dense(f"to_{name}", name, 4, 4, rng, np.eye(4))]
    layers.append(_readout(rng, "out", [f"to_{name}" for name in branches], (4,)))
    return IntNetwork(IntSource("x", (5,), 1.0, signed=True), layers, "out", timesteps)


def edge_inputs() -> np.ndarray:
    """(6, 2, 5): small even values on channels 0-2, 127 on channel 3, ±127 swings on channel 4."""
    s_in = np.random.default_rng(1).integers(-3, 4, size=(6, 2, 5)) * 2
    s_in[..., 3] = 127
    s_in[:, 0, 4], s_in[:, 1, 4] = [127] * 3 + [-127] * 3, [-127] * 2 + [127] * 4
    return s_in


@pytest.mark.slow
def test_edge_cases():
    net, s_in = edge_net(), edge_inputs()
    ref = run_encoded(net, s_in)
    m = ref.messages
    assert (m["sfn"] == -2).any() and (m["pol"][..., :2] == -1).any() and (m["pol"][..., :2] == 1).any()
    assert (m["li"] == BIG).any() and (m["li"] == -BIG).any()  # v clipped at ±(2^23 − 1)
    assert {"pol", "sat", "sfn", "par", "smtn", "ssfn", "spar"} <= set(ref.overflows)  # membranes saturated
    assert_steps_equal(net, s_in)


# --- streaming and the stream contract ----------------------------------------------------------

@pytest.mark.slow
def test_stream_equals_each_sample_alone():
    """B samples streamed back to back give, window for window, what each gives alone; the raw
    stream has L = B·T + flush steps, aligned by ``pipeline_depths`` it equals the reference, and
    the state after the run equals the last sample's alone."""
    net = mixed_net(3)
    t, b = net.timesteps, 3
    s_in = _inputs(net, 3, batch=b)
    messages, state = run_lava_stream(net, s_in)
    depth, flush = pipeline_depths(net), flush_steps(net)
    neurons = [layer for layer in net.layers if isinstance(layer, IntNeuron)]
    assert flush == depth["out"] == 6 + t
    ref = run_encoded(net, s_in)
    for layer in neurons:
        assert messages[layer.name].shape == (b * t + flush, *layer.shape)
        assert set(state[layer.name]) == {"lif": {"v", "u"}, "li": {"v", "u"}, "parallel": {"v", "pending"}}.get(
            layer.kind, {"v"})
        windows = np.stack([messages[layer.name][i * t + depth[layer.name]:][:t] for i in range(b)], axis=1)
        expected = ref.messages[layer.name] if layer.name != "out" else _potentials(ref.readout_current)
        assert np.array_equal(windows, expected), layer.name
    for name in ("pol", "par", "sfn", "lif", "li"):
        assert np.count_nonzero(ref.messages[name]) > 0, name
    pol = net.by_name()["pol"]  # before its input arrives (t < d) a neuron runs on its bias from v_init
    assert np.array_equal(messages["pol"][0], np.clip((pol.v_init + pol.bias) // pol.threshold, -2, 2))
    assert not messages["par"][:depth["par"]].any()  # no count before a whole window has been seen
    for i in range(b):
        alone, alone_state = run_lava_stream(net, s_in[:, i:i + 1])
        for layer in neurons:
            d = depth[layer.name]
            assert np.array_equal(alone[layer.name][d:d + t], messages[layer.name][i * t + d:i * t + d + t])
    for layer in neurons:  # the last sample alone ends in the same state as the stream
        for var, value in state[layer.name].items():
            assert np.array_equal(alone_state[layer.name][var], value), (layer.name, var)


# --- lowering decisions (no Lava run) -----------------------------------------------------------

def test_message_bits_hold_every_message():
    net = edge_net()
    bits = {layer.name: message_bits(layer) for layer in net.layers if isinstance(layer, IntNeuron)}
    assert bits == {"drv": 24, "pol": 3, "sat": 1, "sfn": 3, "par": 1, "lif": 1, "li": 24, "smtn": 2, "ssfn": 2,
                    "spar": 1, "out": 24}
    codes = IntNeuron("s", "sfn", [], (1,), 1.0, bias=np.zeros(1), edges=np.array([0, 1]), codes=np.array([-9, 0, 4]))
    assert message_bits(codes) == 5  # -9 needs 4 magnitude bits and a sign


def test_stock_lif_where_it_matches_and_custom_otherwise():
    from lava.proc.lif.process import LIFReset

    from backends.lava.processes.neurons import CubaNeuron

    net = cuba_net(0)
    uniform = net.by_name()["n1"]
    uniform.du, uniform.dv = np.full(8, 4095), np.zeros(8, np.int64)
    uniform.threshold, uniform.bias = np.full(8, 100), np.arange(8) * 8 - 3000
    assert stock_lif_mismatch(uniform) is None
    low = _lower(net, _inputs(net, 0, batch=1), record=True)  # builds the Processes; nothing runs
    assert type(low.procs["n1"]) is LIFReset and type(low.procs["li"]) is CubaNeuron
    net = parallel_net(0, 4)  # the skip into the readout is 10 steps shallower: one DelayLine
    senders = [port.process for port in _lower(net, _inputs(net, 0, batch=1)).procs["out"].a_in.in_connections]
    assert sorted(type(p).__name__ for p in senders) == ["DelayLine", "Dense"]


@pytest.mark.parametrize("change,match", [
    (lambda n: setattr(n.by_name()["n1"], "du", np.full(8, 4096)), "du outside Loihi's 12-bit decay"),
    (lambda n: setattr(n.by_name()["n1"], "threshold", np.full(8, 2 ** 17)), "unsigned 17 bits"),
    (lambda n: setattr(n.by_name()["li"], "bias", np.full(4, 2 ** 23)), "bias exceeds Loihi's 24-bit state"),
    (lambda n: setattr(n.by_name()["li"], "kind", "izhikevich"), "has no Lava lowering"),
])
def test_what_cannot_be_lowered_is_named(change, match):
    net = cuba_net(0)
    check_network(net)
    change(net)
    with pytest.raises(QuantizationError, match=match):
        check_network(net)
