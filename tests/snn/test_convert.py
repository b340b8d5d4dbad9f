"""Conversion: the one-step SNN equals the QCFS ANN; preparation rules and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from n2c.snn.convert import fold_batchnorm, prepare, to_snn
from n2c.errors import CalibrationError, UnsupportedLayerError
from n2c.ingest.canonical import canonicalize
from n2c.models import DigitsCNN
from n2c.ann.qcfs import QCFS
from n2c.snn.modules import MultiThresholdIF
from n2c.ann.train import accuracy, predict


def test_trained_demo_network_is_accurate(qcfs_model, digits_test):
    assert accuracy(predict(qcfs_model, digits_test.x), digits_test.y) >= 0.95


def test_one_step_snn_reproduces_qcfs_logits_exactly(qcfs_model, digits_test):
    """At T = 1 the multi-threshold SNN computes the same floats as the QCFS ANN.

    The tolerance the issue allows is 1e-5 relative; the implementation is
    bit-identical (same operations in the same order), so we demand equality.
    """
    ann = predict(qcfs_model, digits_test.x)
    snn = predict(to_snn(prepare(qcfs_model), timesteps=1), digits_test.x)
    assert np.array_equal(ann, snn)


def test_snn_neurons_carry_qcfs_thresholds(qcfs_model):
    snn = to_snn(prepare(qcfs_model), timesteps=1)
    lams = [float(m.lam) for m in qcfs_model.modules() if isinstance(m, QCFS)]
    neurons = list(snn.neurons().values())
    assert [float(n.threshold) for n in neurons] == [float(torch.tensor(lam) / 8) for lam in lams]
    assert all(n.max_spikes == 8 and float(n.v_init) == float(n.threshold) / 2 for n in neurons)


def test_timesteps_dividing_levels_split_spikes_over_time(qcfs_model):
    snn = to_snn(prepare(qcfs_model), timesteps=4)
    assert all(n.max_spikes == 2 and n.timesteps == 4 for n in snn.neurons().values())
    snn8 = to_snn(prepare(qcfs_model), timesteps=8)
    assert all(n.max_spikes == 1 for n in snn8.neurons().values())


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, 3)
        self.bn1 = nn.BatchNorm1d(3)

    def forward(self, x):
        return self.bn1(self.fc(torch.flatten(F.relu(self.bn(self.conv(x))), 1)))


def test_batchnorm_folding_is_an_identity():
    torch.manual_seed(0)
    model = ConvBN()
    for bn in (model.bn, model.bn1):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 2)
        bn.bias.data.uniform_(-1, 1)
    model.eval()
    x = torch.randn(16, 1, 8, 8)
    folded = fold_batchnorm(canonicalize(model))
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in folded.modules())
    torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("relu", [F.relu, torch.relu, lambda x: x.clamp(min=0), lambda x: x.relu_()])
def test_every_relu_form_is_found(relu):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return torch.flatten(relu(self.conv(x)), 1)

    gm = canonicalize(Net())
    assert sum(isinstance(m, nn.ReLU) for m in gm.modules()) == 1
    with pytest.raises(CalibrationError, match="ReLU"):
        prepare(Net())


def test_relu_model_without_calibration_is_an_error():
    with pytest.raises(CalibrationError, match="--calib"):
        prepare(DigitsCNN(levels=None))


def test_relu_model_with_calibration_converts(digits_train, digits_test):
    from n2c.ann.train import train
    relu = train(DigitsCNN(levels=None), digits_train, epochs=10, progress=False)
    gm = prepare(relu, levels=16, calib=digits_train.head(500))
    qcfs = [m for m in gm.modules() if isinstance(m, QCFS)]
    assert len(qcfs) == 3 and all(int(q.levels) == 16 and float(q.lam) > 0 for q in qcfs)
    snn = to_snn(gm, timesteps=1)
    assert np.array_equal(predict(gm, digits_test.x), predict(snn, digits_test.x))
    assert accuracy(predict(snn, digits_test.x), digits_test.y) >= accuracy(predict(relu, digits_test.x), digits_test.y) - 0.05


def test_percentile_calibration_is_below_max(digits_train):
    model = DigitsCNN(levels=None)
    lam_max = [float(m.lam) for m in prepare(model, 8, digits_train.head(200), "max").modules() if isinstance(m, QCFS)]
    lam_pct = [float(m.lam) for m in prepare(model, 8, digits_train.head(200), "percentile").modules()
               if isinstance(m, QCFS)]
    assert all(p <= m for p, m in zip(lam_pct, lam_max)) and lam_pct != lam_max


@pytest.mark.parametrize("layer,name", [(nn.Sigmoid(), "Sigmoid"), (nn.GELU(), "GELU")])
def test_unsupported_activation_names_the_layer(layer, name):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), layer, nn.Flatten(), nn.Linear(72, 2))
    with pytest.raises(UnsupportedLayerError, match=f"'1' \\({name}\\)"):
        prepare(model)


def test_maxpool_between_spiking_layers_is_rejected_when_asked():
    """The default runs it as its exact circuit (tests/ann/test_maxpool.py); ``error`` refuses it."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3), QCFS(4), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(18, 2))
    with pytest.raises(UnsupportedLayerError, match="MaxPool2d '2'.*AvgPool2d"):
        prepare(model, maxpool="error")


def test_multi_threshold_neuron_rejects_nonpositive_threshold():
    with pytest.raises(ValueError):
        MultiThresholdIF(0.0, 1, 1)
