"""Integer-exact fine-tuning (``n2c train GRAPH.nir --integer``): the integer network of the written
graph predicts exactly what the trained model predicts, on every test sample, and Lava equals it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backends.nir.read import read_graph
from backends.nir.to_layers import import_nir
from backends.quantize import quantize
from backends.reference.simulate import simulate
from backends.integer_training import IntegerModel, fine_tune_integer, predict_integer, trainable_parts, write_nir
from n2c.cli.main import main
from n2c.cli.pipeline import export_model
from n2c.errors import N2CError, NIRFormatError, QuantizationError


@pytest.fixture(scope="module")
def trained(digits_nir, digits_train, tmp_path_factory):
    """The digits graph fine-tuned in Loihi 2's integer format (a large step, so that weights move)."""
    nir_graph = read_graph(digits_nir)
    net = quantize(import_nir(nir_graph))
    weights, biases = trainable_parts(nir_graph, net)
    model = IntegerModel(net, weights, biases)
    fine_tune_integer(model, net.source.encode(digits_train.x), digits_train.y, epochs=2, lr=0.2, progress=False)
    path = tmp_path_factory.mktemp("int") / "digits_int.nir"
    write_nir(nir_graph, model.to_network(), str(path))
    return model, net, path


def test_the_model_is_the_integer_network_before_training(digits_nir, digits_test):
    """Untrained, the torch integer model computes the reference simulator's readout exactly."""
    net = quantize(import_nir(digits_nir))
    model = IntegerModel(net)
    with torch.no_grad():
        out = model(torch.as_tensor(net.source.encode(digits_test.x))).numpy()
    assert np.array_equal(out, simulate(net, digits_test.x).output)


def test_trained_integers_survive_the_nir_round_trip_and_predict_alike(trained, digits_test):
    model, before, path = trained
    again = quantize(import_nir(path))
    trained_net = model.to_network()
    changed = sum(int(np.sum(a.weight != b.weight)) for a, b in zip(trained_net.layers, before.layers)
                  if getattr(a, "weight", None) is not None)
    assert changed > 0  # training moved weights
    for a, b in zip(trained_net.layers, again.layers):
        for what in ("weight", "bias", "threshold", "v_init"):
            if getattr(a, what, None) is not None:
                assert np.array_equal(np.broadcast_to(getattr(a, what), np.shape(getattr(b, what))),
                                      getattr(b, what)), (a.name, what)
    predicted = predict_integer(model, before.source.encode(digits_test.x))
    assert np.array_equal(simulate(again, digits_test.x).output.argmax(1), predicted)  # 100 % of the test set


@pytest.mark.slow
def test_lava_runs_the_trained_graph_bit_for_bit(trained, digits_test):
    from backends.lava.lower import run_lava

    _, _, path = trained
    net = quantize(import_nir(path))
    x = digits_test.x[:24]
    assert np.array_equal(run_lava(net, x, progress=False), simulate(net, x).output)


def test_cli_trains_writes_and_checks(digits_nir, tmp_path, capsys):
    out = tmp_path / "int.nir"
    assert main(["train", str(digits_nir), "--integer", "--dataset", "digits", "--epochs", "1", "--samples", "600",
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "predicts what the trained model predicts on" in text
    same, count = text.split("predicts on ")[1].split(" of those samples")[0].split("/")
    assert same == count and int(count) > 300
    assert bool(import_nir(out).metadata.get("n2c.integer_trained"))


def test_cli_refuses_what_it_cannot_train(digits_nir, qcfs_model, digits_test, tmp_path, capsys):
    if_graph = tmp_path / "if.nir"
    export_model(qcfs_model, str(if_graph), (1, 8, 8), digits_test.input_scale, timesteps=2, method="if")
    for argv, message in [([str(if_graph)], "one-step networks"),
                          ([str(tmp_path / "none.nir")], "--integer needs MODEL"),
                          ([str(digits_nir), "--arch", "x:Y"], "drop --arch")]:
        out = tmp_path / "o.nir"
        assert main(["train", *argv, "--integer", "--dataset", "digits", "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not out.exists()


def test_a_pinned_scale_must_be_a_power_of_two_and_fit_the_weights(trained, tmp_path):
    import nir

    _, _, path = trained
    graph = read_graph(path)
    name = next(k for k, v in graph.nodes.items() if (v.metadata or {}).get("n2c.scale"))
    for bad, error, message in [(3.0, NIRFormatError, "power of two"), (2.0 ** 40, QuantizationError,
                                                                          "pinned scale")]:
        graph.nodes[name].metadata["n2c.scale"] = bad
        target = tmp_path / "bad.nir"
        nir.write(str(target), graph)
        with pytest.raises(error, match=message):
            quantize(import_nir(target))


def test_other_neuron_kinds_are_refused():
    from tests.random_networks import conv_network

    with pytest.raises(N2CError, match="'sfn' neuron"):
        IntegerModel(conv_network(0, "sfn", 1))
