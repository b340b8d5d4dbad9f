"""Integer IR: the layer graph quantized to Loihi's fixed-point formats.

Every value is an integer in units of a per-neuron-layer scale ``S`` (a power
of two): a real membrane potential ``v`` is stored as ``round(v·S)``. A layer
that receives graded spikes of real value ``u`` per count (the previous
layer's threshold θ, or the input scale) folds ``u`` into its weights:

    w_int = round(W·u·S)          8-bit mantissa; mixed-sign weights are even
                                  (Lava drops their lowest bit), range [-256, 254]
    b_int = round(b·S), and each neuron kind's own parameters (θ_int = round(θ·S), ...)
    by its quantization rule (``n2c.neurons``)

``S`` is the largest power of two that keeps every weight mantissa in range. Spikes
travel as integer counts (0..K), so the integer network computes
``k = clip(floor((v + W·k_in + b)/θ), 0, K)`` on integers, the same equation as the
float SNN. The widths are those of an ``n2c.fixed_point.IntegerFormat`` (Loihi's by
default, a chip spec's with ``fmt``).

A NIR spiking layer that loops onto itself through weights gets a *recurrent* synapse
(``IntSynapse.recurrent``): it reads the neuron, is listed among the neuron's inputs, comes
after it in the order and delivers one step later; it shares the neuron's scale with the
forward synapses. ``IntNetwork.forward_inputs`` and ``loops`` tell the two apart.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from backends.ir.integer import IntNetwork, IntNeuron, IntProduct, IntSource, IntSynapse, message_bound
from backends.ir.layers import (ConvLayer, DelayLayer, DenseLayer, DynamicsLayer, FlattenLayer, InputLayer, LayerGraph,
                                NeuronLayer, OutputLayer, PoolLayer, ProductLayer, ScaleLayer, SoftmaxLayer)
from n2c import products
from n2c.conv_geometry import output_size, pooled_conv_kernel
from n2c.limits import MAX_WEIGHTS, check_elements
from n2c.errors import QuantizationError
from n2c.fixed_point import LOIHI, IntegerFormat
from n2c.neurons.cuba import LIF, SPIKING_BY_RESET, cuba_form
from n2c.neurons.readout import KIND as READOUT


def _unit_per_channel(unit: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    """Per-channel real value of one input unit; conv and pooling need it uniform over H, W."""
    u = np.broadcast_to(unit, shape)
    if len(shape) == 1:
        return u
    per_channel = u.reshape(shape[0], -1)
    if not (per_channel == per_channel[:, :1]).all():
        raise QuantizationError(f"{what}: input spike values vary within a channel; only per-channel thresholds can feed a convolution or pooling")
    return per_channel[:, 0]


# A scale cap (the accumulator's width) may cost weight bits, down to this many for the largest
# weight; below it (8-bit graded SFN codes into a wide dense layer can need 0 bits) the layer keeps
# its scale and the values past the accumulator are counted and reported instead.
MIN_CAPPED_WEIGHT_BITS = 4


def _power_of_two_scale(max_abs: float, name: str, fmt: IntegerFormat) -> float:
    """Largest 2^k with max|w|·2^k ≤ the largest even mantissa (254 at 8 bits): every layer uses
    Lava's mixed-sign format (even mantissas)."""
    if max_abs == 0:
        raise QuantizationError(f"layer '{name}' has only zero weights")
    if not math.isfinite(max_abs):  # e.g. a weight times dt/tau with a denormal tau
        raise QuantizationError(f"layer '{name}': its largest weight (times the input unit and the neuron's "
                                f"dt/tau, r) is {max_abs}; check the layer's weights and its neuron's tau and r")
    ratio = fmt.weight_max / max_abs  # inf for a denormal max_abs
    k = math.floor(math.log2(ratio)) if math.isfinite(ratio) else 1024
    if not -1000 < k < 1000:
        raise QuantizationError(f"layer '{name}': its largest weight (times the input unit) is {max_abs:.3g}, too "
                                f"{'small' if k > 0 else 'large'} to scale to {fmt.weight_bits}-bit integers (2^{k}); "
                                "rescale the layer or its input scale")
    return 2.0 ** k


