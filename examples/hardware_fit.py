"""Does my network fit, and what will it cost? The hardware report from Python.

Trains the demo's small QCFS CNN on digits, exports it at T = 1 (multi-threshold neurons),
maps it on Loihi 1, Loihi 2 and a made-up chip with smaller cores (a spec written from
Loihi 2's with two limits changed), and prints cores, energy and latency for each; then
writes the full Loihi 2 report (json, md, html) to out/example_report/.

    .venv/bin/python examples/hardware_fit.py
"""

import json
import tempfile
from pathlib import Path

import torch

from backends.hardware.spec import CHIPS_DIR, load_chip
from backends.hardware.mapping import map_network
from backends.report.render import write_report
from n2c.data import load_dataset
from n2c.models import DigitsCNN
from n2c.cli.pipeline import export_model, load_network, report_network
from n2c.ann.train import train


def small_core_spec(folder: Path) -> str:
    """Loihi 2's spec with 256 neurons and 1024 input axons per core: your own chip is a JSON file."""
    spec = json.loads((CHIPS_DIR / "loihi2.json").read_text())
    spec.update(key="small", name="Small-core chip (example)")
    spec["values"]["neurons_per_core"].update(value=256, tag="P", where="example value")
    spec["values"]["input_axons_per_core"].update(value=1024, tag="P", where="example value")
    path = folder / "small.json"
    path.write_text(json.dumps(spec, indent=1))
    return str(path)


def main():
    torch.manual_seed(0)
    train_set, test_set = load_dataset("digits", "train"), load_dataset("digits", "test")
    model = train(DigitsCNN(levels=8), train_set, epochs=60)
    with tempfile.TemporaryDirectory() as tmp:
        nir_path = str(Path(tmp) / "digits.nir")
        export_model(model, nir_path, (1, 8, 8), test_set.input_scale, timesteps=1)
        _, net = load_network(nir_path)
        for chip in (load_chip("loihi1"), load_chip("loihi2"), load_chip(small_core_spec(Path(tmp)))):
            mapping = map_network(net, chip)
            layers = ", ".join(f"{lm.name} {len(lm.cores)} (bound {lm.lower_bound}, {lm.binding})"
                               for lm in mapping.layers)
            report = report_network(nir_path, chip, test_set)
            e, lat = report["energy"], report["latency"]
            print(f"{chip.name}: {len(mapping.cores)} cores, lower bound {mapping.lower_bound} -- {layers}")
            print(f"    {e['dynamic'] * 1e9:.0f} nJ dynamic + {e['components']['static'] * 1e9:.0f} nJ static per "
                  f"inference, {lat['inference_s'] * 1e6:.1f} us per inference, accuracy {100 * report['accuracy']:.2f} %")
        report = report_network(nir_path, load_chip("loihi2"), test_set)
    for path in write_report(report, "out/example_report"):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
