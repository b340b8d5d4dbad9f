"""Lower an integer network (``n2c.backends.quantize.IntNetwork``) to Lava and run it.

``run_lava`` builds one Lava Process per IR layer, streams all samples through
one compiled network on ``Loihi2SimCfg(select_tag="fixed_pt")`` and returns the
readout potentials, equal bit for bit to ``n2c.backends.reference.simulate``.

Layout. The IR is torch-ordered, (C, H, W); Lava's Conv works on (X, Y, C) =
(W, H, C). Inputs, per-neuron parameters and conv weights are transposed on the
way in and the readout on the way out. Lava's Conv computes a true convolution
(scipy ``convolve2d``; checked with a delta input: the output reproduces the
kernel unflipped), torch a correlation, so conv kernels are flipped spatially.
Dense weights index the C-order (C, H, W) flattening; when a Dense reads a
conv-shaped port, the port is flattened in Lava's (W, H, C) order and the weight
columns are permuted to match.

Timing (measured). Lava's RingBuffer source sends ``data[..., t-1]`` at
``time_step`` t (counted from 1); every Dense/Conv Process sends at step t what
it computed from its input at step t-1 (one step of delay); neurons and the
sink act within the step. A layer that is ``d`` synapse Processes downstream of
the source therefore sees sample ``i``, step ``j`` at ``time_step =
i·T + j + 1 + d``: its ``phase`` is ``d``, it resets when ``(time_step - 1 - d)
% T == 0``, and the sink (which stores step t at index t-1) holds sample ``i``'s
final readout at index ``i·T + T - 1 + d``. The run lasts ``B·T + d`` steps;
the last ``d`` source steps are zeros that flush the pipeline. Inputs of one
neuron arriving at different depths are aligned with identity synapses.

Lava limits. Conv keeps kernel size, stride, padding, dilation and groups in
int8 Vars: groups ≥ 128 silently yields zeros (measured), so larger groups are
re-expressed as fewer groups with block-diagonal kernels. Conv ignores
``weight_exp`` (rejected here) and wraps its output to 24 bits; Dense
accumulates in int32. Where a worst-case bound on a current reaches either
limit the lowering warns, because the reference simulator does not wrap.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np

from n2c.backends.quantize import STATE_BITS, IntNetwork, IntNeuron, IntSynapse
from n2c.errors import QuantizationError

LAVA_INT8_MAX = 127  # Lava's Conv stores kernel size, stride, padding, dilation and groups as int8
CONV_WRAP = 2 ** 23  # Lava's Conv wraps its output to signed 24 bits; the reference saturates
DENSE_WRAP = 2 ** 31  # Lava's Dense accumulates in int32; the reference in int64


@dataclass
class _Stream:
    """An IR value as a Lava OutPort: its IR shape, pipeline depth, message width and a bound on |value|."""
    port: object
    shape: tuple[int, ...]
    depth: int
    bits: int
    max_abs: int


# --- layout -------------------------------------------------------------------------------------

def lava_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """IR (C, H, W) → Lava (W, H, C); flat shapes are unchanged."""
    return tuple(shape[::-1]) if len(shape) == 3 else tuple(shape)


def to_lava(a: np.ndarray, lead: int = 0) -> np.ndarray:
    """Reorder the trailing (C, H, W) axes of ``a`` (after ``lead`` leading axes) to (W, H, C)."""
    if a.ndim - lead != 3:
        return a
    return np.moveaxis(a, [lead, lead + 1, lead + 2], [lead + 2, lead + 1, lead])


def from_lava(a: np.ndarray, lead: int = 0) -> np.ndarray:
    """Inverse of :func:`to_lava` (the permutation is its own inverse)."""
    return to_lava(a, lead)


def dense_columns_for_lava(weight: np.ndarray, in_shape: tuple[int, ...]) -> np.ndarray:
    """Permute the columns of an IR dense weight so they index Lava's flattened (W, H, C) input."""
    if len(in_shape) != 3:
        return weight
    ir_index = np.arange(int(np.prod(in_shape))).reshape(in_shape)
    return weight[:, to_lava(ir_index).ravel()]


