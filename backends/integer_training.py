"""Integer-exact fine-tuning: train the one-step integer network itself, in the chip's format.

The integer network (``backends.ir.integer.IntNetwork``) computes, at T = 1, for every neuron::

    k = clip(floor((v0 + Σ w·k_in + b) / θ), -K⁻, K)          (integers; readout: v = Σ w·k_in + b)

:class:`IntegerModel` runs exactly that in torch, in float64 (exact for integers below 2^53),
with trainable weights and biases: each weight is an even mantissa ``2·round(w/2)`` within the
format's ±``weight_max`` (Lava's mixed-sign rule), each bias an integer, and the gradients pass
the roundings and the floor straight through (the floor's as 1/θ, as QCFS training does).
Thresholds θ, v0 and the scales S stay as quantized. After training, its predictions *are*
the integer network's: :func:`write_nir` writes the trained integers back into the NIR graph
(W = w / (u·S), b = b_int / S, with the scales pinned as ``n2c.scale``), and importing and
quantizing that graph gives back the same integers, checked before anything is written.

What it trains: the weights of convolutions and dense layers that are NIR nodes, and the
biases of neurons whose first weighted input carries a bias. Identity shortcuts and sum-pools
have no trainable weights. Only T = 1 networks of ``mtn`` neurons (polarity included) and the
readout; anything else is a one-line error.
"""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path

import nir
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from backends.nir.to_layers import import_nir
from backends.ir.integer import IntNeuron, IntProduct, IntSynapse
from backends.quantize import input_channels, quantize
from n2c import products
from n2c.errors import N2CError
from n2c.files import atomic_write

TRAINABLE_KINDS = ("mtn", "readout")


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


class IntegerModel(nn.Module):
    """The integer network at T = 1 as a torch module: input integer frames (B, *input) → readout
    potentials (B, *out), float64 holding integers. ``trainable`` names the synapses whose weights
    train (default: every conv and dense)."""

    def __init__(self, net, trainable: set[str] | None = None, biases: set[str] | None = None):
        super().__init__()
        if net.timesteps != 1:
            raise N2CError(f"integer-exact training is for one-step networks; this one runs T = {net.timesteps}")
        for layer in net.layers:
            if isinstance(layer, IntNeuron) and layer.kind not in TRAINABLE_KINDS:
                raise N2CError(f"layer '{layer.name}' is a {layer.kind!r} neuron; integer-exact training takes "
                               f"{' and '.join(TRAINABLE_KINDS)} neurons (export with --method mtn --timesteps 1)")
            if isinstance(layer, IntSynapse) and (layer.weight_exp != 0 or layer.in_slice is not None
                                                  or (layer.delay is not None and np.any(layer.delay))):
                raise N2CError(f"synapse '{layer.name}': weight exponents, sliced inputs and delays are not trained")
        self.net = net
        self.fmt = net.fmt
        self.weights = nn.ParameterDict()
        self.biases = nn.ParameterDict()
        for layer in net.layers:
            key = _key(layer.name)
            if isinstance(layer, IntSynapse) and layer.kind in ("conv", "dense") and \
                    (trainable is None or layer.name in trainable):
                self.weights[key] = nn.Parameter(torch.tensor(layer.weight, dtype=torch.float64))
            if isinstance(layer, IntNeuron) and (biases is None or layer.name in biases):
                bias = np.broadcast_to(layer.bias, layer.shape)  # one per channel of an image (a conv's bias)
                bias = bias[:, :1, :1] if bias.ndim == 3 else bias
                self.biases[key] = nn.Parameter(torch.tensor(bias, dtype=torch.float64))

    def weight(self, syn) -> torch.Tensor:
        key = _key(syn.name)
        if key not in self.weights:
            return torch.as_tensor(syn.weight, dtype=torch.float64)
        w = self.weights[key]
        even = 2 * _round_ste(w / 2)  # Lava keeps mixed-sign weights even
        return torch.clamp(even, -self.fmt.weight_max, self.fmt.weight_max)

    def bias(self, neuron) -> torch.Tensor:
        key = _key(neuron.name)
        if key not in self.biases:
            return torch.tensor(np.broadcast_to(neuron.bias, neuron.shape), dtype=torch.float64)  # a copy: writable
        return torch.clamp(_round_ste(self.biases[key]), self.fmt.state_min, self.fmt.state_max)

    def forward(self, s_in: torch.Tensor) -> torch.Tensor:
        values = {self.net.source.name: s_in.to(torch.float64)}
        for layer in self.net.layers:
            if isinstance(layer, IntSynapse):
                x = values[layer.input]
                if layer.kind == "dense":
                    values[layer.name] = x.reshape(len(x), -1) @ self.weight(layer).T
                elif layer.kind == "conv":
                    values[layer.name] = F.conv2d(x, self.weight(layer), stride=layer.stride, padding=layer.padding,
                                                  dilation=layer.dilation, groups=layer.groups)
                else:  # sum-pool
                    values[layer.name] = F.avg_pool2d(x, layer.kernel, layer.stride, layer.padding,
                                                      count_include_pad=True, divisor_override=1)
                continue
            if isinstance(layer, IntProduct):  # attention's products of counts (n2c.products, T = 1): not trained
                p = products.product_torch(*(values[n] for n in layer.inputs), layer.heads, layer.mode)
                if layer.softmax_scale is None:
                    values[layer.name] = layer.weight * p
                else:
                    shifted = layer.softmax_scale * p
                    e = torch.exp(shifted - shifted.amax(dim=-1, keepdim=True))
                    values[layer.name] = _round_ste(layer.out_scale * e / e.sum(dim=-1, keepdim=True))
                continue
            current = sum(values[n].reshape(len(s_in), *layer.shape) for n in layer.inputs) + self.bias(layer)
            if layer.name == self.net.output:
                return current
            values[layer.name] = _fire(current + torch.as_tensor(layer.v_init, dtype=torch.float64),
                                       torch.as_tensor(layer.threshold, dtype=torch.float64),
                                       -layer.min_spikes, layer.max_spikes)
        raise N2CError("the integer network has no readout")

    def to_network(self):
        """The integer network with the trained weights and biases."""
        net = copy.deepcopy(self.net)
        with torch.no_grad():
            for layer in net.layers:
                if isinstance(layer, IntSynapse) and _key(layer.name) in self.weights:
                    layer.weight = self.weight(layer).numpy().astype(np.int64)
                if isinstance(layer, IntNeuron) and _key(layer.name) in self.biases:
                    layer.bias = np.broadcast_to(self.bias(layer).numpy(), layer.shape).astype(np.int64)
        return net


