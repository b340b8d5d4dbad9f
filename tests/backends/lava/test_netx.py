"""lava-dl netx export (``backends.lava.netx``): the file netx loads computes, in Lava's
fixed-point simulation, every layer's spikes and the readout of n2c's integer reference.

Timing: the test source sends sample i's step j at time step i·T + j + 1; each netx block adds
one step for its synapse, so block k (1-based) computes (i, j) at time step i·T + j + 1 + k,
which a RingBuffer sink (or a Monitor) stores at index i·T + j + k. With ``reset_interval=T``
and ``reset_offset=1`` netx resets block k at that (i, 0) step. The reference simulator is
zero-delay, so its (i, j) is compared with the sink's i·T + j + k.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import h5py
import nir
import numpy as np
import pytest

from backends.lava.layout import conv_weight_for_lava, from_lava, to_lava
from backends.lava.netx import (NETX_FORMAT, RESET_OFFSET, _fold_pool_into_conv, _fold_pool_into_dense, export_netx,
                                    netx_dense_weights, to_netx, write_netx)
from backends.nir.to_layers import import_nir
from backends.ir.integer import IntSynapse
from backends.quantize import quantize
from n2c.fixed_point import clamp24
from backends.reference.simulate import run_encoded
from backends.reference.synapses import synapse as _synapse
from n2c.fixed_point import lava_effective_weights
from n2c.cli.main import main
from n2c.errors import N2CError

DT = 1e-3


def _neuron(kind: str, threshold: float = 1.0, n: int = 1):
    common = dict(r=np.ones(n), v_threshold=np.full(n, threshold), v_reset=np.zeros(n))
    if kind == "IF":  # r = 1/dt: one step adds the input itself
        return nir.IF(**dict(common, r=np.full(n, 1 / DT)))
    if kind == "LIF":
        return nir.LIF(tau=np.full(n, 4e-3), v_leak=np.zeros(n), **common)
    if kind == "LI":
        return nir.LI(tau=np.full(n, 4e-3), r=np.ones(n), v_leak=np.zeros(n))
    return nir.CubaLIF(tau_syn=np.full(n, 2e-3), tau_mem=np.full(n, 4e-3), v_leak=np.zeros(n), w_in=np.ones(n),
                       **common)


def _conv(rng, cin: int, cout: int, hw: int, std: float, k: int = 3, pad: int = 1):
    return nir.Conv2d(input_shape=np.array([hw, hw]), weight=rng.normal(0, std, (cout, cin, k, k)),
                      stride=np.array([1, 1]), padding=np.array([pad, pad]), dilation=np.array([1, 1]), groups=1,
                      bias=np.zeros(cout))


def _pool(k: int = 2, s: int = 2, p: int = 0):
    return nir.SumPool2d(kernel_size=np.array([k, k]), stride=np.array([s, s]), padding=np.array([p, p]))


def _graph(nodes: dict, chain: list[str]):
    """A chain of nodes (scalar neuron parameters: one value per layer, as netx takes)."""
    return import_nir(nir.NIRGraph(nodes=nodes, edges=list(zip(chain, chain[1:])), type_check=False))


def _dense_graph(seed: int = 3, last: str = "LIF"):
    """input(6) → Linear → CubaLIF → Linear → LIF|LI → Output."""
    rng = np.random.default_rng(seed)
    nodes = {"input": nir.Input(input_type={"input": np.array([6])}),
             "fc1": nir.Linear(weight=rng.normal(0, 3.0, (12, 6))), "n1": _neuron("CubaLIF"),
             "fc2": nir.Linear(weight=rng.normal(0, 2.4, (5, 12))), "n2": _neuron(last),
             "output": nir.Output(output_type={"output": np.array([5])})}
    return _graph(nodes, list(nodes))


def _recurrent_graph(seed: int = 3):
    """input(6) → Linear → CubaLIF ⟲ Linear → Linear → LIF → Output: netx's dense_rec."""
    rng = np.random.default_rng(seed)
    nodes = {"input": nir.Input(input_type={"input": np.array([6])}),
             "fc1": nir.Linear(weight=rng.normal(0, 3.0, (12, 6))), "n1": _neuron("CubaLIF"),
             "loop": nir.Linear(weight=rng.normal(0, 1.5, (12, 12))),
             "fc2": nir.Linear(weight=rng.normal(0, 2.4, (5, 12))), "n2": _neuron("LIF"),
             "output": nir.Output(output_type={"output": np.array([5])})}
    edges = [("input", "fc1"), ("fc1", "n1"), ("n1", "loop"), ("loop", "n1"), ("n1", "fc2"), ("fc2", "n2"),
             ("n2", "output")]
    return import_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))