def conv_weight_for_lava(weight: np.ndarray) -> np.ndarray:
    """torch correlation kernel (Cout, Cin/g, kH, kW) → Lava convolution kernel (Cout, kW, kH, Cin/g)."""
    return np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(0, 3, 2, 1))


def regroup_conv_weight(weight: np.ndarray, groups: int, new_groups: int) -> np.ndarray:
    """Re-express a grouped conv kernel with ``new_groups`` (a divisor of ``groups``) coarser
    groups: each coarse group holds a block-diagonal kernel with zeros across fine groups."""
    cout, cin_g = weight.shape[:2]
    cin = cin_g * groups
    full = np.zeros((cout, cin, *weight.shape[2:]), dtype=weight.dtype)
    rows = np.arange(cout) // (cout // groups)
    for g in range(groups):
        full[rows == g, g * cin_g:(g + 1) * cin_g] = weight[rows == g]
    coarse = np.arange(cout) // (cout // new_groups)
    cin_new = cin // new_groups
    return np.stack([full[o, c * cin_new:(c + 1) * cin_new] for o, c in enumerate(coarse)])


def _lava_groups(groups: int) -> int:
    """Largest divisor of ``groups`` that Lava's int8 ``groups`` Var holds."""
    return max(d for d in range(1, min(groups, LAVA_INT8_MAX) + 1) if groups % d == 0)


# --- synapses -----------------------------------------------------------------------------------

def _current_bound(syn: IntSynapse, weight: np.ndarray, src: _Stream) -> int:
    """A bound on |output| of a synapse: max row Σ|W| · max|input| (· 2^weight_exp)."""
    fan_in = int(np.abs(weight).reshape(weight.shape[0], -1).sum(axis=1).max())
    return fan_in * src.max_abs * 2 ** max(syn.weight_exp, 0)


def _warn_if_may_wrap(syn: IntSynapse, bound: int, limit: int, what: str) -> None:
    """Warn when a current may reach ``limit``, where Lava wraps and the reference does not."""
    if bound >= limit:
        warnings.warn(f"synapse '{syn.name}': currents may reach {bound} ≥ {limit}; {what}, so Lava and the "
                      "reference simulator may disagree on such inputs")


def _check_conv_params(syn: IntSynapse, kernel: tuple[int, int]) -> None:
    values = (*kernel, *syn.stride, *syn.padding, *syn.dilation)
    if max(values) > LAVA_INT8_MAX or min(values) < 0:
        raise QuantizationError(f"synapse '{syn.name}': kernel {kernel}, stride {syn.stride}, padding "
                                f"{syn.padding} or dilation {syn.dilation} exceeds Lava Conv's int8 range 0..127")
    if syn.weight_exp != 0:
        raise QuantizationError(f"synapse '{syn.name}': Lava's Conv ignores weight_exp (lava #803); "
                                f"fold 2^{syn.weight_exp} into the weights")


def _conv_process(syn: IntSynapse, src: _Stream, weight: np.ndarray, groups: int):
    """A Lava Conv for an IR kernel (Cout, Cin/g, kH, kW) in torch orientation."""
    from lava.proc.conv.process import Conv

    _check_conv_params(syn, weight.shape[2:])
    if len(syn.in_shape) != 3 or tuple(src.shape) != tuple(syn.in_shape):
        raise QuantizationError(f"synapse '{syn.name}' ({syn.kind}) expects a (C, H, W) input of shape "
                                f"{syn.in_shape}, but its input has shape {src.shape}")
    _warn_if_may_wrap(syn, _current_bound(syn, weight, src), CONV_WRAP,
                      "Lava's Conv wraps at 24 bits where the reference saturates")
    lava_groups = _lava_groups(groups)
    if lava_groups != groups:
        weight = regroup_conv_weight(weight, groups, lava_groups)
    try:
        proc = Conv(weight=conv_weight_for_lava(weight), input_shape=lava_shape(syn.in_shape),
                    padding=syn.padding[::-1], stride=syn.stride[::-1], dilation=syn.dilation[::-1],
                    groups=lava_groups, num_message_bits=src.bits, name=syn.name)
    except Exception as e:  # Lava validates shapes and channel counts with ValueError / Exception
        raise QuantizationError(f"synapse '{syn.name}': Lava's Conv rejects it: {e}") from e
    if tuple(proc.a_out.shape) != lava_shape(syn.out_shape):
        raise QuantizationError(f"synapse '{syn.name}': Lava's Conv gives shape {proc.a_out.shape}, the IR "
                                f"expects {syn.out_shape} (as (W, H, C): {lava_shape(syn.out_shape)})")
    src.port.connect(proc.s_in)
    return proc