def _fire(m: torch.Tensor, theta: torch.Tensor, lowest: int, highest: int) -> torch.Tensor:
    """clip(floor(m/θ), lowest, highest) on integer-valued float64, exactly; the gradient passes
    the floor as 1/θ (straight through) and stops outside the clip."""
    q = m / theta
    k = torch.div(m, theta, rounding_mode="floor")  # exact floor division of integer-valued floats
    return torch.clamp(k.detach() + (q - q.detach()), lowest, highest)


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys cannot hold dots


def fine_tune_integer(model: IntegerModel, s_train: np.ndarray, y_train: np.ndarray, epochs: int = 2,
                      lr: float = 0.05, batch_size: int = 64, seed: int = 0, progress: bool = True) -> IntegerModel:
    """Adam with cosine decay on the cross-entropy of the readout (in real units, v/S), over
    integer input frames ``s_train`` (B, *input)."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    out_scale = next(n.scale for n in model.net.layers if n.name == model.net.output)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    steps = epochs * math.ceil(len(s_train) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    x_all = torch.as_tensor(s_train, dtype=torch.float64)
    y_all = torch.as_tensor(y_train, dtype=torch.long)
    model.train()
    with tqdm(total=steps, desc="integer fine-tune", unit="batch", disable=not progress) as bar:
        for _ in range(epochs):
            order = torch.randperm(len(x_all))
            for i in range(0, len(order), batch_size):
                idx = order[i:i + batch_size]
                loss = F.cross_entropy(model(x_all[idx]).reshape(len(idx), -1) / out_scale, y_all[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                bar.set_postfix(loss=f"{loss.item():.3f}")
                bar.update(1)
    model.eval()
    return model


@torch.no_grad()
def predict_integer(model: IntegerModel, s: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class predictions of the trained model on integer frames ``s`` (B, *input)."""
    model.eval()
    out = [model(torch.as_tensor(s[i:i + batch_size])).reshape(len(s[i:i + batch_size]), -1).argmax(1).numpy()
           for i in range(0, len(s), batch_size)]
    return np.concatenate(out) if out else np.zeros(0, np.int64)


