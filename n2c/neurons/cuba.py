"""Loihi's CUBA neuron for NIR's I, LI, IF, LIF, CubaLI and CubaLIF (kinds ``lif`` and ``li``).

One step, all integers (``n2c.fixed_point.lif_step``, bit-identical to Lava's fixed-point
``LIF``; u, v: 24-bit state; du, dv: 12-bit decays; a: the synaptic input; rtz: round
toward zero)::

    u ← wrap24( rtz(u·(4096 − (du + 1)) / 4096) + a·64 )
    v ← clip( rtz(v·(4096 − dv) / 4096) + u + bias, ±(2²³ − 1) )
    lif: s = v > vth·64;  v ← 0 where s;  send s        li: send v (graded, 24-bit)
    lif_subtract (snnTorch's reset): v ← v − pending·vth·64 before the threshold;
                  s = v > vth·64;  pending ← s;  send s
    lif_subtract_now (snnTorch's reset_delay=False): s = v − [v_before > vth·64]·vth·64 > vth·64;
                  v ← v − s·vth·64;  send s

``u = v = 0`` at each window start. NIR's forward-Euler equations (``backends.float.dynamics``,
scheme ``nir``) map onto it with a per-layer integer scale S (real v = v_int / S, a power
of two times 64)::

    LI/LIF    dv = round(4096·dt/τ),  du = 4095 (u is this step's input)
              a = (dt/τ)·r·x·S/64,   bias = (dt/τ)·v_leak·S
    I/IF      dv = 0, du = 4095,      a = dt·r·x·S/64
    CubaLI(F) du = round(4096·dt/τ_syn) − 1, dv = round(4096·dt/τ_mem)
              a = (dt/τ_syn)·w_in·(dt/τ_mem)·r·x·S/64   (u carries i·(dt/τ_mem)·r·S)

The gains multiply the incoming weights (per neuron), so the synapse stays an 8-bit weight
matrix. Loihi resets to 0 and fires on v > θ: only ``v_reset = 0`` and NIR's strict
threshold have an exact integer form. These kinds are written back to NIR as the standard
NIR neuron they came from (no ``n2c.neuron``).
"""

from __future__ import annotations

import numpy as np

from n2c.errors import QuantizationError
from n2c.fixed_point import LOIHI, IntegerFormat, StateClamp, lif_step, lif_subtract_now_step, lif_subtract_step
from n2c.neurons.kind import NeuronKind


def cuba_form(layer, dt: float, fmt: IntegerFormat = LOIHI) -> dict:
    """Decays (du, dv per neuron), input gain (real weight multiplier per neuron) and the real
    bias per step, from a NIR neuron layer's parameters under forward Euler with time step ``dt``."""
    kind, unity = layer.kind, fmt.decay_unity
    if layer.spiking and np.any(layer.v_reset != 0):
        raise QuantizationError(f"neuron '{layer.name}' ({kind}): Loihi resets to 0, this node to v_reset "
                                f"{float(np.max(np.abs(layer.v_reset))):g}; simulate it in float (--precision float)")
    if kind in ("I", "IF"):
        alpha_m = np.zeros(layer.out_shape)
        gain = dt * layer.r
    else:
        alpha_m = dt / layer.tau_mem
        gain = alpha_m * layer.r
    dv = np.rint(unity * alpha_m).astype(np.int64)
    du = np.full(layer.out_shape, unity - 1, np.int64)
    if kind in ("CubaLI", "CubaLIF"):
        alpha_s = dt / layer.tau_syn
        du = np.rint(unity * alpha_s).astype(np.int64) - 1
        gain = gain * alpha_s * layer.w_in
        if (du < 0).any():
            raise QuantizationError(f"neuron '{layer.name}': dt/τ_syn = {float(alpha_s.min()):.3g} is below Loihi's "
                                    f"{fmt.decay_bits}-bit decay resolution (1/{unity}); use a larger dt")
    if (dv > unity - 1).any() or (du > unity - 1).any():
        raise QuantizationError(f"neuron '{layer.name}': dt/τ ≥ 1 has no {fmt.decay_bits}-bit decay; use a smaller dt")
    leak = alpha_m * layer.v_leak if layer.v_leak is not None else np.zeros(layer.out_shape)
    return {"du": du, "dv": dv, "gain": gain, "leak": leak}