def _dense_process(syn: IntSynapse, src: _Stream):
    from lava.proc.dense.process import Dense

    n_in = int(np.prod(syn.in_shape))
    if syn.weight.shape != (int(np.prod(syn.out_shape)), n_in) or int(np.prod(src.shape)) != n_in:
        raise QuantizationError(f"synapse '{syn.name}': dense weight {syn.weight.shape} does not map input "
                                f"{src.shape} to output {syn.out_shape}")
    if len(syn.out_shape) != 1:
        raise QuantizationError(f"synapse '{syn.name}': a dense output must be flat, got {syn.out_shape}")
    _warn_if_may_wrap(syn, _current_bound(syn, syn.weight, src), DENSE_WRAP, "Lava's Dense accumulates in int32")
    weights = dense_columns_for_lava(syn.weight, tuple(src.shape))
    proc = Dense(weights=weights, weight_exp=int(syn.weight_exp), num_message_bits=src.bits, name=syn.name)
    port = src.port.flatten() if len(src.shape) > 1 else src.port
    port.connect(proc.s_in)
    return proc


def _synapse(syn: IntSynapse, src: _Stream) -> _Stream:
    """Build the Process of one IR synapse; its output lags its input by one step."""
    if syn.kind == "dense":
        proc = _dense_process(syn, src)
        bound = _current_bound(syn, syn.weight, src)
    elif syn.kind in ("conv", "sumpool"):
        weight = np.asarray(syn.weight, dtype=np.int64) if syn.kind == "conv" else \
            np.ones((syn.in_shape[0], 1, *syn.kernel), dtype=np.int64)
        groups = syn.groups if syn.kind == "conv" else syn.in_shape[0]
        proc = _conv_process(syn, src, weight, groups)
        bound = min(_current_bound(syn, weight, src), CONV_WRAP)
    else:
        raise QuantizationError(f"synapse '{syn.name}': kind {syn.kind!r} has no Lava lowering")
    return _Stream(proc.a_out, tuple(syn.out_shape), src.depth + 1, syn.message_bits, bound)


def _delay(stream: _Stream, steps: int) -> _Stream:
    """Delay a current by ``steps`` steps with identity synapses on the flattened value: a 1x1
    Conv on an (N, 1, 1) view (one scipy call per step; exact below Conv's 24-bit wrap) or, for
    currents that may exceed 24 bits, an N x N identity Dense (exact in int32)."""
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense

    n = int(np.prod(stream.shape))
    for _ in range(steps):
        if stream.max_abs < CONV_WRAP:
            proc = Conv(weight=np.ones((1, 1, 1, 1), dtype=np.int64), input_shape=(n, 1, 1),
                        num_message_bits=stream.bits)
            stream.port.reshape((n, 1, 1)).connect(proc.s_in)
        else:
            proc = Dense(weights=np.eye(n, dtype=np.int64), num_message_bits=stream.bits)
            stream.port.flatten().connect(proc.s_in)
        port = proc.a_out.reshape(lava_shape(stream.shape))
        stream = _Stream(port, stream.shape, stream.depth + 1, stream.bits, stream.max_abs)
    return stream


# --- neurons ------------------------------------------------------------------------------------

