"""The SpikingJelly ann2snn peer (benchmarks/peers/spikingjelly_ann2snn.py) on small digits networks.

Skipped unless spikingjelly is installed (``pip install -e .[bench]``).

Tolerance: with ``mode="max"`` SpikingJelly's IF neurons (soft reset, v(0) = 0)
rate-code each ReLU to within one spike, i.e. ``s/T`` of the layer scale ``s``;
at T = 64 that is < 2 % of the range per layer, and on these 4-5-layer
networks only low-margin test images flip. Measured: the T = 64 accuracy is
within 0.6 points of the ANN (TinyVGG 96.1 vs 96.1 %, TinyResNet 95.8 vs 96.4 %,
of 360 test images; at T = 1 both are at chance, 10 %). The test allows 5
points (18 images) for float and platform differences; a broken wrapper (no state reset between batches, readout taken at
the wrong step, model not converted, analog ReLUs left in) misses by far more
or fails the other checks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

pytest.importorskip("spikingjelly")
pytest.importorskip("requests")  # spikingjelly.activation_based.ann2snn imports it

from benchmarks.peers.spikingjelly_ann2snn import (  # noqa: E402
    spikingjelly_accuracy, spikingjelly_convert, spikingjelly_version)
from n2c.ann.train import train  # noqa: E402

pytestmark = pytest.mark.slow

TIMESTEPS = [64, 1, 4, 16]  # unsorted on purpose
TOLERANCE = 0.05


class TinyVGG(nn.Module):
    """conv-BN-ReLU ×2 → AvgPool2d → conv-BN-ReLU → AvgPool2d → Flatten → Linear → ReLU → Dropout → Linear."""

    def __init__(self, w: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.AvgPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2 * w * 4, 32), nn.ReLU(), nn.Dropout(0.2),
                                        nn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


class TinyResNet(nn.Module):
    """conv-BN-ReLU → [conv-BN-ReLU-conv-BN + conv1x1-BN shortcut, stride 2] → ReLU → AdaptiveAvgPool2d → Linear."""

    def __init__(self, w: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.conv1 = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(2 * w)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * w)
        self.shortcut = nn.Sequential(nn.Conv2d(w, 2 * w, 1, stride=2, bias=False), nn.BatchNorm2d(2 * w))
        self.act2 = nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * w, 10))

    def forward(self, x):
        x = self.stem(x)
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.head(self.act2(out + self.shortcut(x)))


def ann_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def trained(factory, data) -> nn.Module:
    torch.manual_seed(0)
    return train(factory(), data, epochs=5, progress=False).eval()


@pytest.fixture(scope="module")
def vgg_relu(digits_train):
    # Conv-BN-ReLU (BN fused by SpikingJelly), AvgPool2d, Flatten, Linear, Dropout.
    return trained(TinyVGG, digits_train)


@pytest.fixture(scope="module")
def resnet_relu(digits_train):
    # Residual "+", conv1x1-BN shortcut, AdaptiveAvgPool2d.
    return trained(TinyResNet, digits_train)


def test_version():
    assert spikingjelly_version() == "0.0.0.0.14"


@pytest.mark.parametrize("model_name", ["vgg_relu", "resnet_relu"])
def test_accuracy_approaches_ann(model_name, request, digits_train, digits_test):
    model = request.getfixturevalue(model_name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ann = ann_accuracy(model, digits_test.x, digits_test.y)
    assert ann > 0.9, f"the ANN itself trained badly ({ann:.3f})"

    accs = spikingjelly_accuracy(model, digits_train.x, digits_test.x, digits_test.y, TIMESTEPS)

    assert list(accs) == [1, 4, 16, 64]
    assert all(0.0 <= a <= 1.0 for a in accs.values())
    # Rate coding needs time: one step is near chance, more steps only help (small dips allowed).
    assert accs[64] - accs[1] > 0.5
    assert accs[4] <= accs[16] + 0.02 and accs[16] <= accs[64] + 0.02
    assert abs(accs[64] - ann) <= TOLERANCE, (ann, accs)
    # The wrapper converts a copy: same parameters, BatchNorm and ReLU modules still there.
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, nn.ReLU) for m in model.modules())


def test_one_simulation_matches_separate_runs(vgg_relu, digits_train, digits_test):
    x, y = digits_test.x[:100], digits_test.y[:100]
    both = spikingjelly_accuracy(vgg_relu, digits_train.x, x, y, [8, 16], batch_size=64)
    alone = spikingjelly_accuracy(vgg_relu, digits_train.x, x, y, [8], batch_size=64)
    assert both[8] == alone[8]


def test_every_relu_becomes_an_if_neuron(vgg_relu, digits_train):
    from spikingjelly.activation_based.neuron import IFNode

    snn = spikingjelly_convert(vgg_relu, digits_train.x[:256])
    n_relu = sum(isinstance(m, nn.ReLU) for m in vgg_relu.modules())
    ifs = [m for m in snn.modules() if isinstance(m, IFNode)]
    assert len(ifs) == n_relu == 4
    assert all(m.v_reset is None and m.v_threshold == 1.0 for m in ifs)  # soft reset, threshold 1 after 1/s scaling
    assert not any(isinstance(m, (nn.ReLU, nn.BatchNorm2d)) for m in snn.modules())


class FunctionalReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(F.relu(self.act(self.conv(x))).flatten(1))


def test_functional_relu_is_refused(digits_test):
    # SpikingJelly would leave F.relu analog without a word (its issue #517).
    with pytest.raises(ValueError, match="issue #517"):
        spikingjelly_convert(FunctionalReLU(), digits_test.x[:32])


def test_bad_timesteps(vgg_relu, digits_test):
    with pytest.raises(ValueError, match="timesteps"):
        spikingjelly_accuracy(vgg_relu, digits_test.x, digits_test.x, digits_test.y, [0, 4])
