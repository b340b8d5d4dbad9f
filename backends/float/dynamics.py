"""Discrete-time equations of NIR's standard neurons, stated once.

NIR defines its neurons in continuous time (``docs/nir-conventions.md`` quotes
them); every simulator picks a time step ``dt`` and an update scheme. n2c's
default, ``nir``, is forward Euler of NIR's equations, per step with input
``x(t)`` (the sum of the node's inputs):

    I        v ← v + dt·r·x                                   out = v
    LI       v ← v + (dt/τ)·(v_leak − v + r·x)                out = v
    IF       v ← v + dt·r·x;  z = [v > θ];  v ← v_reset where z        out = z
    LIF      LI update, then z and the reset as for IF                 out = z
    CubaLI   i ← i + (dt/τ_syn)·(−i + w_in·x)
             v ← v + (dt/τ_mem)·(v_leak − v + r·i)            out = v
    CubaLIF  CubaLI update, then z and the reset                       out = z

Tools discretize differently, and a graph they export only runs the same in
n2c under their scheme. :data:`DISCRETIZATIONS` names each one; the fields of
:class:`Discretization` say exactly what changes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from backends.ir.layers import DynamicsLayer
from n2c.errors import N2CError


@dataclass(frozen=True)
class Discretization:
    """How continuous NIR neurons become steps.

    dt               time step, in the graph's time unit.
    reset            ``zero``: v ← v_reset on a spike (NIR); ``subtract``: v ← v − θ.
    reset_delay      0: the reset acts in the step that spiked (NIR); 1: it is applied
                     at the next step, after the decay and the input (snnTorch).
    reset_settles    with reset_delay 0 and ``subtract``: the spike is decided on the
                     membrane less θ where the previous step's membrane (after its reset)
                     was still above θ, and v ← v − θ·z alone (snnTorch's reset_delay=False).
    current_first    CubaLI(F): the membrane sees this step's synaptic current (True)
                     or the previous step's (False).
    current_jump     CubaLI(F): i ← (1 − dt/τ_syn)·i + w_in·x (the input jumps the
                     current) instead of the Euler term (dt/τ_syn)·w_in·x.
    integrator_dt    I and IF integrate dt·r·x (True, NIR) or r·x (False, Norse).
    v_start          initial membrane: ``zero`` or ``leak`` (v(0) = v_leak).
    recurrent_start  what an edge that closes a cycle delivers at step 0: ``zero``, or
                     ``rest``: its source's output for all-zero inputs (an Affine's bias).
    integer_reset    the reset of the scheme's form in Loihi's integers (``backends.quantize``'s
                     ``reset``, a spiking kind of ``n2c.neurons.cuba``); None: float only.
    """
    name: str
    dt: float
    reset: str = "zero"
    reset_delay: int = 0
    reset_settles: bool = False
    current_first: bool = True
    current_jump: bool = False
    integrator_dt: bool = True
    v_start: str = "zero"
    recurrent_start: str = "zero"
    integer_reset: str | None = None
    description: str = ""

    def with_dt(self, dt: float | None) -> "Discretization":
        if dt is None:
            return self
        if not dt > 0:
            raise N2CError(f"the time step must be positive, got dt = {dt}")
        return replace(self, dt=float(dt))


DISCRETIZATIONS = {
    # recurrent_start "rest": NIR's Affine is instantaneous (W·x + b at every time, t = 0 included),
    # so an edge closing a cycle through it delivers its bias from step 0, as snnTorch's RLeaky does
    "nir": Discretization("nir", 1e-3, recurrent_start="rest", integer_reset="zero",
                          description="forward Euler of NIR's equations, hard reset in the spiking step, recurrent "
                          "bias from step 0 (dt 1e-3 unless the graph states n2c.dt)"),
    "snntorch": Discretization("snntorch", 1e-4, reset="subtract", reset_delay=1, recurrent_start="rest",
                               integer_reset="subtract-late",
                               description="snnTorch 1.0's own simulation of the graphs it exports: dt 1e-4, "
                               "reset by subtraction one step late, recurrent bias from step 0"),
    "snntorch-nodelay": Discretization("snntorch-nodelay", 1e-4, reset="subtract", reset_settles=True,
                                       recurrent_start="rest", integer_reset="subtract-now",
                                       description="snnTorch 1.0's simulation of neurons made with "
                                       "reset_delay=False (the NIR paper's 'reset without delay' models): dt 1e-4, "
                                       "reset by subtraction in the spiking step, the spike decided after a reset "
                                       "still due from the step before"),
    "norse": Discretization("norse", 1e-6, current_jump=True, integrator_dt=False, v_start="leak",
                            description="Norse 1.1's own simulation of the graphs it exports: its exporter "
                            "writes tau = dt/τ⁻¹ (norse#411), so dt = dt_module·dt_export = 1e-6; input jumps "
                            "the synaptic current; IF integrates r·x; v starts at v_leak"),
}


# the schemes with a form in Loihi's integers
INTEGER_SCHEMES = tuple(name for name, d in DISCRETIZATIONS.items() if d.integer_reset is not None)


def discretization(name: str, dt: float | None = None) -> Discretization:
    if name not in DISCRETIZATIONS:
        raise N2CError(f"unknown discretization {name!r}; use one of {', '.join(DISCRETIZATIONS)}")
    return DISCRETIZATIONS[name].with_dt(dt)


class NeuronState:
    """State and one-step update of a :class:`DynamicsLayer` for a batch (float64)."""

    def __init__(self, layer: DynamicsLayer, disc: Discretization, batch: int):
        self.layer, self.disc = layer, disc
        shape = (batch, *layer.out_shape)
        self.v = np.zeros(shape) if disc.v_start == "zero" or layer.v_leak is None \
            else np.broadcast_to(layer.v_leak, shape).astype(np.float64)
        self.i = np.zeros(shape)
        self.pending = np.zeros(shape, dtype=bool)  # spikes whose reset is still due (reset_delay 1)

    def step(self, x: np.ndarray) -> np.ndarray:
        layer, d, dt = self.layer, self.disc, self.disc.dt
        kind = layer.kind
        if kind in ("I", "IF"):
            v = self.v + (dt if d.integrator_dt else 1.0) * layer.r * x
        elif kind in ("LI", "LIF"):
            v = self.v + dt / layer.tau_mem * (layer.v_leak - self.v + layer.r * x)
        else:  # CubaLI, CubaLIF
            drive = layer.w_in * x if d.current_jump else dt / layer.tau_syn * layer.w_in * x
            i_new = self.i - dt / layer.tau_syn * self.i + drive
            i_seen = i_new if d.current_first else self.i
            v = self.v + dt / layer.tau_mem * (layer.v_leak - self.v + layer.r * i_seen)
            self.i = i_new
        if not layer.spiking:
            self.v = v
            return v
        if d.reset_delay:
            v = self._reset(v, self.pending)
        if d.reset_settles:  # snnTorch: a membrane left above θ by its reset owes θ more before it is read
            z = v - (self.v > layer.v_threshold) * layer.v_threshold > layer.v_threshold
        else:
            z = v > layer.v_threshold
        if d.reset_delay:
            self.pending = z
        else:
            v = self._reset(v, z)
        self.v = v
        return z.astype(np.float64)

    def _reset(self, v: np.ndarray, z: np.ndarray) -> np.ndarray:
        if self.disc.reset == "subtract":
            return v - z * self.layer.v_threshold
        return np.where(z, self.layer.v_reset, v)
