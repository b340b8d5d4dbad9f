"""``n2c sweep``: one model at several methods and T, each case exported, run on the integer
reference and reported on a chip; cases in parallel under torchrun, resumable (``n2c.sweep``)."""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from n2c.cli.options import conversion_options, input_normalized, positive_int
from n2c.errors import N2CError

KEPT = ("method", "timesteps", "arch", "levels", "calib", "calib_samples", "calib_mode", "percentile", "maxpool",
        "v_init", "sfn_scale", "da", "dataset", "samples", "hardware", "share_cores")


def add_parser(sub) -> None:
    s = sub.add_parser("sweep", help="a model at several methods and T: accuracy, cores and energy of each "
                       "(parallel under torchrun, resumable)",
                       description="Convert MODEL with every --method at every --timesteps, export each to NIR, "
                       "run it on the integer reference simulator over the data set and map it on a chip. Writes "
                       "DIR/graphs/*.nir, DIR/cases/*.json (one per finished case: a rerun skips them) and the "
                       "table DIR/sweep.md and DIR/sweep.json. Under torchrun the processes share the cases.")
    s.add_argument("model", help="TorchScript file, .pt2, state_dict (with --arch) or pickled nn.Module (with "
                   "--trust-pickle)")
    conversion_options(s, many=True)
    s.add_argument("--dataset", help="digits (default), fashion-mnist, an .npz file or a directory of x.npy, "
                   "y.npy: its test split is run, its training split calibrates")
    s.add_argument("--samples", type=positive_int, help="run only the first N test samples")
    s.add_argument("--hardware", default="loihi2", help="loihi1, loihi2 (default) or a chip spec file")
    s.add_argument("--share-cores", choices=["auto", "always", "never"], default="auto",
                   help="blocks of several layers on one core (as n2c report)")
    s.add_argument("-o", "--output", required=True, metavar="DIR", help="directory of the sweep (reused to resume)")
    s.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    from backends.hardware.spec import load_chip
    from n2c.data import load_dataset
    from n2c.distributed import setup, shutdown
    from n2c.files import check_output_dir
    from n2c.ingest import load_model
    from n2c.sweep import Case, run_sweep

    check_output_dir(args.output, create=True)
    chip = load_chip(args.hardware)
    if not Path(args.model).is_file():
        raise N2CError(f"model file {args.model} does not exist")
    model = input_normalized(load_model(args.model, arch=args.arch, trust_pickle=args.trust_pickle), args)
    data = load_dataset(args.dataset or "digits", "test").head(args.samples)
    train = load_dataset(args.calib or args.dataset or "digits", "train").head(args.calib_samples)
    fingerprint = hashlib.sha256(Path(args.model).read_bytes()).hexdigest()
    options = {k: getattr(args, k) for k in KEPT if k not in ("method", "timesteps")}
    cases = [Case(f"{method}_T{t}", {"method": method, "timesteps": t, "model_sha256": fingerprint, **options})
             for method in dict.fromkeys(args.method) for t in dict.fromkeys(args.timesteps)]
    world = setup(args.device)
    records = run_sweep(cases, lambda case: _run_case(case, args, model, data, train, chip), args.output, world,
                        say=lambda line: print(line, file=sys.stderr))
    if world.main:
        _write_table(records, Path(args.output), data.name, chip.name)
    shutdown(world)
    return 0


def _run_case(case, args, model, data, train, chip) -> dict:
    from backends.report.build import summary_row
    from n2c.cli.export import convert_from_args
    from n2c.cli.pipeline import export_model, report_network

    case_args = argparse.Namespace(**{**vars(args), **{k: case.params[k] for k in ("method", "timesteps")}})
    snn = convert_from_args(case_args, model)
    graph = Path(args.output) / "graphs" / f"{case.key}.nir"
    graph.parent.mkdir(exist_ok=True)
    width = train.x if tuple(train.x.shape[1:]) == tuple(data.x.shape[1:]) else None
    export_model(snn, str(graph), tuple(data.x.shape[1:]), data.input_scale, width_data=width)
    report = report_network(str(graph), chip, data, share_cores=args.share_cores)
    return {**summary_row(report), "graph": str(graph), "chips": report["mapping"]["chips"]}


def _write_table(records: list[dict], directory: Path, data_name: str, chip_name: str) -> None:
    import json

    from n2c.files import atomic_write

    rows = [r["result"] for r in records]
    lines = [f"# Sweep on {data_name}, {chip_name}", "",
             "| method | T | accuracy (integer reference) | cores | chips | energy / inference | dynamic | latency | "
             "EDP |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = f"{100 * r['accuracy']:.2f} %" if r["accuracy"] is not None else "—"
        if not r["fits"]:
            lines.append(f"| {r['method']} | {r['timesteps']} | {acc} | does not fit: {r['reason']} | | | | | |")
            continue
        lines.append(f"| {r['method']} | {r['timesteps']} | {acc} | {r['cores']} | {r['chips']} | "
                     f"{r['energy_total_J'] * 1e6:.3f} µJ | {r['energy_dynamic_J'] * 1e6:.3f} µJ | "
                     f"{r['inference_s'] * 1e6:.1f} µs | {r['edp_J_s']:.3g} J·s |")
    text = "\n".join(lines) + "\n"
    atomic_write(directory / "sweep.md", lambda tmp: Path(tmp).write_text(text))
    atomic_write(directory / "sweep.json", lambda tmp: Path(tmp).write_text(json.dumps(records, indent=1)))
    print(text, end="")
    print(f"wrote {directory / 'sweep.md'} and {directory / 'sweep.json'}")
