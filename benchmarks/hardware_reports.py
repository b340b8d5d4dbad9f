"""Hardware reports of the digits demo network and a VGG-style Fashion-MNIST network on
Loihi 1 and Loihi 2, each across T: the one-timestep network (mtn, T = 1) next to the same
QCFS model with IF neurons at T = 2, 4 and 8.

    .venv/bin/python benchmarks/hardware_reports.py             # both networks, both chips
    .venv/bin/python benchmarks/hardware_reports.py --quick     # digits only

* The digits network is the demo's (n2c.cli.demo: DigitsCNN, L = 8, 60 epochs, seed 0).
* The Fashion network is n2c.models.VGGStyle at width 8, trained as benchmarks/accuracy.py
  trains it (ReLU, then a QCFS fine-tune, L = 8; cached under out/cache/benchmarks/). At
  width 16 its pool→dense layer has a folded fan-in of 32·14·14 = 6272 axons, which does
  not fit the 4096 input axons of a core (see docs/hardware-model.md); width 8 needs 3136.

Every report is written by the CLI, ``n2c report GRAPHS --hardware CHIP -o DIR``, into
out/hardware/<network>-<chip>/ (report.json, report.md, report.html). The summary goes
to docs/results/hardware.md, and each report.md is copied to docs/results/hardware/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import backends.lava  # noqa: F401,E402  (Lava fixes the multiprocessing start method first)
from accuracy import BUDGETS, LEVELS  # noqa: E402
from integer_accuracy import cached  # noqa: E402
from n2c.cli.main import main as n2c  # noqa: E402
from n2c.data import load_dataset  # noqa: E402
from n2c.models import DigitsCNN, build_model  # noqa: E402
from n2c.cli.pipeline import export_model  # noqa: E402
from n2c.ann.train import fine_tune, fit, train  # noqa: E402

OUT = ROOT / "out" / "hardware"
DOCS = ROOT / "docs" / "results"
IF_T = (2, 4, 8)
CHIPS = ("loihi1", "loihi2")


def digits_model():
    torch.manual_seed(0)  # the demo's recipe (n2c.cli.demo.run_demo)
    return train(DigitsCNN(levels=8), load_dataset("digits", "train"), epochs=60)


def fashion_model(width: int = 8):
    """VGGStyle(width) with benchmarks/accuracy.py's Fashion budget: ReLU, then a QCFS fine-tune."""
    budget = BUDGETS["fashion-mnist"]
    train_set = load_dataset("fashion-mnist", "train").head(budget["train"])

    def build():
        torch.manual_seed(0)
        relu = fit(build_model("vgg", tuple(train_set.x.shape[1:]), 10, act="relu", width=width), train_set,
                   epochs=budget["relu_epochs"], lr=budget["lr"], batch_size=128, progress=False)
        return fine_tune(relu, train_set, levels=LEVELS, quantizer="qcfs", epochs=budget["ft_epochs"],
                         lr=budget["lr"] / 2, batch_size=128, progress=False)
    model, hit = cached(f"fashion-mnist-vgg{width}-qcfs", {"budget": budget, "width": width, "levels": LEVELS,
                                                          "seed": 0}, build)
    print(f"fashion VGG width {width}: {'loaded from the cache' if hit else 'trained'}")
    return model


def export_graphs(model, name: str, shape, scale, train_x) -> list[str]:
    """As `n2c export --dataset`: the training data's largest currents keep the sums inside 16 bits."""
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "mtn_T1.nir"]
    export_model(model, str(paths[0]), shape, scale, timesteps=1, method="mtn", width_data=train_x)
    for t in IF_T:
        paths.append(folder / f"if_T{t}.nir")
        export_model(model, str(paths[-1]), shape, scale, timesteps=t, method="if", width_data=train_x)
    return [str(p) for p in paths]


