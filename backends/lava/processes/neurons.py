"""Lava Processes for n2c's neurons (and the DelayLine that aligns their inputs), each with its
fixed-point CPU model.

Lava finds a Process's models by re-executing every ``.py`` file in the
Process's directory, so this module stays alone in ``processes/`` and imports
only what it needs.

These models run only in Lava's CPU simulation (``Loihi2SimCfg``): on the chip
a custom neuron needs a microcoded model from the non-public lava-loihi package.
Where Lava's stock ``LIFReset`` expresses a layer exactly, ``backends.lava``
uses it instead (the path to real hardware).

Timing, shared by every neuron here (and by the stock ``LIFReset``): global step
``t = time_step - 1`` (Lava counts from 1). The samples stream back to back,
``timesteps`` (= T) steps each, and a neuron whose input lags the source by
``depth`` (= d) steps restarts its sample window before its update at every
``t >= 0`` with ``(t - d) % T == 0``. It computes and sends at every step, also
at ``t < d``; its state starts at its reset value at ``t = 0``.

Every model runs its kind's window rule and integer kernel from ``n2c.neurons``
(``NeuronKind.stream_step``), the same code ``backends.reference.stream`` runs: all
arithmetic is int64 and equal to the reference's by construction.
"""

from __future__ import annotations

import numpy as np
import backends.lava.runtime  # noqa: F401  (first: sets the multiprocessing start method)
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from n2c.fixed_point import StateClamp
from n2c.neurons import KINDS
from n2c.neurons.kind import per_neuron as _per_neuron


class _WindowedNeuron(AbstractProcess):
    """Ports, bias and window parameters shared by every neuron Process below."""

    def __init__(self, shape: tuple[int, ...], bias, timesteps: int, depth: int, name: str | None = None,
                 **params) -> None:
        shape = tuple(int(n) for n in shape)
        super().__init__(shape=shape, timesteps=int(timesteps), depth=int(depth), name=name, **params)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.bias = Var(shape=shape, init=_per_neuron(bias, shape))


class MultiThresholdNeuron(_WindowedNeuron):
    """The multi-threshold neuron, polarity included (kind ``mtn``: equation and kernel in
    ``n2c.neurons.multi_threshold``). ``k`` is a signed graded spike (int32), so receivers need
    ``num_message_bits`` with a sign bit when ``min_spikes > 0``. ``threshold``, ``bias`` and
    ``v_init`` are per neuron (broadcast to ``shape``)."""

    def __init__(self, shape: tuple[int, ...], threshold, max_spikes: int, bias, v_init, timesteps: int,
                 depth: int, min_spikes: int = 0, name: str | None = None) -> None:
        super().__init__(shape, bias, timesteps, depth, name, max_spikes=int(max_spikes), min_spikes=int(min_spikes))
        shape = self.s_out.shape
        self.v = Var(shape=shape, init=_per_neuron(v_init, shape))
        self.threshold = Var(shape=shape, init=_per_neuron(threshold, shape))
        self.v_init = Var(shape=shape, init=_per_neuron(v_init, shape))


class ScaleAndFireNeuron(_WindowedNeuron):
    """The scale-and-fire neuron (kind ``sfn``, ``n2c.neurons.scale_and_fire``): ascending thresholds
    ``edges`` (N,), integer output ``codes`` (N+1,) and ``code_value``, the integer potential one
    code unit is worth."""

    def __init__(self, shape: tuple[int, ...], edges, codes, code_value: int, bias, v_init, timesteps: int,
                 depth: int, name: str | None = None) -> None:
        super().__init__(shape, bias, timesteps, depth, name, code_value=int(code_value))
        shape = self.s_out.shape
        edges, codes = np.asarray(edges, dtype=np.int64), np.asarray(codes, dtype=np.int64)
        self.v = Var(shape=shape, init=_per_neuron(v_init, shape))
        self.v_init = Var(shape=shape, init=_per_neuron(v_init, shape))
        self.edges = Var(shape=edges.shape, init=edges)
        self.codes = Var(shape=codes.shape, init=codes)


class ParallelNeuron(_WindowedNeuron):
    """The parallel neuron (kind ``parallel``, ``n2c.neurons.parallel``, whose window rule the
    model runs): state ``v`` (the window's running total) and ``pending`` (the count being
    emitted); a sample's spikes leave during the next window, T steps late."""

    def __init__(self, shape: tuple[int, ...], threshold, bias, v_init, timesteps: int, depth: int,
                 name: str | None = None) -> None:
        super().__init__(shape, bias, timesteps, depth, name)
        shape = self.s_out.shape
        self.v = Var(shape=shape, init=_per_neuron(v_init, shape))
        self.pending = Var(shape=shape, init=np.zeros(shape, dtype=np.int64))
        self.threshold = Var(shape=shape, init=_per_neuron(threshold, shape))
        self.v_init = Var(shape=shape, init=_per_neuron(v_init, shape))


