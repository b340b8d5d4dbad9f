"""The product of two spike-count streams (``n2c.products``), and the quantized softmax on it, as
a Lava Process with a fixed-point CPU model.

``Product`` reads the messages of two neurons (ports ``a_in``, ``b_in``, already aligned to the same
depth by the lowering) and sends the integer current ``F(j) − F(j−1)`` into its one neuron
(``a_out``), within the step, as neurons do. Its window rule is the neurons': at every global step
``t`` with ``(t − depth) % T == 0`` the running counts restart. The model runs
``n2c.products.stream_step``, the code ``backends.reference.stream`` runs: equal to the reference
by construction (tests/contracts check it bit for bit).

On Loihi 2 this is work for the embedded processors, not the neuro cores (products of two
activations and exponentials are no neuro-core operation); this model runs in Lava's CPU
simulation only.
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
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from backends.lava.layout import from_lava, lava_shape, to_lava
from n2c import products
from n2c.neurons.kind import window_position


class Product(AbstractProcess):
    """``params``: heads, mode, weight, softmax_scale, out_scale (``n2c.products.integer_total``);
    shapes in IR order (C, H, W), ports in Lava's (W, H, C)."""

    def __init__(self, a_shape: tuple[int, ...], b_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 params: dict, timesteps: int, depth: int, name: str | None = None) -> None:
        shapes = tuple(tuple(int(n) for n in s) for s in (a_shape, b_shape, out_shape))
        super().__init__(shapes=shapes, params=dict(params), timesteps=int(timesteps), depth=int(depth), name=name)
        self.a_in = InPort(shape=lava_shape(shapes[0]))
        self.b_in = InPort(shape=lava_shape(shapes[1]))
        self.a_out = OutPort(shape=lava_shape(shapes[2]))


@implements(proc=Product, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyProductModel(PyLoihiProcessModel):
    """Fixed-point model of :class:`Product`: running counts and the last F as its state."""
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64)
    b_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self.shapes = proc_params["shapes"]
        self.params = proc_params["params"]
        self.timesteps: int = proc_params["timesteps"]
        self.window_offset: int = proc_params["depth"]
        self.state = products.initial_state(*self.shapes)

    def run_spk(self) -> None:
        a = from_lava(self.a_in.recv().astype(np.int64))
        b = from_lava(self.b_in.recv().astype(np.int64))
        position = window_position(self.time_step - 1, self.window_offset, self.timesteps)
        current = products.stream_step(self.state, a, b, position, **self.params)
        self.a_out.send(to_lava(current).astype(np.int32))
