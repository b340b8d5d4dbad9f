"""Throughput of the three ways to run the digits network, measured in one run.

    .venv/bin/python benchmarks/throughput.py [--samples N] [--out docs/results/throughput.md]

Trains the demo network (seeded), exports it, then times on the same samples:
the float ANN in torch, the integer reference simulator, and Lava fixed_pt
(compile included, one streamed run). Prints a table and writes it as Markdown.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from n2c.data import load_dataset
from n2c.models import DigitsCNN
from n2c.pipeline import export_model, load_network, run_backend
from n2c.train import predict, train


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=360)
    parser.add_argument("--out", default="docs/results/throughput.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    train_set, test_set = load_dataset("digits", "train"), load_dataset("digits", "test")
    data = test_set.head(min(args.samples, len(test_set)))
    model = train(DigitsCNN(levels=8), train_set, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "digits.nir")
        export_model(model, path, (1, 8, 8), test_set.input_scale)
        _, net = load_network(path)
    seconds = {
        "float ANN, torch (batch of all samples)": timed(lambda: predict(model, data.x), repeat=5),
        "integer reference simulator": timed(lambda: run_backend(net, data.x, "reference"), repeat=5),
        "Lava fixed_pt CPU (compile + run)": timed(lambda: run_backend(net, data.x, "lava", progress=False)),
    }
    ref = seconds["integer reference simulator"]
    lines = [f"# Throughput on digits ({len(data)} test samples, T = 1)", "",
             f"Command: `.venv/bin/python benchmarks/throughput.py --samples {args.samples}`; "
             f"{platform.processor() or platform.machine()}, 2 torch threads. Best of 5 runs (Lava: 1).", "",
             "| runner | seconds | samples/s | time ÷ reference time |", "|---|---|---|---|"]
    for name, s in seconds.items():
        lines.append(f"| {name} | {s:.4f} | {len(data) / s:,.0f} | {s / ref:.2f}× |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
