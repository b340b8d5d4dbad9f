"""Lower an integer network (``backends.ir.integer.IntNetwork``) to Lava and run it.

``run_lava`` builds one Lava Process per IR layer, streams all samples through
one compiled network on ``Loihi2SimCfg(select_tag="fixed_pt")`` and returns the
readout potentials, equal bit for bit to ``backends.reference.simulate.simulate``.
Which Process runs which neuron: ``backends.lava.neurons`` and
``docs/lava-backend.md``.

Layout (``layout.py``). The IR is torch-ordered, (C, H, W); Lava's Conv works on (X, Y, C) =
(W, H, C). Inputs, per-neuron parameters and conv weights are transposed on the
way in and recorded values on the way out. Lava's Conv computes a true
convolution (scipy ``convolve2d``; checked with a delta input: the output
reproduces the kernel unflipped), torch a correlation, so conv kernels are
flipped spatially. Dense weights index the C-order (C, H, W) flattening; when a
Dense reads a conv-shaped port, the port is flattened in Lava's (W, H, C) order
and the weight columns are permuted to match.

Timing (measured). Global step ``t = time_step - 1`` (Lava counts from 1). The
RingBuffer source sends step ``t`` of the stream at ``t``; every Dense/Conv
Process sends at ``t`` what it computed from its input at ``t - 1``; neurons,
delay lines and sinks act within the step, except that the parallel neuron sends
a window's count during the next window (T steps later). So every value has a
*depth* in steps (``backends.reference.stream.stream_depths``): the source 0, a synapse its input's
+ 1, a neuron's input the deepest of its inputs (shallower inputs are delayed to
match), a neuron's output its input's depth (+ T for the parallel neuron). A
neuron whose input has depth ``d`` sees sample ``i``, step ``j`` at ``t = i·T +
j + d`` and restarts its window at every ``t`` with ``(t - d) % T == 0``. The run
lasts ``B·T + flush`` steps (``backends.reference.stream.flush_steps``); the last ``flush`` source
steps are zeros that drain the pipeline.

Delays. A delay of up to ``STOCK_DELAY_MAX`` steps is a chain of stock identity
synapses (hardware-mappable); a longer one (around a parallel neuron) is one
custom ``DelayLine`` Process (CPU simulation only, like the parallel neuron).

Lava limits. Conv keeps kernel size, stride, padding, dilation and groups in
int8 Vars: groups ≥ 128 silently yields zeros (measured), so larger groups are
re-expressed as fewer groups with block-diagonal kernels. Conv ignores
``weight_exp`` (rejected here) and wraps its output to 24 bits; Dense
accumulates in int32. Where a worst-case bound on a current reaches either
limit the lowering warns: such currents wrap (the reference simulator wraps them the same
way and counts them in its overflows).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

import backends.lava.runtime  # noqa: F401  (first: Lava's runtime fixes the multiprocessing start method)
from backends.lava.layout import (LAVA_INT8_MAX, conv_weight_for_lava, dense_columns_for_lava, from_lava, lava_groups,
                                  lava_shape, regroup_conv_weight, to_lava)
from backends.lava.neurons import check_neuron, final_state, neuron_process
from backends.ir.integer import IntNetwork, IntNeuron, IntProduct, IntSynapse, message_bits, message_bound
from backends.reference.stream import flush_steps, refuse_loops_before_window, sample_windows, streams_alone
from n2c.errors import QuantizationError
from n2c.fixed_point import LOIHI
from n2c.neurons.readout import KIND as READOUT

__all__ = ["run_lava", "run_lava_with_spikes", "run_lava_potentials", "run_lava_steps", "run_lava_stream",
           "check_network"]

CONV_WRAP = 2 ** (LOIHI.conv_bits - 1)  # Lava's Conv wraps its output to signed 24 bits (the reference too)
DENSE_WRAP = 2 ** (LOIHI.dense_bits - 1)  # Lava's Dense accumulates in int32 (the reference wraps there too)
STOCK_DELAY_MAX = 2  # longer alignment delays use one custom DelayLine instead of a synapse per step


@dataclass
class _Stream:
    """An IR value as a Lava OutPort: its IR shape, depth in steps, message width and a bound on |value|."""
    port: object
    shape: tuple[int, ...]
    depth: int
    bits: int
    max_abs: int


# --- synapses -----------------------------------------------------------------------------------

def _current_bound(syn: IntSynapse, weight: np.ndarray, src: _Stream) -> int:
    """A bound on |output| of a synapse: max row Σ|W| · max|input| (· 2^weight_exp)."""
    fan_in = int(np.abs(weight).reshape(weight.shape[0], -1).sum(axis=1).max())
    return fan_in * src.max_abs * 2 ** max(syn.weight_exp, 0)


def _warn_if_may_wrap(syn: IntSynapse, bound: int, limit: int, what: str) -> None:
    """Warn when a current may reach ``limit``, where Lava wraps it (beyond Loihi's range)."""
    if bound >= limit:
        warnings.warn(f"synapse '{syn.name}': currents may reach {bound} ≥ {limit}; {what}; such inputs give "
                      "wrapped currents (the reference simulator wraps them alike and counts them as overflows)")


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
                      "Lava's Conv wraps at 24 bits")
    coarse = lava_groups(groups)
    if coarse != groups:
        weight = regroup_conv_weight(weight, groups, coarse)
    try:
        proc = Conv(weight=conv_weight_for_lava(weight), input_shape=lava_shape(syn.in_shape),
                    padding=syn.padding[::-1], stride=syn.stride[::-1], dilation=syn.dilation[::-1],
                    groups=coarse, num_message_bits=src.bits, name=syn.name)
    except Exception as e:  # Lava validates shapes and channel counts with ValueError / Exception
        raise QuantizationError(f"synapse '{syn.name}': Lava's Conv rejects it: {e}") from e
    if tuple(proc.a_out.shape) != lava_shape(syn.out_shape):
        raise QuantizationError(f"synapse '{syn.name}': Lava's Conv gives shape {proc.a_out.shape}, the IR "
                                f"expects {syn.out_shape} (as (W, H, C): {lava_shape(syn.out_shape)})")
    src.port.connect(proc.s_in)
    return proc


