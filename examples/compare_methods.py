"""Every conversion method on one network, from Python: fine-tune a ReLU CNN into QCFS
and signed-QCFS networks, convert each with every method at a few T, and save one SNN.

    .venv/bin/python examples/compare_methods.py
"""

import warnings

import torch

from n2c.snn.convert import convert
from n2c.data import load_dataset
from n2c.models import build_model
from n2c.snn.io import load_snn, save_snn
from n2c.ann.train import accuracy, fine_tune, fit, predict


def main():
    torch.manual_seed(0)
    train_set, test_set = load_dataset("digits", "train"), load_dataset("digits", "test")
    relu = fit(build_model("resnet", (1, 8, 8), act="relu"), train_set, epochs=20, lr=3e-3, progress=False)
    qcfs = fine_tune(relu, train_set, levels=8, epochs=5, progress=False)  # QCFS L = 8
    signed = fine_tune(relu, train_set, levels=8, quantizer="signed", epochs=5, progress=False)
    for name, model in (("ReLU", relu), ("QCFS", qcfs), ("signed QCFS", signed)):
        print(f"{name:12} ANN accuracy {100 * accuracy(predict(model, test_set.x), test_set.y):.2f} %")

    runs = [("if", qcfs, {}), ("mtn", qcfs, {}), ("sfn", qcfs, {"calib": train_set}), ("parallel", qcfs, {}),
            ("pmsm", signed, {}), ("parallel", relu, {"calib": train_set})]  # the last: training-free
    for method, model, options in runs:
        cells = []
        for t in (1, 4, 8):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                snn = convert(model, method, t, **options)
            cells.append(f"T={t}: {100 * accuracy(predict(snn, test_set.x), test_set.y):6.2f} %")
        source = "ReLU" if model is relu else "signed" if model is signed else "QCFS"
        print(f"{method:9} from {source:7}" + "  ".join(cells))

    snn = convert(qcfs, "mtn", 1)
    save_snn(snn, "out/resnet_mtn.pt")  # torch.jit.load runs it; n2c export writes NIR
    assert torch.equal(load_snn("out/resnet_mtn.pt")(torch.from_numpy(test_set.x)), snn(torch.from_numpy(test_set.x)))
    print("saved out/resnet_mtn.pt (the T = 1 MTN network equals the QCFS ANN exactly)")


if __name__ == "__main__":
    main()
