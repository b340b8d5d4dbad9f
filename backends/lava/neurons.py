"""Lowering of IR neurons (``IntNeuron``) to Lava Processes.

Which Process runs each kind (``docs/lava-backend.md``)::

    mtn (also polarity)  MultiThresholdNeuron   custom, CPU simulation only
    sfn                  ScaleAndFireNeuron     custom, CPU simulation only
    parallel             ParallelNeuron         custom, CPU simulation only; output T steps later
    lif                  stock LIFReset where it matches exactly (uniform du, dv and threshold,
                         bias = 13-bit mantissa << shared exponent), else CubaNeuron (custom)
    li                   CubaNeuron             custom (sends its potential v)
    readout              ReadoutNeuron          custom

Also the message width and value bound of each kind's output and its pipeline delay.
"""

from __future__ import annotations

import numpy as np

from backends.quantize import STATE_BITS, IntNeuron
from n2c.errors import QuantizationError

STATE_LIMIT = 2 ** (STATE_BITS - 1)
DECAY_MAX = 4095  # Loihi's 12-bit du, dv
VTH_LIMIT = 2 ** 17  # Loihi's unsigned 17-bit threshold mantissa
KINDS = ("mtn", "sfn", "parallel", "lif", "li", "readout")


def output_delay(neuron: IntNeuron, period: int) -> int:
    """Steps between a neuron's input and its output: T for the parallel neuron (it sends a
    window's count during the next window), 0 otherwise."""
    return period if neuron.kind == "parallel" else 0


def uniform_value(values) -> int | None:
    """The one value of a per-layer parameter, or None when the neurons differ."""
    a = np.unique(np.asarray(values))
    return int(a[0]) if a.size == 1 else None


def bias_mantissa_exponent(bias: np.ndarray, name: str) -> tuple[np.ndarray, int]:
    """Loihi's bias = mantissa (13-bit signed) << exponent (0..7), exactly, with one exponent per layer."""
    bias = np.asarray(bias, dtype=np.int64)
    for exp in range(8):
        mant = bias >> exp
        if (mant << exp == bias).all() and (np.abs(mant) < 2 ** 12).all():
            return mant, exp
    raise QuantizationError(f"neuron '{name}': bias up to {int(np.abs(bias).max())} has no exact 13-bit mantissa "
                            "with a shared exponent 0..7")


def stock_lif_mismatch(neuron: IntNeuron) -> str | None:
    """Why Lava's stock ``LIFReset`` cannot run this "lif" layer exactly (None: it can)."""
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
    name = neuron.name
    if neuron.kind not in KINDS:
        raise QuantizationError(f"neuron '{name}': kind {neuron.kind!r} has no Lava lowering; use one of {KINDS}")
    for what in ("bias", "threshold", "v_init"):
        values = getattr(neuron, what)
        if values is not None and np.abs(np.asarray(values)).max(initial=0) >= STATE_LIMIT:
            raise QuantizationError(f"neuron '{name}': {what} exceeds Loihi's 24-bit state; quantize the layer at "
                                    "a smaller scale")
    if neuron.kind in ("mtn", "parallel") and (np.asarray(neuron.threshold) < 1).any():
        raise QuantizationError(f"neuron '{name}': threshold below 1; quantize the layer at a larger scale")
    if neuron.kind == "sfn":
        edges, codes = np.asarray(neuron.edges), np.asarray(neuron.codes)
        if codes.shape != (edges.size + 1,) or (np.diff(edges) <= 0).any() or neuron.code_value < 1:
            raise QuantizationError(f"neuron '{name}': an SFN needs N ascending thresholds, N+1 codes and a code "
                                    "value ≥ 1; re-quantize the layer")
        if np.abs(codes).max() >= STATE_LIMIT or np.abs(edges).max() >= STATE_LIMIT:
            raise QuantizationError(f"neuron '{name}': SFN codes or thresholds exceed 24 bits; use fewer levels")
    if neuron.kind in ("lif", "li"):
        for what in ("du", "dv"):
            values = np.asarray(getattr(neuron, what))
            if values.min() < 0 or values.max() > DECAY_MAX:
                raise QuantizationError(f"neuron '{name}': {what} outside Loihi's 12-bit decay 0..4095; "
                                        "choose dt so that dt/τ < 1")
    if neuron.kind == "lif" and ((np.asarray(neuron.threshold) < 0).any()
                                 or (np.asarray(neuron.threshold) >= VTH_LIMIT).any()):
        raise QuantizationError(f"neuron '{name}': threshold outside Loihi's unsigned 17 bits; quantize the "
                                "layer at a smaller scale")


