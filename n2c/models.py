"""Reference networks: the small digits CNN of the demo, a VGG-style and a ResNet-style CNN,
and a small vision transformer, for benchmarks and tests.

Any user network works with n2c; these exist so the built-in default runs in
seconds, the benchmarks have comparable architectures and the tests have real
trained models. They use only what n2c converts (see :mod:`n2c.ingest.canonical`): Conv2d,
BatchNorm2d, the activation module, AvgPool2d, AdaptiveAvgPool2d, Flatten,
Linear, Dropout, ``+`` for residual connections, and for the transformer the products of
attention (:class:`n2c.ann.attention.Product`) and Softmax.

Every activation is its own module instance of one type, chosen by ``act``:

* ``"relu"``: ``nn.ReLU()`` (conversion then needs calibration data or
  fine-tuning with :func:`n2c.ann.train.fine_tune`);
* ``"qcfs"``: ``QCFS(levels, lam)``, ``h(z) = λ·clip(floor(z·L/λ + 1/2), 0, L)/L``;
* ``"signed"``: ``SignedQCFS(levels, lam)``, ``q(z) = λ·clip(floor(z·L/λ + 1/2), -L, L)/L``.
"""

from __future__ import annotations

from torch import nn

from n2c.ann.attention import SelfAttention, attention_weights
from n2c.ann.qcfs import QCFS, SignedQCFS

ACTIVATIONS = ("relu", "qcfs", "signed")
MODEL_NAMES = ("digits-cnn", "vgg", "resnet", "vit")


def make_activation(act: str = "qcfs", levels: int = 8, lam: float = 2.0) -> nn.Module:
    """A new activation module: ``nn.ReLU()``, ``QCFS(levels, lam)`` or ``SignedQCFS(levels, lam)``."""
    if act == "relu":
        return nn.ReLU()
    if act == "qcfs":
        return QCFS(levels, lam)
    if act == "signed":
        return SignedQCFS(levels, lam)
    raise ValueError(f"unknown activation {act!r}; use one of {ACTIVATIONS}")


def _hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    return int(h), int(w)


