"""Products of two spiking tensors: the matrix products of self-attention (issue #17).

Tokens are the positions of a feature map (C, H, W) in C order, N = H·W; the channels split
into ``heads`` groups of d = C / heads (head h owns channels h·d .. h·d + d − 1)::

    scores  S[h, i, j] = c · Σ_{k<d} a[h·d+k, i] · b[h·d+k, j]    a = Q, b = K: (C, H, W)² → (heads, N, N)
    mix     O[h·d+k, i] = c · Σ_{j<N} a[h, i, j] · b[h·d+k, j]     a = A (heads, N, N), b = V (C, H, W) → (C, H, W)

``c`` is the product's real scale (1/√d for the scores, 1/N for the mix in n2c's ViT).

Over T steps a value is carried as the mean of its per-step messages (an SNN's output is its mean
over T). A product of per-step messages is not the product of the means, so a spiking operation f
delivers the increments of t times f of the running means, Ā(t) = A(t)/t with A(t) = Σ_{s≤t} a(s)::

    p(t) = F(t) − F(t−1),   F(t) = t · f(Ā(t), B̄(t))      (F(0) = 0, t = 1..T)

so after t steps its own running mean F(t)/t is f of its inputs' running means: after T steps the
product of the means, exactly. For the (bilinear) product F(t) = P(A(t), B(t)) / t; at T = 1,
p = P(a, b). Integer form (one step, or the last of T): a and b are integer spike counts and the
product an int64 (no rounding); the scale c and the spike values fold into the consumer's
threshold. The quantized softmax runs the same rule with f = softmax
(``n2c.snn.modules.SpikingProduct``, ``SpikingSoftmax``).
"""

from __future__ import annotations

import numpy as np
import torch

MODES = ("scores", "mix")


def check(mode: str, heads: int, a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The output shape (no batch dimension) of the product, or ValueError naming what does not fit."""
    if mode not in MODES:
        raise ValueError(f"unknown product mode {mode!r}; use one of {', '.join(MODES)}")
    if heads < 1:
        raise ValueError(f"heads must be >= 1, got {heads}")
    if len(b_shape) < 2:
        raise ValueError(f"operand b must be (C, positions...), got {tuple(b_shape)}")
    channels, tokens = b_shape[0], int(np.prod(b_shape[1:]))
    if channels % heads:
        raise ValueError(f"{channels} channels do not split into {heads} heads")
    if mode == "scores":
        if tuple(a_shape) != tuple(b_shape):
            raise ValueError(f"scores need operands of one shape, got {tuple(a_shape)} and {tuple(b_shape)}")
        return heads, tokens, tokens
    if tuple(a_shape) != (heads, tokens, tokens):
        raise ValueError(f"mix needs attention weights of shape {(heads, tokens, tokens)} for values "
                         f"{tuple(b_shape)}, got {tuple(a_shape)}")
    return tuple(b_shape)


def product_torch(a: torch.Tensor, b: torch.Tensor, heads: int, mode: str) -> torch.Tensor:
    """The unscaled product over a batch: a, b with a leading batch dimension (module docstring)."""
    # a is read first: torch.jit.trace orders a traced module's inputs by first use
    batch, channels = a.shape[0], b.shape[1]
    values = b.reshape(batch, heads, channels // heads, -1)  # (B, heads, d, N)
    if mode == "scores":
        return torch.einsum("bhki,bhkj->bhij", a.reshape(values.shape), values)
    return torch.einsum("bhij,bhkj->bhki", a, values).reshape(b.shape)


def product_numpy(a: np.ndarray, b: np.ndarray, heads: int, mode: str) -> np.ndarray:
    """:func:`product_torch` in numpy: int64 inputs give the exact int64 product."""
    batch, channels = b.shape[0], b.shape[1]
    values = b.reshape(batch, heads, channels // heads, -1)
    if mode == "scores":
        return np.einsum("bhki,bhkj->bhij", a.reshape(values.shape), values)
    return np.einsum("bhij,bhkj->bhki", a, values).reshape(b.shape)


def increments_torch(total: torch.Tensor) -> torch.Tensor:
    """p(t) = F(t) − F(t−1) over the first (time) axis, F(0) = 0 (module docstring)."""
    return torch.cat([total[:1], total[1:] - total[:-1]])


def increments_numpy(total: np.ndarray) -> np.ndarray:
    """:func:`increments_torch` in numpy (exact on integers)."""
    return np.concatenate([total[:1], total[1:] - total[:-1]])


def steps_seen(timesteps: int, ndim: int) -> np.ndarray:
    """t = 1..T shaped (T, 1, ..., 1) to broadcast over arrays of ``ndim`` dimensions laid out [T, B, ...]."""
    return np.arange(1, timesteps + 1, dtype=np.float64).reshape((timesteps,) + (1,) * (ndim - 1))


def softmax_numpy(x: np.ndarray) -> np.ndarray:
    """softmax over the last axis, shifted by the maximum (float64)."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def integer_total(a_run: np.ndarray, b_run: np.ndarray, step: int, heads: int, mode: str, weight: int = 0,
                  softmax_scale: float | None = None, out_scale: float = 0.0) -> np.ndarray:
    """F(j) of the integer form, in the consumer's integer current units, from running spike
    counts a_run, b_run (B, ...) int64 after j = ``step`` steps of the sample window::

        product:   F(j) = ⌊weight · P(A, B) / j⌋                            (exact int64)
        softmax:   F(j) = round(out_scale · j · softmax(softmax_scale · P(A, B) / j²))   (float64)

    ``weight`` is the integer current per unit of the product (c·u_a·u_b·S rounded, u the operands'
    spike values, S the consumer's scale); ``softmax_scale`` the real score per unit (c·u_a·u_b) and
    ``out_scale`` the consumer's scale S. The current at step j is F(j) − F(j−1)."""
    p = product_numpy(a_run, b_run, heads, mode)
    if softmax_scale is None:
        return np.floor_divide(weight * p, step)
    probs = softmax_numpy(softmax_scale * p.astype(np.float64) / (step * step))
    return np.round(out_scale * step * probs).astype(np.int64)


