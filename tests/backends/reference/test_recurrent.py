"""Recurrent graphs in integers: a spiking layer's loop onto itself (snnTorch's RLeaky, the NIR
paper's Braille RNN) is a recurrent synapse that delivers one step later. The zero-delay integer
run equals the float reference exactly where the weights are on the integer grid, the loop
carries its bias from step 0 (NIR's Affine is instantaneous), and what has no integer form is
named."""

from __future__ import annotations

import dataclasses
import re

import nir
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from backends.float.dynamics import discretization
from backends.float.simulate import simulate_float
from backends.nir.to_layers import import_nir
from backends.quantize import quantize
from backends.reference.simulate import run_encoded
from backends.reference.stream import loops_before_window, run_stream
from n2c.cli.pipeline import run_arrays
from n2c.errors import QuantizationError
from tests.random_networks import dense_network, inputs, recurrent_nir_graph


def _spikes(graph, seed: int, steps: int = 16, batch: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (steps, batch, *graph.input.out_shape)
    return (rng.integers(0, 3, shape) * (rng.random(shape) < 0.4)).astype(float)


def _without_loop(graph):
    """The same graph with the loop's weights and bias zeroed."""
    layers = [dataclasses.replace(x, weight=np.zeros_like(x.weight), bias=np.zeros_like(x.bias))
              if x.name == "loop" else x for x in graph.layers]
    return dataclasses.replace(graph, layers=layers)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2 ** 16), conv=st.booleans())
def test_integrate_and_fire_loops_are_exact(seed, conv):
    """IF has no decay: with weights and biases on the 8-bit grid, the integer network's spikes
    equal the float reference's at every step, the loop's included."""
    graph = recurrent_nir_graph(seed, "IF", conv, grid=True)
    x = _spikes(graph, seed)
    disc = discretization("nir", 1.0)
    ref = simulate_float(graph, x, disc, record=True)
    assume(ref.values["cell"].sum() > 0)
    run = run_arrays(graph, x, "int", disc, input_scale=1.0, record=True)
    assert np.array_equal(run.messages["cell"], ref.values["cell"])
    assert np.array_equal(run.output, ref.output)


def test_the_loop_matters_and_carries_its_bias_from_step_0():
    graph = recurrent_nir_graph(3, "IF", grid=True)
    x, disc = _spikes(graph, 3), discretization("nir", 1.0)
    run = run_arrays(graph, x, "int", disc, input_scale=1.0, record=True)
    cut = run_arrays(_without_loop(graph), x, "int", disc, input_scale=1.0, record=True)
    assert not np.array_equal(run.messages["cell"], cut.messages["cell"])
    cold = dataclasses.replace(disc, recurrent_start="zero")  # a loop that sends nothing at step 0
    assert not np.array_equal(simulate_float(graph, x, cold, record=True).values["cell"], run.messages["cell"])


@pytest.mark.parametrize("kind,conv", [("LIF", False), ("CubaLIF", False), ("LIF", True)])
def test_leaky_loops_agree_with_float_up_to_rounding(kind, conv):
    """Decays round to 1/4096 and weights to 8 bits: agreement is measured, not equality."""
    graph = recurrent_nir_graph(1, kind, conv)
    x, disc = _spikes(graph, 2, steps=20, batch=6), discretization("nir", 1e-3)
    ref = simulate_float(graph, x, disc, record=True)
    run = run_arrays(graph, x, "int", disc, input_scale=1.0, record=True)
    assert 0.05 < ref.values["cell"].mean() < 0.5
    assert (run.messages["cell"] == ref.values["cell"]).mean() > 0.97  # a loop amplifies rounding
    assert (run.output == ref.output).mean() > 0.95


def test_the_loop_is_one_recurrent_synapse_after_its_neuron():
    net = quantize(recurrent_nir_graph(0, "LIF"), 1.0, 1e-3, timesteps=4)
    names = [x.name for x in net.layers]
    loop = net.by_name()["loop"]
    assert loop.recurrent and loop.input == "cell" and names.index("loop") == names.index("cell") + 1
    assert net.by_name()["cell"].inputs == ["fc1", "loop"] and net.forward_inputs(net.by_name()["cell"]) == ["fc1"]


@pytest.mark.parametrize("kind", ["lif", "mtn"])
def test_lava_timing_one_sample_per_stream_equals_zero_delay(kind):
    """Under Lava's timing the loop sends at t what its neuron sent at t - 1; streamed alone, each
    sample's window equals the zero-delay run. Streamed back to back, a sample's last spikes
    reach the next sample's first step (Lava's synapses keep their buffer)."""
    net = dense_network(11, kind, 4, recurrent=True)
    s_in = inputs(net, 11, batch=3)
    ref = run_encoded(net, s_in)
    assert ref.messages["rec"].any() and not loops_before_window(net)
    for i in range(3):
        alone = run_stream(net, s_in[:, i:i + 1])
        assert np.array_equal(alone.window("n1", 1), ref.messages["n1"][:, i:i + 1])
        assert np.array_equal(alone.window("out", 1)[-1], ref.output[i:i + 1])  # the readout's potential
    together = run_stream(net, s_in)
    assert not np.array_equal(together.window("n1", 3), ref.messages["n1"])


