"""Command line: ``n2c export | convert | train | simulate | inspect | report | demo``.

Errors a user can cause print one line ``n2c: error: ...`` and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from n2c.errors import N2CError


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape; write it as C,H,W, e.g. 1,8,8") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape; write it as C,H,W, e.g. 1,8,8")
    return shape


def _positive(cast, what: str):
    """argparse type: ``cast(text)`` that must be > 0."""
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {what}, got {text!r}")
        return value
    return parse


_positive_int = _positive(int, "integer")
_positive_float = _positive(float, "number")


def _convert_from_args(args, model):
    """Convert ``model`` with the conversion options of ``export`` / ``convert``."""
    from n2c.snn.convert import convert
    from n2c.data import load_dataset

    calib = load_dataset(args.calib, "train").head(args.calib_samples) if args.calib else None
    return convert(model, args.method, args.timesteps, calib=calib, levels=args.levels,
                   calib_mode=args.calib_mode, percentile=args.percentile, maxpool=args.maxpool,
                   v_init=args.v_init, sfn_scale=args.sfn_scale, da=args.da)


def _load_model_or_snn(args):
    """A saved SNN (from n2c convert) as it is, or a model file converted with the options."""
    from n2c.ingest import load_model
    from n2c.snn.io import is_snn_file, load_snn

    if is_snn_file(args.model):
        return load_snn(args.model)
    return _convert_from_args(args, load_model(args.model, arch=args.arch, trust_pickle=args.trust_pickle))


def _export_netx(args) -> int:
    """``n2c export GRAPH.nir --to netx``: a NIR graph of IF/LIF/CubaLIF layers as a lava-dl netx
    HDF5 file (``backends.lava.netx``, docs/netx.md)."""
    import os

    import h5py

    from backends.lava.netx import RESET_OFFSET, export_netx
    from backends.nir.to_layers import import_nir

    for flag, given in (("--portable", args.portable), ("--nested", args.nested), ("--dataset", args.dataset),
                        ("--input-shape", args.input_shape)):
        if given:
            raise N2CError(f"{flag} does not apply to --to netx, which writes an existing NIR graph; drop it")
    if os.path.isfile(args.model) and not h5py.is_hdf5(args.model):
        raise N2CError(f"{args.model} is not a NIR file; --to netx reads a NIR graph (write one with "
                       "n2c export MODEL -o model.nir, or take another tool's)")
    _writable_output(args.output)
    model = export_netx(import_nir(args.model, isolate=True), args.output, args.input_scale, args.dt)
    readout = {"spikes": f"the last layer's spikes (n2c readout = {model.readout_weight} x spike count)",
               "potential-sum": f"the last layer's v (n2c readout = {model.readout_weight} x sum of v over the "
                                "sample)",
               "potential": "the last layer's v (n2c readout = v / 64 at the sample's last step)"}[model.readout]
    print(f"wrote {args.output}: lava-dl netx, {len(model.blocks)} layers "
          f"({', '.join(layer.type for layer in model.blocks)}), output {readout}; load it with "
          f"netx.hdf5.Network(net_config='{args.output}', reset_interval=T, reset_offset={RESET_OFFSET}, "
          f"input_message_bits={model.input_message_bits}) (T: steps per sample)")
    return 0


def cmd_export(args) -> int:
    from n2c.data import load_dataset
    from n2c.cli.pipeline import export_model

    if args.to == "netx":
        return _export_netx(args)
    if args.dt:
        raise N2CError("--dt applies to --to netx only (the time step of a NIR graph's neurons); drop it")
    snn = _load_model_or_snn(args)
    data = load_dataset(args.dataset, "test") if args.dataset else None
    shape = args.input_shape or (tuple(data.x.shape[1:]) if data is not None else None)
    if shape is None and args.calib:
        shape = tuple(load_dataset(args.calib, "train").x.shape[1:])
    if shape is None:
        raise N2CError("the input shape is unknown; pass --input-shape C,H,W or --dataset NAME")
    scale = args.input_scale or (data.input_scale if data is not None else None)
    if args.portable and args.nested:
        raise N2CError("--portable writes a flat graph; drop --nested")
    export_model(snn, args.output, shape, scale, portable=args.portable, nested=args.nested)
    form = "portable standard NIR (LIF populations, T = 1)" if args.portable else "n2c NIR"
    print(f"wrote {args.output}: {form}, {len(snn.neurons())} spiking layers, method {snn.method}, "
          f"T = {snn.timesteps}, input {shape}")
    return 0


def cmd_convert(args) -> int:
    from n2c.data import load_dataset
    from n2c.ingest import load_model
    from n2c.snn.io import save_snn
    from n2c.ann.train import accuracy, predict

    _writable_output(args.output)
    model = load_model(args.model, arch=args.arch, trust_pickle=args.trust_pickle)
    snn = _convert_from_args(args, model)
    if args.dataset:
        test = load_dataset(args.dataset, "test").head(args.samples)
        batch = max(8, 4096 // snn.timesteps)
        ann = accuracy(predict(model, test.x), test.y)
        acc = accuracy(predict(snn, test.x, batch_size=batch), test.y)
        print(f"accuracy on {len(test)} {test.name} test samples: ANN {100 * ann:.2f} %, "
              f"SNN ({args.method}, T = {snn.timesteps}, torch float) {100 * acc:.2f} %")
    save_snn(snn, args.output)
    print(f"wrote {args.output}: {len(snn.neurons())} spiking layers, method {args.method}, T = {snn.timesteps}; "
          f"export it with: n2c export {args.output} -o model.nir --dataset {args.dataset or 'NAME'}")
    return 0


def _spikes_per_layer(net, messages) -> dict:
    """Unit spikes per spiking layer: |count| summed (a negative spike is a spike too)."""
    import numpy as np

    from backends.quantize import IntNeuron
    return {layer.name: int(np.abs(messages[layer.name]).sum()) for layer in net.layers
            if isinstance(layer, IntNeuron) and layer.spiking}


def load_input_array(path: str):
    """An .npy array, read without unpickling (object arrays are refused)."""
    import os

    import numpy as np

    if not os.path.isfile(path):
        raise N2CError(f"input file {path} does not exist")
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise N2CError(f"{path} is not a .npy array; save your input with np.save")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):
            raise N2CError(f"{path} holds Python objects (a pickle); save a numeric array with np.save") from None
        raise N2CError(f"{path} is not a readable .npy array ({str(e).splitlines()[0][:120]}); "
                       "save it with np.save") from None
    except OSError as e:
        raise N2CError(f"{path} is not a readable .npy array ({e.__class__.__name__}); save it with np.save") from None


def save_array(array, path: str) -> None:
    """np.save, atomically: a failed write leaves nothing behind."""
    import numpy as np

    from n2c.files import atomic_write

    _writable_output(path)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to the name
            np.save(f, array)
    atomic_write(path, write)


def cmd_simulate(args) -> int:
    import numpy as np

    from backends.float.dynamics import discretization
    from backends.nir.to_layers import import_nir
    from n2c.data import load_dataset
    from n2c.cli.pipeline import run_arrays

    if args.input and args.dataset:
        raise N2CError("give either --input X.npy or --dataset NAME, not both")
    if args.save_output:
        _writable_output(args.save_output)
    graph = import_nir(args.graph, isolate=True)
    stated_dt = graph.metadata.get("n2c.dt") if args.dynamics == "nir" else None  # the graph's own time step
    disc = discretization(args.dynamics, args.dt or stated_dt)
    precision = args.precision or ("int" if graph.is_n2c else "float")
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
    run = run_arrays(graph, x, precision, disc, scale, backend=args.backend, progress=not args.json,
                     timing=args.timing)
    output, seconds, predictions = run.output, run.seconds, run.predictions
    spikes = _spikes_per_layer(run.net, run.messages) if run.net is not None else None
    _report_overflows(run.overflows or {}, args.strict)
    if args.save_output:
        save_array(output, args.save_output)
    n = len(predictions)
    result = {"backend": args.backend, "precision": precision, "graph": args.graph, "input": source,
              "samples": n, "timesteps": int(x.shape[0]),
              "predictions": predictions.tolist(), "samples_per_second": n / seconds if seconds > 0 else float("inf"),
              "spikes_per_layer": spikes, "overflows": run.overflows}
    if precision == "float" and not graph.is_n2c:
        result["discretization"] = {"name": disc.name, "dt": disc.dt}
    result["output_shape"] = list(output.shape)
    if labels is not None:
        result["dataset"] = data_name
        result["accuracy"] = float((predictions == labels).mean())
    if args.save_output:
        result["saved_output"] = args.save_output
    if args.json:
        print(json.dumps(result))
        return 0
    what = f"accuracy {100 * result['accuracy']:.2f} % on {n} {data_name} samples" if labels is not None \
        else f"{n} samples from {source}, T = {result['timesteps']}"
    print(f"{args.backend} ({precision}): {what} ({result['samples_per_second']:.1f} samples/s)")
    if args.save_output:
        print(f"wrote {args.save_output}: output at every step, shape {tuple(output.shape)} (time, batch, ...)")
    if spikes:
        print("unit spikes per layer (total over samples):")
        for name, count in spikes.items():
            print(f"  {name:<24} {count}")
    return 0


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


def cmd_inspect(args) -> int:
    from backends.nir.inspect import describe
    print(describe(args.graph, as_json=args.json, isolate=True))
    return 0


def cmd_report(args) -> int:
    import os

    from backends.hardware.spec import load_chip
    from backends.report.build import summary_row, unfit_row
    from backends.report.render import write_report
    from n2c.data import load_dataset
    from n2c.errors import MappingError
    from n2c.cli.pipeline import report_network

    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise N2CError(f"output {args.output} is a file; -o names a directory for report.json, report.md and "
                       "report.html")
    chip = load_chip(args.hardware)
    for path in args.graphs:
        if not os.path.isfile(path):
            raise N2CError(f"graph {path} does not exist")
    _check_same_network(args.graphs)
    data = load_dataset(args.dataset or "digits", args.split).head(args.samples)

    def run(path: str) -> dict:
        return report_network(path, chip, data, args.split, args.simulator, args.input_scale,
                              progress=sys.stderr.isatty())

    report = run(args.graphs[0])  # first: a primary graph that does not fit fails before the others run
    rows = []
    for path in args.graphs[1:]:  # the same model at other T: one summary row each
        try:
            rows.append(summary_row(run(path)))
        except MappingError as e:
            from backends.nir.to_layers import import_nir
            meta = import_nir(path).metadata
            rows.append(unfit_row(path, str(meta.get("n2c.method", "nir")), int(meta.get("n2c.timesteps", 1)), str(e)))
    if rows:
        report["across_T"] = sorted([summary_row(report), *rows], key=lambda r: (r["timesteps"], r["method"]))
    for path in write_report(report, args.output):
        print(f"wrote {path}")
    e, m, lat = report["energy"], report["mapping"], report["latency"]
    acc = f", accuracy {100 * report['accuracy']:.2f} %" if report["accuracy"] is not None else ""
    print(f"{chip.name}: {m['cores']} cores on {m['chips']} chip(s) (lower bound {m['lower_bound']}); "
          f"{e['total'] * 1e9:.2f} nJ per inference ({e['dynamic'] * 1e9:.2f} nJ dynamic), "
          f"{lat['inference_s'] * 1e6:.2f} us per inference{acc}; ANN at 45 nm {report['ann']['energy_J'] * 1e9:.2f} nJ")
    return 0


def _check_same_network(graphs: list[str]) -> None:
    """Across-T rows must come from one model: the same layers (names, shapes) in every graph."""
    from backends.nir.to_layers import import_nir

    def layers(path):
        return [(layer.name, tuple(layer.out_shape)) for layer in import_nir(path).layers]
    first = layers(graphs[0])
    for path in graphs[1:]:
        if layers(path) != first:
            raise N2CError(f"{path} is not the same network as {graphs[0]} (its layers differ); give one model "
                           "exported at several T to compare across T")


def cmd_demo(args) -> int:
    from n2c.cli.demo import run_demo
    run_demo(args.output, lava_samples=args.samples)
    return 0


def _writable_output(path: str) -> None:
    """Fail before training, not after, when the checkpoint cannot be written."""
    import os

    full = os.path.abspath(path)
    directory = os.path.dirname(full)
    if os.path.isdir(full):
        raise N2CError(f"output {path} is a directory; pass a file name, e.g. -o {os.path.join(path, 'model.pt')}")
    if not os.path.isdir(directory):
        raise N2CError(f"output directory {directory} does not exist; create it or choose another -o path")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise N2CError(f"output directory {directory} is not writable; choose another -o path")


def cmd_train(args) -> int:
    import torch

    from n2c.data import load_dataset
    from n2c.ingest import instantiate_arch, load_model
    from n2c.models import MODEL_NAMES, build_model
    from n2c.ann.train import accuracy, fine_tune, predict, save_checkpoint

    for flag, value, ok, example in [("--levels", args.levels, args.levels >= 1, "--levels 8"),
                                     ("--epochs", args.epochs, args.epochs is None or args.epochs >= 1, "--epochs 5"),
                                     ("--batch-size", args.batch_size, args.batch_size >= 1, "--batch-size 64"),
                                     ("--lr", args.lr, args.lr is None or args.lr > 0, "--lr 0.001"),
                                     ("--width", args.width, args.width is None or args.width >= 1, "--width 16"),
                                     ("--samples", args.samples, args.samples is None or args.samples >= 1,
                                      "--samples 1000")]:
        if not ok:
            raise N2CError(f"{flag} must be positive, got {value}; pass e.g. {example}")
    if args.model_name is not None and args.model_name not in MODEL_NAMES:
        raise N2CError(f"unknown model name {args.model_name!r}; use one of {', '.join(MODEL_NAMES)} "
                       "(or --arch package.module:ClassName for your own)")
    if args.model_name and (args.model or args.arch):
        raise N2CError("--model-name builds a new reference network; drop it to fine-tune MODEL or train --arch")
    if not (args.model or args.model_name or args.arch):
        raise N2CError("nothing to train; pass MODEL (a trained model file), --model-name "
                       f"{'|'.join(MODEL_NAMES)}, or --arch package.module:ClassName")
    _writable_output(args.output)

    train_set = load_dataset(args.dataset, "train").head(args.samples)
    test_set = load_dataset(args.dataset, "test")
    shape = tuple(train_set.x.shape[1:])
    from_scratch = args.from_scratch or not args.model
    torch.manual_seed(args.seed)
    if args.model:
        model = load_model(args.model, arch=args.arch, trust_pickle=args.trust_pickle)
        if args.from_scratch:
            for m in model.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
    elif args.arch:
        model = instantiate_arch(args.arch)
    else:
        model = build_model(args.model_name, shape, train_set.num_classes, act=args.quantizer,
                            levels=args.levels, width=args.width)
    try:
        with torch.no_grad():
            out = model.eval()(torch.from_numpy(train_set.x[:2]))
    except Exception as e:
        raise N2CError(f"the model does not accept {train_set.name} samples of shape {shape} "
                       f"({' '.join(str(e).split())[:160]}); train on the data set it was built for") from None
    if out.dim() != 2 or out.shape[1] < train_set.num_classes:
        raise N2CError(f"the model outputs shape {tuple(out.shape[1:])} per sample but {train_set.name} has "
                       f"{train_set.num_classes} classes; use a model with one output per class")

    epochs = args.epochs or (20 if from_scratch else 5)
    lr = args.lr or (1e-2 if from_scratch else 1e-3)
    print(f"{'training' if from_scratch else 'fine-tuning'} on {len(train_set)} {train_set.name} samples: "
          f"{args.quantizer} L = {args.levels}, {epochs} epochs, lr {lr:g}, batch {args.batch_size}",
          file=sys.stderr)
    model = fine_tune(model, train_set, levels=args.levels, quantizer=args.quantizer, epochs=epochs, lr=lr,
                      batch_size=args.batch_size, seed=args.seed, val_data=test_set, optimizer=args.optimizer)
    train_acc = accuracy(predict(model, train_set.x), train_set.y)
    test_acc = accuracy(predict(model, test_set.x), test_set.y)
    save_checkpoint(model, args.output, shape)
    print(f"train accuracy {100 * train_acc:.2f} %, test accuracy {100 * test_acc:.2f} % "
          f"({train_set.name}, {args.quantizer} L = {args.levels})")
    hint = f"n2c export {args.output} -o model.nir --dataset {args.dataset}"
    if args.quantizer == "signed":
        hint += " --method pmsm"  # signed quantizers need negative spikes
    print(f"wrote {args.output} (TorchScript); convert it with: {hint}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="n2c", description="Trained PyTorch CNN → one-timestep spiking network → "
                                "NIR → Lava (Loihi fixed point), with resource and energy reports.")
    sub = p.add_subparsers(dest="command", required=True)

    def conversion_args(q):
        from n2c.snn.convert import CALIBRATION_MODES, MAXPOOL_MODES, METHODS
        q.add_argument("--arch", help="package.module:ClassName of a state_dict's model, optionally with "
                       "keyword arguments: 'n2c.models:DigitsCNN(levels=8)'")
        q.add_argument("--trust-pickle", action="store_true",
                       help="allow loading a whole pickled nn.Module (runs code from the file: only for trusted files)")
        q.add_argument("--method", choices=METHODS, default="mtn",
                       help="neurons: if (one spike per step), mtn (multi-threshold, exact at T=1), pmsm (polarity, "
                       "signed quantizers), sfn (scale-and-fire, thresholds from data), parallel (parallel "
                       "neuron, exact for L=T) (default: mtn)")
        q.add_argument("--timesteps", type=_positive_int, default=1, help="timesteps T of the SNN (default: 1)")
        q.add_argument("--levels", type=_positive_int, help="quantization levels L for calibrated ReLU activations "
                       "(default for if/parallel: T)")
        q.add_argument("--calib", metavar="DATASET", help="calibration data: its training split (digits, "
                       "fashion-mnist, or an .npz file); needed for ReLU models, sfn and DA-QCFS")
        q.add_argument("--calib-samples", type=_positive_int, default=4096,
                       help="use the first N calibration samples (default: 4096)")
        q.add_argument("--calib-mode", choices=CALIBRATION_MODES,
                       help="ReLU thresholds: max, percentile, or per channel (default: channel-max for parallel, "
                       "max otherwise)")
        q.add_argument("--percentile", type=_positive_float, default=99.9,
                       help="percentile of the percentile modes (default: 99.9)")
        q.add_argument("--maxpool", choices=MAXPOOL_MODES, default="error",
                       help="MaxPool after a spiking layer: error (default) or avg (replace by AvgPool2d, warn)")
        q.add_argument("--v-init", type=float, default=0.5,
                       help="initial membrane potential as a fraction of θ (default: 0.5, the optimal one)")
        q.add_argument("--sfn-scale", type=_positive_float, default=1.0,
                       help="sfn: scale factor of the thresholds (default: 1, nearest level)")
        q.add_argument("--da", action=argparse.BooleanOptionalAction, default=None,
                       help="parallel: DA-QCFS calibration (default: on for ReLU models, off for QCFS models)")

    e = sub.add_parser("export", help="convert a trained model (or take a converted SNN) and write it as NIR; "
                       "or write a NIR graph as a lava-dl netx file",
                       description="Convert a trained model into a spiking network, or take an SNN saved by "
                       "n2c convert, and write it as a NIR file. With --to netx, write a NIR graph of IF/LIF/CubaLIF "
                       "layers as a lava-dl netx HDF5 file for Loihi 2 (docs/netx.md).")
    e.add_argument("model", help="TorchScript file, torch.export .pt2 file, state_dict (with --arch), "
                   "pickled nn.Module (with --trust-pickle), or an SNN file written by n2c convert; with "
                   "--to netx a NIR file")
    e.add_argument("--to", choices=["nir", "netx"], default="nir", help="output format: nir (default), or netx: "
                   "a NIR graph of IF/LIF/CubaLIF layers as a lava-dl netx HDF5 file for Loihi 2 (docs/netx.md)")
    e.add_argument("--dt", type=_positive_float, help="--to netx: time step of NIR's neurons (default: the "
                   "graph's n2c.dt, else 1e-3)")
    e.add_argument("-o", "--output", required=True, help="output file, e.g. model.nir")
    conversion_args(e)
    e.add_argument("--dataset", help="data set the model was trained on (gives input shape and scale)")
    e.add_argument("--input-shape", type=_shape, help="input shape C,H,W without batch, e.g. 1,8,8")
    e.add_argument("--input-scale", type=_positive_float,
                   help="real value of one integer input step (e.g. 0.0625 for digits' 0..16 pixels)")
    e.add_argument("--nested", action="store_true", help="write each top-level submodule of the model "
                   "(e.g. a residual block) as a nested NIR graph")
    e.add_argument("--portable", action="store_true", help="standard NIR only (T = 1, mtn/pmsm): every "
                   "multi-level neuron as binary LIF neurons with staggered thresholds, runnable in any NIR tool")
    e.set_defaults(func=cmd_export)

    c = sub.add_parser("convert", help="convert a trained model into a spiking network (saved as TorchScript)",
                       description="Convert a trained model with one of the methods and save the SNN as a "
                       "TorchScript file: torch.jit.load(file)(x) runs it, n2c export writes it as NIR.")
    c.add_argument("model", help="TorchScript file, torch.export .pt2 file, state_dict (with --arch), "
                   "or pickled nn.Module (with --trust-pickle)")
    c.add_argument("-o", "--output", required=True, help="output file, e.g. snn.pt")
    conversion_args(c)
    c.add_argument("--dataset", help="report ANN and SNN accuracy on this data set's test split")
    c.add_argument("--samples", type=_positive_int, help="evaluate on the first N test samples only")
    c.set_defaults(func=cmd_convert)

    def data_args(q):
        q.add_argument("graph", help="NIR file (written by n2c export or by another tool)")
        q.add_argument("--dataset", help="digits (default), fashion-mnist, or an .npz file")
        q.add_argument("--split", choices=["train", "test"], default="test", help="data split (default: test)")
        q.add_argument("--samples", type=_positive_int, help="use only the first N samples")
        q.add_argument("--input-scale", type=_positive_float, help="override the graph's input scale")

    s = sub.add_parser("simulate", help="run a NIR graph on a data set or on your own input array",
                       description="Run a NIR graph (n2c's or another tool's) on a data set, or on an input array "
                       "of shape (T, B, *input_shape) saved with np.save.")
    data_args(s)
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
                   "Euler, default), snntorch, norse (the tools' own schemes; see docs/nir-conventions.md)")
    s.add_argument("--dt", type=_positive_float, help="time step in the graph's time unit (default: the "
                   "--dynamics scheme's)")
    s.add_argument("--steps", type=_positive_int,
                   help="steps per sample for --dataset on graphs from other tools (default: 1; n2c graphs "
                   "carry their own T)")
    s.add_argument("--timing", choices=["zero-delay", "lava"], default="zero-delay",
                   help="integer reference runs: zero-delay (each layer sees step t at step t; default) or lava "
                   "(a step of delay per synapse, samples streamed back to back, as Lava runs them)")
    s.add_argument("--strict", action="store_true", help="integer runs: fail (exit 2) when a value exceeds "
                   "Loihi's limits (16-bit accumulator, 24-bit state) instead of warning")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    s.set_defaults(func=cmd_simulate)

    r = sub.add_parser("report", help="map a NIR graph on a chip: cores, energy, latency, EDP (json, md, html)",
                       description="Map a NIR graph onto a chip's cores, run real data through it, and write "
                       "report.json, report.md and report.html: per-layer and per-core resources, spikes, synaptic "
                       "ops, energy by component with every constant's source, latency, EDP, the 45 nm ANN "
                       "comparison and, with several graphs of one model at different T, the comparison across T.")
    r.add_argument("graphs", nargs="+", metavar="GRAPH", help="NIR file; more files (the same model exported at "
                   "other T or methods) add the across-T comparison")
    r.add_argument("--dataset", help="digits (default), fashion-mnist, or an .npz file")
    r.add_argument("--split", choices=["train", "test"], default="test", help="data split (default: test)")
    r.add_argument("--samples", type=_positive_int, help="use only the first N samples")
    r.add_argument("--input-scale", type=_positive_float, help="override the graph's input scale")
    r.add_argument("--hardware", default="loihi2", help="loihi1, loihi2 (default) or your chip spec file (.json, "
                   "format in docs/hardware-model.md)")
    r.add_argument("--simulator", choices=["reference", "lava"], default="reference",
                   help="where the activity is measured: reference simulator (default) or Lava (slow)")
    r.add_argument("-o", "--output", required=True, help="directory for report.json, report.md and report.html")
    r.set_defaults(func=cmd_report)

    i = sub.add_parser("inspect", help="print a NIR graph as a table: nodes, shapes, parameters, backends",
                       description="Print a NIR graph's nodes, types, shapes, parameter summary, n2c metadata, "
                       "and which backend can run it.")
    i.add_argument("graph", help="NIR file")
    i.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    i.set_defaults(func=cmd_inspect)

    d = sub.add_parser("demo", help="the built-in end-to-end run on digits",
                       description="Train a small QCFS CNN on digits, convert it to a one-step SNN, export NIR, "
                       "run it on the reference simulator and on Lava, and write a report.")
    d.add_argument("-o", "--output", default="out", help="output directory (default: out)")
    d.add_argument("--samples", type=_positive_int, help="run Lava on only the first N test samples (default: all)")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="train or fine-tune a network with quantized (QCFS) activations",
                       description="Fine-tune a trained ReLU model into a QCFS model that converts to a one-step "
                       "SNN without loss, or train a reference network (--model-name) from scratch. Writes a "
                       "TorchScript file that n2c export reads.")
    t.add_argument("model", nargs="?", help="a trained model file to fine-tune (TorchScript, .pt2, state_dict "
                   "with --arch, or pickled nn.Module with --trust-pickle)")
    t.add_argument("--arch", help="package.module:ClassName(k=v) of MODEL's state_dict, or without MODEL a "
                   "class to train from scratch")
    t.add_argument("--model-name", help="train a reference network from scratch: digits-cnn, vgg or resnet")
    t.add_argument("--dataset", required=True, help="digits, fashion-mnist, or an .npz file with x (N,C,H,W), y")
    t.add_argument("--levels", type=int, default=8, help="quantization levels L of the activations replacing "
                   "ReLU (default: 8; quantizers already in MODEL keep theirs)")
    t.add_argument("--quantizer", "--act", dest="quantizer", choices=["qcfs", "signed"], default="qcfs",
                   help="activation replacing ReLU: qcfs (0..L levels) or signed (-L..L) (default: qcfs)")
    t.add_argument("--epochs", type=int, help="training epochs (default: 5 fine-tuning, 20 from scratch)")
    t.add_argument("--lr", type=float, help="peak learning rate, cosine decay (default: 1e-3 fine-tuning, "
                   "1e-2 from scratch)")
    t.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    t.add_argument("--optimizer", choices=["adam", "sgd"], default="adam", help="optimizer (default: adam)")
    t.add_argument("--width", type=int, help="base channels of --model-name (default: 16)")
    t.add_argument("--samples", type=int, help="train on only the first N training samples")
    t.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    t.add_argument("--from-scratch", action="store_true",
                   help="re-initialise MODEL's weights and train from scratch (implied without MODEL)")
    t.add_argument("-o", "--output", required=True, help="output TorchScript file, e.g. model_qcfs.pt")
    t.add_argument("--trust-pickle", action="store_true",
                   help="allow loading a whole pickled nn.Module (runs code from the file: only for trusted files)")
    t.set_defaults(func=cmd_train)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """n2c's own warnings as one line each, without source context."""
    if category is UserWarning:
        print(f"n2c: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            warnings.simplefilter("default")
            warnings.simplefilter("ignore", ImportWarning)  # lava-dl's optional-pandas notice
            return args.func(args)
    except N2CError as e:
        print(f"n2c: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("n2c: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