# --- the trained integers, back into NIR ---------------------------------------------------------

def _node(graph, name: str):
    """The NIR node of an inlined layer name (``group.inner``)."""
    node = graph
    for part in name.split("."):
        node = node.nodes.get(part) if hasattr(node, "nodes") else None
        if node is None:
            return None
    return node


def trainable_parts(nir_graph, net) -> tuple[set[str], set[str]]:
    """(synapses whose weights are NIR nodes, neurons whose first weighted input is a NIR node with a
    bias): what :func:`write_nir` can write back."""
    weighted = {x.name for x in net.layers if isinstance(x, IntSynapse) and x.kind in ("conv", "dense")
                and isinstance(_node(nir_graph, x.name), (nir.Conv2d, nir.Affine, nir.Linear))}
    biased = set()
    for neuron in (x for x in net.layers if isinstance(x, IntNeuron)):
        first = next((n for n in neuron.inputs if n in weighted), None)
        if first is not None and isinstance(_node(nir_graph, first), (nir.Conv2d, nir.Affine)):
            biased.add(neuron.name)
    return weighted, biased


def write_nir(nir_graph, trained, path: str) -> None:
    """Write the trained integer network ``trained`` (an ``IntNetwork`` quantized from ``nir_graph``)
    back into a copy of ``nir_graph`` and save it to ``path``: W = w / (u·S) per synapse, the
    neuron's bias b / S on its first weighted input (0 on the others), ``n2c.scale`` = S on every
    neuron and the Output. The graph is re-imported and re-quantized first; if any integer differs
    from ``trained``, nothing is written and an error names the layer."""
    def write_graph(g, target):
        atomic_write(target, lambda tmp: nir.write(tmp, g))

    graph = copy.deepcopy(nir_graph)
    weighted, biased = trainable_parts(graph, trained)
    by_name = trained.by_name()
    neurons = [x for x in trained.layers if isinstance(x, IntNeuron)]
    feeds = {s: n.name for n in neurons for s in n.inputs}
    for syn in (x for x in trained.layers if isinstance(x, IntSynapse) and x.name in weighted):
        node, scale = _node(graph, syn.name), by_name[feeds[syn.name]].scale
        w = syn.weight.astype(np.float64)
        if syn.kind == "dense":
            real = w / (scale * syn.input_unit[None, :])
        else:
            real = w / (scale * syn.input_unit[input_channels(w.shape, syn.groups)][:, :, None, None])
        node.weight = real.reshape(np.shape(node.weight)).astype(np.float32)
        if feeds[syn.name] in biased and getattr(node, "bias", None) is not None:
            node.bias = np.zeros(np.shape(node.bias), np.float32)  # the neuron's bias goes on its first input
    for neuron in neurons:
        if neuron.name in biased:
            first = _node(graph, next(n for n in neuron.inputs if n in weighted))
            bias = np.broadcast_to(neuron.bias, neuron.shape) / neuron.scale
            per = bias.reshape(len(bias), -1)[:, 0] if isinstance(first.weight, np.ndarray) and first.weight.ndim == 4 \
                else bias.reshape(-1)
            first.bias = per.reshape(np.shape(first.bias)).astype(np.float32)
        node = _node(graph, neuron.name)
        node.metadata = {**(node.metadata or {}), "n2c.scale": float(neuron.scale)}
    graph.metadata = {**(graph.metadata or {}), "n2c.integer_trained": True}
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "trained.nir"
        write_graph(graph, probe)
        again = quantize(import_nir(probe), fmt=trained.fmt)
        _check_same_integers(again, trained)
    write_graph(graph, path)


def _check_same_integers(again, trained) -> None:
    by_name = again.by_name()
    for layer in trained.layers:
        other = by_name.get(layer.name)
        for what in ("weight", "bias", "threshold", "v_init"):
            a, b = getattr(layer, what, None), getattr(other, what, None) if other is not None else None
            if a is None and b is None:
                continue
            if a is None or b is None or not np.array_equal(np.broadcast_to(a, np.shape(b)), b):
                raise N2CError(f"layer '{layer.name}': its trained {what} does not survive the NIR round trip; "
                               "the graph cannot carry this integer network exactly (please report it)")
