"""Quantized self-attention: the first block of one-step spiking transformers (issue #17).

Every input of a matrix product is quantized, so that at T = 1 each product is a product of
integer spike counts. Per head, with d the head width and tokens as rows::

    Q = θ_q·k_q,  K = θ_k·k_k,  V = θ_v·k_v     k: quantizer counts (signed: −L..L, PMSM;
                                                 unsigned: 0..L, QCFS) of the projections
    S = Q·Kᵀ/√d = (θ_q·θ_k/√d) · (k_q·k_kᵀ)     an integer matrix product, scaled

Attention weights, two ways (``attention=``)::

    "sasa"      A = θ_a·k_a,  k_a = QCFS_L(S)            no softmax: the scores themselves are
                                                        quantized (SAFormer-style spike-aggregated
                                                        attention; all on integer counts)
    "softmax"   A = θ_a·k_a,  k_a = QCFS_L(softmax(S))   the softmax quantized; its exponentials
                                                        and division are not neuro-core operations

    O = A·V = (θ_a·θ_v) · (k_a·k_vᵀ)             integer again; then the output projection

The products are computed from the integer counts themselves (held in float32, exact while every
sum stays below 2^24, which ``check_exact`` verifies), so the module's output is the integer
computation scaled: what a spiking implementation must reproduce bit for bit. Gradients pass
straight through the quantizers (training works on the same forward).

Status: a trainable ANN block. n2c's conversion, NIR export and backends do not take it yet;
``n2c export`` refuses it naming the layer, like any operation it cannot turn into spikes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from n2c.ann.qcfs import QCFS, SignedQCFS

ATTENTION = ("sasa", "softmax")
EXACT = 2 ** 24  # integers up to this are exact in float32


class QuantizedSelfAttention(nn.Module):
    """Multi-head self-attention over (batch, tokens, dim) with quantized Q, K, V and weights.

    ``signed``: Q, K and V take signed quantizers (their projections of LayerNorm outputs are
    signed; PMSM's polarity spikes carry them); the attention weights are non-negative and
    take an unsigned one."""

    def __init__(self, dim: int, heads: int, levels: int = 8, attention: str = "sasa", signed: bool = True,
                 lam: float = 4.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        if attention not in ATTENTION:
            raise ValueError(f"unknown attention {attention!r}; use one of {', '.join(ATTENTION)}")
        self.dim, self.heads, self.attention = dim, heads, attention
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        make = SignedQCFS if signed else QCFS
        self.q, self.k, self.v = (make(levels, lam) for _ in range(3))
        self.a = QCFS(levels, 1.0 if attention == "softmax" else lam)

    def counts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The integer counts k_q, k_k, k_v, k_a (float tensors holding integers), per head:
        (batch, heads, tokens, d) and (batch, heads, tokens, tokens)."""
        b, n, _ = x.shape
        d = self.dim // self.heads
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        out = {name: _count(quant, z) for name, quant, z in (("q", self.q, q), ("k", self.k, k), ("v", self.v, v))}
        scores = (out["q"] @ out["k"].transpose(-1, -2)) * (self.q.threshold * self.k.threshold / math.sqrt(d))
        out["a"] = _count(self.a, scores if self.attention == "sasa" else scores.softmax(dim=-1))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.counts(x)
        b, n, _ = x.shape
        mixed = (c["a"] @ c["v"]) * (self.a.threshold * self.v.threshold)
        return self.proj(mixed.transpose(1, 2).reshape(b, n, self.dim))

    def check_exact(self, x: torch.Tensor) -> None:
        """Raise ValueError when a count product could pass 2^24 (float32 would round it)."""
        c = self.counts(x)
        d, n = self.dim // self.heads, x.shape[1]
        bound = max(d * float(c["q"].abs().max()) * float(c["k"].abs().max()),
                    n * float(c["a"].abs().max()) * float(c["v"].abs().max()))
        if bound >= EXACT:
            raise ValueError(f"count products reach {bound:.0f} >= 2^24: use fewer levels or narrower heads")


def _count(quant: QCFS, z: torch.Tensor) -> torch.Tensor:
    """The quantizer's integer count k = q(z)/θ, exactly an integer in value (θ·k/θ rounded);
    the gradient passes straight through the rounding as through the quantizer's floor."""
    raw = quant(z) / quant.threshold
    return raw + (torch.round(raw) - raw).detach()  # exact: round(raw) − raw is tiny and exact
