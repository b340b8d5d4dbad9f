"""Polarity multi-spike neuron (PMSM): the multi-threshold neuron with negative spikes.

It is the ``mtn`` kind (:mod:`n2c.neurons.multi_threshold`) with ``K⁻ > 0``: one equation,
one kernel, one NIR form (``multi_threshold_if`` with ``n2c.min_spikes``). What is its own
is the signed quantizer it reproduces and the signed messages it sends.

Signed quantizer (the ANN side of PMSM), ``θ = λ/L``::

    q(z) = θ · clip(floor(z/θ + 1/2), -L, L)          (2L + 1 levels)

At T = 1 with ``v_init = θ/2`` and ``K = K⁻ = L`` the neuron's count is exactly that level.
Its messages are signed: two's complement, ``1 + max(bits(K), bits(K⁻ - 1))`` bits
(:func:`message_bits`), so a receiving Lava synapse needs ``num_message_bits`` with a sign bit.
"""

from __future__ import annotations

from n2c.neurons.multi_threshold import step


def signed_qcfs_count(z, theta, levels):
    """Signed quantizer level: ``clip(floor((z + θ/2)/θ), -L, L)``."""
    k, _ = step(theta / 2, z, theta, levels, levels)
    return k


def message_bits(lo: int, hi: int) -> int:
    """Bits of a graded message with values lo..hi: two's complement when it can be negative.
    (Lava's CPU Dense and Conv only test ``num_message_bits > 0``; 0 would cast −1 to +1.)"""
    if lo >= 0:
        return max(1, hi.bit_length())
    return 1 + max(hi.bit_length(), (-lo - 1).bit_length())
