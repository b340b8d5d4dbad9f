"""Synapse arithmetic of the reference simulator, and the overflow counts it keeps.

* dense synapse:  a = wrap32((W·s) << weight_exp)   (Lava's effective 8-bit weights, ``n2c.fixed_point
  .lava_effective_weights``; Lava's Dense accumulates in int32 and does not saturate its "16-bit" output)
* conv / sum-pool synapse: a = wrap24(W ⊛ s)   (Lava's Conv wraps its output to signed 24 bits)

Products are computed by torch/BLAS in floating point on floats that hold integers: float32
where every partial sum is provably below 2^24 (exact there, and faster), float64 below 2^53.
The proof is a bound, max row Σ|w| · max|s|, known before the run from the weights and the
largest message the input can send (:class:`SynapseRun`), so the wraps and overflow counts
are only looked for where the bound says they can happen. Values past Loihi's limits are
counted (the arithmetic stays Lava's).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from backends.ir.integer import IntSynapse
from n2c.errors import QuantizationError
from n2c.fixed_point import EXACT_FLOAT32, EXACT_FLOAT64, LOIHI, lava_effective_weights, wrap_signed


def exact_float(bound: int) -> torch.dtype:
    """The narrowest float type holding every integer of magnitude ≤ ``bound`` (float32 below
    2^24, float64 below 2^53); a QuantizationError past that."""
    if bound < EXACT_FLOAT32:
        return torch.float32
    if bound < EXACT_FLOAT64:
        return torch.float64
    raise QuantizationError(f"values up to {float(bound):.3g} pass 2^53, where the reference simulator would be "
                            "inexact; the weights or inputs are far too large for Loihi")


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


class SynapseRun:
    """One synapse prepared for inputs |s| ≤ ``in_bound``: its weights as a tensor of the
    narrowest exact float type, and the bound of its output (``bound``), which the layers
    that read it use to prove their own exactness."""

    def __init__(self, syn: IntSynapse, in_bound: int):
        self.syn, in_bound = syn, int(in_bound)
        if syn.kind == "dense":
            w = lava_effective_weights(syn.weight)
            raw = _row_sum(w) * in_bound  # |W·s|
            e = syn.weight_exp
            shifted = raw << e if e >= 0 else -(-raw >> -e)  # |(W·s) << e| (a floor: at most ⌈raw / 2^-e⌉)
            self.wraps = max(raw, shifted) >= 2 ** (LOIHI.dense_bits - 1)
            self.dtype = exact_float(max(raw, 2 ** (LOIHI.dense_bits - 1)) if self.wraps else max(raw, shifted))
            delays = np.zeros(w.shape, np.int64) if syn.delay is None else np.asarray(syn.delay, np.int64)
            # Lava's DelayDense sums each delay's product separately: (k, Wₖᵀ) per delay
            self.parts = [(int(k), torch.from_numpy(np.where(delays == k, w, 0).T.copy()).to(self.dtype))
                          for k in np.unique(delays)]
            self.bound = 2 ** (LOIHI.dense_bits - 1) if self.wraps else shifted
        elif syn.kind in ("conv", "sumpool"):
            raw = (_row_sum(syn.weight) if syn.kind == "conv" else int(np.prod(syn.kernel))) * in_bound
            self.dtype = exact_float(raw)
            if syn.kind == "conv":
                self.weight = torch.from_numpy(np.asarray(syn.weight, np.int64)).to(self.dtype)
            self.wraps = raw >= 2 ** (LOIHI.conv_bits - 1)
            self.bound = min(raw, 2 ** (LOIHI.conv_bits - 1))
        else:
            raise ValueError(f"unknown synapse kind {syn.kind!r}")

    def __call__(self, s: torch.Tensor, overflows: dict, steps: int = 1) -> torch.Tensor:
        """s: (N, *in_shape) messages (N = steps·B, step-major), integers in any dtype → (N, *out_shape)
        currents in :attr:`dtype`. A synapse delay k moves a contribution k steps later; what moves
        past the last step is lost."""
        syn = self.syn
        s = syn.read_input(s).to(self.dtype)
        if syn.kind == "dense":
            return self._dense(s.reshape(len(s), -1), overflows, steps)
        if syn.kind == "conv":
            a = F.conv2d(s, self.weight, stride=syn.stride, padding=syn.padding, dilation=syn.dilation,
                         groups=syn.groups)
        else:
            a = F.avg_pool2d(s, syn.kernel, syn.stride, syn.padding, count_include_pad=True, divisor_override=1)
        if not self.wraps:
            return a
        half = 2 ** (LOIHI.conv_bits - 1)
        lo, hi = torch.aminmax(a) if a.numel() else (torch.zeros(()), torch.zeros(()))
        if -half < lo and hi < half:
            return a
        count_overflow(overflows, syn.name, f"{LOIHI.conv_bits}-bit convolution output (Lava's Conv wraps)",
                       (a.abs() >= half).sum())
        return wrap_signed(a.to(torch.int64), LOIHI.conv_bits).to(self.dtype)

    def _dense(self, flat: torch.Tensor, overflows: dict, steps: int) -> torch.Tensor:
        e, bits = self.syn.weight_exp, LOIHI.dense_bits
        a = None
        for k, w_t in self.parts:
            part = later(flat @ w_t, k, steps)
            if self.wraps:  # exact int64 arithmetic: wrap32((wrap32(W·s)) << e), then the running sum
                part = wrap_signed(part.to(torch.int64), bits)
                part = wrap_signed(part << e if e >= 0 else part >> -e, bits)
                a = part if a is None else wrap_signed(a + part, bits)
            else:  # no wrap possible: the shift is a power-of-two product or a floored quotient, exact
                part = part * 2 ** e if e >= 0 else torch.floor(part / 2 ** -e)
                a = part if a is None else a + part
        a = a.to(self.dtype)
        if self.bound >= LOIHI.accumulator_limit:
            count_overflow(overflows, self.syn.name, f"{LOIHI.accumulator_bits}-bit synaptic accumulator",
                           (a.abs() >= LOIHI.accumulator_limit).sum())
        return a


def _row_sum(w: np.ndarray) -> int:
    """max over outputs of Σ|w|: the largest |W·s| per unit of max|s|."""
    return int(np.abs(np.asarray(w, np.int64)).reshape(len(w), -1).sum(axis=1).max(initial=0))


def as_tensor(s: np.ndarray) -> torch.Tensor:
    """Integer messages as a tensor sharing memory where it can (read-only arrays are copied)."""
    return torch.from_numpy(s if s.flags.writeable else s.copy())


def synapse(syn: IntSynapse, s: np.ndarray, overflows: dict, steps: int = 1) -> np.ndarray:
    """:class:`SynapseRun` on int64 messages ``s`` (N, *in_shape), bounded by their own largest
    value → (N, *out_shape) int64 currents (for the Lava-timed stream and tests)."""
    s = np.asarray(s, np.int64)
    run = SynapseRun(syn, int(np.abs(s).max(initial=0)))
    return run(as_tensor(s), overflows, steps).to(torch.int64).numpy()


def later(a, k: int, steps: int):
    """Move step-major values (steps·B, ...) k steps later; the first k steps become 0 (numpy or torch)."""
    if k == 0:
        return a
    frames = a.reshape(steps, -1, *a.shape[1:])
    moved = torch.zeros_like(frames) if isinstance(frames, torch.Tensor) else np.zeros_like(frames)
    moved[k:] = frames[:steps - k]
    return moved.reshape(a.shape)
