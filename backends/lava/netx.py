"""Write an integer network (``backends.ir.integer.IntNetwork``) as a lava-dl netx HDF5 file,
the format ``lava.lib.dl.netx.hdf5.Network`` loads for Lava and, through lava-loihi, for Loihi 2.

netx builds one block per layer (one synapse Process, then one CUBA neuron Process), so the
network must be a chain of NIR IF/LIF/CubaLIF layers (n2c kind "lif"). Per layer, with n2c's
integers (u, v, a, b, θ, du, dv of ``n2c.neurons.cuba``)::

    dense   weight = W (out, in), in = C-order index of (C, H, W)   netx's flatten agrees
    dense_rec  a dense layer with its loop onto itself: weight_rec = W_loop (out, out), one step
            late (netx's RecurrentDense); one sample per run (netx does not reset the loop's buffer)
    conv    weight = W (Cout, Cin/g, kH, kW) as torch stores it;     netx flips and transposes it
            stride, padding, dilation (H, W); groups
    neuron  type CUBA, iDecay = du + 1, vDecay = dv, vThMant = θ     one value per layer
            bias = b / 64                                           netx fixes bias_exp = 6, so the
                                                                    export quantizes b to multiples
                                                                    of 64 (:data:`NETX_FORMAT`)
    shape   (C, H, W) or (N,)                                       netx reads it reversed, (x, y, z)

netx runs dense weights through its ``optimize_weight_bits`` (a weight exponent and a bit count)
and Lava then clips and truncates them; :func:`netx_dense_weights` states that arithmetic and the
export refuses weights it would change: n2c's mixed-sign and non-negative 8-bit weights pass,
but netx scales some all-negative matrices to −256, which Lava's inhibitory mode clips and
truncates (to zeros in lava-dl #170). Conv weights pass through unchanged. Lava's Dense sums in
int32 and its Conv wraps at 24 bits, as the reference does, so the file is exact wherever the
reference reports no overflow. A SumPool (netx has none) is folded into the next layer:
exactly into a dense layer's weights, W' = W·P, and into a conv when the pooling is a tiling
(stride = kernel, no padding): the kernel is spread over stride-sized blocks, stride' =
stride_conv·stride_pool, padding' = padding_conv·stride_pool.

Readout. n2c's output accumulates v ← v + Σa + b over the sample. Fed through an identity by
the last spiking layer (Output right after a LIF), it is c·Σ_t s_t: netx's output is that
layer's spikes (``readout = "spikes"``, c = ``readout_weight``). Fed by an LI layer, it is
c·Σ_t v_t of that non-spiking CUBA layer (``"potential-sum"``, summed on the host; n2c's readout
saturates that sum at 24 bits). Fed by weights (Affine/Conv →
Output), a last layer integrates it: CUBA with iDecay 4096, vDecay 0, vThMant 2^17 − 1 and
bias b, so its v = 64·readout (``"potential"``; exact while |readout| < 2^17, where it
never reaches the threshold). Non-spiking layers use that threshold too.

Timing, with ``hdf5.Network(path, reset_interval=T, reset_offset=1, input_message_bits=8)``
fed by a source that sends sample i's step j at time step i·T + j + 1 (Lava's RingBuffer
sends data[..., t-1] at step t): each block's synapse adds one step, so block k (1-based)
computes (i, j) at time step i·T + j + 1 + k, and netx resets it when (time step) mod T = 1 + k,
the first step of each sample (netx adds one to the offset per block).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from backends.ir.layers import LayerGraph
from backends.lava.layout import LAVA_INT8_MAX, lava_groups, regroup_conv_weight, to_lava
from backends.lava.neurons import uniform_value
from backends.ir.integer import IntNetwork, IntNeuron, IntProduct, IntSynapse
from backends.quantize import quantize
from backends.reference.stream import refuse_loops_before_window
from n2c.fixed_point import LOIHI, lava_effective_weights
from n2c.errors import QuantizationError, UnsupportedLayerError
from n2c.neurons.cuba import LI, LIF
from n2c.neurons.readout import KIND as READOUT

BIAS_EXP = 6  # netx passes bias_exp = 6 to every CUBA neuron
BIAS_MANT = 2 ** 12  # 13-bit signed bias mantissa
# the integer format of a netx export: Loihi's, with biases in multiples of 2^6 (netx's bias_exp)
NETX_FORMAT = dataclasses.replace(LOIHI, bias_unit=2 ** BIAS_EXP)
VTH_MAX = 2 ** 17 - 1  # unsigned 17-bit threshold mantissa: the "never spikes" threshold
RESET_OFFSET = 1  # hdf5.Network(reset_offset=...) that aligns netx's resets with the samples


@dataclass
class NetxLayer:
    type: str  # "input" | "flatten" | "dense" | "dense_rec" | "conv"
    name: str  # the n2c neuron (or source) it comes from
    shape: tuple[int, ...]  # IR order: (C, H, W) or (N,)
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None  # bias mantissas: (N,), per channel (C,), or per neuron (W, H, C)
    neuron: dict | None = None
    conv: dict = field(default_factory=dict)  # stride, padding, dilation (H, W), groups
    weight_rec: np.ndarray | None = None  # dense_rec: the layer's loop onto itself (out, out)


@dataclass
class NetxNetwork:
    layers: list[NetxLayer]  # layers[0] is the input
    readout: str  # "spikes" | "potential-sum" | "potential"
    readout_weight: int  # c of the readout formulas (1 for "potential")
    input_message_bits: int
    bias_rounding: dict = field(default_factory=dict)  # layer → largest change of its bias by the rounding to 64

    @property
    def blocks(self) -> list[NetxLayer]:
        """The layers netx builds a block for (dense and conv)."""
        return [layer for layer in self.layers if layer.type in ("dense", "dense_rec", "conv")]


def _uniform(values, what: str, name: str) -> int:
    value = uniform_value(values)
    if value is None:
        raise QuantizationError(f"neuron '{name}': netx takes one {what} per layer, this layer has "
                                f"{np.unique(np.asarray(values)).size} different values; give the layer scalar parameters")
    return value


def _cuba(neuron: IntNeuron, spiking: bool) -> dict:
    if spiking:
        vth = _uniform(neuron.threshold, "threshold (vThMant)", neuron.name)
        if not 0 <= vth <= VTH_MAX:
            raise QuantizationError(f"neuron '{neuron.name}': threshold {vth} does not fit netx's unsigned 17-bit "
                                    "vThMant")
    return {"type": "CUBA", "iDecay": _uniform(neuron.du, "current decay (iDecay)", neuron.name) + 1,
            "vDecay": _uniform(neuron.dv, "voltage decay (vDecay)", neuron.name),
            "vThMant": vth if spiking else VTH_MAX, "refDelay": 1, "gradedSpike": False}


def _integrator() -> dict:
    return {"type": "CUBA", "iDecay": 4096, "vDecay": 0, "vThMant": VTH_MAX, "refDelay": 1, "gradedSpike": False}


def _bias_mantissa(bias: np.ndarray, name: str, shift: int) -> np.ndarray:
    """b = mantissa·2^shift exactly, with a 13-bit signed mantissa."""
    bias = np.asarray(bias, dtype=np.int64)
    mant = bias >> shift
    if (mant << shift != bias).any():
        raise QuantizationError(f"neuron '{name}': bias {int(bias[(mant << shift) != bias].flat[0])} (integer units) "
                                f"is not a multiple of {2 ** shift}, and netx fixes bias_exp = {BIAS_EXP}; drop the "
                                "layer's bias and v_leak, or simulate it with n2c simulate")
    if np.abs(mant).max(initial=0) >= BIAS_MANT:
        raise QuantizationError(f"neuron '{name}': bias mantissa {int(np.abs(mant).max())} exceeds netx's 13-bit "
                                "signed bias")
    return mant


def _bias_record(mant: np.ndarray) -> np.ndarray:
    """(N,) for dense; per channel (C,) when uniform over H, W, else per neuron in netx's (W, H, C)."""
    if mant.ndim != 3:
        return mant
    per_channel = mant.reshape(mant.shape[0], -1)
    return per_channel[:, 0] if (per_channel == per_channel[:, :1]).all() else to_lava(mant)


