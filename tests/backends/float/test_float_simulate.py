"""Float reference simulator: NIR's neuron equations by hand, every node type, nesting,
recurrence, and agreement with n2c's torch SNN for every conversion method."""

from __future__ import annotations

import json

import nir
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.float.dynamics import discretization
from backends.float.simulate import simulate_float
from backends.nir.to_layers import import_nir
from n2c.cli.main import main
from n2c.snn.convert import convert
from n2c.errors import N2CError
from n2c.export.nir import to_nir, write_nir


def _io(n):
    return nir.Input(input_type={"input": np.array([n])}), nir.Output(output_type={"output": np.array([n])})


def _chain(*nodes, n=2, metadata=None):
    """Input → nodes... → Output, named n0, n1, ..."""
    inp, out = _io(n)
    names = [f"n{i}" for i in range(len(nodes))]
    all_nodes = {"input": inp, **dict(zip(names, nodes)), "output": out}
    path = ["input", *names, "output"]
    return nir.NIRGraph(nodes=all_nodes, edges=list(zip(path, path[1:])), metadata=metadata or {}, type_check=False)


def _run(graph, x, preset="nir", dt=None, record=False):
    return simulate_float(import_nir(graph), np.asarray(x, dtype=np.float64), discretization(preset, dt), record)


def test_lif_is_forward_euler_with_hard_reset():
    tau, r, leak, theta, reset = 0.01, 2.0, 0.1, 1.0, -0.2
    lif = nir.LIF(tau=np.full(1, tau), r=np.full(1, r), v_leak=np.full(1, leak), v_threshold=np.full(1, theta),
                  v_reset=np.full(1, reset))
    x = np.array([3.0, 4.0, 0.0, 5.0, 5.0, 5.0])
    out = _run(_chain(lif, n=1), x[:, None, None], dt=1e-3, record=True)
    v, expected = 0.0, []
    for xt in x:  # by hand
        v = v + 1e-3 / tau * (leak - v + r * xt)
        z = v > theta
        expected.append(float(z))
        v = reset if z else v
    assert out.output[:, 0, 0].tolist() == expected and sum(expected) >= 1


