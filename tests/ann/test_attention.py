"""Quantized self-attention (n2c.ann.attention): every product is a product of integer counts,
exactly; the two attention kinds; it trains; n2c's conversion refuses it by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from n2c.ann.attention import QuantizedSelfAttention
from n2c.errors import UnsupportedLayerError
from n2c.ingest.canonical import canonicalize


def block(seed: int, attention: str, signed: bool, levels: int = 4) -> QuantizedSelfAttention:
    torch.manual_seed(seed)
    return QuantizedSelfAttention(dim=8, heads=2, levels=levels, attention=attention, signed=signed, lam=2.0)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2 ** 16), st.sampled_from(["sasa", "softmax"]), st.booleans(), st.integers(1, 8))
def test_counts_are_integers_in_range_and_the_output_is_their_integer_product(seed, attention, signed, levels):
    m = block(seed, attention, signed, levels)
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        c = m.counts(x)
        m.check_exact(x)
        for name in ("q", "k", "v"):
            k = c[name]
            assert torch.equal(k, torch.round(k)) and k.max() <= levels and k.min() >= (-levels if signed else 0)
        assert torch.equal(c["a"], torch.round(c["a"])) and 0 <= c["a"].min() and c["a"].max() <= levels
        # the products in float32 equal the same products in int64
        qk = c["q"].to(torch.int64) @ c["k"].to(torch.int64).transpose(-1, -2)
        assert torch.equal((c["q"] @ c["k"].transpose(-1, -2)).to(torch.int64), qk)
        av = c["a"].to(torch.int64) @ c["v"].to(torch.int64)
        mixed = av.to(torch.float64) * float(m.a.threshold * m.v.threshold)
        want = m.proj(mixed.to(torch.float32).transpose(1, 2).reshape(3, 5, 8))
        assert torch.allclose(m(x), want, rtol=0, atol=1e-6)


def test_sasa_weights_follow_the_scores_and_softmax_weights_sum_near_one():
    m = block(0, "sasa", True)
    x = torch.randn(2, 6, 8)
    with torch.no_grad():
        c = m.counts(x)
        d = m.dim // m.heads
        scores = (c["q"] @ c["k"].transpose(-1, -2)) * float(m.q.threshold * m.k.threshold) / np.sqrt(d)
        want = torch.clamp(torch.floor(scores / m.a.threshold + 0.5), 0, int(m.a.levels))
        assert torch.equal(c["a"], want)
        s = block(0, "softmax", True, levels=8)
        rows = (s.counts(x)["a"] * s.a.threshold).sum(dim=-1)
        assert (rows - 1).abs().max() <= 6 * float(s.a.threshold)  # 6 tokens, each off by at most θ/2


def test_it_trains_through_the_quantizers():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(0, 0), block(1, "sasa", True))
    x = torch.randn(64, 4, 8)
    target = x.flip(1)  # a token permutation: attention has to move information
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    loss0 = float(((m(x) - target) ** 2).mean())
    for _ in range(150):
        opt.zero_grad()
        loss = ((m(x) - target) ** 2).mean()
        loss.backward()
        opt.step()
    assert float(loss) < 0.7 * loss0


def test_bad_arguments_and_conversion_is_refused_by_name():
    with pytest.raises(ValueError, match="not a multiple of heads"):
        QuantizedSelfAttention(10, 3)
    with pytest.raises(ValueError, match="unknown attention 'linear'"):
        QuantizedSelfAttention(8, 2, attention="linear")
    net = nn.Sequential(nn.Linear(8, 8), QuantizedSelfAttention(8, 2))
    with pytest.raises(UnsupportedLayerError, match="layer '1' \\(QuantizedSelfAttention\\) cannot be converted"):
        canonicalize(net)
