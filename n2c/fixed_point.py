"""Loihi's integer formats, stated once: every bit width, clamp, wrap and rounding rule of
the integer IR, the reference simulator and the Lava lowering.

Everything that n2c computes on integers follows these rules (the way nengo-loihi keeps
its discretization in one module). :data:`LOIHI` holds the widths of Loihi as Lava's
fixed-point models implement them; :meth:`IntegerFormat.for_chip` narrows them to a chip
spec's ``weight_bits`` and ``delay_bits`` (``backends.hardware.spec``), so a chip with
other widths quantizes with its own.

Formats (signed two's complement unless stated)::

    membrane state u, v        24 bits, saturating: clamp to [-2^23, 2^23 - 1]
                               (Lava's CUBA LIF clips v to ±(2^23 - 1) and wraps u)
    weight mantissa            8 magnitude bits and a sign: [-256, 255]; mixed-sign
                               weights lose their lowest bit in Lava, so n2c keeps them
                               even, |w| <= 254
    multi-threshold θ          up to 23 bits (Loihi's 17-bit threshold mantissa << 6)
    CUBA threshold vth         unsigned 17 bits, compared as vth << 6
    CUBA decays du, dv         12 bits, 0..4095 (a step keeps (4096 - d)/4096)
    bias                       13-bit mantissa << a shared exponent 0..7 (stock LIF);
                               24 bits in n2c's own neuron models; a multiple of
                               ``bias_unit`` (1, or 64 for lava-dl netx, whose bias_exp is 6)
    synaptic accumulator       16 bits on the chip; Lava's Dense sums in int32 and does
                               not saturate, its Conv wraps to 24 bits
    synaptic delay             0..62 steps (6 bits; lava-dl netx clips above 62)
    input                      8-bit graded spikes (unsigned for n2c graphs)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from n2c.errors import QuantizationError


@dataclass(frozen=True)
class IntegerFormat:
    """Bit widths of one chip's integer arithmetic (defaults: Loihi as Lava models it)."""

    state_bits: int = 24
    weight_bits: int = 8  # magnitude bits of a weight mantissa (Lava's num_weight_bits); the sign is extra
    threshold_bits: int = 17  # the CUBA threshold mantissa (unsigned)
    threshold_shift: int = 6  # synaptic input and threshold are MSB-aligned by 6 bits in the CUBA neuron
    decay_bits: int = 12
    bias_mantissa_bits: int = 13
    bias_exponent_max: int = 7
    accumulator_bits: int = 16
    dense_bits: int = 32  # Lava's Dense accumulates in int32 and wraps there
    conv_bits: int = 24  # Lava's Conv wraps its output to 24 bits
    max_delay: int = 62
    input_bits: int = 8
    bias_unit: int = 1  # biases are multiples of this (lava-dl netx fixes bias_exp = 6: 64)

    @classmethod
    def for_chip(cls, weight_bits: int, delay_bits: int) -> "IntegerFormat":
        """The format of a chip spec: its weight and delay widths, never wider than Lava's."""
        if weight_bits < 2 or delay_bits < 0:
            raise QuantizationError(f"a chip with {weight_bits}-bit weights and {delay_bits}-bit delays has no "
                                    "integer form; give weight_bits >= 2 and delay_bits >= 0")
        base = cls()
        return cls(weight_bits=min(base.weight_bits, weight_bits),
                   max_delay=min(base.max_delay, 2 ** delay_bits - 1))

    # --- state --------------------------------------------------------------------------------
    @property
    def state_max(self) -> int:
        return 2 ** (self.state_bits - 1) - 1

    @property
    def state_min(self) -> int:
        return -(2 ** (self.state_bits - 1))

    def clamp_state(self, x: np.ndarray) -> np.ndarray:
        """Saturate to the signed state range (membrane potentials)."""
        return np.clip(x, self.state_min, self.state_max)

    def round_bias(self, real: np.ndarray, name: str) -> np.ndarray:
        """A real bias (in integer units) at the format's granularity: the nearest multiple of
        ``bias_unit`` that fits the signed state width, or a QuantizationError naming the layer."""
        unit = self.bias_unit
        return to_signed(np.asarray(real, np.float64) / unit, self.state_bits - (unit.bit_length() - 1), name,
                         "the bias") * unit

    # --- weights ------------------------------------------------------------------------------
    @property
    def weight_max(self) -> int:
        """Largest weight mantissa n2c writes: even, since Lava drops a mixed-sign weight's lowest bit."""
        return 2 ** self.weight_bits - 2

    # --- thresholds ---------------------------------------------------------------------------
    @property
    def multi_threshold_bits(self) -> int:
        """Signed width of a multi-threshold neuron's θ: the threshold mantissa, shifted."""
        return self.threshold_bits + self.threshold_shift

    @property
    def vth_limit(self) -> int:
        """CUBA thresholds are unsigned and below this."""
        return 2 ** self.threshold_bits

    @property
    def decay_unity(self) -> int:
        return 2 ** self.decay_bits

    @property
    def accumulator_limit(self) -> int:
        """|current| from this value on does not fit the chip's synaptic accumulator."""
        return 2 ** (self.accumulator_bits - 1)


