"""Model code as people write it: every spelling of flatten between convolutions and linear
layers, functional pooling, dropout and activations, in-place operations, a softmax at the
output; each network goes through conversion and the integer reference and gives, at T = 1,
the quantized ANN's predictions. What has no spiking form is a one-line error naming the
layer and its replacement."""

from __future__ import annotations

import warnings


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from n2c.cli.pipeline import export_model, load_network
from n2c.errors import UnsupportedLayerError
from n2c.ingest.canonical import canonicalize
from backends.reference.simulate import predict
from tests.conversion_checks import converts_exactly, random_images


class CaptumLeNet(nn.Module):
    """captum's CIFAR-10 tutorial net: flattens with x.view(-1, 16 * 5 * 5)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.pool1, self.conv2, self.pool2 = nn.Conv2d(3, 6, 5), nn.MaxPool2d(2, 2), nn.Conv2d(6, 16, 5), \
            nn.MaxPool2d(2, 2)
        self.fc1, self.fc2, self.fc3 = nn.Linear(16 * 5 * 5, 120), nn.Linear(120, 84), nn.Linear(84, 10)
        self.relu1, self.relu2, self.relu3, self.relu4 = nn.ReLU(), nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        x = self.relu3(self.fc1(x))
        x = self.relu4(self.fc2(x))
        return self.fc3(x)


class PytorchExamplesMnist(nn.Module):
    """pytorch/examples' MNIST net: F.relu, F.max_pool2d, dropout modules, torch.flatten, log_softmax."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 8, 3, 1), nn.Conv2d(8, 16, 3, 1)
        self.dropout1, self.dropout2 = nn.Dropout(0.25), nn.Dropout(0.5)
        self.fc1, self.fc2 = nn.Linear(16 * 12 * 12, 32), nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return F.log_softmax(self.fc2(x), dim=1)


class Spellings(nn.Module):
    """One network per flatten spelling, with functional pooling and activations, in place."""

    def __init__(self, flatten: str):
        super().__init__()
        self.flatten = flatten
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True))
        self.blocks = nn.ModuleList([nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)])
        self.head = nn.ModuleDict({"fc": nn.Linear(4 * 4 * 4, 10)})

    def forward(self, x):
        x = self.body(x)
        y = F.relu6(self.blocks[0](x))
        y.add_(x)  # in place residual
        x = F.avg_pool2d(F.relu(self.blocks[1](y), inplace=True), kernel_size=2, stride=2)
        x = F.dropout(x, p=0.2, training=self.training)
        n = {"view_minus_one": lambda t: t.view(-1, 64), "reshape_shape0": lambda t: t.reshape(t.shape[0], -1),
             "size_index": lambda t: t.view(t.size()[0], -1), "torch_reshape": lambda t: torch.reshape(t, (-1, 64)),
             "flatten_method": lambda t: t.flatten(1), "size0_n": lambda t: t.view(t.size(0), 64),
             "adaptive_mean": None, "spatial_mean": lambda t: t.mean((2, 3)),
             "mean_keepdim": lambda t: torch.flatten(torch.mean(t, dim=[-2, -1], keepdim=True), 1)}[self.flatten]
        if n is None:  # global pooling to (B, 4) then a Linear of 4 inputs
            x = F.adaptive_avg_pool2d(x, 2)
            return self.head["fc"](x.view(x.size(0), -1))
        return self.head["fc"](n(x))


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)  # the models' random weights


def test_captum_lenet_view_minus_one_converts(tmp_path):
    converts_exactly(CaptumLeNet(), (3, 32, 32), tmp_path)


def test_pytorch_examples_mnist_net_converts_and_its_log_softmax_is_dropped(tmp_path):
    with pytest.warns(UserWarning, match="log_softmax.* at the output is dropped"):
        canonicalize(PytorchExamplesMnist())
    converts_exactly(PytorchExamplesMnist(), (1, 28, 28), tmp_path)


@pytest.mark.parametrize("flatten", ["view_minus_one", "reshape_shape0", "size_index", "torch_reshape",
                                     "flatten_method", "size0_n", "adaptive_mean", "spatial_mean", "mean_keepdim"])
def test_every_flatten_spelling_converts(flatten, tmp_path):
    model = Spellings(flatten)
    if flatten == "adaptive_mean":
        model.head["fc"] = nn.Linear(16, 10)
    if flatten in ("spatial_mean", "mean_keepdim"):  # global average pooling: one value per channel
        model.head["fc"] = nn.Linear(4, 10)
    converts_exactly(model, (1, 8, 8), tmp_path)