def _leaky_graph(seed: int = 3):
    """input(6) → Linear → LIF with a leak towards v_leak = 0.3 → Output: its integer bias
    (dt/τ)·v_leak·S is no multiple of 64 at Loihi's granularity."""
    rng = np.random.default_rng(seed)
    leaky = nir.LIF(tau=np.full(1, 4e-3), v_leak=np.full(1, 0.3), r=np.ones(1), v_threshold=np.ones(1),
                    v_reset=np.zeros(1))
    nodes = {"input": nir.Input(input_type={"input": np.array([6])}),
             "fc1": nir.Linear(weight=rng.normal(0, 3.0, (12, 6))), "n1": leaky,
             "output": nir.Output(output_type={"output": np.array([12])})}
    return _graph(nodes, list(nodes))


def test_netx_biases_are_quantized_in_multiples_of_64():
    """netx fixes bias_exp = 6: the export quantizes biases to multiples of 64 units (at Loihi's
    own granularity this graph's bias is refused), and says how much that changed."""
    graph = _leaky_graph()
    plain = quantize(graph, 1.0, DT)
    assert int(plain.by_name()["n1"].bias.flat[0]) % 64
    with pytest.raises(N2CError, match="not a multiple of 64"):
        to_netx(plain)
    net = quantize(graph, 1.0, DT, fmt=NETX_FORMAT)
    bias = net.by_name()["n1"].bias
    assert not (bias % 64).any() and abs(int(bias.flat[0]) - int(plain.by_name()["n1"].bias.flat[0])) <= 32
    model = to_netx(net)
    assert 0 < model.bias_rounding["n1"] <= 32


def _conv_dense_graph(seed: int = 4):
    """input(2,6,6) → Conv → LIF → SumPool → Flatten → Affine (with bias) → IF → Output: the pooling
    folds into the dense weights."""
    rng = np.random.default_rng(seed)
    nodes = {"input": nir.Input(input_type={"input": np.array([2, 6, 6])}), "c1": _conv(rng, 2, 3, 6, 3.2),
             "n1": _neuron("LIF"), "pool": _pool(),
             "flat": nir.Flatten(input_type={"input": np.array([3, 3, 3])}, start_dim=0, end_dim=-1),
             "fc2": nir.Affine(weight=rng.normal(0, 0.6, (5, 27)), bias=rng.integers(-2, 3, 5) * 0.25),
             "n2": _neuron("IF"), "output": nir.Output(output_type={"output": np.array([5])})}
    return _graph(nodes, list(nodes))


def _conv_conv_graph(seed: int = 5, pool=None):
    """input(2,8,8) → Conv → IF → SumPool → Conv → CubaLIF → Flatten → Affine (bias) → Output: the
    pooling folds into the second conv, the weighted readout becomes an integrating layer."""
    rng = np.random.default_rng(seed)
    nodes = {"input": nir.Input(input_type={"input": np.array([2, 8, 8])}), "c1": _conv(rng, 2, 4, 8, 1.0),
             "n1": _neuron("IF"), "pool": pool or _pool(), "c2": _conv(rng, 4, 3, 4, 2.0), "n2": _neuron("CubaLIF"),
             "flat": nir.Flatten(input_type={"input": np.array([3, 4, 4])}, start_dim=0, end_dim=-1),
             "fc": nir.Affine(weight=rng.normal(0, 0.5, (4, 48)), bias=rng.integers(-3, 4, 4) * 0.5),
             "output": nir.Output(output_type={"output": np.array([4])})}
    return _graph(nodes, list(nodes))


