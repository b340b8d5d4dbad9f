"""Other tools' neurons in Loihi integer arithmetic (n2c.neurons.cuba, n2c.fixed_point.lif_step): the CUBA step
against Lava's equations, exactness where the parameters are representable, and agreement
with the float simulator where rounding enters."""

from __future__ import annotations

import nir
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from backends.float.dynamics import discretization
from backends.float.simulate import simulate_float
from n2c.fixed_point import lif_step
from backends.nir.to_layers import import_nir
from backends.quantize import quantize
from n2c.errors import N2CError, QuantizationError
from n2c.cli.pipeline import run_arrays


def _graph(neuron_kind, n_in, n_hidden, n_out, rng, weight_scale=1.0, **params):
    """Input → Linear → neuron → Linear → LIF → Output."""
    def neuron(n, kind):
        common = dict(r=np.ones(n), v_threshold=np.full(n, 1.0), v_reset=np.zeros(n))
        if kind == "IF":
            return nir.IF(**common)
        if kind == "LIF":
            return nir.LIF(tau=np.full(n, params.get("tau", 4e-3)), v_leak=np.zeros(n), **common)
        return nir.CubaLIF(tau_syn=np.full(n, params.get("tau_syn", 2e-3)), tau_mem=np.full(n, 4e-3),
                           v_leak=np.zeros(n), w_in=np.ones(n), **common)
    gain = 1.0 if neuron_kind == "IF" else 4.0
    nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}),
             "fc1": nir.Linear(weight=rng.normal(0, weight_scale * gain, (n_hidden, n_in))),
             "n1": neuron(n_hidden, neuron_kind),
             "fc2": nir.Linear(weight=rng.normal(0, 0.8 * gain, (n_out, n_hidden))),
             "n2": neuron(n_out, "LIF" if neuron_kind == "LIF" else neuron_kind),
             "output": nir.Output(output_type={"output": np.array([n_out])})}
    edges = [("input", "fc1"), ("fc1", "n1"), ("n1", "fc2"), ("fc2", "n2"), ("n2", "output")]
    return import_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))


def test_lif_step_follows_lavas_equations():
    u, v = np.array([5000, -5000, 0]), np.array([100000, -100000, 2000])
    du, dv, bias = np.array([99, 99, 4095]), np.array([410, 410, 0]), np.array([7, 7, 0])
    out, u2, v2 = lif_step(u, v, np.array([3, -3, 1]), du, dv, bias, np.array([2000, 100, 40]))
    # u: rtz(±5000·(4096−100)/4096) = ±4877 (toward zero), plus the input shifted by 6 bits
    assert u2.tolist() == [4877 + 192, -4877 - 192, 64]
    # v: rtz(±100000·3686/4096) = ±89990, plus u and the bias (not shifted)
    assert v2.tolist() == [89990 + 5069 + 7, -89990 - 5069 + 7, 2064] and out.tolist() == [0, 0, 0]
    s, _, v3 = lif_step(np.zeros(1, np.int64), np.zeros(1, np.int64), np.array([2]), np.array([4095]),
                        np.array([0]), np.array([0]), np.array([2]))
    assert s.tolist() == [0] and v3.tolist() == [128]  # 128 > 2·64 is false: the threshold is strict
    s, _, v3 = lif_step(np.zeros(1, np.int64), np.zeros(1, np.int64), np.array([3]), np.array([4095]),
                        np.array([0]), np.array([0]), np.array([2]))
    assert s.tolist() == [1] and v3.tolist() == [0]  # 192 > 128: spike, reset to 0
    v_out, u_wrapped, _ = lif_step(np.array([2 ** 23 - 1]), np.zeros(1, np.int64), np.array([1]), np.array([4095]),
                                   np.array([0]), np.array([0]), np.array([0]), spiking=False)
    assert u_wrapped.tolist() == [64] and v_out.tolist() == [64]  # du = 4095: u keeps only this step's input
    big = 2 ** 23 - 1
    v_out, u_wrapped, _ = lif_step(np.array([big]), np.zeros(1, np.int64), np.array([100]), np.array([0]),
                                   np.array([0]), np.array([0]), np.array([0]), spiking=False)
    expected = big * 4095 // 4096 + 6400 - 2 ** 24  # u passes 2^23 and wraps around
    assert u_wrapped.tolist() == [expected] and v_out.tolist() == [expected]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2 ** 16), st.integers(4, 16))