class CubaNeuron(_WindowedNeuron):
    """Loihi's CUBA neuron with per-neuron ``du``, ``dv``, threshold and an unrestricted bias
    (kinds ``lif``, ``li`` and ``lif_subtract``, ``n2c.neurons.cuba``; the step
    ``n2c.fixed_point.lif_step`` is bit-identical to Lava's fixed-point ``LIF``). The
    CPU-simulation fallback for what Lava's stock ``LIFReset`` cannot take (per-neuron decays or
    thresholds, a bias without a shared-exponent 13-bit mantissa, the non-spiking "li" form that
    sends its potential, and snnTorch's reset by subtraction one step late)."""

    def __init__(self, shape: tuple[int, ...], du, dv, bias, vth, kind: str, timesteps: int, depth: int,
                 name: str | None = None) -> None:
        super().__init__(shape, bias, timesteps, depth, name, kind=str(kind))
        shape = self.s_out.shape
        self.u = Var(shape=shape, init=np.zeros(shape, dtype=np.int64))
        self.v = Var(shape=shape, init=np.zeros(shape, dtype=np.int64))
        self.pending = Var(shape=shape, init=np.zeros(shape, dtype=np.int64))  # lif_subtract's due reset
        self.du = Var(shape=shape, init=_per_neuron(du, shape))
        self.dv = Var(shape=shape, init=_per_neuron(dv, shape))
        self.threshold = Var(shape=shape, init=_per_neuron(0 if vth is None else vth, shape))


class ReadoutNeuron(_WindowedNeuron):
    """The output accumulator (kind ``readout``, ``n2c.neurons.readout``): ``s_out`` sends ``v``
    every step (graded, 24-bit), so a sink can pick the potential after a window's last step."""

    def __init__(self, shape: tuple[int, ...], bias, timesteps: int, depth: int, name: str | None = None) -> None:
        super().__init__(shape, bias, timesteps, depth, name)
        self.v = Var(shape=self.s_out.shape, init=np.zeros(self.s_out.shape, dtype=np.int64))


class DelayLine(AbstractProcess):
    """Delays a stream of integers by ``steps`` ≥ 1 steps: sends at step t what it received at
    step t − steps (zeros before). Exact for any int32 value; CPU simulation only."""

    def __init__(self, shape: tuple[int, ...], steps: int, name: str | None = None) -> None:
        shape = tuple(int(n) for n in shape)
        super().__init__(shape=shape, steps=int(steps), name=name)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.buffer = Var(shape=(*shape, int(steps)), init=np.zeros((*shape, int(steps)), dtype=np.int64))


# --- fixed-point models -------------------------------------------------------------------------

class _WindowedNeuronModel(PyLoihiProcessModel):
    """Shared ports, and the step of every neuron model: the kind's window rule and integer
    kernel (``NeuronKind.stream_step``), with the Process's Vars as the neuron's parameters and
    state. ``kind`` names the kind in ``n2c.neurons``."""

    kind = ""
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64)  # inputs are summed in this type
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    v: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    bias: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.timesteps: int = proc_params["timesteps"]
        # not ``self.phase``: PyLoihiProcessModel uses that name for its SPK/MGMT phase
        self.window_offset: int = proc_params["depth"]
        self.neuron_kind = KINDS[self.kind]
        self.clamp = StateClamp(counting=False)

    def run_spk(self) -> None:
        a = self.a_in.recv().astype(np.int64)
        state = {name: getattr(self, name).astype(np.int64) for name in self.neuron_kind.state}
        out = self.neuron_kind.stream_step(self, state, a, self.time_step - 1, self.window_offset, self.timesteps,
                                           self.clamp)
        for name in self.neuron_kind.state:
            setattr(self, name, state[name])
        self.s_out.send(np.asarray(out).astype(np.int32))


@implements(proc=MultiThresholdNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyMultiThresholdNeuronModel(_WindowedNeuronModel):
    """Fixed-point model of :class:`MultiThresholdNeuron`."""

    kind = "mtn"
    threshold: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    v_init: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.max_spikes: int = proc_params["max_spikes"]
        self.min_spikes: int = proc_params["min_spikes"]


@implements(proc=ScaleAndFireNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyScaleAndFireNeuronModel(_WindowedNeuronModel):
    """Fixed-point model of :class:`ScaleAndFireNeuron`."""

    kind = "sfn"
    v_init: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    edges: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    codes: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.code_value: int = proc_params["code_value"]


@implements(proc=ParallelNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyParallelNeuronModel(_WindowedNeuronModel):
    """Fixed-point model of :class:`ParallelNeuron`."""

    kind = "parallel"
    pending: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    threshold: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    v_init: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)


@implements(proc=CubaNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyCubaNeuronModel(_WindowedNeuronModel):
    """Fixed-point model of :class:`CubaNeuron` (``n2c.fixed_point.lif_step``)."""

    u: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    du: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=12)
    dv: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=12)
    threshold: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=17)
    pending: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=1)

    def __init__(self, proc_params) -> None:
        self.kind = proc_params["kind"]
        super().__init__(proc_params)


@implements(proc=ReadoutNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyReadoutNeuronModel(_WindowedNeuronModel):
    """Fixed-point model of :class:`ReadoutNeuron`."""

    kind = "readout"


@implements(proc=DelayLine, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyDelayLineModel(PyLoihiProcessModel):
    """Fixed-point model of :class:`DelayLine`: a ring buffer of ``steps`` frames."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=32)
    buffer: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=32)

    def run_spk(self) -> None:
        x = self.a_in.recv().astype(np.int64)
        slot = (self.time_step - 1) % self.buffer.shape[-1]
        out = self.buffer[..., slot].copy()
        self.buffer[..., slot] = x
        self.s_out.send(out.astype(np.int32))