def _dense_process(syn: IntSynapse, src: _Stream):
    """Dense, or DelayDense when the synapses have delays (k extra steps: k + 1 in all)."""
    from lava.proc.dense.process import DelayDense, Dense

    n_in = int(np.prod(syn.in_shape))
    weight = syn.full_weight()  # a sliced synapse reads the whole port, with zero weights outside its slice
    if weight.shape != (int(np.prod(syn.out_shape)), n_in) or int(np.prod(src.shape)) != n_in:
        raise QuantizationError(f"synapse '{syn.name}': dense weight {weight.shape} does not map input "
                                f"{src.shape} to output {syn.out_shape}")
    if len(syn.out_shape) != 1:
        raise QuantizationError(f"synapse '{syn.name}': a dense output must be flat, got {syn.out_shape}")
    _warn_if_may_wrap(syn, _current_bound(syn, weight, src), DENSE_WRAP, "Lava's Dense accumulates in int32")
    weights = dense_columns_for_lava(weight, tuple(src.shape))
    if syn.delay is not None and np.any(syn.delay):
        delays = dense_columns_for_lava(syn.over_whole_input(np.asarray(syn.delay, dtype=np.int64)),
                                        tuple(src.shape))
        proc = DelayDense(weights=weights, delays=delays, weight_exp=int(syn.weight_exp),
                          num_message_bits=src.bits, name=syn.name)
    else:
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
        weight = np.asarray(syn.full_weight(), dtype=np.int64) if syn.kind == "conv" else \
            np.ones((syn.in_shape[0], 1, *syn.kernel), dtype=np.int64)
        groups = syn.groups if syn.kind == "conv" else syn.in_shape[0]
        proc = _conv_process(syn, src, weight, groups)
        bound = min(_current_bound(syn, weight, src), CONV_WRAP)
    else:
        raise QuantizationError(f"synapse '{syn.name}': kind {syn.kind!r} has no Lava lowering")
    return _Stream(proc.a_out, tuple(syn.out_shape), src.depth + 1, syn.message_bits, bound)


