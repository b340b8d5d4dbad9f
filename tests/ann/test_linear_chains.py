"""Weighted layers that read weighted layers (n2c.ann.linear_chains) fold into sums of single
layers computing the same function."""

from __future__ import annotations

import operator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import fx, nn

from n2c.ann.linear_chains import WEIGHTED, compose, fold_linear_chains
from n2c.ingest.canonical import canonicalize


def _weighted_reads_weighted(gm: fx.GraphModule) -> bool:
    def weighted(n):
        return n.op == "call_module" and isinstance(gm.get_submodule(n.target), WEIGHTED)

    def terms(n):
        return [t for a in n.args for t in terms(a)] if n.op == "call_function" and n.target is operator.add else [n]
    return any(weighted(n) and any(weighted(t) or t.op == "call_function" for t in terms(n.args[0]))
               for n in gm.graph.nodes)


@pytest.mark.parametrize("inner", [nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.Conv2d(4, 4, 3, padding=1, groups=4),
                                   nn.Conv2d(4, 6, 1), nn.Conv2d(4, 6, 3, groups=2, dilation=2)])
@pytest.mark.parametrize("groups", [1, 2])
def test_a_1x1_conv_composes_with_any_conv(inner, groups):
    torch.manual_seed(0)
    outer = nn.Conv2d(inner.out_channels, 4, 1, groups=groups)
    x = torch.randn(3, 4, 9, 9)
    assert torch.allclose(compose(outer, inner)(x), outer(inner(x)), atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 4), s=st.integers(1, 3), d=st.integers(1, 2), pad=st.integers(0, 2), groups=st.sampled_from([1, 2]),
       p=st.integers(1, 3), q=st.sampled_from([None, 1, 2, 3]), size=st.integers(6, 14), seed=st.integers(0, 2 ** 16))
def test_an_unpadded_average_pool_composes_with_any_conv(k, s, d, pad, groups, p, q, size, seed):
    """DenseNet's transition: 1x1 conv, then a 2x2 average pool, with no activation between."""
    torch.manual_seed(seed)
    conv, pool = nn.Conv2d(4, 6, k, s, pad, d, groups=groups), nn.AvgPool2d(p, q)
    x = torch.randn(2, 4, size, size)
    try:
        want = pool(conv(x))
    except RuntimeError:
        return  # shapes torch refuses
    got = compose(pool, conv)(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("outer", [nn.Conv2d(6, 5, 3, padding=1), nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6),
                                   nn.Conv2d(6, 4, 3, dilation=2)])
@pytest.mark.parametrize("bias", [False, True])
def test_any_conv_composes_after_a_1x1_conv_where_the_borders_allow(outer, bias):
    """ShuffleNet-like channel selections and a 1x1 conv first: W(P x) = (W·P) x, exact when P adds
    no bias or W has no padding (zero padding of P x is not P of zero padding when P has a bias)."""
    torch.manual_seed(0)
    inner = nn.Conv2d(4, 6, 1, bias=bias)
    x = torch.randn(2, 4, 9, 9)
    layer = compose(outer, inner)
    if bias and outer.padding != (0, 0):
        assert layer is None
        return
    torch.testing.assert_close(layer(x), outer(inner(x)), rtol=1e-5, atol=1e-5)


def test_padded_or_ceil_mode_average_pools_do_not_compose():
    conv = nn.Conv2d(3, 3, 1)
    assert compose(nn.AvgPool2d(2, padding=1), conv) is None
    assert compose(nn.AvgPool2d(2, ceil_mode=True), conv) is None
    assert compose(nn.AvgPool2d(2, divisor_override=3), conv) is None


def test_linear_composes_and_padded_conv_does_not():
    torch.manual_seed(0)
    a, b = nn.Linear(5, 7), nn.Linear(7, 3)
    x = torch.randn(4, 5)
    assert torch.allclose(compose(b, a)(x), b(a(x)), atol=1e-6)
    assert compose(nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 1)) is None


class Bottleneck(nn.Module):
    """MobileNetV2's pattern: linear projections, residual sums of them, then a 1x1 expansion."""

    def __init__(self):
        super().__init__()
        self.stem, self.proj1, self.proj2 = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 3, 1), nn.Conv2d(4, 3, 1)
        self.dw, self.expand, self.head = nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Conv2d(3, 6, 1), nn.Linear(6, 2)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        stream = self.proj1(h)
        stream = stream + self.proj2(torch.relu(self.dw(h)))
        out = torch.relu(self.expand(stream))
        return self.head(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(out, 1), 1))


def test_linear_bottlenecks_fold_into_sums_of_single_layers():
    torch.manual_seed(0)
    model = Bottleneck().eval()
    gm = fold_linear_chains(canonicalize(model))
    assert not _weighted_reads_weighted(gm)
    x = torch.randn(5, 1, 8, 8)
    assert torch.allclose(gm(x), model(x), atol=1e-5)


def test_torchvision_mobilenet_v2_folds():
    import torchvision
    torch.manual_seed(0)
    from n2c.snn.convert import fold_batchnorm
    model = torchvision.models.mobilenet_v2(num_classes=10).eval()
    gm = fold_linear_chains(fold_batchnorm(canonicalize(model)))
    assert not _weighted_reads_weighted(gm)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(gm(x), model(x), rtol=1e-4, atol=1e-4)
