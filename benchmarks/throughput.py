"""Throughput of the ways to run a converted network, measured in one run on the same samples.

    .venv/bin/python benchmarks/throughput.py                  # digits demo CNN + VGG-style Fashion-MNIST
    .venv/bin/python benchmarks/throughput.py --quick          # smoke run (small batch, small training)

Networks: the demo's digits CNN (n2c.models.DigitsCNN(levels=8), trained as ``n2c demo``
trains it) and the VGG-style Fashion-MNIST QCFS network of benchmarks/accuracy.py (same
seeded budget; trained models cached under out/cache/benchmarks/), both converted with
mtn at T = 1 and exported to NIR as ``n2c export`` does. On the same test samples it times

* the float ANN forward pass in torch (QCFS ANN, float32, autograd off), and for reference
  the float SNN in torch (n2c.snn.modules);
* the integer reference simulator (backends.reference.simulate.simulate), with its default batch
  and with batches of 64 samples, and as a what-if the same per-batch runner (run_encoded)
  keeping only the readout instead of every layer's messages;
* Lava's fixed-point CPU simulation (backends.lava.lower.run_lava), split into
  compile (Lava compiler + runtime start), run (the RunSteps loop) and the rest (building
  the Processes, reading the sink, stopping), after one warm-up run;

then profiles the reference simulator with cProfile. Results go to docs/results/throughput.md.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import linecache
import os
import platform
import pstats
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import backends.lava  # noqa: E402,F401  (Lava fixes the multiprocessing start method first)
from accuracy import BUDGETS, QUICK  # noqa: E402
from integer_accuracy import cached, trained_models  # noqa: E402
from backends.lava import lower  # noqa: E402
from backends.reference.simulate import run_encoded, simulate  # noqa: E402
from n2c.data import load_dataset  # noqa: E402
from n2c.models import DigitsCNN  # noqa: E402
from n2c.cli.pipeline import export_model, load_network  # noqa: E402
from n2c.ann.train import predict, train  # noqa: E402

REPEATS = 5
MIN_SECONDS = 2.0  # keep timing a runner until this much time has passed
SMALL_BATCH = 64  # samples per reference call in the second reference row (T = 1: 64 sample-steps)
GOAL_VS_LAVA = 1000  # reference throughput ≥ 1000× Lava's
GOAL_VS_TORCH = 3  # reference time ≤ 3× the torch float ANN's


def best_of(fn, repeats: int = REPEATS, min_seconds: float = MIN_SECONDS) -> float:
    """Best time of at least ``repeats`` calls, repeated until ``min_seconds`` have passed (at most
    200 calls): short runs on shared cores need many tries for a stable minimum."""
    best, spent, calls = float("inf"), 0.0, 0
    while calls < repeats or (spent < min_seconds and calls < 200):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        best, spent, calls = min(best, elapsed), spent + elapsed, calls + 1
    return best


def reference_outputs_only(net, x: np.ndarray, batch_size: int = SMALL_BATCH) -> np.ndarray:
    """What-if: the reference's per-batch runner (``run_encoded``) on small batches, keeping only the
    readout, i.e. ``simulate`` without joining every layer's messages across batches."""
    return np.concatenate([run_encoded(net, net.direct_input(x[i:i + batch_size])).output
                           for i in range(0, len(x), batch_size)])