def _neuron(neuron: IntNeuron, inputs: list[_Stream], period: int) -> _Stream:
    """Build a neuron Process summing ``inputs`` (aligned to the deepest one); phase = its depth."""
    from n2c.backends.lava.processes.neurons import MultiThresholdNeuron, ReadoutNeuron

    shape = lava_shape(tuple(neuron.shape))
    for s, name in zip(inputs, neuron.inputs):
        if tuple(s.shape) != tuple(neuron.shape):
            raise QuantizationError(f"neuron '{neuron.name}' of shape {neuron.shape} receives '{name}' of "
                                    f"shape {s.shape}")
    depth = max(s.depth for s in inputs)
    inputs = [_delay(s, depth - s.depth) for s in inputs]
    bias = to_lava(np.broadcast_to(neuron.bias, neuron.shape))
    if neuron.kind == "mtn":
        proc = MultiThresholdNeuron(shape, threshold=to_lava(np.broadcast_to(neuron.threshold, neuron.shape)),
                                    max_spikes=neuron.max_spikes, bias=bias,
                                    v_init=to_lava(np.broadcast_to(neuron.v_init, neuron.shape)),
                                    period=period, phase=depth, name=neuron.name)
    elif neuron.kind == "readout":
        proc = ReadoutNeuron(shape, bias=bias, period=period, phase=depth, name=neuron.name)
    elif neuron.kind == "lif":
        proc = _stock_lif(neuron, shape, period, depth)
    else:
        raise QuantizationError(f"neuron '{neuron.name}': kind {neuron.kind!r} has no Lava lowering")
    for s in inputs:
        s.port.connect(proc.a_in)
    return _Stream(proc.s_out, tuple(neuron.shape), depth, neuron.message_bits, neuron.max_spikes)


def _uniform(values, what: str, name: str) -> int:
    a = np.unique(np.asarray(values))
    if a.size != 1:
        raise QuantizationError(f"neuron '{name}': Lava's LIF takes one {what} per layer, this layer has "
                                f"{a.size} different values; run it with --backend reference")
    return int(a[0])


def bias_mantissa_exponent(bias: np.ndarray, name: str) -> tuple[np.ndarray, int]:
    """Loihi's bias = mantissa (13-bit signed) << exponent (0..7), exactly, with one exponent per layer."""
    bias = np.asarray(bias, dtype=np.int64)
    for exp in range(8):
        mant = bias >> exp
        if (mant << exp == bias).all() and (np.abs(mant) < 2 ** 12).all():
            return mant, exp
    raise QuantizationError(f"neuron '{name}': bias up to {int(np.abs(bias).max())} has no exact 13-bit mantissa "
                            "with a shared exponent 0..7; run it with --backend reference")


def _stock_lif(neuron: IntNeuron, shape: tuple[int, ...], period: int, depth: int):
    """Lava's own LIF (``LIFReset``: u and v cleared at each sample window), for NIR's neurons."""
    from lava.proc.lif.process import LIFReset

    mant, exp = bias_mantissa_exponent(np.broadcast_to(neuron.bias, neuron.shape), neuron.name)
    return LIFReset(shape=shape, du=_uniform(neuron.du, "du", neuron.name), dv=_uniform(neuron.dv, "dv", neuron.name),
                    vth=_uniform(neuron.threshold, "threshold", neuron.name), bias_mant=to_lava(mant),
                    bias_exp=exp, reset_interval=period, reset_offset=(1 + depth) % period, name=neuron.name)


# --- network ------------------------------------------------------------------------------------

