"""Quantization to the integer IR: the format it is given bounds every integer, the network
carries T, and each kind's parameters come from its own rule."""

from __future__ import annotations

import numpy as np
import pytest

from backends.nir.to_layers import import_nir
from backends.ir.integer import message_bits
from backends.quantize import quantize
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


def _wide_mlp():
    """A one-step QCFS MLP whose classifier sums 256 inputs of up to 8 spikes: past 16 bits at full scale."""
    import torch
    from n2c.ann.qcfs import QCFS
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 256), QCFS(8, 2.0),
                                torch.nn.Linear(256, 10)).eval()
    with torch.no_grad():
        model[1].weight.abs_()
        model[1].bias.fill_(0.5)
        model[3].weight.abs_()
    return model


def test_the_largest_currents_keep_the_accumulator_inside_16_bits(tmp_path, digits_train, digits_test):
    """With n2c.max_current (measured on training data at export), the scale of each layer is capped so
    that its synaptic sums fit Loihi's 16-bit accumulator; without it the same data overflows."""
    from backends.reference.simulate import simulate
    from n2c.cli.pipeline import export_model
    from n2c.snn.convert import convert
    snn = convert(_wide_mlp(), "mtn", 1)
    runs = {}
    for width in (False, True):
        path = tmp_path / f"{width}.nir"
        export_model(snn, str(path), (1, 8, 8), digits_test.input_scale,
                     width_data=digits_train.x if width else None)
        graph = import_nir(path)
        net = quantize(graph)
        runs[width] = (graph, net, simulate(net, digits_test.x))
    graph, net, run = runs[True]
    assert graph.by_name()["output"].max_current > 0 and graph.by_name()["2"].max_current > 0
    assert runs[False][2].overflows and not run.overflows
    capped = {q["layer"]: q["scale_capped"] for q in net.report}
    assert capped["output"] and not any(q["scale_capped"] for q in runs[False][1].report)
    agree = (run.output.argmax(1) == runs[False][2].output.argmax(1)).mean()
    assert agree > 0.9  # a coarser scale, the same network


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), "x", [1.0, 2.0]])
def test_a_bad_max_current_is_refused(value):
    import nir
    from n2c.errors import NIRFormatError
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([2])}),
                                "fc": nir.Affine(weight=np.ones((2, 2)), bias=np.zeros(2)),
                                "output": nir.Output(output_type={"output": np.array([2])},
                                                     metadata={"n2c.max_current": value})},
                         edges=[("input", "fc"), ("fc", "output")], metadata={}, type_check=False)
    with pytest.raises(NIRFormatError, match="n2c.max_current must be one positive number"):
        import_nir(graph)


def test_the_cap_never_leaves_the_weights_fewer_than_four_bits():
    """A cap that would round every weight to 0 (large graded inputs into a wide layer) is not applied:
    the layer keeps its scale and its overflow stays visible."""
    import nir
    from backends.quantize import MIN_CAPPED_WEIGHT_BITS
    rng = np.random.default_rng(0)
    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([512])}),
                                "fc": nir.Affine(weight=rng.uniform(0.5, 1, (4, 512)), bias=np.zeros(4)),
                                "output": nir.Output(output_type={"output": np.array([4])},
                                                     metadata={"n2c.max_current": 1e6})},
                         edges=[("input", "fc"), ("fc", "output")], metadata={}, type_check=False)
    net = quantize(import_nir(graph), input_scale=1.0, timesteps=1)
    (info,) = net.report
    assert not info["scale_capped"] and info["weight_bits_used"] >= MIN_CAPPED_WEIGHT_BITS
    assert run_encoded(net, np.full((1, 1, 512), 255, np.int64)).overflows