def test_integrate_and_fire_is_exact_when_weights_are_representable(seed, steps):
    """IF has no decay: with weights on the 8-bit grid and integer inputs, integer = float."""
    rng = np.random.default_rng(seed)
    graph = _graph("IF", 4, 6, 3, rng)
    for layer in graph.layers:  # put every weight on the even-mantissa grid of its scale (2^-5)
        if hasattr(layer, "weight") and layer.weight is not None:
            layer.weight = np.clip(np.round(layer.weight * 16) / 16, -7.5, 7.5)
    x = rng.integers(0, 4, (steps, 5, 4)).astype(float)
    ref = simulate_float(graph, x, discretization("nir", 1.0), record=True)
    assume(ref.values["n1"].sum() > 0)  # a silent network would prove nothing
    run = run_arrays(graph, x, "int", discretization("nir", 1.0), input_scale=1.0, record=True)
    assert np.array_equal(run.messages["n1"], ref.values["n1"]) and np.array_equal(run.output, ref.output)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2 ** 16), st.integers(4, 16), st.sampled_from(["IF", "LIF"]),
       st.sampled_from([("snntorch", "lif_subtract"), ("snntorch-nodelay", "lif_subtract_now")]))
def test_snntorchs_reset_is_exact_in_integers_when_weights_are_representable(seed, steps, kind, scheme_kind):
    """snnTorch's resets (by subtraction, one step late; or without delay) as the integer kinds
    lif_subtract and lif_subtract_now: with weights on the 8-bit grid, IF spikes equal the float
    ``snntorch`` / ``snntorch-nodelay`` scheme's; LIF's decay (β = 0.5, exact in 12 bits) too."""
    rng = np.random.default_rng(seed)
    graph = _graph(kind, 4, 6, 3, rng, tau=2.0)  # dt = 1: dt/τ = 0.5
    for layer in graph.layers:
        if hasattr(layer, "weight") and layer.weight is not None:
            layer.weight = np.clip(np.round(layer.weight * 16) / 16, -7.5, 7.5)
    x = rng.integers(0, 4, (steps, 5, 4)).astype(float)
    scheme = discretization(scheme_kind[0], 1.0)
    ref = simulate_float(graph, x, scheme, record=True)
    assume(ref.values["n1"].sum() > 0)
    run = run_arrays(graph, x, "int", scheme, input_scale=1.0, record=True)
    assert run.net.by_name()["n1"].kind == scheme_kind[1]
    assert np.array_equal(run.messages["n1"], ref.values["n1"]) and np.array_equal(run.output, ref.output)
    hard = run_arrays(graph, x, "int", discretization("nir", 1.0), input_scale=1.0, record=True)
    assume(not np.array_equal(hard.messages["n1"], ref.values["n1"]))  # where the reset matters, it shows


@pytest.mark.parametrize("kind", ["LIF", "CubaLIF"])
def test_leaky_neurons_agree_with_float_up_to_rounding(kind):
    """Decays are rounded to 1/4096 and truncated toward zero, weights to 8 bits: the integer
    network is an approximation of the float one, so agreement is measured, not equality."""
    rng = np.random.default_rng(1)
    graph = _graph(kind, 8, 32, 10, rng, weight_scale=0.6)
    x = (rng.uniform(0, 1, (60, 8, 8)) < 0.3).astype(float)
    ref = simulate_float(graph, x, discretization("nir", 1e-3), record=True)
    run = run_arrays(graph, x, "int", discretization("nir", 1e-3), input_scale=1.0, record=True)
    hidden = run.messages["n1"]
    rate = ref.values["n1"].mean()
    assert 0.02 < rate < 0.6
    assert (hidden == ref.values["n1"]).mean() > 0.97
    assert (run.output == ref.output).mean() > 0.95


