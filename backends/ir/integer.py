"""Integer IR: a network in Loihi's fixed-point formats, as ``backends.quantize`` makes it and
every integer backend (reference simulator, Lava, netx, mapping, reports) reads it.

* ``IntSource``: the input, integer graded spikes of ``bits`` bits; one unit is worth ``scale``.
* ``IntSynapse``: a dense, conv or sum-pool connection; it sends integer currents. Its weights
  are 8-bit mantissas times 2^weight_exp; a ``recurrent`` synapse reads the neuron it feeds and
  delivers one step later.
* ``IntProduct``: the product of two neurons' counts (attention), an embedded-processor operation.
* ``IntNeuron``: a neuron layer of a kind of ``n2c.neurons``; a real potential is integer / ``scale``.
* ``IntNetwork``: source and layers in topological order, the readout's name and T.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from n2c import products
from n2c.errors import QuantizationError
from n2c.fixed_point import INPUT_BITS, LOIHI, STATE_BITS, IntegerFormat
from n2c.neurons import NeuronKind, kind as kind_named
from n2c.neurons.polarity import message_bits as graded_bits


@dataclass
class IntSource:
    name: str
    shape: tuple[int, ...]
    scale: float  # real value of one input unit: x_int = round(x / scale)
    bits: int = INPUT_BITS
    signed: bool = False

    @property
    def message_bits(self) -> int:
        return self.bits

    @property
    def message_range(self) -> tuple[int, int]:
        """Smallest and largest integer the source sends."""
        return (-(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1) if self.signed else (0, 2 ** self.bits - 1)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Float inputs → integer graded spikes. Values outside the source's range (its bit width,
        signed or not) are an error, never clipped silently: a model trained on normalized
        inputs fed to an unsigned source would lose every negative value."""
        lo, hi = self.message_range
        units = np.round(np.asarray(x, dtype=np.float64) / self.scale)
        below, above = int((units < lo).sum()), int((units > hi).sum())
        if below or above:
            side = f"{below} below {lo * self.scale:g}" if below else f"{above} above {hi * self.scale:g}"
            fix = ("the graph's input is unsigned: feed inputs >= 0 (for a model trained on normalized inputs, feed "
                   "the raw ones and export it with its normalization: in forward, or --input-mean/--input-std)"
                   if below and not self.signed else
                   "rescale the inputs, or give the input scale that covers them (--input-scale)")
            out, kind = below + above, "signed" if self.signed else "unsigned"
            raise QuantizationError(f"{out} of {units.size} input values ({out / units.size:.1%}) lie outside the "
                                    f"graph's {kind} {self.bits}-bit integer input ({side}, at input scale "
                                    f"{self.scale:g}); {fix}")
        return units.astype(np.int64)


@dataclass
class IntSynapse:
    """Dense, conv or sum-pool connection; its output is an integer current."""
    name: str
    kind: str  # "dense" | "conv" | "sumpool"
    input: str
    in_shape: tuple[int, ...]  # (C, H, W) or (N,); dense weights index the C-order flattening
    out_shape: tuple[int, ...]
    weight: np.ndarray | None = None  # int64; dense (out, in), conv (Cout, Cin/groups, kH, kW)
    weight_exp: int = 0
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    kernel: tuple[int, int] = (1, 1)  # sumpool only
    delay: np.ndarray | None = None  # dense only: int64 (out, in) extra steps per synapse, 0..MAX_DELAY
    # reads only [start, stop) of its input: dense, of the C-order flattening; conv (groups 1), of the
    # channels. ``in_shape`` stays the whole input's; ``weight`` and ``delay`` cover the slice only
    in_slice: tuple[int, int] | None = None
    # real value of one input message unit, folded into the weights (w_int = round(W·u·S)): per input
    # element (dense, C-order) or per input channel (conv); None for sum-pools and relays' synapses
    input_unit: np.ndarray | None = None
    # reads the neuron it feeds (``input``) and delivers one step later: a recurrent connection,
    # listed among that neuron's inputs and placed after it in the network's order
    recurrent: bool = False

    @property
    def message_bits(self) -> int:  # a synapse feeding a synapse sends 24-bit currents
        return STATE_BITS

    def read_input(self, s: np.ndarray) -> np.ndarray:
        """The part of input messages ``s`` (N, *in_shape) the synapse reads."""
        if self.in_slice is None:
            return s
        a, b = self.in_slice
        return s.reshape(len(s), -1)[:, a:b] if self.kind == "dense" else s[:, a:b]

    def full_weight(self) -> np.ndarray:
        """The weight over the whole input, zeros outside ``in_slice`` (for engines that cannot slice
        their input, as Lava's ports)."""
        return self.over_whole_input(self.weight)

    def over_whole_input(self, values: np.ndarray) -> np.ndarray:
        """Per-synapse ``values`` (out, slice, ...) laid over the whole input, zeros outside ``in_slice``."""
        if self.in_slice is None:
            return values
        a, b = self.in_slice
        width = int(np.prod(self.in_shape)) if self.kind == "dense" else self.in_shape[0]
        full = np.zeros((values.shape[0], width, *values.shape[2:]), values.dtype)
        full[:, a:b] = values
        return full


