"""Lowering of IR neurons (``IntNeuron``) to Lava Processes.

Which Process runs each kind (``docs/lava-backend.md``)::

    mtn (also polarity)  MultiThresholdNeuron   custom, CPU simulation only
    sfn                  ScaleAndFireNeuron     custom, CPU simulation only
    parallel             ParallelNeuron         custom, CPU simulation only; output T steps later
    lif                  stock LIFReset where it matches exactly (uniform du, dv and threshold,
                         bias = 13-bit mantissa << shared exponent), else CubaNeuron (custom)
    li                   CubaNeuron             custom (sends its potential v)
    lif_subtract         CubaNeuron             custom (snnTorch's reset: by subtraction, a step late)
    lif_subtract_now     CubaNeuron             custom (snnTorch's reset without delay)
    readout              ReadoutNeuron          custom
    relay                stock GradedVec (vth = 0: sends its input current, no state kept)

What each kind computes, checks and how late its output is: its module in ``n2c.neurons``.
"""

from __future__ import annotations

import numpy as np

from backends.lava.layout import lava_shape, to_lava
from backends.ir.integer import IntNeuron
from n2c.errors import QuantizationError
from n2c.fixed_point import bias_mantissa_exponent
from n2c.neurons import KINDS


def uniform_value(values) -> int | None:
    """The one value of a per-layer parameter, or None when the neurons differ."""
    a = np.unique(np.asarray(values))
    return int(a[0]) if a.size == 1 else None


def stock_lif_mismatch(neuron: IntNeuron) -> str | None:
    """Why Lava's stock ``LIFReset`` cannot run this spiking CUBA layer exactly (None: it can)."""
    if neuron.neuron_kind.reset != "zero":
        return f"its reset ({neuron.neuron_kind.reset}; LIFReset resets to 0)"
    for what in ("du", "dv", "threshold"):
        if uniform_value(getattr(neuron, what)) is None:
            return f"per-neuron {what} (LIFReset takes one per layer)"
    try:
        bias_mantissa_exponent(np.broadcast_to(neuron.bias, neuron.shape), neuron.name)
    except QuantizationError:
        return "a bias without an exact 13-bit mantissa and shared exponent"
    return None


def check_neuron(neuron: IntNeuron) -> None:
    """Raise a QuantizationError naming what of this neuron Lava cannot run, and the fix."""
    if neuron.kind not in PROCESSES:
        raise QuantizationError(f"neuron '{neuron.name}': kind {neuron.kind!r} has no Lava lowering; use one of "
                                f"{tuple(PROCESSES)}")
    neuron.neuron_kind.check(neuron)


def _multi_threshold(procs, neuron, shape, per_neuron, window):
    return procs.MultiThresholdNeuron(shape, threshold=per_neuron(neuron.threshold), max_spikes=neuron.max_spikes,
                                      min_spikes=neuron.min_spikes, v_init=per_neuron(neuron.v_init), **window)


def _scale_and_fire(procs, neuron, shape, per_neuron, window):
    return procs.ScaleAndFireNeuron(shape, edges=neuron.edges, codes=neuron.codes, code_value=neuron.code_value,
                                    v_init=per_neuron(neuron.v_init), **window)


def _parallel(procs, neuron, shape, per_neuron, window):
    return procs.ParallelNeuron(shape, threshold=per_neuron(neuron.threshold), v_init=per_neuron(neuron.v_init),
                                **window)


def _readout(procs, neuron, shape, per_neuron, window):
    return procs.ReadoutNeuron(shape, **window)


def _cuba(procs, neuron, shape, per_neuron, window):
    """Lava's stock LIF where it is exact (spiking, and no ``stock_lif_mismatch``), else n2c's CubaNeuron."""
    if neuron.neuron_kind.spiking and stock_lif_mismatch(neuron) is None:
        return _stock_lif(neuron, shape, per_neuron, window["timesteps"], window["depth"])
    return procs.CubaNeuron(shape, du=per_neuron(neuron.du), dv=per_neuron(neuron.dv),
                            vth=None if neuron.threshold is None else per_neuron(neuron.threshold),
                            kind=neuron.kind, **window)


def _relay(procs, neuron, shape, per_neuron, window):
    """Lava's stock graded relay: ``v = a_in``, sent when ``|v| > vth`` (0 sends 0 anyway), then
    ``v = 0``; it has no bias and no window (nothing is kept between steps)."""
    from lava.proc.graded.process import GradedVec

    if np.any(neuron.bias):
        raise QuantizationError(f"relay '{neuron.name}' has a bias; relays carry currents only")
    return GradedVec(shape=shape, vth=0)


# The Process that runs each kind of n2c.neurons (docs/lava-backend.md).
PROCESSES = {"mtn": _multi_threshold, "sfn": _scale_and_fire, "parallel": _parallel, "lif": _cuba, "li": _cuba,
             "lif_subtract": _cuba, "lif_subtract_now": _cuba, "readout": _readout, "relay": _relay}
assert set(PROCESSES) == set(KINDS), "every neuron kind needs a Lava Process (or an entry saying why not)"


def neuron_process(neuron: IntNeuron, timesteps: int, depth: int):
    """The Lava Process of ``neuron`` whose input lags the source by ``depth`` steps; samples
    are ``timesteps`` steps long. Per-neuron parameters are passed in Lava's (W, H, C) layout."""
    from backends.lava.processes import neurons as procs

    check_neuron(neuron)
    shape = lava_shape(tuple(neuron.shape))

    def per_neuron(values) -> np.ndarray:
        return to_lava(np.broadcast_to(np.asarray(values, dtype=np.int64), neuron.shape))

    window = dict(bias=per_neuron(neuron.bias), timesteps=timesteps, depth=depth, name=neuron.name)
    return PROCESSES[neuron.kind](procs, neuron, shape, per_neuron, window)


def _stock_lif(neuron: IntNeuron, shape: tuple[int, ...], per_neuron, timesteps: int, depth: int):
    """Lava's own LIF (``LIFReset``: u and v cleared at each window start, time_step ≡ 1 + d mod T)."""
    from lava.proc.lif.process import LIFReset

    mant, exp = bias_mantissa_exponent(np.broadcast_to(neuron.bias, neuron.shape), neuron.name)
    return LIFReset(shape=shape, du=uniform_value(neuron.du), dv=uniform_value(neuron.dv),
                    vth=uniform_value(neuron.threshold), bias_mant=per_neuron(mant), bias_exp=exp,
                    reset_interval=timesteps, reset_offset=(1 + depth) % timesteps, name=neuron.name)


def final_state(neuron: IntNeuron, proc) -> dict[str, np.ndarray]:
    """The neuron's state after a run in IR layout (int64), one entry per state variable of its
    kind: {"v"}, and "u" for the CUBA kinds, "pending" for the parallel neuron (whose ``v`` is its
    running window total). Call before the runtime stops."""
    from backends.lava.layout import from_lava

    return {n: from_lava(np.rint(np.asarray(getattr(proc, n).get())).astype(np.int64))
            for n in neuron.neuron_kind.state}
