"""Neuron dynamics alone at T = 32: the parallel neuron's closed form against the
sequential IF loop, on the same input currents, in one run.

    .venv/bin/python benchmarks/parallel_neuron_speed.py

Writes docs/results/parallel_speed.md. (benchmarks/accuracy.py times whole networks.)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from n2c.snn.modules import MultiThresholdIF, ParallelNeuron

ROOT = Path(__file__).resolve().parents[1]


def best_of(fn, x, repeats: int = 5) -> float:
    fn(x)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - start)
    return best


@torch.no_grad()
def main() -> int:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    rows = []
    for T in (8, 16, 32, 64):
        shape = (T * 32, 16, 14, 14)  # [T·B, C, H, W]: 32 samples of a 16x14x14 layer
        x = torch.rand(shape) * 2
        theta = torch.full((16, 1, 1), 1.0)
        seq = MultiThresholdIF(theta, max_spikes=1, timesteps=T)
        par = ParallelNeuron(theta, timesteps=T)
        ts, tp = best_of(seq.counts, x), best_of(par.counts, x)
        rows.append((T, ts, tp))
        print(f"T={T}: sequential {ts * 1e3:.2f} ms, parallel {tp * 1e3:.2f} ms, ratio {ts / tp:.1f}x", file=sys.stderr)
    lines = ["# Parallel neuron vs sequential IF: neuron dynamics", "",
             "Command: `python benchmarks/parallel_neuron_speed.py`", "",
             f"torch {torch.__version__}, 2 threads. Input currents of 32 samples x 16x14x14 neurons over T steps; "
             "best of 5. Sequential IF: the loop over T of `MultiThresholdIF` (one spike per step); parallel: "
             "`ParallelNeuron`'s closed form (sum over T, one floor, spikes first).", "",
             "| T | sequential IF (ms) | parallel neuron (ms) | speed-up |", "|---|---|---|---|"]
    lines += [f"| {T} | {ts * 1e3:.2f} | {tp * 1e3:.2f} | {ts / tp:.1f}x |" for T, ts, tp in rows]
    lines += ["", "Whole-network timings (synapse layers included) are in `accuracy.md`: there the "
              "convolutions, identical for both neurons, dominate, and the memory traffic of running all "
              "T steps as one batch decides the order.", ""]
    out = ROOT / "docs/results/parallel_speed.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