@contextlib.contextmanager
def lava_phases(times: dict):
    """Time Lava's compile separately from its run: n2c's Lava runner calls ``lower._run(process,
    total_steps, progress)`` once per run; this wraps it to create the runtime (Lava's compiler
    and runtime start, which ``Process.run`` would otherwise do on its first call) before it."""
    from lava.magma.core.run_configs import Loihi2SimCfg

    original = lower._run

    def run(proc, total, progress):
        start = time.perf_counter()
        proc.create_runtime(run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        times["compile"] = time.perf_counter() - start
        start = time.perf_counter()
        original(proc, total, progress)
        times["run"] = time.perf_counter() - start
        times["steps"] = total

    lower._run = run
    try:
        yield times
    finally:
        lower._run = original


def time_lava(net, x: np.ndarray) -> tuple[dict, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lower.run_lava(net, x[:2], progress=False)  # warm-up: imports and first compile of the process models
        times: dict = {}
        with lava_phases(times):
            start = time.perf_counter()
            out = lower.run_lava(net, x, progress=False)
            times["total"] = time.perf_counter() - start
    times["other"] = times["total"] - times.get("compile", 0.0) - times.get("run", 0.0)
    return times, out


def profile_reference(net, x: np.ndarray, batch_size: int = 1024, top: int = 10) -> dict:
    """cProfile of one reference run: the functions with the most own time."""
    prof = cProfile.Profile()
    prof.enable()
    simulate(net, x, batch_size=batch_size)
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    total = stats.total_tt
    rows = []
    for (path, line, func), (cc, nc, tt, ct, _) in sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]:
        where = f"`{Path(path).name}:{line}({func})`" if line else f"`{func}`"
        if func.startswith("<") and line:  # comprehensions and lambdas: show their line
            where += f" `{linecache.getline(path, line).strip()[:70]}`"
        rows.append({"function": where, "calls": nc, "tottime": tt, "cumtime": ct, "share": tt / total})
    return {"total": total, "rows": rows}


def kernel_cost(fn) -> dict:
    """Kernel (system) CPU time and minor page faults of one call: large temporary arrays are
    fresh memory mappings, each page faulted in and zeroed by the kernel."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    fn()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall": time.perf_counter() - start, "user": after.ru_utime - before.ru_utime,
            "system": after.ru_stime - before.ru_stime, "minor_faults": after.ru_minflt - before.ru_minflt}


@torch.inference_mode()
def _torch_forward(model, x: np.ndarray) -> np.ndarray:
    return predict(model, x, batch_size=1024)


def measure(label: str, model, test, n: int, profile: bool, progress) -> dict:
    data = test.head(min(n, len(test)))
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "net.nir")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            snn = export_model(model, path, tuple(data.x.shape[1:]), test.input_scale, timesteps=1, method="mtn")
            _, net = load_network(path)
    x = data.x
    _torch_forward(model, x[:8]), simulate(net, x[:8])  # warm-up
    seconds = {"ann": best_of(lambda: _torch_forward(model, x)),
               "snn": best_of(lambda: _torch_forward(snn, x)),
               "reference": best_of(lambda: simulate(net, x)),
               "reference_small_batches": best_of(lambda: simulate(net, x, batch_size=SMALL_BATCH)),
               "reference_outputs_only": best_of(lambda: reference_outputs_only(net, x))}
    progress(f"{label}: torch ANN {seconds['ann']:.4f} s, reference {seconds['reference']:.4f} s")
    lava, lava_out = time_lava(net, x)
    progress(f"{label}: Lava {lava}")
    ref_out = simulate(net, x).output
    if not np.array_equal(reference_outputs_only(net, x), ref_out):
        raise RuntimeError("the readout-only what-if differs from simulate()")
    ann_pred = _torch_forward(model, x).argmax(axis=1)
    ref_pred = ref_out.reshape(len(ref_out), -1).argmax(axis=1)
    result = {"network": label, "samples": len(x), "timesteps": 1, "seconds": seconds, "lava": lava,
              "lava_identical": bool(np.array_equal(lava_out, ref_out)),
              "accuracy": {"ann": float((ann_pred == data.y).mean()), "reference": float((ref_pred == data.y).mean())}}
    if profile:
        result["profile"] = {"default": profile_reference(net, x), "small": profile_reference(net, x, SMALL_BATCH)}
        result["kernel"] = {"default": kernel_cost(lambda: simulate(net, x)),
                            "small": kernel_cost(lambda: simulate(net, x, batch_size=SMALL_BATCH))}
    return result


def digits_cnn(quick: bool):
    """The demo's network: DigitsCNN(levels=8) trained as n2c.cli.demo.run_demo trains it (seeded)."""
    epochs = 5 if quick else 60

    def build():
        torch.manual_seed(0)
        return train(DigitsCNN(levels=8), load_dataset("digits", "train"), epochs=epochs, progress=False)
    return cached("digits-demo-cnn", {"arch": "DigitsCNN(levels=8)", "epochs": epochs, "seed": 0}, build)[0]


def _fmt_rate(samples: int, seconds: float) -> str:
    return f"{samples / seconds:,.0f}" if samples / seconds >= 10 else f"{samples / seconds:,.1f}"


def _verdicts(r: dict) -> list[str]:
    """The two goals, judged on the reference as n2c runs it (default batch) and with small batches."""
    s, lava = r["seconds"], r["lava"]
    lines = []
    for key, what in (("reference", "default batch"), ("reference_small_batches", f"batch_size={SMALL_BATCH}")):
        vs_lava, vs_torch = lava["run"] / s[key], s[key] / s["ann"]
        lines += [f"- Reference ({what}) ≥ {GOAL_VS_LAVA}× Lava's throughput (Lava run only, compile excluded): "
                  f"**{'met' if vs_lava >= GOAL_VS_LAVA else 'not met'}** ({vs_lava:,.1f}×; "
                  f"{lava['total'] / s[key]:,.1f}× counting Lava's compile and set-up).",
                  f"- Reference ({what}) within {GOAL_VS_TORCH}× of the torch float ANN's time: "
                  f"**{'met' if vs_torch <= GOAL_VS_TORCH else 'not met'}** ({vs_torch:.2f}×)."]
    return lines


def to_markdown(results: list[dict], command: str) -> str:
    lines = ["# Throughput: torch float ANN, integer reference simulator, Lava fixed_pt", "",
             f"Command: `{command}`", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores **shared with other "
             f"jobs during the run** (absolute times are noisy; the ratios compare runners timed back to back "
             f"in the same run), {torch.get_num_threads()} torch threads, torch {torch.__version__}. "
             f"torch and the reference: best of at least {REPEATS} runs, repeated for at least {MIN_SECONDS:g} s; "
             "Lava: one run after a warm-up run. "
             "All runners get the same test samples, converted with mtn at T = 1 (direct encoding).", "",
             "Lava's time is split into *compile* (Lava's compiler and runtime start-up: "
             "`Process.create_runtime`), *run* (the `RunSteps` loop, one Lava step per sample plus the "
             "pipeline flush) and *other* (building the Lava Processes from the integer network, reading "
             "the sink, stopping the runtime).", "", "## Goals", ""]
    for r in results:
        lines += [f"{r['network']}:", "", *_verdicts(r), ""]
    for r in results:
        s, lava, n = r["seconds"], r["lava"], r["samples"]
        ref = s["reference"]
        lines += [f"## {r['network']} ({n} test samples, T = 1)", "",
                  "| runner | seconds | samples/s | time ÷ reference time |", "|---|---|---|---|"]
        rows = [("float ANN, torch (QCFS, float32)", s["ann"]), ("float SNN, torch (n2c.snn.modules, mtn T=1)", s["snn"]),
                ("integer reference simulator (default batch_size=1024)", ref),
                (f"integer reference simulator (batch_size={SMALL_BATCH})", s["reference_small_batches"]),
                (f"what-if: reference per {SMALL_BATCH} samples, readout only (no joined messages)",
                 s["reference_outputs_only"]),
                ("Lava fixed_pt CPU, run only", lava["run"]),
                ("Lava fixed_pt CPU, compile + run + other", lava["total"])]
        for name, sec in rows:
            lines.append(f"| {name} | {sec:.4f} | {_fmt_rate(n, sec)} | {sec / ref:,.2f}× |")
        lines += ["", f"Lava: compile {lava['compile']:.2f} s, run {lava['run']:.2f} s for {lava['steps']} steps "
                  f"({lava['steps'] / lava['run']:.0f} steps/s), other {lava['other']:.2f} s. Lava's readout "
                  f"potentials equal the reference's bit for bit: {'yes' if r['lava_identical'] else '**no**'}. "
                  f"Accuracy on these samples: ANN {100 * r['accuracy']['ann']:.2f} %, integer "
                  f"{100 * r['accuracy']['reference']:.2f} %.", "",
                  f"Ratios: reference / Lava throughput = {lava['run'] / ref:,.1f}× (run only), "
                  f"{lava['total'] / ref:,.1f}× (with compile); reference time / torch ANN time = "
                  f"{ref / s['ann']:.2f}× (batch_size={SMALL_BATCH}: {lava['run'] / s['reference_small_batches']:,.1f}× "
                  f"and {s['reference_small_batches'] / s['ann']:.2f}×). Meeting the Lava goal needs "
                  f"{GOAL_VS_LAVA * n / lava['run']:,.0f} samples/s from the reference, "
                  f"{GOAL_VS_LAVA * n / lava['run'] / (n / s['ann']):.1f}× the torch float ANN's throughput. The what-if "
                  f"row (same arithmetic, messages not kept) gives {lava['run'] / s['reference_outputs_only']:,.1f}× "
                  f"Lava and {s['reference_outputs_only'] / s['ann']:.2f}× the ANN's time.", ""]
    profiled = [r for r in results if "profile" in r]
    if profiled:
        lines += ["## Where the reference simulator's time goes (cProfile)", "",
                  "One profiled run per network on the same samples; own time (tottime) per function, "
                  "largest first, as a share of the profiled total.", ""]
        for r in profiled:
            k = r["kernel"]
            lines += [f"### {r['network']}", "",
                      f"One more run each, measured with getrusage: default batch: {k['default']['wall']:.3f} s wall, "
                      f"{k['default']['user']:.3f} s user, {k['default']['system']:.3f} s system CPU, "
                      f"{k['default']['minor_faults']:,} minor page faults; batch_size={SMALL_BATCH}: "
                      f"{k['small']['wall']:.3f} s wall, {k['small']['user']:.3f} s user, {k['small']['system']:.3f} s "
                      f"system, {k['small']['minor_faults']:,} minor page faults.", ""]
            for key, what in (("default", "default batch_size=1024"), ("small", f"batch_size={SMALL_BATCH}")):
                p = r["profile"][key]
                lines += [f"{what}: {p['total']:.3f} s profiled", "",
                          "| function | calls | own s | share | cumulative s |", "|---|---|---|---|---|"]
                for row in p["rows"]:
                    lines.append(f"| {row['function']} | {row['calls']} | {row['tottime']:.4f} | "
                                 f"{100 * row['share']:.1f} % | {row['cumtime']:.4f} |")
                lines.append("")
            lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=None,
                        help="test samples per network (default: all 360 digits, 1000 Fashion-MNIST; --quick 100)")
    parser.add_argument("--quick", action="store_true", help="small batch and training budgets: a smoke run")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile section")
    parser.add_argument("-o", "--output", default=str(ROOT / "docs/results/throughput.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results = []
    digits = load_dataset("digits", "test")
    results.append(measure("digits, demo CNN (n2c demo's DigitsCNN)", digits_cnn(args.quick), digits,
                           args.samples or (100 if args.quick else len(digits)), not args.no_profile, progress))
    budget = QUICK if args.quick else BUDGETS["fashion-mnist"]
    fashion_train = load_dataset("fashion-mnist", "train").head(budget["train"])
    models, _, _ = trained_models("fashion-mnist", "vgg", budget, fashion_train, progress=progress)
    results.append(measure("Fashion-MNIST, VGG-style (n2c.models.VGGStyle)", models["qcfs"],
                           load_dataset("fashion-mnist", "test"), args.samples or (100 if args.quick else 1000),
                           not args.no_profile, progress))
    command = ".venv/bin/python benchmarks/throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = to_markdown(results, command.strip()) + "\n"
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
