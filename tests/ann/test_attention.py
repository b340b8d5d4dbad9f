"""Products of two spiking tensors (n2c.products) and the quantized self-attention built on them
(n2c.ann.attention): the equations against explicit loops, exactness on integers, the increments
rule over T steps, and the modules' checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from n2c import products
from n2c.ann.attention import Product, SelfAttention
from n2c.ann.qcfs import QCFS
from n2c.snn.modules import SpikingProduct, SpikingSoftmax


def _loops(a: np.ndarray, b: np.ndarray, heads: int, mode: str) -> np.ndarray:
    """The module docstring's sums, one element at a time (one sample, no batch)."""
    c = b.shape[0]
    d, bt = c // heads, b.reshape(c, -1)
    n = bt.shape[1]
    if mode == "scores":
        at = a.reshape(c, -1)
        out = np.zeros((heads, n, n), dtype=np.int64)
        for h in range(heads):
            for i in range(n):
                for j in range(n):
                    out[h, i, j] = sum(int(at[h * d + k, i]) * int(bt[h * d + k, j]) for k in range(d))
        return out
    out = np.zeros((c, n), dtype=np.int64)
    for h in range(heads):
        for k in range(d):
            for i in range(n):
                out[h * d + k, i] = sum(int(a[h, i, j]) * int(bt[h * d + k, j]) for j in range(n))
    return out.reshape(b.shape)


operands = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3),
                     st.integers(0, 2 ** 16), st.integers(1, 300))


@settings(max_examples=40, deadline=None)
@given(operands, st.sampled_from(products.MODES))
def test_integer_products_equal_the_explicit_sums_in_numpy_and_torch(dims, mode):
    heads, d, h, w, seed, span = dims
    rng = np.random.default_rng(seed)
    c, n = heads * d, h * w
    b = rng.integers(-span, span + 1, (2, c, h, w))
    a = rng.integers(-span, span + 1, (2, c, h, w) if mode == "scores" else (2, heads, n, n))
    got = products.product_numpy(a, b, heads, mode)
    assert got.dtype == np.int64
    for s in range(2):
        np.testing.assert_array_equal(got[s], _loops(a[s], b[s], heads, mode))
    assert got.shape[1:] == products.check(mode, heads, a.shape[1:], b.shape[1:])
    # float64 torch holds these integers exactly: the same kernel, bit for bit
    t = products.product_torch(torch.from_numpy(a).double(), torch.from_numpy(b).double(), heads, mode)
    np.testing.assert_array_equal(t.numpy().astype(np.int64), got)
    assert np.abs(got).max(initial=0) <= products.max_abs(mode, heads, span, span, a.shape[1:])


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.sampled_from(products.MODES), st.integers(0, 2 ** 16))
def test_the_spiking_product_delivers_the_product_of_the_means_over_t_steps(timesteps, mode, seed):
    """T · Σ_t p(t) = P(Σ_t a, Σ_t b): its mean is the product of the means (float64 holds these integers
    and, times T, the division by T is exact up to one rounding: compared to 1e-9 relative)."""
    rng = np.random.default_rng(seed)
    heads, c, h, w = 2, 4, 2, 3
    n = h * w
    b = rng.integers(-3, 4, (timesteps, 2, c, h, w)).astype(np.float64)
    a = rng.integers(0, 4, (timesteps, 2, c, h, w) if mode == "scores" else (timesteps, 2, heads, n, n))
    a = a.astype(np.float64)
    module = SpikingProduct(mode, heads, 1.0, timesteps).double()
    steps = module(torch.from_numpy(a).flatten(0, 1), torch.from_numpy(b).flatten(0, 1))
    total = steps.reshape(timesteps, 2, *steps.shape[1:]).sum(0).numpy() * timesteps
    want = products.product_numpy(a.sum(0).astype(np.int64), b.sum(0).astype(np.int64), heads, mode)
    np.testing.assert_allclose(total, want, rtol=1e-9, atol=1e-9)
    if timesteps == 1:
        np.testing.assert_array_equal(total, want)


def test_one_step_spiking_operations_are_the_ann_operations_bit_for_bit():
    torch.manual_seed(0)
    q, k = torch.rand(3, 4, 2, 2), torch.rand(3, 4, 2, 2)
    ann = Product("scores", 2, 0.37)
    assert torch.equal(SpikingProduct("scores", 2, 0.37, 1)(q, k), ann(q, k))
    s = torch.randn(3, 2, 4, 4)
    assert torch.equal(SpikingSoftmax(1)(s), torch.nn.Softmax(dim=-1)(s))


def test_the_spiking_softmax_has_the_softmax_of_the_mean_input_as_its_mean():
    torch.manual_seed(0)
    x = torch.randn(4, 2, 2, 3, 3, dtype=torch.float64)
    steps = SpikingSoftmax(4)(x.flatten(0, 1)).reshape(x.shape)
    torch.testing.assert_close(steps.mean(0), x.mean(0).softmax(-1), rtol=0, atol=1e-12)


def test_shape_checks_name_what_does_not_fit():
    with pytest.raises(ValueError, match="unknown product mode 'outer'"):
        products.check("outer", 1, (2, 2, 2), (2, 2, 2))
    with pytest.raises(ValueError, match="3 channels do not split into 2 heads"):
        products.check("scores", 2, (3, 2, 2), (3, 2, 2))
    with pytest.raises(ValueError, match="one shape"):
        products.check("scores", 1, (2, 2, 2), (2, 2, 1))
    with pytest.raises(ValueError, match=r"attention weights of shape \(2, 4, 4\)"):
        products.check("mix", 2, (2, 4, 3), (4, 2, 2))
    with pytest.raises(ValueError, match="unknown product mode"):
        Product("outer", 1)
    with pytest.raises(ValueError, match="not a multiple of heads"):
        SelfAttention(10, 3, 4, QCFS, QCFS)
    with pytest.raises(ValueError, match="unknown attention 'linear'"):
        SelfAttention(8, 2, 4, QCFS, QCFS, attention="linear")


def test_attention_outputs_are_integer_products_of_quantizer_counts():
    """Inside the block, every product's input is θ·k: the scores divided by θ_q·θ_k/√d are the
    integer k_q·k_kᵀ (to float32 rounding), which is what the integer backends compute."""
    torch.manual_seed(0)
    m = SelfAttention(8, 2, 4, lambda: QCFS(4, 2.0), lambda: QCFS(4, 2.0)).eval()
    seen = {}
    m.scores.register_forward_hook(lambda mod, ins, out: seen.update(q=ins[0], k=ins[1], s=out))
    with torch.no_grad():
        m(torch.randn(5, 8, 2, 2))
    kq, kk = seen["q"] / m.q_act.threshold, seen["k"] / m.k_act.threshold
    assert torch.equal(kq, kq.round()) and torch.equal(kk, kk.round())
    counts = products.product_numpy(kq.round().long().numpy(), kk.round().long().numpy(), 2, "scores")
    scale = float(m.q_act.threshold * m.k_act.threshold) * m.scores.scale
    np.testing.assert_allclose(seen["s"].numpy(), counts * scale, rtol=1e-6, atol=1e-6)
