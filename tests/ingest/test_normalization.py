"""Models trained on normalized inputs: (x - mean) / std in forward, a BatchNorm on the input,
or torchvision's Normalize in the data pipeline (--input-mean/--input-std). The float networks
compute exactly what the model does on raw inputs; the integer stage folds the normalization
into the first layers and keeps the chip's input the raw unsigned image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backends.reference.simulate import simulate
from n2c.cli.main import main
from n2c.cli.pipeline import load_network
from n2c.ingest.canonical import canonicalize
from n2c.ingest.normalization import Normalized
from tests.conversion_checks import converts_exactly

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's, as torchvision's Normalize gives them


class Body(nn.Module):
    def __init__(self, channels: int = 3):
        super().__init__()
        self.conv, self.conv2 = nn.Conv2d(channels, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.conv2(F.relu(self.conv(x)))), 1))


class InForward(Body):
    """The normalization spelled in forward, with a buffer and a constant made in forward."""

    def __init__(self, spelling: str):
        super().__init__()
        self.spelling = spelling
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))

    def forward(self, x):
        if self.spelling == "buffers":
            x = (x - self.mean) / torch.tensor(STD).view(1, 3, 1, 1)
        elif self.spelling == "methods":
            x = x.sub(self.mean).div(torch.tensor(STD).view(3, 1, 1))
        else:  # one number for every channel, written as a multiplication
            x = (x - 0.5) * 4.0
        return super().forward(x)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.mark.parametrize("spelling", ["buffers", "methods", "scalars"])
def test_a_normalization_in_forward_becomes_one_layer_and_converts(spelling, tmp_path):
    model = InForward(spelling).eval()
    gm = canonicalize(model)
    assert "input_normalization" in dict(gm.named_modules())
    assert not any(n.op in ("call_function", "call_method") for n in gm.graph.nodes)  # no sub/div left
    x = torch.rand(4, 3, 8, 8)
    torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=1e-6)
    converts_exactly(model, (3, 8, 8), tmp_path)


def test_a_batchnorm_on_the_input_converts(tmp_path):
    model = nn.Sequential(nn.BatchNorm2d(3), Body()).eval()
    with torch.no_grad():
        model[0].running_mean.copy_(torch.tensor(MEAN)), model[0].running_var.copy_(torch.tensor(STD) ** 2)
    converts_exactly(model, (3, 8, 8), tmp_path)


def test_a_flat_input_normalized_by_numbers_converts(tmp_path):
    """An MNIST MLP: x.view(-1, 64), then (x - 0.1307) / 0.3081 on the flat input."""
    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 10)

        def forward(self, x):
            x = (x.view(-1, 64) - 0.1307) / 0.3081
            return self.fc2(F.relu(self.fc1(x)))

    converts_exactly(Mlp(), (1, 8, 8), tmp_path)


def test_the_fold_is_exact_at_the_borders(tmp_path):
    """Zero padding of the normalized input holds only the taps inside the image, so the folded
    shift is a bias per output position: the first layer's integer counts equal the ANN's but
    for weight rounding, at the borders as inside (a per-channel fold would be off along them)."""
    from n2c.ann.qcfs import QCFS
    from n2c.cli.pipeline import export_model
    from n2c.snn.convert import prepare
    from tests.conversion_checks import random_images
    model = Normalized(Body(), MEAN, STD).eval()
    data = random_images((3, 8, 8), n=64)
    export_model(model, str(tmp_path / "m.nir"), (3, 8, 8), data.input_scale, levels=8, calib=data)
    ann = prepare(model, levels=8, calib=data)
    first = next(m for m in ann.modules() if isinstance(m, QCFS))
    counts = {}
    first.register_forward_hook(lambda m, i, o: counts.update(k=(o / (m.lam / m.levels)).round().numpy()))
    with torch.no_grad():
        ann(torch.from_numpy(data.x))
    _, net = load_network(str(tmp_path / "m.nir"))
    name = next(layer.name for layer in net.layers if getattr(layer, "kind", None) == "mtn")
    k = np.asarray(simulate(net, data.x).messages[name][0]).reshape(counts["k"].shape)
    border = np.zeros(k.shape[-2:], bool)
    border[[0, -1], :] = border[:, [0, -1]] = True
    off = k != counts["k"]
    assert off[..., border].mean() < 0.02 and off[..., ~border].mean() < 0.02


def test_input_mean_and_std_from_the_command_line(tmp_path, capsys):
    """torchvision's Normalize constants: the data stays raw, the graph normalizes it, and the
    float reference gives the model's classes on normalized inputs exactly."""
    body = Body().eval()
    torch.save(body.state_dict(), tmp_path / "w.pt")
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 256, size=(32, 3, 8, 8)) / 255).astype(np.float32)
    np.savez(tmp_path / "raw.npz", x=x, y=rng.integers(0, 10, 32), input_scale=np.float32(1 / 255))
    arch = "tests.ingest.test_normalization:Body()"
    common = ["--arch", arch, "--calib", str(tmp_path / "raw.npz"), "--levels", "8"]
    assert main(["export", str(tmp_path / "w.pt"), *common, "--input-mean", ",".join(map(str, MEAN)),
                 "--input-std", ",".join(map(str, STD)), "-o", str(tmp_path / "m.nir")]) == 0
    capsys.readouterr()
    assert main(["simulate", str(tmp_path / "m.nir"), "--dataset", str(tmp_path / "raw.npz"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 32  # raw inputs >= 0: the integer input takes them
    assert main(["export", str(tmp_path / "w.pt"), *common, "--input-mean", "0.5", "-o",
                 str(tmp_path / "x.nir")]) == 2
    assert "go together" in capsys.readouterr().err
    assert not (tmp_path / "x.nir").exists()


def test_a_1x1_conv_on_the_input_folds_into_the_padded_conv_after_it(tmp_path):
    """A learned colour mix first (1x1 conv with a bias, no activation), then a padded 3x3 conv:
    the integer stage writes them as one layer on the raw input (exported as two, refused before)."""
    model = nn.Sequential(nn.Conv2d(3, 5, 1), nn.Conv2d(5, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 10)).eval()
    converts_exactly(model, (3, 8, 8), tmp_path)


def test_a_dense_layer_on_the_flat_input_folds_into_the_next(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    converts_exactly(model, (1, 8, 8), tmp_path)