# --- dense weights: netx's optimize_weight_bits, then Lava's Dense --------------------------------

def netx_dense_weights(w: np.ndarray) -> tuple[np.ndarray, int, int] | None:
    """What netx (``netx.utils.optimize_weight_bits``) makes of integer weights ``w``: the shifted
    weights w·2^k, num_weight_bits and weight_exp = −k, or None where netx fails (all zero) or
    clips. netx's sign modes: inhibitory if every weight is < 0, excitatory if every weight is
    ≥ 0, otherwise mixed (so a 0 maximum counts as mixed); k = ⌊log₂ s⌋ (+1 when mixed) with
    s = 255/max, 256/|min| or min(127/max, 128/|min|); the bit count leaves out the trailing
    zero bits all weights share (one fewer when mixed)."""
    w = np.asarray(w, dtype=np.int64)
    lo, hi = int(w.min()), int(w.max())
    mixed = hi >= 0 > lo
    if hi == lo == 0 or (hi > 254 or lo < -256) and mixed:
        return None
    if mixed:
        scale = min(127 / hi if hi > 0 else math.inf, 128 / -lo)
    else:
        scale = 256 / -lo if hi < 0 else 255 / hi
    k = math.floor(math.log2(scale)) + mixed
    zeros = next(n for n in range(8, -1, -1) if not (w % (1 << n)).any())
    bits = 8 - k - (zeros - mixed)
    return (w << k if k >= 0 else np.zeros_like(w)), bits, -k  # numpy shifts left by k < 0 to 0