def check_network(net: IntNetwork) -> None:
    """Reject what the lowering cannot express before building anything."""
    output = net.by_name().get(net.output)
    if not isinstance(output, IntNeuron) or output.kind != "readout":
        raise QuantizationError(f"the network output '{net.output}' is not a readout neuron")
    for layer in net.layers:
        if isinstance(layer, IntNeuron) and layer.kind == "lif":
            _uniform(layer.du, "du", layer.name), _uniform(layer.dv, "dv", layer.name)
            _uniform(layer.threshold, "threshold", layer.name)
            bias_mantissa_exponent(layer.bias, layer.name)
            continue
        if isinstance(layer, IntNeuron) and (layer.kind not in ("mtn", "readout") or layer.min_spikes):
            form = "polarity (negative) spikes" if layer.kind == "mtn" else f"the {layer.kind} neuron"
            raise QuantizationError(f"neuron '{layer.name}': {form} has no Lava lowering yet; "
                                    "run it with --backend reference")
        if isinstance(layer, IntNeuron):
            for what in ("bias", "threshold", "v_init"):
                values = getattr(layer, what)
                if values is not None and np.abs(np.asarray(values)).max(initial=0) >= 2 ** (STATE_BITS - 1):
                    raise QuantizationError(f"neuron '{layer.name}': {what} exceeds Loihi's 24-bit state")


def _source_data(s_in: np.ndarray, flush: int) -> np.ndarray:
    """Encoded steps (T, B, ...) in Lava layout, sample after sample (B·T steps), then ``flush``
    zero steps; time last."""
    t, b = s_in.shape[:2]
    steps = to_lava(np.swapaxes(s_in, 0, 1).reshape(b * t, *s_in.shape[2:]), lead=1)
    steps = np.concatenate([steps, np.zeros((flush, *steps.shape[1:]), dtype=steps.dtype)])
    return np.moveaxis(steps, 0, -1).astype(np.int32)


def _network_depth(net: IntNetwork) -> int:
    """Depth (number of synapse Processes, including alignment delays) of the readout."""
    depth = {net.source.name: 0}
    for layer in net.layers:
        if isinstance(layer, IntSynapse):
            depth[layer.name] = depth[layer.input] + 1
        else:
            depth[layer.name] = max(depth[name] for name in layer.inputs)
    return depth[net.output]


def _lower(net: IntNetwork, s_in: np.ndarray, record: bool = False):
    """Build source, layers and sinks; returns (any process, readout sink, readout depth, total
    steps, {neuron name: (sink, depth)} for the spike counts of every multi-threshold layer if
    ``record``)."""
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    check_network(net)
    if tuple(net.source.shape) != tuple(s_in.shape[2:]):
        raise QuantizationError(f"inputs of shape {tuple(s_in.shape[2:])} do not match the network input "
                                f"{net.source.shape}")
    flush = _network_depth(net)
    source = Source(data=_source_data(s_in, flush))
    src = net.source
    src_max = 2 ** (src.bits - 1) if src.signed else 2 ** src.bits - 1
    streams = {src.name: _Stream(source.s_out, tuple(src.shape), 0, src.message_bits, src_max)}
    for layer in net.layers:
        if isinstance(layer, IntSynapse):
            streams[layer.name] = _synapse(layer, streams[layer.input])
        else:
            streams[layer.name] = _neuron(layer, [streams[name] for name in layer.inputs], net.timesteps)
    readout = streams[net.output]
    total = s_in.shape[0] * s_in.shape[1] + readout.depth
    sink = Sink(shape=lava_shape(readout.shape), buffer=total)
    readout.port.connect(sink.a_in)
    recorders = {}
    if record:
        for layer in net.layers:
            if isinstance(layer, IntNeuron) and layer.spiking:
                stream = streams[layer.name]
                recorders[layer.name] = (Sink(shape=lava_shape(stream.shape), buffer=total), stream.depth)
                stream.port.connect(recorders[layer.name][0].a_in)
    return source, sink, readout.depth, total, recorders


