"""The stages users run, as functions from one artifact to the next.

``export_model``  model file → NIR file
``load_network``  NIR file → quantized integer network
``run_integer``   integer network + integer input → readout on a backend (the one dispatch)
``run_backend``   integer network + data → integer readout, timing
``run_arrays``    any layer graph + input array (T, B, ...) → output at every step
``report_network`` NIR file + chip + data → hardware report
The CLI and the demo are thin wrappers around these.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from backends.ir.layers import LayerGraph
from backends.nir.to_layers import import_nir
from backends.ir.integer import IntNetwork, IntNeuron
from backends.quantize import quantize
from n2c.snn.convert import convert
from n2c.data import Dataset
from n2c.errors import N2CError
from n2c.limits import CHUNK_BYTES, MAX_RUN_BYTES, elements
from n2c.export.nir import max_currents, to_nir, write_nir
from n2c.snn.modules import SpikingNetwork

BACKENDS = ("reference", "lava")


def export_model(model, out_path: str, input_shape: tuple[int, ...], input_scale: float | None = None,
                 timesteps: int = 1, levels: int | None = None, calib: Dataset | None = None,
                 calib_mode: str | None = None, method: str = "mtn", portable: bool = False,
                 nested: bool = False, width_data: np.ndarray | None = None, **options) -> SpikingNetwork:
    """Convert ``model`` (or take a converted :class:`SpikingNetwork` as is) and write its
    NIR graph to ``out_path`` (atomically). ``options`` go to :func:`n2c.snn.convert.convert`.
    With ``portable``, write the standard-NIR form instead (:mod:`backends.nir.portable`); with
    ``nested``, the model's top-level submodules become nested graphs. ``width_data`` (samples
    (B, *input_shape), training data) measures each layer's largest current, written as
    ``n2c.max_current`` so that quantization keeps the synaptic sums inside the chip's width."""
    if isinstance(model, SpikingNetwork):
        snn = model
    else:
        snn = convert(model, method, timesteps, calib, levels, calib_mode, **options)
    currents = max_currents(snn, width_data) if width_data is not None and len(width_data) else None
    graph = to_nir(snn, tuple(input_shape), input_scale, nested=nested and not portable, currents=currents)
    if portable:
        from backends.nir.portable import to_portable_nir
        graph = to_portable_nir(import_nir(graph))
    write_nir(graph, out_path)
    return snn


def load_network(nir_path: str, input_scale: float | None = None) -> tuple[LayerGraph, IntNetwork]:
    graph = import_nir(nir_path)
    return graph, quantize(graph, input_scale)


@dataclass
class IntegerRun:
    """An integer network's run on a backend."""
    output: np.ndarray  # (B, *out) readout potentials after each sample's last step
    current: np.ndarray  # (T, B, *out) the readout's input (current plus bias) at every step
    messages: dict  # recorded messages (T, B, ...) when asked for (``record``), else {}
    overflows: dict  # layer -> {"limit", "count"} of values past Loihi's limits
    spikes: dict | None = None  # spiking layer -> unit spikes over all samples (|count| summed)
    lava_timing: dict | None = None  # Lava runs: compile_s (compiler + runtime start), run_s, steps


def unit_spikes(net: IntNetwork, messages: dict) -> dict[str, int]:
    """Unit spikes per spiking layer in ``messages``: |count| summed (a negative spike is a spike too)."""
    counted = spiking_layers(net)
    signed = {layer.name: layer.neuron_kind.message_range(layer)[0] < 0 for layer in net.layers
              if layer.name in messages and layer.name in counted}
    return {name: int((np.abs(messages[name]) if negative else messages[name]).sum()) for name, negative in signed.items()}


def spiking_layers(net: IntNetwork) -> set[str]:
    from backends.ir.integer import IntNeuron
    return {layer.name for layer in net.layers if isinstance(layer, IntNeuron) and layer.spiking}