def _check_dense(w: np.ndarray, name: str) -> None:
    """Refuse dense weights that netx + Lava would not use as they are: the synapse computes
    (W_lava·s) >> k, which equals W·s exactly when W_lava = W·2^k."""
    opt = netx_dense_weights(w)
    if opt is not None and opt[2] <= 0 and np.array_equal(lava_effective_weights(opt[0], opt[1]), w << -opt[2]):
        return
    how = "netx cannot optimize them" if opt is None else \
        f"netx's optimize_weight_bits (exponent {opt[2]}, {opt[1]} bits) and Lava's truncation would change them"
    raise QuantizationError(f"synapse '{name}': weights {int(w.min())}..{int(w.max())}: {how} (lava-dl #170); "
                            "this layer has no exact netx form")


def _add_loop(block: NetxLayer, loop: IntSynapse) -> None:
    """Make ``block`` netx's dense_rec: its neuron's spikes back into it through ``loop``, one step
    late (netx's RecurrentDense: a second Dense from the neuron's output to its input). netx
    optimizes the two weight matrices together, so they are checked together."""
    if block.type != "dense" or block.name != loop.input or loop.kind != "dense":
        raise UnsupportedLayerError(f"recurrent synapse '{loop.name}' ({loop.kind}) into '{loop.input}': netx has "
                                    "recurrence only for dense layers (dense_rec)")
    weight_rec = lava_effective_weights(loop.weight)
    _check_dense(np.hstack([block.weight, weight_rec]), f"{block.name} with its loop {loop.name}")
    block.type, block.weight_rec = "dense_rec", weight_rec


# --- pooling folded into the next layer ----------------------------------------------------------

def _fold_pool_into_dense(weight: np.ndarray, pool: IntSynapse) -> np.ndarray:
    """W·P: dense weights on the pooled map (out, C·Ho·Wo) as weights on the pooling's input
    (out, C·H·W), both C-order; each pooled column is added to the columns of its window."""
    c, h, w = pool.in_shape
    _, ho, wo = pool.out_shape
    (kh, kw), (sh, sw), (ph, pw) = pool.kernel, pool.stride, pool.padding
    pooled = weight.reshape(-1, c, ho, wo)
    full = np.zeros((len(pooled), c, h + 2 * ph, w + 2 * pw), dtype=np.int64)  # padded input coordinates
    for a in range(kh):
        for b in range(kw):
            full[:, :, a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw] += pooled
    return full[:, :, ph:ph + h, pw:pw + w].reshape(len(pooled), -1)


