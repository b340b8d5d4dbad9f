"""Hostile and careless input (issue #15): each case once crashed with a traceback, allocated
without bound, or gave a wrong answer without a word. Every one is now a one-line typed error
(exit code 2 from the CLI, nothing written), or runs and says what it did.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import zipfile

import nir
import numpy as np
import pytest
import torch

from backends.hardware.spec import CHIPS_DIR, load_chip, parse_chip
from backends.nir.to_layers import import_nir
from backends.quantize import quantize
from backends.reference.simulate import run_encoded
from n2c.cli.main import main
from n2c.errors import DatasetError, ModelLoadError, N2CError, NIRFormatError, QuantizationError
from n2c.limits import MAX_TIMESTEPS
from tests.contracts.test_bad_nir import _cli_refuses  # one line, exit 2, nothing written


def _s(*shape):
    return np.array(shape)


def _graph(nodes, edges, metadata=None):
    return nir.NIRGraph(nodes=nodes, edges=list(edges), metadata=dict(metadata or {}), type_check=False)


def _lif(n, threshold=0.1):
    return nir.LIF(tau=np.full(n, 0.01), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.full(n, threshold),
                   v_reset=np.zeros(n))


def _dense(weight=None, bias=None, edges_extra=()):
    nodes = {"input": nir.Input(input_type={"input": _s(3)}),
             "fc": nir.Affine(weight=np.ones((2, 3)) if weight is None else weight,
                              bias=np.zeros(2) if bias is None else bias),
             "lif": _lif(2), "output": nir.Output(output_type={"output": _s(2)})}
    return _graph(nodes, [("input", "fc"), ("fc", "lif"), ("lif", "output"), *edges_extra])


@pytest.fixture()
def x3(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.full((4, 1, 3), 5.0))
    return path


# ---------------------------------------------------------------- graph structure


def test_duplicated_edge_is_named(tmp_path, x3, capsys):
    nir.write(str(tmp_path / "dup.nir"), _dense(edges_extra=[("fc", "lif")]))
    _cli_refuses(["simulate", tmp_path / "dup.nir", "--input", x3, "--input-scale", "1", "--precision", "int"],
                     capsys, "edge fc -> lif appears twice")


def test_identity_that_doubles_an_edge_is_named():
    graph = _dense(edges_extra=[("fc", "id"), ("id", "lif")])
    graph.nodes["id"] = nir.ir.graph.Identity(input_type={"input": _s(2)})
    with pytest.raises(NIRFormatError, match="reaches 'lif' twice, directly and through identity 'id'"):
        import_nir(graph)


def test_a_chain_of_1100_scale_nodes_imports_and_runs():
    """Once a RecursionError: the cycle check walks without recursion."""
    nodes, edges, prev = {"input": nir.Input(input_type={"input": _s(3)})}, [], "input"
    for i in range(1100):
        nodes[f"s{i}"] = nir.Scale(scale=np.ones(3))
        edges.append((prev, f"s{i}"))
        prev = f"s{i}"
    nodes.update(fc=nir.Affine(weight=np.ones((2, 3)), bias=np.zeros(2)), lif=_lif(2),
                 output=nir.Output(output_type={"output": _s(2)}))
    edges += [(prev, "fc"), ("fc", "lif"), ("lif", "output")]
    net = quantize(import_nir(_graph(nodes, edges)), input_scale=1.0, timesteps=2)
    assert run_encoded(net, np.full((2, 1, 3), 5, np.int64)).output.shape == (1, 2)


def test_deeply_nested_subgraphs_are_refused():
    inner = _dense()
    for _ in range(70):
        inner = _graph({"in": nir.Input(input_type={"input": _s(3)}), "sub": inner,
                        "out": nir.Output(output_type={"output": _s(2)})}, [("in", "sub"), ("sub", "out")])
    with pytest.raises(NIRFormatError, match="nested 65 deep, over n2c's limit of 64"):
        import_nir(inner)


def test_a_wide_graph_of_2000_parallel_nodes_imports():
    nodes = {"input": nir.Input(input_type={"input": _s(1)}), "lif": _lif(1),
             "output": nir.Output(output_type={"output": _s(1)})}
    edges = [("lif", "output")]
    for i in range(2000):
        nodes[f"p{i}"] = nir.Affine(weight=np.ones((1, 1)), bias=np.zeros(1))
        edges += [("input", f"p{i}"), (f"p{i}", "lif")]
    graph = import_nir(_graph(nodes, edges))
    assert len(graph.by_name()["lif"].inputs) == 2000


# ---------------------------------------------------------------- declared sizes


@pytest.mark.parametrize("graph, pattern", [
    (lambda: _graph({"input": nir.Input(input_type={"input": _s(2 ** 31 - 1, 2 ** 31 - 1, 2 ** 31 - 1)}),
                     "output": nir.Output(output_type={"output": _s(2 ** 31 - 1, 2 ** 31 - 1, 2 ** 31 - 1)})},
                    [("input", "output")]), "over n2c's limit of 67,108,864"),
    (lambda: _graph(_dense().nodes, _dense().edges, {"n2c.timesteps": 10 ** 6}), "1,000,000 timesteps"),
    (lambda: _graph(_dense().nodes, _dense().edges, {"n2c.timesteps": 2 ** 63 - 1}), "timesteps, over"),
])
def test_huge_declared_sizes_are_refused_before_allocation(graph, pattern):
    with pytest.raises(NIRFormatError, match=pattern):
        import_nir(graph())


def test_a_huge_direct_input_to_a_neuron_is_refused_before_its_identity_matrix():
    """Input(2^20) straight into a neuron once asked np.eye for 8 TiB."""
    n = 2 ** 20
    graph = _graph({"input": nir.Input(input_type={"input": _s(n)}), "lif": _lif(n),
                    "output": nir.Output(output_type={"output": _s(n)})},
                   [("input", "lif"), ("lif", "output")])
    with pytest.raises(QuantizationError, match=r"dense identity.*over n2c's limit"):
        quantize(import_nir(graph), input_scale=1.0, timesteps=1)


def test_simulate_refuses_a_run_too_large_for_memory(tmp_path, capsys):
    """Digits at the largest T: the values of every layer for 360 samples would need TiB."""
    nir.write(str(tmp_path / "g.nir"), _graph({
        "input": nir.Input(input_type={"input": _s(1, 8, 8)}),
        "flat": nir.Flatten(input_type={"input": _s(1, 8, 8)}, start_dim=0, end_dim=-1),
        "fc": nir.Affine(weight=np.ones((1000, 64)), bias=np.zeros(1000)), "lif": _lif(1000),
        "output": nir.Output(output_type={"output": _s(1000)})},
        [("input", "flat"), ("flat", "fc"), ("fc", "lif"), ("lif", "output")]))
    _cli_refuses(["simulate", tmp_path / "g.nir", "--dataset", "digits", "--steps", str(MAX_TIMESTEPS),
                      "--precision", "int", "--input-scale", "1"], capsys,
                     r"would hold about \d+\.\d GiB at once .* run fewer samples")


def test_a_lying_npy_header_is_refused_before_loading(tmp_path, capsys, x3):
    nir.write(str(tmp_path / "g.nir"), _dense())
    header = {"descr": "<f8", "fortran_order": False, "shape": (100_000_000, 64)}
    with open(tmp_path / "lie.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 64)
    _cli_refuses(["simulate", tmp_path / "g.nir", "--input", tmp_path / "lie.npy"], capsys,
                     r"declares a \(100000000, 64\) float64 array .* over n2c's limit")
    header["shape"] = (1000, 1, 3)
    with open(tmp_path / "short.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 64)
    _cli_refuses(["simulate", tmp_path / "g.nir", "--input", tmp_path / "short.npy"], capsys,
                     "holds only 64; the file is truncated")


def test_an_empty_npz_data_set_is_refused(tmp_path):
    from n2c.data import load_dataset
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 1, 8, 8)), y=np.zeros(0))
    with pytest.raises(DatasetError, match="holds no samples"):
        load_dataset(str(tmp_path / "empty.npz"))


# ---------------------------------------------------------------- numbers out of range


def test_denormal_weights_are_refused_not_overflowed():
    with pytest.raises(QuantizationError, match="too small to scale to 8-bit integers"):
        quantize(import_nir(_dense(weight=np.full((2, 3), 1e-310))), input_scale=1.0, timesteps=1)


def test_a_bias_of_1e30_is_refused_not_cast_to_int64_min():
    """np.round(1e30 * S).astype(int64) is INT64_MIN, whose np.abs is negative: it passed the range check."""
    with pytest.raises(QuantizationError, match="does not fit 24-bit signed integers"):
        quantize(import_nir(_dense(bias=np.full(2, 1e30))), input_scale=1.0, timesteps=1)


@pytest.mark.parametrize("value", ["inf", "1e-320", "nan", "-1", "1e40"])
def test_input_scale_must_be_a_plausible_number(tmp_path, x3, capsys, value):
    nir.write(str(tmp_path / "g.nir"), _dense())
    _cli_refuses(["simulate", tmp_path / "g.nir", "--input", x3, f"--input-scale={value}"], capsys,
                     "expected a positive number between 1e-30 and 1e\\+30")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_export_refuses_a_non_finite_v_init(digits_checkpoint, tmp_path, capsys, value):
    out = tmp_path / "o.nir"
    _cli_refuses(["export", digits_checkpoint, "-o", out, "--arch", "n2c.models:DigitsCNN(levels=8)",
                      "--dataset", "digits", f"--v-init={value}"], capsys, "expected a finite number")
    assert not out.exists()


def test_export_refuses_an_input_shape_the_model_does_not_take(digits_checkpoint, tmp_path, capsys):
    out = tmp_path / "o.nir"
    _cli_refuses(["export", digits_checkpoint, "-o", out, "--arch", "n2c.models:DigitsCNN(levels=8)",
                      "--input-shape", "1,8"], capsys, r"does not take inputs of shape \(1, 8\)")
    assert not out.exists()


# ---------------------------------------------------------------- overflow is never silent


def _wrapping_cuba():
    """A CubaLIF whose synaptic current passes 24 bits within a few steps of input 127."""
    return _graph({"input": nir.Input(input_type={"input": _s(3)}),
                   "fc": nir.Affine(weight=np.ones((2, 3)), bias=np.zeros(2)),
                   "lif": nir.CubaLIF(tau_syn=np.full(2, 1.0), tau_mem=np.full(2, 1.0), r=np.ones(2),
                                      v_leak=np.zeros(2), v_threshold=np.full(2, 1e-3), v_reset=np.zeros(2),
                                      w_in=np.ones(2)),
                   "output": nir.Output(output_type={"output": _s(2)})},
                  [("input", "fc"), ("fc", "lif"), ("lif", "output")])


def test_cuba_current_wraps_are_counted():
    """Loihi wraps the 24-bit current u; the reference once counted only the membrane's saturation."""
    from n2c.fixed_point import StateClamp, lif_step
    clamp = StateClamp()
    u, v = np.array([2 ** 23 - 100]), np.array([0])
    lif_step(u, v, np.array([1000]), np.array([0]), np.array([0]), np.array([0]), np.array([1000]), True, clamp)
    assert clamp.wraps == 1 and clamp.count == 0
    net = quantize(import_nir(_wrapping_cuba()), input_scale=1.0, timesteps=20)
    overflows = run_encoded(net, np.full((20, 1, 3), 127, np.int64)).overflows
    assert "24-bit synaptic current (wrapped)" in overflows["lif"]["limit"]


