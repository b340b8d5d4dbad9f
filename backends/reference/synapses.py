"""Synapse arithmetic of the reference simulator, and the overflow counts it keeps.

* dense synapse:  a = wrap32((W·s) << weight_exp)   (Lava's effective 8-bit weights, ``n2c.fixed_point
  .lava_effective_weights``; Lava's Dense accumulates in int32 and does not saturate its "16-bit" output)
* conv / sum-pool synapse: a = wrap24(W ⊛ s)   (Lava's Conv wraps its output to signed 24 bits)

Products are computed in floating point by torch/BLAS: float32 where every partial sum is
below 2^24 (exact there, and faster), float64 below 2^53; :func:`exact_float_type` proves the
bound per layer and batch before running. Values past Loihi's limits are counted (the
arithmetic stays Lava's).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from backends.quantize import IntSynapse
from n2c.errors import QuantizationError
from n2c.fixed_point import EXACT_FLOAT32, EXACT_FLOAT64, LOIHI, lava_effective_weights, wrap_signed


def exact_float_type(syn: IntSynapse, s: np.ndarray):
    """The narrowest float type that holds every partial sum of ``W·s`` exactly: the bound is
    max row Σ|w| · max|s|; float32 is exact below 2^24, float64 below 2^53."""
    w = np.abs(syn.weight).reshape(syn.weight.shape[0], -1).sum(axis=1).max()
    bound = int(w) * max(int(np.abs(s).max(initial=0)), 1)
    if bound < EXACT_FLOAT32:
        return np.float32
    if bound < EXACT_FLOAT64:
        return np.float64
    raise QuantizationError(f"synapse '{syn.name}': its sums may reach {float(bound):.3g}, past 2^53, where the reference "
                            "simulator would be inexact; the weights or inputs are far too large for Loihi")


def count_overflow(overflows: dict, name: str, limit: str, count: int) -> None:
    """Add ``count`` values past ``limit`` to layer ``name``'s entry (a layer past two limits, a
    CUBA neuron's state and current, names both: "A and B")."""
    if count:
        entry = overflows.setdefault(name, {"limit": limit, "count": 0})
        for one in limit.split(" and "):
            if one not in entry["limit"].split(" and "):
                entry["limit"] += f" and {one}"
        entry["count"] += int(count)


def merge_overflows(parts: list[dict]) -> dict:
    merged: dict = {}
    for part in parts:
        for name, entry in part.items():
            count_overflow(merged, name, entry["limit"], entry["count"])
    return merged


def synapse(syn: IntSynapse, s: np.ndarray, overflows: dict, steps: int = 1) -> np.ndarray:
    """s: (N, *in_shape) int64 messages (N = steps·B, step-major) → (N, *out_shape) int64 currents.
    A synapse delay k moves a contribution k steps later; what moves past the last step is lost.
    Values past Loihi's limits are counted in ``overflows`` (the arithmetic stays Lava's)."""
    n = s.shape[0]
    s = syn.read_input(s)
    if syn.kind == "dense":
        w = lava_effective_weights(syn.weight)
        flat = s.reshape(n, -1).astype(exact_float_type(syn, s))
        delays = np.zeros(w.shape, np.int64) if syn.delay is None else np.asarray(syn.delay, np.int64)
        a = np.zeros((n, w.shape[0]), dtype=np.int64)
        for k in np.unique(delays):  # Lava's DelayDense sums each delay's product separately
            part = _dense_product(np.where(delays == k, w, 0), flat, syn.weight_exp)
            a = wrap_signed(a + later(part, int(k), steps), LOIHI.dense_bits)
        count_overflow(overflows, syn.name, f"{LOIHI.accumulator_bits}-bit synaptic accumulator",
                       (np.abs(a) >= LOIHI.accumulator_limit).sum())
        return a
    if syn.kind == "conv":
        x = _float_tensor(s, exact_float_type(syn, s))
        a = F.conv2d(x, torch.from_numpy(syn.weight).to(x.dtype), stride=syn.stride, padding=syn.padding,
                     dilation=syn.dilation, groups=syn.groups)
    elif syn.kind == "sumpool":
        exact32 = np.abs(s).max(initial=0) * np.prod(syn.kernel) < EXACT_FLOAT32
        a = F.avg_pool2d(_float_tensor(s, np.float32 if exact32 else np.float64), syn.kernel, syn.stride,
                         syn.padding, count_include_pad=True, divisor_override=1)
    else:
        raise ValueError(f"unknown synapse kind {syn.kind!r}")
    half = 2 ** (LOIHI.conv_bits - 1)
    lo, hi = torch.aminmax(a) if a.numel() else (torch.zeros(()), torch.zeros(()))
    a = a.to(torch.int64).numpy()  # exact: integer sums below the float type's limit
    if -half < lo and hi < half:  # the common case: nothing past the 24-bit output, nothing to wrap
        return a
    count_overflow(overflows, syn.name, f"{LOIHI.conv_bits}-bit convolution output (Lava's Conv wraps)",
                   (np.abs(a) >= half).sum())
    return wrap_signed(a, LOIHI.conv_bits)


def _float_tensor(s: np.ndarray, dtype) -> torch.Tensor:
    """Integer messages as a float tensor (converted by torch, or by numpy when read-only)."""
    if not s.flags.writeable:
        return torch.from_numpy(s.astype(dtype))
    return torch.from_numpy(s).to(torch.float32 if dtype == np.float32 else torch.float64)


def _dense_product(w: np.ndarray, flat: np.ndarray, weight_exp: int) -> np.ndarray:
    """wrap32((W·s) << weight_exp), the shift a floor for negative exponents, as Lava's Dense."""
    a = wrap_signed((flat @ w.T.astype(flat.dtype)).astype(np.int64), LOIHI.dense_bits)
    return wrap_signed(a << weight_exp if weight_exp >= 0 else np.right_shift(a, -weight_exp), LOIHI.dense_bits)


def later(a: np.ndarray, k: int, steps: int) -> np.ndarray:
    """Move step-major values (steps·B, ...) k steps later; the first k steps become 0."""
    if k == 0:
        return a
    frames = a.reshape(steps, -1, *a.shape[1:])
    moved = np.zeros_like(frames)
    moved[k:] = frames[:steps - k]
    return moved.reshape(a.shape)
