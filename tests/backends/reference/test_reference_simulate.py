"""Integer quantization and the reference simulator on the trained digits network."""

from __future__ import annotations

import numpy as np
import pytest

from backends.nir.to_layers import import_nir
from backends.ir.integer import IntNetwork, IntNeuron, IntSource, IntSynapse
from backends.quantize import quantize
from backends.reference.simulate import run_encoded, simulate
from n2c.fixed_point import lava_effective_weights
from n2c.errors import QuantizationError
from n2c.ann.train import accuracy, predict


@pytest.fixture(scope="module")
def int_net(digits_nir):
    return quantize(import_nir(digits_nir))


def test_quantized_weights_fit_loihi_formats(int_net):
    for layer in int_net.layers:
        if isinstance(layer, IntSynapse) and layer.weight is not None:
            assert layer.weight.min() >= -256 and layer.weight.max() <= 254
            assert (layer.weight % 2 == 0).all()  # mixed-sign weights survive Lava's LSB truncation
            assert np.array_equal(lava_effective_weights(layer.weight), layer.weight)
        if isinstance(layer, IntNeuron) and layer.kind == "mtn":
            assert layer.threshold.min() >= 16 and layer.threshold.max() < 2 ** 23
            assert np.log2(layer.scale).is_integer()


def test_integer_snn_is_within_one_point_of_the_ann(qcfs_model, int_net, digits_test):
    ann = accuracy(predict(qcfs_model, digits_test.x), digits_test.y)
    out = simulate(int_net, digits_test.x).output
    assert abs(accuracy(out, digits_test.y) - ann) <= 0.01


def test_integer_readout_tracks_float_logits(qcfs_model, int_net, digits_test):
    ann = predict(qcfs_model, digits_test.x)
    readout = simulate(int_net, digits_test.x).output / int_net.by_name()[int_net.output].scale
    assert (readout.argmax(1) == ann.argmax(1)).mean() >= 0.98
    assert np.abs(readout - ann).max() < 0.5 * np.abs(ann).max()


def test_batching_does_not_change_results(int_net, digits_test):
    whole = simulate(int_net, digits_test.x[:64]).output
    pieces = simulate(int_net, digits_test.x[:64], batch_size=7).output
    assert np.array_equal(whole, pieces)


def _tiny(threshold, max_spikes, v_init=0):
    src = IntSource("in", (3,), 1.0)
    syn = IntSynapse("fc", "dense", "in", (3,), (2,), weight=np.array([[2, 4, -6], [8, 0, 2]]))
    neuron = IntNeuron("n", "mtn", ["fc"], (2,), 1.0, bias=np.array([1, -1]), threshold=np.array([5, 5]),
                       v_init=np.full(2, v_init), max_spikes=max_spikes)
    out = IntSynapse("fo", "dense", "n", (2,), (1,), weight=np.array([[2, -2]]))
    readout = IntNeuron("r", "readout", ["fo"], (1,), 1.0, bias=np.array([0]))
    return IntNetwork(src, [syn, neuron, out, readout], "r", timesteps=2)


def test_hand_computed_integer_network():
    net = _tiny(5, 3)
    s = np.array([[[1, 2, 1]], [[0, 0, 3]]])  # (T=2, B=1, 3)
    r = run_encoded(net, s)
    # t=0: currents [2+8-6+1, 8+2-1] = [5, 9] -> k = [1, 1], v = [0, 4]
    # t=1: currents [-18+1, 6-1] = [-17, 5] -> m = [-17, 9] -> k = [0, 1]
    assert r.messages["n"][:, 0].tolist() == [[1, 1], [0, 1]]
    # readout: t0: 2*1 - 2*1 = 0; t1: 0 - 2 = -2 -> accumulated -2
    assert r.output.tolist() == [[-2]]


def test_missing_input_scale_is_an_error(digits_nir):
    graph = import_nir(digits_nir)
    graph.input.input_scale = None
    with pytest.raises(QuantizationError, match="input scale"):
        quantize(graph)
    assert quantize(graph, input_scale=1 / 16).source.scale == 1 / 16


def test_wrap_signed_is_twos_complement():
    from n2c.fixed_point import wrap_signed
    x = np.array([2 ** 23 - 1, 2 ** 23, -(2 ** 23), -(2 ** 23) - 1, 5, -5, 3 * 2 ** 24 + 7])
    assert wrap_signed(x, 24).tolist() == [2 ** 23 - 1, -(2 ** 23), -(2 ** 23), 2 ** 23 - 1, 5, -5, 7]
    assert np.array_equal(wrap_signed(x.astype(np.int64), 32), x.astype(np.int32).astype(np.int64))