@dataclass
class IntProduct:
    """The product of two neurons' messages (``n2c.products``), and for the quantized softmax the
    softmax of it: an operation of the chip's embedded processors, not of its neuro cores. Its
    output is an integer current into one neuron, F(j) − F(j−1) at window step j
    (``n2c.products.integer_total``)."""
    name: str
    mode: str  # "scores" | "mix"
    heads: int
    inputs: list[str]  # [a, b]: the two neurons whose counts it multiplies
    a_shape: tuple[int, ...]
    b_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    weight: int = 0  # integer current per unit of the product (no softmax)
    softmax_scale: float | None = None  # softmax: the real score per unit of the product
    out_scale: float = 0.0  # softmax: integer current per unit of probability (the consumer's S)

    @property
    def message_bits(self) -> int:  # it sends 24-bit currents, as a synapse
        return STATE_BITS

    @property
    def params(self) -> dict:
        """The parameters of ``n2c.products.integer_total`` / ``stream_step``."""
        return dict(heads=self.heads, mode=self.mode, weight=self.weight, softmax_scale=self.softmax_scale,
                    out_scale=self.out_scale)

    def total(self, a_run: np.ndarray, b_run: np.ndarray, step: int) -> np.ndarray:
        """F(j) for running counts after ``step`` steps of the window (``n2c.products``)."""
        return products.integer_total(a_run, b_run, step, **self.params)

    def run(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Counts a, b (T, B, ...) of one window each → currents (T, B, *out_shape)."""
        ra, rb = np.cumsum(a, axis=0), np.cumsum(b, axis=0)
        total = np.stack([self.total(ra[j], rb[j], j + 1) for j in range(len(a))])
        return products.increments_numpy(total)


@dataclass
class IntNeuron:
    """A neuron layer of one of the kinds of ``n2c.neurons`` (``kind`` names it in the registry):
    a spiking layer ("mtn", "parallel", "sfn"), Loihi's CUBA neuron for NIR's neurons ("lif"
    spiking, "li" sending its potential) or the output accumulator ("readout")."""
    name: str
    kind: str  # a key of n2c.neurons.KINDS
    inputs: list[str]
    shape: tuple[int, ...]
    scale: float  # S: real potential = integer / S
    bias: np.ndarray  # int64, shape
    threshold: np.ndarray | None = None  # int64, shape (mtn, parallel, sfn; lif: vth)
    v_init: np.ndarray | None = None
    max_spikes: int = 1
    min_spikes: int = 0  # negative spikes (polarity)
    spike_value: np.ndarray | None = None  # real value of one message unit (count, code, or li: 1/S), shape
    edges: np.ndarray | None = None  # sfn: int64 thresholds (N,)
    codes: np.ndarray | None = None  # sfn: int64 output codes (N+1,)
    code_value: int = 0  # sfn: integer potential subtracted per code unit
    du: np.ndarray | None = None  # lif/li: 12-bit current decay
    dv: np.ndarray | None = None  # lif/li: 12-bit voltage decay

    @property
    def neuron_kind(self) -> NeuronKind:
        """The kind's equations and rules (``n2c.neurons``)."""
        return kind_named(self.kind)

    @property
    def spiking(self) -> bool:
        return self.neuron_kind.spiking


def message_range(neuron: IntNeuron) -> tuple[int, int]:
    """Smallest and largest integer a neuron sends."""
    return neuron.neuron_kind.message_range(neuron)


def message_bits(neuron: IntNeuron) -> int:
    """Bits of the neuron's graded message: two's complement when it can be negative."""
    return graded_bits(*message_range(neuron))


def message_bound(neuron: IntNeuron) -> int:
    """Largest |message|."""
    return max(abs(v) for v in message_range(neuron))


@dataclass
class IntNetwork:
    source: IntSource
    layers: list  # IntSynapse / IntNeuron in topological order
    output: str  # name of the readout neuron
    timesteps: int = 1
    report: list[dict] = field(default_factory=list)  # per-layer quantization summary
    fmt: IntegerFormat = LOIHI  # the integer widths it was quantized to
    fan_in: list[dict] = field(default_factory=list)  # relays added to fit a chip (backends.hardware.fan_in)

    def by_name(self) -> dict:
        return {self.source.name: self.source, **{layer.name: layer for layer in self.layers}}

    def loops(self, neuron: IntNeuron, layers: dict | None = None) -> list[IntSynapse]:
        """The recurrent synapses of ``neuron`` (among its inputs): they read it and deliver one
        step later. ``layers``: :meth:`by_name`, when the caller has it."""
        layers = layers or self.by_name()
        return [layers[name] for name in neuron.inputs
                if isinstance(layers[name], IntSynapse) and layers[name].recurrent]

    def forward_inputs(self, layer, layers: dict | None = None) -> list[str]:
        """The inputs of a synapse, neuron or product that come before it (all but a neuron's loops)."""
        if isinstance(layer, IntSynapse):
            return [layer.input]
        layers = layers or self.by_name()
        return [name for name in layer.inputs
                if not (isinstance(layers[name], IntSynapse) and layers[name].recurrent)]

    @property
    def recurrent(self) -> bool:
        return any(isinstance(x, IntSynapse) and x.recurrent for x in self.layers)

    def check_steps(self, s_in: np.ndarray) -> int:
        """T of an integer input (T, B, ...), which must be the network's own ``timesteps``."""
        if np.ndim(s_in) < 2 or s_in.shape[0] != self.timesteps:
            steps = s_in.shape[0] if np.ndim(s_in) else 0
            raise QuantizationError(f"the input has {steps} steps but the network runs T = {self.timesteps}; give "
                                    f"integer input of shape (T={self.timesteps}, B, ...)")
        return self.timesteps

    def direct_input(self, x: np.ndarray) -> np.ndarray:
        """Direct encoding: float samples ``x`` (B, ...) as integer frames, the same at each of
        the T steps, (T, B, ...)."""
        s = self.source.encode(x)
        return np.ascontiguousarray(np.broadcast_to(s, (self.timesteps, *s.shape)))