def quantize(graph: LayerGraph, input_scale: float | None = None, dt: float | None = None,
             fmt: IntegerFormat = LOIHI, timesteps: int | None = None, reset: str = "zero") -> IntNetwork:
    """Quantize a layer graph to the widths of ``fmt``; ``input_scale`` overrides the one stored
    in the graph. ``dt`` is the time step of NIR's neurons (forward Euler; default the graph's
    ``n2c.dt``, else 1e-3). ``timesteps``: T of the integer network, for graphs of other tools
    (whose T is their input's); an n2c graph carries its own. ``reset``: how NIR's spiking
    neurons reset, ``zero`` (NIR, Loihi's stock neuron: kind ``lif``), ``subtract-late``
    (snnTorch: kind ``lif_subtract``) or ``subtract-now`` (snnTorch's ``reset_delay=False``: kind
    ``lif_subtract_now``); ``n2c.neurons.cuba``."""
    if reset not in SPIKING_BY_RESET:
        raise QuantizationError(f"reset {reset!r} has no integer form; use one of {', '.join(SPIKING_BY_RESET)}")
    if timesteps is not None and graph.is_n2c and timesteps != graph.timesteps:
        raise QuantizationError(f"this n2c graph runs T = {graph.timesteps}, not {timesteps}")
    layers = graph.layers
    loops = _recurrent_loops(graph)  # neuron -> the inputs that close a loop onto it (one step late)
    src_layer: InputLayer = graph.input
    scale_in = input_scale or src_layer.input_scale
    if not scale_in:
        raise QuantizationError("the graph does not state its input scale (n2c.input_scale); pass one "
                                "(--input-scale, the real value of one integer input step)")
    source = IntSource(src_layer.name, src_layer.out_shape, float(scale_in), signed=not graph.is_n2c)
    dt = dt or float(graph.metadata.get("n2c.dt", 1e-3))
    unit: dict[str, np.ndarray] = {source.name: np.array(float(scale_in))}
    alias: dict[str, str] = {}  # flatten, scale and delay layers forward to their producer
    delay_of: dict[str, np.ndarray] = {}  # delay layers on messages: steps per element (flat)
    # weighted layers waiting for their neuron: (layer, input name, in_shape, unit, delays (out, in) or None)
    pending: dict[str, tuple] = {}
    out: list = []
    summary: list[dict] = []
    by_name = graph.by_name()
    pending_products: dict[str, dict] = {}  # products (and a softmax on them) waiting for their neuron
    # neurons with recurrent inputs wait for those (later in the order) in their slot of ``out``:
    # neuron -> (layer, forward synapse layers, its slot in ``out``, its slot in ``summary``)
    waiting: dict[str, tuple] = {}
    always_on: dict[str, IntNeuron] = {}  # constant spike sources of biases into synaptic currents, first in order

    def cuba(neuron_layer, syn_layers):
        neuron, synapses, info, source = _quantize_cuba(neuron_layer, syn_layers, dt, fmt, reset)
        if source is not None:
            if source.name in by_name:
                raise QuantizationError(f"layer '{source.name}' has the name n2c gives its always-on neuron (a bias "
                                        f"into '{neuron.name}''s synaptic current); rename the layer")
            always_on.setdefault(source.name, source)
        return neuron, synapses, info

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    def unit_of(name: str) -> np.ndarray:
        """Real value of one message unit, in the producer's shape (a Scale on messages changes it)."""
        while name not in unit:
            if name not in alias:  # a weighted layer whose sum already went to another neuron
                raise QuantizationError(f"the weighted layer '{name}' feeds more than one layer before a neuron; "
                                        "Loihi sums weights only into neurons: give each path its own weights")
            name = alias[name]
        return unit[name]

    # a 1×1 (or dense) layer on the input that feeds weighted layers (the input's normalization, a
    # channel mix): folded into each of them (_after_input_layer), as Loihi sums weights only into neurons
    on_input: dict[str, object] = {}

    def on_input_of(name: str):
        while name not in on_input and name in alias:
            name = alias[name]
        return on_input.get(name)

    def delays_of(name: str) -> np.ndarray | None:
        """Steps of delay per element (flat) that Delay layers on messages add before ``name``."""
        total = None
        while name in alias:
            if name in delay_of:
                total = delay_of[name] if total is None else total + delay_of[name]
            name = alias[name]
        return total

    def close_loops() -> None:
        """Quantize the waiting neurons whose recurrent inputs have all been read."""
        for name, (neuron_layer, forward, slot, info_slot) in list(waiting.items()):
            if any(p not in seen for p in loops[name]):
                continue
            back = []
            for p in loops[name]:
                entry = pending.pop(resolve(p), None)
                if entry is None or entry[1] != name or entry[4] is not None:
                    raise QuantizationError(f"recurrent edge {p} -> {name}: its loop must be one weighted layer "
                                            f"(Affine, Linear or Conv, no Delay) from '{name}' back to itself")
                back.append(entry)
            neuron, synapses, info = cuba(neuron_layer, forward + back)
            synapses = [dataclasses.replace(x, recurrent=True) if x.input == name else x for x in synapses]
            out[slot] = [x for x in synapses if not x.recurrent] + [neuron] + [x for x in synapses if x.recurrent]
            summary[info_slot] = info
            del waiting[name]

    seen: set[str] = set()  # the layers read so far
    for layer in layers[1:]:
        close_loops()
        seen.add(layer.name)
        if isinstance(layer, ProductLayer):
            pending_products[layer.name] = _product_operands(layer, resolve, unit_of, out, pending)
            continue
        if isinstance(layer, SoftmaxLayer):
            src = resolve(layer.inputs[0])
            if src not in pending_products or pending_products[src]["softmax"]:
                raise QuantizationError(f"softmax '{layer.name}' must follow an attention product (n2c.Product) "
                                        "directly; it has an integer form only there")
            pending_products[src]["softmax"] = True
            alias[layer.name] = src
            continue
        names = [resolve(p) for p in layer.inputs]
        if any(name in pending_products for name in names):
            if not isinstance(layer, NeuronLayer) or len(names) != 1:
                raise QuantizationError(f"layer '{layer.name}' ({type(layer).__name__}) reads the product "
                                        f"'{names[0]}'; in the integer form a product feeds one spiking neuron alone")
            prod, neuron, info = _quantize_product_neuron(layer, pending_products.pop(names[0]), fmt,
                                                          timesteps or graph.timesteps)
            out += [prod, neuron]
            summary.append(info)
            unit[layer.name] = neuron.spike_value
            continue
        if isinstance(layer, FlattenLayer):
            if len(layer.out_shape) != 1:
                raise QuantizationError(f"Flatten '{layer.name}' keeps {len(layer.out_shape)} dimensions; only a full "
                                        "flatten has an integer (Loihi) form in this n2c")
            alias[layer.name] = layer.inputs[0]
            continue
        if isinstance(layer, (ScaleLayer, DelayLayer, PoolLayer)) and on_input_of(layer.inputs[0]) is not None:
            raise QuantizationError(f"'{layer.name}' reads '{on_input_of(layer.inputs[0]).name}', a weighted layer "
                                    "on the input; in the integer form that folds only into the weighted layers "
                                    "that read it")
        if isinstance(layer, (ScaleLayer, DelayLayer)):
            src, producer = layer.inputs[0], resolve(layer.inputs[0])
            if producer in pending:  # after the weights: fold into the rows of the pending layer
                pending[producer] = _fold_into_rows(pending[producer], layer, dt, fmt)
            elif isinstance(layer, ScaleLayer):  # on messages: one message unit is worth scale times more
                shape = by_name[producer].out_shape if producer in by_name else source.shape
                scaled = np.broadcast_to(unit_of(src), shape).reshape(-1) * np.broadcast_to(
                    layer.scale, layer.in_shape).reshape(-1)
                unit[layer.name] = scaled.reshape(shape)
            else:
                delay_of[layer.name] = _delay_steps(layer, dt, fmt).reshape(-1)
            alias[layer.name] = src
            continue
        if isinstance(layer, PoolLayer):
            src = resolve(layer.inputs[0])
            if src in pending:  # snnTorch's Conv2d → AvgPool2d → Leaky: one convolution
                readers = {sum(name in other.inputs for other in layers) for name in {src, layer.inputs[0]}}
                pending[src] = _pooled_into_conv(pending[src], layer, readers == {1})
                alias[layer.name] = src
                continue
            if delays_of(layer.inputs[0]) is not None:
                raise QuantizationError(f"pooling '{layer.name}' reads a Delay; Loihi's delays are per dense synapse "
                                        "(Lava's DelayDense), so put the Delay before a dense layer")
            u = _unit_per_channel(unit_of(layer.inputs[0]), layer.in_shape, layer.name)
            unit[layer.name] = (u * layer.scale)[:, None, None] * np.ones(layer.out_shape)
            out.append(IntSynapse(layer.name, "sumpool", src, layer.in_shape, layer.out_shape,
                                  kernel=layer.kernel, stride=layer.stride, padding=layer.padding,
                                  groups=layer.in_shape[0]))
            continue
        if isinstance(layer, (ConvLayer, DenseLayer)):
            if isinstance(layer, ConvLayer) and layer.dims != 2:
                raise QuantizationError(f"Conv1d '{layer.name}' has no integer (Loihi) form in this n2c yet; "
                                        "simulate the graph in float (--precision float)")
            if len(layer.inputs) != 1:
                raise QuantizationError(f"layer '{layer.name}' sums several inputs before its weights; not supported")
            src = resolve(layer.inputs[0])
            if src in pending:
                raise QuantizationError(f"layer '{layer.name}' follows weighted layer '{src}' without a neuron in "
                                        "between; fold the two linear layers into one")
            in_shape = by_name[src].out_shape if src in by_name else source.shape
            first = on_input_of(layer.inputs[0])
            if first is not None:  # composed with the pointwise layer(s) before it: one layer on the input
                layer = _after_input_layer(layer, first)
                in_shape = source.shape
            if src == source.name and _feeds_weights(layer.name, layers) and _pointwise(layer) and \
                    delays_of(layer.inputs[0]) is None:
                on_input[layer.name] = layer  # the input's normalization (x − m)/s, or any 1×1 mix of it
                alias[layer.name] = layer.inputs[0]
                continue
            pending[layer.name] = (layer, src, tuple(in_shape), unit_of(layer.inputs[0]),
                                   _column_delays(layer, delays_of(layer.inputs[0]), fmt))
            continue
        if isinstance(layer, (NeuronLayer, OutputLayer, DynamicsLayer)):
            syn_layers, taken = [], set()
            for p in layer.inputs:
                if p in loops.get(layer.name, ()):
                    continue
                src = resolve(p)
                if src in taken:
                    raise QuantizationError(f"layer '{src}' reaches '{layer.name}' by two paths; Loihi has one synapse "
                                            "per pair of layers: merge the paths (sum their weights) into one")
                taken.add(src)
                if src in pending:
                    syn_layers.append(pending.pop(src))
                elif on_input_of(p) is not None:  # the layer on the input is this neuron's synapse itself
                    syn_layers.append((on_input_of(p), src, source.shape, unit_of(p), None))
                else:  # a residual shortcut (or pooling) straight into the neuron: identity synapse
                    shape = tuple(by_name[src].out_shape) if src in by_name else source.shape
                    ident = identity_layer(f"{layer.name}_from_{src}", shape)
                    syn_layers.append((ident, src, shape, unit_of(p), _column_delays(ident, delays_of(p), fmt)))
            if layer.name in loops:  # its spikes are worth 1 (a NIR neuron): known before its weights
                unit[layer.name] = np.ones(layer.out_shape)
                waiting[layer.name] = (layer, syn_layers, len(out), len(summary))
                out.append(None)
                summary.append(None)
                continue
            if isinstance(layer, DynamicsLayer):
                neuron, synapses, info = cuba(layer, syn_layers)
            else:
                kind = layer.kind if isinstance(layer, NeuronLayer) else "readout"
                neuron, synapses, info = _quantize_neuron(layer, kind, syn_layers, fmt)
            out += synapses + [neuron]
            summary.append(info)
            if neuron.neuron_kind is not READOUT:
                unit[layer.name] = neuron.spike_value
            continue
        raise QuantizationError(f"layer '{layer.name}' ({type(layer).__name__}) has no integer (Loihi) form in "
                                "this n2c yet; simulate the graph in float (--precision float)")
    close_loops()
    if pending or pending_products:
        raise QuantizationError(f"weighted layers {sorted(pending) + sorted(pending_products)} feed no neuron or output")
    out = [*always_on.values(), *(x for item in out for x in (item if isinstance(item, list) else [item]))]
    return IntNetwork(source, out, out[-1].name, timesteps or graph.timesteps, summary, fmt)