# --- what is written -----------------------------------------------------------------------------

def test_written_fields_are_the_integer_network(tmp_path):
    graph = _conv_dense_graph()
    net = quantize(graph, 1.0, DT)
    model = export_netx(graph, str(tmp_path / "net.h5"), 1.0, DT)
    by = net.by_name()
    n1, n2 = by["n1"], by["n2"]
    with h5py.File(tmp_path / "net.h5", "r") as f:
        layers = [f[f"layer/{i}"] for i in range(len(f["layer"]))]
        assert [g["type"][()].decode() for g in layers] == ["input", "conv", "flatten", "dense"]
        assert [tuple(g["shape"][()]) for g in layers] == [(2, 6, 6), (3, 6, 6), (27,), (5,)]
        conv, dense = layers[1], layers[3]
        # conv: torch orientation (Cout, Cin, kH, kW), geometry in (H, W): netx flips and reverses them
        assert np.array_equal(conv["weight"][()], by["c1"].weight)
        assert [tuple(conv[k][()]) for k in ("stride", "padding", "dilation")] == [(1, 1), (1, 1), (1, 1)]
        assert conv["groups"][()] == 1
        # dense after the pooling: W·P, the pooling's sum folded into the columns (C-order (C, H, W))
        assert np.array_equal(dense["weight"][()], _fold_pool_into_dense(by["fc2"].weight, by["pool"]))
        for g, neuron in ((conv, n1), (dense, n2)):
            nf = g["neuron"]
            assert nf["type"][()].decode() == "CUBA"
            assert nf["iDecay"][()] == int(np.unique(neuron.du)[0]) + 1  # netx passes du = iDecay - 1
            assert nf["vDecay"][()] == int(np.unique(neuron.dv)[0])
            assert nf["vThMant"][()] == int(np.unique(neuron.threshold)[0])
            assert nf["refDelay"][()] == 1 and not nf["gradedSpike"][()]
        assert np.array_equal(conv["bias"][()], np.zeros(3))  # per channel
        assert np.array_equal(dense["bias"][()] << 6, n2.bias) and dense["bias"][()].any()  # netx's bias_exp = 6
        assert dict(f.attrs) == {"n2c.readout": "spikes", "n2c.readout_weight": model.readout_weight,
                                 "n2c.input_message_bits": 8, "n2c.reset_offset": RESET_OFFSET}
    ident = by["output_from_n2"].weight
    assert model.readout == "spikes" and np.array_equal(ident, model.readout_weight * np.eye(5))


def test_readout_forms():
    assert to_netx(quantize(_dense_graph(last="LI"), 1.0, DT)).readout == "potential-sum"
    model = to_netx(quantize(_conv_conv_graph(), 1.0, DT))
    last = model.layers[-1]
    assert (model.readout, model.readout_weight, last.type, last.name) == ("potential", 1, "dense", "output")
    assert last.neuron == {"type": "CUBA", "iDecay": 4096, "vDecay": 0, "vThMant": 2 ** 17 - 1, "refDelay": 1,
                           "gradedSpike": False}  # v ← v + 64·(a + b): no decay, never spikes
    assert [layer.type for layer in model.layers] == ["input", "conv", "conv", "flatten", "dense"]


def test_dense_weight_model_cases():
    # mixed and non-negative 8-bit weights pass unchanged; netx maps some all-negative ones to -256,
    # which Lava's inhibitory mode clips to -255 and truncates (lava-dl #170: zeros)
    for w in ([-254, 254], [-3, 5], [0, 254], [2, 4, 6], [-6, 0, -2], [-1, 1]):
        w = np.array(w)
        shifted, bits, exp = netx_dense_weights(w)
        assert np.array_equal(lava_effective_weights(shifted, bits), w << -exp), w
    shifted, bits, exp = netx_dense_weights(np.array([-2, -2]))
    assert (shifted.tolist(), bits, exp) == ([-256, -256], 0, -7)
    assert not lava_effective_weights(shifted, bits).any()
    assert netx_dense_weights(np.zeros(3, np.int64)) is None


