"""Exact max pooling of quantized activations, built from ReLUs: the circuit that replaces a
``MaxPool2d`` after a QCFS layer (``--maxpool exact``, the default).

A QCFS layer outputs x = θ·k with integer k in 0..L (θ = λ/L). On that grid

    max(a, b) = relu(a − b) + relu(b)           (b ≥ 0)

and QCFS(λ, L) itself computes relu exactly on grid values in −L..L (clip(floor(j + 1/2), 0, L)
= max(j, 0)). A window of n values is reduced pairwise in ⌈log2 n⌉ levels: each level is a
grouped convolution (one group per input channel, weights ±1) into 2 channels per pair
(a − b and b) and 1 for an odd value carried up, followed by QCFS(λ, L); the last level's
two channels are summed by a 1×1 convolution into a relay QCFS(λ, L), whose output is the
max exactly. Zero padding is exact: every window holds a real value ≥ 0; so is ``ceil_mode``'s
partial window at the end, padded with zeros (:func:`ceil_mode_padding`).

The circuit's quantizers are :class:`MaxRelay` modules (QCFS with the producer's λ and L),
so the converted network runs them as neurons like any other: exact at T = 1 (``mtn``) and
for ``parallel`` neurons (L = T); over T steps with ``if`` neurons it is as approximate as
the rest of the network. ``sfn`` places non-uniform levels per layer, which breaks the grid
the circuit relies on, so it is refused there. Cost: ⌈log2 n⌉ + 1 neuron layers (2 and 3
for 2×2 windows; 4 and 5 for 3×3) of up to n·C channels at the pooled resolution.
"""

from __future__ import annotations

import torch
from torch import fx, nn
from torch.nn.modules.utils import _pair

from n2c.ann.qcfs import QCFS, SignedQCFS
from n2c.errors import UnsupportedLayerError
from n2c.ingest.canonical import module_of


class MaxRelay(QCFS):
    """A QCFS of the max-pooling circuit (same λ and L as the layer that feeds the MaxPool)."""


def _pairwise_levels(n: int) -> list[tuple[list[list[float]], list[list[float]]]]:
    """For a window of ``n`` values: per level, (channels, carried). ``channels[j]`` gives the
    coefficients of channel j over the previous level's basis (the window at level 0);
    ``carried[i]`` the coefficients of the i-th value still in the running over those channels."""
    values = [[1.0 if i == j else 0.0 for i in range(n)] for j in range(n)]  # over the window
    levels = []
    while True:
        channels, carried = [], []
        for i in range(0, len(values) - 1, 2):
            a, b = values[i], values[i + 1]
            channels += [[x - y for x, y in zip(a, b)], b]  # relu(a - b), relu(b)
            carried.append([0.0] * (len(channels) - 2) + [1.0, 1.0])
        if len(values) % 2:
            channels.append(values[-1])
            carried.append([0.0] * (len(channels) - 1) + [1.0])
        width = len(channels)
        carried = [c + [0.0] * (width - len(c)) for c in carried]
        levels.append((channels, carried))
        if len(carried) == 1:
            return levels
        values = carried


def _relay(source: QCFS, copies: int) -> MaxRelay:
    lam = source.lam.detach().clone()
    if lam.numel() > 1:  # per channel (C, 1, 1): each group of `copies` channels keeps its channel's λ
        lam = lam.reshape(-1).repeat_interleave(copies).reshape(-1, 1, 1)
    return MaxRelay(int(source.levels), lam)



def _first_level(pool: nn.MaxPool2d, channels: int, chans: list[list[float]],
                 end_padding: tuple[int, int]) -> nn.Conv2d:
    """The first level's grouped convolution over each window. ``end_padding`` (e_h, e_w) adds
    e zeros after the input (ceil_mode's partial windows): padding p + e on both sides and e
    zero taps before the window's own keep the windows where they were."""
    (kh, kw), (dh, dw) = _pair(pool.kernel_size), _pair(pool.dilation)
    width = len(chans)
    window = torch.tensor(chans, dtype=torch.float32).reshape(width, 1, kh, kw)
    if end_padding == (0, 0):
        conv = nn.Conv2d(channels, channels * width, (kh, kw), pool.stride, pool.padding, pool.dilation, groups=channels)
        kernel = window
    else:
        (eh, ew), (ph, pw) = end_padding, _pair(pool.padding)
        kernel = torch.zeros(width, 1, eh + dh * (kh - 1) + 1, ew + dw * (kw - 1) + 1)
        kernel[:, :, eh::dh, ew::dw] = window
        conv = nn.Conv2d(channels, channels * width, kernel.shape[2:], pool.stride, (ph + eh, pw + ew), groups=channels)
    with torch.no_grad():
        conv.weight.copy_(kernel.repeat(channels, 1, 1, 1))
        conv.bias.zero_()
    return conv


