"""n2c's Lava lowering against lava-dl netx, on the same IF network in the same run.

    .venv/bin/python benchmarks/lava_vs_netx.py             # 100 digits test samples, T = 8
    .venv/bin/python benchmarks/lava_vs_netx.py --quick     # 20 samples

The network: a NIR graph of NIR IF neurons (the neurons netx can carry: one binary spike,
reset to 0), digits 1×8×8 → Conv 3×3 (8) → IF → SumPool 2 → Conv 3×3 (16) → IF → SumPool 2 →
Flatten → Affine (10) → IF → Output, weights drawn once (seeded) and scaled so that every
layer fires; the input is the digits test set as integers (0..16), T steps each. Both runners
get the same integer network (``quantize(graph, fmt=NETX_FORMAT)``, what ``n2c export --to
netx`` writes):

* n2c: ``backends.lava.lower.run_lava_potentials`` (``n2c simulate --backend lava``'s code);
* netx: the file of ``n2c export --to netx``, loaded by ``hdf5.Network`` and run with a
  RingBuffer source and sink (``benchmarks/peers/netx_lava.py``).

Each runs ``--repeats`` times, alternating; the best run's steps/s count (shared machine).
Their outputs must be equal bit for bit (n2c's readout = c · the last layer's spike count).
Results go to docs/results/lava_vs_netx.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import nir
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.peers.netx_lava import run_netx  # noqa: E402  (first: it sets Lava's start method)
from backends.lava.lower import run_lava_potentials  # noqa: E402
from backends.lava.netx import NETX_FORMAT, export_netx  # noqa: E402
from backends.nir.to_layers import import_nir  # noqa: E402
from backends.quantize import quantize  # noqa: E402
from backends.reference.simulate import run_encoded  # noqa: E402
from n2c.data import load_dataset  # noqa: E402

DT = 1e-3


def if_graph(seed: int = 0) -> nir.NIRGraph:
    """The IF network above (r = 1/dt: one step adds the input itself, threshold 1)."""
    rng = np.random.default_rng(seed)

    def neuron(shape):
        n = int(np.prod(shape))
        return nir.IF(r=np.full(shape, 1 / DT), v_threshold=np.ones(shape), v_reset=np.zeros(shape)) if n else None

    def conv(cin, cout, hw, std):
        return nir.Conv2d(input_shape=np.array([hw, hw]), weight=rng.normal(0, std, (cout, cin, 3, 3)),
                          stride=np.array([1, 1]), padding=np.array([1, 1]), dilation=np.array([1, 1]), groups=1,
                          bias=np.zeros(cout))

    def pool():
        return nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
    nodes = {"input": nir.Input(input_type={"input": np.array([1, 8, 8])}),
             "c1": conv(1, 8, 8, 0.02), "n1": neuron((8, 8, 8)), "p1": pool(),
             "c2": conv(8, 16, 4, 0.12), "n2": neuron((16, 4, 4)), "p2": pool(),
             "flat": nir.Flatten(start_dim=0, end_dim=-1, input_type={"input": np.array([16, 2, 2])}),
             "fc": nir.Affine(weight=rng.normal(0, 0.25, (10, 64)), bias=np.zeros(10)), "n3": neuron((10,)),
             "output": nir.Output(output_type={"output": np.array([10])})}
    names = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names, names[1:])), type_check=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--timesteps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20 samples, 2 repeats")
    parser.add_argument("-o", "--output", default=str(ROOT / "docs/results/lava_vs_netx.md"))
    args = parser.parse_args(argv)
    samples, repeats, t = (20, 2, args.timesteps) if args.quick else (args.samples, args.repeats, args.timesteps)
    test = load_dataset("digits", "test").head(samples)
    graph = import_nir(if_graph())
    net = quantize(graph, 1.0, DT, timesteps=t, fmt=NETX_FORMAT)
    x = np.rint(test.x / test.input_scale).astype(np.int64)  # the digits' integer pixels, 0..16
    s_in = np.broadcast_to(x, (t, *x.shape)).copy()
    reference = run_encoded(net, s_in)
    rates = {name: float(m.mean()) for name, m in reference.messages.items() if name in ("n1", "n2", "n3")}
    runs: dict[str, list[dict]] = {"n2c": [], "netx": []}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = str(Path(tmp) / "net.h5")
        model = export_netx(graph, path, 1.0, DT)
        for _ in range(repeats):
            timing: dict = {}
            start = time.perf_counter()
            potentials, _ = run_lava_potentials(net, s_in, progress=False, timing=timing)
            timing["total_s"] = time.perf_counter() - start
            runs["n2c"].append(timing)
            n2c_out = potentials[-1]
            spikes, netx_timing = run_netx(path, model, s_in, t)
            runs["netx"].append(netx_timing)
            netx_out = model.readout_weight * spikes.sum(axis=0)
            print(f"n2c {timing['steps'] / timing['run_s']:.0f} steps/s, netx "
                  f"{netx_timing['steps'] / netx_timing['run_s']:.0f} steps/s", file=sys.stderr, flush=True)
    equal = bool(np.array_equal(n2c_out, netx_out)) and bool(np.array_equal(n2c_out, reference.output))
    best = {k: max(v, key=lambda r: r["steps"] / r["run_s"]) for k, v in runs.items()}
    rate = {k: r["steps"] / r["run_s"] for k, r in best.items()}
    command = ".venv/bin/python benchmarks/lava_vs_netx.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = ["# Lava: n2c's lowering against lava-dl netx", "", f"Command: `{command.strip()}`", "",
             f"Machine: {platform.machine()}, 2 cores shared with other jobs (the ratio compares runs "
             f"alternated in one process); lava-nc 0.10.0, lava-dl 0.6.0, `Loihi2SimCfg(select_tag=\"fixed_pt\")`, "
             f"CPU only. {samples} digits test samples, T = {t} steps each, {repeats} runs each, alternating; "
             "the best run counts.", "",
             "Network: NIR IF neurons (netx's CUBA neurons: one binary spike, reset to 0), "
             "1×8×8 → Conv 3×3 (8) → IF → SumPool 2 → Conv 3×3 (16) → IF → SumPool 2 → Flatten → "
             "Affine (10) → IF → Output, seeded random weights; firing rates "
             + ", ".join(f"{k} {100 * v:.1f} %" for k, v in rates.items()) + ". Both run the integer network "
             "`n2c export --to netx` writes (biases in multiples of 64).", "",
             "| runner | build s | compile s | run s | steps | steps/s | samples/s (run) |",
             "|---|---|---|---|---|---|---|"]
    for name, label in (("n2c", "n2c (`backends.lava.lower`, as `n2c simulate --backend lava`)"),
                        ("netx", "lava-dl netx (`hdf5.Network` on the exported file)")):
        r = best[name]
        build = r.get("build_s", r["total_s"] - r["compile_s"] - r["run_s"])
        lines.append(f"| {label} | {build:.2f} | {r['compile_s']:.2f} | {r['run_s']:.2f} | {r['steps']} | "
                     f"{rate[name]:.0f} | {samples / r['run_s']:.1f} |")
    lines += ["", f"n2c runs **{rate['n2c'] / rate['netx']:.2f}×** netx's steps per second. Outputs equal bit for "
              f"bit (n2c's readout, netx's {model.readout_weight} × last-layer spike count, and the reference): "
              f"{'yes' if equal else '**no**'}.", "",
              "All runs (steps/s): n2c " + ", ".join(f"{r['steps'] / r['run_s']:.0f}" for r in runs["n2c"])
              + "; netx " + ", ".join(f"{r['steps'] / r['run_s']:.0f}" for r in runs["netx"]) + ".", "",
              "n2c's steps include its pipeline flush (one step per synapse Process and a window per "
              "parallel neuron); netx's one step per block. *build* is making the Processes (n2c: also "
              "reading the sinks and stopping), *compile* Lava's compiler and runtime start.", ""]
    out = Path(args.output)
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
