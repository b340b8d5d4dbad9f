"""torchvision's CNNs through n2c, training-free, with random weights (nothing is downloaded):
ingest, calibrate on random images, convert at T = 1, check the SNN against the quantized ANN,
export to NIR, quantize to Loihi's integers, and map on Loihi 1 and Loihi 2.

    .venv/bin/python benchmarks/torchvision_models.py            # CIFAR-shaped and ImageNet-shaped
    .venv/bin/python benchmarks/torchvision_models.py --quick    # CIFAR-shaped only

Accuracy is not the point here (random weights); the table says what converts, whether the
one-step SNN equals the quantized ANN on every sample tried, how large the integer network is,
and whether and how it fits each chip (cores against the lower bound, mapping time), or which
layers cannot fit one core and why. Results go to docs/results/torchvision.md.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "torchvision.md"
MODELS = ["resnet18", "resnet34", "vgg11_bn", "vgg16_bn", "mobilenet_v2"]
SAMPLES = 8


def run(name: str, shape: tuple[int, ...], tmp: Path) -> dict:
    import torchvision

    from backends.hardware.fan_in import fit_fan_in
    from backends.hardware.mapping import map_network
    from backends.hardware.spec import load_chip
    from n2c.cli.pipeline import export_model, load_network
    from n2c.data import Dataset
    from n2c.snn.convert import prepare, to_snn

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((SAMPLES, *shape)).astype(np.float32)
    calib = Dataset("random", x, np.zeros(SAMPLES, np.int64), 1 / 255, 10)
    row = {"model": name, "input": "x".join(map(str, shape))}
    start = time.perf_counter()
    model = getattr(torchvision.models, name)(num_classes=10).eval()
    ann = prepare(model, levels=8, calib=calib)
    snn = to_snn(ann, "mtn", 1)
    with torch.no_grad():
        xt = torch.from_numpy(x)
        row["snn_equals_ann"] = bool(torch.equal(snn(xt), ann(xt)))
    path = tmp / f"{name}.nir"
    export_model(snn, str(path), shape, 1 / 255)
    _, net = load_network(str(path))
    row["neuron_layers"] = sum(1 for layer in net.layers if hasattr(layer, "neuron_kind"))
    row["convert_s"] = time.perf_counter() - start
    for chip in ("loihi1", "loihi2"):
        t = time.perf_counter()
        try:
            fitted = fit_fan_in(net, load_chip(chip))
            mapping = map_network(fitted, load_chip(chip))
            relays = sum(1 for layer in fitted.layers if getattr(layer, "kind", None) == "relay")
            row[chip] = (f"{len(mapping.cores)} cores on {mapping.chips} chip(s), bound {mapping.lower_bound} "
                         f"({len(mapping.cores) / mapping.lower_bound:.2f}x; {len(mapping.blocks)} blocks, bound "
                         f"{mapping.lower_bound_unshared} one layer per core), {relays} relay layers, "
                         f"{time.perf_counter() - t:.1f} s")
        except Exception as e:  # MappingError: the layers that cannot fit one core
            text = str(e)
            layers = text.count("layer '")
            need = sorted({part.split(" needs ")[1].split(" (limit")[0] for part in text.split("layer '")[1:]})
            row[chip] = f"does not fit: {layers} layer(s) need {', '.join(need[:3])} ({time.perf_counter() - t:.1f} s)"
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CIFAR-shaped inputs only")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import tempfile
    shapes = [(3, 32, 32)] + ([] if args.quick else [(3, 224, 224)])
    rows = []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for shape in shapes:
            for name in MODELS:
                if shape[1] == 224 and name.startswith("vgg"):
                    continue  # ImageNet VGGs: 138 M weights, past this machine's budget for a table
                row = run(name, shape, Path(tmp))
                print(row, flush=True)
                rows.append(row)
    lines = ["# torchvision CNNs through n2c", "",
             "```", ".venv/bin/python benchmarks/torchvision_models.py" + (" --quick" if args.quick else ""), "```", "",
             __doc__.split("\n\n", 2)[2].strip(), "",
             f"Random weights, λ calibrated (max) on {SAMPLES} random images, L = 8, `mtn` at T = 1; the SNN "
             f"is compared with the quantized ANN on those {SAMPLES} images (exact equality of the outputs).", "",
             "| model | input | SNN = quantized ANN | neuron layers | convert + export + quantize | Loihi 1 | Loihi 2 |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['input']} | {'yes' if r['snn_equals_ann'] else 'NO'} | {r['neuron_layers']} | "
                     f"{r['convert_s']:.1f} s | {r['loihi1']} | {r['loihi2']} |")
    lines += ["", "A neuron with more inputs than one core has axons or synaptic memory (a 3x3 convolution over "
              "512 channels: 4,608 axons against 4,096; a pool folded into the next layer's synapses) is split "
              "exactly with relay neurons (`backends/hardware/fan_in.py`, docs/hardware-model.md): pooled sums "
              "through a relay layer, or partial sums by input channel joined with weights of 1. The relay "
              "layers column counts them. What still does not fit is a neuron the split cannot help: too many "
              "bit planes per input on Loihi 1 (binary spikes), a depthwise convolution (split only by output "
              "channel), or a join wider than a core.", "",
              "Cores are shared as `n2c report --share-cores auto` does: blocks of several layers share a core "
              "only where that saves a chip (here on Loihi 1). The bound before the semicolon is the one of the "
              "mode used: with shared cores, every resource packed perfectly on its own (loose); after it, the "
              "blocks against the bound with one layer per core (docs/hardware-model.md, Lower bound)."]
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