def _product_operands(layer: ProductLayer, resolve, unit_of, out: list, pending: dict) -> dict:
    """A product's operands: two spiking neurons already quantized, each with one spike value."""
    neurons = {n.name: n for n in out if isinstance(n, IntNeuron)}
    found = {}
    for port, name in zip("ab", layer.inputs):
        src = resolve(name)
        if src in pending or src not in neurons or not neurons[src].spiking:
            raise QuantizationError(f"product '{layer.name}': its input {port} ('{src}') is not a spiking neuron; "
                                    "the integer form multiplies spike counts (put a quantizer before it)")
        values = np.unique(np.asarray(unit_of(name)))
        if values.size != 1:
            raise QuantizationError(f"product '{layer.name}': the spike values of '{src}' differ between neurons; "
                                    "its integer form needs one value per operand (train with a scalar λ)")
        found[port] = (src, float(values[0]), message_bound(neurons[src]))
    return {"layer": layer, "operands": found, "softmax": False}


def _quantize_product_neuron(layer: NeuronLayer, entry: dict, fmt: IntegerFormat, timesteps: int):
    """The product (or softmax of it) and the neuron it feeds, at the neuron's scale S: the largest
    power of two that keeps θ·S within 17 bits and every current within the 24-bit state for any
    input (F(j) ≤ weight · T · P_max, P_max from the operands' largest counts: no overflow)."""
    pl: ProductLayer = entry["layer"]
    (a, ua, ka), (b, ub, kb) = entry["operands"]["a"], entry["operands"]["b"]
    theta = float(np.max(np.abs(layer.threshold)))
    scale = 2.0 ** math.floor(math.log2((2 ** (fmt.threshold_bits - 1)) / theta))
    real = pl.scale * ua * ub  # real value of one unit of the integer product
    p_max = products.max_abs(pl.mode, pl.heads, ka, kb, pl.in_shape) * timesteps
    if entry["softmax"]:
        scale = min(scale, 2.0 ** math.floor(math.log2(fmt.state_max / timesteps)))
        prod = IntProduct(pl.name, pl.mode, pl.heads, [a, b], pl.in_shape, pl.b_shape, pl.out_shape,
                          softmax_scale=real, out_scale=scale)
        error = 0.5 / scale  # a probability rounded to 1/S
    else:
        scale = min(scale, 2.0 ** math.floor(math.log2(fmt.state_max / (real * max(p_max, 1)))))
        weight = int(round(real * scale))
        if weight < 1:
            raise QuantizationError(f"product '{pl.name}': its scale {real:.3g} per unit rounds to zero at the "
                                    f"scale 2^{int(math.log2(scale))} its neuron '{layer.name}' allows")
        prod = IntProduct(pl.name, pl.mode, pl.heads, [a, b], pl.in_shape, pl.b_shape, pl.out_shape, weight=weight)
        error = abs(weight / scale - real)
    neuron = IntNeuron(layer.name, layer.kind, [pl.name], layer.out_shape, scale,
                       bias=np.zeros(layer.out_shape, np.int64))
    info = {"layer": layer.name, "kind": layer.kind, "scale": scale, "synapses": [pl.name],
            "product": pl.mode + (" + softmax" if entry["softmax"] else ""), "weight_max_abs_error": error,
            "weight_bits": fmt.weight_bits, "weight_bits_used": int(prod.weight).bit_length(), "weights_zeroed": 0,
            "weight_count": 1, "scale_capped": False}
    info.update(neuron.neuron_kind.quantize(layer, neuron, scale, fmt))
    return prod, neuron, info