def test_strict_refuses_current_wraps(tmp_path, capsys):
    nir.write(str(tmp_path / "c.nir"), _wrapping_cuba())
    np.save(tmp_path / "x.npy", np.full((20, 1, 3), 127.0))
    argv = ["simulate", tmp_path / "c.nir", "--input", tmp_path / "x.npy", "--input-scale", "1", "--precision", "int"]
    _cli_refuses([*argv, "--strict"], capsys, "synaptic current \\(wrapped\\)")
    assert main([str(a) for a in argv]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "n2c: warning: layer 'lif'" in err[0] and "wrapped" in err[0], err


@pytest.mark.slow
def test_lava_backend_reports_overflow_and_honours_strict(tmp_path, capsys):
    nir.write(str(tmp_path / "c.nir"), _wrapping_cuba())
    np.save(tmp_path / "x.npy", np.full((20, 1, 3), 127.0))
    argv = ["simulate", tmp_path / "c.nir", "--input", tmp_path / "x.npy", "--input-scale", "1", "--precision", "int",
            "--backend", "lava", "--json"]
    assert main([str(a) for a in argv]) == 0
    captured = capsys.readouterr()
    assert "wrapped" in json.loads(captured.out)["overflows"]["lif"]["limit"]
    assert "n2c: warning: layer 'lif'" in captured.err
    _cli_refuses([*argv, "--strict"], capsys, "wrapped")


def test_report_states_values_past_loihi_limits(tmp_path):
    from backends.report.build import ReportBuilder, RunInfo
    net = quantize(import_nir(_wrapping_cuba()), input_scale=1.0, timesteps=20)
    s_in = np.full((20, 2, 3), 127, np.int64)
    run = run_encoded(net, s_in)
    builder = ReportBuilder(net, load_chip("loihi2"), RunInfo("c.nir", "nir", "x", "test", "reference"))
    builder.add({**run.messages, net.source.name: s_in}, run.output, None, run.overflows)
    report = builder.build()
    assert report["past_loihi_limits"]["lif"]["count"] == run.overflows["lif"]["count"] > 0
    assert any(n.startswith("Past Loihi's limits") for n in report["notes"])
    from backends.report.render import render_all
    assert "Past Loihi's limits | lif:" in render_all(report)["report.md"].decode()


# ---------------------------------------------------------------- chip specs


@pytest.mark.parametrize("key, value, pattern", [
    ("energy_synop", 1e308, "energy_synop = 1e\\+308 J is implausible"),
    ("time_synop", 1e308, "time_synop = 1e\\+308 s is implausible"),
    ("weight_bits", 64, "weight_bits = 64 .*implausible"),
])
def test_chip_values_need_plausible_bounds(key, value, pattern):
    raw = json.loads((CHIPS_DIR / "loihi2.json").read_text())
    raw["values"][key]["value"] = value
    with pytest.raises(N2CError, match=pattern):
        parse_chip(raw)


# ---------------------------------------------------------------- files


def _corrupt_first_tensor(path):
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if "/data/" in i.filename)
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    raw[info.header_offset + 30 + name_len + extra_len + 3] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_torchscript_with_a_bad_crc_is_refused(tmp_path):
    from n2c.ingest import load_model
    from n2c.models import DigitsCNN
    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(DigitsCNN(levels=8).eval()), path)
    _corrupt_first_tensor(path)
    with pytest.raises(ModelLoadError, match="fails its CRC check"):
        load_model(str(path))