def test_pool_folds_are_exact():
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, (5, 3, 8, 8))
    pool = IntSynapse("p", "sumpool", "x", (3, 8, 8), (3, 4, 4), kernel=(2, 2), stride=(2, 2), groups=3)
    pooled = _synapse(pool, x, {})
    odd = IntSynapse("p", "sumpool", "x", (3, 8, 8), (3, 4, 4), kernel=(3, 3), stride=(2, 2), padding=(1, 1), groups=3)
    w = rng.integers(-9, 10, (7, 48))
    for p in (pool, odd):  # dense: any pooling, W·P on the input equals W on the pooled map
        assert np.array_equal(x.reshape(5, -1) @ _fold_pool_into_dense(w, p).T, _synapse(p, x, {}).reshape(5, -1) @ w.T)
    for stride, padding, dilation, groups in (((1, 1), (1, 1), (1, 1), 1), ((2, 1), (0, 2), (1, 2), 3)):
        w = rng.integers(-4, 5, (6, 3 // groups, 3, 3))
        conv = IntSynapse("c", "conv", "p", (3, 4, 4), None, weight=w, stride=stride, padding=padding,
                          dilation=dilation, groups=groups)
        want = _synapse(conv, pooled, {})
        folded = _fold_pool_into_conv(pool, conv)
        got = _synapse(IntSynapse("f", "conv", "x", (3, 8, 8), None, weight=folded.pop("weight"), **folded), x, {})
        assert np.array_equal(got, want)


# --- what netx cannot express --------------------------------------------------------------------

def _refusal(graph, match: str, **replace):
    net = quantize(graph, 1.0, DT)
    for name, fields in replace.items():
        i = next(k for k, layer in enumerate(net.layers) if layer.name == name)
        net.layers[i] = dataclasses.replace(net.layers[i], **fields)
    with pytest.raises(N2CError, match=match) as e:
        to_netx(net)
    assert "\n" not in str(e.value)


def test_each_refusal_names_the_layer_and_what_netx_lacks():
    g = _dense_graph()
    _refusal(g, "neuron 'n1' is a multi-threshold neuron .* sigma-delta .* floor", n1={"kind": "mtn", "max_spikes": 3})
    _refusal(g, "neuron 'n1' is a multi-threshold .* and 2 negative", n1={"kind": "mtn", "min_spikes": 2})
    _refusal(g, "neuron 'n2' is a parallel neuron", n2={"kind": "parallel"})
    _refusal(g, "neuron 'n2' is a scale-and-fire neuron", n2={"kind": "sfn"})
    _refusal(g, "neuron 'n1' is a CUBA neuron with snnTorch's reset .* reset to 0", n1={"kind": "lif_subtract"})
    _refusal(g, "neuron 'n1' is a CUBA neuron with snnTorch's reset without delay", n1={"kind": "lif_subtract_now"})
    _refusal(g, "neuron 'n1': netx takes one threshold", n1={"threshold": np.arange(12)})
    _refusal(g, "neuron 'n1': netx takes one voltage decay", n1={"dv": np.arange(12)})
    _refusal(g, "neuron 'n2': bias 5 .*not a multiple of 64.*bias_exp = 6", n2={"bias": np.full(5, 5)})
    _refusal(g, "synapse 'fc2' has synaptic delays", fc2={"delay": np.ones((5, 12), np.int64)})
    negative = np.full((5, 12), -2)
    negative[0, 0] = -4  # netx scales the -4 to -256, which Lava's inhibitory mode cannot hold
    _refusal(g, "synapse 'fc2': weights -4..-2: .*lava-dl #170", fc2={"weight": negative})
    _refusal(_dense_graph(last="LI"), "neuron 'n2' \\(LI\\) sends its membrane potential",
             output_from_n2={"weight": 2 * np.ones((5, 5), np.int64)})
    # structure: pooling that does not tile, a residual sum, a branch, recurrence
    _refusal(_conv_conv_graph(pool=_pool(3, 2, 1)), "pooling 'pool' .* netx has no pool layer")
    rng = np.random.default_rng(0)
    nodes = {"input": nir.Input(input_type={"input": np.array([4])}), "fc1": nir.Linear(weight=rng.normal(0, 2, (4, 4))),
             "n1": _neuron("IF"), "fc2": nir.Linear(weight=rng.normal(0, 2, (4, 4))), "n2": _neuron("IF"),
             "output": nir.Output(output_type={"output": np.array([4])})}
    edges = [("input", "fc1"), ("fc1", "n1"), ("n1", "fc2"), ("fc2", "n2"), ("n2", "output")]
    residual = import_nir(nir.NIRGraph(nodes=nodes, edges=edges + [("n1", "n2")], type_check=False))
    with pytest.raises(N2CError, match="layer 'n1' feeds 2 layers; netx layers form a single chain"):
        to_netx(quantize(residual, 1.0, DT))
    recurrent = import_nir(nir.NIRGraph(nodes=nodes, edges=edges + [("n2", "fc1")], type_check=False))
    with pytest.raises(N2CError, match="recurrent edge n2 -> fc1: .* only NIR's spiking neurons"):
        export_netx(recurrent, "unused.h5", 1.0, DT)
    biased = _recurrent_graph()  # an Affine bias into the CubaLIF: n2c feeds it from an always-on neuron
    biased.layers[1].bias = np.full(12, 0.5)
    with pytest.raises(N2CError, match="'always_on' feeds a bias into a CUBA neuron's synaptic current; netx has no"):
        export_netx(biased, "unused.h5", 1.0, DT)


# --- the CLI -------------------------------------------------------------------------------------

def test_cli_writes_netx_and_refuses_with_one_line(tmp_path, capsys):
    graph_file = tmp_path / "g.nir"
    rng = np.random.default_rng(3)
    nodes = {"input": nir.Input(input_type={"input": np.array([6])}),
             "fc1": nir.Linear(weight=rng.normal(0, 3.0, (12, 6)).astype(np.float32)),
             "n1": _neuron("LIF", n=12), "output": nir.Output(output_type={"output": np.array([12])})}
    nir.write(graph_file, nir.NIRGraph(nodes=nodes, edges=list(zip(nodes, list(nodes)[1:]))))
    out = tmp_path / "net.h5"
    assert main(["export", str(graph_file), "--to", "netx", "-o", str(out), "--input-scale", "1"]) == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "reset_offset=1" in printed and "input_message_bits=8" in printed
    with h5py.File(out, "r") as f:
        assert f["layer/1/type"][()] == b"dense"

    def refused(args, match):
        target = tmp_path / "refused.h5"
        assert main(["export", *map(str, args), "--to", "netx", "-o", str(target)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("n2c: error: ") and err.count("\n") == 1 and match in err, err
        assert not target.exists() and not list(tmp_path.glob(".refused.h5.*"))

    refused([graph_file], "input scale")  # another tool's graph: the integer input step is needed
    refused([graph_file, "--input-scale", "1", "--portable"], "--portable does not apply to --to netx")
    torch_file = tmp_path / "model.pt"
    torch_file.write_bytes(b"not hdf5")
    refused([torch_file], "is not a NIR file; --to netx reads a NIR graph")
    refused([tmp_path / "missing.nir"], "does not exist")
    nodes["n1"] = nir.LIF(tau=np.linspace(2e-3, 8e-3, 12), r=np.ones(12), v_leak=np.zeros(12),
                          v_threshold=np.ones(12), v_reset=np.zeros(12))
    nir.write(graph_file, nir.NIRGraph(nodes=nodes, edges=list(zip(nodes, list(nodes)[1:]))))
    refused([graph_file, "--input-scale", "1"], "neuron 'n1': netx takes one voltage decay (vDecay) per layer")


def test_cli_refuses_an_n2c_multi_threshold_graph_in_a_subprocess(tmp_path):
    from n2c.models import DigitsCNN
    from n2c.cli.pipeline import export_model

    graph_file = tmp_path / "n2c.nir"
    export_model(DigitsCNN(levels=4).eval(), str(graph_file), (1, 8, 8), 1 / 16)
    out = tmp_path / "net.h5"
    done = subprocess.run([sys.executable, "-m", "n2c", "export", str(graph_file), "--to", "netx", "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "is a multi-threshold neuron" in done.stderr, done.stderr
    assert not out.exists()


# --- in Lava -------------------------------------------------------------------------------------

def _run_netx(path, model, s_in: np.ndarray, period: int):
    """Run the netx file on integer inputs (T, B, *input_shape) in Lava's fixed-point simulation.
    Returns every block's output and the last block's v, aligned to the reference: (T, B, *shape)."""
    import backends.lava.runtime  # noqa: F401  (first: Lava fixes the multiprocessing start method)
    from lava.lib.dl.netx import hdf5
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.monitor.process import Monitor

    net = hdf5.Network(net_config=str(path), reset_interval=period, reset_offset=RESET_OFFSET,
                       input_message_bits=model.input_message_bits)
    t, b = s_in.shape[:2]
    frames = np.swapaxes(s_in, 0, 1).reshape(b * t, *s_in.shape[2:])  # sample after sample
    frames = to_lava(frames, lead=1) if model.blocks[0].type == "conv" else frames.reshape(b * t, -1)
    total = b * t + len(net.layers)  # then zeros that flush the pipeline
    frames = np.concatenate([frames, np.zeros((len(net.layers), *frames.shape[1:]), frames.dtype)])
    source = Source(data=np.moveaxis(frames, 0, -1).astype(np.int32))
    source.s_out.connect(net.inp)
    sinks = []
    for block in net.layers:
        sinks.append(Sink(shape=block.out.shape, buffer=total))
        block.out.connect(sinks[-1].a_in)
    monitor = Monitor()
    monitor.probe(net.layers[-1].neuron.v, total)
    try:
        net.run(condition=RunSteps(num_steps=total), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        spikes = [sink.data.get() for sink in sinks]  # (*lava shape, total)
        (recorded,) = [v for by_var in monitor.get_data().values() for v in by_var.values()]  # (total, *lava shape)
    finally:
        net.stop()

    def aligned(values, k, shape):  # block k (1-based): (i, j) at index i·T + j + k
        steps = np.arange(b)[None, :] * t + np.arange(t)[:, None] + k
        return from_lava(np.moveaxis(values[..., steps], [-2, -1], [0, 1]), lead=2).reshape(t, b, *shape)

    last = model.blocks[-1]
    return ({block.name: aligned(s, k, block.shape) for k, (block, s) in enumerate(zip(model.blocks, spikes), 1)},
            aligned(np.moveaxis(recorded, 0, -1), len(model.blocks), last.shape))


@pytest.mark.slow
@pytest.mark.parametrize("build,shape", [(_dense_graph, (6,)), (_conv_dense_graph, (2, 6, 6)),
                                         (_conv_conv_graph, (2, 8, 8)), (lambda: _dense_graph(last="LI"), (6,)),
                                         (_leaky_graph, (6,)), (_recurrent_graph, (6,))],
                         ids=["dense", "conv-pool-dense", "conv-pool-conv-readout", "li-readout", "leak-bias",
                              "dense-rec"])
def test_netx_file_in_lava_equals_the_reference(build, shape, tmp_path):
    graph = build()
    path = tmp_path / "net.h5"
    model = export_netx(graph, str(path), 1.0, DT)
    period, samples = 10, 3
    net = quantize(graph, 1.0, DT, timesteps=period, fmt=NETX_FORMAT)  # the export's integer network
    s_in = np.random.default_rng(7).integers(-1, 4, (period, samples, *shape))  # graded, signed 8-bit input
    ref = run_encoded(net, s_in)
    if graph.recurrent:  # a loop's buffer would carry one sample into the next: a run per sample, as n2c's Lava
        assert any(block.type == "dense_rec" for block in model.blocks)
        runs = [_run_netx(path, model, s_in[:, i:i + 1], period) for i in range(samples)]
        spikes = {name: np.concatenate([r[0][name] for r in runs], axis=1) for name in runs[0][0]}
        v = np.concatenate([r[1] for r in runs], axis=1)
    else:
        spikes, v = _run_netx(path, model, s_in, period)
    for block in model.blocks:
        if block.name in ref.messages and net.by_name()[block.name].kind == "lif":
            assert np.array_equal(spikes[block.name], ref.messages[block.name]), block.name
            assert 0.02 < ref.messages[block.name].mean() < 0.7  # not a comparison of silent layers
    last = model.blocks[-1].name
    if model.readout == "spikes":
        assert np.array_equal(model.readout_weight * spikes[last].sum(axis=0), ref.output)
    elif model.readout == "potential-sum":
        assert np.array_equal(v, ref.messages[last])  # the LI's v, step by step
        readout = np.zeros_like(ref.output)
        for step in v:  # n2c's readout: c·v summed over the sample (saturating at 24 bits, as it does here)
            readout = clamp24(readout + model.readout_weight * step.astype(np.int64))
        assert np.array_equal(readout, ref.output)
    else:
        assert np.array_equal(v[-1], 64 * ref.output)  # v = 64·readout at the last step
        assert not spikes[last].any()


@pytest.mark.slow
def test_netx_weight_model_matches_netx_and_lava():
    """The export's statement of netx's optimize_weight_bits and Lava's Dense clipping and truncation
    agrees with the installed code on random 8-bit matrices of every sign pattern."""
    from lava.lib.dl.netx.utils import optimize_weight_bits
    from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights

    rng = np.random.default_rng(0)
    cases = [np.array(c) for c in ([-1, 1], [-4, 0], [-2, -2], [-6, 0, -2], [2, 4, 254], [-256, 254], [1, 3])]
    for _ in range(1500):
        lo, hi = sorted(rng.integers(-256, 255, 2))
        cases.append(np.clip(rng.integers(lo, hi + 1, rng.integers(1, 6)) << rng.integers(0, 4), -256, 254))
    with np.errstate(divide="ignore"):
        for w in cases:
            if not w.any():
                continue
            mine = netx_dense_weights(w)
            theirs = optimize_weight_bits(w.copy())
            assert np.array_equal(mine[0], theirs[0]) and mine[1:] == tuple(theirs[1:3]), w
            mode = determine_sign_mode(theirs[0])
            lava = truncate_weights(clip_weights(theirs[0], mode, 8), mode, theirs[1])
            assert np.array_equal(lava_effective_weights(theirs[0], theirs[1]), lava), w


@pytest.mark.slow
def test_cli_file_loads_in_netx(tmp_path):
    import backends.lava.runtime  # noqa: F401  (first: Lava fixes the multiprocessing start method)
    from lava.lib.dl.netx import hdf5

    path = tmp_path / "g.nir"
    out = tmp_path / "net.h5"
    graph = _conv_conv_graph()
    write_netx(to_netx(quantize(graph, 1.0, DT)), str(tmp_path / "direct.h5"))
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}),
             "fc": nir.Linear(weight=np.array([[1.0, -2, 3], [0.5, 1, -1]], np.float32)),
             "lif": nir.LIF(tau=np.full(2, 4e-3), r=np.ones(2), v_leak=np.zeros(2), v_threshold=np.ones(2),
                            v_reset=np.zeros(2)), "output": nir.Output(output_type={"output": np.array([2])})}
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=list(zip(nodes, list(nodes)[1:]))))
    assert main(["export", str(path), "--to", "netx", "-o", str(out), "--input-scale", "0.5", "--dt", "1e-3"]) == 0
    for file, blocks in ((out, 1), (tmp_path / "direct.h5", 3)):
        net = hdf5.Network(net_config=str(file), reset_interval=4, reset_offset=RESET_OFFSET, input_message_bits=8)
        assert len(net.layers) == blocks


@pytest.mark.slow
def test_netx_reads_the_fields_as_written(tmp_path):
    """netx turns the file into the Lava parameters the mapping states: per-neuron, per-channel and
    dense biases, decays (du = iDecay - 1), thresholds, conv kernels and dense weights."""
    import backends.lava.runtime  # noqa: F401  (first: Lava fixes the multiprocessing start method)
    from lava.lib.dl.netx import hdf5

    net = quantize(_conv_conv_graph(), 1.0, DT)
    model = to_netx(net)
    per_neuron = np.arange(4 * 8 * 8).reshape(4, 8, 8) % 7 - 3
    model.blocks[0].bias = to_lava(per_neuron)  # (W, H, C): one bias per neuron
    model.blocks[1].bias = np.array([1, -2, 3])  # per channel
    write_netx(model, str(tmp_path / "net.h5"))
    lava = hdf5.Network(net_config=str(tmp_path / "net.h5"), reset_interval=4, reset_offset=RESET_OFFSET,
                        input_message_bits=8)
    conv1, conv2, readout = lava.layers
    assert np.array_equal(conv1.neuron.bias_mant.init, to_lava(per_neuron))
    assert np.array_equal(conv2.neuron.bias_mant.init, np.broadcast_to([1, -2, 3], (4, 4, 3)))
    assert np.array_equal(readout.neuron.bias_mant.init, net.by_name()["output"].bias)
    for block, name in ((conv1, "n1"), (conv2, "n2")):
        neuron = net.by_name()[name]
        assert (block.neuron.du.init, block.neuron.dv.init, block.neuron.vth.init) == \
            (np.unique(neuron.du)[0], np.unique(neuron.dv)[0], np.unique(neuron.threshold)[0])
        assert np.all(block.neuron.bias_exp.init == 6)
    assert np.array_equal(conv1.synapse.weight.init, conv_weight_for_lava(net.by_name()["c1"].weight))
    fc = net.by_name()["fc"]
    exp = readout.synapse.proc_params["weight_exp"]
    assert np.array_equal(readout.synapse.weights.init, fc.weight << -exp)


def test_a_layers_loop_is_written_as_dense_rec(tmp_path, capsys):
    graph = _recurrent_graph()
    net = quantize(graph, 1.0, DT, fmt=NETX_FORMAT)
    model = export_netx(graph, str(tmp_path / "rec.h5"), 1.0, DT)
    assert [block.type for block in model.blocks] == ["dense_rec", "dense"]
    loop = net.by_name()["loop"]
    with h5py.File(tmp_path / "rec.h5", "r") as f:
        assert f["layer/1/type"][()] == b"dense_rec"
        assert np.array_equal(f["layer/1/weight_rec"][()], lava_effective_weights(loop.weight))
    rng = np.random.default_rng(0)  # the CLI says how to run it
    lif = nir.LIF(tau=np.full(4, 4e-3), r=np.ones(4), v_leak=np.zeros(4), v_threshold=np.ones(4), v_reset=np.zeros(4))
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}), "fc": nir.Linear(weight=rng.normal(0, 3, (4, 3))),
             "lif": lif, "loop": nir.Linear(weight=rng.normal(0, 1, (4, 4))),
             "output": nir.Output(output_type={"output": np.array([4])})}
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "loop"), ("loop", "lif"), ("lif", "output")]
    nir.write(str(tmp_path / "g.nir"), nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    assert main(["export", str(tmp_path / "g.nir"), "--to", "netx", "-o", str(tmp_path / "g.h5"),
                 "--input-scale", "1"]) == 0
    assert "dense_rec: netx does not reset a loop's buffer" in capsys.readouterr().out