def test_a_view_that_does_not_flatten_each_sample_is_refused():
    class Wrong(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(144, 10)

        def forward(self, x):
            return self.fc(F.relu(self.conv(x)).view(-1, 72))  # 4·6·6 = 144 per sample, not 72

    with pytest.raises(UnsupportedLayerError, match="reshapes to 72 features but 'fc' \\(Linear\\) reads 144") as e:
        canonicalize(Wrong())
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("layer,hint", [(nn.SiLU(), "ReLU"), (nn.GELU(), "transformers only"),
                                        (nn.LeakyReLU(0.1), "slope 0"), (nn.Hardswish(), "ReLU6"),
                                        (nn.Tanh(), "ReLU")])
def test_what_has_no_spiking_form_names_its_replacement(layer, hint):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), layer, nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    with pytest.raises(UnsupportedLayerError, match=f"layer '1' \\({type(layer).__name__}\\) has no spiking form; "
                                                    f"replace it with .*{hint}") as e:
        canonicalize(model)
    assert "\n" not in str(e.value)


def test_functional_silu_and_an_lstm_are_named_too():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return F.silu(self.conv(x))

    with pytest.raises(UnsupportedLayerError, match="silu.* has no spiking form; replace it with ReLU"):
        canonicalize(Functional())
    with pytest.raises(UnsupportedLayerError, match="LSTM.*recurrent layers have no conversion"):
        canonicalize(nn.Sequential(nn.Flatten(), nn.LSTM(4, 4)))


def test_a_leaky_relu_of_slope_zero_is_a_relu():
    gm = canonicalize(nn.Sequential(nn.Conv2d(1, 2, 3), nn.LeakyReLU(0.0), nn.Flatten(), nn.Linear(72, 3)))
    assert any(type(m) is nn.ReLU for m in gm.modules())


class AvgDown(nn.Module):
    """timm's ResNet-D downsampling: AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)."""

    def __init__(self, fc_in: int):
        super().__init__()
        self.conv, self.pool = nn.Conv2d(1, 4, 3, padding=1), nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)
        self.fc = nn.Linear(fc_in, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(F.relu(self.conv(x))), 1))


def test_avg_pooling_flags_that_change_nothing_convert_and_the_others_are_named(tmp_path):
    converts_exactly(AvgDown(4 * 4 * 4), (1, 8, 8), tmp_path)  # 8x8: the 2x2 windows tile it, no padding
    with pytest.raises(UnsupportedLayerError, match="AvgPool2d .pool.: ceil_mode adds a partial window on a 7x7 input") as e:
        converts_exactly(AvgDown(4 * 4 * 4), (1, 7, 7), tmp_path)
    assert "\n" not in str(e.value)


class BatchNormAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d: a BatchNorm2d whose own forward applies an activation after it."""

    def __init__(self, channels: int):
        super().__init__(channels)
        self.drop, self.act = nn.Identity(), nn.ReLU6(inplace=True)

    def forward(self, x):
        torch._assert(x.ndim == 4, "expected 4D input")
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training, 0.1, self.eps)
        return self.act(self.drop(x))


def test_a_batchnorm_subclass_with_its_own_forward_keeps_its_activation(tmp_path):
    """Taken as a BatchNorm leaf, the activation inside would be lost without a word."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), BatchNormAct(4), nn.Conv2d(4, 4, 3, padding=1),
                          BatchNormAct(4), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    with torch.no_grad():
        for bn in (model[1], model[3]):
            bn.running_mean.uniform_(-0.1, 0.1), bn.running_var.uniform_(0.5, 2.0), bn.weight.uniform_(0.5, 1.5)
    gm = canonicalize(model.eval())
    assert sum(isinstance(m, nn.ReLU) for m in gm.modules()) == 2
    assert sum(type(m) is nn.BatchNorm2d for m in gm.modules()) == 2
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(gm(x), model(x), atol=1e-6)
    converts_exactly(model, (1, 8, 8), tmp_path)


def test_timm_mobilenetv2_converts(tmp_path):
    """timm's MobileNetV2: BatchNormAct2d everywhere, linear bottlenecks (two weighted layers in a row).
    With random weights its deep activations are near 1e-8, below what 8-bit integers resolve, so
    only the float SNN is compared (and the integer network is made and run)."""
    timm = pytest.importorskip("timm")
    model = timm.create_model("mobilenetv2_050", pretrained=False, num_classes=10)
    converts_exactly(model, (3, 32, 32), tmp_path, integer=False)
    assert sum(isinstance(m, nn.ReLU) for m in canonicalize(model.eval()).modules()) >= 17  # every activation kept
    _, net = load_network(str(tmp_path / "m.nir"))
    assert predict(net, random_images((3, 32, 32)).x).shape == (16,)


