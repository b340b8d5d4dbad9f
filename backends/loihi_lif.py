"""Loihi's fixed-point CUBA neuron (Lava's bit-accurate ``LIF`` model), stated once,
and how NIR's I, LI, IF, LIF, CubaLI and CubaLIF map onto it.

One step, all integers (u, v: 24-bit state; du, dv: 12-bit decays; a: the synaptic
input; rtz: round toward zero)::

    u ← wrap24( rtz(u·(4096 − (du + 1)) / 4096) + a·64 )
    v ← clip( rtz(v·(4096 − dv) / 4096) + u + bias, ±(2²³ − 1) )
    s = v > vth·64;   v ← 0 where s

NIR's forward-Euler equations (``backends.float.dynamics``, scheme ``nir``) map onto it
with a per-layer integer scale S (real v = v_int / S, a power of two times 64):

    LI/LIF    dv = round(4096·dt/τ),  du = 4095 (u is this step's input)
              a = (dt/τ)·r·x·S/64,   bias = (dt/τ)·v_leak·S
    I/IF      dv = 0, du = 4095,      a = dt·r·x·S/64
    CubaLI(F) du = round(4096·dt/τ_syn) − 1, dv = round(4096·dt/τ_mem)
              a = (dt/τ_syn)·w_in·(dt/τ_mem)·r·x·S/64   (u carries i·(dt/τ_mem)·r·S)

The gains multiply the incoming weights (per neuron), so the synapse stays an 8-bit
weight matrix. Loihi resets to 0 and fires on v > θ: only ``v_reset = 0`` and NIR's
strict threshold have an exact integer form.
"""

from __future__ import annotations

import numpy as np

from backends.ir.layers import DynamicsLayer
from n2c.errors import QuantizationError

DECAY_UNITY = 4096
SHIFT = 6  # synaptic input and threshold are MSB-aligned by 6 bits
STATE_LIMIT = 2 ** 23


def _rtz_decay(x: np.ndarray, keep: np.ndarray | int) -> np.ndarray:
    prod = x.astype(np.int64) * keep
    return np.sign(prod) * (np.abs(prod) >> 12)


def lif_step(u, v, a, du, dv, bias, vth, spiking: bool = True):
    """One step of Lava's fixed-point LIF. Returns (out, u, v); out is s (0/1) or, for a
    non-spiking neuron, v itself."""
    u = _rtz_decay(u, DECAY_UNITY - (du + 1)) + (a.astype(np.int64) << SHIFT)
    u = np.where(u > STATE_LIMIT, u - 2 * STATE_LIMIT, u)
    u = np.where(u <= -STATE_LIMIT, u + 2 * STATE_LIMIT, u)
    v = np.clip(_rtz_decay(v, DECAY_UNITY - dv) + u + bias, -STATE_LIMIT + 1, STATE_LIMIT - 1)
    if not spiking:
        return v, u, v
    s = v > (vth.astype(np.int64) << SHIFT)
    return s.astype(np.int64), u, np.where(s, 0, v)


def cuba_form(layer: DynamicsLayer, dt: float) -> dict:
    """Decays (du, dv per neuron), input gain (real weight multiplier per neuron) and the
    real bias per step, from NIR parameters under forward Euler with time step ``dt``."""
    kind = layer.kind
    if layer.spiking and np.any(layer.v_reset != 0):
        raise QuantizationError(f"neuron '{layer.name}' ({kind}): Loihi resets to 0, this node to v_reset "
                                f"{float(np.max(np.abs(layer.v_reset))):g}; simulate it in float (--precision float)")
    if kind in ("I", "IF"):
        alpha_m = np.zeros(layer.out_shape)
        gain = dt * layer.r
    else:
        alpha_m = dt / layer.tau_mem
        gain = alpha_m * layer.r
    dv = np.rint(DECAY_UNITY * alpha_m).astype(np.int64)
    du = np.full(layer.out_shape, DECAY_UNITY - 1, np.int64)
    if kind in ("CubaLI", "CubaLIF"):
        alpha_s = dt / layer.tau_syn
        du = np.rint(DECAY_UNITY * alpha_s).astype(np.int64) - 1
        gain = gain * alpha_s * layer.w_in
        if (du < 0).any():
            raise QuantizationError(f"neuron '{layer.name}': dt/τ_syn = {float(alpha_s.min()):.3g} is below Loihi's "
                                    "12-bit decay resolution (1/4096); use a larger dt")
    if (dv > DECAY_UNITY - 1).any() or (du > DECAY_UNITY - 1).any():
        raise QuantizationError(f"neuron '{layer.name}': dt/τ ≥ 1 has no 12-bit decay; use a smaller dt")
    leak = alpha_m * layer.v_leak if layer.v_leak is not None else np.zeros(layer.out_shape)
    return {"du": du, "dv": dv, "gain": gain, "leak": leak}