LOIHI = IntegerFormat()

# Module-level names of the default format, for the code that has no chip in hand.
STATE_BITS = LOIHI.state_bits
STATE_MAX = LOIHI.state_max
STATE_MIN = LOIHI.state_min
WEIGHT_BITS = LOIHI.weight_bits
MAX_DELAY = LOIHI.max_delay
INPUT_BITS = LOIHI.input_bits
DECAY_UNITY = LOIHI.decay_unity
SHIFT = LOIHI.threshold_shift
EXACT_FLOAT32 = 2 ** 24  # integers below this are exact in float32
EXACT_FLOAT64 = 2 ** 53


def clamp24(x: np.ndarray) -> np.ndarray:
    """Saturate to Loihi's signed 24-bit state range (membrane potentials)."""
    return LOIHI.clamp_state(x)


def wrap_signed(x: np.ndarray, bits: int) -> np.ndarray:
    """Two's-complement wrap-around to ``bits`` bits, as fixed-width hardware registers do."""
    half = 1 << (bits - 1)
    return ((x + half) & ((1 << bits) - 1)) - half


class StateClamp:
    """clamp24 that counts the values it changes (the saturations a report must show), and the
    synaptic currents that wrap (``wraps``), unless ``counting`` is off (Lava's models clamp the
    same way, and nobody reads their count)."""

    def __init__(self, fmt: IntegerFormat = LOIHI, counting: bool = True):
        self.fmt, self.counting = fmt, counting
        self.count = 0
        self.wraps = 0

    def __call__(self, x):
        """x: int64 numpy, or a torch tensor of floats holding integers (the reference's exact
        float runs)."""
        lo, hi = self.fmt.state_min, self.fmt.state_max
        if isinstance(x, torch.Tensor):
            if x.numel():
                least, most = torch.aminmax(x)
                if lo <= least and most <= hi:
                    return x
            y = torch.clamp(x, lo, hi)
        else:
            if isinstance(x, np.ndarray) and x.size and lo <= x.min() and x.max() <= hi:
                return x  # nothing to saturate (two reductions, no copy: the common case)
            y = self.fmt.clamp_state(x)
        if self.counting:
            self.count += int((y != x).sum())
        return y

    def at_limit(self, x) -> None:
        """Count values already clipped elsewhere (Lava's LIF clips v to ±(2^23 - 1) itself)."""
        if self.counting:
            self.count += int((abs(x) >= self.fmt.state_max).sum())


def to_signed(x: np.ndarray, bits: int, name: str, what: str) -> np.ndarray:
    """Round real values to integers that must fit ``bits``-bit signed, or raise naming the layer.
    The range is checked on the real values, before the cast (1e30 must not become INT64_MIN)."""
    x = np.asarray(x, dtype=np.float64)
    largest = float(np.abs(x).max(initial=0))
    if not largest < 2 ** (bits - 1) - 0.5:
        raise QuantizationError(f"layer '{name}': {what} does not fit {bits}-bit signed integers "
                                f"(max {largest:.4g}); the weights are too small relative to it")
    return np.round(x).astype(np.int64)


def lava_effective_weights(w: np.ndarray, num_weight_bits: int = WEIGHT_BITS) -> np.ndarray:
    """The weights Lava's fixed-point Dense multiplies with: sign mode from the weights
    (excitatory if all ≥ 0, else inhibitory if all ≤ 0, else mixed), magnitudes clipped to
    8 bits ([−256, 255], [0, 255] or [−255, 0]), and 8 − num_weight_bits (+1 when mixed) low
    bits dropped (floor): mixed-sign weights lose their lowest bit even at 8 bits."""
    w = np.asarray(w, dtype=np.int64)
    mixed = bool((w < 0).any() and (w > 0).any())
    sign = -1 if not mixed and (w < 0).any() else 1
    m = np.clip(sign * w, -256 if mixed else 0, 255)
    drop = 8 - num_weight_bits + mixed
    return sign * ((m >> drop) << drop)


