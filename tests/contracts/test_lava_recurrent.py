"""Recurrent synapses on Lava: a loop of a neuron layer onto itself is a Dense (or Conv) Process
from the neuron's output back into its input, which Lava delivers one step later (its synapses
send their buffer before they receive). Bit for bit against the reference simulator: the raw
stream (samples back to back, the loop's buffer crossing window boundaries), and sample by
sample against the zero-delay run (a compiled run per sample)."""

from __future__ import annotations

import json

import nir
import numpy as np
import pytest

from backends.lava.lower import run_lava_steps
from backends.quantize import quantize
from backends.reference.simulate import run_encoded
from n2c.cli.main import main
from n2c.errors import QuantizationError
from tests.contracts.test_lava_stream import assert_same_stream
from tests.random_networks import dense_network, inputs, recurrent_nir_graph

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", ["lif", "mtn"])
def test_a_recurrent_synapse_streams_bit_exactly(kind):
    net = dense_network(11, kind, 4, recurrent=True)
    messages = assert_same_stream(net, inputs(net, 11, batch=2))
    assert messages["n1"].any()


@pytest.mark.parametrize("kind,conv", [("LIF", False), ("CubaLIF", False), ("IF", True), ("CubaLIF", True)])
def test_nir_recurrent_graphs_on_lava_equal_the_reference(kind, conv):
    graph = recurrent_nir_graph(5, kind, conv, grid=kind == "IF")
    net = quantize(graph, 1.0, 1.0 if kind == "IF" else 1e-3, timesteps=10)
    rng = np.random.default_rng(6)
    shape = (10, 3, *graph.input.out_shape)
    s_in = (rng.integers(0, 3, shape) * (rng.random(shape) < 0.4)).astype(np.int64)
    ref = run_encoded(net, s_in)
    current, spikes = run_lava_steps(net, s_in, progress=False, record=True)
    assert 0.02 < ref.messages["cell"].mean() < 0.7 and ref.messages["loop"].any()
    for name in ("cell", "out"):
        assert np.array_equal(spikes[name], ref.messages[name]), name
    assert np.array_equal(current, ref.readout_current)


def test_lava_refuses_a_loop_that_fires_before_its_input_arrives():
    net = dense_network(11, "lif", 4, recurrent=True)
    net.layers[1].bias, net.layers[1].threshold = np.full(6, 4000), np.full(6, 1)
    with pytest.raises(QuantizationError, match="n1.*before its first input arrives.*--backend reference"):
        run_lava_steps(net, inputs(net, 11, batch=1), progress=False)


def test_simulate_cli_runs_a_recurrent_graph_on_lava(tmp_path, capsys):
    """``n2c simulate --backend lava`` on a recurrent NIR file (integer precision by default)."""
    rng = np.random.default_rng(2)
    lif = [nir.LIF(tau=np.full(n, 4e-3), v_leak=np.zeros(n), r=np.ones(n), v_threshold=np.ones(n), v_reset=np.zeros(n))
           for n in (8, 3)]
    nodes = {"input": nir.Input(input_type={"input": np.array([5])}), "fc": nir.Linear(weight=rng.normal(0, 9, (8, 5))),
             "cell": lif[0], "loop": nir.Affine(weight=rng.normal(0, 6, (8, 8)), bias=rng.normal(0, 0.5, 8)),
             "fc2": nir.Linear(weight=rng.normal(0, 9, (3, 8))), "out": lif[1],
             "output": nir.Output(output_type={"output": np.array([3])})}
    edges = [("input", "fc"), ("fc", "cell"), ("cell", "loop"), ("loop", "cell"), ("cell", "fc2"), ("fc2", "out"),
             ("out", "output")]
    nir.write(str(tmp_path / "rnn.nir"), nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    np.save(tmp_path / "x.npy", (rng.random((8, 2, 5)) < 0.4).astype(np.float32))
    for backend in ("reference", "lava"):
        assert main(["simulate", str(tmp_path / "rnn.nir"), "--input", str(tmp_path / "x.npy"), "--backend", backend,
                     "--input-scale", "1", "--save-output", str(tmp_path / f"{backend}.npy"), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)
    ref, lava = np.load(tmp_path / "reference.npy"), np.load(tmp_path / "lava.npy")
    assert np.array_equal(ref, lava) and ref.any()
