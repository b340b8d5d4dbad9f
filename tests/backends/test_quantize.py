"""Quantization to the integer IR: the format it is given bounds every integer, the network
carries T, and each kind's parameters come from its own rule."""

from __future__ import annotations

import numpy as np
import pytest

from backends.nir.to_layers import import_nir
from backends.quantize import message_bits, quantize
from backends.reference.simulate import run_encoded
from n2c.errors import QuantizationError
from n2c.fixed_point import LOIHI, IntegerFormat
from tests.random_networks import dense_network


def test_the_digits_network_fits_loihi_and_carries_its_t(digits_nir):
    net = quantize(import_nir(str(digits_nir)))
    assert net.timesteps == 1 and net.fmt == LOIHI
    synapses = [layer for layer in net.layers if layer.kind in ("dense", "conv")]
    assert synapses and all(np.abs(s.weight).max() <= LOIHI.weight_max and not (s.weight % 2).any() for s in synapses)
    for layer in net.layers:
        if layer.kind == "mtn":
            assert (layer.threshold >= 1).all() and np.abs(layer.threshold).max() < 2 ** 23


def test_a_narrower_format_gives_narrower_weights(digits_nir):
    graph = import_nir(str(digits_nir))
    wide, narrow = quantize(graph), quantize(graph, fmt=IntegerFormat.for_chip(weight_bits=5, delay_bits=6))
    for a, b in zip(wide.layers, narrow.layers):
        if a.kind in ("dense", "conv"):
            assert np.abs(b.weight).max() <= 30 < np.abs(a.weight).max()
    assert all(r["weight_bits"] == 5 for r in narrow.report)


def test_an_n2c_graph_keeps_its_own_t(digits_nir):
    graph = import_nir(str(digits_nir))
    with pytest.raises(QuantizationError, match="runs T = 1, not 4"):
        quantize(graph, timesteps=4)


def test_integer_runs_check_the_input_against_the_networks_t():
    net = dense_network(0, "mtn", timesteps=3)
    run_encoded(net, np.zeros((3, 2, 7), np.int64))
    with pytest.raises(QuantizationError, match="the input has 4 steps but the network runs T = 3"):
        run_encoded(net, np.zeros((4, 2, 7), np.int64))


def test_message_bits_by_kind():
    net = dense_network(1, "polarity", timesteps=2)
    n1 = net.by_name()["n1"]
    assert message_bits(n1) == 1 + max(n1.max_spikes.bit_length(), (n1.min_spikes - 1).bit_length())
    assert message_bits(dense_network(1, "lif", timesteps=2).by_name()["n1"]) == 1