def identity_layer(name: str, shape: tuple[int, ...]):
    """Weights 1 from a layer's output to a neuron of the same shape (1x1 depthwise conv for images)."""
    if len(shape) == 1:
        check_elements(f"'{name}' (a dense identity, {shape[0]} x {shape[0]} weights)", (shape[0], shape[0]),
                       MAX_WEIGHTS, QuantizationError)
        return DenseLayer(name, [], shape, shape, weight=np.eye(shape[0]), bias=np.zeros(shape[0]))
    if len(shape) != 3:
        raise QuantizationError(f"'{name}': cannot connect a {len(shape)}-D layer output directly to a neuron")
    c = shape[0]
    return ConvLayer(name, [], shape, shape, weight=np.ones((c, 1, 1, 1)), bias=np.zeros(c), groups=c)


def _delay_steps(layer: DelayLayer, dt: float, fmt: IntegerFormat) -> np.ndarray:
    """NIR's delay τ (per element) in steps of ``dt``: round(τ/dt), 0..fmt.max_delay."""
    steps = np.rint(np.broadcast_to(layer.delay, layer.in_shape) / dt).astype(np.int64)
    if steps.max(initial=0) > fmt.max_delay:
        raise QuantizationError(f"Delay '{layer.name}': {int(steps.max())} steps at dt {dt:g} exceed Loihi's "
                                f"{fmt.max_delay}-step synaptic delay; use a larger dt or shorter delays")
    return steps


