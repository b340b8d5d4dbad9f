"""User data larger than memory: peak memory of `n2c simulate` on a few samples of a large data
set, stored as an .npz (read whole) and as a directory of .npy files (memory-mapped), in the
same run.

    .venv/bin/python benchmarks/data_directory.py                  # 20,000 and 80,000 samples
    .venv/bin/python benchmarks/data_directory.py --sizes 5000     # quicker

The data are random float32 CIFAR-sized images (3x32x32, 12 KiB each); the graph is a small
NIR network on them (Conv2d, IF, Affine, IF) run on the float reference for 256 samples. Every
command runs in its own process; its peak resident memory comes from the kernel (``os.wait4``'s
ru_maxrss). Results go to docs/results/data_directory.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nir
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def measured(args: list[str]) -> tuple[float, float]:
    """(seconds, peak resident GiB) of one n2c command in its own process."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    start = time.perf_counter()
    proc = subprocess.Popen([PY, "-m", "n2c", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"n2c {' '.join(args)} failed: {proc.stderr.read().decode()[-500:]}")
    return time.perf_counter() - start, usage.ru_maxrss / 2 ** 20


def graph(path: Path) -> None:
    rng = np.random.default_rng(0)
    shape = (4, 16, 16)
    nodes = {"input": nir.Input(input_type={"input": np.array([3, 32, 32])}),
             "conv": nir.Conv2d(input_shape=(32, 32), weight=rng.normal(0, 0.3, (4, 3, 3, 3)), stride=2, padding=1,
                                dilation=1, groups=1, bias=np.zeros(4)),
             "if1": nir.IF(r=np.ones(shape), v_threshold=np.ones(shape), v_reset=np.zeros(shape)),
             "flat": nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0),
             "fc": nir.Affine(weight=rng.normal(0, 0.1, (10, 1024)), bias=np.zeros(10)),
             "if2": nir.IF(r=np.ones(10), v_threshold=np.ones(10), v_reset=np.zeros(10)),
             "output": nir.Output(output_type={"output": np.array([10])})}
    edges = [("input", "conv"), ("conv", "if1"), ("if1", "flat"), ("flat", "fc"), ("fc", "if2"), ("if2", "output")]
    nir.write(str(path), nir.NIRGraph(nodes=nodes, edges=edges))


def write(n: int, tmp: Path) -> None:
    """The same random data as a directory of .npy files and as an .npz."""
    rng = np.random.default_rng(n)
    x, y = rng.random((n, 3, 32, 32), dtype=np.float32), rng.integers(0, 10, n)
    (tmp / "dir").mkdir()
    np.save(tmp / "dir" / "x.npy", x)
    np.save(tmp / "dir" / "y.npy", y)
    np.savez(tmp / "data.npz", x=x, y=y)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="20000,80000")
    p.add_argument("--write", nargs=2, metavar=("N", "DIR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.write:
        return write(int(args.write[0]), Path(args.write[1]))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        graph(tmp / "g.nir")
        for n in map(int, args.sizes.split(",")):
            # written by a child process: a forked child's peak memory starts at its parent's
            subprocess.run([PY, __file__, "--write", str(n), str(tmp)], check=True)
            run = ["simulate", str(tmp / "g.nir"), "--samples", "256", "--json", "--dataset"]
            npz, mapped = measured(run + [str(tmp / "data.npz")]), measured(run + [str(tmp / "dir")])
            rows.append((n, n * 3 * 32 * 32 * 4 / 2 ** 30, npz, mapped))
            print(rows[-1], flush=True)
            for f in (tmp / "dir" / "x.npy", tmp / "dir" / "y.npy", tmp / "data.npz"):
                f.unlink()
            (tmp / "dir").rmdir()
    lines = ["# User data larger than memory: .npz against a directory of .npy files", "",
             "Command: `.venv/bin/python benchmarks/data_directory.py`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; CPU only. "
             "`n2c simulate GRAPH --dataset DATA --samples 256` (float reference, a Conv2d-IF-Affine-IF graph on "
             "3x32x32 inputs) on random float32 data, each command in its own process; peak resident memory from "
             "the kernel. The .npz is read whole (numpy decodes the zip member through a buffer); the directory's "
             "x.npy is memory-mapped and checked in chunks of 4,096 samples by plain reads, so only the 256 "
             "samples used are mapped in.", "",
             "| samples | x on disk (GiB) | .npz: peak GiB | .npz: s | directory: peak GiB | directory: s | "
             "memory ratio |", "|---|---|---|---|---|---|---|"]
    for n, size, (npz_s, npz_gib), (dir_s, dir_gib) in rows:
        lines.append(f"| {n:,} | {size:.2f} | {npz_gib:.2f} | {npz_s:.1f} | {dir_gib:.2f} | {dir_s:.1f} | "
                     f"{npz_gib / dir_gib:.1f}x |")
    out = ROOT / "docs" / "results" / "data_directory.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