class DigitsCNN(nn.Module):
    """conv3x3(16) → act → avgpool2 → conv3x3(32) → act → avgpool2 → fc(64) → act → fc(10).

    ``act`` is QCFS with ``levels`` levels and initial threshold ``lam`` (trained
    for conversion) or ReLU (``levels=None``; conversion then needs calibration data).
    ``act="signed"`` selects SignedQCFS; ``width`` scales the channels (16 → 16/32/64).
    """

    def __init__(self, levels: int | None = 8, in_channels: int = 1, image_size: int | tuple[int, int] = 8,
                 num_classes: int = 10, lam: float = 2.0, act: str | None = None, width: int = 16):
        super().__init__()
        kind = act or ("qcfs" if levels else "relu")

        def activation():
            return make_activation(kind, levels, lam)

        h, w = _hw(image_size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), activation(), nn.AvgPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), activation(), nn.AvgPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * (h // 4) * (w // 4), 4 * width), activation(),
            nn.Linear(4 * width, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def _conv_bn_act(cin: int, cout: int, act, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), act()]


class VGGStyle(nn.Module):
    """A VGG-style CNN (``w`` = ``width``, ``act`` = the chosen activation):

    ``features``:   conv3x3(w)-BN-act → conv3x3(w)-BN-act → AvgPool2d(2)
                    → conv3x3(2w)-BN-act → conv3x3(2w)-BN-act → AvgPool2d(2)
    ``classifier``: Flatten → Linear(2w·⌊H/4⌋·⌊W/4⌋, hidden) → act → Dropout(dropout)
                    → Linear(hidden, num_classes)

    Convolutions have no bias (BatchNorm follows). Works for any image of at
    least 4x4 pixels (digits' 8x8, Fashion-MNIST's 28x28).
    """

    def __init__(self, in_channels: int = 1, image_size: int | tuple[int, int] = 28, num_classes: int = 10,
                 width: int = 16, act: str = "qcfs", levels: int = 8, lam: float = 2.0, hidden: int = 128,
                 dropout: float = 0.2):
        super().__init__()
        h, w = _hw(image_size)
        if min(h, w) < 4:
            raise ValueError(f"VGGStyle needs images of at least 4x4 pixels, got {h}x{w}")

        def activation():
            return make_activation(act, levels, lam)

        self.features = nn.Sequential(
            *_conv_bn_act(in_channels, width, activation), *_conv_bn_act(width, width, activation),
            nn.AvgPool2d(2),
            *_conv_bn_act(width, 2 * width, activation), *_conv_bn_act(2 * width, 2 * width, activation),
            nn.AvgPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * (h // 4) * (w // 4), hidden), activation(), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """ResNet basic block: ``act2(BN(conv3x3(act1(BN(conv3x3(x))))) + shortcut(x))``.

    The shortcut is ``nn.Identity()`` when shape is kept, else conv1x1(stride)-BN.
    The second activation comes after the residual addition.
    """

    def __init__(self, cin: int, cout: int, stride: int, activation):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = activation()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        else:
            self.shortcut = nn.Identity()
        self.act2 = activation()

    def forward(self, x):
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(out + self.shortcut(x))


class ResNetStyle(nn.Module):
    """A small ResNet (``w`` = ``width``, ``act`` = the chosen activation):

    ``stem``:   conv3x3(w)-BN-act
    ``blocks``: BasicBlock(w, stride 1) → BasicBlock(2w, stride 2) [→ BasicBlock(4w, stride 2)]
                (``num_blocks`` = 2 or 3; each block conv3x3-BN-act-conv3x3-BN, plus the
                shortcut, then act; the shortcut is identity or conv1x1-BN when the
                stride or width changes)
    ``head``:   AdaptiveAvgPool2d(1) → Flatten → Linear(num_classes)
    """

    def __init__(self, in_channels: int = 1, image_size: int | tuple[int, int] = 28, num_classes: int = 10,
                 width: int = 16, act: str = "qcfs", levels: int = 8, lam: float = 2.0, num_blocks: int = 3):
        super().__init__()
        if num_blocks not in (2, 3):
            raise ValueError(f"ResNetStyle has 2 or 3 blocks, got num_blocks={num_blocks}")
        h, w = _hw(image_size)
        if min(h, w) < 2 ** (num_blocks - 1):
            raise ValueError(f"ResNetStyle with {num_blocks} blocks needs images of at least "
                             f"{2 ** (num_blocks - 1)} pixels a side, got {h}x{w}")

        def activation():
            return make_activation(act, levels, lam)

        self.stem = nn.Sequential(*_conv_bn_act(in_channels, width, activation))
        widths = [width, 2 * width, 4 * width][:num_blocks]
        strides = [1, 2, 2][:num_blocks]
        blocks, cin = [], width
        for cout, stride in zip(widths, strides):
            blocks.append(BasicBlock(cin, cout, stride, activation))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class TransformerBlock(nn.Module):
    """Pre-activation-free ViT block on (B, dim, H, W), a quantizer after each residual sum::

        x = act(x + SelfAttention(x))
        x = act(x + BN(W_2 · act(BN(W_1 x))))      the MLP: 1x1 convolutions, GELU → the quantizer
    """

    def __init__(self, dim: int, heads: int, tokens: int, mlp_ratio: int, activation, weights, attention: str):
        super().__init__()
        self.attn = SelfAttention(dim, heads, tokens, activation, weights, attention)
        self.act1 = activation()
        hidden = dim * mlp_ratio
        self.fc1 = nn.Sequential(nn.Conv2d(dim, hidden, 1, bias=False), nn.BatchNorm2d(hidden))
        self.mlp_act = activation()
        self.fc2 = nn.Sequential(nn.Conv2d(hidden, dim, 1, bias=False), nn.BatchNorm2d(dim))
        self.act2 = activation()

    def forward(self, x):
        x = self.act1(x + self.attn(x))
        return self.act2(x + self.fc2(self.mlp_act(self.fc1(x))))


class SpikingViT(nn.Module):
    """A small vision transformer that n2c converts whole (``w`` = ``dim``):

    ``patch``:  conv p×p stride p (w)-BN-act              the patch embedding: tokens are its positions
    ``pos``:    act(x + BN(depthwise conv3x3(x)))        positions from the zero padding (SAFormer's
                                                         depthwise-convolution module; CPVT's PEG)
    ``blocks``: ``depth`` × TransformerBlock              attention (``attention`` = sasa | softmax), MLP
    ``head``:   AdaptiveAvgPool2d(1) → Flatten → Linear   the mean token

    Tokens stay a (w, H/p, W/p) feature map throughout, so per-token layers are 1x1 convolutions.
    LayerNorm is BatchNorm (folded at conversion); every activation is the chosen quantizer.
    """

    def __init__(self, in_channels: int = 1, image_size: int | tuple[int, int] = 28, num_classes: int = 10,
                 dim: int = 64, depth: int = 2, heads: int = 4, patch: int = 4, mlp_ratio: int = 2,
                 act: str = "qcfs", levels: int = 8, lam: float = 2.0, attention: str = "sasa"):
        super().__init__()
        h, w = _hw(image_size)
        if h % patch or w % patch:
            raise ValueError(f"SpikingViT: image {h}x{w} is not a multiple of the patch size {patch}")

        def activation():
            return make_activation(act, levels, lam)

        tokens = (h // patch) * (w // patch)

        def weights():
            return nn.ReLU() if act == "relu" else attention_weights(levels, lam, attention, tokens)

        self.patch = nn.Sequential(nn.Conv2d(in_channels, dim, patch, stride=patch, bias=False),
                                   nn.BatchNorm2d(dim), activation())
        self.pos = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False), nn.BatchNorm2d(dim))
        self.pos_act = activation()
        self.blocks = nn.Sequential(*[TransformerBlock(dim, heads, tokens, mlp_ratio, activation, weights, attention)
                                      for _ in range(depth)])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(dim, num_classes))

    def forward(self, x):
        x = self.patch(x)
        x = self.pos_act(x + self.pos(x))
        return self.head(self.blocks(x))


def build_model(name: str, dataset_shape: tuple[int, ...], num_classes: int = 10, act: str = "qcfs",
                levels: int = 8, lam: float = 2.0, width: int | None = None, attention: str = "sasa") -> nn.Module:
    """One of the reference networks by name, sized for samples of shape ``(C, H, W)``.

    ``name``: ``"digits-cnn"`` (:class:`DigitsCNN`, default width 16), ``"vgg"``
    (:class:`VGGStyle`, default width 16), ``"resnet"`` (:class:`ResNetStyle`, default width 16)
    or ``"vit"`` (:class:`SpikingViT`, default width 64; ``attention`` sasa or softmax). ``width=None`` takes the default. At width 16 one epoch of
    QCFS training on Fashion-MNIST's 60k images takes well under a minute of
    two CPU cores for either; width 32 is about 3.5x slower for VGGStyle.
    """
    if len(dataset_shape) != 3:
        raise ValueError(f"dataset_shape must be (C, H, W), got {tuple(dataset_shape)}")
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; use one of {ACTIVATIONS}")
    c, h, w = (int(s) for s in dataset_shape)
    common = dict(in_channels=c, image_size=(h, w), num_classes=num_classes, lam=lam)
    if name == "digits-cnn":
        return DigitsCNN(levels=levels, act=act, width=width or 16, **common)
    if name == "vgg":
        return VGGStyle(width=width or 16, act=act, levels=levels, **common)
    if name == "resnet":
        return ResNetStyle(width=width or 16, act=act, levels=levels, **common)
    if name == "vit":  # patches of 4 on 28x28 (49 tokens), of 2 on digits' 8x8 (16 tokens)
        patch = 4 if h % 4 == 0 and w % 4 == 0 and min(h, w) >= 16 else 2 if h % 2 == 0 and w % 2 == 0 else 1
        return SpikingViT(dim=width or 64, act=act, levels=levels, patch=patch, attention=attention, **common)
    raise ValueError(f"unknown model name {name!r}; use one of {MODEL_NAMES}")
