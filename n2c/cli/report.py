"""``n2c report``: a NIR graph mapped on a chip, with activity measured on real data, energy and latency."""

from __future__ import annotations

import sys

from backends.float.dynamics import INTEGER_SCHEMES
from n2c.cli.options import positive_float, positive_int
from n2c.errors import N2CError


def add_parser(sub) -> None:
    r = sub.add_parser("report", help="map a NIR graph on a chip: cores, energy, latency, EDP (json, md, html)",
                       description="Map a NIR graph onto a chip's cores, run real data through it, and write "
                       "report.json, report.md and report.html: per-layer and per-core resources, spikes, synaptic "
                       "ops, energy by component with every constant's source, latency, EDP, the 45 nm ANN "
                       "comparison and, with several graphs of one model at different T, the comparison across T.")
    r.add_argument("graphs", nargs="+", metavar="GRAPH", help="NIR file; more files (the same model exported at "
                   "other T or methods) add the across-T comparison")
    r.add_argument("--dataset", help="digits (default), fashion-mnist, an .npz file, or a directory of x.npy, y.npy "
                   "(memory-mapped)")
    r.add_argument("--split", choices=["train", "test"], default="test", help="data split (default: test)")
    r.add_argument("--samples", type=positive_int, help="use only the first N samples")
    r.add_argument("--input-scale", type=positive_float, help="override the graph's input scale")
    r.add_argument("--input", metavar="X.npy", help="input array (time, batch, then the graph's input shape) "
                   "instead of a data set, for graphs of other tools (their T is its first axis); no accuracy")
    r.add_argument("--dt", type=positive_float, help="time step of other tools' neurons, in the graph's time "
                   "unit (default: the graph's n2c.dt, else 1e-3; Sinabs graphs: 1; snntorch: 1e-4)")
    r.add_argument("--dynamics", choices=INTEGER_SCHEMES, default="nir", help="how other "
                   "tools' neurons step in Loihi's integers: nir (reset to 0, Loihi's stock neuron; default), "
                   "snntorch (reset by subtraction one step late) or snntorch-nodelay (reset_delay=False); the "
                   "snntorch ones are custom neurons, dt 1e-4")
    r.add_argument("--hardware", default="loihi2", help="loihi1, loihi2 (default) or your chip spec file (.json, "
                   "format in docs/hardware-model.md)")
    r.add_argument("--simulator", choices=["reference", "lava"], default="reference",
                   help="where the activity is measured: reference simulator (default) or Lava (slow)")
    r.add_argument("--share-cores", choices=["auto", "always", "never"], default="auto",
                   help="blocks of several layers on one core where they fit: always (fewest cores, longer "
                        "steps), never, or auto (default: only when it saves a chip)")
    r.add_argument("-o", "--output", required=True, help="directory for report.json, report.md and report.html")
    r.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    import os
    import warnings

    from backends.hardware.spec import load_chip
    from backends.report.build import summary_row, unfit_row
    from backends.report.render import write_report
    from n2c.files import check_output_dir
    from n2c.data import load_dataset
    from n2c.errors import MappingError
    from n2c.cli.files import load_input_array
    from n2c.cli.pipeline import report_network

    check_output_dir(args.output, create=True)  # -o names a directory for report.json, .md and .html
    chip = load_chip(args.hardware)
    for path in args.graphs:
        if not os.path.isfile(path):
            raise N2CError(f"graph {path} does not exist")
    _check_same_network(args.graphs)
    if args.input and args.dataset:
        raise N2CError("give either --input X.npy or --dataset NAME, not both")
    inputs = load_input_array(args.input)[:, :args.samples] if args.input else None
    data = None if args.input else load_dataset(args.dataset or "digits", args.split).head(args.samples)

    def run(path: str) -> dict:
        return report_network(path, chip, data, args.split, args.simulator, args.input_scale,
                              progress=sys.stderr.isatty(), share_cores=args.share_cores, dt=args.dt, inputs=inputs,
                              input_name=args.input or "", dynamics=args.dynamics)

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
    for line in report["warnings"]:
        warnings.warn(line)  # as simulate's: one line on stderr
    for path in write_report(report, args.output):
        print(f"wrote {path}")
    e, m, lat = report["energy"], report["mapping"], report["latency"]
    if not m["fits"]:
        print(f"n2c: warning: {len(m['unfit'])} layer(s) cannot fit one {chip.name} core and are left out of the "
              f"cores, traffic and latency: " + "; ".join(f"'{u['layer']}': {u['reason']}" for u in m["unfit"]),
              file=sys.stderr)
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
