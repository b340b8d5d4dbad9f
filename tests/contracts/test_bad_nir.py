"""Bad NIR input: every malformed graph, file or input array is a typed n2c error.

The explicit tests check that each kind of damage gives a :class:`NIRFormatError`
(or :class:`N2CError`) naming the node and the problem, and that the CLI turns it
into one ``n2c: error:`` line, exit code 2 and no output file. The fuzz tests
perturb valid graphs (in memory and as HDF5 files) and require that import,
simulation and ``n2c inspect`` either work or raise n2c's typed errors only.
"""

from __future__ import annotations

import collections
import copy
import functools
import os
import re
from dataclasses import dataclass

import h5py
import nir
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst

from backends.float.simulate import simulate_float
from backends.nir.to_layers import import_nir
from backends.quantize import quantize
from backends.reference.simulate import run_encoded
from n2c.fixed_point import LOIHI
from n2c.cli.main import main
from n2c.errors import N2CError, NIRFormatError, QuantizationError
from backends.nir.inspect import describe

# ---------------------------------------------------------------- valid seed graphs (tiny)


def _s(*shape):
    return np.array(shape)


def _full(*shape, v=None):
    if v is None:
        return np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)
    return np.full(shape, v, np.float32)


def _affine(n_in, n_out):
    return nir.Affine(weight=_full(n_out, n_in), bias=_full(n_out))


def _lif(n):
    return nir.LIF(tau=_full(n, v=0.01), r=_full(n, v=1), v_leak=_full(n, v=0), v_threshold=_full(n, v=0.1),
                   v_reset=_full(n, v=0))


def _cubalif(n):
    return nir.CubaLIF(tau_syn=_full(n, v=0.01), tau_mem=_full(n, v=0.02), r=_full(n, v=1), v_leak=_full(n, v=0),
                       v_threshold=_full(n, v=0.1), v_reset=_full(n, v=0), w_in=_full(n, v=1))


def _graph(nodes, edges, metadata=None):
    return nir.NIRGraph(nodes=nodes, edges=list(edges), metadata=dict(metadata or {}), type_check=False)


def _chain(*names):
    return list(zip(names, names[1:]))


def dense_graph():
    return _graph({"input": nir.Input(input_type={"input": _s(3)}), "fc1": _affine(3, 4), "lif": _lif(4),
                   "fc2": _affine(4, 2), "output": nir.Output(output_type={"output": _s(2)})},
                  _chain("input", "fc1", "lif", "fc2", "output"))


def conv_graph():
    return _graph({"input": nir.Input(input_type={"input": _s(1, 6, 6)}),
                   "conv": nir.Conv2d(input_shape=(6, 6), weight=_full(2, 1, 3, 3), stride=1, padding=0, dilation=1,
                                      groups=1, bias=_full(2)),
                   "if": nir.IF(r=_full(2, 4, 4, v=1), v_threshold=_full(2, 4, 4, v=0.1), v_reset=_full(2, 4, 4, v=0)),
                   "pool": nir.SumPool2d(kernel_size=_s(2, 2), stride=_s(2, 2), padding=_s(0, 0)),
                   "flat": nir.Flatten(input_type={"input": _s(2, 2, 2)}, start_dim=0, end_dim=-1),
                   "fc": _affine(8, 3), "cuba": _cubalif(3), "output": nir.Output(output_type={"output": _s(3)})},
                  _chain("input", "conv", "if", "pool", "flat", "fc", "cuba", "output"))


def conv_pool_graph():
    """snnTorch's order: the pool reads the convolution, the neuron reads the pool."""
    graph = conv_graph()
    graph.nodes["if"] = nir.IF(r=_full(2, 2, 2, v=1), v_threshold=_full(2, 2, 2, v=0.1), v_reset=_full(2, 2, 2, v=0))
    graph.edges = _chain("input", "conv", "pool", "if", "flat", "fc", "cuba", "output")
    return graph


def recurrent_graph():
    return _graph({"input": nir.Input(input_type={"input": _s(3)}), "fc_in": _affine(3, 4), "cuba": _cubalif(4),
                   "fc_rec": _affine(4, 4), "output": nir.Output(output_type={"output": _s(4)})},
                  _chain("input", "fc_in", "cuba", "fc_rec") + [("fc_rec", "cuba"), ("cuba", "output")])


def nested_graph():
    sub = _graph({"in": nir.Input(input_type={"input": _s(4)}), "fc": _affine(4, 4), "lif": _lif(4),
                  "out": nir.Output(output_type={"output": _s(4)})}, _chain("in", "fc", "lif", "out"))
    return _graph({"input": nir.Input(input_type={"input": _s(3)}), "fc1": _affine(3, 4), "sub": sub,
                   "fc2": _affine(4, 2), "output": nir.Output(output_type={"output": _s(2)})},
                  _chain("input", "fc1", "sub", "fc2", "output"))


def misc_graph():
    """The other runnable node types: Conv1d, LI, Linear, Scale, Delay, I, Threshold."""
    return _graph({"input": nir.Input(input_type={"input": _s(2, 5)}),
                   "conv1d": nir.Conv1d(input_shape=5, weight=_full(3, 2, 3), stride=1, padding=1, dilation=1,
                                        groups=1, bias=_full(3)),
                   "li": nir.LI(tau=_full(3, 5, v=0.01), r=_full(3, 5, v=1), v_leak=_full(3, 5, v=0)),
                   "flat": nir.Flatten(input_type={"input": _s(3, 5)}, start_dim=0, end_dim=-1),
                   "lin": nir.Linear(weight=_full(4, 15)), "scale": nir.Scale(scale=_full(4)),
                   "delay": nir.Delay(delay=_full(4, v=0.001)), "i": nir.I(r=_full(4, v=1)),
                   "thr": nir.Threshold(threshold=_full(4, v=0.0)),
                   "output": nir.Output(output_type={"output": _s(4)})},
                  _chain("input", "conv1d", "li", "flat", "lin", "scale", "delay", "i", "thr", "output"))


