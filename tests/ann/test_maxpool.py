"""The exact max-pooling circuit (n2c.ann.maxpool): on quantized values it computes the max,
exactly, in the ANN, the one-step SNN, the integer reference and Lava."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from n2c.ann.maxpool import MaxRelay, _pairwise_levels
from n2c.ann.qcfs import QCFS, SignedQCFS
from n2c.errors import UnsupportedLayerError
from n2c.snn.convert import prepare, to_snn


def _net(kernel, stride, padding, per_channel: bool, levels: int = 8):
    lam = torch.tensor([1.0, 2.5, 0.75]).reshape(3, 1, 1) if per_channel else 2.0
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), QCFS(levels, lam), nn.MaxPool2d(kernel, stride, padding),
                         nn.Conv2d(3, 2, 1), QCFS(levels, 3.0), nn.Flatten()).eval()


@pytest.mark.parametrize("n", range(1, 17))
def test_pairwise_levels_compute_the_max(n):
    """The level coefficients, applied with relu, give max(window) for random nonnegative windows."""
    rng = np.random.default_rng(n)
    for _ in range(20):
        values = rng.integers(0, 9, size=n).astype(float)
        basis = values
        for channels, carried in _pairwise_levels(n):
            out = np.maximum(np.array(channels) @ basis, 0)  # a level: relu of each channel
            basis = out
        assert np.array(carried[0]) @ basis == values.max()


@settings(max_examples=30, deadline=None)
@given(kernel=st.sampled_from([1, 2, 3, (2, 3)]), stride=st.sampled_from([None, 1, 2]), pad=st.booleans(),
       per_channel=st.booleans(), levels=st.sampled_from([1, 4, 8]), seed=st.integers(0, 2 ** 16))
def test_circuit_equals_maxpool_in_the_ann_and_the_one_step_snn(kernel, stride, pad, per_channel, levels, seed):
    k = kernel if isinstance(kernel, int) else min(kernel)
    padding = k // 2 if pad else 0
    torch.manual_seed(seed)
    model = _net(kernel, stride, padding, per_channel, levels)
    x = torch.rand(6, 1, 9, 9) * 4
    gm = prepare(model)
    assert any(isinstance(m, MaxRelay) for m in gm.modules())
    assert not any(isinstance(m, nn.MaxPool2d) for m in gm.modules())
    assert torch.equal(gm(x), model(x))  # exact, not close
    assert torch.equal(to_snn(gm, "mtn", 1)(x), model(x))


def test_maxpool_modes():
    model = _net(2, 2, 0, False)
    with pytest.warns(UserWarning, match="replaced by AvgPool2d"):
        assert any(isinstance(m, nn.AvgPool2d) for m in prepare(model, maxpool="avg").modules())
    with pytest.raises(UnsupportedLayerError, match="--maxpool exact"):
        prepare(model, maxpool="error")


def test_signed_input_and_return_indices_are_refused_and_ceil_mode_needs_a_shape():
    signed = nn.Sequential(nn.Conv2d(1, 3, 3), SignedQCFS(4, 1.0), nn.MaxPool2d(2), nn.Flatten()).eval()
    with pytest.raises(UnsupportedLayerError, match="signed quantizer"):
        prepare(signed)
    ceil = nn.Sequential(nn.Conv2d(1, 3, 3), QCFS(4, 1.0), nn.MaxPool2d(2, ceil_mode=True), nn.Flatten()).eval()
    with pytest.raises(UnsupportedLayerError, match="ceil_mode needs the input's shape; pass calibration data"):
        prepare(ceil)  # no calibration data: no shape to place the partial windows


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 30), kernel=st.integers(1, 5), stride=st.integers(1, 4), padding=st.integers(0, 2),
       dilation=st.integers(1, 3))
def test_ceil_mode_padding_gives_torchs_output_size(size, kernel, stride, padding, dilation):
    from n2c.ann.maxpool import ceil_mode_padding
    if 2 * padding > kernel or size + 2 * padding < dilation * (kernel - 1) + 1:
        return  # torch refuses these pools
    pool = nn.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=True)
    e, _ = ceil_mode_padding(pool, (size, size))
    want = pool(torch.zeros(1, 1, size, size)).shape[-1]
    assert 0 <= e < stride
    assert (size + 2 * padding + e - dilation * (kernel - 1) - 1) // stride + 1 == want


@settings(max_examples=40, deadline=None)
@given(size=st.integers(3, 11), kernel=st.sampled_from([2, 3, (2, 3)]), stride=st.sampled_from([None, 2, 3]),
       pad=st.booleans(), dilation=st.sampled_from([1, 2]), per_channel=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_ceil_mode_partial_windows_are_exact(size, kernel, stride, pad, dilation, per_channel, seed):
    """GoogLeNet's MaxPool2d(3, 2, ceil_mode=True): the partial window at the end is padded with zeros."""
    from n2c.data import Dataset
    k = kernel if isinstance(kernel, int) else min(kernel)
    pool = nn.MaxPool2d(kernel, stride, k // 2 if pad else 0, dilation, ceil_mode=True)
    try:
        pool(torch.zeros(1, 1, size, size))
    except RuntimeError:
        return  # a pool torch itself refuses on this size
    torch.manual_seed(seed)
    lam = torch.tensor([1.0, 2.5, 0.75]).reshape(3, 1, 1) if per_channel else 2.0
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), QCFS(4, lam), pool, nn.Conv2d(3, 2, 1), QCFS(4, 3.0),
                          nn.Flatten()).eval()
    x = torch.rand(6, 1, size, size) * 4
    gm = prepare(model, calib=Dataset("x", x[:1].numpy(), np.zeros(1, np.int64), 1 / 255, 2))
    assert not any(isinstance(m, nn.MaxPool2d) for m in gm.modules())
    assert torch.equal(gm(x), model(x))  # exact, not close
    assert torch.equal(to_snn(gm, "mtn", 1)(x), model(x))