def bias_mantissa_exponent(bias: np.ndarray, name: str, fmt: IntegerFormat = LOIHI) -> tuple[np.ndarray, int]:
    """Loihi's bias = mantissa (13-bit signed) << exponent (0..7), exactly, with one exponent per layer."""
    bias = np.asarray(bias, dtype=np.int64)
    for exp in range(fmt.bias_exponent_max + 1):
        mant = bias >> exp
        if (mant << exp == bias).all() and (np.abs(mant) < 2 ** (fmt.bias_mantissa_bits - 1)).all():
            return mant, exp
    raise QuantizationError(f"neuron '{name}': bias up to {int(np.abs(bias).max())} has no exact "
                            f"{fmt.bias_mantissa_bits}-bit mantissa with a shared exponent 0..{fmt.bias_exponent_max}")


def _rtz_decay(x: np.ndarray, keep: np.ndarray | int) -> np.ndarray:
    """rtz(x·keep / 4096): the decay product, rounded toward zero."""
    prod = x.astype(np.int64) * keep
    return np.sign(prod) * (np.abs(prod) >> LOIHI.decay_bits)


def lif_step(u, v, a, du, dv, bias, vth, spiking: bool = True, clamp: StateClamp | None = None):
    """One step of Loihi's CUBA neuron as Lava's fixed-point LIF computes it. Returns (out, u, v);
    ``out`` is s (0/1) or, for a non-spiking neuron, v itself; ``clamp`` counts the currents that
    wrap (``clamp.wraps``)::

        u ← wrap24( rtz(u·(4096 − (du + 1)) / 4096) + a·64 )
        v ← clip( rtz(v·(4096 − dv) / 4096) + u + bias, ±(2²³ − 1) )
        s = v > vth·64;   v ← 0 where s
    """
    limit = 2 ** (LOIHI.state_bits - 1)
    u = _rtz_decay(u, DECAY_UNITY - (du + 1)) + (a.astype(np.int64) << SHIFT)
    if clamp is not None and clamp.counting:
        clamp.wraps += int(((u > limit) | (u <= -limit)).sum())
    u = np.where(u > limit, u - 2 * limit, u)
    u = np.where(u <= -limit, u + 2 * limit, u)
    v = np.clip(_rtz_decay(v, DECAY_UNITY - dv) + u + bias, -limit + 1, limit - 1)
    if not spiking:
        return v, u, v
    s = v > (vth.astype(np.int64) << SHIFT)
    return s.astype(np.int64), u, np.where(s, 0, v)


def lif_subtract_step(u, v, pending, a, du, dv, bias, vth, clamp: StateClamp | None = None):
    """One step of the CUBA neuron with snnTorch's reset: by subtraction of the threshold, one
    step late (``pending``: the spikes of the step before). Returns (s, u, v, pending)::

        u ← wrap24( rtz(u·(4096 − (du + 1)) / 4096) + a·64 )          as lif_step
        v ← clip( clip( rtz(v·(4096 − dv) / 4096) + u + bias ) − pending·vth·64, ±(2²³ − 1) )
        s = v > vth·64;   pending ← s                                    (v keeps its value)

    Not Lava's stock LIF (it resets to 0 in the spiking step): a custom neuron, run on Lava by
    n2c's CubaNeuron process."""
    limit = 2 ** (LOIHI.state_bits - 1)
    _, u, v = lif_step(u, v, a, du, dv, bias, vth, spiking=False, clamp=clamp)
    theta = vth.astype(np.int64) << SHIFT
    v = np.clip(v - pending * theta, -limit + 1, limit - 1)
    s = (v > theta).astype(np.int64)
    return s, u, v, s


def lif_subtract_now_step(u, v, a, du, dv, bias, vth, clamp: StateClamp | None = None):
    """One step of the CUBA neuron with snnTorch's reset without delay (``reset_delay=False``):
    by subtraction in the spiking step, the spike decided on the membrane less θ where the
    step before left it above θ. Returns (s, u, v)::

        u ← as lif_step;   v' ← clip( rtz(v·(4096 − dv) / 4096) + u + bias )
        s = v' − [v > vth·64]·vth·64 > vth·64;   v ← clip( v' − s·vth·64 )"""
    limit = 2 ** (LOIHI.state_bits - 1)
    theta = vth.astype(np.int64) << SHIFT
    owed = (v > theta) * theta  # v: the membrane the step before left (after its reset)
    _, u, v = lif_step(u, v, a, du, dv, bias, vth, spiking=False, clamp=clamp)
    s = (v - owed > theta).astype(np.int64)
    return s, u, np.clip(v - s * theta, -limit + 1, limit - 1)