def test_what_has_no_integer_form_is_named():
    rng = np.random.default_rng(0)
    graph = _graph("LIF", 2, 3, 2, rng)
    graph.layers[2].v_reset = np.full(3, 0.5)
    with pytest.raises(QuantizationError, match="Loihi resets to 0"):
        quantize(graph, 1.0)
    with pytest.raises(QuantizationError, match="dt/τ ≥ 1"):
        quantize(_graph("LIF", 2, 3, 2, rng), 1.0, dt=1.0)
    with pytest.raises(N2CError, match="--dynamics norse has no integer .* follow nir or snntorch or snntorch-nodelay"):
        run_arrays(_graph("LIF", 2, 3, 2, rng), np.zeros((2, 1, 2)), "int", discretization("norse"), 1.0)
    with pytest.raises(QuantizationError, match="reset 'settle' has no integer form"):
        quantize(_graph("LIF", 2, 3, 2, rng), 1.0, reset="settle")
    with pytest.raises(QuantizationError, match="does not state its input scale"):
        quantize(_graph("LIF", 2, 3, 2, rng))


def test_values_past_loihis_limits_warn_or_fail_with_strict(tmp_path, capsys):
    from n2c.cli.main import main
    from n2c.export.nir import write_nir

    n_in = 64
    nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}),
             "fc": nir.Linear(weight=np.full((2, n_in), 0.9)),
             "lif": nir.IF(r=np.full(2, 1e3), v_threshold=np.full(2, 100.0), v_reset=np.zeros(2)),
             "output": nir.Output(output_type={"output": np.array([2])})}
    path = tmp_path / "loud.nir"
    write_nir(nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")],
                           type_check=False), path)
    x = np.full((3, 1, n_in), 100.0)  # 64 inputs of 100 through 8-bit weights: far past 2^15
    run = run_arrays(import_nir(path), x, "int", discretization("nir", 1e-3), input_scale=1.0, record=True)
    assert run.overflows["fc"]["count"] == 6 and "16-bit" in run.overflows["fc"]["limit"]
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npy"
    args = ["simulate", str(path), "--input", str(tmp_path / "x.npy"), "--precision", "int", "--input-scale", "1",
            "--save-output", str(out)]
    assert main(args) == 0
    assert "n2c: warning: layer 'fc': 6 values exceeded Loihi's 16-bit synaptic accumulator" in capsys.readouterr().err
    out.unlink()
    assert main(args + ["--strict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("n2c: error: layer 'fc'") and err.count("\n") == 1 and not out.exists()


def _scaled_delayed_graph(rng, n_in=4, n_hidden=6, n_out=3):
    """Input → fc1 → IF → Delay → Scale → fc2 → Scale → Delay → IF → Output: Scale and Delay on
    messages (folded into fc2's columns) and between weights and neuron (into its rows)."""
    common = dict(v_threshold=np.ones, v_reset=np.zeros)
    def if_node(n):
        return nir.IF(r=np.ones(n), **{k: f(n) for k, f in common.items()})
    grid = lambda shape: rng.integers(-12, 13, shape) / 8  # |w| ≤ 1.5 on the 1/8 grid
    nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}),
             "fc1": nir.Linear(weight=grid((n_hidden, n_in))), "n1": if_node(n_hidden),
             "d1": nir.Delay(delay=rng.integers(0, 4, n_hidden).astype(float)),
             "s1": nir.Scale(scale=rng.choice([1.0, 2.0], n_hidden)),
             "fc2": nir.Linear(weight=grid((n_out, n_hidden))),
             "s2": nir.Scale(scale=rng.choice([1.0, 2.0], n_out)),
             "d2": nir.Delay(delay=rng.integers(0, 3, n_out).astype(float)), "n2": if_node(n_out),
             "output": nir.Output(output_type={"output": np.array([n_out])})}
    names = list(nodes)
    return import_nir(nir.NIRGraph(nodes=nodes, edges=list(zip(names, names[1:])), type_check=False))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2 ** 16))