def initial_state(a_shape: tuple[int, ...], b_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> dict:
    """The state of a streaming integer product: running counts and the last F, zero."""
    return {"a": np.zeros(a_shape, np.int64), "b": np.zeros(b_shape, np.int64), "f": np.zeros(out_shape, np.int64)}


def stream_step(state: dict, a: np.ndarray, b: np.ndarray, position: int, **params) -> np.ndarray:
    """One global step of an integer product on one stream of samples (no batch axis): at window
    ``position`` 0 the running counts and F restart; the current sent is F(j) − F(j−1), j = position + 1.
    ``params``: heads, mode, weight, softmax_scale, out_scale of :func:`integer_total`."""
    if position == 0:
        for value in state.values():
            value[...] = 0
    state["a"] += a
    state["b"] += b
    total = integer_total(state["a"][None], state["b"][None], position + 1, **params)[0]
    current = total - state["f"]
    state["f"] = total
    return current


def dense_macs(b_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one product as an ANN computes it: heads·d·N² = C·N² in either mode
    (b: the (C, H, W) operand)."""
    tokens = int(np.prod(b_shape[1:]))
    return int(b_shape[0]) * tokens * tokens


def event_macs(a: np.ndarray, b: np.ndarray, heads: int, mode: str) -> np.ndarray:
    """Multiply-accumulates an event-driven product performs per sample over T steps, for counts
    a, b (T, B, ...): at step t, the pairs of a new spike with a non-zero running count of the
    other operand, p(t) = a(t)·B(t)ᵀ + A(t−1)·b(t)ᵀ (the bilinear increment). Returns (B,)."""
    ra, rb = np.cumsum(a, axis=0), np.cumsum(b, axis=0)
    prev_a = np.concatenate([np.zeros_like(ra[:1]), ra[:-1]])
    nz = lambda x: (x != 0).astype(np.int64)  # noqa: E731
    total = np.zeros(a.shape[1], np.int64)
    for t in range(len(a)):
        pairs = product_numpy(nz(a[t]), nz(rb[t]), heads, mode) + product_numpy(nz(prev_a[t]), nz(b[t]), heads, mode)
        total += pairs.reshape(len(total), -1).sum(axis=1)
    return total


def max_abs(mode: str, heads: int, a_max: float, b_max: float, a_shape: tuple[int, ...]) -> float:
    """The largest |unscaled product| for operands bounded by a_max and b_max: the number of
    terms in each sum times a_max · b_max (d terms for the scores, N for the mix)."""
    terms = a_shape[0] // heads if mode == "scores" else a_shape[-1]
    return float(terms) * a_max * b_max
