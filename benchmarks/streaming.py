"""Streaming: peak memory of `n2c simulate` and `n2c report` against the number of samples, and
the time of a 10,000-sample report at T = 8 against the implementation before streaming.

    .venv/bin/python benchmarks/streaming.py                       # graph: Fashion VGG, IF, T = 8
    .venv/bin/python benchmarks/streaming.py --baseline 9f47817    # also time that revision's report

The graph is the Fashion-MNIST VGG-style network (width 8) of benchmarks/hardware_reports.py
exported with --method if --timesteps 8 (out/hardware/fashion-vgg8/if_T8.nir; run that
benchmark first). Every command runs in its own process; its peak resident memory comes from
the kernel (``os.wait4``'s ru_maxrss). 16,000 samples come from the training split (the test
split has 10,000). The baseline revision is checked out into a temporary git worktree and its
report run there, in the same run as this one's. Results go to docs/results/streaming.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRAPH = ROOT / "out" / "hardware" / "fashion-vgg8" / "if_T8.nir"
PY = sys.executable


def measured(args: list[str], cwd: Path = ROOT) -> tuple[float, float]:
    """(seconds, peak resident GiB) of one n2c command in its own process."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    start = time.perf_counter()
    proc = subprocess.Popen([PY, "-m", "n2c", *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if status:
        raise SystemExit(f"n2c {' '.join(args)} failed: {proc.stderr.read().decode()[-500:]}")
    return seconds, usage.ru_maxrss / 2 ** 20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", help="git revision whose report to time in the same run (e.g. 9f47817)")
    p.add_argument("--sizes", default="1000,4000,16000")
    args = p.parse_args()
    if not GRAPH.exists():
        raise SystemExit(f"{GRAPH} is missing; run benchmarks/hardware_reports.py first")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in map(int, args.sizes.split(",")):
            split = "test" if n <= 10000 else "train"
            sim = measured(["simulate", str(GRAPH), "--dataset", "fashion-mnist", "--split", split, "--samples",
                            str(n), "--json"])
            rep = measured(["report", str(GRAPH), "--dataset", "fashion-mnist", "--split", split, "--samples",
                            str(n), "-o", f"{tmp}/r{n}"])
            rows.append({"samples": n, "simulate_s": sim[0], "simulate_GiB": sim[1], "report_s": rep[0],
                         "report_GiB": rep[1]})
            print(rows[-1], flush=True)
        timing = {}
        report_args = ["report", str(GRAPH), "--dataset", "fashion-mnist", "-o", f"{tmp}/now"]
        timing["now"] = measured(report_args)
        if args.baseline:
            base = Path(tmp) / "baseline"
            subprocess.run(["git", "worktree", "add", "-f", "--detach", str(base), args.baseline], cwd=ROOT,
                           check=True, capture_output=True)
            try:
                timing["baseline"] = measured([*report_args[:-1], f"{tmp}/then"], cwd=base)
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, capture_output=True)
            now, then = (json.loads(Path(f"{tmp}/{name}/report.json").read_text()) for name in ("now", "then"))
            timing["same_activity"] = now["activity"] == then["activity"]  # every count, per layer
            timing["same_accuracy"] = now["accuracy"] == then["accuracy"]
            timing["energy_relative_difference"] = abs(now["energy"]["total"] / then["energy"]["total"] - 1)
    write(rows, timing, args)


def write(rows, timing, args) -> None:
    command = "benchmarks/streaming.py" + (f" --baseline {args.baseline}" if args.baseline else "")
    lines = ["# Streaming: memory against samples, and the 10,000-sample report", "",
             f"Command: `{command}` (CPU, {platform.machine()}, 2 cores, one run; each command in its own process, "
             "peak resident memory from the kernel). Graph: the Fashion-MNIST VGG-style network (width 8), IF "
             "neurons, T = 8 (`out/hardware/fashion-vgg8/if_T8.nir`, from benchmarks/hardware_reports.py).", "",
             "| samples | n2c simulate: time | peak memory | n2c report: time | peak memory |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['samples']:,} | {r['simulate_s']:.1f} s | {r['simulate_GiB']:.2f} GiB | "
                     f"{r['report_s']:.1f} s | {r['report_GiB']:.2f} GiB |")
    first, last = rows[0], rows[-1]
    lines += ["", f"From {first['samples']:,} to {last['samples']:,} samples ({last['samples'] / first['samples']:.0f}x): "
              f"simulate's peak memory x{last['simulate_GiB'] / first['simulate_GiB']:.2f}, report's "
              f"x{last['report_GiB'] / first['report_GiB']:.2f} (the data set itself is loaded whole: "
              "Fashion-MNIST's 60,000 training images are 188 MB as float32)."]
    if "baseline" in timing:
        (t_now, m_now), (t_then, m_then) = timing["now"], timing["baseline"]
        lines += ["", f"`n2c report` on all 10,000 Fashion-MNIST test samples at T = 8, in the same run: revision "
                  f"{args.baseline} (before streaming) {t_then:.1f} s and {m_then:.2f} GiB; now {t_now:.1f} s and "
                  f"{m_now:.2f} GiB: {t_then / t_now:.1f}x faster (goal: 5x). Every activity count "
                  f"{'identical' if timing['same_activity'] else 'DIFFERENT'}, accuracy "
                  f"{'identical' if timing['same_accuracy'] else 'DIFFERENT'}; energy per inference within "
                  f"{timing['energy_relative_difference']:.0e} relative (the mean step time, which prices static "
                  "energy, is now an exactly rounded sum; before, a float sum in chunk order)."]
    lines += ["", "Where the time went before (py-spy, 2,000 samples): counting synaptic ops per target neuron "
              "(numpy tensordot over every axis, float64: 62 %) and the reference run (32 %). Now: the counts "
              "apply each axis's map as one torch product (a conv's all-ones channel map as one sum), the "
              "reference frees each value after its last reader and skips work that cannot change a value "
              "(clamps and wraps of values inside the range, a one-spike neuron fires by comparison, integer division done in float64, exact below "
              "2^53), chunks are sized to about 32 MB of messages (13 samples here: cache-sized), and the next "
              "chunk is simulated in a second thread while this one is counted.", ""]
    out = ROOT / "docs" / "results" / "streaming.md"
    out.write_text("\n".join(lines))
    (out.with_suffix(".json")).write_text(json.dumps({"rows": rows, "timing": timing}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