def _delay(stream: _Stream, steps: int) -> _Stream:
    """Delay a current by ``steps`` steps. Up to ``STOCK_DELAY_MAX`` steps: identity synapses on
    the flattened value, one per step, each a 1x1 Conv on an (N, 1, 1) view (one scipy call per
    step; exact below Conv's 24-bit wrap) or, for currents that may exceed 24 bits, an N x N
    identity Dense (exact in int32). Longer: one ``DelayLine`` (exact in int32)."""
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense

    from backends.lava.processes.neurons import DelayLine

    if steps > STOCK_DELAY_MAX:
        proc = DelayLine(lava_shape(stream.shape), steps)
        stream.port.connect(proc.a_in)
        return _Stream(proc.s_out, stream.shape, stream.depth + steps, stream.bits, stream.max_abs)
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


# --- products of attention ---------------------------------------------------------------------

def _product(prod: IntProduct, inputs: list[_Stream], timesteps: int) -> _Stream:
    """A Product Process (``backends.lava.processes.attention``) on its two inputs aligned to the
    deeper one; it acts within the step, as a neuron, and sends currents bounded by the state width
    (``backends.quantize._quantize_product_neuron`` chose its weight so)."""
    from backends.lava.processes.attention.product import Product

    for s, name, shape in zip(inputs, prod.inputs, (prod.a_shape, prod.b_shape)):
        if tuple(s.shape) != tuple(shape):
            raise QuantizationError(f"product '{prod.name}' takes {shape} from '{name}', which has shape {s.shape}")
    depth = max(s.depth for s in inputs)
    a, b = (_delay(s, depth - s.depth) for s in inputs)
    proc = Product(prod.a_shape, prod.b_shape, prod.out_shape, prod.params, timesteps, depth, name=prod.name)
    a.port.connect(proc.a_in)
    b.port.connect(proc.b_in)
    return _Stream(proc.a_out, tuple(prod.out_shape), depth, prod.message_bits, LOIHI.state_max)


# --- neurons ------------------------------------------------------------------------------------

def _neuron(neuron: IntNeuron, inputs: list[_Stream], timesteps: int) -> tuple[_Stream, object]:
    """Build a neuron Process summing ``inputs``, aligned to the deepest one; returns its output
    stream and the Process."""
    for s, name in zip(inputs, neuron.inputs):
        if tuple(s.shape) != tuple(neuron.shape):
            raise QuantizationError(f"neuron '{neuron.name}' of shape {neuron.shape} receives '{name}' of "
                                    f"shape {s.shape}")
    depth = max((s.depth for s in inputs), default=0)  # 0: a neuron without input (the always-on source)
    inputs = [_delay(s, depth - s.depth) for s in inputs]
    proc = neuron_process(neuron, timesteps, depth)
    for s in inputs:
        s.port.connect(proc.a_in)
    late = neuron.neuron_kind.output_delay(timesteps)
    out = _Stream(proc.s_out, tuple(neuron.shape), depth + late, message_bits(neuron),
                  message_bound(neuron))
    return out, proc


# --- network ------------------------------------------------------------------------------------

def check_network(net: IntNetwork) -> None:
    """Reject what the lowering cannot express before building anything (one-line errors)."""
    output = net.by_name().get(net.output)
    if not isinstance(output, IntNeuron) or output.neuron_kind is not READOUT:
        raise QuantizationError(f"the network output '{net.output}' is not a readout neuron")
    for layer in net.layers:
        if isinstance(layer, IntNeuron):
            check_neuron(layer)
        elif isinstance(layer, IntProduct):
            continue
        elif layer.kind not in ("dense", "conv", "sumpool"):
            raise QuantizationError(f"synapse '{layer.name}': kind {layer.kind!r} has no Lava lowering; use "
                                    "dense, conv or sumpool")


def _source_data(s_in: np.ndarray, flush: int) -> np.ndarray:
    """Encoded steps (T, B, ...) in Lava layout, sample after sample (B·T steps), then ``flush``
    zero steps; time last."""
    t, b = s_in.shape[:2]
    steps = to_lava(np.swapaxes(s_in, 0, 1).reshape(b * t, *s_in.shape[2:]), lead=1)
    steps = np.concatenate([steps, np.zeros((flush, *steps.shape[1:]), dtype=steps.dtype)])
    return np.moveaxis(steps, 0, -1).astype(np.int32)


@dataclass
class _Lowered:
    source: object  # the RingBuffer source (any Process of the network runs and stops it)
    procs: dict  # neuron name -> Process
    sinks: dict  # neuron name -> (sink RingBuffer, depth of the neuron's output)
    total: int  # steps to run: B·T + flush