def _fold_pool_into_conv(pool: IntSynapse, syn: IntSynapse) -> dict:
    """One conv equal to sum pooling then ``syn``, for a tiling pool (stride = kernel, no padding);
    with conv padding the pooled map must tile the input exactly."""
    s, (h, w) = pool.stride, pool.in_shape[1:]
    if tuple(pool.kernel) != tuple(s) or any(pool.padding) or (any(syn.padding) and (h % s[0] or w % s[1])):
        raise UnsupportedLayerError(f"pooling '{pool.name}' (kernel {tuple(pool.kernel)}, stride {tuple(s)}, padding "
                                    f"{tuple(pool.padding)}) before conv '{syn.name}': netx has no pool layer, and this "
                                    "pooling does not fold exactly into the convolution (it folds when stride = "
                                    "kernel, no padding, and, with conv padding, the pooled map tiles the input)")
    cout, cin, kh, kw = syn.weight.shape
    (dh, dw) = syn.dilation
    kernel = np.zeros((cout, cin, (kh - 1) * dh * s[0] + s[0], (kw - 1) * dw * s[1] + s[1]), dtype=np.int64)
    for a in range(kh):
        for b in range(kw):
            y, x = a * dh * s[0], b * dw * s[1]
            kernel[:, :, y:y + s[0], x:x + s[1]] += syn.weight[:, :, a, b][:, :, None, None]
    return {"weight": kernel, "stride": (syn.stride[0] * s[0], syn.stride[1] * s[1]),
            "padding": (syn.padding[0] * s[0], syn.padding[1] * s[1]), "dilation": (1, 1), "groups": syn.groups}


