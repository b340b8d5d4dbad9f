"""A pool straight after a convolution, with no neuron between (snnTorch's Conv2d → AvgPool2d →
Leaky), becomes one convolution in the integer stage: exact where the weights are representable,
bit for bit on Lava, and named where it cannot compose."""

from __future__ import annotations

import contextlib
import io

import nir
import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from backends.float.dynamics import discretization
from backends.float.simulate import simulate_float
from backends.nir.to_layers import import_nir
from backends.quantize import quantize
from backends.reference.simulate import run_encoded
from n2c.cli.pipeline import run_arrays
from n2c.errors import QuantizationError


def _if(shape):
    return nir.IF(r=np.ones(shape), v_threshold=np.ones(shape), v_reset=np.zeros(shape))


def _graph(rng, c_in, size, conv: dict, pool_kind: str, pool: dict, readers=("pool",)):
    """Input → Conv2d → pool → IF → Flatten → Linear → IF → Output; weights and biases on a grid of
    1/8 in [-1, 1], so that the composed kernel stays on the 8-bit grid of its scale."""
    c_out, groups = 4, conv.get("groups", 1)
    weight = rng.integers(-8, 9, (c_out, c_in // groups, *conv["kernel"])) / 8
    bias = rng.integers(-2, 3, c_out) / 8
    conv_node = nir.Conv2d(input_shape=np.array([size, size]), weight=weight, bias=bias,
                           stride=np.array(conv["stride"]), padding=np.array(conv["padding"]),
                           dilation=np.array(conv["dilation"]), groups=groups)
    pool_node = getattr(nir, pool_kind)(kernel_size=np.array(pool["kernel"]), stride=np.array(pool["stride"]),
                                        padding=np.array(pool.get("padding", (0, 0))))
    conv_size = [(size + 2 * p - d * (k - 1) - 1) // s + 1
                 for p, d, k, s in zip(conv["padding"], conv["dilation"], conv["kernel"], conv["stride"])]
    shape = (c_out, *[(n + 2 * p - k) // q + 1 for n, p, k, q in zip(conv_size, pool.get("padding", (0, 0)),
                                                                      pool["kernel"], pool["stride"])])
    assume(min(shape) > 0)
    n_flat = int(np.prod(shape))
    nodes = {"input": nir.Input(input_type={"input": np.array([c_in, size, size])}), "conv": conv_node,
             "pool": pool_node, "n1": _if(shape), "flat": nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0),
             "fc": nir.Linear(weight=rng.integers(-8, 9, (4, n_flat)) / 8), "n2": _if(4),
             "output": nir.Output(output_type={"output": np.array([4])})}
    edges = [("input", "conv"), ("conv", "pool"), *[(src, "n1") for src in readers], ("n1", "flat"), ("flat", "fc"),
             ("fc", "n2"), ("n2", "output")]
    return import_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))


pairs = st.tuples(st.integers(1, 3), st.integers(1, 3))


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2 ** 16), kernel=pairs, stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)), padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
       groups=st.sampled_from([1, 2]), pool_kind=st.sampled_from(["SumPool2d", "AvgPool2d"]), pool_kernel=pairs,
       pool_stride=pairs)
def test_a_pool_after_a_convolution_is_one_convolution_exactly(seed, kernel, stride, dilation, padding, groups,
                                                               pool_kind, pool_kernel, pool_stride):
    """IF neurons have no decay: with the composed kernel on the 8-bit grid, integer = float, spike for spike."""
    if pool_kind == "AvgPool2d":  # 1/p² stays on the grid for windows of 1, 2 or 4 taps
        assume(pool_kernel[0] * pool_kernel[1] in (1, 2, 4))
    rng = np.random.default_rng(seed)
    graph = _graph(rng, 2, 9, dict(kernel=kernel, stride=stride, dilation=dilation, padding=padding, groups=groups),
                   pool_kind, dict(kernel=pool_kernel, stride=pool_stride))
    x = rng.integers(0, 3, (6, 4, 2, 9, 9)).astype(float)
    ref = simulate_float(graph, x, discretization("nir", 1.0), record=True)
    assume(0 < ref.values["n1"].mean() < 1)  # neither silent nor saturated
    run = run_arrays(graph, x, "int", discretization("nir", 1.0), input_scale=1.0, record=True)
    assert np.array_equal(run.messages["n1"], ref.values["n1"])
    assert np.array_equal(run.output, ref.output)