class Fire(nn.Module):
    """SqueezeNet's Fire module: squeeze 1x1, then 1x1 and 3x3 expansions concatenated."""

    def __init__(self, cin: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze, self.expand1, self.expand3 = nn.Conv2d(cin, squeeze, 1), nn.Conv2d(squeeze, expand, 1), \
            nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1(x)), F.relu(self.expand3(x))], 1)


class Inceptionish(nn.Module):
    """Branches with conv + BatchNorm concatenated, max-pooled, concatenated again, then pooled to
    1x1, flattened and classified (GoogLeNet's head)."""

    def __init__(self):
        super().__init__()
        self.fire = Fire(1, 4, 4)
        self.a = nn.Sequential(nn.Conv2d(8, 3, 1), nn.BatchNorm2d(3), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU())
        self.pool, self.head = nn.AdaptiveAvgPool2d(1), nn.Linear(8 + 8, 10)

    def forward(self, x):
        x = F.max_pool2d(self.fire(x), 2)
        y = torch.cat([self.a(x), self.b(x)], dim=1)
        z = torch.cat([x, y], 1)
        return self.head(torch.flatten(self.pool(z), 1))


def test_concatenations_become_sums_of_layers(tmp_path):
    """torch.cat of feature maps: pushed through per-channel layers (ReLU, pooling, BatchNorm) into
    the weighted layers that read it, which split by input channel into a sum; no cat is left."""
    model = Inceptionish()
    with torch.no_grad():
        for bn in (model.a[1], model.b[1]):
            bn.running_mean.uniform_(-0.1, 0.1), bn.running_var.uniform_(0.5, 2.0)
    gm = canonicalize(model.eval())
    assert not any(n.op == "call_function" and n.target is torch.cat for n in gm.graph.nodes)
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(gm(x), model(x), atol=1e-5)
    converts_exactly(model, (1, 8, 8), tmp_path)


def test_a_concatenation_that_cannot_be_split_is_named():
    class AtOutput(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 2), nn.Linear(4, 3)

        def forward(self, x):
            return torch.cat([self.a(x), self.b(x)], 1) * 2

    with pytest.raises(UnsupportedLayerError, match="operation 'cat'.* feeds operation 'mul'.*cannot split") as e:
        canonicalize(AtOutput())
    assert "\n" not in str(e.value)


def test_a_head_that_pools_to_the_output_converts(tmp_path):
    """SqueezeNet's head: a 1x1 conv to the classes, ReLU, global average pooling, flatten: the
    readout reads a pooled conv layer, no Linear."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 10, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten())
    converts_exactly(model, (1, 8, 8), tmp_path)


def test_asymmetric_kernels_convert(tmp_path):
    """Inception's 1x3 and 3x1 convolutions: nir 1.0.8 infers a conv's output size from its first
    kernel dimension alone; the export states the size torch computes."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, (1, 3), padding=(0, 1)), nn.ReLU(),
                          nn.Conv2d(4, 4, (3, 1), padding=(1, 0)), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 10))
    converts_exactly(model, (1, 5, 5), tmp_path)


class DenseBlock(nn.Module):
    """DenseNet: the stem's max-pooled maps and each layer's raw conv output are concatenated, and
    every reader normalizes them with its own BatchNorm (after a max pool, after a conv shared with
    other readers); the transition's 1x1 conv is average-pooled with no activation between."""

    def __init__(self, growth: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(4 + i * growth), nn.ReLU(), nn.Conv2d(4 + i * growth, growth, 3, padding=1))
            for i in range(3))
        self.transition = nn.Sequential(nn.BatchNorm2d(4 + 3 * growth), nn.ReLU(), nn.Conv2d(4 + 3 * growth, 6, 1),
                                        nn.AvgPool2d(2, 2))
        self.head = nn.Sequential(nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 2 * 2, 10))

    def forward(self, x):
        features = [self.stem(x)]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return self.head(self.transition(torch.cat(features, 1)))


def _randomize_batchnorms(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.2, 0.2), bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.2, 0.2)
    return model.eval()


def test_batchnorms_after_concatenations_convert(tmp_path):
    """A BatchNorm after a max pool becomes a depthwise 1x1 conv; after a conv that others read too,
    its reader gets a folded copy of the conv; after an unpadded average pool of a conv, it folds
    through the pool; the pool of a conv becomes one conv."""
    from n2c.snn.convert import fold_batchnorm
    from n2c.ann.linear_chains import fold_linear_chains
    model = _randomize_batchnorms(DenseBlock())
    x = torch.rand(4, 1, 8, 8)
    folded = fold_linear_chains(fold_batchnorm(canonicalize(model)))
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.AvgPool2d)) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
    converts_exactly(model, (1, 8, 8), tmp_path)