def test_scale_and_delay_fold_into_integer_synapses_exactly(seed):
    """Scale folds into weights, Delay into per-synapse delays (Lava's DelayDense): with weights on
    the 8-bit grid the integer network equals the float one step for step."""
    rng = np.random.default_rng(seed)
    graph = _scaled_delayed_graph(rng)
    x = rng.integers(0, 4, (10, 6, 4)).astype(float)
    ref = simulate_float(graph, x, discretization("nir", 1.0), record=True)
    assume(ref.values["n1"].sum() > 0 and ref.values["n2"].sum() > 0)
    run = run_arrays(graph, x, "int", discretization("nir", 1.0), input_scale=1.0, record=True)
    assert np.array_equal(run.messages["n1"], ref.values["n1"]) and np.array_equal(run.messages["n2"], ref.values["n2"])
    assert np.array_equal(run.output, ref.output)
    fc2 = next(layer for layer in run.net.layers if layer.name == "fc2")
    assert fc2.delay is not None and fc2.delay.max() <= 5


def test_delays_past_loihis_limit_or_on_convolutions_are_named():
    graph = _scaled_delayed_graph(np.random.default_rng(0))
    next(layer for layer in graph.layers if layer.name == "d1").delay = np.full(6, 63.0)
    with pytest.raises(QuantizationError, match="63 steps at dt 1 exceed Loihi's 62-step"):
        quantize(graph, 1.0, dt=1.0)
    graph = _scaled_delayed_graph(np.random.default_rng(0))
    next(layer for layer in graph.layers if layer.name == "fc2").bias = np.ones(3)
    with pytest.raises(QuantizationError, match="delays the bias of 'fc2'"):
        quantize(graph, 1.0, dt=1.0)


def test_a_chain_of_dense_layers_on_the_input_quantizes_as_their_product():
    """Input → Affine → Affine → Affine → IF: the integer stage composes the chain into one layer
    on the input (W3·W2·W1, with the biases carried through), the same integer network as the
    graph holding that product. (Before, the middle layer was taken for one on the input and the
    last read the wrong width.)"""
    rng = np.random.default_rng(3)
    sizes = [3, 4, 4, 2]
    ws = [rng.normal(0, 1, (sizes[i + 1], sizes[i])) for i in range(3)]
    bs = [rng.normal(0, 1, sizes[i + 1]) for i in range(3)]

    def graph(layers):
        nodes = {"input": nir.Input(input_type={"input": np.array([3])})}
        nodes.update({f"fc{i}": nir.Affine(weight=w, bias=b) for i, (w, b) in enumerate(layers)})
        nodes.update(n=nir.IF(r=np.ones(2), v_threshold=np.ones(2), v_reset=np.zeros(2)),
                     output=nir.Output(output_type={"output": np.array([2])}))
        names = ["input", *[f"fc{i}" for i in range(len(layers))], "n", "output"]
        return import_nir(nir.NIRGraph(nodes=nodes, edges=list(zip(names, names[1:])), type_check=False))

    w, b = ws[0], bs[0]
    for wi, bi in zip(ws[1:], bs[1:]):
        w, b = wi @ w, wi @ b + bi
    chained = quantize(graph(list(zip(ws, bs))), 0.5, 1.0, timesteps=4)
    product = quantize(graph([(w, b)]), 0.5, 1.0, timesteps=4)
    assert [type(x).__name__ for x in chained.layers] == [type(x).__name__ for x in product.layers]
    for got, want in zip(chained.layers, product.layers):
        fields = ("weight", "weight_exp") if hasattr(got, "weight_exp") else ("bias", "threshold")
        assert all(np.array_equal(getattr(got, f), getattr(want, f)) for f in fields), got.name


def _cuba(n: int):
    return nir.CubaLIF(tau_syn=np.full(n, 2e-3), tau_mem=np.full(n, 4e-3), r=np.ones(n), v_leak=np.zeros(n),
                       v_threshold=np.ones(n), v_reset=np.zeros(n), w_in=np.ones(n))


