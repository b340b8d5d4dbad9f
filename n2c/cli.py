"""Command line: ``n2c export | simulate | report | demo``.

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


def cmd_export(args) -> int:
    from n2c.data import load_dataset
    from n2c.ingest import load_model
    from n2c.pipeline import export_model

    model = load_model(args.model, arch=args.arch, trust_pickle=args.trust_pickle)
    calib = load_dataset(args.calib, "train") if args.calib else None
    data = calib or (load_dataset(args.dataset, "test") if args.dataset else None)
    shape = args.input_shape or (tuple(data.x.shape[1:]) if data is not None else None)
    if shape is None:
        raise N2CError("the input shape is unknown; pass --input-shape C,H,W or --dataset NAME")
    scale = args.input_scale or (data.input_scale if data is not None else None)
    snn = export_model(model, args.output, shape, scale, args.timesteps, args.levels, calib, args.calib_mode)
    neurons = len(snn.neurons())
    print(f"wrote {args.output}: {neurons} spiking layers, T = {args.timesteps}, input {shape}")
    return 0


def _load_for_run(args):
    """Data, layer graph and integer network. Input scale: --input-scale, else the graph's,
    else the data set's."""
    from n2c.backends.ir import import_nir
    from n2c.backends.quantize import quantize
    from n2c.data import load_dataset

    data = load_dataset(args.dataset, args.split).head(args.samples)
    graph = import_nir(args.graph)
    scale = args.input_scale or graph.input.input_scale or data.input_scale
    return data, graph, quantize(graph, scale)


def _spikes_per_layer(net, messages) -> dict:
    from n2c.backends.quantize import IntNeuron
    return {layer.name: int(messages[layer.name].sum()) for layer in net.layers
            if isinstance(layer, IntNeuron) and layer.kind == "mtn"}


def cmd_simulate(args) -> int:
    from n2c.pipeline import run_backend

    data, _, net = _load_for_run(args)
    run = run_backend(net, data.x, args.backend, progress=not args.json, record_spikes=True)
    accuracy = float((run.predictions == data.y).mean())
    result = {"backend": args.backend, "graph": args.graph, "dataset": data.name, "samples": len(data),
              "timesteps": net.timesteps, "accuracy": accuracy, "predictions": run.predictions.tolist(),
              "samples_per_second": len(data) / run.seconds if run.seconds > 0 else float("inf"),
              "spikes_per_layer": _spikes_per_layer(net, run.messages) if run.messages else None}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.backend}: accuracy {100 * accuracy:.2f} % on {len(data)} {data.name} samples "
          f"({result['samples_per_second']:.1f} samples/s)")
    if result["spikes_per_layer"]:
        print("unit spikes per layer (total over samples):")
        for name, count in result["spikes_per_layer"].items():
            print(f"  {name:<24} {count}")
    return 0


def cmd_report(args) -> int:
    from n2c.backends.report import build_report, write_report
    from n2c.backends.reference import simulate

    data, _, net = _load_for_run(args)
    report = build_report(net, simulate(net, data.x), args.hardware, data.y, data.name)
    for path in write_report(report, args.output):
        print(f"wrote {path}")
    e = report["energy_per_inference_J"]
    print(f"{report['hardware']['name']}: {e['total'] * 1e9:.2f} nJ per inference (estimate), "
          f"ANN baseline {report['ann_energy_per_inference_J'] * 1e9:.2f} nJ")
    return 0


def cmd_demo(args) -> int:
    from n2c.demo import run_demo
    run_demo(args.output, lava_samples=args.samples)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="n2c", description="Trained PyTorch CNN → one-timestep spiking network → "
                                "NIR → Lava (Loihi fixed point), with resource and energy reports.")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("export", help="convert a trained model and write it as NIR",
                       description="Convert a trained model into a spiking network and write it as a NIR file.")
    e.add_argument("model", help="TorchScript file, torch.export .pt2 file, state_dict (with --arch), "
                   "or pickled nn.Module (with --trust-pickle)")
    e.add_argument("--to", choices=["nir"], default="nir", help="output format (default: nir)")
    e.add_argument("-o", "--output", required=True, help="output file, e.g. model.nir")
    e.add_argument("--arch", help="package.module:ClassName of a state_dict's model, optionally with "
                   "keyword arguments: 'n2c.models:DigitsCNN(levels=8)'")
    e.add_argument("--trust-pickle", action="store_true",
                   help="allow loading a whole pickled nn.Module (runs code from the file: only for trusted files)")
    e.add_argument("--timesteps", type=_positive_int, default=1, help="timesteps T of the SNN (default: 1)")
    e.add_argument("--levels", type=_positive_int, help="quantization levels L for calibrated ReLU activations")
    e.add_argument("--calib", metavar="DATASET", help="calibrate the thresholds of plain ReLU activations "
                   "on this data set's training split (digits, fashion-mnist, or an .npz file)")
    e.add_argument("--calib-mode", choices=["max", "percentile"], default="max",
                   help="threshold = maximum or 99.9th percentile of each activation (default: max)")
    e.add_argument("--dataset", help="data set the model was trained on (gives input shape and scale)")
    e.add_argument("--input-shape", type=_shape, help="input shape C,H,W without batch, e.g. 1,8,8")
    e.add_argument("--input-scale", type=_positive_float,
                   help="real value of one integer input step (e.g. 0.0625 for digits' 0..16 pixels)")
    e.set_defaults(func=cmd_export)

    def data_args(q):
        q.add_argument("graph", help="NIR file written by n2c export")
        q.add_argument("--dataset", default="digits", help="digits (default), fashion-mnist, or an .npz file")
        q.add_argument("--split", choices=["train", "test"], default="test", help="data split (default: test)")
        q.add_argument("--samples", type=_positive_int, help="use only the first N samples")
        q.add_argument("--input-scale", type=_positive_float, help="override the graph's input scale")

    s = sub.add_parser("simulate", help="run a NIR graph on a backend and measure accuracy",
                       description="Run a NIR graph with Loihi integer arithmetic on a data set.")
    data_args(s)
    s.add_argument("--backend", choices=["reference", "lava"], default="reference",
                   help="reference integer simulator (fast) or Lava's fixed-point CPU simulation")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    s.set_defaults(func=cmd_simulate)

    r = sub.add_parser("report", help="resource and energy report for a NIR graph",
                       description="Per-layer resources, measured activity and an energy estimate.")
    data_args(r)
    r.add_argument("--hardware", choices=["loihi1", "loihi2"], default="loihi2", help="target chip (default: loihi2)")
    r.add_argument("-o", "--output", required=True, help="directory for report.json and report.md")
    r.set_defaults(func=cmd_report)

    d = sub.add_parser("demo", help="the built-in end-to-end run on digits",
                       description="Train a small QCFS CNN on digits, convert it to a one-step SNN, export NIR, "
                       "run it on the reference simulator and on Lava, and write a report.")
    d.add_argument("-o", "--output", default="out", help="output directory (default: out)")
    d.add_argument("--samples", type=_positive_int, help="run Lava on only the first N test samples (default: all)")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
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