def test_a_batchnorm_on_an_identity_branch_converts(tmp_path):
    """RepVGG: conv3x3+BN, conv1x1+BN and a BatchNorm of the input itself, summed, then ReLU. The
    identity branch's weights (γ/σ, near 1) share one 8-bit scale with the convs' (near 0.1) in the
    neurons they all feed, so only the float SNN is compared bit for bit here."""
    class RepBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
            self.k3 = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4))
            self.k1 = nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4))
            self.identity, self.head = nn.BatchNorm2d(4), nn.Linear(4 * 8 * 8, 10)

        def forward(self, x):
            x = self.stem(x)
            return self.head(torch.flatten(F.relu(self.k3(x) + self.k1(x) + self.identity(x)), 1))

    converts_exactly(_randomize_batchnorms(RepBlock()), (1, 8, 8), tmp_path, integer=False)


def test_googlenet_ceil_mode_max_pools_convert(tmp_path):
    """MaxPool2d(3, 2, ceil_mode=True) on 8x8 maps adds a partial window at the end (4x4 out, not 3x3)."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                          nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2, ceil_mode=True), nn.Flatten(),
                          nn.Linear(4 * 2 * 2, 10))
    assert model[2](torch.zeros(1, 4, 8, 8)).shape[-1] == 4
    converts_exactly(model, (1, 8, 8), tmp_path)


def test_a_dead_channel_that_rounds_the_threshold_away_is_named(tmp_path):
    """A channel whose BatchNorm variance is ~0 folds into weights ~300x the others; the layer's one
    8-bit scale then rounds its threshold to zero: the error says so and what to do."""
    from n2c.errors import QuantizationError
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, groups=4),
                          nn.BatchNorm2d(4), nn.ReLU6(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)).eval()
    with torch.no_grad():
        model[3].running_var.copy_(torch.tensor([1.0, 1.0, 1.0, 1e-12]))
        model[2].weight[3].fill_(10.0)
    data = random_images((1, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_model(model, str(tmp_path / "m.nir"), (1, 8, 8), data.input_scale, levels=8, calib=data)
    with pytest.raises(QuantizationError, match="rounds to zero.*dead channel.*prune") as e:
        load_network(str(tmp_path / "m.nir"))
    assert "\n" not in str(e.value)


class ShapeBranch(nn.Module):
    """timm's VGG head: control flow on the input's shape, which torch.fx cannot trace."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.conv(x))
        if x.shape[-1] > 4:
            x = F.avg_pool2d(x, 2)
        return self.fc(torch.flatten(x, 1))


def test_shape_dependent_control_flow_is_traced_by_torch_export_at_the_calibration_shape(tmp_path):
    with pytest.raises(UnsupportedLayerError, match="torch.fx cannot trace ShapeBranch.*pass calibration data") as e:
        canonicalize(ShapeBranch())
    assert "\n" not in str(e.value)
    converts_exactly(ShapeBranch(), (1, 8, 8), tmp_path)


class ShuffleBlock(nn.Module):
    """ShuffleNet v2: split the channels in halves, transform one, concatenate, shuffle the channels;
    a 1x1 conv reads the last shuffle (a Linear reading a selection through a Flatten is not composed)."""

    def __init__(self, channels: int = 8):
        super().__init__()
        half = channels // 2
        self.stem = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(half, half, 1), nn.ReLU(), nn.Conv2d(half, half, 3, padding=1, groups=half),
                                    nn.Conv2d(half, half, 1), nn.ReLU())
        self.conv5, self.head = nn.Conv2d(channels, 8, 1), nn.Linear(8 * 8 * 8, 10)

    @staticmethod
    def shuffle(x, groups: int = 2):
        b, c, h, w = x.size()
        return x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, c, h, w)

    def forward(self, x):
        x = self.stem(x)
        for _ in range(2):
            a, b = x.chunk(2, dim=1)
            x = self.shuffle(torch.cat((a, self.branch(b)), dim=1))
        return self.head(F.relu(self.conv5(x[:, :, :, :])).flatten(1))


def test_channel_splits_and_shuffles_become_selections_and_convert(tmp_path):
    """chunk, a channel shuffle and a full slice: picked channels as 0/1 1x1 convolutions (found by
    running the operations on probe maps), composed into the layers that read them."""
    model = ShuffleBlock().eval()
    gm = canonicalize(model, torch.rand(1, 1, 8, 8))
    assert not any(n.op == "call_method" for n in gm.graph.nodes)
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(UnsupportedLayerError, match="'chunk'.* splits or shuffles channels.*pass calibration data"):
        canonicalize(model)  # without an example there are no shapes to run the probes on
    converts_exactly(model, (1, 8, 8), tmp_path)
