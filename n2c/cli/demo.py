"""The built-in end-to-end run (``make demo`` / ``n2c demo``) on scikit-learn digits.

train QCFS CNN → save checkpoint → n2c export path (load, convert to T = 1, write
NIR) → reference integer simulator and Lava fixed-point simulation → report.
"""

from __future__ import annotations

from pathlib import Path

from n2c.cli.options import positive_int
from n2c.files import make_output_dir

DEMO_ARCH = "n2c.models:DigitsCNN(levels=8)"
ACROSS_T = (4, 8)  # the demo model also exported with IF neurons at these T, for the across-T comparison


def run_demo(out_dir: str = "out", lava_samples: int | None = None, epochs: int = 60) -> dict:
    import torch

    from backends.hardware.spec import load_chip
    from backends.report.build import summary_row
    from backends.report.render import write_report
    from n2c.ann.train import accuracy, predict, train
    from n2c.cli.pipeline import export_model, load_network, report_network, run_backend
    from n2c.data import load_dataset
    from n2c.ingest import load_model
    from n2c.models import DigitsCNN

    torch.set_num_threads(2)
    out = Path(out_dir)
    make_output_dir(out)
    train_set, test_set = load_dataset("digits", "train"), load_dataset("digits", "test")
    print(f"[1/5] training a QCFS CNN (L = 8) on digits: {len(train_set)} train / {len(test_set)} test images")
    torch.manual_seed(0)  # deterministic initialization: the numbers are comparable run to run
    model = train(DigitsCNN(levels=8), train_set, epochs=epochs)
    checkpoint = out / "digits_qcfs.pt"
    torch.save(model.state_dict(), checkpoint)

    nir_path = out / "digits.nir"
    print(f"[2/5] converting to a one-timestep SNN and writing {nir_path}")
    model = load_model(str(checkpoint), arch=DEMO_ARCH)
    snn = export_model(model, str(nir_path), tuple(test_set.x.shape[1:]), test_set.input_scale, timesteps=1,
                       width_data=train_set.x)  # as `n2c export --dataset digits`: sums kept inside 16 bits

    print("[3/5] quantizing to Loihi integers and running the reference simulator")
    _, net = load_network(str(nir_path))
    ref = run_backend(net, test_set.x, "reference")

    lava_data = test_set.head(lava_samples)
    print(f"[4/5] running Lava fixed-point CPU simulation on {len(lava_data)} samples")
    lava = run_backend(net, lava_data.x, "lava")

    results = {
        "ANN (QCFS, float)": accuracy(predict(model, test_set.x), test_set.y),
        "SNN T=1 (float, torch)": accuracy(predict(snn, test_set.x), test_set.y),
        "SNN T=1 (integer, reference)": float((ref.predictions == test_set.y).mean()),
        f"SNN T=1 (integer, Lava fixed_pt{', first %d' % len(lava_data) if lava_samples else ''})":
            float((lava.predictions == lava_data.y).mean()),
    }
    same = (ref.output[:len(lava_data)] == lava.output).all()

    print("[5/5] mapping on Loihi 2 and writing the report (with IF at T = 4 and 8 for comparison)")
    chip = load_chip("loihi2")
    rows = []
    for t in ACROSS_T:
        path = out / f"digits_if_T{t}.nir"
        export_model(model, str(path), tuple(test_set.x.shape[1:]), test_set.input_scale, timesteps=t, method="if",
                     width_data=train_set.x)
        rows.append(summary_row(report_network(str(path), chip, test_set)))
    report = report_network(str(nir_path), chip, test_set)
    report["across_T"] = [summary_row(report), *rows]
    paths = write_report(report, out)

    print(f"\nAccuracy on the digits test split ({len(test_set)} images):")
    for name, acc in results.items():
        print(f"  {name:<44} {100 * acc:6.2f} %")
    print(f"  Lava and reference integer outputs identical: {'yes' if same else 'NO'}")
    print(f"  reference: {len(test_set) / ref.seconds:,.0f} samples/s   Lava: {len(lava_data) / lava.seconds:,.1f} samples/s")
    m = report["mapping"]
    print(f"\nOn Loihi 2 ({m['cores']} cores, lower bound {m['lower_bound']}; per-op energies are Loihi 1 proxies):")
    for row in report["across_T"]:
        print(f"  {row['method']:>4} T={row['timesteps']:<2} accuracy {100 * row['accuracy']:6.2f} %   "
              f"{row['energy_dynamic_J'] * 1e9:8.1f} nJ dynamic, {row['energy_total_J'] * 1e9:8.1f} nJ total, "
              f"{row['inference_s'] * 1e6:6.2f} us per inference")
    print(f"  ANN at 45 nm (fp32 MACs): {report['ann']['energy_J'] * 1e9:.1f} nJ")
    print(f"\nwrote {checkpoint}, {nir_path}, " + ", ".join(str(p) for p in paths))
    return {"accuracy": results, "lava_equals_reference": bool(same)}


def add_parser(sub) -> None:
    d = sub.add_parser("demo", help="the built-in end-to-end run on digits",
                       description="Train a small QCFS CNN on digits, convert it to a one-step SNN, export NIR, "
                       "run it on the reference simulator and on Lava, and write a report.")
    d.add_argument("-o", "--output", default="out", help="output directory (default: out)")
    d.add_argument("--samples", type=positive_int, help="run Lava on only the first N test samples (default: all)")
    d.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    run_demo(args.output, lava_samples=args.samples)
    return 0