def test_sfn_refuses_the_circuit():
    from n2c.data import Dataset
    rng = np.random.default_rng(0)
    calib = Dataset("x", rng.random((8, 1, 8, 8)).astype(np.float32), np.zeros(8, np.int64), 1 / 255, 2)
    with pytest.raises(UnsupportedLayerError, match="--maxpool avg with sfn"):
        to_snn(prepare(_net(2, 2, 0, False)), "sfn", 1, calib=calib)


def _integer_network(tmp_path, model, shape):
    from n2c.cli.pipeline import export_model, load_network
    export_model(model, str(tmp_path / "m.nir"), shape, 1 / 16, timesteps=1)
    return load_network(str(tmp_path / "m.nir"))[1]


def test_integer_reference_relay_counts_are_the_maxpool_of_its_input_counts(tmp_path):
    from backends.reference.simulate import simulate
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), QCFS(8, 2.0), nn.MaxPool2d(3, 2, 1), nn.Conv2d(4, 3, 3),
                          QCFS(8, 3.0), nn.Flatten(), nn.Linear(48, 5)).eval()
    net = _integer_network(tmp_path, model, (1, 12, 12))
    spiking = [layer.name for layer in net.layers if getattr(layer, "kind", None) == "mtn"]
    producer, relay = spiking[0], [n for n in spiking if "_max" in n][-1]
    x = np.random.default_rng(0).integers(0, 17, size=(10, 1, 12, 12)) / 16
    run = simulate(net, x)
    counts = torch.tensor(run.messages[producer][0], dtype=torch.float64)
    assert np.array_equal(run.messages[relay][0], F.max_pool2d(counts, 3, 2, 1).numpy())
    assert counts.max() > 0


@pytest.mark.slow
def test_lava_runs_the_circuit_bit_exactly(tmp_path):
    from backends.lava.lower import run_lava
    from backends.reference.simulate import simulate
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), QCFS(4, 2.0), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(32, 3)).eval()
    net = _integer_network(tmp_path, model, (1, 8, 8))
    x = np.random.default_rng(1).integers(0, 17, size=(3, 1, 8, 8)) / 16
    assert np.array_equal(run_lava(net, x, progress=False), simulate(net, x).output)
