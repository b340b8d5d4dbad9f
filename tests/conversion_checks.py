"""The check every ingestion test makes: a model, calibrated on random 8-bit images, converts
with mtn at T = 1 to an SNN equal to the quantized ANN bit for bit, exports, and the integer
reference predicts the ANN's class wherever that class clearly leads."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from backends.float.simulate import simulate_float
from backends.reference.simulate import predict
from n2c.cli.pipeline import export_model, load_network
from n2c.data import Dataset
from n2c.snn.convert import prepare


def random_images(shape, n=16, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = (rng.integers(0, 256, size=(n, *shape)) / 255).astype(np.float32)  # 8-bit images, as the input encodes them
    return Dataset("random", x, rng.integers(0, 10, n), 1 / 255, 10)


def converts_exactly(model: nn.Module, shape, tmp_path, integer: bool = True):
    """Calibrated (L = 8), converted with mtn at T = 1 and exported: the one-step SNN's outputs
    equal the quantized ANN's bit for bit, and the exported NIR graph, read back and run on the
    float reference, computes them too (to float32 rounding). The integer network (8-bit weights)
    is made and run on the reference.

    ``integer``: its predictions must also be the ANN's wherever the ANN's class leads by more
    than 5 % of the output range. They follow the SNN's but for the flips that rounding weights to
    8 bits causes; in a shallow network those are near ties. Deep networks with random weights are
    chaotic instead: a relative weight noise of 1e-4 already changes GoogLeNet's class on 13 of
    16 images in float, so there only the float checks can be exact (exact integer agreement is
    integer-exact fine-tuning's job, tests/backends/test_integer_training.py). Returns the
    quantized ANN's graph and the integer network, for checks of their own."""
    data = random_images(shape)
    path = str(tmp_path / "m.nir")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # calibration and pooling notes
        snn = export_model(model.eval(), path, shape, data.input_scale, levels=8, calib=data, maxpool="exact")
        quantized = prepare(model.eval(), levels=8, calib=data)
    x = torch.from_numpy(data.x)
    with torch.no_grad():
        ann, spiking = quantized(x), snn(x)
    assert torch.equal(ann, spiking)
    graph, net = load_network(path)
    exported = np.asarray(simulate_float(graph, data.x[None]).output, dtype=np.float64).reshape(ann.shape)
    with torch.no_grad():  # in float64, as the float reference runs: float32 would flip floor() at near ties
        ann64 = quantized.double()(x.double()).numpy()
    np.testing.assert_allclose(exported, ann64, rtol=1e-9, atol=1e-9 * float(np.abs(ann64).max()))
    predictions = predict(net, data.x)
    assert predictions.shape == (len(data.x),)
    if not integer:
        return quantized, net
    top2 = ann.topk(2, dim=1).values
    clear = ((top2[:, 0] - top2[:, 1]) > 0.05 * (ann.max() - ann.min())).numpy()  # not a near tie
    assert clear.sum() >= 4
    assert np.array_equal(predictions[clear], ann.argmax(1).numpy()[clear])
    return quantized, net
