"""Model definitions nobody on the project wrote, with random weights (nothing is downloaded):
each converts with mtn at T = 1 to an SNN equal to the quantized ANN bit for bit, exports to a
NIR graph whose float run computes the quantized ANN, and runs on the integer reference
(tests/conversion_checks.py). These networks are deep and, with random weights, chaotic (a
1e-4 relative weight noise changes GoogLeNet's class on most images), so 8-bit rounding is
not compared class by class here; integer accuracy on trained networks is in
docs/results/integer_accuracy.md. BatchNorm statistics are measured on random images first, as
training would have set them (benchmarks/ingestion_corpus.py says why). The whole table of
torchvision and timm is docs/results/ingestion.md."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from benchmarks.ingestion_corpus import build, measure_batchnorm
from tests.conversion_checks import converts_exactly

pytestmark = pytest.mark.slow

CORPUS = [
    ("torchvision", "googlenet", 32),  # ceil_mode max pools with partial windows, concatenations
    ("torchvision", "squeezenet1_0", 32),  # Fire concatenations, ceil_mode max pools
    ("torchvision", "densenet121", 32),  # BatchNorm after concatenations, pooled transitions
    ("torchvision", "shufflenet_v2_x0_5", 32),  # channel splits and shuffles
    ("timm", "resnet10t", 32),  # deep stem, ResNet-D average-pool downsampling
    ("timm", "regnetx_002", 32),  # grouped convolutions
    ("timm", "dla34", 32),  # aggregation by concatenation
    ("timm", "repvgg_a0", 32),  # BatchNorm on an identity branch
]


@pytest.mark.parametrize("source, name, size", CORPUS, ids=[f"{s}-{n}" for s, n, _ in CORPUS])
def test_corpus_model_converts_exactly(source, name, size, tmp_path):
    if source == "timm":
        pytest.importorskip("timm")
    torch.manual_seed(0)
    model = build(source, name).eval()
    rng = np.random.default_rng(1)
    measure_batchnorm(model, torch.from_numpy((rng.integers(0, 256, size=(32, 3, size, size)) / 255).astype(np.float32)))
    quantized, net = converts_exactly(model, (3, size, size), tmp_path, integer=False)
    # every rewrite done: no concatenation, channel operation, BatchNorm or MaxPool is left to the SNN
    assert not [n for n in quantized.graph.nodes if n.op == "call_method" or n.target in (torch.cat, torch.concat)]
    assert not [m for m in quantized.modules() if isinstance(m, (nn.BatchNorm2d, nn.MaxPool2d))]
    assert sum(getattr(layer, "kind", None) == "mtn" for layer in net.layers) >= 10