def test_cuba_lif_sees_this_steps_current_and_snntorch_resets_late():
    node = nir.CubaLIF(tau_syn=np.full(1, 2e-4), tau_mem=np.full(1, 5e-4), r=np.full(1, 1.0), v_leak=np.zeros(1),
                       v_threshold=np.full(1, 0.5), v_reset=np.zeros(1), w_in=np.full(1, 2.0))
    x = np.array([1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    out = _run(_chain(node, n=1), x[:, None, None], "snntorch").output[:, 0, 0]
    i = v = 0.0
    spike, expected = 0.0, []
    for xt in x:  # snnTorch's Synaptic: current first, subtract θ one step late
        i = i + 1e-4 / 2e-4 * (2.0 * xt - i)
        v = v + 1e-4 / 5e-4 * (0.0 - v + i) - 0.5 * spike
        spike = float(v > 0.5)
        expected.append(spike)
    assert out.tolist() == expected and 1 <= sum(expected) < len(x)


def test_integrators_threshold_scale_and_delay():
    x = np.array([[1.0, 2.0], [0.5, -1.0], [2.0, 0.0], [0.0, 0.0]])[:, None, :]  # (T=4, B=1, 2)
    i_node = nir.I(r=np.array([1.0, 2.0]))
    out = _run(_chain(i_node), x, dt=0.5).output[:, 0]
    np.testing.assert_allclose(out, np.cumsum(0.5 * np.array([1.0, 2.0]) * x[:, 0], axis=0))
    li = nir.LI(tau=np.full(2, 1.0), r=np.ones(2), v_leak=np.zeros(2))
    out = _run(_chain(li), x, dt=0.5).output[:, 0]
    v, expected = np.zeros(2), []
    for t in range(4):
        v = v + 0.5 * (-v + x[t, 0])
        expected.append(v)
    np.testing.assert_allclose(out, expected)
    scaled = _run(_chain(nir.Scale(scale=np.array([2.0, -3.0])), nir.Threshold(threshold=np.array([1.0, 2.0]))),
                  x).output[:, 0]
    assert scaled.tolist() == [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]  # 2·1 > 1, −3·−1 > 2 strictly
    delayed = _run(_chain(nir.Delay(delay=np.array([1e-3, 3e-3]))), x, dt=1e-3).output[:, 0]
    assert delayed[:, 0].tolist() == [0.0, 1.0, 0.5, 2.0] and delayed[:, 1].tolist() == [0.0, 0.0, 0.0, 2.0]


def test_nested_subgraph_and_identity_are_inlined():
    inner_in, inner_out = _io(2)
    inner = nir.NIRGraph(nodes={"in": inner_in, "w": nir.Linear(weight=np.array([[0.0, 1.0], [1.0, 0.0]])),
                                "out": inner_out}, edges=[("in", "w"), ("w", "out")], type_check=False)
    inp, out = _io(2)
    graph = nir.NIRGraph(nodes={"input": inp, "block": inner, "scale": nir.Scale(scale=np.array([10.0, 100.0])),
                                "output": out},
                         edges=[("input", "block"), ("block", "scale"), ("scale", "output")], type_check=False)
    layers = import_nir(graph).layers
    assert [layer.name for layer in layers] == ["input", "block.w", "scale", "output"]
    assert _run(graph, [[[1.0, 2.0]]]).output.tolist() == [[[20.0, 100.0]]]
    dotted = nir.NIRGraph(nodes=graph.nodes, edges=[("input", "block.in"), ("block.out", "scale"),
                                                     ("scale", "output")], type_check=False)
    assert _run(dotted, [[[1.0, 2.0]]]).output.tolist() == [[[20.0, 100.0]]]


def test_recurrent_edge_delivers_the_previous_step():
    inp, out = _io(1)
    nodes = {"input": inp, "w_in": nir.Linear(weight=np.ones((1, 1))),
             "li": nir.LI(tau=np.ones(1), r=np.ones(1), v_leak=np.zeros(1)),
             "w_rec": nir.Affine(weight=np.full((1, 1), 0.5), bias=np.full(1, 0.25)), "output": out}
    edges = [("input", "w_in"), ("w_in", "li"), ("li", "w_rec"), ("w_rec", "li"), ("li", "output")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    layer_graph = import_nir(graph)
    assert layer_graph.recurrent == {("w_rec", "li")}
    x = np.array([1.0, 0.0, 0.0])[:, None, None]
    # NIR's Affine is instantaneous, so its bias arrives from step 0 (snnTorch's RLeaky agrees); the
    # neuron's previous output is 0 there. Without the bias (a cold start) step 0 would read 0.
    for start, first in (("nir", 0.25), ("snntorch", 0.25)):
        out_v = _run(graph, x, start, dt=1.0).output[:, 0, 0]
        v, prev, expected = 0.0, None, []
        for t, xt in enumerate(x[:, 0, 0]):
            rec = first if t == 0 else 0.5 * prev + 0.25
            v = v + 1.0 * (-v + xt + rec)
            prev = v
            expected.append(v)
        np.testing.assert_allclose(out_v, expected)


@pytest.mark.parametrize("method,timesteps", [("mtn", 1), ("if", 4), ("parallel", 4), ("pmsm", 1), ("sfn", 2)])
def test_float_simulator_equals_the_torch_snn(method, timesteps, qcfs_model, signed_cnn, digits_train, digits_test):
    model = signed_cnn if method == "pmsm" else qcfs_model
    snn = convert(model, method, timesteps, calib=digits_train.head(256) if method == "sfn" else None)
    graph = import_nir(to_nir(snn, (1, 8, 8), 1 / 16))
    x = digits_test.x[:64]
    out = simulate_float(graph, np.broadcast_to(x, (timesteps, *x.shape))).output.mean(axis=0)
    with torch.no_grad():
        ref = snn(torch.from_numpy(x)).double().numpy()
    # the torch SNN runs in float32, the simulator in float64: only rounding separates them
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert np.array_equal(out.argmax(1), ref.argmax(1))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 3), st.floats(0.1, 2.0), st.integers(0, 2 ** 16))
def test_feed_forward_layer_sync_equals_step_by_step(steps, batch, dt, seed):
    """The two schedules of the simulator (whole time series per layer, or one step at a time
    when the graph has a cycle) compute the same thing: add a silent recurrent loop and compare."""
    rng = np.random.default_rng(seed)
    n = 3
    inp, out = _io(n)
    lif = nir.LIF(tau=rng.uniform(0.5, 3, n), r=rng.uniform(0.5, 2, n), v_leak=rng.normal(0, 0.1, n),
                  v_threshold=rng.uniform(0.2, 1, n), v_reset=np.zeros(n))
    nodes = {"input": inp, "fc": nir.Affine(weight=rng.normal(0, 1, (n, n)), bias=rng.normal(0, 0.1, n)),
             "lif": lif, "delay": nir.Delay(delay=rng.integers(0, 3, n) * dt), "output": out}
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "delay"), ("delay", "output")]
    x = rng.normal(0, 1, (steps, batch, n))
    plain = _run(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), x, dt=dt).output
    loop = dict(nodes, silent=nir.Linear(weight=np.zeros((n, n))))
    looped = nir.NIRGraph(nodes=loop, edges=edges + [("lif", "silent"), ("silent", "lif")], type_check=False)
    assert import_nir(looped).recurrent
    assert np.array_equal(_run(looped, x, dt=dt).output, plain)