def _run(proc, total: int, progress: bool) -> None:
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from tqdm import tqdm

    cfg = Loihi2SimCfg(select_tag="fixed_pt")
    chunk = min(total, max(64, total // 100))
    with tqdm(total=total, desc="lava", unit="step", disable=not progress) as bar:
        done = 0
        while done < total:
            n = min(chunk, total - done)
            proc.run(condition=RunSteps(num_steps=n), run_cfg=cfg)
            done += n
            bar.update(n)


def _abort(proc) -> None:
    """Tear the runtime down after a failed run. Lava's ``stop()`` sends STOP and waits for every
    Process to answer, which hangs once one of them has died, so end them directly (this uses the
    runtime's private message infrastructure: lava-nc 0.10 has no public abort)."""
    runtime = proc.runtime
    if runtime is None:  # failed before or during compilation
        return
    infrastructure = getattr(runtime, "_messaging_infrastructure", None)
    if infrastructure is None:
        return
    try:
        for actor in infrastructure.actors:
            try:
                alive = actor.is_alive()
            except ValueError:  # already joined and closed by Lava when it collected the error
                continue
            if alive:
                actor.terminate()
        infrastructure.stop()  # joins the ended processes and frees the shared memory
    except Exception as e:  # never hide the error that made the run fail
        warnings.warn(f"could not shut the Lava runtime down cleanly: {type(e).__name__}: {e}")


def run_lava(net: IntNetwork, x: np.ndarray, progress: bool = True) -> np.ndarray:
    """Run float inputs ``x`` (B, *input_shape) through ``net`` on Lava's fixed-point CPU simulation.

    Returns the readout potentials after each sample's last step, (B, *out_shape) int64, equal
    to ``n2c.backends.reference.simulate(net, x).output``.
    """
    return _execute(net, _direct(net, x), progress, record=False)[0][-1]


def run_lava_with_spikes(net: IntNetwork, x: np.ndarray, progress: bool = True
                         ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Like :func:`run_lava`, and also records every spiking layer's output as (T, B, *shape)
    int64 in IR layout (one extra sink Process per layer, so slower)."""
    potentials, counts = _execute(net, _direct(net, x), progress, record=True)
    return potentials[-1], counts


def run_lava_steps(net: IntNetwork, s_in: np.ndarray, progress: bool = True, record: bool = False
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run encoded integer inputs ``s_in`` (T, B, *input_shape), a frame per step, through ``net``.

    Returns the readout's input (current plus bias) at every step, (T, B, *out_shape) int64 (as
    ``n2c.backends.reference.run_encoded(...).readout_current``), and, with ``record``, every
    spiking layer's output (T, B, *shape)."""
    if s_in.shape[0] != net.timesteps:
        net = dataclasses.replace(net, timesteps=int(s_in.shape[0]))  # the sample window is the input's T
    potentials, counts = _execute(net, np.asarray(s_in, dtype=np.int64), progress, record)
    return np.diff(potentials, axis=0, prepend=0), counts


def _direct(net: IntNetwork, x: np.ndarray) -> np.ndarray:
    """Direct encoding: every sample's frame at each of the T steps, (T, B, ...)."""
    x = np.asarray(x)
    if len(x) == 0:
        raise QuantizationError("run_lava needs at least one sample")
    return net.direct_input(x)


def _execute(net: IntNetwork, s_in: np.ndarray, progress: bool, record: bool):
    """Readout potentials at every step (T, B, *out) and the recorded spikes."""
    if s_in.shape[1] == 0:
        raise QuantizationError("run_lava needs at least one sample")
    source, sink, depth, total, recorders = _lower(net, s_in, record)
    try:
        _run(source, total, progress)
        data = np.rint(np.asarray(sink.data.get())).astype(np.int64)  # (*lava_shape, total)
        recorded = {name: (np.rint(np.asarray(rec.data.get())).astype(np.int64), d)
                    for name, (rec, d) in recorders.items()}
    except BaseException:
        _abort(source)
        raise
    source.stop()
    t, b = s_in.shape[:2]

    def per_step(values: np.ndarray, d: int) -> np.ndarray:
        steps = (np.arange(b)[None, :] * t + np.arange(t)[:, None] + d).ravel()  # (T·B), t-major
        in_ir_layout = from_lava(np.moveaxis(values[..., steps], -1, 0), lead=1)  # (T·B, *shape)
        return in_ir_layout.reshape(t, b, *in_ir_layout.shape[1:])

    return per_step(data, depth), {name: per_step(values, d) for name, (values, d) in recorded.items()}