def neuron_process(neuron: IntNeuron, period: int, depth: int):
    """The Lava Process of ``neuron`` whose input lags the source by ``depth`` steps; samples
    are ``period`` steps long. Per-neuron parameters are passed in Lava's (W, H, C) layout."""
    from backends.lava.lower import lava_shape, to_lava  # (lower imports this module)
    from backends.lava.processes import neurons as procs

    check_neuron(neuron)
    shape = lava_shape(tuple(neuron.shape))

    def per_neuron(values) -> np.ndarray:
        return to_lava(np.broadcast_to(np.asarray(values, dtype=np.int64), neuron.shape))

    window = dict(bias=per_neuron(neuron.bias), period=period, phase=depth, name=neuron.name)
    kind = neuron.kind
    if kind == "mtn":
        return procs.MultiThresholdNeuron(shape, threshold=per_neuron(neuron.threshold),
                                          max_spikes=neuron.max_spikes, min_spikes=neuron.min_spikes,
                                          v_init=per_neuron(neuron.v_init), **window)
    if kind == "sfn":
        return procs.ScaleAndFireNeuron(shape, edges=neuron.edges, codes=neuron.codes, code_value=neuron.code_value,
                                        v_init=per_neuron(neuron.v_init), **window)
    if kind == "parallel":
        return procs.ParallelNeuron(shape, threshold=per_neuron(neuron.threshold),
                                    v_init=per_neuron(neuron.v_init), **window)
    if kind == "readout":
        return procs.ReadoutNeuron(shape, **window)
    if kind == "lif" and stock_lif_mismatch(neuron) is None:
        return _stock_lif(neuron, shape, per_neuron, period, depth)
    return procs.CubaNeuron(shape, du=per_neuron(neuron.du), dv=per_neuron(neuron.dv),
                            vth=None if neuron.threshold is None else per_neuron(neuron.threshold),
                            spiking=kind == "lif", **window)


def _stock_lif(neuron: IntNeuron, shape: tuple[int, ...], per_neuron, period: int, depth: int):
    """Lava's own LIF (``LIFReset``: u and v cleared at each window start, time_step ≡ 1 + d mod T)."""
    from lava.proc.lif.process import LIFReset

    mant, exp = bias_mantissa_exponent(np.broadcast_to(neuron.bias, neuron.shape), neuron.name)
    return LIFReset(shape=shape, du=uniform_value(neuron.du), dv=uniform_value(neuron.dv), vth=uniform_value(neuron.threshold),
                    bias_mant=per_neuron(mant), bias_exp=exp, reset_interval=period,
                    reset_offset=(1 + depth) % period, name=neuron.name)


def final_state(neuron: IntNeuron, proc) -> dict[str, np.ndarray]:
    """The neuron's state after a run in IR layout: {"v"} and, for the CUBA kinds, {"u"} (int64).
    The parallel neuron's ``v`` is its running window total. Call before the runtime stops."""
    from backends.lava.lower import from_lava

    names = ("v", "u") if neuron.kind in ("lif", "li") else ("v",)
    return {n: from_lava(np.rint(np.asarray(getattr(proc, n).get())).astype(np.int64)) for n in names}
