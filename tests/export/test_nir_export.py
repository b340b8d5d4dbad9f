"""NIR export and import: standard nodes, n2c metadata, exact round trip, bad files."""

from __future__ import annotations

import nir
import numpy as np
import pytest
import torch

from backends.ir.layers import ConvLayer, DenseLayer, NeuronLayer, PoolLayer
from backends.nir.to_layers import import_nir
from n2c.snn.convert import prepare, to_snn
from n2c.errors import N2CError, NIRFormatError, UnsupportedLayerError
from n2c.export.nir import to_nir, write_nir
from n2c.ann.qcfs import QCFS


def test_export_loads_and_type_checks(digits_nir):
    graph = nir.read(str(digits_nir))
    nir.NIRGraph(nodes=graph.nodes, edges=graph.edges, type_check=True)  # raises on mismatch
    kinds = sorted({type(n).__name__ for n in graph.nodes.values()})
    assert kinds == ["Affine", "AvgPool2d", "Conv2d", "Flatten", "IF", "Input", "Output"]
    assert graph.metadata["n2c.version"] == 2 and graph.metadata["n2c.timesteps"] == 1
    assert graph.metadata["n2c.input_scale"] == 1 / 16


def test_neuron_metadata_states_what_nir_cannot(digits_nir):
    graph = nir.read(str(digits_nir))
    neurons = [n for n in graph.nodes.values() if isinstance(n, nir.IF)]
    assert len(neurons) == 3
    for n in neurons:
        m = n.metadata
        assert m["n2c.neuron"] == "multi_threshold_if" and m["n2c.reset"] == "subtract"
        assert m["n2c.fire"] == "inclusive" and m["n2c.output"] == "graded" and m["n2c.max_spikes"] == 8
        np.testing.assert_array_equal(m["n2c.v_init"], n.v_threshold / 2)


def test_round_trip_keeps_every_weight_and_threshold_exactly(qcfs_model, digits_nir):
    snn = to_snn(prepare(qcfs_model), timesteps=1)
    graph = import_nir(digits_nir)
    convs = [m for m in snn.graph_module.modules() if isinstance(m, torch.nn.Conv2d)]
    denses = [m for m in snn.graph_module.modules() if isinstance(m, torch.nn.Linear)]
    neurons = list(snn.neurons().values())
    layers = {t: [layer for layer in graph.layers if isinstance(layer, t)] for t in (ConvLayer, DenseLayer, NeuronLayer)}
    for module, layer in zip(convs + denses, layers[ConvLayer] + layers[DenseLayer]):
        assert np.array_equal(layer.weight, module.weight.detach().numpy().astype(np.float64))
        assert np.array_equal(layer.bias, module.bias.detach().numpy().astype(np.float64))
    for module, layer in zip(neurons, layers[NeuronLayer]):
        assert (layer.threshold == float(module.threshold)).all() and layer.max_spikes == module.max_spikes
    pools = [layer for layer in graph.layers if isinstance(layer, PoolLayer)]
    assert [p.scale for p in pools] == [0.25, 0.25]
    assert graph.input.input_scale == 1 / 16 and graph.timesteps == 1


def _write(tmp_path, nodes, edges, name="g.nir", metadata=None):
    path = tmp_path / name
    nir.write(str(path), nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata or {}, type_check=False))
    return path


def _affine(n_in, n_out):
    return nir.Affine(weight=np.ones((n_out, n_in), np.float32), bias=np.zeros(n_out, np.float32))


def test_unknown_node_type_is_named():
    from dataclasses import dataclass

    @dataclass(eq=False)
    class Custom(nir.NIRNode):
        gain: float = 1.0

    graph = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([3])}), "odd": Custom(2.0),
                                "output": nir.Output(output_type={"output": np.array([3])})},
                         edges=[("input", "odd"), ("odd", "output")], type_check=False)
    with pytest.raises(NIRFormatError, match="node 'odd' has type Custom, which n2c cannot run"):
        import_nir(graph)


def test_inconsistent_shapes_are_named(tmp_path):
    path = _write(tmp_path, {"input": nir.Input(input_type={"input": np.array([4])}),
                             "fc": _affine(3, 2), "output": nir.Output(output_type={"output": np.array([2])})},
                  [("input", "fc"), ("fc", "output")])
    with pytest.raises(NIRFormatError, match=r"node 'fc' expects input shape \(3,\) but receives \(4,\)"):
        import_nir(path)


def test_dangling_edge_and_cycle_without_state_are_errors(tmp_path):
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}), "fc": _affine(2, 2),
             "output": nir.Output(output_type={"output": np.array([2])})}
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "output")], type_check=False)
    graph.edges.append(("ghost", "fc"))
    with pytest.raises(NIRFormatError, match="'ghost'"):
        import_nir(graph)
    graph.edges[-1] = ("fc", "fc")
    with pytest.raises(NIRFormatError, match="cycle through node 'fc' has no neuron or Delay"):
        import_nir(graph)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(NIRFormatError, match="does not exist"):
        import_nir(tmp_path / "missing.nir")
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"this is not hdf5")
    with pytest.raises(NIRFormatError, match="not a readable NIR file"):
        import_nir(bad)


def test_newer_convention_version_is_refused(tmp_path, digits_nir):
    graph = nir.read(str(digits_nir))
    graph.metadata["n2c.version"] = 99
    with pytest.raises(NIRFormatError, match="version 99"):
        import_nir(graph)


