"""Quantized self-attention that converts to spikes at one timestep (issue #17).

Tokens are the positions of a feature map (B, C, H, W): a per-token linear layer is a 1x1
convolution, so every projection is a layer n2c already carries to NIR, integers and Lava. Every
input of a matrix product is a quantizer's output θ·k (k an integer count), so each product is a
product of integer counts, scaled::

    Q = q(BN(W_q x)),  K = k(BN(W_k x)),  V = v(BN(W_v x))     q, k, v: QCFS (0..L) or signed (−L..L, PMSM)
    S = Q·Kᵀ/√d = (θ_q·θ_k/√d) · (k_q·k_kᵀ)                     per head (n2c.products, "scores")
    A = a(S)            "sasa": spike-aggregated attention, no softmax (SAFormer): the scores quantized
    A = a(softmax(S))   "softmax": the quantized softmax; exp and division run off the neuro cores
    O = o(A·V/N) = o((θ_a·θ_v/N) · (k_a·k_v))                   per head (n2c.products, "mix")
    y = BN(W_p O)                                               the output projection

``a`` is always unsigned (attention weights are not negative); ``o`` and the rest follow the
network's quantizer. LayerNorm is replaced by BatchNorm after each projection (folded into the
1x1 convolution at conversion), GELU by the quantizer: what conversion papers do, trained in.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from n2c import products
from n2c.ann.qcfs import QCFS

ATTENTION = ("sasa", "softmax")


class Product(nn.Module):
    """``scale`` · the product of two activations (:mod:`n2c.products`, ``mode`` scores or mix)."""

    def __init__(self, mode: str, heads: int, scale: float = 1.0):
        super().__init__()
        if mode not in products.MODES:
            raise ValueError(f"unknown product mode {mode!r}; use one of {', '.join(products.MODES)}")
        self.mode, self.heads, self.scale = mode, int(heads), float(scale)
        # the same three as a buffer: a traced checkpoint (torch.jit.trace) keeps buffers, not attributes
        self.register_buffer("spec", torch.tensor([products.MODES.index(mode), self.heads, self.scale],
                                                  dtype=torch.float64))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return products.product_torch(a, b, self.heads, self.mode) * self.scale

    def extra_repr(self) -> str:
        return f"mode={self.mode}, heads={self.heads}, scale={self.scale:.4g}"


def _projection(dim_in: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(dim_in, dim_out, 1, bias=False), nn.BatchNorm2d(dim_out))


class SelfAttention(nn.Module):
    """Multi-head self-attention over the positions of (B, dim, H, W) (module docstring).

    ``activation()`` makes the quantizers of Q, K, V and O (QCFS, SignedQCFS, or ReLU to be
    fine-tuned); ``weights`` the unsigned one of A; ``tokens`` N = H·W fixes the mix's 1/N."""

    def __init__(self, dim: int, heads: int, tokens: int, activation, weights, attention: str = "sasa"):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        if attention not in ATTENTION:
            raise ValueError(f"unknown attention {attention!r}; use one of {', '.join(ATTENTION)}")
        self.attention = attention
        self.q, self.k, self.v = (_projection(dim, dim) for _ in range(3))
        self.q_act, self.k_act, self.v_act = activation(), activation(), activation()
        self.scores = Product("scores", heads, 1 / math.sqrt(dim // heads))
        self.softmax = nn.Softmax(dim=-1) if attention == "softmax" else nn.Identity()
        self.a_act = weights()
        self.mix = Product("mix", heads, 1 / tokens)
        self.o_act = activation()
        self.proj = _projection(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q_act(self.q(x)), self.k_act(self.k(x)), self.v_act(self.v(x))
        a = self.a_act(self.softmax(self.scores(q, k)))
        return self.proj(self.o_act(self.mix(a, v)))


def attention_weights(levels: int, lam: float, attention: str, tokens: int) -> QCFS:
    """The unsigned quantizer of A. After a softmax the weights average 1/N: λ starts at min(1, 4/N), so
    that a weight of 1/N is about L/4 levels (at λ = 1 most weights of a long sequence would round to 0)."""
    return QCFS(levels, min(1.0, 4.0 / tokens) if attention == "softmax" else lam)