def _conv_record(syn: IntSynapse, pool: IntSynapse | None) -> tuple[np.ndarray, dict]:
    p = _fold_pool_into_conv(pool, syn) if pool is not None else {
        "weight": np.asarray(syn.weight, np.int64), "stride": syn.stride, "padding": syn.padding,
        "dilation": syn.dilation, "groups": syn.groups}
    weight, groups = p.pop("weight"), p["groups"]
    in_shape = (pool or syn).in_shape
    out_hw = [(in_shape[1 + d] + 2 * p["padding"][d] - p["dilation"][d] * (weight.shape[2 + d] - 1) - 1)
              // p["stride"][d] + 1 for d in range(2)]
    if tuple(out_hw) != tuple(syn.out_shape[1:]):
        raise UnsupportedLayerError(f"conv '{syn.name}': the folded pooling gives {tuple(out_hw)}, the network "
                                    f"{tuple(syn.out_shape[1:])}; no exact netx form")
    if max(*weight.shape[2:], *p["stride"], *p["padding"], *p["dilation"]) > LAVA_INT8_MAX:
        raise UnsupportedLayerError(f"conv '{syn.name}': kernel {weight.shape[2:]}, stride, padding or dilation "
                                    f"exceeds Lava Conv's int8 range 0..{LAVA_INT8_MAX}")
    if lava_groups(groups) != groups:  # Lava's int8 groups: coarser groups with block-diagonal kernels
        weight, p["groups"] = regroup_conv_weight(weight, groups, lava_groups(groups)), lava_groups(groups)
    return weight, {k: np.asarray(v, dtype=np.int64) for k, v in p.items()}


def _identity_gain(syn: IntSynapse) -> int | None:
    """c when ``syn`` is c times the identity (dense eye, or 1x1 depthwise conv), else None."""
    w = np.asarray(syn.weight)
    if syn.kind == "dense" and w.shape[0] == w.shape[1]:
        c = int(w[0, 0])
        return c if np.array_equal(w, c * np.eye(len(w), dtype=np.int64)) else None
    if syn.kind == "conv" and w.shape[1:] == (1, 1, 1) and syn.groups == w.shape[0] and not any(syn.padding) \
            and tuple(syn.stride) == (1, 1) and (w == w.flat[0]).all():
        return int(w.flat[0])
    return None


# --- the chain -----------------------------------------------------------------------------------

# Why netx cannot express each n2c kind (its CUBA "lif" and "li" layers it can).
def _mtn_reason(neuron: IntNeuron) -> str:
    return (f"a multi-threshold neuron (up to {neuron.max_spikes} spike{'s' * (neuron.max_spikes > 1)}"
            + (f" and {neuron.min_spikes} negative ones" if neuron.min_spikes else "") + " per step, reset by "
            "subtraction); netx's CUBA neurons send one binary spike and reset to 0, and its sigma-delta (SDNN) "
            "neurons send changes of ReLU(Σ) with 6 fraction bits, without the floor(v/θ) staircase and the clip "
            "at K, so neither computes it")


NO_NETX_FORM = {
    "mtn": _mtn_reason,
    "parallel": lambda neuron: "a parallel neuron (fires once per T-step window); netx has no windowed neuron",
    "sfn": lambda neuron: "a scale-and-fire neuron (graded codes from several thresholds); netx has no such neuron",
    "lif_subtract": lambda neuron: "a CUBA neuron with snnTorch's reset (by subtraction, one step late); netx's "
                                   "CUBA neurons reset to 0 (quantize with reset='zero' for netx)",
    "lif_subtract_now": lambda neuron: "a CUBA neuron with snnTorch's reset without delay; netx's CUBA neurons "
                                       "reset to 0 (quantize with reset='zero' for netx)",
}


def _neuron_error(neuron: IntNeuron) -> UnsupportedLayerError:
    reason = NO_NETX_FORM.get(neuron.kind, lambda n: f"a {n.kind} neuron, which netx has no form for")
    what = reason(neuron)
    return UnsupportedLayerError(f"neuron '{neuron.name}' is {what}; simulate it with n2c simulate instead")


def to_netx(net: IntNetwork) -> NetxNetwork:
    """The netx layers that compute ``net`` exactly (see the module docstring), or an error that
    names the first layer netx cannot express."""
    attention = next((layer for layer in net.layers if isinstance(layer, IntProduct)), None)
    if attention is not None:
        raise UnsupportedLayerError(f"'{attention.name}' is a product of two activations (attention); netx has no "
                                    "such block: run the graph with n2c's Lava backend (n2c simulate --backend lava)")
    always_on = next((x for x in net.layers if isinstance(x, IntNeuron) and not x.inputs), None)
    if always_on is not None:
        raise UnsupportedLayerError(f"'{always_on.name}' feeds a bias into a CUBA neuron's synaptic current; netx "
                                    "has no such input: run the graph with n2c's Lava backend (n2c simulate "
                                    "--backend lava)")
    uses = Counter(layer.input for layer in net.layers if isinstance(layer, IntSynapse) and not layer.recurrent)
    for name, n in uses.items():
        if n > 1:
            raise UnsupportedLayerError(f"layer '{name}' feeds {n} layers; netx layers form a single chain "
                                        "(no branches)")
    for layer in net.layers:
        if isinstance(layer, IntSynapse) and layer.delay is not None and np.any(layer.delay):
            raise UnsupportedLayerError(f"synapse '{layer.name}' has synaptic delays; this export does not write "
                                        "netx's delays (a reset between samples would not clear spikes in flight)")
        if isinstance(layer, IntSynapse) and layer.weight_exp:
            raise UnsupportedLayerError(f"synapse '{layer.name}' has a weight exponent; netx chooses its own")
    if net.by_name()[net.output].neuron_kind is not READOUT:
        raise UnsupportedLayerError(f"the network output '{net.output}' is not a readout")
    layers = [NetxLayer("input", net.source.name, tuple(net.source.shape))]
    prev = net.source.name  # the producer the next synapse must read
    prev_neuron: IntNeuron | None = None
    pool = syn = None
    readout, gain = "potential", 1
    for layer in net.layers:
        if isinstance(layer, IntSynapse) and layer.recurrent:  # the loop of the layer just written: dense_rec
            _add_loop(layers[-1], layer)
            continue
        if isinstance(layer, IntSynapse):
            if layer.input != (pool.name if pool is not None else prev) or syn is not None:
                raise UnsupportedLayerError(f"synapse '{layer.name}' reads '{layer.input}', not the previous layer "
                                            f"'{prev}'; netx layers form a single chain")
            if layer.kind == "sumpool" and pool is not None:
                raise UnsupportedLayerError(f"pooling '{layer.name}' follows pooling '{pool.name}'; netx has no pool "
                                            "layer, and two poolings do not fold into the next layer")
            if layer.kind == "sumpool":
                pool = layer
            else:
                syn = layer
            continue
        forward = net.forward_inputs(layer)
        if len(forward) != 1:
            raise UnsupportedLayerError(f"neuron '{layer.name}' sums {len(forward)} inputs "
                                        f"({', '.join(forward)}); a netx layer has one synapse (no residual sums)")
        if layer.kind in NO_NETX_FORM:
            raise _neuron_error(layer)
        identity = _identity_gain(syn) if pool is None and prev_neuron is not None else None
        if layer.neuron_kind is READOUT and identity is not None and not np.any(layer.bias):
            readout, gain = ("spikes" if prev_neuron.neuron_kind is LIF else "potential-sum"), identity
            break
        if prev_neuron is not None and prev_neuron.neuron_kind is LI:
            raise UnsupportedLayerError(f"neuron '{prev_neuron.name}' (LI) sends its membrane potential to "
                                        f"'{syn.name}'; netx's CUBA neurons send binary spikes")
        if syn.kind == "dense":
            if len(syn.in_shape) > 1 and prev_neuron is not None:  # netx flattens (W, H, C) in (C, H, W) order
                layers.append(NetxLayer("flatten", layer.name, (int(np.prod(syn.in_shape)),)))
            weight = lava_effective_weights(syn.weight)
            if pool is not None:
                weight = _fold_pool_into_dense(weight, pool)
            _check_dense(weight, syn.name)
            conv = {}
        else:
            weight, conv = _conv_record(syn, pool)
        if layer.neuron_kind is READOUT:
            neuron, mant = _integrator(), _bias_mantissa(layer.bias, layer.name, 0)
        else:
            neuron, mant = _cuba(layer, layer.neuron_kind is LIF), _bias_mantissa(layer.bias, layer.name, BIAS_EXP)
        bias = np.broadcast_to(mant, layer.shape).astype(np.int64)
        layers.append(NetxLayer(syn.kind, layer.name, tuple(layer.shape), weight, _bias_record(bias), neuron, conv))
        prev, prev_neuron, pool, syn = layer.name, layer, None, None
    rounding = {r["layer"]: r["bias_rounding"] for r in net.report if r.get("bias_rounding")}
    return NetxNetwork(layers, readout, gain, net.source.message_bits, rounding)


# --- file ----------------------------------------------------------------------------------------

def write_netx(model: NetxNetwork, path: str) -> None:
    """Write ``model`` as netx HDF5 (``layer/<i>`` groups, as SLAYER's ``export_hdf5`` does)."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["n2c.readout"] = model.readout
        f.attrs["n2c.readout_weight"] = model.readout_weight
        f.attrs["n2c.input_message_bits"] = model.input_message_bits
        f.attrs["n2c.reset_offset"] = RESET_OFFSET
        for i, layer in enumerate(model.layers):
            g = f.create_group(f"layer/{i}")
            g.create_dataset("type", data=np.bytes_(layer.type))
            g.create_dataset("shape", data=np.asarray(layer.shape, dtype=np.int64))
            if layer.weight is not None:
                g.create_dataset("weight", data=np.asarray(layer.weight, dtype=np.int64))
                g.create_dataset("bias", data=np.asarray(layer.bias, dtype=np.int64))
            if layer.weight_rec is not None:
                g.create_dataset("weight_rec", data=np.asarray(layer.weight_rec, dtype=np.int64))
            for key, value in layer.conv.items():
                g.create_dataset(key, data=value)
            for key, value in (layer.neuron or {}).items():
                g.create_dataset(f"neuron/{key}", data=np.bytes_(value) if isinstance(value, str) else value)


def export_netx(graph: LayerGraph, path: str, input_scale: float | None = None, dt: float | None = None
                ) -> NetxNetwork:
    """Quantize ``graph`` and write its netx file atomically; returns what was written."""
    from n2c.files import atomic_write

    net = quantize(graph, input_scale, dt, fmt=NETX_FORMAT)
    refuse_loops_before_window(net, "run it with n2c simulate (reference)")
    model = to_netx(net)
    atomic_write(path, lambda tmp: write_netx(model, tmp))
    return model