def test_outputs_follow_the_umask(digits_nir, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "y.npy"
        assert main(["simulate", str(digits_nir), "--samples", "3", "--save-output", str(out), "--json"]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_no_command_creates_missing_parent_directories(digits_checkpoint, digits_nir, tmp_path, capsys):
    missing = tmp_path / "missing" / "dir"
    _cli_refuses(["export", digits_checkpoint, "-o", missing / "x.nir", "--arch",
                      "n2c.models:DigitsCNN(levels=8)", "--dataset", "digits"], capsys, "does not exist")
    _cli_refuses(["simulate", digits_nir, "--samples", "3", "--save-output", missing / "y.npy"], capsys,
                     "does not exist")
    _cli_refuses(["report", digits_nir, "-o", missing / "r"], capsys, "does not exist")
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("make", ["directory", "long_name"])
def test_unusable_output_paths_are_refused_before_the_work(digits_nir, tmp_path, capsys, make):
    out = tmp_path / ("exists" if make == "directory" else "y" * 254 + ".npy")
    if make == "directory":
        out.mkdir()
    pattern = "is a directory" if make == "directory" else "over this file system's limit"
    _cli_refuses(["simulate", digits_nir, "--samples", "3", "--save-output", out], capsys, pattern)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_report_into_an_unwritable_directory_is_refused(digits_nir, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    _cli_refuses(["report", digits_nir, "-o", locked / "r"], capsys, "not writable")


# ---------------------------------------------------------------- other tools' graphs


def test_rockpool_style_output_shape_runs_with_a_warning(tmp_path, capsys):
    """rockpool declares a (1,) output as (1, 1, 1): the same values, so n2c runs it and says so."""
    graph = _graph({"input": nir.Input(input_type={"input": _s(1)}),
                    "fc": nir.Affine(weight=np.ones((1, 1)), bias=np.zeros(1)), "lif": _lif(1),
                    "output": nir.Output(output_type={"output": _s(1, 1, 1)})},
                   [("input", "fc"), ("fc", "lif"), ("lif", "output")])
    nir.write(str(tmp_path / "r.nir"), graph)
    np.save(tmp_path / "x.npy", np.ones((5, 1, 1)))
    assert main(["simulate", str(tmp_path / "r.nir"), "--input", str(tmp_path / "x.npy"), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["output_shape"] == [5, 1, 1]
    assert "declares shape (1, 1, 1) but receives (1,)" in captured.err
    with pytest.raises(NIRFormatError, match="declares shape"):  # a different count is still an error
        graph.nodes["output"] = nir.Output(output_type={"output": _s(2, 1, 1)})
        import_nir(graph)


# ---------------------------------------------------------------- found by the widened fuzz


def _affine_then(paths):
    """input -> fc (weights) -> the given paths (name: node) -> lif -> output."""
    nodes = {"input": nir.Input(input_type={"input": _s(3)}),
             "fc": nir.Affine(weight=np.ones((2, 3)), bias=np.zeros(2)), "lif": _lif(2),
             "output": nir.Output(output_type={"output": _s(2)})}
    nodes.update(paths)
    edges = [("input", "fc"), ("lif", "output")] + [e for name in paths for e in (("fc", name), (name, "lif"))]
    return _graph(nodes, edges)


def test_a_weighted_layer_reaching_a_neuron_by_two_paths_is_refused():
    graph = _affine_then({"a": nir.Scale(scale=np.ones(1)), "b": nir.Scale(scale=np.ones(1))})
    with pytest.raises(QuantizationError, match="'fc' reaches 'lif' by two paths"):
        quantize(import_nir(graph), input_scale=1.0, timesteps=1)


def test_a_weighted_layer_feeding_a_neuron_and_another_layer_is_refused():
    graph = _affine_then({"a": nir.Scale(scale=np.ones(1)), "b": nir.I(r=np.ones(2))})
    with pytest.raises(QuantizationError, match="'fc' feeds more than one layer before a neuron"):
        quantize(import_nir(graph), input_scale=1.0, timesteps=1)


def test_a_v_init_of_1e30_is_refused_not_cast_to_int64_min():
    from tests.contracts.test_bad_nir import n2c_dense_graph
    graph = n2c_dense_graph()
    node = next(n for n in graph.nodes.values() if isinstance(n, nir.IF))
    node.metadata["n2c.v_init"] = np.full(np.shape(node.metadata["n2c.v_init"]), 1e30)
    with pytest.raises(QuantizationError, match="v_init does not fit 24-bit signed integers"):
        quantize(import_nir(graph))


def test_negative_inputs_to_an_unsigned_integer_input_are_refused_not_clipped(digits_nir, tmp_path, capsys):
    """A model trained on normalized inputs ((x - m) / s) fed to an n2c graph: clipping the
    negative values to 0 would change every prediction without a word."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "normalized.npz", x=(rng.random((8, 1, 8, 8)) - 0.3).astype(np.float32),
             y=rng.integers(0, 10, 8), input_scale=np.float32(1 / 16))
    _cli_refuses(["simulate", digits_nir, "--dataset", tmp_path / "normalized.npz"], capsys,
                 r"input values \(\d+\.\d%\) lie outside the graph's unsigned 8-bit integer input .* feed inputs >= 0")
    assert main(["simulate", str(digits_nir), "--dataset", str(tmp_path / "normalized.npz"), "--precision",
                 "float"]) == 0  # the float reference takes them as they are