def test_a_bias_into_a_synaptic_current_is_an_input_that_spikes_at_every_step():
    """A CubaLIF's input bias enters its synaptic current (Loihi's neuron bias enters v): the
    integer form feeds it from an always-on neuron, W·s + b = [W | b]·[s; 1]. So the network
    equals, spike for spike, the one whose input carries an explicit extra channel of ones."""
    rng = np.random.default_rng(7)
    w, b = rng.normal(0, 12, (8, 5)), rng.normal(0, 3, 8)

    def graph(weight, bias, n_in):
        nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}),
                 "fc": nir.Affine(weight=weight, bias=bias), "cuba": _cuba(8),
                 "output": nir.Output(output_type={"output": np.array([8])})}
        return import_nir(nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "cuba"), ("cuba", "output")],
                                       type_check=False))
    x = (rng.random((20, 4, 5)) < 0.3).astype(float)
    ones = np.concatenate([x, np.ones((20, 4, 1))], axis=2)
    disc = discretization("nir", 1e-3)
    biased = run_arrays(graph(w, b, 5), x, "int", disc, input_scale=1.0, record=True)
    explicit = run_arrays(graph(np.hstack([w, b[:, None]]), np.zeros(8), 6), ones, "int", disc, input_scale=1.0,
                          record=True)
    unbiased = run_arrays(graph(w, np.zeros(8), 5), x, "int", disc, input_scale=1.0, record=True)
    assert np.array_equal(biased.messages["cuba"], explicit.messages["cuba"])
    assert not np.array_equal(biased.messages["cuba"], unbiased.messages["cuba"])  # the bias matters
    net = quantize(graph(w, b, 5), 1.0, 1e-3, timesteps=20)
    assert [x.name for x in net.layers][:1] == ["always_on"] and "fc_bias" not in net.by_name()
    assert net.by_name()["cuba"].inputs == ["fc", "cuba_bias"]


def test_a_conv_bias_into_a_synaptic_current_must_be_one_per_channel():
    rng = np.random.default_rng(0)
    conv = nir.Conv2d(input_shape=np.array([4, 4]), weight=rng.normal(0, 4, (2, 1, 3, 3)), stride=np.array([1, 1]),
                      padding=np.array([1, 1]), dilation=np.array([1, 1]), groups=1, bias=np.array([0.5, -0.5]))
    nodes = {"input": nir.Input(input_type={"input": np.array([1, 4, 4])}), "conv": conv,
             "cuba": nir.CubaLIF(tau_syn=np.full((2, 4, 4), 2e-3), tau_mem=np.full((2, 4, 4), 4e-3),
                                 r=np.ones((2, 4, 4)), v_leak=np.zeros((2, 4, 4)), v_threshold=np.ones((2, 4, 4)),
                                 v_reset=np.zeros((2, 4, 4)), w_in=np.ones((2, 4, 4))),
             "output": nir.Output(output_type={"output": np.array([2, 4, 4])})}
    graph = import_nir(nir.NIRGraph(nodes=nodes, edges=[("input", "conv"), ("conv", "cuba"), ("cuba", "output")],
                                    type_check=False))
    net = quantize(graph, 1.0, 1e-3, timesteps=4)
    assert net.by_name()["always_on_1x4x4"].shape == (1, 4, 4)
    bias_syn = net.by_name()["cuba_bias"]
    assert bias_syn.kind == "conv" and bias_syn.weight.shape == (2, 1, 1, 1)
    assert np.sign(bias_syn.weight.ravel()).tolist() == [1, -1]


def test_a_layer_named_like_the_always_on_neuron_is_refused():
    rng = np.random.default_rng(0)
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}),
             "always_on": nir.Affine(weight=rng.normal(0, 3, (8, 3)), bias=np.full(8, 0.5)), "cuba": _cuba(8),
             "output": nir.Output(output_type={"output": np.array([8])})}
    graph = import_nir(nir.NIRGraph(nodes=nodes, edges=[("input", "always_on"), ("always_on", "cuba"),
                                                        ("cuba", "output")], type_check=False))
    with pytest.raises(QuantizationError, match="layer 'always_on' has the name n2c gives its always-on neuron"):
        quantize(graph, 1.0, 1e-3, timesteps=4)