def _column_delays(layer, steps: np.ndarray | None, fmt: IntegerFormat) -> np.ndarray | None:
    """Per-synapse delays (out, in) of a weighted layer whose input elements are delayed by ``steps``."""
    if steps is None or not steps.any():
        return None
    if not isinstance(layer, DenseLayer):
        raise QuantizationError(f"layer '{layer.name}' reads a Delay; Loihi's delays are per dense synapse (Lava's "
                                "DelayDense), a convolution has none; put the Delay before a dense layer")
    if steps.max() > fmt.max_delay:
        raise QuantizationError(f"layer '{layer.name}': its input's delays add up to {int(steps.max())} steps, over "
                                f"Loihi's {fmt.max_delay}")
    return np.broadcast_to(steps[None, :], layer.weight.shape).copy()


def _fold_into_rows(entry: tuple, layer, dt: float, fmt: IntegerFormat) -> tuple:
    """A Scale or Delay between a weighted layer and its neuron: scale the rows (and bias), or
    delay every synapse of a row."""
    sl, src, in_shape, u, delay = entry
    if isinstance(layer, ScaleLayer):
        gain = np.broadcast_to(layer.scale, sl.out_shape)
        per_row = gain.reshape(-1) if isinstance(sl, DenseLayer) else _unit_per_channel(gain, gain.shape, layer.name)
        weight = sl.weight * per_row.reshape(-1, *[1] * (sl.weight.ndim - 1))
        bias = None if sl.bias is None else sl.bias * per_row.reshape(-1, *[1] * (np.ndim(sl.bias) - 1))
        return dataclasses.replace(sl, weight=weight, bias=bias), src, in_shape, u, delay
    if sl.bias is not None and np.any(sl.bias != 0):
        raise QuantizationError(f"Delay '{layer.name}' delays the bias of '{sl.name}' (absent for the first steps); "
                                "Loihi's neuron bias is constant, so move the bias to the neuron or the Delay "
                                "before the weights")
    rows = _delay_steps(layer, dt, fmt).reshape(-1)
    if not rows.any():
        return entry
    if not isinstance(sl, DenseLayer):
        raise QuantizationError(f"Delay '{layer.name}' after convolution '{sl.name}': Loihi's delays are per dense "
                                "synapse (Lava's DelayDense); put the Delay before a dense layer")
    delay = (0 if delay is None else delay) + rows[:, None]
    if delay.max() > fmt.max_delay:
        raise QuantizationError(f"layer '{sl.name}': delays add up to {int(delay.max())} steps, over Loihi's "
                                f"{fmt.max_delay}")
    return sl, src, in_shape, u, delay


def _pooled_into_conv(entry: tuple, pool: PoolLayer, alone: bool) -> tuple:
    """A pool straight after a convolution, with no neuron between, as one convolution
    (:func:`n2c.conv_geometry.pooled_conv_kernel`): the kernel smeared over the pool window, at
    the product of the strides; the bias summed over the window. Exact for an unpadded pool."""
    sl, src, in_shape, u, delay = entry
    if not (isinstance(sl, ConvLayer) and sl.dims == 2 and alone and not any(pool.padding) and np.ndim(sl.bias) <= 1):
        raise QuantizationError(f"pooling '{pool.name}' directly after weighted layer '{sl.name}': only an unpadded "
                                "pool that alone reads a 2-D convolution composes with it; put a neuron between")
    window = pool.kernel[0] * pool.kernel[1]
    kernel = pooled_conv_kernel(sl.weight, sl.stride, sl.dilation, pool.kernel, pool.scale)
    composed = dataclasses.replace(sl, weight=kernel, out_shape=tuple(pool.out_shape), dilation=(1, 1),
                                   stride=(sl.stride[0] * pool.stride[0], sl.stride[1] * pool.stride[1]),
                                   bias=None if sl.bias is None else sl.bias * (pool.scale * window))
    size = [output_size(n, k, s, p) for n, k, s, p in zip(in_shape[1:], kernel.shape[2:], composed.stride,
                                                           composed.padding)]
    if tuple(size) != tuple(pool.out_shape[1:]):  # cannot happen for an unpadded pool (the docstring's identity)
        raise QuantizationError(f"pooling '{pool.name}' after '{sl.name}': the composed convolution gives {size}, "
                                f"not {list(pool.out_shape[1:])}")
    return composed, src, in_shape, u, delay


def _effective_weights(layer, in_shape, u) -> np.ndarray:
    """Real weights per input count: W·u (u folded per input element or per input channel)."""
    if isinstance(layer, DenseLayer):
        return layer.weight * np.broadcast_to(u, in_shape).reshape(-1)[None, :]
    per_c = _unit_per_channel(u, in_shape, layer.name)
    return layer.weight * per_c[input_channels(layer.weight.shape, layer.groups)][:, :, None, None]