def _case(**changes):
    args = dict(conv=dict(kernel=(3, 3), stride=(1, 1), dilation=(1, 1), padding=(1, 1)), pool_kind="AvgPool2d",
                pool=dict(kernel=(2, 2), stride=(2, 2)))
    args.update(changes)
    return _graph(np.random.default_rng(0), 2, 8, **args)


def test_what_cannot_compose_is_named():
    padded = _case(pool=dict(kernel=(2, 2), stride=(2, 2), padding=(1, 1)))
    with pytest.raises(QuantizationError, match="pooling 'pool' directly after weighted layer 'conv': only an "
                                                "unpadded pool that alone reads a 2-D convolution"):
        quantize(padded, 1.0, 1.0, timesteps=2)
    read_twice = _case(pool=dict(kernel=(1, 1), stride=(1, 1)), readers=("pool", "conv"))
    with pytest.raises(QuantizationError, match="that alone reads"):
        quantize(read_twice, 1.0, 1.0, timesteps=2)


def _snntorch_tutorial_cnn():
    """snnTorch's tutorial CNN with its MaxPool2d as AvgPool2d (NIR has no max pool): the pool
    follows the convolution, the neuron follows the pool."""
    snn = pytest.importorskip("snntorch")
    torch.manual_seed(0)
    def leaky(*shape):  # snnTorch's exporter takes a layer's shape from its parameters
        return snn.Leaky(beta=torch.full(shape, 0.9), threshold=torch.full(shape, 1.0), init_hidden=True)

    net = nn.Sequential(nn.Conv2d(1, 6, 5), nn.AvgPool2d(2), leaky(6, 6, 6), nn.Conv2d(6, 8, 3), nn.AvgPool2d(2),
                        leaky(8, 2, 2), nn.Flatten(), nn.Linear(8 * 2 * 2, 10), leaky(10))
    with torch.no_grad():
        for m in net:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(3.0)
    from snntorch.export_nir import export_to_nir
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress
        return import_nir(export_to_nir(net, torch.zeros(1, 1, 16, 16), ignore_dims=[0]))


def _spikes(steps, batch, shape, seed):
    return (np.random.default_rng(seed).uniform(0, 1, (steps, batch, *shape)) < 0.3).astype(float)


def test_snntorch_tutorial_cnn_runs_in_integers_close_to_float():
    """Leaky decays and 8-bit weights round: agreement with the float run is measured, not
    equality. With snnTorch's own reset (``--dynamics snntorch``: the integer kind
    lif_subtract) the integer network follows snnTorch's simulation more closely than with
    Loihi's stock reset to 0."""
    graph = _snntorch_tutorial_cnn()
    x = _spikes(30, 8, (1, 16, 16), seed=1)
    scheme = discretization("snntorch")  # = snnTorch's own simulation (tests/contracts/test_interop.py)
    ref = simulate_float(graph, x, scheme, record=True)
    run = run_arrays(graph, x, "int", scheme, input_scale=1.0, record=True)
    hard = run_arrays(graph, x, "int", discretization("nir", 1e-4), input_scale=1.0, record=True)
    for name, least in (("2", 0.97), ("5", 0.85), ("8", 0.85)):  # the Leaky layers (snnTorch's module indices)
        assert 0.02 < ref.values[name].mean() < 0.6, name
        agree = (run.messages[name] == ref.values[name]).mean()
        assert agree > least and agree > (hard.messages[name] == ref.values[name]).mean(), name


@pytest.mark.slow
@pytest.mark.parametrize("reset", ["zero", "subtract-late"])
def test_snntorch_tutorial_cnn_on_lava_equals_the_reference(reset):
    from backends.lava.lower import run_lava_steps

    graph = _snntorch_tutorial_cnn()
    net = quantize(graph, 1.0, 1e-4, timesteps=10, reset=reset)
    s_in = _spikes(10, 2, (1, 16, 16), seed=2).astype(np.int64)
    ref = run_encoded(net, s_in)
    lava_out, lava_spikes = run_lava_steps(net, s_in, progress=False, record=True)
    spiking = [name for name in lava_spikes if ref.messages[name].any()]
    assert len(spiking) >= 2
    for name in lava_spikes:
        assert np.array_equal(lava_spikes[name], ref.messages[name]), name
    assert np.array_equal(lava_out, ref.readout_current)
