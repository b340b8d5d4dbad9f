"""Float SNN vs integer (Loihi fixed-point) accuracy of every conversion method.

    .venv/bin/python benchmarks/integer_accuracy.py                    # digits + Fashion-MNIST
    .venv/bin/python benchmarks/integer_accuracy.py --datasets digits  # a few minutes
    .venv/bin/python benchmarks/integer_accuracy.py --quick            # smoke run (tiny budgets)

For each data set and each architecture (n2c.models VGGStyle and ResNetStyle) the ANNs
are trained exactly as benchmarks/accuracy.py trains them (same seeded budgets, same
code path: n2c.ann.train.fit, then n2c.ann.train.fine_tune to QCFS and to signed QCFS, L = 8)
and cached under out/cache/benchmarks/ (gitignored; --no-cache retrains). Then, for
every method at its natural T (PLAN below):

1. convert (n2c.snn.convert) and run the float SNN in torch on the test set;
2. export it to NIR and quantize it (n2c.cli.pipeline.export_model, load_network), run the
   integer reference simulator (backends.reference.simulate.simulate) on the same test set:
   accuracy, drop, prediction agreement float vs integer, values past Loihi's limits;
3. summarize the quantization (IntNetwork.report): smallest integer threshold, weights
   rounded to zero, weight bits used;
4. run Lava's fixed-point CPU simulation (backends.lava.lower.run_lava) on the first
   --lava-samples test samples and compare its predictions and readout potentials with
   the reference's; a network Lava refuses is reported as "not lowerable: <reason>";
5. where float and integer agree on fewer than 90 % of the samples, measure how far the float
   SNN's own predictions move under random weight noise of the size of 8-bit rounding.

Results go to docs/results/integer_accuracy.md (and a JSON file beside it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

try:  # Lava fixes the multiprocessing start method when first imported: before anything else uses it
    import backends.lava  # noqa: F401,E402
    LAVA_IMPORT_ERROR = None
except Exception as e:  # noqa: BLE001  (Lava missing or broken: the Lava column says so)
    LAVA_IMPORT_ERROR = f"{type(e).__name__}: {e}"

from accuracy import BUDGETS, LEVELS, QUICK  # noqa: E402  (the budgets of the accuracy tables)
from n2c.snn.convert import convert  # noqa: E402
from n2c.data import Dataset, load_dataset  # noqa: E402
from n2c.errors import N2CError  # noqa: E402
from n2c.files import atomic_write  # noqa: E402
from n2c.models import build_model  # noqa: E402
from n2c.cli.pipeline import export_model, load_network  # noqa: E402
from n2c.ann.train import fine_tune, fit, predict  # noqa: E402

CACHE = ROOT / "out" / "cache" / "benchmarks"  # out/ is gitignored
ARCHS = ("vgg", "resnet")
# (method, T, model): each method at the T where docs/results/accuracy.md shows it is meaningful.
# mtn and pmsm are exact at T = 1; sfn is flat in T (T = 1 is its natural point); parallel
# reaches the QCFS ANN at T = 4..8; if needs T >= 8 (at T = 4 it loses up to 45 points).
PLAN = (
    ("mtn", 1, "qcfs"),
    ("pmsm", 1, "signed"),
    ("sfn", 1, "qcfs"),
    ("parallel", 4, "qcfs"),
    ("parallel", 8, "qcfs"),
    ("if", 8, "qcfs"),
)
LAVA_SAMPLES = 50
REFERENCE_CHUNK = 64  # sample-steps per reference call
NOISE_CHECK_BELOW = 0.90  # agreement under which the float SNN's sensitivity to weight noise is measured
NOISE_SEEDS = (0, 1, 2)


# --- training (benchmarks/accuracy.py's recipe), cached ------------------------------------------

def cached(stem: str, key: dict, build, use_cache: bool = True):
    """``build()``, or its result from an earlier run with the same ``key`` (pickled with torch.save
    under out/cache/benchmarks/; the key also records torch's version and thread count)."""
    key = {**key, "torch": torch.__version__, "threads": torch.get_num_threads()}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = CACHE / f"{stem}-{digest}.pt"
    if use_cache and path.exists():
        return torch.load(path), True
    value = build()
    if use_cache:
        CACHE.mkdir(parents=True, exist_ok=True)
        atomic_write(str(path), lambda tmp: torch.save(value, tmp))
    return value, False


def trained_models(name: str, arch: str, budget: dict, train: Dataset, use_cache: bool = True,
                   progress=print) -> tuple[dict, float, bool]:
    """The ReLU ANN and its QCFS and signed-QCFS fine-tunes, trained as benchmarks/accuracy.py
    does; returns (models, seconds spent training or loading, loaded from the cache)."""
    def build() -> dict:
        torch.manual_seed(0)
        relu = fit(build_model(arch, tuple(train.x.shape[1:]), train.num_classes, act="relu"), train,
                   epochs=budget["relu_epochs"], lr=budget["lr"], batch_size=128, progress=False)
        models = {"relu": relu}
        for key in ("qcfs", "signed"):
            models[key] = fine_tune(relu, train, levels=LEVELS, quantizer=key, epochs=budget["ft_epochs"],
                                    lr=budget["lr"] / 2, batch_size=128, progress=False)
        return models

    start = time.perf_counter()
    models, hit = cached(f"{name}-{arch}", {"dataset": name, "arch": arch, "budget": budget, "levels": LEVELS,
                                            "seed": 0}, build, use_cache)
    seconds = time.perf_counter() - start
    progress(f"{name} {arch}: trained models {'loaded from the cache' if hit else f'trained in {seconds:.0f} s'}")
    return models, seconds, hit


# --- one method -----------------------------------------------------------------------------------

@torch.no_grad()
def float_predictions(model, x: np.ndarray, timesteps: int = 1) -> np.ndarray:
    return predict(model, x, batch_size=max(8, 4096 // timesteps)).argmax(axis=1)


@torch.no_grad()
def noise_agreement(snn, x: np.ndarray, reference: np.ndarray, seed: int) -> float:
    """Agreement of the float SNN with its own predictions ``reference`` after adding uniform noise
    of at most max|W|/254 to every conv and linear weight (per layer: the largest rounding error
    of 8-bit even mantissas at n2c's scale, which maps max|W| to 254)."""
    import copy

    from torch import nn

    noisy = copy.deepcopy(snn)
    gen = torch.Generator().manual_seed(seed)
    for module in noisy.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            w = module.weight
            w += (torch.rand(w.shape, generator=gen, dtype=w.dtype) * 2 - 1) * w.abs().max() / 254
    return float((float_predictions(noisy, x, snn.timesteps) == reference).mean())


def reference_run(net, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Integer reference on ``x`` in chunks of about 64 sample-steps: the simulator keeps every
    layer's messages of a call in memory, and small calls run 3-4x faster than its default batch
    of 1024 samples (measured; see throughput.md). Returns (readout potentials, predictions,
    values past Loihi's limits per layer)."""
    from backends.reference.simulate import simulate

    chunk = max(4, REFERENCE_CHUNK // max(1, net.timesteps))
    outputs, overflows = [], {}
    for i in range(0, len(x), chunk):
        sim = simulate(net, x[i:i + chunk], batch_size=chunk)
        outputs.append(sim.output)
        for layer, entry in (sim.overflows or {}).items():
            total = overflows.setdefault(layer, {"limit": entry["limit"], "count": 0})
            total["count"] += int(entry["count"])
    out = np.concatenate(outputs)
    return out, out.reshape(len(out), -1).argmax(axis=1), overflows


def quantization_summary(report: list[dict]) -> dict:
    """Network-wide view of IntNetwork.report (one dict per neuron layer)."""
    spiking = [r for r in report if "threshold_int_min" in r]
    low = min(spiking, key=lambda r: r["threshold_int_min"]) if spiking else None
    zeroed = sum(r.get("weights_zeroed", 0) for r in report)
    count = sum(r.get("weight_count", 0) for r in report)
    bits = [r["weight_bits_used"] for r in report if "weight_bits_used" in r]
    return {"threshold_int_min": low and low["threshold_int_min"], "threshold_int_min_layer": low and low["layer"],
            "weights_zeroed": zeroed, "weight_count": count,
            "weight_bits_used_min": min(bits, default=None), "weight_bits_used_max": max(bits, default=None),
            "weight_max_abs_error": max((r.get("weight_max_abs_error", 0.0) for r in report), default=None)}


def lava_run(net, test: Dataset, n: int, ref_out: np.ndarray, ref_pred: np.ndarray) -> dict:
    """Lava fixed_pt on the first ``n`` samples, compared with the reference on the same samples."""
    if LAVA_IMPORT_ERROR:
        return {"status": f"unavailable: {LAVA_IMPORT_ERROR}"}
    if n <= 0:
        return {"status": "skipped (--lava-samples 0)"}
    from backends.lava.lower import run_lava

    n = min(n, len(test))
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = run_lava(net, test.x[:n], progress=False)
    except N2CError as e:  # the lowering refuses the network (QuantizationError)
        return {"status": f"not lowerable: {e}"}
    except Exception as e:  # noqa: BLE001  (a Lava failure is a result, not a reason to lose the others)
        return {"status": f"failed: {type(e).__name__}: {e}"}
    pred = out.reshape(len(out), -1).argmax(axis=1)
    return {"status": "ran", "samples": n, "seconds": time.perf_counter() - start,
            "accuracy": float((pred == test.y[:n]).mean()),
            "reference_accuracy": float((ref_pred[:n] == test.y[:n]).mean()),
            "identical_predictions": bool((pred == ref_pred[:n]).all()),
            "identical_outputs": bool(np.array_equal(out, ref_out[:n])),
            "warnings": sorted({str(w.message) for w in caught})}


def evaluate(model, method: str, timesteps: int, calib: Dataset, test: Dataset, lava_samples: int,
             tmp: Path) -> dict:
    row: dict = {"method": method, "T": timesteps}
    options = {"calib": calib} if method == "sfn" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snn = convert(model, method, timesteps, **options)
    start = time.perf_counter()
    float_pred = float_predictions(snn, test.x, timesteps)
    row["float_seconds"] = time.perf_counter() - start
    row["float_accuracy"] = float((float_pred == test.y).mean())
    path = tmp / f"{method}-T{timesteps}.nir"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # as `n2c export --dataset` does: the training data's largest currents keep the sums in 16 bits
            export_model(snn, str(path), tuple(test.x.shape[1:]), test.input_scale, width_data=calib.x)
            _, net = load_network(str(path))
    except N2CError as e:
        row["integer_status"] = f"not quantizable: {e}"
        return row
    row["quantize_warnings"] = sorted({str(w.message) for w in caught})
    row["quantization"] = quantization_summary(net.report)
    row["layers"] = net.report
    start = time.perf_counter()
    ref_out, ref_pred, overflows = reference_run(net, test.x)
    row["reference_seconds"] = time.perf_counter() - start
    row["integer_status"] = "ran"
    row["integer_accuracy"] = float((ref_pred == test.y).mean())
    row["drop"] = row["float_accuracy"] - row["integer_accuracy"]
    row["agreement"] = float((ref_pred == float_pred).mean())
    row["overflows"] = overflows
    if row["agreement"] < NOISE_CHECK_BELOW:
        row["noise_agreement"] = [noise_agreement(snn, test.x, float_pred, seed) for seed in NOISE_SEEDS]
    row["lava"] = lava_run(net, test, lava_samples, ref_out, ref_pred)
    return row


# --- a data set --------------------------------------------------------------------------------------

def run_dataset(name: str, budget: dict, test_samples: int | None, lava_samples: int, use_cache: bool,
                progress) -> dict:
    train = load_dataset(name, "train").head(budget["train"])
    test = load_dataset(name, "test").head(test_samples)
    calib = train.head(budget["calib"])
    result = {"dataset": name, "train_samples": len(train), "test_samples": len(test),
              "calib_samples": len(calib), "lava_samples": min(lava_samples, len(test)), "budget": budget,
              "archs": {}}
    for arch in ARCHS:
        models, train_seconds, cached = trained_models(name, arch, budget, train, use_cache, progress)
        ann = {k: float((float_predictions(m, test.x) == test.y).mean()) for k, m in models.items()}
        progress(f"{name} {arch}: ANN accuracy on {len(test)} test samples {ann}")
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for method, timesteps, key in PLAN:
                row = evaluate(models[key], method, timesteps, calib, test, lava_samples, Path(tmp))
                row["from"] = key
                rows.append(row)
                progress(f"{name} {arch} {method} T={timesteps}: " + _progress_line(row))
        result["archs"][arch] = {"ann": ann, "rows": rows, "train_seconds": train_seconds, "cached": cached}
    return result


def _progress_line(row: dict) -> str:
    if row["integer_status"] != "ran":
        return f"float {100 * row['float_accuracy']:.2f} %, {row['integer_status']}"
    lava = row["lava"]
    lava_text = (f"Lava {100 * lava['accuracy']:.2f} % on {lava['samples']} "
                 f"(identical: {'yes' if lava['identical_predictions'] else 'NO'})" if lava["status"] == "ran"
                 else f"Lava {lava['status'][:80]}")
    return (f"float {100 * row['float_accuracy']:.2f} %, integer {100 * row['integer_accuracy']:.2f} %, "
            f"agreement {100 * row['agreement']:.2f} %, {row['reference_seconds']:.1f} s reference; {lava_text}")


# --- Markdown ----------------------------------------------------------------------------------------

def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.2f}"


def _lava_cells(lava: dict | None) -> tuple[str, str]:
    if lava is None:
        return "", ""
    if lava["status"] == "ran":
        same = "yes" if lava["identical_predictions"] else "**no**"
        if lava["identical_predictions"] and not lava["identical_outputs"]:
            same += " (readout potentials differ)"
        return _pct(lava["accuracy"]), same
    return lava["status"].split(":")[0], "—"


def _headline(results: list[dict]) -> list[str]:
    ran = [(res["dataset"], arch, row) for res in results for arch, a in res["archs"].items()
           for row in a["rows"] if row["integer_status"] == "ran"]
    if not ran:
        return ["No network had an integer form."]
    worst = max(ran, key=lambda r: r[2]["drop"])
    least = min(ran, key=lambda r: r[2]["agreement"])
    lava = [(d, a, r) for d, a, r in ran if r["lava"]["status"] == "ran"]
    differ = [f"{d} {a} {r['method']} T={r['T']}" for d, a, r in lava if not r["lava"]["identical_predictions"]]
    refused = sorted({r["method"] for d, a, r in ran if r["lava"]["status"].startswith("not lowerable")})
    lines = [f"- Largest accuracy drop float → integer: {100 * worst[2]['drop']:.2f} points "
             f"({worst[0]}, {worst[1]}, {worst[2]['method']} T={worst[2]['T']}); "
             f"lowest prediction agreement: {100 * least[2]['agreement']:.2f} % "
             f"({least[0]}, {least[1]}, {least[2]['method']} T={least[2]['T']}).",
             f"- Lava fixed_pt ran {len(lava)} of {len(ran)} integer networks; its predictions equal the "
             f"reference's in {len(lava) - len(differ)} of them"
             + (f" (differ: {', '.join(differ)})." if differ else ".")]
    if refused:
        lines.append(f"- Lava refuses (not lowerable): {', '.join(refused)}; reasons under each table.")
    return lines


def to_markdown(results: list[dict], command: str, seconds: float) -> str:
    lines = ["# Float vs integer accuracy of the conversion methods", "",
             f"Command: `{command}`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs during the run, "
             f"{torch.get_num_threads()} torch threads, torch {torch.__version__}; whole run "
             f"{seconds / 60:.1f} min (times below are wall-clock on shared cores, indicative only).", "",
             "Each network is trained exactly as in `accuracy.md` (same seeded budgets; trained models cached "
             "in `out/cache/benchmarks/`), converted with each method at its natural T, run as a float SNN in "
             "torch (`n2c.snn.modules`, float32) and, after NIR export and quantization to Loihi's formats "
             "(`n2c.cli.pipeline.load_network`), on the integer reference simulator "
             "(`backends.reference.simulate.simulate`), both on the same full test set. *Agreement* is the fraction "
             "of test samples on which the two predict the same class. Lava fixed_pt "
             "(`backends.lava.lower.run_lava`, Loihi2SimCfg fixed_pt on the CPU) runs the first test "
             "samples only, so its accuracy column is over those samples (not comparable with the full-set "
             "columns); *= reference* says whether its predictions equal the integer reference's on "
             "those samples (and whether the readout potentials are bit-identical too).", "",
             "Quantization columns (from `IntNetwork.report`): *θ_int min* is the smallest integer threshold "
             "of any spiking layer (the precision left in the membrane), *weights → 0* counts non-zero "
             "weights that round to zero in the 8-bit mantissas, *bits used* the magnitude bits of the "
             "largest weight mantissa per layer (min–max over layers; Lava's limit is 8), *past Loihi "
             "limits* the values the reference counted beyond Loihi's 16-bit synaptic accumulator, 24-bit "
             "convolution output or 24-bit membrane (the reference computes them exactly as Lava does).", "",
             "## Summary", "", *_headline(results), ""]
    for res in results:
        for arch, a in res["archs"].items():
            ann = a["ann"]
            title = "VGG" if arch == "vgg" else "ResNet"
            lines += [f"## {res['dataset']}, {title}-style", "",
                      f"{res['test_samples']} test samples (Lava: the first {res['lava_samples']}), "
                      f"{res['train_samples']} training samples, {res['calib_samples']} calibration samples; "
                      f"epochs: ReLU {res['budget']['relu_epochs']}, fine-tune {res['budget']['ft_epochs']}. "
                      f"ANN accuracy on these test samples: QCFS {_pct(ann['qcfs'])} %, signed QCFS "
                      f"{_pct(ann['signed'])} %.", "",
                      "| method | T | float SNN % | integer ref % | drop (points) | agreement % | "
                      f"Lava % ({res['lava_samples']}) | Lava = reference |",
                      "|---|---|---|---|---|---|---|---|"]
            notes = []
            for row in a["rows"]:
                name = f"{row['method']} ({'signed' if row['from'] == 'signed' else 'QCFS'} ANN)"
                if row["integer_status"] != "ran":
                    lines.append(f"| {name} | {row['T']} | {_pct(row['float_accuracy'])} | "
                                 f"{row['integer_status'].split(':')[0]} | | | | |")
                    notes.append(f"{row['method']} T={row['T']}: {row['integer_status']}")
                    continue
                lava_acc, same = _lava_cells(row["lava"])
                if row["lava"]["status"] != "ran":
                    notes.append(f"{row['method']} T={row['T']} on Lava: {row['lava']['status']}")
                lines.append(f"| {name} | {row['T']} | {_pct(row['float_accuracy'])} | "
                             f"{_pct(row['integer_accuracy'])} | {100 * row['drop']:+.2f} | "
                             f"{_pct(row['agreement'])} | {lava_acc} | {same} |")
            lines += ["", "| method | T | θ_int min (layer) | weights → 0 | bits used | max weight error | "
                      "past Loihi limits | seconds float / reference / Lava |", "|---|---|---|---|---|---|---|---|"]
            for row in a["rows"]:
                if row["integer_status"] != "ran":
                    continue
                q = row["quantization"]
                over = "; ".join(f"{layer}: {e['count']:,} ({e['limit']})" for layer, e in row["overflows"].items())
                lava_s = f"{row['lava']['seconds']:.1f}" if row["lava"]["status"] == "ran" else "—"
                lines.append(f"| {row['method']} | {row['T']} | {q['threshold_int_min']} ({q['threshold_int_min_layer']}) | "
                             f"{q['weights_zeroed']:,} of {q['weight_count']:,} "
                             f"({100 * q['weights_zeroed'] / max(q['weight_count'], 1):.2f} %) | "
                             f"{q['weight_bits_used_min']}–{q['weight_bits_used_max']} | "
                             f"{q['weight_max_abs_error']:.3g} | {over or 'none'} | "
                             f"{row['float_seconds']:.1f} / {row['reference_seconds']:.1f} / {lava_s} |")
            warned = sorted({w for row in a["rows"] for w in row.get("quantize_warnings", [])})
            lines.append("")
            for row in a["rows"]:
                if "noise_agreement" in row:
                    noise = ", ".join(f"{100 * v:.2f}" for v in row["noise_agreement"])
                    lines += [f"Sensitivity check, {row['method']} T={row['T']} (agreement below "
                              f"{100 * NOISE_CHECK_BELOW:.0f} %): the float SNN with uniform noise of at most "
                              f"max|W|/254 added to each layer's weights (the largest 8-bit rounding error; seeds "
                              f"{', '.join(map(str, NOISE_SEEDS))}) agrees with the noise-free float SNN on {noise} % "
                              f"of the test samples, against {100 * row['agreement']:.2f} % for the integer network.",
                              ""]
            if notes:
                lines += ["Not run:", ""] + [f"- {n}" for n in notes] + [""]
            if warned:
                lines += ["Quantization warnings:", ""] + [f"- {w}" for w in warned] + [""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "fashion-mnist"])
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run, not results")
    parser.add_argument("--test-samples", type=int, default=None,
                        help="first N test samples (default: the full test set; --quick: 200)")
    parser.add_argument("--lava-samples", type=int, default=None,
                        help=f"samples run on Lava (default {LAVA_SAMPLES}; --quick: 10)")
    parser.add_argument("--no-cache", action="store_true", help="retrain instead of loading cached models")
    parser.add_argument("-o", "--output", default=str(ROOT / "docs/results/integer_accuracy.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    test_samples = args.test_samples or (QUICK["test"] if args.quick else None)
    lava_samples = args.lava_samples if args.lava_samples is not None else (10 if args.quick else LAVA_SAMPLES)

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    start = time.perf_counter()
    results = [run_dataset(d, QUICK if args.quick else BUDGETS[d], test_samples, lava_samples, not args.no_cache,
                           progress) for d in args.datasets]
    seconds = time.perf_counter() - start
    command = ".venv/bin/python benchmarks/integer_accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_markdown(results, command.strip(), seconds) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"command": command.strip(), "seconds": seconds,
                                                    "results": results}, indent=1, default=str))
    print(f"wrote {out} ({seconds / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