def input_channels(weight_shape: tuple[int, ...], groups: int) -> np.ndarray:
    """The input channel each entry (out, in-group) of a grouped conv kernel reads, (Cout, Cin/groups)."""
    c_out, per_group = weight_shape[0], weight_shape[1]
    return np.arange(c_out)[:, None] // (c_out // groups) * per_group + np.arange(per_group)[None, :]


def _integer_synapses(syn_layers: list[tuple], w_eff: list[np.ndarray], name: str, fmt: IntegerFormat,
                      max_scale: float | None = None, pinned: float | None = None):
    """8-bit even weight mantissas at the largest power-of-two scale that fits every synapse
    (and is at most ``max_scale``, when another quantity of the layer must fit too), or at the
    ``pinned`` scale of a graph trained in the integer format."""
    max_abs = max(float(np.abs(w).max()) for w in w_eff)
    scale = _power_of_two_scale(max_abs, name, fmt)
    if pinned is not None:
        if max_abs * pinned > fmt.weight_max + 0.5:
            raise QuantizationError(f"layer '{name}': its weights do not fit {fmt.weight_bits}-bit mantissas at its "
                                    f"pinned scale n2c.scale = {pinned:g}; re-export the trained model")
        scale, max_scale = pinned, None
    capped = max_scale is not None and scale > max_scale
    if capped:
        lower = 2.0 ** math.floor(math.log2(max_scale))
        capped = max_abs * lower >= 2 ** (MIN_CAPPED_WEIGHT_BITS - 1)
        if capped:  # else the cap would leave the weights too few bits: keep them, let the overflow show
            scale = lower
    synapses = []
    stats = {"weight_max_abs_error": 0.0, "weight_bits": fmt.weight_bits, "weight_bits_used": 0, "weights_zeroed": 0,
             "weight_count": 0, "scale_capped": bool(capped)}
    for (sl, src, in_shape, u, delay), w in zip(syn_layers, w_eff):
        w_int = (2 * np.round(w * scale / 2)).astype(np.int64)
        stats["weight_max_abs_error"] = max(stats["weight_max_abs_error"], float(np.abs(w_int / scale - w).max()))
        # magnitude bits of the largest mantissa (Lava's 8-bit weights: |w| ≤ 255, sign separate)
        stats["weight_bits_used"] = max(stats["weight_bits_used"], int(np.abs(w_int).max()).bit_length())
        stats["weights_zeroed"] += int(((w != 0) & (w_int == 0)).sum())  # small weights lost to rounding
        stats["weight_count"] += int(w.size)
        kind_s = "dense" if isinstance(sl, DenseLayer) else "conv"
        extra = dict(delay=delay) if kind_s == "dense" else dict(stride=sl.stride, padding=sl.padding,
                                                                 dilation=sl.dilation, groups=sl.groups)
        unit = (np.broadcast_to(u, in_shape).reshape(-1) if kind_s == "dense"
                else _unit_per_channel(u, in_shape, sl.name)).astype(np.float64)
        synapses.append(IntSynapse(sl.name, kind_s, src, in_shape, sl.out_shape, weight=w_int, input_unit=unit,
                                   **extra))
    return scale, synapses, stats


def _recurrent_loops(graph: LayerGraph) -> dict[str, list[str]]:
    """neuron -> its inputs that close a loop (``graph.recurrent``). The integer form takes a loop
    from a NIR spiking neuron back onto itself through weights (snnTorch's RLeaky, the NIR paper's
    Braille RNN): Loihi adds a step per synapse, so a loop through other neurons would arrive late."""
    by_name, loops = graph.by_name(), {}
    for p, dst in sorted(graph.recurrent):
        target = by_name[dst]
        if not (isinstance(target, DynamicsLayer) and target.spiking):
            what = target.kind if isinstance(target, DynamicsLayer) else type(target).__name__
            raise QuantizationError(f"recurrent edge {p} -> {dst}: in the integer (Loihi) form only NIR's spiking "
                                    f"neurons (IF, LIF, CubaLIF) take recurrent input, not {what}; simulate the graph "
                                    "in float (--precision float)")
        start = by_name[p]
        while not isinstance(start, (DynamicsLayer, NeuronLayer, InputLayer)) and len(start.inputs) == 1:
            start = by_name[start.inputs[0]]
        if start.name != dst:
            raise QuantizationError(f"recurrent edge {p} -> {dst}: the loop runs from '{start.name}', not from "
                                    f"'{dst}' itself; Loihi adds a step per synapse, so it would arrive late. The "
                                    "integer form takes a neuron layer's recurrence onto itself; simulate in float "
                                    "(--precision float)")
        loops.setdefault(dst, []).append(p)
    return loops


def _feeds_weights(name: str, layers: list) -> bool:
    """Whether a weighted layer reads ``name`` (through Flatten layers): two weighted layers in a row."""
    return any(isinstance(x, (ConvLayer, DenseLayer)) or isinstance(x, FlattenLayer) and _feeds_weights(x.name, layers)
               for x in layers if name in x.inputs)