def test_cli_simulate_input_array_both_precisions(tmp_path, digits_nir, digits_test):
    x = digits_test.x[None, :20]
    np.save(tmp_path / "x.npy", x)
    outputs = {}
    for precision in ("int", "float"):
        y = tmp_path / f"y_{precision}.npy"
        assert main(["simulate", str(digits_nir), "--input", str(tmp_path / "x.npy"), "--save-output", str(y),
                     "--precision", precision, "--json"]) == 0
        outputs[precision] = np.load(y)
        assert outputs[precision].shape == (1, 20, 10)
    # 8-bit weights: the integer readout follows the float one closely, not exactly
    assert (outputs["int"].argmax(-1) == outputs["float"].argmax(-1)).mean() >= 0.9


def test_cli_simulate_rejects_bad_arrays(tmp_path, digits_nir, digits_test, capsys):
    np.save(tmp_path / "flat.npy", digits_test.x[:4])  # no time axis
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "text.npy").write_text("not an array")
    cases = {"flat.npy": "expects (T, B, 1, 8, 8)", "objects.npy": "holds Python objects",
             "text.npy": "not a .npy array", "missing.npy": "does not exist"}
    for name, message in cases.items():
        y = tmp_path / f"out_{name}"
        assert main(["simulate", str(digits_nir), "--input", str(tmp_path / name), "--save-output", str(y)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
        assert not y.exists()
    two_steps = np.broadcast_to(digits_test.x[:2], (2, 2, 1, 8, 8))
    np.save(tmp_path / "t2.npy", two_steps)
    assert main(["simulate", str(digits_nir), "--input", str(tmp_path / "t2.npy")]) == 2
    assert "runs T = 1" in capsys.readouterr().err


def test_cli_inspect_lists_nodes_and_backends(digits_nir, capsys):
    assert main(["inspect", str(digits_nir)]) == 0
    text = capsys.readouterr().out
    assert "Conv2d" in text and "(1, 8, 8) → (16, 8, 8)" in text and "max_spikes=8" in text
    assert "reference int    yes" in text and "lava             yes" in text
    assert main(["inspect", str(digits_nir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backends"]["reference float"] == "yes" and len(info["nodes"]) == 12


def test_cli_inspect_says_why_a_backend_cannot_run(tmp_path, capsys):
    lif = nir.LIF(tau=np.ones(2), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2), v_reset=np.full(2, 0.5))
    path = tmp_path / "lif.nir"
    write_nir(_chain(nir.Affine(weight=np.eye(2), bias=np.zeros(2)), lif), path)
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "reference float  yes" in text and "reference int    no: neuron 'n1' (LIF): Loihi resets to 0" in text
    assert "lava             no" in text


def test_unknown_discretization_is_an_error():
    with pytest.raises(N2CError, match="unknown discretization 'brian'"):
        discretization("brian")


def test_infinite_tau_is_explained():
    lif = nir.LIF(tau=np.full(2, np.inf), r=np.full(2, np.inf), v_leak=np.zeros(2), v_threshold=np.ones(2),
                  v_reset=np.zeros(2))
    with pytest.raises(N2CError, match="τ is infinite .* export with β < 1"):
        import_nir(_chain(lif))


def test_cli_inspect_reports_the_integer_form_per_layer(digits_nir, capsys):
    assert main(["inspect", str(digits_nir), "--json"]) == 0
    quantization = json.loads(capsys.readouterr().out)["quantization"]
    assert [q["layer"] for q in quantization][-1] == "output" and len(quantization) == 4
    for q in quantization:
        assert q["weight_bits_used"] == 8  # the scale is the largest that keeps 8-bit mantissas: all bits used
        assert 0 < q["weight_max_abs_error"] <= 1 / q["scale"] + 1e-12  # even mantissas: error ≤ one step 2/S / 2
        assert 0 <= q["weights_zeroed"] < q["weight_count"]
