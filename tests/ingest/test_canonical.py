"""The canonical graph (n2c.ingest.canonical): the spellings of everyday PyTorch code become the
canonical modules, computing the same function."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from n2c.ingest.canonical import ClippedReLU, canonicalize


class ReusedReLU(nn.Module):
    """torchvision's BasicBlock calls one nn.ReLU twice."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.relu = nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1), nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv2(self.relu(self.conv1(x))) + x)


def test_a_module_called_twice_is_two_layers():
    model = ReusedReLU().eval()
    gm = canonicalize(model)
    targets = [n.target for n in gm.graph.nodes if n.op == "call_module"]
    assert len(targets) == len(set(targets)) == 4 and "relu_call1" in targets
    x = torch.randn(3, 2, 5, 5)
    assert torch.equal(gm(x), model(x))


def test_torchvision_resnet_is_not_recurrent(tmp_path):
    """Once read as a recurrent graph (QuantizationError: recurrent edge layer1_0_conv2 -> layer1_0_relu)."""
    import torchvision
    from n2c.data import Dataset
    from n2c.export.nir import to_nir
    from n2c.snn.convert import convert
    from backends.nir.to_layers import import_nir
    torch.manual_seed(0)
    x = torch.rand(8, 3, 32, 32)
    calib = Dataset("random", x.numpy(), torch.zeros(8, dtype=torch.long).numpy(), 1 / 255, 10)
    snn = convert(torchvision.models.resnet18(num_classes=10).eval(), "mtn", 1, calib, levels=4)
    graph = import_nir(to_nir(snn, (3, 32, 32), 1 / 255))
    assert not graph.recurrent


class Spellings(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.relu6, self.tanh = nn.Conv2d(1, 4, 3, padding=1), nn.ReLU6(), nn.Hardtanh(0.0, 3.0)

    def forward(self, x):
        x = self.relu6(self.conv(x))
        x = F.relu6(x) + F.hardtanh(x, 0.0, 1.5) + torch.clamp(x, 0, 2)
        x = self.tanh(x)
        x = F.max_pool2d(x, 2)
        x = F.avg_pool2d(x, kernel_size=2, stride=1)
        x = F.dropout(x, 0.5, self.training)
        return F.adaptive_avg_pool2d(x, (1, 1))


def test_clipped_relus_pooling_and_dropout_spellings():
    model = Spellings().eval()
    gm = canonicalize(model)
    modules = [type(gm.get_submodule(n.target)) for n in gm.graph.nodes if n.op == "call_module"]
    assert modules.count(ClippedReLU) == 5
    assert nn.MaxPool2d in modules and nn.AvgPool2d in modules and nn.AdaptiveAvgPool2d in modules
    caps = sorted(m.cap for m in gm.modules() if isinstance(m, ClippedReLU))
    assert caps == [1.5, 2.0, 3.0, 6.0, 6.0]
    x = torch.randn(4, 1, 8, 8) * 8
    assert torch.equal(gm(x), model(x))


@pytest.mark.parametrize("quantizer", ["calibrate", "fine_tune"])
def test_relu6_quantizers_never_exceed_six(quantizer):
    from n2c.ann.calibration import calibrate_thresholds
    from n2c.ann.qcfs import QCFS
    from n2c.ann.train import relu_to_quantizer
    from n2c.data import Dataset
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU6(), nn.Flatten()).eval()
    with torch.no_grad():
        model[0].weight.fill_(5.0)  # every input far above 6
    x = torch.rand(16, 1, 5, 5)
    data = Dataset("x", x.numpy(), torch.zeros(16, dtype=torch.long).numpy(), 1 / 255, 2)
    gm = calibrate_thresholds(canonicalize(model), data, 8) if quantizer == "calibrate" else \
        relu_to_quantizer(model, 8, calib=data)
    lams = [float(m.lam.max()) for m in gm.modules() if isinstance(m, QCFS)]
    assert lams == [6.0]


def test_a_vision_transformer_is_sent_to_fine_tuning():
    """torchvision's ViT: the one-line error says how it becomes a spiking network (n2c train)."""
    from torchvision.models.vision_transformer import VisionTransformer

    from n2c.errors import UnsupportedLayerError
    vit = VisionTransformer(image_size=28, patch_size=7, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
                            num_classes=10)
    with pytest.raises(UnsupportedLayerError, match="torchvision VisionTransformer .* n2c train MODEL"):
        canonicalize(vit)


def test_a_transformer_block_of_ones_own_is_refused_naming_its_layers():
    """A block nobody recognizes: the error names a layer (LayerNorm) rather than the shape reads
    around it, and counts what else stands in the way (GELU, attention)."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(16)
            self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))

        def forward(self, x):
            h = self.norm(x)
            x = x + self.attn(h, h, h, need_weights=False)[0]
            return x + self.mlp(x)

    from n2c.errors import UnsupportedLayerError
    with pytest.raises(UnsupportedLayerError) as info:
        canonicalize(Block())
    msg = str(info.value)
    assert msg.startswith("layer 'norm' (LayerNorm) cannot be converted to spikes")
    assert "GELU" in msg and "MultiheadAttention" in msg and "\n" not in msg


def test_an_unsupported_function_names_its_source_line():
    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch.sigmoid(self.fc(x))

    from n2c.errors import UnsupportedLayerError
    with pytest.raises(UnsupportedLayerError, match=r"operation 'sigmoid' \(call_function sigmoid\) at "
                                                    r"test_canonical\.py:\d+ `return torch\.sigmoid\(self\.fc\(x\)\)`"):
        canonicalize(Gated())