def _n2c(model, input_shape, method="mtn", timesteps=1):
    from n2c.snn.convert import prepare, to_snn
    from n2c.export.nir import to_nir
    torch.manual_seed(0)
    return to_nir(to_snn(prepare(model), method=method, timesteps=timesteps), input_shape, 0.25)


def n2c_dense_graph():
    from n2c.ann.qcfs import QCFS
    return _n2c(torch.nn.Sequential(torch.nn.Linear(4, 3), QCFS(4), torch.nn.Linear(3, 2)), (4,))


def n2c_parallel_graph():
    from n2c.ann.qcfs import QCFS
    return _n2c(torch.nn.Sequential(torch.nn.Linear(4, 3), QCFS(4), torch.nn.Linear(3, 2)), (4,), "parallel", 2)


def n2c_conv_graph():
    from n2c.ann.qcfs import QCFS
    return _n2c(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), QCFS(4), torch.nn.AvgPool2d(2), torch.nn.Flatten(),
                                    torch.nn.Linear(8, 3)), (1, 6, 6))


def n2c_sfn_graph():
    """The dense n2c graph with a scale-and-fire neuron (its metadata as n2c writes it)."""
    graph = n2c_dense_graph()
    neuron = next(n for n in graph.nodes.values() if isinstance(n, nir.IF))
    neuron.metadata.update({"n2c.neuron": "scale_and_fire", "n2c.sfn_edges": np.array([0.5, 1.5, 2.5]),
                            "n2c.sfn_codes": np.array([0, 1, 2, 3], np.int64), "n2c.v_init": np.zeros(3)})
    return graph


SEEDS = {"dense": dense_graph, "conv": conv_graph, "conv_pool": conv_pool_graph, "recurrent": recurrent_graph, "nested": nested_graph,
         "misc": misc_graph, "n2c_dense": n2c_dense_graph, "n2c_parallel": n2c_parallel_graph,
         "n2c_conv": n2c_conv_graph, "n2c_sfn": n2c_sfn_graph}


@functools.lru_cache(maxsize=None)
def _cached_seed(name):
    return SEEDS[name]()


def seed(name) -> nir.NIRGraph:
    return copy.deepcopy(_cached_seed(name))


def _write(path, graph):
    nir.write(str(path), graph)
    return path


def _run(layer_graph, steps=2):
    x = np.random.default_rng(0).normal(size=(steps, 1, *layer_graph.input.out_shape))
    return simulate_float(layer_graph, x).output


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seeds_are_valid_and_run(name, tmp_path):
    for source in (seed(name), _write(tmp_path / "g.nir", seed(name))):
        graph = import_nir(source)
        out = _run(graph, graph.timesteps if graph.is_n2c else 2)
        assert np.isfinite(out).all()


# ---------------------------------------------------------------- helpers for the explicit tests


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)
    return path


def _refused(source, *patterns, error=NIRFormatError):
    """import_nir(source) raises ``error`` with a one-line message matching every pattern."""
    with pytest.raises(error) as info:
        import_nir(source)
    message = str(info.value)
    assert "\n" not in message, message
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in {message!r}"
    return message