def _pointwise(layer) -> bool:
    """A layer that mixes each input position's values alone: a 1×1 convolution (stride 1, unpadded)
    or a dense layer."""
    if isinstance(layer, DenseLayer):
        return True
    return layer.dims == 2 and layer.weight.shape[2:] == (1, 1) and tuple(layer.stride) == (1, 1) and \
        tuple(layer.padding) == (0, 0)


def _ungrouped(w: np.ndarray, groups: int) -> np.ndarray:
    """A grouped conv kernel (C_out, C_in/groups, ...) with its groups written out as zero blocks."""
    full = np.zeros((w.shape[0], w.shape[1] * groups, *w.shape[2:]))
    full[np.arange(w.shape[0])[:, None], input_channels(w.shape, groups)] = w
    return full


def _mix_matrix(layer) -> np.ndarray:
    """A pointwise layer's weights as one (out, in) matrix."""
    w = layer.weight.astype(np.float64)
    return w if isinstance(layer, DenseLayer) else _ungrouped(w, layer.groups)[:, :, 0, 0]


def _after_input_layer(layer, first):
    """``layer`` (Conv/Dense) reading ``first``, a pointwise layer on the input (P x + t), as one
    layer reading the input: weights W·P, and W·t + b as a bias per output position. W·t is
    computed with the layer's own zero padding, so near the borders it holds only the taps inside
    the image: exact where one bias per channel would not be (the input's normalization t =
    −m/s, zero-padded after normalizing)."""
    mix = _mix_matrix(first)  # (C_mid, C_in)
    t_map = np.zeros(first.out_shape) if first.bias is None else _full_bias(first).reshape(first.out_shape)
    w = layer.weight.astype(np.float64)
    bias = np.zeros(layer.out_shape) if layer.bias is None else _full_bias(layer)
    if isinstance(layer, DenseLayer):
        mid = t_map.reshape(-1)
        per = w.shape[1] // len(mix)  # a flattened (C, H, W) map: H·W values per channel
        weight = np.einsum("omp,mi->oip", w.reshape(len(w), len(mix), per), mix).reshape(len(w), -1)
        return dataclasses.replace(layer, in_shape=tuple(first.in_shape), weight=weight, bias=bias + w @ mid)
    import torch
    full = _ungrouped(w, layer.groups)
    shifted = torch.nn.functional.conv2d(torch.from_numpy(t_map[None].copy()), torch.from_numpy(full),
                                         stride=tuple(layer.stride), padding=tuple(layer.padding),
                                         dilation=tuple(layer.dilation))[0].numpy()
    return dataclasses.replace(layer, in_shape=tuple(first.in_shape), weight=np.einsum("omkl,mi->oikl", full, mix),
                               bias=bias + shifted, groups=1)


def _full_bias(sl) -> np.ndarray:
    """A weighted layer's bias per output element (a conv's is per channel, or already per position)."""
    if isinstance(sl, DenseLayer) or np.ndim(sl.bias) == 3:
        return np.asarray(sl.bias, dtype=np.float64)
    return np.broadcast_to(np.asarray(sl.bias, dtype=np.float64)[:, None, None], sl.out_shape)


def _summed_bias(syn_layers: list[tuple], shape: tuple[int, ...]) -> np.ndarray:
    """The real bias a neuron receives: the sum of its synapses' biases (per channel for a conv,
    or per position after an input normalization)."""
    bias = np.zeros(shape)
    for sl, *_ in syn_layers:
        per = _full_bias(sl)
        bias = bias + np.asarray(per).reshape(shape)  # a conv's (C, H, W) read flat through a Flatten: C-order
    return bias


def _row_gain(sl, w: np.ndarray, gain: np.ndarray, name: str) -> np.ndarray:
    """Multiply each output neuron's incoming weights by its gain (per channel for a conv)."""
    if isinstance(sl, DenseLayer):
        return w * gain.reshape(-1)[:, None]
    per_c = _unit_per_channel(gain, gain.shape, name)
    return w * per_c[:, None, None, None]


ALWAYS_ON = "always_on"  # the neuron that sends one spike at every step: a bias into synaptic currents


def always_on_neuron(shape: tuple[int, ...]) -> IntNeuron:
    """Loihi's CUBA neuron with bias 1 and threshold 0 and no input: v = 1 > 0 at every step,
    so it spikes at every step (stock ``LIFReset`` on Lava). Its synapses carry a constant
    current, which is how a bias reaches a synaptic current u (the neuron's own bias enters v)."""
    name = ALWAYS_ON if shape == (1,) else f"{ALWAYS_ON}_{'x'.join(map(str, shape))}"
    one = np.ones(shape, np.int64)
    return IntNeuron(name, "lif", [], shape, 1.0, bias=one, threshold=0 * one, v_init=0 * one,
                     du=one * 4095, dv=one * 4095, spike_value=np.ones(shape))


