"""``n2c simulate``: a NIR graph on a data set or an input array, on the reference simulator or Lava."""

from __future__ import annotations

import json

from n2c.cli.files import load_input_array, save_array, save_arrays
from n2c.cli.options import data_options, listed, positive_float, timesteps_int
from n2c.errors import N2CError
from n2c.files import check_output_file


def add_parser(sub) -> None:
    s = sub.add_parser("simulate", help="run a NIR graph on a data set or on your own input array",
                       description="Run a NIR graph (n2c's or another tool's) on a data set, or on an input array "
                       "of shape (T, B, *input_shape) saved with np.save.")
    data_options(s)
    s.add_argument("--input", metavar="X.npy", help="input array (time, batch, then the graph's input shape) "
                   "instead of a data set")
    s.add_argument("--save-output", metavar="Y.npy", help="save the Output node's value at every step, "
                   "shape (time, batch, *output_shape)")
    s.add_argument("--backend", choices=["reference", "lava"], default="reference",
                   help="reference simulator (fast) or Lava's fixed-point CPU simulation")
    s.add_argument("--precision", choices=["int", "float"],
                   help="int: Loihi integer arithmetic (default for n2c graphs); float: float64, any graph "
                   "(default for other tools' graphs)")
    s.add_argument("--dynamics", default="nir", help="how NIR's continuous neurons become steps: nir (forward "
                   "Euler, default), snntorch, snntorch-nodelay (neurons made with reset_delay=False), norse (the "
                   "tools' own schemes; see docs/nir-conventions.md)")
    s.add_argument("--dt", type=positive_float, help="time step in the graph's time unit (default: the "
                   "--dynamics scheme's)")
    s.add_argument("--steps", type=timesteps_int,
                   help="steps per sample for --dataset on graphs from other tools (default: 1; n2c graphs "
                   "carry their own T)")
    s.add_argument("--timing", choices=["zero-delay", "lava"], default="zero-delay",
                   help="integer reference runs: zero-delay (each layer sees step t at step t; default) or lava "
                   "(a step of delay per synapse, samples streamed back to back, as Lava runs them)")
    s.add_argument("--strict", action="store_true", help="integer runs: fail (exit 2) when a value exceeds "
                   "Loihi's limits (16-bit accumulator, 24-bit state) instead of warning")
    s.add_argument("--record", type=listed(str, "layer names"), default=[], metavar="LAYER[,LAYER...]",
                   help="keep these layers' values at every step: their outputs, and in float runs NIR neurons' "
                   "membrane potential v and synaptic current i (to compare traces with other simulators); "
                   "needs --save-record")
    s.add_argument("--save-record", metavar="TRACES.npz", help="write the recorded layers as LAYER.out, LAYER.v, "
                   "LAYER.i arrays (time, batch, ...)")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    s.set_defaults(func=cmd_simulate)


def cmd_simulate(args) -> int:
    from n2c.distributed import setup, shutdown

    world = setup()  # under torchrun: each process runs its shard of the samples, rank 0 reports
    code = _simulate(args, world)
    shutdown(world)
    return code


