"""The networks users deploy, built by torchvision with random weights (nothing is downloaded), go
through the command line training-free: state_dict + --arch factory, calibration data, export to
NIR, then the integer reference. CIFAR-shaped (3x32x32) to keep the suite fast; ImageNet-shaped
runs are in benchmarks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from n2c.cli.main import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cifar_like(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "cifar_like.npz"
    np.savez(path, x=rng.random((32, 3, 32, 32)).astype(np.float32), y=rng.integers(0, 10, 32),
             input_scale=np.float32(1 / 255))
    return path


@pytest.mark.parametrize("factory", ["resnet18", "vgg11_bn", "mobilenet_v2", "squeezenet1_1"])
def test_torchvision_model_exports_and_runs_on_integers(factory, cifar_like, tmp_path, capsys):
    import torchvision
    torch.manual_seed(0)
    torch.save(getattr(torchvision.models, factory)(num_classes=10).state_dict(), tmp_path / "w.pt")
    arch = f"torchvision.models:{factory}(num_classes=10)"
    assert main(["export", str(tmp_path / "w.pt"), "--arch", arch, "--calib", str(cifar_like), "--levels", "8",
                 "--calib-samples", "32", "--dataset", str(cifar_like), "-o", str(tmp_path / "m.nir")]) == 0
    capsys.readouterr()
    assert main(["simulate", str(tmp_path / "m.nir"), "--dataset", str(cifar_like), "--samples", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] == 4 and result["timesteps"] == 1
    assert sum(result["spikes_per_layer"].values()) > 0
    if factory == "resnet18":  # the stem's MaxPool runs as its circuit
        assert any("maxpool_max" in name for name in result["spikes_per_layer"])


def test_n2c_train_fine_tunes_a_torchvision_factory_model(cifar_like, tmp_path, capsys):
    """`n2c train` with a factory --arch (ResNet-18: a ReLU called twice per block, the stem's MaxPool),
    then export and the integer reference. (MobileNetV2 with random weights has activations near 1e-8
    in its deep layers, too degenerate for an end-to-end check; tests/ann/test_train.py fine-tunes it.)"""
    import torchvision
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / "w.pt")
    arch = "torchvision.models:resnet18(num_classes=10)"
    assert main(["train", str(tmp_path / "w.pt"), "--arch", arch, "--dataset", str(cifar_like), "--epochs", "1",
                 "--levels", "8", "-o", str(tmp_path / "q.pt")]) == 0
    assert main(["export", str(tmp_path / "q.pt"), "--dataset", str(cifar_like), "-o", str(tmp_path / "q.nir")]) == 0
    capsys.readouterr()
    assert main(["simulate", str(tmp_path / "q.nir"), "--dataset", str(cifar_like), "--samples", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] == 2 and any("maxpool_max" in name for name in result["spikes_per_layer"])
