"""Real-size CNNs on Loihi 1 and Loihi 2: torchvision ResNet-18 and VGG-16 (with batch norm) in
their CIFAR shape (3x32x32), trained briefly on Fashion-MNIST padded to 32x32 with its one
channel repeated three times, converted to one-step SNNs (mtn, T = 1), then:

1. integer-exact fine-tuning (``n2c train GRAPH.nir --integer``'s code path, backends.integer_training)
   in Loihi 2's format: the written graph's integer network must predict what the trained
   model predicts on every test sample used, and Lava must equal the reference bit for bit on
   the first --lava-samples of them;
2. ``n2c report`` of the trained graph on Loihi 1 and Loihi 2: fan-in splits through relays,
   cores against the lower bound, chips, mapping time, energy, latency, EDP, the ANN at 45 nm.

    .venv/bin/python benchmarks/hardware_large.py              # ResNet-18 and VGG-16
    .venv/bin/python benchmarks/hardware_large.py --quick      # ResNet-18 only, fewer samples

Accuracy is not the point (a brief training on CPU); the budgets are below. Results replace
the "Real-size CNNs" part of docs/results/hardware.md and of docs/results/integer_accuracy.md;
each report.md is copied to docs/results/hardware/. Trained models are cached under
out/cache/benchmarks/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import backends.lava  # noqa: F401,E402  (Lava fixes the multiprocessing start method first)
from integer_accuracy import cached  # noqa: E402
from n2c.data import Dataset, load_dataset  # noqa: E402

OUT = ROOT / "out" / "hardware"
DOCS = ROOT / "docs" / "results"
BEGIN, END = "<!-- real-size CNNs: benchmarks/hardware_large.py -->", "<!-- end of real-size CNNs -->"
BUDGET = {"train": 6000, "relu_epochs": 2, "ft_epochs": 1, "lr": 1e-3, "levels": 8, "int_train": 3000,
          "int_epochs": 1, "int_lr": 0.05}
MODELS = {"resnet18": 1000, "vgg16_bn": 500}  # test samples per model (the reports' runs and the agreement)


def fashion32(split: str, n: int | None = None) -> Dataset:
    """Fashion-MNIST padded to 32x32 (2 zero pixels per side), the channel repeated 3 times."""
    data = load_dataset("fashion-mnist", split).head(n)
    x = np.repeat(np.pad(data.x, ((0, 0), (0, 0), (2, 2), (2, 2))), 3, axis=1)
    return Dataset(f"fashion-mnist-32x3-{split}", x, data.y, data.input_scale, data.num_classes)


def trained_model(name: str, train: Dataset):
    import torchvision

    from n2c.ann.train import fine_tune, fit

    def build():
        torch.manual_seed(0)
        relu = fit(getattr(torchvision.models, name)(num_classes=10), train, epochs=BUDGET["relu_epochs"],
                   lr=BUDGET["lr"], batch_size=64, progress=False)
        return fine_tune(relu, train, levels=BUDGET["levels"], quantizer="qcfs", epochs=BUDGET["ft_epochs"],
                         lr=BUDGET["lr"] / 2, batch_size=64, progress=False)
    key = {k: BUDGET[k] for k in ("train", "relu_epochs", "ft_epochs", "lr", "levels")}
    model, hit = cached(f"fashion32-{name}-qcfs", {"budget": key, "model": name, "seed": 0}, build)
    print(f"{name}: {'loaded from the cache' if hit else 'trained'}", flush=True)
    return model


def integer_path(name: str, model, train: Dataset, test: Dataset, lava_samples: int) -> tuple[dict, str]:
    """Export, quantize, integer-exact fine-tune, write back; agreement and Lava checks."""
    from backends.hardware.spec import load_chip
    from backends.lava.lower import run_lava
    from backends.nir.read import read_graph
    from backends.nir.to_layers import import_nir
    from backends.quantize import quantize
    from backends.reference.simulate import predict as predict_integer_network, simulate
    from backends.integer_training import IntegerModel, fine_tune_integer, predict_integer, trainable_parts, write_nir
    from n2c.ann.train import predict
    from n2c.cli.pipeline import export_model

    folder = OUT / f"{name}-fashion32"
    folder.mkdir(parents=True, exist_ok=True)
    graph_path, trained_path = folder / "mtn_T1.nir", folder / "mtn_T1_integer.nir"
    export_model(model, str(graph_path), (3, 32, 32), train.input_scale, timesteps=1, method="mtn",
                 width_data=train.x[:2048])
    fmt = load_chip("loihi2").integer_format()
    nir_graph = read_graph(graph_path)
    net = quantize(import_nir(nir_graph), fmt=fmt)

    ann = predict(model, test.x).argmax(1)
    before = predict_integer_network(net, test.x, 250)
    weights, biases = trainable_parts(nir_graph, net)
    qat = IntegerModel(net, weights, biases)
    start = time.perf_counter()
    part = train.head(BUDGET["int_train"])
    fine_tune_integer(qat, net.source.encode(part.x), part.y, epochs=BUDGET["int_epochs"], lr=BUDGET["int_lr"],
                      progress=False)
    seconds = time.perf_counter() - start
    trained = predict_integer(qat, net.source.encode(test.x))
    write_nir(nir_graph, qat.to_network(), str(trained_path))
    again = quantize(import_nir(trained_path), fmt=fmt)
    after = predict_integer_network(again, test.x, 250)
    x = test.x[:lava_samples]
    lava_equal = bool(np.array_equal(run_lava(again, x, progress=False), simulate(again, x).output))
    row = {"model": name, "samples": len(test.x), "ann_acc": float(np.mean(ann == test.y)),
           "int_acc_before": float(np.mean(before == test.y)), "agree_before": float(np.mean(before == ann)),
           "trained_acc": float(np.mean(trained == test.y)), "int_acc_after": float(np.mean(after == test.y)),
           "agree_after": float(np.mean(after == trained)), "lava_samples": len(x), "lava_equal": lava_equal,
           "train_s": seconds, "weighted_layers": len(weights)}
    print(row, flush=True)
    return row, str(trained_path)


def report(name: str, graph: str, chip: str, test_npz: str, samples: int) -> dict:
    from n2c.cli.main import main as n2c

    out = OUT / f"{name}-fashion32-{chip}"
    start = time.perf_counter()
    code = n2c(["report", graph, "--hardware", chip, "--dataset", test_npz, "--samples", str(samples),
                "-o", str(out)])
    seconds = time.perf_counter() - start
    if code != 0:
        return {"model": name, "chip": chip, "error": f"n2c report exited with {code}"}
    rep = json.loads((out / "report.json").read_text())
    shutil.copy(out / "report.md", DOCS / "hardware" / f"{name}-fashion32-{chip}.md")
    return {"model": name, "chip": chip, "seconds": seconds, "report": rep}


def mapping_seconds(graph: str, chip: str) -> float:
    """Fan-in split + mapping alone, timed apart from the run."""
    from backends.hardware.fan_in import fit_fan_in
    from backends.hardware.mapping import map_network
    from backends.hardware.spec import load_chip
    from backends.nir.to_layers import import_nir
    from backends.quantize import quantize

    spec = load_chip(chip)
    net = quantize(import_nir(graph), fmt=spec.integer_format())
    start = time.perf_counter()
    map_network(fit_fan_in(net, spec), spec, unfit_ok=True)
    return time.perf_counter() - start


def fmt_e(joules) -> str:
    return "–" if joules is None else f"{joules * 1e9:,.1f} nJ"


def replace_block(path: Path, lines: list[str]) -> None:
    text = path.read_text() if path.exists() else ""
    block = "\n".join([BEGIN, *lines, END])
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="ResNet-18 only, 200 test samples")
    parser.add_argument("--lava-samples", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(2)
    warnings.simplefilter("ignore")
    (DOCS / "hardware").mkdir(parents=True, exist_ok=True)
    train = fashion32("train", BUDGET["train"])
    models = {"resnet18": 200} if args.quick else MODELS
    int_rows, hw_rows = [], []
    for name, samples in models.items():
        test = fashion32("test", samples)
        npz = OUT / f"fashion32-test-{samples}.npz"
        OUT.mkdir(parents=True, exist_ok=True)
        np.savez(npz, x=test.x, y=test.y, input_scale=test.input_scale)
        row, graph = integer_path(name, trained_model(name, train), train, test, args.lava_samples)
        int_rows.append(row)
        for chip in ("loihi1", "loihi2"):
            result = report(name, graph, chip, str(npz), samples)
            result["map_s"] = mapping_seconds(graph, chip)
            hw_rows.append(result)
            print({k: v for k, v in result.items() if k != "report"}, flush=True)
    stamp = time.strftime("%Y-%m-%d")
    cmd = ".venv/bin/python benchmarks/hardware_large.py" + (" --quick" if args.quick else "")
    budget = (f"torchvision models with `num_classes=10`, trained on the first {BUDGET['train']} Fashion-MNIST "
              f"training images padded to 32x32 and repeated to 3 channels: ReLU {BUDGET['relu_epochs']} epochs, "
              f"QCFS (L = {BUDGET['levels']}) {BUDGET['ft_epochs']} epoch, then integer-exact fine-tuning "
              f"{BUDGET['int_epochs']} epoch on the first {BUDGET['int_train']} in Loihi 2's format (lr "
              f"{BUDGET['int_lr']} integer units); CPU only. A brief training: the accuracies are "
              "not the models' best, the agreement and the hardware figures are the point.")
    hw = ["## Real-size CNNs: torchvision ResNet-18 and VGG-16 (CIFAR-shaped)", "",
          f"Produced by `{cmd}` ({stamp}); {budget} The graphs are the integer-trained ones (mtn, T = 1).", "",
          "| model | chip | fits | cores (lower bound) | blocks (bound, one layer per core) | chips | relay layers "
          "| fan-in split + mapping | accuracy | dynamic energy | total energy | time per inference | EDP (J·s) "
          "| ANN at 45 nm | samples |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in hw_rows:
        if "error" in r:
            hw.append(f"| {r['model']} | {r['chip']} | {r['error']} | | | | | | | | | | | | |")
            continue
        rep = r["report"]
        m, e, lat = rep["mapping"], rep["energy"], rep["latency"]
        relays = sum(1 for ly in m["layers"] if ly["kind"] == "relay")
        fits = "yes" if m["fits"] else "no: " + ", ".join(u["layer"] for u in m["unfit"])
        hw.append(f"| {r['model']} | {r['chip']} | {fits} | {m['cores']:,} ({m['lower_bound']:,}, "
                  f"{m['cores'] / m['lower_bound']:.2f}x) | {m['blocks']:,} ({m['lower_bound_unshared']:,}, "
                  f"{m['blocks'] / m['lower_bound_unshared']:.2f}x) | {m['chips']} | {relays} | {r['map_s']:.1f} s | "
                  f"{100 * rep['accuracy']:.2f} % | {fmt_e(e['dynamic'])} | {fmt_e(e['total'])} | "
                  f"{lat['inference_s'] * 1e6:.2f} µs | {rep['edp_J_s']:.3g} | {fmt_e(rep['ann']['energy_J'])} | "
                  f"{rep['data']['samples']} |")
    hw += ["", "Full reports: " + ", ".join(f"[{r['model']} on {r['chip']}](hardware/{r['model']}-fashion32-"
                                              f"{r['chip']}.md)" for r in hw_rows if "error" not in r) + ".",
           "Cores are shared where that saves a chip (`--share-cores auto`: on Loihi 1 here); the lower bound is then the "
           "one with shared cores allowed, every resource packed perfectly on its own, hence loose "
           "(docs/hardware-model.md, Lower bound); the blocks column compares with one layer per core. "
           "Loihi 2's per-operation energies and times are Loihi 1 values used as stated proxies [P]; on "
           "Loihi 1 every graded message travels as bit planes (binary spikes), hence its core counts."]
    replace_block(DOCS / "hardware.md", hw)
    ia = ["## Integer-exact path: the integer network is the trained model", "",
          f"Produced by `{cmd}` ({stamp}); {budget}", "",
          "| model | test samples | QCFS ANN | integer SNN before | agreement before (integer vs ANN) | trained "
          "model | integer SNN after | agreement after (integer vs trained) | Lava = reference | integer "
          "training |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in int_rows:
        ia.append(f"| {r['model']} | {r['samples']} | {100 * r['ann_acc']:.2f} % | {100 * r['int_acc_before']:.2f} % "
                  f"| {100 * r['agree_before']:.2f} % | {100 * r['trained_acc']:.2f} % | "
                  f"{100 * r['int_acc_after']:.2f} % | {100 * r['agree_after']:.2f} % | "
                  f"{'yes' if r['lava_equal'] else 'NO'} ({r['lava_samples']} samples) | {r['train_s']:.0f} s |")
    weak = [r for r in int_rows if r["ann_acc"] < 0.5]
    if weak:
        ia += ["", "Did not learn in this budget: " + ", ".join(f"{r['model']} (QCFS ANN {100 * r['ann_acc']:.1f} %)"
                                                           for r in weak)
               + ". Its agreement and hardware figures stand; its accuracies say nothing about the model."]
    replace_block(DOCS / "integer_accuracy.md", ia)
    print(f"wrote {DOCS / 'hardware.md'} and {DOCS / 'integer_accuracy.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