class Cuba(NeuronKind):
    """``lif`` (spiking) or ``li`` (sends its potential)."""

    state = ("v", "u")
    reset = "zero"  # Loihi's: v ← 0 in the spiking step (``backends.quantize``'s ``reset``)

    def __init__(self, spiking: bool):
        self.spiking = spiking
        self.name = "lif" if spiking else "li"

    def v_start(self, neuron):
        return 0

    def step(self, neuron, state, current, clamp: StateClamp):
        """The bias enters v, not the input."""
        out, state["u"], state["v"] = lif_step(state["u"], state["v"], current, neuron.du, neuron.dv, neuron.bias,
                                               neuron.threshold, self.spiking, clamp)
        clamp.at_limit(state["v"])  # v at Lava's clip limit
        return out

    def message_range(self, neuron, fmt: IntegerFormat = LOIHI):
        return (0, 1) if self.spiking else (-fmt.state_max, fmt.state_max)

    def check(self, neuron, fmt: IntegerFormat = LOIHI) -> None:
        super().check(neuron, fmt)
        for what in ("du", "dv"):
            values = np.asarray(getattr(neuron, what))
            if values.min() < 0 or values.max() > fmt.decay_unity - 1:
                raise QuantizationError(f"neuron '{neuron.name}': {what} outside Loihi's {fmt.decay_bits}-bit decay "
                                        f"0..{fmt.decay_unity - 1}; choose dt so that dt/τ < 1")
        if self.spiking and ((np.asarray(neuron.threshold) < 0).any()
                             or (np.asarray(neuron.threshold) >= fmt.vth_limit).any()):
            raise QuantizationError(f"neuron '{neuron.name}': threshold outside Loihi's unsigned "
                                    f"{fmt.threshold_bits} bits; quantize the layer at a smaller scale")

    def quantize_threshold(self, layer, neuron, k: float, fmt: IntegerFormat = LOIHI) -> dict:
        """vth = round(θ·k) at the weight scale k (v is compared with vth << 6)."""
        vth = np.rint(np.broadcast_to(layer.v_threshold, neuron.shape) * k).astype(np.int64)
        if (vth < 0).any() or (vth >= fmt.vth_limit).any():
            raise QuantizationError(f"neuron '{layer.name}': threshold {int(vth.min())}..{int(vth.max())} does not "
                                    f"fit Loihi's unsigned {fmt.threshold_bits}-bit threshold at scale {neuron.scale:g}")
        neuron.threshold = vth
        return {"threshold_int_min": int(vth.min())}


class CubaSubtract(Cuba):
    """``lif_subtract``: the spiking CUBA neuron with snnTorch's reset, by subtraction of the
    threshold and one step late (``n2c.fixed_point.lif_subtract_step``; the float scheme
    ``snntorch`` of ``backends.float.dynamics``). A custom neuron (Loihi 2 microcode): Lava's
    stock LIF resets to 0."""

    state = ("v", "u", "pending")
    reset = "subtract-late"

    def __init__(self):
        super().__init__(spiking=True)
        self.name = "lif_subtract"

    def step(self, neuron, state, current, clamp: StateClamp):
        out, state["u"], state["v"], state["pending"] = lif_subtract_step(
            state["u"], state["v"], state["pending"], current, neuron.du, neuron.dv, neuron.bias, neuron.threshold,
            clamp)
        clamp.at_limit(state["v"])
        return out


class CubaSubtractNow(Cuba):
    """``lif_subtract_now``: the spiking CUBA neuron with snnTorch's reset without delay
    (``reset_delay=False``; ``n2c.fixed_point.lif_subtract_now_step``; the float scheme
    ``snntorch-nodelay``). A custom neuron, as ``lif_subtract``."""

    reset = "subtract-now"

    def __init__(self):
        super().__init__(spiking=True)
        self.name = "lif_subtract_now"

    def step(self, neuron, state, current, clamp: StateClamp):
        out, state["u"], state["v"] = lif_subtract_now_step(state["u"], state["v"], current, neuron.du, neuron.dv,
                                                            neuron.bias, neuron.threshold, clamp)
        clamp.at_limit(state["v"])
        return out


LIF = Cuba(spiking=True)
LI = Cuba(spiking=False)
LIF_SUBTRACT = CubaSubtract()
LIF_SUBTRACT_NOW = CubaSubtractNow()
# the spiking kind of each reset (``backends.quantize``'s ``reset``)
SPIKING_BY_RESET = {k.reset: k for k in (LIF, LIF_SUBTRACT, LIF_SUBTRACT_NOW)}