def max_circuit(pool: nn.MaxPool2d, source: QCFS, channels: int,
                end_padding: tuple[int, int] = (0, 0)) -> list[nn.Module]:
    """The modules that compute ``pool`` exactly on the outputs of ``source`` (``channels`` wide);
    ``end_padding``: see :func:`ceil_mode_padding`."""
    kh, kw = _pair(pool.kernel_size)
    levels = _pairwise_levels(kh * kw)
    modules: list[nn.Module] = []
    width_in = 1
    for depth, (chans, carried) in enumerate(levels):
        width = len(chans)
        if depth == 0:
            conv = _first_level(pool, channels, chans, end_padding)
        else:
            conv = nn.Conv2d(channels * width_in, channels * width, 1, groups=channels)
            with torch.no_grad():
                conv.weight.copy_(torch.tensor(chans, dtype=torch.float32).reshape(width, width_in, 1, 1)
                                  .repeat(channels, 1, 1, 1))
                conv.bias.zero_()
        modules += [conv, _relay(source, width)]
        last_carried, width_in = carried, width
    total = nn.Conv2d(channels * width_in, channels, 1, groups=channels)  # sum the last channels
    with torch.no_grad():
        total.weight.copy_(torch.tensor(last_carried[0], dtype=torch.float32).reshape(1, width_in, 1, 1)
                           .repeat(channels, 1, 1, 1))
        total.bias.zero_()
    return modules + [total, _relay(source, 1)]


def channels_of(gm: fx.GraphModule, node: fx.Node) -> int | None:
    """The channels of ``node``'s output, read off the nearest convolution above it (the layers
    between keep the channel count: activations, pooling, dropout, residual additions)."""
    while isinstance(node, fx.Node):
        module = module_of(gm, node)
        if isinstance(module, nn.Conv2d):
            return module.out_channels
        node = node.args[0] if node.args else None
    return None


def ceil_mode_padding(pool: nn.MaxPool2d, size: tuple[int, int]) -> tuple[int, int]:
    """The zeros ``ceil_mode`` adds after an input of ``size`` (per axis): enough for torch's
    ceil-mode output count n = ceil((H + 2p − d(k−1) − 1)/s) + 1, less one if the last window
    would start past the left-padded input; e = max(0, (n − 1)·s − (H + 2p − d(k−1) − 1)) < s.
    Zeros are exact in a max of values ≥ 0 (each window still holds a real one)."""
    extra = []
    for n, p, d, k, s in zip(size, _pair(pool.padding), _pair(pool.dilation), _pair(pool.kernel_size),
                             _pair(pool.stride if pool.stride is not None else pool.kernel_size)):
        span = n + 2 * p - d * (k - 1) - 1
        out = -(-span // s) + 1
        if (out - 1) * s >= n + p:
            out -= 1
        extra.append(max(0, (out - 1) * s - span))  # < 0: the last window is dropped, floor's count
    return tuple(extra)


def replace_maxpools(gm: fx.GraphModule, example: torch.Tensor | None = None) -> fx.GraphModule:
    """Replace every MaxPool2d that reads a QCFS layer by :func:`max_circuit`. A MaxPool after a
    signed quantizer is refused. ``ceil_mode`` needs ``example`` (one input) for the shapes: pools
    where it adds no partial window lose it, the others get :func:`ceil_mode_padding`."""
    from torch.fx.passes.shape_prop import ShapeProp

    padding: dict[str, tuple[int, int]] = {}
    ceil = [n for n in gm.graph.nodes if isinstance(module_of(gm, n), nn.MaxPool2d) and module_of(gm, n).ceil_mode]
    if ceil and example is not None:
        ShapeProp(gm).propagate(example)
        for node in ceil:
            padding[node.name] = ceil_mode_padding(module_of(gm, node), tuple(node.args[0].meta["tensor_meta"].shape[-2:]))
            if padding[node.name] == (0, 0):
                module_of(gm, node).ceil_mode = False
    for node in list(gm.graph.nodes):
        pool = module_of(gm, node)
        if not isinstance(pool, nn.MaxPool2d):
            continue
        src = node.args[0]
        source = module_of(gm, src)
        if not isinstance(source, QCFS):
            continue  # before the first activation: the input is analog and constant over time
        if isinstance(source, SignedQCFS):
            raise UnsupportedLayerError(f"MaxPool2d '{node.target}' reads a signed quantizer; the exact max "
                                        "circuit needs values >= 0 (use --maxpool avg, or QCFS before it)")
        if pool.return_indices:
            raise UnsupportedLayerError(f"MaxPool2d '{node.target}': return_indices has no spiking form; "
                                        "use return_indices=False")
        if pool.ceil_mode and node.name not in padding:
            raise UnsupportedLayerError(f"MaxPool2d '{node.target}': ceil_mode needs the input's shape; pass "
                                        "calibration data (--calib) or use ceil_mode=False")
        last = src
        with gm.graph.inserting_before(node):
            channels = channels_of(gm, src)
            if channels is None:
                raise UnsupportedLayerError(f"MaxPool2d '{node.target}': no convolution above it tells its channels; "
                                            "use --maxpool avg")
            for i, module in enumerate(max_circuit(pool, source, channels, padding.get(node.name, (0, 0)))):
                name = f"{node.target.replace('.', '_')}_max{i}"
                gm.add_submodule(name, module)
                last = gm.graph.call_module(name, (last,))
        node.replace_all_uses_with(last)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm
