"""``torch.cat`` of feature maps along the channels, rewritten away before conversion.

Spiking layers sum their inputs, they do not stack them; but a concatenation only ever
reaches a layer that either acts per channel or weighs its channels, and both split:

* per channel (ReLU, BatchNorm, pooling, Dropout, Identity):
  ``f(cat(a, b)) = cat(f_a(a), f_b(b))``, f_a the layer on a's channels (BatchNorm: its
  statistics for those channels; a ReLU: a copy, calibrated with the others as one layer is
  not: each part gets its own threshold);
* Flatten: ``flatten(cat(a, b)) = cat(flatten(a), flatten(b))`` (channels are the outermost
  axis of a C-order flatten);
* weighted (Conv2d with one group, Linear after a Flatten):
  ``W·cat(a, b) + c = W_a·a + W_b·b + c``, W_a the columns of a's channels: a sum of layers,
  which spiking neurons compute.

The rewrite pushes every concatenation through its users until it meets weights, so
DenseNet, SqueezeNet and GoogLeNet become sums of convolutions. Channel counts come from
the layers that make each part (a conv's out_channels, a pool's input); a Linear after a
flattened concatenation needs each part's spatial size, known after an AdaptiveAvgPool2d.
What cannot be split is an UnsupportedLayerError naming the concatenation.
"""

from __future__ import annotations

import copy
import operator

import torch
from torch import fx, nn

from n2c.ann.qcfs import QCFS, SignedQCFS
from n2c.errors import UnsupportedLayerError

QUANTIZERS = (QCFS, SignedQCFS)

PER_CHANNEL = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
               nn.Dropout, nn.Identity)


def is_channel_cat(node: fx.Node) -> bool:
    if node.op != "call_function" or node.target not in (torch.cat, torch.concat):
        return False
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    parts = node.args[0] if node.args else node.kwargs.get("tensors")
    return dim in (1, -3) and isinstance(parts, (list, tuple)) and all(isinstance(p, fx.Node) for p in parts)


def module_of(gm: nn.Module, node) -> nn.Module | None:
    """The module a ``call_module`` node calls, else None (imported from ``canonical`` as well)."""
    return gm.get_submodule(node.target) if isinstance(node, fx.Node) and node.op == "call_module" else None


def channels(gm: nn.Module, node: fx.Node) -> int | None:
    """Channels of ``node``'s output, from the layers that make it (None: not known)."""
    m = module_of(gm, node)
    if isinstance(m, nn.Conv2d):
        return m.out_channels
    if isinstance(m, nn.Linear):
        return m.out_features
    if isinstance(m, PER_CHANNEL + QUANTIZERS + (nn.Flatten,)) or \
            node.op == "call_function" and node.target is operator.add:
        return channels(gm, node.args[0]) if isinstance(node.args[0], fx.Node) else None
    if is_channel_cat(node):
        counts = [channels(gm, p) for p in node.args[0]]
        return None if None in counts else sum(counts)
    return None


def _spatial(gm: nn.Module, node: fx.Node) -> int | None:
    """Positions per channel of ``node``'s output where an AdaptiveAvgPool2d fixed them."""
    m = module_of(gm, node)
    if isinstance(m, nn.AdaptiveAvgPool2d):
        size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size, m.output_size)
        return None if None in size else size[0] * size[1]
    if isinstance(m, (nn.Dropout, nn.Identity, nn.ReLU, nn.Hardtanh, nn.Flatten) + QUANTIZERS) or is_channel_cat(node):
        first = node.args[0][0] if is_channel_cat(node) else node.args[0]
        return _spatial(gm, first) if isinstance(first, fx.Node) else None
    return None


def add_unique_module(gm: fx.GraphModule, base: str, module: nn.Module) -> str:
    """Add ``module`` to ``gm`` under ``base`` (dots made underscores, a number appended where the
    name is taken); returns the name."""
    name, k = base.replace(".", "_"), 0
    while hasattr(gm, name + (f"_{k}" if k else "")):
        k += 1
    name += f"_{k}" if k else ""
    gm.add_submodule(name, module)
    return name