def _bias_as_input(layer: DynamicsLayer, syn_layers: list[tuple], bias: np.ndarray
                   ) -> tuple[list[tuple], IntNeuron]:
    """The synapses of a CubaLI(F) and one more from an always-on neuron that carries their
    summed bias (which then no longer enters v), and that neuron: W·s + b = W·s + b·1, where 1
    is a spike at every step. Dense layers read a (1,) always-on neuron (weights b, one column);
    convolutions a (1, H, W) one through a 1×1 conv (weights b per channel), so a bias must be
    one value per channel."""
    shape = tuple(layer.out_shape)
    if len(shape) == 1:
        source = always_on_neuron((1,))
        extra = DenseLayer(f"{layer.name}_bias", [source.name], (1,), shape, weight=bias.reshape(-1, 1),
                           bias=np.zeros(shape))
    else:
        per_channel = bias.reshape(shape[0], -1)
        if np.any(per_channel != per_channel[:, :1]):
            raise QuantizationError(f"neuron '{layer.name}' ({layer.kind}): a bias that varies within a channel "
                                    "enters its synaptic current, which has no integer form here; simulate it in "
                                    "float (--precision float)")
        source = always_on_neuron((1, *shape[1:]))
        extra = ConvLayer(f"{layer.name}_bias", [source.name], source.shape, shape,
                          weight=per_channel[:, :1].reshape(shape[0], 1, 1, 1), bias=np.zeros(shape[0]))
    return syn_layers + [(extra, source.name, source.shape, np.ones(source.shape), None)], source


def _quantize_cuba(layer: DynamicsLayer, syn_layers: list[tuple], dt: float, fmt: IntegerFormat,
                   reset: str = "zero"):
    """NIR's I/LI/IF/LIF/CubaLI/CubaLIF as Loihi's CUBA neuron (``n2c.neurons.cuba``), a spiking
    layer of the kind that resets as ``reset`` says. A bias
    into a CubaLI(F) enters its synaptic current: it arrives through an always-on neuron
    (:func:`_bias_as_input`), returned last (else None) for the caller to add to the network."""
    form = cuba_form(layer, dt, fmt)
    source, syn_bias = None, _summed_bias(syn_layers, layer.out_shape)
    if layer.kind.startswith("Cuba") and np.any(syn_bias != 0):  # into u: as an input, not v's bias
        syn_layers, source = _bias_as_input(layer, syn_layers, syn_bias)
        syn_bias = np.zeros_like(syn_bias)
    w_eff = [_row_gain(sl, _effective_weights(sl, shape, u), form["gain"], layer.name)
             for sl, _, shape, u, _ in syn_layers]
    theta_max = float(np.max(layer.v_threshold)) if layer.spiking else 0.0
    cap = (fmt.vth_limit - 1) / theta_max if theta_max > 0 else None  # the threshold θ·k must fit 17 bits
    k, synapses, stats = _integer_synapses(syn_layers, w_eff, layer.name, fmt, cap)
    scale = k * 2 ** fmt.threshold_shift  # the input enters u shifted by 6 bits
    shape = layer.out_shape
    real_bias = (form["gain"] * syn_bias + form["leak"]) * scale
    bias = fmt.round_bias(real_bias, layer.name)
    kind = SPIKING_BY_RESET[reset].name if layer.spiking else "li"
    neuron = IntNeuron(layer.name, kind, [s.name for s in synapses], shape, scale,
                       bias=bias, v_init=np.zeros(shape, np.int64), du=form["du"], dv=form["dv"],
                       spike_value=np.full(shape, 1.0 if layer.spiking else 1.0 / scale))  # a spike, or v_int
    info = {"layer": layer.name, "kind": neuron.kind, "nir_type": layer.kind, "scale": scale, **stats,
            "synapses": [s.name for s in synapses]}
    if fmt.bias_unit > 1:  # what rounding to the format's bias granularity changed, in integer units
        info["bias_rounding"] = float(np.abs(bias - real_bias).max(initial=0))
    if layer.spiking:
        info.update(LIF.quantize_threshold(layer, neuron, k, fmt))
    return neuron, synapses, info, source


def _current_cap(layer, syn_layers: list[tuple], bias: np.ndarray, fmt: IntegerFormat) -> float | None:
    """The largest layer scale S at which the synaptic sums stay inside the chip's width on the
    exporter's data: |a| = |Σ w_int·s| ≈ S·|x − b| ≤ S·(max|x| + max|b|) < the accumulator limit
    (16 bits for dense synapses; Lava's 24-bit Conv output for convolutions). None without
    ``n2c.max_current``."""
    if not getattr(layer, "max_current", None):
        return None
    dense = any(isinstance(sl, DenseLayer) for sl, *_ in syn_layers)
    limit = fmt.accumulator_limit if dense else 2 ** (fmt.conv_bits - 1)
    return (limit - 1) / (layer.max_current + float(np.abs(bias).max(initial=0)))


def _quantize_neuron(layer, kind: str, syn_layers: list[tuple], fmt: IntegerFormat):
    """Weights and bias at the layer's scale (capped so that the synaptic sums fit the chip's
    accumulator on the exporter's data, :func:`_current_cap`); the kind's own parameters by its
    quantization rule."""
    w_eff = [_effective_weights(sl, shape, u) for sl, _, shape, u, _ in syn_layers]
    shape = layer.out_shape
    bias = _summed_bias(syn_layers, shape)
    scale, synapses, stats = _integer_synapses(syn_layers, w_eff, layer.name, fmt,
                                               _current_cap(layer, syn_layers, bias, fmt), layer.scale)
    neuron = IntNeuron(layer.name, kind, [s.name for s in synapses], shape, scale,
                       bias=fmt.round_bias(bias * scale, layer.name))
    info = {"layer": layer.name, "kind": kind, "scale": scale, **stats, "synapses": [s.name for s in synapses]}
    info.update(neuron.neuron_kind.quantize(layer, neuron, scale, fmt))
    return neuron, synapses, info