def run_integer(net: IntNetwork, encoded, samples: int, backend: str = "reference", record: bool = True,
                progress: bool = False, timing: str = "zero-delay", batch_size: int = 1024,
                count: bool = True) -> IntegerRun:
    """The one backend dispatch: run integer inputs on the reference simulator or on Lava.

    ``encoded(batch)`` gives the integer input (T, b, ...) of the samples in the slice ``batch``.
    The zero-delay reference streams the samples in chunks of ``batch_size``: its memory is one
    chunk's messages, whatever ``samples`` is, unless ``record`` keeps every layer's messages of
    every sample. Spikes per layer are counted chunk by chunk (unless ``count`` is off). ``timing`` ``lava`` runs
    the reference with Lava's timing (``backends.reference.stream``, all samples in one stream);
    Lava records its neurons' messages only with ``record`` (a sink Process each)."""
    if backend not in BACKENDS:
        raise N2CError(f"unknown backend {backend!r}; use one of {BACKENDS}")
    if backend == "lava":
        from backends.lava.lower import run_lava_potentials

        s_in = encoded(slice(0, samples))
        timing: dict = {}
        potentials, messages = run_lava_potentials(net, s_in, progress, record, timing)
        # Lava's models count nothing; the reference under Lava's timing computes the same integers
        # step for step (tests/contracts), so its count is this run's
        return IntegerRun(potentials[-1], np.diff(potentials, axis=0, prepend=0), messages,
                          _run_lava_timed(net, s_in).overflows, unit_spikes(net, messages) if record else None,
                          timing)
    if timing == "lava":
        run = _run_lava_timed(net, encoded(slice(0, samples)))
        run.spikes = unit_spikes(net, run.messages)
        return run
    from tqdm import tqdm

    from backends.reference.simulate import run_chunks
    from backends.reference.synapses import merge_overflows

    counted = spiking_layers(net) if count else set()
    chunks = run_chunks(net, encoded, samples, batch_size, keep=None if record else (), count=counted)
    outputs, currents, overflows, messages = [], [], [], []
    spikes = dict.fromkeys(counted, 0)
    for _, sim in tqdm(chunks, total=-(-samples // batch_size), desc="reference", unit="chunk",
                       disable=not progress or samples <= batch_size, leave=False):
        outputs.append(sim.output)
        currents.append(sim.readout_current)
        overflows.append(sim.overflows)
        for name, n in sim.spikes.items():
            spikes[name] += n
        if record:
            messages.append(sim.messages)
        del sim  # before the next chunk is made: one chunk in memory, not two
    joined = messages[0] if len(messages) == 1 else \
        {k: np.concatenate([m[k] for m in messages], axis=1) for k in messages[0]} if messages else {}
    return IntegerRun(np.concatenate(outputs), np.concatenate(currents, axis=1), joined, merge_overflows(overflows),
                      spikes if count else None)


@dataclass
class BackendRun:
    backend: str
    output: np.ndarray  # (B, classes) integer readout
    seconds: float
    messages: dict | None = None  # with record_spikes: every layer's messages (T, B, ...)

    @property
    def predictions(self) -> np.ndarray:
        return self.output.reshape(len(self.output), -1).argmax(axis=1)


def run_backend(net: IntNetwork, x: np.ndarray, backend: str, progress: bool = True,
                record_spikes: bool = False) -> BackendRun:
    """Run float samples ``x`` (B, ...) on a backend, directly encoded. Every layer's messages are
    kept (``messages``) only with ``record_spikes`` (on Lava: extra sink processes)."""
    if tuple(x.shape[1:]) != tuple(net.source.shape):
        raise N2CError(f"the data has samples of shape {tuple(x.shape[1:])} but the graph expects "
                       f"{tuple(net.source.shape)}; use data the network was trained on")
    start = time.perf_counter()
    run = run_integer(net, lambda batch: net.direct_input(x[batch]), len(x), backend, record_spikes, progress)
    return BackendRun(backend, run.output, time.perf_counter() - start, run.messages if record_spikes else None)


PRECISIONS = ("int", "float")
TIMINGS = ("zero-delay", "lava")


@dataclass
class ArrayRun:
    output: np.ndarray  # (T, B, *output_shape), real units
    seconds: float
    messages: dict | None = None  # integer runs with ``record``: the layers' messages (T, B, ...)
    net: IntNetwork | None = None  # integer runs: the quantized network
    overflows: dict | None = None  # integer runs: layer -> {"limit", "count"} past Loihi's limits
    spikes: dict | None = None  # integer runs: spiking layer -> unit spikes over all samples
    firing: dict | None = None  # float runs: spiking layer -> neuron-steps that fired, over all samples
    traces: dict | None = None  # recorded layers -> {"out" (T, B, ...), float NIR neurons also "v", "i"}
    lava_timing: dict | None = None  # Lava runs: compile_s, run_s, steps

    @property
    def predictions(self) -> np.ndarray:
        """Class = argmax of the output summed over time (mean readout, spike counts)."""
        total = self.output.sum(axis=0)
        return total.reshape(len(total), -1).argmax(axis=1)


def run_arrays(graph: LayerGraph, x: np.ndarray, precision: str = "int", discretization=None,
               input_scale: float | None = None, batch_size: int | None = None, backend: str = "reference",
               progress: bool = False, timing: str = "zero-delay", record: bool = False,
               trace: tuple[str, ...] = ()) -> ArrayRun:
    """Run the input array ``x`` (T, B, *input_shape) through ``graph`` on the reference simulator.

    ``int``: Loihi integer arithmetic (the output is the readout's input current at each
    step, divided by its scale), on the reference simulator or, with ``backend="lava"``, on
    Lava's fixed-point CPU simulation (one compiled run for all samples). ``float``: float64
    on the reference simulator, any graph, NIR neurons discretized by ``discretization``
    (``backends.float.dynamics``).

    ``timing`` (integer reference runs): ``zero-delay`` (every layer sees step t at step t, the
    samples batched) or ``lava`` (the samples streamed back to back with a step per synapse
    Process, as Lava runs them: ``backends.reference.stream.run_stream``).

    Integer zero-delay runs stream ``batch_size`` samples at a time (default: about
    :data:`n2c.limits.CHUNK_BYTES` of values per chunk) and count spikes per layer as they go;
    ``record`` also keeps every layer's messages of every sample (memory grows with B); ``trace``
    keeps the named layers' outputs at every step, and in float runs NIR neurons' v and i."""
    from backends.float.simulate import check_input, simulate_float

    if precision not in PRECISIONS:
        raise N2CError(f"unknown precision {precision!r}; use one of {PRECISIONS}")
    if backend not in BACKENDS:
        raise N2CError(f"unknown backend {backend!r}; use one of {BACKENDS}")
    if timing not in TIMINGS:
        raise N2CError(f"unknown timing {timing!r}; use one of {TIMINGS}")
    if timing == "lava" and (precision != "int" or backend != "reference"):
        raise N2CError("--timing lava applies to integer runs on the reference simulator (Lava itself always "
                       "runs with its own timing); use --precision int --backend reference")
    if precision == "float" and backend != "reference":
        raise N2CError("float precision runs on the reference simulator only; use --precision int with Lava")
    if batch_size is None and np.ndim(x) >= 2:  # about CHUNK_BYTES of layer values per chunk
        values = sum(elements(layer.out_shape) for layer in graph.layers)
        batch_size = max(1, CHUNK_BYTES // (8 * max(1, x.shape[0]) * max(values, 1)))
    batch_size = batch_size or 1024
    if np.ndim(x) >= 2:  # before anything is allocated (shape errors are check_input's)
        whole = precision == "int" and (record or timing == "lava" or backend == "lava")  # all samples at once
        check_run_memory(graph, x.shape[0], x.shape[1], x.shape[1] if whole else batch_size)
    start = time.perf_counter()
    if precision == "float":
        run = simulate_float(graph, x, discretization, batch_size=batch_size, trace=tuple(trace))
        return ArrayRun(run.output, time.perf_counter() - start, firing=run.firing, traces=run.traces)
    x = check_input(graph, x)
    # T of other tools' graphs is their input's (check_input has held n2c graphs to their own)
    net = quantize(graph, input_scale, discretization.dt if discretization is not None else None,
                   timesteps=x.shape[0], reset=integer_reset(graph, discretization))
    readout = net.by_name()[net.output]
    names = {layer.name for layer in net.layers if isinstance(layer, IntNeuron)}
    unknown = [t for t in trace if t not in names]
    if unknown:
        raise N2CError(f"no neuron layer '{unknown[0]}' to record in the integer network; its neuron layers are "
                       f"{', '.join(sorted(names))}")
    run = run_integer(net, lambda batch: net.source.encode(x[:, batch]), x.shape[1], backend,
                      record=record or bool(trace) or backend == "lava", progress=progress, timing=timing,
                      batch_size=batch_size)
    traces = {name: {"out": run.messages[name]} for name in trace if name != net.output}
    if net.output in trace:
        traces[net.output] = {"out": run.current / readout.scale}
    return ArrayRun(run.current / readout.scale, time.perf_counter() - start, run.messages if record else None, net,
                    run.overflows, run.spikes, lava_timing=run.lava_timing, traces=traces or None)


def integer_reset(graph, discretization) -> str:
    """The reset of the integer form of ``discretization``'s neurons (its ``integer_reset``), or a
    one-line error for a scheme without one (graphs without NIR neurons take any)."""
    from backends.float.dynamics import DISCRETIZATIONS, INTEGER_SCHEMES
    from backends.ir.layers import DynamicsLayer
    scheme = discretization or DISCRETIZATIONS["nir"]
    if scheme.integer_reset is None and any(isinstance(layer, DynamicsLayer) for layer in graph.layers):
        raise N2CError(f"--dynamics {scheme.name} has no integer (Loihi) form (the integer neurons follow "
                       f"{' or '.join(INTEGER_SCHEMES)}); use --precision float for --dynamics {scheme.name}")
    return scheme.integer_reset or "zero"


def chunk_size(net: IntNetwork, budget: int = CHUNK_BYTES) -> int:
    """Samples per streamed chunk: every value of one sample over its T steps (8 bytes each),
    as many samples as fit ``budget`` bytes (at least one)."""
    from backends.ir.integer import IntProduct, IntSynapse
    values = sum(elements(layer.out_shape if isinstance(layer, (IntSynapse, IntProduct)) else layer.shape)
                 for layer in net.layers)
    return max(1, budget // (8 * net.timesteps * max(values, 1)))


def check_run_memory(graph: LayerGraph, timesteps: int, samples: int, at_once: int) -> None:
    """Refuse, before anything is allocated, a run whose layer values (8 bytes each, every layer,
    ``at_once`` samples of ``timesteps`` steps, plus the output of all ``samples``) pass
    :data:`n2c.limits.MAX_RUN_BYTES`."""
    values = sum(elements(layer.out_shape) for layer in graph.layers)
    need = 8 * timesteps * (min(at_once, samples) * values + samples * elements(graph.layers[-1].out_shape))
    if need > MAX_RUN_BYTES:
        raise N2CError(f"this run would hold about {need / 2 ** 30:.1f} GiB at once ({timesteps} steps x "
                       f"{min(at_once, samples)} samples x {values:,} values), over n2c's limit of "
                       f"{MAX_RUN_BYTES / 2 ** 30:.0f} GiB; run fewer samples (--samples) or fewer steps")


def _run_lava_timed(net: IntNetwork, s_in: np.ndarray) -> IntegerRun:
    """Reference run with Lava's timing; every layer's messages and the readout's per-step input
    read off each sample's window, as ``run_lava_steps`` reads Lava's sinks (and, as there, each
    sample streamed alone where ``streams_alone``)."""
    from backends.reference.stream import run_stream, streams_alone
    from backends.reference.synapses import merge_overflows

    b = s_in.shape[1]
    if b > 1 and streams_alone(net):
        runs = [_run_lava_timed(net, s_in[:, i:i + 1]) for i in range(b)]
        return IntegerRun(np.concatenate([r.output for r in runs]),
                          np.concatenate([r.current for r in runs], axis=1),
                          {name: np.concatenate([r.messages[name] for r in runs], axis=1) for name in runs[0].messages},
                          merge_overflows([r.overflows for r in runs]))
    stream = run_stream(net, s_in)
    potentials = stream.window(net.output, b)
    messages = {name: stream.window(name, b) for name in stream.messages if name != net.output}
    return IntegerRun(potentials[-1], np.diff(potentials, axis=0, prepend=0), messages, stream.overflows)


def report_network(nir_path: str, chip, data: Dataset | None, split: str = "test", simulator: str = "reference",
                   input_scale: float | None = None, chunk: int | None = None, progress: bool = False,
                   across_T: list | None = None, share_cores: str = "auto", dt: float | None = None,
                   inputs: np.ndarray | None = None, input_name: str = "input array", dynamics: str = "nir") -> dict:
    """Map a NIR graph on ``chip`` (a :class:`backends.hardware.spec.ChipSpec`), run ``data`` (or
    ``inputs``, an array (T, B, ...) of the graph's input, without labels) on the reference simulator
    (or Lava) in chunks of ``chunk`` samples (default: :func:`chunk_size`), and build the hardware
    report (``backends.report.build``). ``dt``: the time step of other tools' neurons (NIR's
    continuous time; default the graph's ``n2c.dt``, else 1e-3, or the scheme's); their T is the input's steps.
    ``dynamics``: their neurons' scheme, one with an integer form (``backends.float.dynamics.INTEGER_SCHEMES``).
    A graph that cannot be mapped raises :class:`N2CError`."""
    from tqdm import tqdm

    from backends.report.build import ReportBuilder, RunInfo
    from n2c.neurons import kind as kind_named

    graph = import_nir(nir_path)
    steps = None if graph.is_n2c or inputs is None else int(inputs.shape[0])
    scale = input_scale or graph.input.input_scale or (data.input_scale if data is not None else None)
    from backends.float.dynamics import discretization
    scheme = discretization(dynamics, dt)
    dt = dt if dt is not None or dynamics == "nir" else scheme.dt  # nir: the graph's n2c.dt, else 1e-3
    net = quantize(graph, scale, dt=dt, fmt=chip.integer_format(), timesteps=steps,
                   reset=integer_reset(graph, scheme))
    shape = tuple(inputs.shape[2:]) if inputs is not None else tuple(data.x.shape[1:])
    if shape != tuple(net.source.shape):
        name = input_name if inputs is not None else data.name
        raise N2CError(f"{name} has samples of shape {shape} but {nir_path} expects {tuple(net.source.shape)}; use "
                       "the data set the network was trained on")
    if inputs is not None and inputs.shape[0] != net.timesteps:
        raise N2CError(f"{input_name} has {inputs.shape[0]} steps but {nir_path} runs T = {net.timesteps}; give "
                       f"(T={net.timesteps}, B, ...) inputs")
    method = str(graph.metadata.get("n2c.method", "nir"))
    builder = ReportBuilder(net, chip, RunInfo(nir_path, method, input_name if inputs is not None else data.name,
                                               "-" if inputs is not None else split, simulator, share_cores))
    net = builder.net  # with relays where fan-in exceeds a core
    chunk = chunk or (chunk_size(net) if simulator == "reference" else 256)  # Lava: fewer, longer runs
    samples = inputs.shape[1] if inputs is not None else len(data.x)
    outputs = []

    def run(start: int):
        if inputs is not None:
            s_in = net.source.encode(np.asarray(inputs[:, start:start + chunk]))
        else:
            s_in = net.direct_input(data.x[start:start + chunk])  # encoded once: run and activity read it
        return s_in, run_integer(net, lambda batch: s_in[:, batch], s_in.shape[1], simulator, batch_size=chunk,
                                 count=False)

    def add(start: int, s_in, result):
        labels = data.y[start:start + chunk] if inputs is None else None
        builder.add({**result.messages, net.source.name: s_in}, result.output, labels, result.overflows)
        outputs.append(np.asarray(result.output).reshape(len(result.output), -1))  # small: one row per sample

    starts = list(range(0, samples, chunk))
    bar = tqdm(total=len(starts), desc=f"{simulator} run", unit="chunk", disable=not progress, leave=False)
    if simulator != "reference":  # Lava runs in the main thread, chunk after chunk
        for start in starts:
            add(start, *run(start))
            bar.update()
    else:
        # the next chunk runs in a second thread while this one is counted (numpy and torch release
        # the GIL in their array operations), so at most two chunks are in memory
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(run, starts[0]) if starts else None
            for i, start in enumerate(starts):
                s_in, result = pending.result()
                pending = pool.submit(run, starts[i + 1]) if i + 1 < len(starts) else None
                add(start, s_in, result)
                del s_in, result
                bar.update()
    bar.close()
    report = builder.build(across_T)
    spikes = {r["name"]: r["unit_spikes"] for r in report["activity"]["layers"] if kind_named(r["kind"]).spiking}
    report["warnings"] = silence_warnings(spikes, np.concatenate(outputs), foreign=not graph.is_n2c)
    report["notes"] = [f"Warning: {w}." for w in report["warnings"]] + report["notes"]
    return report


def silence_warnings(spikes: dict | None, outputs: np.ndarray, foreign: bool) -> list[str]:
    """What a run that says nothing looks like, in words: spiking layers that never fired over
    the whole run, and an output that is the same for every sample (``outputs``: per sample,
    (B, ...)). Each names the likely cause; a graph of another tool usually runs on the wrong time
    step or scheme (Sinabs' IF neurons need dt = 1; Norse's need --dynamics norse)."""
    hint = ("graphs of other tools state time in their own units: Sinabs steps with dt = 1 (--dt 1), Norse and "
            "snnTorch need --dynamics norse|snntorch (docs/nir-conventions.md)" if foreign else
            "check that the inputs are in the range the model was trained on")
    out = []
    silent = [name for name, count in (spikes or {}).items() if count == 0]
    if silent:
        out.append(f"{len(silent)} spiking layer(s) sent no spike in the whole run ({', '.join(silent[:3])}"
                   f"{', ...' if len(silent) > 3 else ''}); {hint}")
    flat = np.asarray(outputs).reshape(len(outputs), -1)
    if len(flat) > 1 and (flat == flat[:1]).all():
        out.append(f"the output is the same for all {len(flat)} samples; {hint}")
    return out