def fmt_e(joules) -> str:
    return "–" if joules is None else f"{joules * 1e9:,.1f} nJ"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="digits only")
    args = parser.parse_args()
    torch.set_num_threads(2)
    networks = [("digits", "digits", digits_model)]
    if not args.quick:
        networks.append(("fashion-vgg8", "fashion-mnist", fashion_model))
    (DOCS / "hardware").mkdir(parents=True, exist_ok=True)
    lines = ["# Hardware reports: digits and Fashion-MNIST on Loihi 1 and Loihi 2", "",
             "Produced by `.venv/bin/python benchmarks/hardware_reports.py` "
             f"({time.strftime('%Y-%m-%d')}); each report by `n2c report GRAPHS --hardware CHIP -o DIR`. "
             "Model and constants: [docs/hardware-model.md](../hardware-model.md). Loihi 2 per-operation "
             "energies and times are Loihi 1 values used as stated proxies [P].", ""]
    for name, dataset, build in networks:
        data = load_dataset(dataset, "test")
        train_x = load_dataset(dataset, "train").head(4096).x
        graphs = export_graphs(build(), name, tuple(data.x.shape[1:]), data.input_scale, train_x)
        for chip in CHIPS:
            out = OUT / f"{name}-{chip}"
            start = time.perf_counter()
            code = n2c(["report", *graphs, "--hardware", chip, "--dataset", dataset, "-o", str(out)])
            lines += [f"## {name} on {chip}", ""]
            if code == 2:  # the one-step graph does not fit: report the IF graph at the largest T in detail
                lines += ["The mtn T = 1 graph does not fit this chip (its row below gives the reason); the "
                          f"detailed report is of IF at T = {IF_T[-1]}.", ""]
                code = n2c(["report", graphs[-1], *graphs[:-1], "--hardware", chip, "--dataset", dataset,
                            "-o", str(out)])
            seconds = time.perf_counter() - start
            if code != 0:
                lines += [f"`n2c report` exited with {code}; see its message above.", ""]
                continue
            report = json.loads((out / "report.json").read_text())
            shutil.copy(out / "report.md", DOCS / "hardware" / f"{name}-{chip}.md")
            m, e, lat = report["mapping"], report["energy"], report["latency"]
            lines += [f"{report['data']['samples']} test samples, report in {seconds:.0f} s. Full report: "
                      f"[hardware/{name}-{chip}.md](hardware/{name}-{chip}.md) (HTML with plots: "
                      f"`{out.relative_to(ROOT)}/report.html`).", "",
                      f"* mapping ({report['method']}, T = {report['timesteps']}): {m['cores']} cores on {m['chips']} chip(s), lower bound "
                      f"{m['lower_bound']} (gap {m['gap']}); {m['blocks']} blocks, one layer per core bound "
                      f"{m['lower_bound_unshared']}",
                      f"* energy per inference: {fmt_e(e['dynamic'])} dynamic, {fmt_e(e['total'])} with static "
                      f"(range {fmt_e(e['range']['low'])} – {fmt_e(e['range']['high'])}); "
                      f"time per inference {lat['inference_s'] * 1e6:.2f} µs; EDP {report['edp_J_s']:.3g} J·s",
                      f"* ANN at 45 nm: {fmt_e(report['ann']['energy_J'])}; the SNN by the same convention: "
                      f"{fmt_e(report['ann']['snn_45nm_J']['graded_as_one'])}", "",
                      "| method | T | accuracy | cores | dynamic energy | total energy | time per inference | EDP (J·s) |",
                      "|---|---|---|---|---|---|---|---|"]
            for row in report["across_T"]:
                if not row["fits"]:
                    lines.append(f"| {row['method']} | {row['timesteps']} | – | does not fit: {row['reason']} | | | | |")
                    continue
                lines.append(f"| {row['method']} | {row['timesteps']} | {100 * row['accuracy']:.2f} % | "
                             f"{row['cores']} | {fmt_e(row['energy_dynamic_J'])} | {fmt_e(row['energy_total_J'])} | "
                             f"{row['inference_s'] * 1e6:.2f} µs | {row['edp_J_s']:.3g} |")
            lines.append("")
    old = (DOCS / "hardware.md").read_text() if (DOCS / "hardware.md").exists() else ""
    begin, end = "<!-- real-size CNNs: benchmarks/hardware_large.py -->", "<!-- end of real-size CNNs -->"
    if begin in old and end in old:  # benchmarks/hardware_large.py's part stays as it is
        lines += ["", old[old.index(begin):old.index(end) + len(end)]]
    (DOCS / "hardware.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {DOCS / 'hardware.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