def test_if_node_without_n2c_metadata_is_refused_in_n2c_graphs_only(tmp_path):
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}), "fc": _affine(2, 2),
             "if": nir.IF(r=np.ones(2), v_threshold=np.ones(2)),
             "output": nir.Output(output_type={"output": np.array([2])})}
    edges = [("input", "fc"), ("fc", "if"), ("if", "output")]
    with pytest.raises(NIRFormatError, match="'if' has no n2c neuron metadata"):
        import_nir(_write(tmp_path, nodes, edges, metadata={"n2c.version": 2}))
    graph = import_nir(_write(tmp_path, nodes, edges, name="plain.nir"))  # another tool's IF: NIR semantics
    assert [type(layer).__name__ for layer in graph.layers][2] == "DynamicsLayer"


def test_write_is_atomic(tmp_path, monkeypatch):
    snn = to_snn(prepare(torch.nn.Sequential(torch.nn.Linear(4, 3), QCFS(4), torch.nn.Linear(3, 2))), timesteps=1)
    graph = to_nir(snn, (4,))

    def boom(path, g):
        open(path, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nir, "write", boom)
    with pytest.raises(N2CError, match="cannot write .*x.nir .disk full.; check the path"):
        write_nir(graph, tmp_path / "x.nir")
    assert list(tmp_path.iterdir()) == []


def test_nested_export_mirrors_the_model_and_runs_like_the_flat_graph(tmp_path):
    from backends.float.simulate import simulate_float
    from n2c.snn.convert import convert
    from n2c.models import build_model

    torch.manual_seed(0)
    snn = convert(build_model("resnet", (1, 12, 12), 10, act="qcfs", levels=4).eval(), "mtn", 1)
    flat = to_nir(snn, (1, 12, 12), 1 / 16)
    write_nir(to_nir(snn, (1, 12, 12), 1 / 16, nested=True), tmp_path / "nested.nir")
    nested = nir.read(str(tmp_path / "nested.nir"))
    subgraphs = sorted(k for k, v in nested.nodes.items() if isinstance(v, nir.NIRGraph))
    assert subgraphs == ["blocks", "head", "stem"]
    assert any(isinstance(v, nir.NIRGraph) is False and k.startswith("0_") for k, v in nested.nodes["blocks"].nodes.items())
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, 1, 12, 12))
    a, b = import_nir(flat), import_nir(tmp_path / "nested.nir")
    assert len(a.layers) == len(b.layers)
    assert np.array_equal(simulate_float(a, x).output, simulate_float(b, x).output)


def _float_run(snn, shape, x):
    """The NIR graph of ``snn`` run by the float simulator on x (B, *shape), summed over time."""
    from backends.float.simulate import simulate_float
    graph = import_nir(to_nir(snn, shape, 1 / 16))
    return simulate_float(graph, np.broadcast_to(x.numpy(), (snn.timesteps, *x.shape))).output.sum(axis=0)


def test_grouped_convolutions_state_their_input_channels():
    """nir 1.0.8 infers a Conv2d's input channels from its weight alone (C_in / groups)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), QCFS(4, 1.0), torch.nn.Conv2d(4, 8, 3, groups=4),
                                QCFS(4, 1.0), torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 3)).eval()
    snn = to_snn(prepare(model), "mtn", 1)
    graph = to_nir(snn, (1, 8, 8), 1 / 16)
    assert list(graph.nodes["2"].input_type["input"]) == [4, 6, 6]
    x = torch.rand(5, 1, 8, 8)
    assert np.allclose(_float_run(snn, (1, 8, 8), x), snn(x).detach().numpy(), atol=1e-5)


def test_an_upsampling_adaptive_pool_folds_into_the_next_linear():
    """torchvision's VGG pools a 1x1 map up to 7x7 at CIFAR size: Linear(W) of the pooled map is
    Linear(W·P) of the map itself. The caller's SNN is left as it was."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 4, stride=4), QCFS(4, 1.0), torch.nn.AdaptiveAvgPool2d((3, 3)),
                                torch.nn.Flatten(), torch.nn.Linear(27, 5)).eval()
    snn = to_snn(prepare(model), "mtn", 1)
    graph = to_nir(snn, (1, 8, 8), 1 / 16)
    assert not any(isinstance(n, nir.AvgPool2d) for n in graph.nodes.values())
    assert graph.nodes["4"].weight.shape == (5, 3 * 2 * 2)
    assert any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in snn.modules())
    x = torch.rand(6, 1, 8, 8)
    assert np.allclose(_float_run(snn, (1, 8, 8), x), snn(x).detach().numpy(), atol=1e-5)


def test_an_upsampling_adaptive_pool_that_feeds_a_sum_is_refused_by_name():
    """Its user is a residual sum, not Flatten → Linear: no fold, and the export names the layer
    (once an AttributeError from looking up the sum's function as a submodule)."""
    class PoolThenSum(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.q = torch.nn.Conv2d(1, 3, 4, stride=4), QCFS(4, 1.0)
            self.p, self.fc = torch.nn.AdaptiveAvgPool2d((3, 3)), torch.nn.Linear(27, 2)

        def forward(self, x):
            y = self.p(self.q(self.c(x)))
            return self.fc(torch.flatten(y + y, 1))

    snn = to_snn(prepare(PoolThenSum().eval()), "mtn", 1)
    with pytest.raises(UnsupportedLayerError, match="AdaptiveAvgPool2d 'p': input .* is not a multiple"):
        to_nir(snn, (1, 8, 8), 1 / 16)