def _lower(net: IntNetwork, s_in: np.ndarray, record: bool = False) -> _Lowered:
    """Build source, layers and sinks for inputs ``s_in`` (T, B, ...): a sink on the readout and,
    with ``record``, on every neuron."""
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    check_network(net)
    if tuple(net.source.shape) != tuple(s_in.shape[2:]):
        raise QuantizationError(f"inputs of shape {tuple(s_in.shape[2:])} do not match the network input "
                                f"{net.source.shape}")
    timesteps, samples = net.check_steps(s_in), s_in.shape[1]
    flush = flush_steps(net)
    total = samples * timesteps + flush
    source = Source(data=_source_data(s_in, flush))
    src = net.source
    src_max = max(abs(v) for v in src.message_range)
    streams = {src.name: _Stream(source.s_out, tuple(src.shape), 0, src.message_bits, src_max)}
    procs, layers = {}, net.by_name()
    for layer in net.layers:
        if isinstance(layer, IntSynapse):
            streams[layer.name] = _synapse(layer, streams[layer.input])
            if layer.recurrent:  # back into its own neuron, one step later: Lava's synapses send their buffer first
                streams[layer.name].port.connect(procs[layer.input].a_in)
        elif isinstance(layer, IntProduct):
            streams[layer.name] = _product(layer, [streams[n] for n in layer.inputs], timesteps)
        else:
            forward = net.forward_inputs(layer, layers)
            streams[layer.name], procs[layer.name] = _neuron(layer, [streams[n] for n in forward], timesteps)
    sinks = {}
    products = [x.name for x in net.layers if isinstance(x, IntProduct)]  # their currents: the report counts them
    for name in [*procs, *products]:
        if record or name == net.output:
            stream = streams[name]
            sinks[name] = (Sink(shape=lava_shape(stream.shape), buffer=total), stream.depth)
            stream.port.connect(sinks[name][0].a_in)
    return _Lowered(source, procs, sinks, total)