def test_a_neuron_firing_before_its_input_arrives_is_found():
    net = dense_network(11, "lif", 4, recurrent=True)
    net.layers[1].bias = np.full(6, 4000)  # v passes the threshold from the bias alone
    net.layers[1].threshold = np.full(6, 1)
    assert loops_before_window(net) == ["n1"]


def _graph(nodes: dict, edges: list):
    return import_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))


def _lif(n: int):
    return nir.LIF(tau=np.full(n, 4e-3), v_leak=np.zeros(n), r=np.ones(n), v_threshold=np.ones(n), v_reset=np.zeros(n))


def test_what_has_no_integer_form_is_named():
    rng = np.random.default_rng(0)
    base = {"input": nir.Input(input_type={"input": np.array([3])}), "fc": nir.Linear(weight=rng.normal(size=(4, 3))),
            "a": _lif(4), "fc2": nir.Linear(weight=rng.normal(size=(4, 4))), "b": _lif(4),
            "back": nir.Linear(weight=rng.normal(size=(4, 4))),
            "output": nir.Output(output_type={"output": np.array([4])})}
    chain = [("input", "fc"), ("fc", "a"), ("a", "fc2"), ("fc2", "b"), ("b", "output")]
    across = _graph(base, chain + [("b", "back"), ("back", "a")])  # b's spikes back into a: a loop over two layers
    with pytest.raises(QuantizationError, match="loop runs from 'b', not from 'a'.*a step per synapse"):
        quantize(across, 1.0, 1e-3, timesteps=4)
    li = dict(base, a=nir.LI(tau=np.full(4, 4e-3), r=np.ones(4), v_leak=np.zeros(4)))
    with pytest.raises(QuantizationError, match="only NIR's spiking neurons .* not LI"):
        quantize(_graph(li, chain + [("a", "back"), ("back", "a")]), 1.0, 1e-3, timesteps=4)
    delayed = dict(base, d=nir.Delay(delay=np.full(4, 2e-3)))
    with pytest.raises(QuantizationError, match="one weighted layer .* no Delay"):
        quantize(_graph(delayed, chain + [("a", "back"), ("back", "d"), ("d", "a")]), 1.0, 1e-3, timesteps=4)


def test_inspect_marks_the_loop_and_says_it_runs_on_every_backend(tmp_path, capsys):
    from n2c.cli.main import main
    rng = np.random.default_rng(0)
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}), "fc": nir.Linear(weight=rng.normal(size=(4, 3))),
             "a": _lif(4), "back": nir.Linear(weight=rng.normal(size=(4, 4))),
             "output": nir.Output(output_type={"output": np.array([4])})}
    edges = [("input", "fc"), ("fc", "a"), ("a", "back"), ("back", "a"), ("a", "output")]
    nir.write(str(tmp_path / "g.nir"), nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    assert main(["inspect", str(tmp_path / "g.nir")]) == 0
    text = capsys.readouterr().out
    assert "back→a (recurrent: one step late)" in text and "a→back," in text
    assert all(re.search(rf"{backend}\s+yes", text) for backend in ("reference float", "reference int", "lava"))


def test_lava_timing_of_a_recurrent_graph_streams_each_sample_alone_as_lava_does():
    """``--timing lava`` runs what ``--backend lava`` runs: a stream per sample, equal to the
    zero-delay run (the loop's buffer would otherwise carry one sample into the next)."""
    graph = recurrent_nir_graph(4, "LIF")
    x, disc = _spikes(graph, 4, steps=12, batch=4), discretization("nir", 1e-3)
    zero = run_arrays(graph, x, "int", disc, input_scale=1.0, record=True)
    timed = run_arrays(graph, x, "int", disc, input_scale=1.0, record=True, timing="lava")
    assert zero.messages["cell"].any()
    assert np.array_equal(timed.messages["cell"], zero.messages["cell"])
    assert np.array_equal(timed.output, zero.output)


def test_a_loop_on_a_deeper_layer_keeps_the_order_of_layers_and_of_the_summary():
    """The looping layer waits for its loop in its place, behind the layers before it (a fuzz
    case: its summary entry was written at its place in the layer list, past the summary's end)."""
    rng = np.random.default_rng(1)
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}), "fc": nir.Linear(weight=rng.normal(size=(4, 3))),
             "a": _lif(4), "fc2": nir.Linear(weight=rng.normal(size=(4, 4))), "b": _lif(4),
             "back": nir.Linear(weight=rng.normal(size=(4, 4))),
             "output": nir.Output(output_type={"output": np.array([4])})}
    edges = [("input", "fc"), ("fc", "a"), ("a", "fc2"), ("fc2", "b"), ("b", "back"), ("back", "b"), ("b", "output")]
    net = quantize(_graph(nodes, edges), 1.0, 1e-3, timesteps=4)
    assert [x.name for x in net.layers] == ["fc", "a", "fc2", "b", "back", "output_from_b", "output"]
    assert [entry["layer"] for entry in net.report] == ["a", "b", "output"]
    assert net.report[1]["synapses"] == ["fc2", "back"]
