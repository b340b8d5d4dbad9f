"""Other tools' neurons on Lava: NIR's IF/LIF/CubaLIF lowered to Lava's stock LIF give the
same integers as the reference simulator, step by step, spikes and readout alike."""

from __future__ import annotations

import nir
import numpy as np
import pytest

from backends.float.dynamics import discretization
from backends.lava.lower import check_network, run_lava_steps
from n2c.fixed_point import bias_mantissa_exponent
from backends.lava.neurons import stock_lif_mismatch
from backends.nir.to_layers import import_nir
from backends.quantize import quantize
from backends.reference.simulate import run_encoded
from n2c.errors import QuantizationError


def _neuron(kind: str, n: int, leak: float):
    common = dict(r=np.ones(n), v_threshold=np.full(n, 1.0), v_reset=np.zeros(n))
    if kind == "IF":  # r = 1/dt: one step adds the input itself
        return nir.IF(**dict(common, r=np.full(n, 1e3)))
    if kind == "LIF":
        return nir.LIF(tau=np.full(n, 4e-3), v_leak=np.full(n, leak), **common)
    return nir.CubaLIF(tau_syn=np.full(n, 2e-3), tau_mem=np.full(n, 4e-3), v_leak=np.full(n, leak),
                       w_in=np.ones(n), **common)


def _network(kinds: tuple[str, str], seed: int, conv: bool):
    rng = np.random.default_rng(seed)
    gain = [1.0 if k == "IF" else 4.0 for k in kinds]
    leak = 0.0 if "CubaLIF" in kinds else 0.05
    if conv:
        first = nir.Conv2d(input_shape=np.array([6, 6]), weight=rng.normal(0, 0.8 * gain[0], (3, 2, 3, 3)),
                           stride=np.array([1, 1]), padding=np.array([1, 1]), dilation=np.array([1, 1]),
                           groups=1, bias=np.zeros(3))
        nodes = {"input": nir.Input(input_type={"input": np.array([2, 6, 6])}), "fc1": first,
                 "n1": _neuron(kinds[0], 1, leak), "pool": nir.SumPool2d(kernel_size=np.array([2, 2]),
                                                                          stride=np.array([2, 2]),
                                                                          padding=np.array([0, 0])),
                 "flat": nir.Flatten(input_type={"input": np.array([3, 3, 3])}, start_dim=0, end_dim=-1)}
        n_hidden, edges = 27, [("input", "fc1"), ("fc1", "n1"), ("n1", "pool"), ("pool", "flat"), ("flat", "fc2")]
    else:
        nodes = {"input": nir.Input(input_type={"input": np.array([6])}),
                 "fc1": nir.Linear(weight=rng.normal(0, 0.8 * gain[0], (12, 6))), "n1": _neuron(kinds[0], 1, leak)}
        n_hidden, edges = 12, [("input", "fc1"), ("fc1", "n1"), ("n1", "fc2")]
    nodes |= {"fc2": nir.Linear(weight=rng.normal(0, 0.6 * gain[1], (5, n_hidden))), "n2": _neuron(kinds[1], 1, leak),
              "output": nir.Output(output_type={"output": np.array([5])})}
    edges += [("fc2", "n2"), ("n2", "output")]
    graph = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    graph.nodes["n1"] = _neuron(kinds[0], 1, leak)  # scalar parameters: one value per layer, as Loihi's LIF takes
    return import_nir(graph)


@pytest.mark.slow
@pytest.mark.parametrize("kinds,conv", [(("IF", "LIF"), False), (("CubaLIF", "LIF"), False), (("LIF", "IF"), True)])
def test_stock_lif_on_lava_equals_the_reference(kinds, conv):
    graph = _network(kinds, seed=3, conv=conv)
    net = quantize(graph, 1.0, discretization("nir", 1e-3).dt, timesteps=12)
    rng = np.random.default_rng(4)
    s_in = (rng.uniform(0, 1, (12, 3, *graph.input.out_shape)) < 0.4).astype(np.int64)  # T=12, B=3 samples
    ref = run_encoded(net, s_in)
    lava_out, lava_spikes = run_lava_steps(net, s_in, progress=False, record=True)
    for name in ("n1", "n2"):
        assert lava_spikes[name].shape == ref.messages[name].shape
        assert np.array_equal(lava_spikes[name], ref.messages[name]), name
        assert 0.02 < ref.messages[name].mean() < 0.7  # the comparison is not between silent layers
    assert np.array_equal(lava_out, ref.readout_current)


def test_what_stock_lif_cannot_take_is_named():
    assert bias_mantissa_exponent(np.array([4095 * 8, -8]), "n")[1] == 3
    with pytest.raises(QuantizationError, match="no exact 13-bit mantissa"):
        bias_mantissa_exponent(np.array([4097]), "n")
    rng = np.random.default_rng(0)
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}), "fc": nir.Linear(weight=rng.normal(0, 1, (2, 3))),
             "lif": nir.LIF(tau=np.array([4e-3, 8e-3]), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2),
                            v_reset=np.zeros(2)), "output": nir.Output(output_type={"output": np.array([2])})}
    graph = import_nir(nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")],
                                    type_check=False))
    net = quantize(graph, 1.0)
    check_network(net)  # lowered to the custom CUBA neuron instead
    assert "per-neuron dv" in stock_lif_mismatch(net.by_name()["lif"])