def _run(proc, total: int, progress: bool, timing: dict | None = None) -> None:
    """Compile (Lava's compiler and the runtime's start), then run ``total`` steps; with ``timing``,
    add the seconds of each to ``timing["compile_s"]`` and ``timing["run_s"]`` and the steps to
    ``timing["steps"]``."""
    import time

    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from tqdm import tqdm

    cfg = Loihi2SimCfg(select_tag="fixed_pt")
    start = time.perf_counter()
    proc.create_runtime(run_cfg=cfg)
    compiled = time.perf_counter()
    chunk = min(total, max(64, total // 100)) if progress else total  # each run() call costs a pause
    with tqdm(total=total, desc="lava", unit="step", disable=not progress) as bar:
        done = 0
        while done < total:
            n = min(chunk, total - done)
            proc.run(condition=RunSteps(num_steps=n))
            done += n
            bar.update(n)
    if timing is not None:
        timing["compile_s"] = timing.get("compile_s", 0.0) + compiled - start
        timing["run_s"] = timing.get("run_s", 0.0) + time.perf_counter() - compiled
        timing["steps"] = timing.get("steps", 0) + total


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


def _execute(net: IntNetwork, s_in: np.ndarray, progress: bool, record: bool, state: bool = False,
             timing: dict | None = None):
    """Run ``s_in`` (T, B, ...). Returns ({neuron: raw messages (L, *shape)}, {neuron: output depth},
    {neuron: final state} if ``state``), all int64 in IR layout, L = B·T + flush."""
    if s_in.ndim < 2 or s_in.shape[1] == 0:
        raise QuantizationError("a Lava run needs inputs of shape (T, B, ...) with at least one sample")
    low = _lower(net, np.asarray(s_in, dtype=np.int64), record)
    layers = net.by_name()
    try:
        _run(low.source, low.total, progress, timing)
        raw = {name: from_lava(np.moveaxis(np.rint(np.asarray(sink.data.get())).astype(np.int64), -1, 0), lead=1)
               for name, (sink, _) in low.sinks.items()}
        final = {name: final_state(layers[name], proc) for name, proc in low.procs.items()} if state else {}
    except BaseException:
        _abort(low.source)
        raise
    low.source.stop()
    return raw, {name: depth for name, (_, depth) in low.sinks.items()}, final


def _run_aligned(net: IntNetwork, s_in: np.ndarray, progress: bool, record: bool, timing: dict | None = None,
                 checked: bool = False):
    """Readout potentials at every step (T, B, *out) and, with ``record``, every other neuron's
    messages (T, B, *shape). With synaptic delays or recurrent synapses a sample's late
    contributions would reach the next sample's window, so each sample then streams alone (a
    compiled run per sample)."""
    t, b = net.check_steps(s_in), s_in.shape[1]
    if not checked:
        refuse_loops_before_window(net, "run it on the reference simulator (--backend reference)")
    if b > 1 and streams_alone(net):
        runs = [_run_aligned(net, s_in[:, i:i + 1], progress, record, timing, checked=True) for i in range(b)]
        return (np.concatenate([r[0] for r in runs], axis=1),
                {name: np.concatenate([r[1][name] for r in runs], axis=1) for name in runs[0][1]})
    raw, depth, _ = _execute(net, s_in, progress, record, timing=timing)
    aligned = {name: sample_windows(values, depth[name], t, b) for name, values in raw.items()}
    return aligned.pop(net.output), aligned


def run_lava(net: IntNetwork, x: np.ndarray, progress: bool = True) -> np.ndarray:
    """Run float inputs ``x`` (B, *input_shape) through ``net`` on Lava's fixed-point CPU simulation.

    Returns the readout potentials after each sample's last step, (B, *out_shape) int64, equal
    to ``backends.reference.simulate.simulate(net, x).output``.
    """
    return _run_aligned(net, _direct(net, x), progress, record=False)[0][-1]


def run_lava_with_spikes(net: IntNetwork, x: np.ndarray, progress: bool = True
                         ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Like :func:`run_lava`, and also records every neuron's messages except the readout's
    (spikes, counts, codes, li potentials) as (T, B, *shape) int64 in IR layout (one extra sink
    Process per layer, so slower)."""
    potentials, messages = _run_aligned(net, _direct(net, x), progress, record=True)
    return potentials[-1], messages


def run_lava_potentials(net: IntNetwork, s_in: np.ndarray, progress: bool = True, record: bool = False,
                        timing: dict | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run encoded integer inputs ``s_in`` (T, B, *input_shape) through ``net``. Returns the
    readout potential after every step, (T, B, *out_shape) int64, and, with ``record``, every
    other neuron's messages (T, B, *shape). ``timing`` (a dict) receives the compile and run
    seconds and the steps (:func:`_run`)."""
    return _run_aligned(net, np.asarray(s_in, dtype=np.int64), progress, record, timing)


def run_lava_steps(net: IntNetwork, s_in: np.ndarray, progress: bool = True, record: bool = False
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run encoded integer inputs ``s_in`` (T, B, *input_shape), a frame per step, through ``net``;
    the sample window is the input's T.

    Returns the readout's input (current plus bias) at every step, (T, B, *out_shape) int64 (as
    ``backends.reference.simulate.run_encoded(...).readout_current``), and, with ``record``, every
    other neuron's messages (T, B, *shape), as ``run_encoded(...).messages``."""
    potentials, messages = run_lava_potentials(net, s_in, progress, record)
    return np.diff(potentials, axis=0, prepend=0), messages


def run_lava_stream(net: IntNetwork, s_in: np.ndarray, progress: bool = False
                    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """Run encoded inputs ``s_in`` (T, B, *input_shape) as one stream; nothing is aligned.

    Returns ``(messages, final_state)``, int64 in IR layout:

    * ``messages[name]``, for every neuron (the readout included): (L, *shape), what it sent
      at each global step t = 0..L-1 (Lava's time_step t + 1): counts, codes, spikes, the li
      potential v, the readout's v. L = B·T + ``backends.reference.stream.flush_steps(net)``.
    * ``final_state[name]``: {"v": (*shape)} after the last step, and "u" for the CUBA kinds
      ("lif", "li"); the parallel neuron's v is its running window total.
    """
    raw, _, final = _execute(net, np.asarray(s_in, dtype=np.int64), progress, record=True, state=True)
    return raw, final


def _direct(net: IntNetwork, x: np.ndarray) -> np.ndarray:
    """Direct encoding: every sample's frame at each of the T steps, (T, B, ...)."""
    x = np.asarray(x)
    if len(x) == 0:
        raise QuantizationError("run_lava needs at least one sample")
    return net.direct_input(x)