def _simulate(args, world) -> int:
    import warnings

    import numpy as np

    from backends.float.dynamics import discretization
    from backends.nir.to_layers import import_nir
    from n2c.data import load_dataset
    from n2c.cli.pipeline import run_arrays, silence_warnings

    if args.input and args.dataset:
        raise N2CError("give either --input X.npy or --dataset NAME, not both")
    if args.save_output:
        check_output_file(args.save_output)
    if bool(args.record) != bool(args.save_record):
        raise N2CError("--record LAYERS and --save-record FILE.npz go together: name the layers and the file")
    if args.save_record:
        check_output_file(args.save_record)
    graph = import_nir(args.graph, isolate=True)
    stated_dt = graph.metadata.get("n2c.dt") if args.dynamics == "nir" else None  # the graph's own time step
    disc = discretization(args.dynamics, args.dt or stated_dt)
    # the default follows the graph and the backend: Lava runs integers only
    precision = args.precision or ("int" if graph.is_n2c or args.backend == "lava" else "float")
    if precision == "float" and args.backend != "reference":
        raise N2CError("--precision float runs on the reference simulator only; drop --backend lava")
    labels, data_name = None, None
    if args.input:
        x = load_input_array(args.input)
        source = args.input
    else:
        data = load_dataset(args.dataset or "digits", args.split).head(args.samples)
        labels, data_name, source = data.y, data.name, data.name
        if tuple(data.x.shape[1:]) != tuple(graph.input.out_shape):
            raise N2CError(f"{data.name} has samples of shape {tuple(data.x.shape[1:])} but the graph expects "
                           f"{tuple(graph.input.out_shape)}; use --input X.npy for other data")
        if graph.is_n2c and args.steps not in (None, graph.timesteps):
            raise N2CError(f"--steps {args.steps}: this n2c graph runs T = {graph.timesteps} steps per sample; drop "
                           "--steps (it is for graphs of other tools)")
        steps = graph.timesteps if graph.is_n2c else (args.steps or 1)
        x = np.broadcast_to(data.x, (steps, *data.x.shape))  # direct encoding: the frame at every step
    scale = args.input_scale or graph.input.input_scale
    if precision == "int" and scale is None and not args.input:
        scale = data.input_scale
    if world.distributed:  # this process's contiguous share of the samples (shape errors first, in one line)
        from backends.float.simulate import check_input

        shard = world.shard(check_input(graph, x).shape[1])
        x = x[:, shard]
        labels = labels[shard] if labels is not None else None
    if args.record and world.distributed:
        raise N2CError("--record keeps every step of every sample; run it without torchrun")
    run = run_arrays(graph, x, precision, disc, scale, backend=args.backend,
                     progress=not args.json and world.main, timing=args.timing, trace=tuple(args.record))
    output, seconds, predictions, spikes, overflows = _join(world, run)
    if labels is not None:
        correct = world.sum(float((run.predictions == labels).sum()))
    if not world.main:
        return 0
    _report_overflows(overflows or {}, args.strict)
    silence = silence_warnings(spikes if spikes is not None else run.firing, output.sum(axis=0),
                               foreign=not graph.is_n2c)
    for line in silence:
        warnings.warn(line)
    if args.save_output:
        save_array(output, args.save_output)
    if args.save_record:
        save_arrays({f"{name}.{key}": value for name, values in run.traces.items() for key, value in values.items()},
                    args.save_record)
    n = len(predictions)
    result = {"backend": args.backend, "precision": precision, "graph": args.graph, "input": source,
              "samples": n, "timesteps": int(x.shape[0]),
              "predictions": predictions.tolist(), "samples_per_second": n / seconds if seconds > 0 else float("inf"),
              "spikes_per_layer": spikes, "overflows": overflows, "warnings": silence}
    if precision == "float" and not graph.is_n2c:
        result["discretization"] = {"name": disc.name, "dt": disc.dt}
    lava = run.lava_timing
    if lava:  # Lava's compile (compiler + runtime start) apart from its steps
        result["lava"] = {"compile_s": lava["compile_s"], "run_s": lava["run_s"], "steps": lava["steps"],
                          "steps_per_second": lava["steps"] / lava["run_s"] if lava["run_s"] > 0 else float("inf"),
                          "samples_per_second_running": n / lava["run_s"] if lava["run_s"] > 0 else float("inf")}
    result["output_shape"] = list(output.shape)
    if labels is not None:
        result["dataset"] = data_name
        result["accuracy"] = correct / n
    if args.save_output:
        result["saved_output"] = args.save_output
    if args.save_record:
        result["saved_record"] = args.save_record
    if args.json:
        print(json.dumps(result))
        return 0
    what = f"accuracy {100 * result['accuracy']:.2f} % on {n} {data_name} samples" if labels is not None \
        else f"{n} samples from {source}, T = {result['timesteps']}"
    if lava:
        speed = (f"Lava compile {lava['compile_s']:.1f} s, run {lava['run_s']:.1f} s: "
                 f"{result['lava']['steps_per_second']:.0f} steps/s, "
                 f"{result['lava']['samples_per_second_running']:.1f} samples/s; "
                 f"{result['samples_per_second']:.1f} samples/s in all")
    else:
        speed = f"{result['samples_per_second']:.1f} samples/s"
    print(f"{args.backend} ({precision}): {what} ({speed})")
    if args.save_output:
        print(f"wrote {args.save_output}: output at every step, shape {tuple(output.shape)} (time, batch, ...)")
    if spikes:
        print("unit spikes per layer (total over samples):")
        for name, count in spikes.items():
            print(f"  {name:<24} {count}")
    return 0


def _join(world, run):
    """The whole run from every process's shard: outputs and predictions in sample order, spike
    and overflow counts summed; the time is the slowest process's."""
    import numpy as np

    from backends.reference.synapses import merge_overflows

    if not world.distributed:
        return run.output, run.seconds, run.predictions, run.spikes, run.overflows
    parts = world.gather_objects((run.output, run.seconds, run.spikes, run.overflows))
    output = np.concatenate([p[0] for p in parts], axis=1)
    spikes = None if parts[0][2] is None else {k: sum(p[2][k] for p in parts) for k in parts[0][2]}
    overflows = merge_overflows([p[3] for p in parts if p[3]]) if parts[0][3] is not None else None
    total = output.sum(axis=0)
    return output, max(p[1] for p in parts), total.reshape(len(total), -1).argmax(axis=1), spikes, overflows


def _report_overflows(overflows: dict, strict: bool) -> None:
    """Values past Loihi's limits: a warning per layer, or with --strict an error."""
    import warnings

    lines = [f"layer '{name}': {entry['count']} values exceeded Loihi's {entry['limit']}"
             for name, entry in overflows.items()]
    if strict and lines:
        raise N2CError(f"{lines[0]}{f' (and {len(lines) - 1} more layers)' if len(lines) > 1 else ''}; "
                       "the chip would not compute this network as simulated (drop --strict to run anyway)")
    for line in lines:
        warnings.warn(line)
