"""Lava Processes for n2c's neurons, each with its fixed-point CPU model.

Lava finds a Process's models by re-executing every ``.py`` file in the
Process's directory, so this module stays alone in ``processes/`` and imports
only what it needs.

Both neurons restart at the beginning of every sample window: the input
streams ``period`` (= T) steps per sample back to back, and a neuron ``phase``
synapse Processes downstream of the source sees sample ``i`` from global step
``i·period + phase + 1`` on (Lava counts ``time_step`` from 1). Hence the
reset rule ``(time_step - 1 - phase) % period == 0``.

All arithmetic is int64 and follows ``n2c.backends.reference`` exactly.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from n2c.backends.quantize import clamp24
from n2c.neurons import multi_threshold_step



def _per_neuron(values, shape: tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(np.asarray(values, dtype=np.int64), shape).copy()


def _window_starts(time_step: int, period: int, phase: int) -> bool:
    """True on the first step of a sample window (``time_step`` counts from 1)."""
    return (time_step - 1 - phase) % period == 0


class MultiThresholdNeuron(AbstractProcess):
    """Multi-threshold integrate-and-fire neuron with reset by subtraction.

    Per step, with ``I`` the summed input ``a_in`` (int64) and ``b`` the bias:
    ``v = v_init`` at the start of each sample window, then
    ``k, v = multi_threshold_step(v, I + b, threshold, max_spikes)``
    (``k = clip((v + I + b) // θ, 0, K)``, ``v -= k·θ``), ``v = clamp24(v)``,
    and ``s_out`` sends the graded spike count ``k`` (0..K, int32).
    ``threshold``, ``bias`` and ``v_init`` are per-neuron (broadcast to ``shape``).
    """

    def __init__(self, shape: tuple[int, ...], threshold, max_spikes: int, bias, v_init,
                 period: int, phase: int, name: str | None = None) -> None:
        shape = tuple(int(n) for n in shape)
        super().__init__(shape=shape, max_spikes=int(max_spikes), period=int(period), phase=int(phase),
                         name=name)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.v = Var(shape=shape, init=_per_neuron(v_init, shape))
        self.threshold = Var(shape=shape, init=_per_neuron(threshold, shape))
        self.bias = Var(shape=shape, init=_per_neuron(bias, shape))
        self.v_init = Var(shape=shape, init=_per_neuron(v_init, shape))


class ReadoutNeuron(AbstractProcess):
    """Non-spiking accumulator for the network output.

    Per step: ``v = 0`` at the start of each sample window, then
    ``v = clamp24(v + a_in + bias)``; ``s_out`` sends ``v`` every step (graded,
    24-bit), so a sink can pick the potential after a window's last step.
    """

    def __init__(self, shape: tuple[int, ...], bias, period: int, phase: int, name: str | None = None) -> None:
        shape = tuple(int(n) for n in shape)
        super().__init__(shape=shape, period=int(period), phase=int(phase), name=name)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.v = Var(shape=shape, init=np.zeros(shape, dtype=np.int64))
        self.bias = Var(shape=shape, init=_per_neuron(bias, shape))


class _WindowedNeuronModel(PyLoihiProcessModel):
    """Shared ports and the per-sample reset of both neuron models."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64)  # inputs are summed in this type
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    bias: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.period: int = proc_params["period"]
        # not ``self.phase``: PyLoihiProcessModel uses that name for its SPK/MGMT phase
        self.window_offset: int = proc_params["phase"]

    def receive(self) -> np.ndarray:
        """Summed input of this step plus the bias, in int64."""
        return self.a_in.recv().astype(np.int64) + self.bias

    def window_starts(self) -> bool:
        return _window_starts(self.time_step, self.period, self.window_offset)


@implements(proc=MultiThresholdNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyMultiThresholdNeuronModel(_WindowedNeuronModel):
    """Fixed-point model of :class:`MultiThresholdNeuron`."""

    threshold: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    v_init: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.max_spikes: int = proc_params["max_spikes"]

    def run_spk(self) -> None:
        current = self.receive()
        if self.window_starts():
            self.v = self.v_init.copy()
        k, v = multi_threshold_step(self.v.astype(np.int64), current, self.threshold, self.max_spikes)
        self.v = clamp24(v)
        self.s_out.send(k.astype(np.int32))


@implements(proc=ReadoutNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyReadoutNeuronModel(_WindowedNeuronModel):
    """Fixed-point model of :class:`ReadoutNeuron`."""

    def run_spk(self) -> None:
        current = self.receive()
        if self.window_starts():
            self.v = np.zeros_like(self.v)
        self.v = clamp24(self.v.astype(np.int64) + current)
        self.s_out.send(self.v.astype(np.int32))