def _cli_refuses(argv, capsys, pattern, output=None):
    """The CLI exits 2 with one line ``n2c: error: ...`` matching ``pattern`` and writes no output."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("n2c: error: "), err
    assert re.search(pattern, err[0]), err[0]
    if output is not None:
        assert not output.exists()
        assert not list(output.parent.glob("*.npy.tmp*")) and not list(output.parent.glob("tmp*.npy"))


def _refused_everywhere(path, capsys, *patterns):
    """The file is refused by import_nir, ``n2c simulate`` (no output written) and ``n2c inspect``."""
    _refused(path, *patterns)
    x = path.parent / "x.npy"
    np.save(x, np.zeros((2, 1, 3)))
    out = path.parent / "y.npy"
    _cli_refuses(["simulate", path, "--input", x, "--save-output", out, "--precision", "float"], capsys,
                 patterns[-1], out)
    if "not a readable NIR file" in patterns[0]:  # inspect needs to read the file; it reports import errors
        _cli_refuses(["inspect", path], capsys, patterns[-1])


# ---------------------------------------------------------------- corrupt HDF5


def test_random_bytes_are_not_a_nir_file(tmp_path, capsys):
    path = tmp_path / "random.nir"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _refused_everywhere(path, capsys, "not a readable NIR file", "random.nir")


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.99])
def test_truncated_real_file(tmp_path, capsys, fraction):
    data = _write(tmp_path / "full.nir", seed("n2c_conv")).read_bytes()
    path = tmp_path / "cut.nir"
    path.write_bytes(data[:int(len(data) * fraction)])
    _refused_everywhere(path, capsys, "not a readable NIR file", "cut.nir")


def test_hdf5_file_without_nir_groups(tmp_path, capsys):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.arange(10)
    _refused_everywhere(path, capsys, "not a readable NIR file", "no 'node' group")


# ---------------------------------------------------------------- missing fields (files edited with h5py)


def test_node_group_without_its_weight(tmp_path, capsys):
    path = _edit(_write(tmp_path / "g.nir", dense_graph()), lambda f: f["node/nodes/fc1"].__delitem__("weight"))
    _refused_everywhere(path, capsys, "not a readable NIR file", r"node 'fc1' \(Affine\) lacks its weight")


def test_if_without_v_threshold(tmp_path, capsys):
    path = _edit(_write(tmp_path / "g.nir", conv_graph()), lambda f: f["node/nodes/if"].__delitem__("v_threshold"))
    _refused_everywhere(path, capsys, "not a readable NIR file", r"node 'if' \(IF\) lacks its v_threshold")


def test_nested_node_without_its_tau(tmp_path, capsys):
    path = _edit(_write(tmp_path / "g.nir", nested_graph()), lambda f: f["node/nodes/sub/nodes/lif"].__delitem__("tau"))
    _refused_everywhere(path, capsys, "not a readable NIR file", r"node 'sub.lif' \(LIF\) lacks its tau")


def test_node_with_an_unknown_field_or_a_string_weight(tmp_path):
    path = _edit(_write(tmp_path / "g.nir", dense_graph()),
                 lambda f: f["node/nodes/fc1"].create_dataset("gain", data=2))
    _refused(path, "not a readable NIR file", r"node 'fc1' \(Affine\) has unknown field\(s\) gain")

    def string_weight(f):
        del f["node/nodes/fc2/weight"]
        f["node/nodes/fc2/weight"] = "abc"
    path = _edit(_write(tmp_path / "h.nir", dense_graph()), string_weight)
    _refused(path, r"node 'fc2' \(Affine\) has malformed parameters")


def test_graph_without_edges(tmp_path):
    path = _edit(_write(tmp_path / "g.nir", dense_graph()), lambda f: f["node"].__delitem__("edges"))
    _refused(path, r"the top graph \(NIRGraph\) lacks its edges")


# ---------------------------------------------------------------- shape mismatches


def test_affine_expects_4_but_input_gives_3(tmp_path, capsys):
    graph = dense_graph()
    graph.nodes["fc1"] = _affine(4, 4)
    _refused(graph, r"node 'fc1' expects input shape \(4,\) but receives \(3,\)")
    _refused_everywhere(_write(tmp_path / "g.nir", graph), capsys, r"node 'fc1' expects input shape \(4,\)")


def test_conv2d_channels_do_not_match(tmp_path):
    graph = conv_graph()
    graph.nodes["conv"] = nir.Conv2d(input_shape=(6, 6), weight=_full(2, 3, 3, 3), stride=1, padding=0, dilation=1,
                                     groups=1, bias=_full(2))
    _refused(graph, r"node 'conv' expects input shape \(3, 6, 6\) but receives \(1, 6, 6\)")
    _refused(_write(tmp_path / "g.nir", graph), r"node 'conv' expects input shape \(3, 6, 6\)")


def test_flatten_declared_input_type_does_not_match(tmp_path):
    graph = conv_graph()
    graph.nodes["flat"] = nir.Flatten(input_type={"input": _s(2, 4, 1)}, start_dim=0, end_dim=-1)
    _refused(graph, r"node 'flat' expects input shape \(2, 4, 1\) but receives \(2, 2, 2\)")
    _refused(_write(tmp_path / "g.nir", graph), r"node 'flat' expects input shape \(2, 4, 1\)")


def test_output_declares_another_shape():
    graph = dense_graph()
    graph.nodes["output"] = nir.Output(output_type={"output": _s(5)})
    _refused(graph, r"Output node 'output' declares shape \(5,\) but receives \(2,\)")


def test_neuron_parameters_of_the_wrong_shape():
    graph = dense_graph()
    graph.nodes["lif"].v_threshold = np.ones(3)
    _refused(graph, r"node 'lif': v_threshold has shape \(3,\), which does not fit the node's input shape \(4,\)")


# ---------------------------------------------------------------- unknown node types


def test_custom_node_subclass_in_memory():
    @dataclass(eq=False)
    class Custom(nir.NIRNode):
        gain: float = 1.0

    graph = dense_graph()
    graph.nodes["lif"] = Custom(2.0)
    _refused(graph, "node 'lif' has type Custom, which n2c cannot run", "it runs Input, Output, Affine")


def test_object_that_is_not_a_node():
    graph = dense_graph()
    graph.nodes["lif"] = {"type": "LIF"}
    _refused(graph, "node 'lif' is a dict, not a NIR node")


def test_file_with_an_unknown_type_string(tmp_path, capsys):
    def retype(f):
        del f["node/nodes/lif/type"]
        f["node/nodes/lif/type"] = "QuantumLIF"
    path = _edit(_write(tmp_path / "g.nir", dense_graph()), retype)
    _refused_everywhere(path, capsys, "not a readable NIR file", "node 'lif' has type 'QuantumLIF', which NIR does "
                        "not define")


def test_file_node_without_type(tmp_path):
    path = _edit(_write(tmp_path / "g.nir", dense_graph()), lambda f: f["node/nodes/fc2"].__delitem__("type"))
    _refused(path, "node 'fc2' has no 'type'")


# ---------------------------------------------------------------- wiring


def test_dangling_edges(tmp_path, capsys):
    graph = dense_graph()
    graph.edges.append(("lif", "ghost"))
    _refused(graph, r"edge lif -> ghost names node 'ghost', which is not in the graph")
    _refused_everywhere(_write(tmp_path / "g.nir", graph), capsys, "node 'ghost', which is not in the graph")
    graph.edges[-1] = ("phantom", "fc2")
    _refused(graph, "node 'phantom', which is not in the graph")


def test_malformed_edges():
    graph = dense_graph()
    graph.edges.append(("lif",))
    _refused(graph, "malformed edge")
    graph.edges[-1] = (1, 2)
    _refused(graph, "malformed edge")
    graph.edges = "input->fc1"
    _refused(graph, "malformed nodes or edges")


def test_cycle_of_affines_without_neuron_or_delay():
    graph = dense_graph()
    graph.nodes["back"] = _affine(4, 4)
    graph.edges += [("fc1", "back"), ("back", "fc1")]
    _refused(graph, r"cycle through node '(fc1|back)' has no neuron or Delay", "put a neuron or a Delay node")


def test_cycle_with_a_neuron_imports_and_marks_the_recurrent_edge(tmp_path):
    for source in (recurrent_graph(), _write(tmp_path / "r.nir", recurrent_graph())):
        graph = import_nir(source)
        assert graph.recurrent == {("fc_rec", "cuba")}
        assert graph.by_name()["cuba"].inputs == ["fc_in", "fc_rec"]
        assert _run(graph).shape == (2, 1, 4)


def test_cycle_through_a_delay_imports():
    graph = dense_graph()
    graph.nodes["delay"] = nir.Delay(delay=_full(4, v=0.002))
    graph.nodes["back"] = _affine(4, 4)
    graph.edges += [("lif", "back"), ("back", "delay"), ("delay", "lif")]
    layers = import_nir(graph)
    assert layers.recurrent == {("delay", "lif")}
    assert np.isfinite(_run(layers, 4)).all()


def test_two_input_nodes():
    graph = dense_graph()
    graph.nodes["input2"] = nir.Input(input_type={"input": _s(3)})
    graph.edges.append(("input2", "fc1"))
    _refused(graph, "exactly one Input and one Output node, found 2 and 1")


def test_node_unreachable_from_the_input():
    graph = dense_graph()
    graph.nodes["island"] = _lif(2)
    graph.edges.append(("island", "output"))
    _refused(graph, r"node 'island' \(LIF\) is not reachable from the Input node; connect it or remove it")


def test_node_without_path_to_the_output():
    graph = dense_graph()
    graph.nodes["dead_end"] = _lif(4)
    graph.edges.append(("fc1", "dead_end"))
    _refused(graph, r"node 'dead_end' \(LIF\) has no path to the Output node; connect it or remove it")


def test_edge_into_the_input():
    graph = recurrent_graph()
    graph.edges.append(("cuba", "input"))
    _refused(graph, "Input node 'input' has incoming edges")


def test_nested_subgraph_with_two_inputs(tmp_path):
    graph = nested_graph()
    graph.nodes["sub"].nodes["in2"] = nir.Input(input_type={"input": _s(4)})
    graph.nodes["sub"].edges.append(("in2", "fc"))
    _refused(graph, "subgraph 'sub' must have one Input and one Output node, found 2 and 1")


def test_nested_subgraph_shape_error_names_the_inner_node_in_files_too(tmp_path):
    graph = nested_graph()
    graph.nodes["sub"].nodes["fc"] = _affine(5, 4)
    _refused(graph, r"node 'sub.fc' expects input shape \(5,\) but receives \(4,\)")
    _refused(_write(tmp_path / "n.nir", graph), r"node 'sub.fc' expects input shape \(5,\) but receives \(4,\)")


def test_nested_subgraph_imports_inlined(tmp_path):
    for source in (nested_graph(), _write(tmp_path / "n.nir", nested_graph())):
        graph = import_nir(source)
        assert [layer.name for layer in graph.layers] == ["input", "fc1", "sub.fc", "sub.lif", "fc2", "output"]


# ---------------------------------------------------------------- parameters and metadata


def test_newer_n2c_version(tmp_path, capsys):
    graph = seed("n2c_dense")
    graph.metadata["n2c.version"] = 99
    _refused(graph, "version 99", "upgrade n2c")
    _refused_everywhere(_write(tmp_path / "v99.nir", graph), capsys, "version 99; this n2c reads up to 3")


@pytest.mark.parametrize("version", [0, -1, "2", 2.5, None, True, np.array([2])])
def test_malformed_n2c_version(version):
    graph = seed("n2c_dense")
    graph.metadata["n2c.version"] = version
    _refused(graph, "n2c.version must be a positive integer")


@pytest.mark.parametrize("timesteps", [0, -3, "4", 1.5, None, False, True, np.array([1])])
def test_malformed_n2c_timesteps(timesteps):
    graph = seed("n2c_dense")
    graph.metadata["n2c.timesteps"] = timesteps
    _refused(graph, "n2c.timesteps must be a positive integer")


def test_nan_weights(tmp_path, capsys):
    graph = dense_graph()
    graph.nodes["fc2"].weight[1, 2] = np.nan
    _refused(graph, "node 'fc2': weight contains NaN or infinity")
    _refused_everywhere(_write(tmp_path / "g.nir", graph), capsys, "node 'fc2': weight contains NaN or infinity")
    graph = conv_graph()
    graph.nodes["conv"].bias[0] = np.inf
    _refused(graph, "node 'conv': bias contains NaN or infinity")


@pytest.mark.parametrize("attr", ["tau_mem", "tau_syn"])
def test_negative_tau(tmp_path, attr):
    graph = recurrent_graph()
    getattr(graph.nodes["cuba"], attr)[0] = -0.01
    _refused(graph, f"node 'cuba': {attr} must be positive")
    graph = dense_graph()
    graph.nodes["lif"].tau = np.zeros(4)
    _refused(_write(tmp_path / "g.nir", graph), "node 'lif': tau must be positive")


def test_denormal_tau_is_a_typed_error_in_the_integer_stage():
    # dt/tau overflows the weights to infinity (found by the fuzz: tau scaled by 1e-310)
    graph = dense_graph()
    graph.nodes["lif"].tau = np.full(4, 1e-318)
    with pytest.raises(QuantizationError, match=r"layer 'lif': its largest weight .* is inf; check .* tau"):
        quantize(import_nir(graph), 0.5, None, LOIHI, 2)


def test_zero_kernel_size():
    graph = conv_graph()
    graph.nodes["pool"].kernel_size = _s(0, 2)
    _refused(graph, r"SumPool2d 'pool': kernel \(0, 2\)")
    graph = conv_graph()
    graph.nodes["conv"].weight = np.zeros((2, 1, 0, 3), np.float32)
    _refused(graph, r"Conv2d 'conv': weight must be 4-D")


def test_input_with_an_empty_shape(tmp_path):
    for shape in (np.array([], np.int64), _s(3, 0), None):
        graph = dense_graph()
        graph.nodes["input"] = nir.Input(input_type={"input": shape})
        _refused(graph, "node 'input'", "shape")
    graph = dense_graph()
    graph.nodes["input"] = nir.Input(input_type={"input": np.array([], np.int64)})
    _refused(_write(tmp_path / "g.nir", graph), "node 'input' has no input shape")


def test_negative_delay():
    graph = dense_graph()
    graph.nodes["delay"] = nir.Delay(delay=_full(4, v=-1))
    graph.edges = _chain("input", "fc1", "delay", "lif", "fc2", "output")
    _refused(graph, "Delay 'delay': delays must be non-negative")


def test_n2c_neuron_metadata_problems():
    cases = [("n2c.neuron", "quantum", "unknown n2c.neuron 'quantum'"),
             ("n2c.reset", "zero", "unsupported n2c.reset/n2c.fire"),
             ("n2c.max_spikes", 0, "n2c.max_spikes must be >= 1"),
             ("n2c.max_spikes", "many", "n2c.max_spikes/n2c.min_spikes must be integers"),
             ("n2c.v_init", np.ones(7), r"n2c.v_init has shape \(7,\), expected \(3,\)"),
             ("n2c.spike_value", np.array([np.nan] * 3), "n2c.spike_value contains NaN")]
    for key, value, pattern in cases:
        graph = seed("n2c_dense")
        graph.nodes["1"].metadata[key] = value
        _refused(graph, "'1'", pattern)
    for key, value in (("n2c.sfn_edges", np.array([1.0, 0.5, 2.0])), ("n2c.sfn_codes", np.array([0, 1]))):
        graph = seed("n2c_sfn")
        graph.nodes["1"].metadata[key] = value
        _refused(graph, "IF node '1': n2c.sfn_edges must ascend")


# ---------------------------------------------------------------- n2c simulate: bad input arrays

_FIRED: list = []


def _fire():
    _FIRED.append(True)
    return "unpickled"


class _Tripwire:
    """Unpickling this object records it: the CLI must refuse object arrays without unpickling them."""

    def __reduce__(self):
        return _fire, ()


@pytest.fixture()
def dense_file(tmp_path):
    return _write(tmp_path / "dense.nir", dense_graph())


def test_simulate_runs_a_good_input(dense_file, tmp_path, capsys):
    x, out = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x, np.zeros((2, 1, 3)))
    assert main(["simulate", str(dense_file), "--input", str(x), "--save-output", str(out), "--json"]) == 0
    assert np.load(out).shape == (2, 1, 2)


@pytest.mark.parametrize("shape", [(2, 1, 4), (2, 3), (3,), (2, 1, 3, 1), (0, 1, 3), (2, 0, 3)])
def test_simulate_wrong_input_shape(dense_file, tmp_path, capsys, shape):
    x, out = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x, np.zeros(shape))
    _cli_refuses(["simulate", dense_file, "--input", x, "--save-output", out], capsys,
                 r"input array .* (expects \(T, B, 3\)|no steps or no samples)", out)


def test_simulate_refuses_a_pickled_object_array_without_unpickling(dense_file, tmp_path, capsys):
    x, out = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x, np.array([[[_Tripwire(), 1, 2]]], dtype=object), allow_pickle=True)
    _FIRED.clear()
    _cli_refuses(["simulate", dense_file, "--input", x, "--save-output", out], capsys, "holds Python objects", out)
    assert not _FIRED
    np.load(x, allow_pickle=True)  # the tripwire works: loading with pickle fires it
    assert _FIRED


@pytest.mark.parametrize("content", [b"", b"not an array at all", b"\x93NUMPY\x01\x00garbage", b"PK\x03\x04zip"])
def test_simulate_refuses_a_non_npy_file(dense_file, tmp_path, capsys, content):
    x, out = tmp_path / "x.npy", tmp_path / "y.npy"
    x.write_bytes(content)
    _cli_refuses(["simulate", dense_file, "--input", x, "--save-output", out], capsys, "x.npy", out)


def test_simulate_refuses_a_string_array(dense_file, tmp_path, capsys):
    x, out = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x, np.full((2, 1, 3), "a"))
    _cli_refuses(["simulate", dense_file, "--input", x, "--save-output", out], capsys, "dtype <U1; give numbers", out)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_simulate_refuses_nan_input(dense_file, tmp_path, capsys, bad):
    x, out = tmp_path / "x.npy", tmp_path / "y.npy"
    arr = np.zeros((2, 1, 3))
    arr[1, 0, 2] = bad
    np.save(x, arr)
    _cli_refuses(["simulate", dense_file, "--input", x, "--save-output", out], capsys, "NaN or infinity", out)


def test_simulate_missing_input_file(dense_file, tmp_path, capsys):
    out = tmp_path / "y.npy"
    _cli_refuses(["simulate", dense_file, "--input", tmp_path / "none.npy", "--save-output", out], capsys,
                 "does not exist", out)


# ---------------------------------------------------------------- fuzz: perturbed graphs in memory

FUZZ = dict(deadline=None, suppress_health_check=list(HealthCheck))
MAX_ELEMENTS = 100_000  # the fuzz simulates only graphs of test size
# benchmarks/fuzz_nir.py sets this for its nightly-size run (5,000 cases and more)
SCALE = float(os.environ.get("N2C_FUZZ_SCALE", "1"))
OUTCOMES: collections.Counter = collections.Counter()  # "stage: outcome" over every case run


def _examples(n: int) -> int:
    return max(1, int(n * SCALE))


def _allowed(fn, *args):
    """fn(*args), or None when it raises one of n2c's typed errors (with a one-line message); any other
    exception fails the test."""
    stage = getattr(fn, "__name__", "call").strip("_")
    try:
        result = fn(*args)
    except N2CError as e:
        assert str(e).strip() and "\n" not in str(e), f"{type(e).__name__} message is not one line: {e}"
        OUTCOMES[f"{stage}: {type(e).__name__}"] += 1
        return None
    OUTCOMES[f"{stage}: ok"] += 1
    return result


def _run_integer(graph, steps):
    """Quantize (with an input scale if the graph states none) and run the integer reference;
    other tools' graphs under each reset of NIR's spiking neurons (Loihi's, snnTorch's two)."""
    timesteps = None if graph.is_n2c else steps
    for reset in ("zero",) if graph.is_n2c else ("zero", "subtract-late", "subtract-now"):
        net = quantize(graph, None if graph.input.input_scale else 0.5, None, LOIHI, timesteps, reset=reset)
        x = np.random.default_rng(0).integers(-3, 4, size=(net.timesteps, 1, *net.source.shape))
        run = run_encoded(net, x)
    return run


def _import_and_run(source):
    graph = _allowed(import_nir, source)
    if graph is None:
        return None
    if max(int(np.prod(layer.out_shape, dtype=object)) for layer in graph.layers) > MAX_ELEMENTS:
        return graph
    steps = graph.timesteps if graph.is_n2c and graph.timesteps <= 4 else 2
    _allowed(_run, graph, steps)
    if not (graph.is_n2c and graph.timesteps > 4):
        _allowed(_run_integer, graph, steps)
    return graph


_SPECIAL = [None, "abc", "", 0, -1, 1, 2, 2.5, -3.0, 1e-300, True, float("nan"), float("inf"), -float("inf"), 1e300,
            10 ** 30, -(10 ** 30), b"\xff", [], [1, [2]], {"a": 1}, (1, 2), 1 + 2j, object(),
            np.array([]), np.array("s"), np.array(["a", "b"]), np.array([1 + 2j]), np.array([None, 1], dtype=object),
            np.int64(2 ** 62), np.float32(np.nan), np.zeros((0, 3)), np.ones((1, 1, 1, 1, 1))]

_ARRAYS = npst.arrays(dtype=st.sampled_from([np.float32, np.float64, np.int64, np.int8, np.uint8, np.bool_]),
                      shape=npst.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))


def _variant(value, data):
    """A damaged copy of a parameter array: negated, one entry special, reshaped, re-typed, sliced."""
    try:
        a = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):  # not numeric: damage an ordinary vector instead
        a = np.ones(3)
    how = data.draw(st.sampled_from(["negate", "entry", "reshape", "int", "slice", "extra_dim", "zero", "scale"]))
    if how == "negate":
        return -a
    if how == "zero":
        return np.zeros_like(a)
    if how == "scale":
        return a * data.draw(st.sampled_from([1e30, 1e-30, 1e6, -1e6, 1e-310, 1e-320, 1e300]))
    if how == "entry" and a.size:
        a.reshape(-1)[data.draw(st.integers(0, a.size - 1))] = data.draw(
            st.sampled_from([np.nan, np.inf, -np.inf, 1e300, -1e300, 0.0, -1.0, 0.5]))
        return a
    if how == "reshape":
        return a.reshape(-1)
    if how == "int":
        return a.astype(np.int64) if (np.abs(a) < 2 ** 62).all() else a
    if how == "slice" and a.ndim:
        return a[:-1]
    return a[None]


def _bad_value(data, current=None):
    kind = data.draw(st.sampled_from(["special", "array", "variant", "variant"]))
    if kind == "special":
        return data.draw(st.sampled_from(_SPECIAL))
    if kind == "array":
        return data.draw(_ARRAYS)
    return _variant(current if current is not None else np.ones(3), data)


def _fresh_node(data):
    """A new node of some type, sized for vectors of 2..4 or small images."""
    n = data.draw(st.integers(2, 4))
    return data.draw(st.sampled_from([
        lambda: _affine(n, data.draw(st.integers(1, 4))), lambda: nir.Linear(weight=_full(n, n)),
        lambda: nir.Scale(scale=_full(n)), lambda: nir.Delay(delay=_full(n, v=0.002)),
        lambda: nir.Threshold(threshold=_full(n)), lambda: nir.I(r=_full(n)),
        lambda: nir.LI(tau=_full(n, v=0.01), r=_full(n, v=1), v_leak=_full(n, v=0)),
        lambda: nir.IF(r=_full(n, v=1), v_threshold=_full(n, v=1)), lambda: _lif(n), lambda: _cubalif(n),
        lambda: nir.CubaLI(tau_syn=_full(n, v=0.01), tau_mem=_full(n, v=0.02), r=_full(n, v=1), v_leak=_full(n, v=0)),
        lambda: nir.Conv1d(input_shape=4, weight=_full(2, 1, 3), stride=1, padding=1, dilation=1, groups=1,
                           bias=_full(2)),
        lambda: nir.AvgPool2d(kernel_size=_s(2, 2), stride=_s(1, 1), padding=_s(1, 1)),
        lambda: nir.Flatten(input_type={"input": None}, start_dim=0, end_dim=-1),
        lambda: nir.Input(input_type={"input": _s(n)}), lambda: nir.Output(output_type={"output": _s(n)}),
        lambda: nir.ir.graph.Identity(input_type={"input": _s(n)}), lambda: nested_graph().nodes["sub"],
    ]))()


def _graphs(graph):
    """The graph and every nested graph in it."""
    out = [graph]
    if isinstance(graph.nodes, dict):
        for node in graph.nodes.values():
            if isinstance(node, nir.NIRGraph):
                out += _graphs(node)
    return out


def _perturb(graph, data):
    g = data.draw(st.sampled_from(_graphs(graph)))
    names = sorted(g.nodes) if isinstance(g.nodes, dict) else []
    if not names or not isinstance(g.edges, list):
        return
    name = data.draw(st.sampled_from(names))
    node = g.nodes[name]
    what = data.draw(st.sampled_from(["param", "param", "param", "drop_edge", "add_edge", "rename_edge", "bad_edge",
                                      "delete", "swap", "replace", "insert", "insert", "graph_meta", "node_meta",
                                      "node_meta", "container", "dup_edge", "chain", "wide", "huge"]))
    endpoints = st.sampled_from(names + ["ghost", ""])
    if what in ("param", "node_meta") and not isinstance(node, nir.NIRNode):
        return
    if what == "param":
        fields = [k for k in vars(node) if k not in ("nodes", "edges", "metadata")]
        if fields:
            attr = data.draw(st.sampled_from(sorted(fields)))
            value = getattr(node, attr)
            if isinstance(value, dict) and value:  # input_type / output_type
                key = data.draw(st.sampled_from(sorted(value)))
                value[key] = _bad_value(data, value[key])
            else:
                setattr(node, attr, _bad_value(data, value))
    elif what == "drop_edge" and g.edges:
        del g.edges[data.draw(st.integers(0, len(g.edges) - 1))]
    elif what == "add_edge":
        g.edges.append((data.draw(endpoints), data.draw(endpoints)))
    elif what == "rename_edge" and g.edges:
        i = data.draw(st.integers(0, len(g.edges) - 1))
        src, dst = g.edges[i] if isinstance(g.edges[i], tuple) and len(g.edges[i]) == 2 else ("input", "output")
        g.edges[i] = (data.draw(endpoints), dst) if data.draw(st.booleans()) else (src, data.draw(endpoints))
    elif what == "bad_edge":
        g.edges.append(data.draw(st.sampled_from([("a",), (name, name, name), (1, 2), name, None, (name, None)])))
    elif what == "delete":
        del g.nodes[name]
    elif what == "swap":
        other = data.draw(st.sampled_from(names))
        g.nodes[name], g.nodes[other] = g.nodes[other], node
    elif what == "replace":
        g.nodes[name] = _fresh_node(data)
    elif what == "insert" and g.edges:  # a new node on an edge: src -> new -> dst
        i = data.draw(st.integers(0, len(g.edges) - 1))
        if isinstance(g.edges[i], tuple) and len(g.edges[i]) == 2 and "new" not in g.nodes:
            src, dst = g.edges[i]
            g.nodes["new"] = _fresh_node(data)
            g.edges[i:i + 1] = [(src, "new"), ("new", dst)]
    elif what == "graph_meta":
        key = data.draw(st.sampled_from(["n2c.version", "n2c.timesteps", "n2c.input_scale", "n2c.method",
                                         "n2c.readout", "n2c.encoding"]))
        if not isinstance(g.metadata, dict):
            return
        g.metadata[key] = data.draw(st.one_of(st.sampled_from([1, 2, 3, 99, 0, -1, np.int64(2), np.int32(1), 10 ** 9,
                                                               2 ** 70]), st.just(_bad_value(data))))
    elif what == "node_meta":
        key = data.draw(st.sampled_from(["n2c.neuron", "n2c.reset", "n2c.fire", "n2c.max_spikes", "n2c.min_spikes",
                                         "n2c.v_init", "n2c.spike_value", "n2c.sfn_edges", "n2c.sfn_codes",
                                         "n2c.input_scale", "n2c.timesteps"]))
        value = data.draw(st.one_of(
            st.sampled_from(["multi_threshold_if", "parallel", "scale_and_fire", "subtract", "inclusive", 1, 8, 0,
                             -2, 10 ** 12, np.array([0.5, 1.5]), np.array([0, 1, 2]), np.array([0, 1, 1]),
                             np.array([-1, 0, 1])]),
            st.just(_bad_value(data, (node.metadata or {}).get(key) if isinstance(node.metadata, dict) else None))))
        if isinstance(node.metadata, dict):
            node.metadata[key] = value
    elif what == "dup_edge" and g.edges:
        g.edges.append(g.edges[data.draw(st.integers(0, len(g.edges) - 1))])
    elif what in ("chain", "wide") and g.edges:  # a deep chain, or many parallel paths, on one edge
        i = data.draw(st.integers(0, len(g.edges) - 1))
        if isinstance(g.edges[i], tuple) and len(g.edges[i]) == 2:
            src, dst = g.edges.pop(i)
            n = data.draw(st.sampled_from([1, 2, 50, 1200] if what == "chain" else [2, 30, 400]))
            ident = data.draw(st.booleans())  # Identity nodes are removed as wiring; Scale nodes stay
            for k in range(n):
                name_k = f"{what}{k}"
                g.nodes[name_k] = nir.ir.graph.Identity(input_type={"input": None}) if ident else \
                    nir.Scale(scale=np.ones(1))
                if what == "chain":
                    g.edges.append((src if k == 0 else f"chain{k - 1}", name_k))
                else:
                    g.edges += [(src, name_k), (name_k, dst)]
            if what == "chain":
                g.edges.append((f"chain{n - 1}", dst))
    elif what == "huge":  # a declared size no machine holds
        huge = data.draw(st.sampled_from([_s(2 ** 20), _s(2 ** 31 - 1, 2 ** 31 - 1, 2 ** 31 - 1), _s(2 ** 62),
                                          _s(1, 2 ** 15, 2 ** 15)]))
        for node_ in g.nodes.values():
            if isinstance(node_, nir.Input) and isinstance(node_.input_type, dict):
                node_.input_type = {"input": huge}
            elif isinstance(node_, nir.Flatten) and data.draw(st.booleans()):
                node_.input_type = {"input": huge}
    elif what == "container":
        target = data.draw(st.sampled_from(["nodes", "edges", "metadata"]))
        setattr(g, target, data.draw(st.sampled_from([None, [], {}, "x", [("input", "output")], {"a": 1}])))


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore:Casting complex values")  # overflow is expected
@settings(max_examples=_examples(600), **FUZZ)
@given(name=st.sampled_from(sorted(SEEDS)), data=st.data())
def test_fuzz_perturbed_graphs_raise_only_typed_errors(name, data):
    graph = seed(name)
    for _ in range(data.draw(st.integers(1, 3))):
        _perturb(graph, data)
    _import_and_run(graph)


# ---------------------------------------------------------------- fuzz: damaged files


@functools.lru_cache(maxsize=None)
def _seed_bytes(name, tmp):
    return _write(tmp / f"seed_{name}.nir", _cached_seed(name)).read_bytes()


@functools.lru_cache(maxsize=None)
def _data_bytes(name, tmp) -> tuple[int, ...]:
    """Offsets of the numeric data in a seed file (gzip chunks and contiguous arrays): the bytes the flips damage.

    libhdf5 (HDF5 2.0.0, as h5py 3.16 bundles it) can segfault or loop forever when the bytes it follows as pointers are
    damaged: object headers, B-trees and the global heap that holds variable-length strings (node types, edges).
    No Python code can catch that, so the fuzz flips numeric data only; truncation and the h5py edits below damage
    the structure in ways libhdf5 detects."""
    offsets = []
    with h5py.File(tmp / f"seed_{name}.nir", "r") as f:
        def visit(key, obj):
            if not isinstance(obj, h5py.Dataset) or obj.dtype.kind not in "iuf":
                return
            if obj.chunks:
                for i in range(obj.id.get_num_chunks()):
                    info = obj.id.get_chunk_info(i)
                    offsets.extend(range(info.byte_offset, info.byte_offset + info.size))
            elif obj.id.get_offset() is not None:
                offsets.extend(range(obj.id.get_offset(), obj.id.get_offset() + obj.id.get_storage_size()))
        f.visititems(visit)
    return tuple(offsets)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


_FILE_VALUES = st.one_of(
    st.sampled_from(["abc", "", "Affine", b"\xff\xfe", 0, -1, 7, 2.5, float("nan"), float("inf"), -1e300, 10 ** 18,
                     True, np.array([b"a", b"b"]), np.array([[b"input", b"output"]]), np.array([]), np.zeros((0, 2)),
                     np.array([[1, 2]])]),
    _ARRAYS)

_TYPES = ["Affine", "Linear", "Scale", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d", "Delay", "Flatten", "I", "IF",
          "LI", "LIF", "CubaLI", "CubaLIF", "Input", "Output", "Threshold", "NIRGraph", "Identity", "Quux", ""]


def _h5_edit(f, data):
    items = []
    f.visititems(lambda key, obj: items.append((key, isinstance(obj, h5py.Group))))
    if not items:
        return
    key, is_group = data.draw(st.sampled_from(items))
    parent = key.rsplit("/", 1)[0] if "/" in key else ""
    what = data.draw(st.sampled_from(["delete", "rewrite", "rewrite", "retype", "extra", "move", "edges", "meta"]))
    if what == "delete":
        del f[key]
    elif what == "rewrite" and not is_group:
        del f[key]
        f[key] = data.draw(_FILE_VALUES)
    elif what == "retype":
        types = [k for k, g in items if k.endswith("/type")]
        if types:
            k = data.draw(st.sampled_from(types))
            del f[k]
            f[k] = data.draw(st.sampled_from(_TYPES))
    elif what == "extra":
        group = key if is_group else (parent or "/")
        name = data.draw(st.sampled_from(["gain", "weight", "type", "metadata", "nodes", "type_check"]))
        if name not in f[group]:
            f[group].create_dataset(name, data=data.draw(_FILE_VALUES))
    elif what == "move" and parent:
        target = f"{parent}/{data.draw(st.sampled_from(['moved', 'input', 'output', 'x']))}"
        if target not in f:
            f.move(key, target)
    elif what == "edges":
        edges = [k for k, g in items if k.endswith("edges")]
        if edges:
            k = data.draw(st.sampled_from(edges))
            del f[k]
            f[k] = data.draw(st.one_of(_FILE_VALUES, st.lists(st.tuples(
                st.sampled_from([b"input", b"output", b"fc1", b"lif", b"cuba", b"ghost", b"sub"]),
                st.sampled_from([b"input", b"output", b"fc2", b"lif", b"fc_rec", b"ghost", b"sub"])),
                min_size=0, max_size=6).map(lambda e: np.array(e, dtype="S") if e else np.zeros((0, 2), "S1"))))
    elif what == "meta":
        group = f[key] if is_group else f[parent] if parent else f.get("node")
        if not isinstance(group, h5py.Group) or not isinstance(group.get("metadata", group), h5py.Group):
            return  # the group is gone or its metadata is already a dataset
        meta = group.require_group("metadata")
        name = data.draw(st.sampled_from(["n2c.version", "n2c.timesteps", "n2c.neuron", "n2c.max_spikes",
                                          "n2c.v_init", "n2c.sfn_edges", "n2c.sfn_codes", "n2c.input_scale"]))
        if name in meta:
            del meta[name]
        meta[name] = data.draw(_FILE_VALUES)


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore:Casting complex values")  # overflow is expected
@settings(max_examples=_examples(300), **FUZZ)
@given(name=st.sampled_from(sorted(SEEDS)), data=st.data())
def test_fuzz_damaged_files_raise_only_typed_errors(name, data, fuzz_dir):
    raw = bytearray(_seed_bytes(name, fuzz_dir))
    path = fuzz_dir / "damaged.nir"
    how = data.draw(st.sampled_from(["flip", "truncate", "h5py", "h5py", "h5py"]))
    if how == "flip":  # numeric data only: see _data_bytes
        for _ in range(data.draw(st.integers(1, 16))):
            raw[data.draw(st.sampled_from(_data_bytes(name, fuzz_dir)))] = data.draw(st.integers(0, 255))
        path.write_bytes(bytes(raw))
    elif how == "truncate":
        path.write_bytes(bytes(raw[:data.draw(st.integers(0, len(raw) - 1))]))
    else:
        path.write_bytes(bytes(raw))
        with h5py.File(path, "r+") as f:
            for _ in range(data.draw(st.integers(1, 3))):
                _h5_edit(f, data)
    _import_and_run(path)
    _allowed(describe, path)  # n2c inspect


# ---------------------------------------------------------------------------------------------
# libhdf5 itself can segfault or hang on a damaged file: the CLI reads files in a child first


@pytest.mark.parametrize("probe,message", [("import os; os.abort()", "the HDF5 library crashed reading it"),
                                           ("while True: pass", "did not finish in 2 s")])
def test_a_crashing_or_hanging_read_is_a_one_line_error(probe, message, digits_nir, tmp_path, monkeypatch, capsys):
    from backends.nir import read as nir_file

    monkeypatch.setattr(nir_file, "PROBE", probe)  # stands in for libhdf5 dying on the file
    monkeypatch.setattr(nir_file, "PROBE_SECONDS", 2)
    out = tmp_path / "y.npy"
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 1, 8, 8)))
    for argv in (["inspect", str(digits_nir)],
                 ["simulate", str(digits_nir), "--input", str(tmp_path / "x.npy"), "--save-output", str(out)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and err.startswith("n2c: error:")
    assert not out.exists()


def test_the_child_read_accepts_good_files_and_reports_typed_errors_itself(digits_nir, tmp_path):
    from backends.nir.read import probe_hdf5, read_graph

    probe_hdf5(digits_nir)  # a good file: no error
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"not hdf5 at all")
    probe_hdf5(bad)  # the child's typed error is not a crash ...
    with pytest.raises(NIRFormatError, match="not a readable NIR file"):
        read_graph(bad, isolate=True)  # ... and the parent reports it as usual