def _split_per_channel(m: nn.Module, start: int, stop: int) -> nn.Module:
    if isinstance(m, nn.BatchNorm2d):  # its statistics and affine for the part's channels
        part = nn.BatchNorm2d(stop - start, eps=m.eps, affine=m.affine).eval()
        part.load_state_dict({k: v[start:stop] if v.ndim else v for k, v in m.state_dict().items()})
        return part
    part = copy.deepcopy(m)
    if isinstance(m, QUANTIZERS) and m.lam.numel() > 1:  # a threshold per channel: the part's channels
        with torch.no_grad():
            part.lam = nn.Parameter(m.lam[start:stop].clone())
    return part


def _split_weighted(m: nn.Module, start: int, stop: int, first: bool, per_channel: int = 1) -> nn.Module:
    """The layer on input channels [start, stop) (Linear: their features, per_channel each)."""
    part = copy.deepcopy(m)
    with torch.no_grad():
        if isinstance(m, nn.Conv2d):
            part.in_channels = stop - start
            part.weight = nn.Parameter(m.weight[:, start:stop].clone())
        else:
            part.in_features = (stop - start) * per_channel
            part.weight = nn.Parameter(m.weight[:, start * per_channel:stop * per_channel].clone())
        if m.bias is not None and not first:
            part.bias = None
    return part


def remove_concatenations(gm: fx.GraphModule, describe) -> None:
    """Rewrite every channel concatenation of ``gm`` into per-part layers and sums (module
    docstring); ``describe(node)`` names a node in errors."""
    graph = gm.graph
    while True:
        cat = next((n for n in graph.nodes if is_channel_cat(n)), None)
        if cat is None:
            return
        parts = list(cat.args[0])
        counts = [channels(gm, p) for p in parts]
        if None in counts:
            raise UnsupportedLayerError(f"{describe(cat)}: the channels of its inputs are not known from the layers "
                                        "that make them (a conv, a pool or another concatenation); n2c splits a "
                                        "concatenation only then")
        edges = [0]
        for c in counts:
            edges.append(edges[-1] + c)
        for user in list(cat.users):
            _push(gm, cat, user, parts, edges, describe)
        graph.erase_node(cat)


def _push(gm: fx.GraphModule, cat: fx.Node, user: fx.Node, parts: list, edges: list[int], describe) -> None:
    graph = gm.graph
    if is_channel_cat(user):  # cat(cat(a, b), c) = cat(a, b, c)
        inner = [q for p in user.args[0] for q in (parts if p is cat else [p])]
        user.args = (inner, *user.args[1:])
        user.kwargs = {k: v for k, v in user.kwargs.items() if k != "tensors"}
        return
    m = module_of(gm, user)
    spans = list(zip(edges[:-1], edges[1:]))
    with graph.inserting_before(user):
        if isinstance(m, PER_CHANNEL + QUANTIZERS) or isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
            outs = [graph.call_module(add_unique_module(gm, f"{user.target}_part{i}", _split_per_channel(m, a, b)),
                                      (p,)) for i, (p, (a, b)) in enumerate(zip(parts, spans))]
            joined = graph.call_function(torch.cat, (outs, 1))
        elif isinstance(m, nn.Conv2d) and m.groups == 1 or isinstance(m, nn.Linear):
            per = 1  # a BatchNorm after it now follows a sum: fold_batchnorm and fold_linear_chains take it
            if isinstance(m, nn.Linear):
                per = _spatial(gm, cat) if _flattened(gm, cat) else 1
                if per is None or m.in_features != edges[-1] * per:
                    raise UnsupportedLayerError(f"{describe(user)} reads a flattened concatenation whose parts' "
                                                "sizes are not known (pool it with AdaptiveAvgPool2d first)")
            outs = [graph.call_module(add_unique_module(gm, f"{user.target}_part{i}",
                                                        _split_weighted(m, a, b, i == 0, per)), (p,))
                    for i, (p, (a, b)) in enumerate(zip(parts, spans))]
            joined = outs[0]
            for out in outs[1:]:
                joined = graph.call_function(operator.add, (joined, out))
        else:
            raise UnsupportedLayerError(f"{describe(cat)} feeds {describe(user)}, through which n2c cannot split a "
                                        "concatenation (it splits through per-channel layers into weighted ones)")
    user.replace_all_uses_with(joined)
    graph.erase_node(user)


def _flattened(gm: nn.Module, cat: fx.Node) -> bool:
    """A concatenation of flattened parts (made by pushing one through a Flatten)."""
    return all(isinstance(module_of(gm, p), nn.Flatten) for p in cat.args[0])
