"""Fold weighted layers that read other weighted layers without an activation between them.

A spiking network sums weights only into neurons, so ``W(P(x))`` and ``W(a + b)`` (MobileNet's
linear bottlenecks: a 1×1 projection, a residual sum of projections, then the next block's 1×1
expansion) are rewritten before conversion, exactly, as sums of single weighted layers:

    W(Σᵢ Pᵢ(xᵢ) + Σⱼ aⱼ) = Σᵢ (W∘Pᵢ)(xᵢ) + Σⱼ W(aⱼ)

with ``W∘P`` one layer: for two Linear layers the matrix product (bias W·b_P + b_W); for a 1×1,
stride 1, unpadded Conv2d W after any Conv2d P, a convolution of P's geometry whose weight mixes
P's output channels by W (groups expanded to block-diagonal weights; bias likewise); for any
Conv2d W after a 1×1 Conv2d P without bias (or W unpadded), W with its input channels mixed by
P; for an
unpadded average pool W after a Conv2d P (DenseNet's transitions), one convolution with P's
kernel smeared over the pool window. Every term then feeds the activation after W through a
residual sum. Other compositions (a padded W after
a biased P changes the borders) are left alone, and the integer stage names them.
"""

from __future__ import annotations

import copy
import operator

import torch
from torch import fx, nn
from torch.nn.modules.utils import _pair

from n2c.conv_geometry import pooled_conv_kernel
from n2c.ingest.canonical import module_of

WEIGHTED = (nn.Conv2d, nn.Linear)


def _terms(gm: fx.GraphModule, node: fx.Node) -> list[fx.Node]:
    """The nodes whose sum is ``node``, through residual additions."""
    if node.op == "call_function" and node.target is operator.add:
        return [t for a in node.args for t in _terms(gm, a)]
    return [node]


def _full_conv_weight(conv: nn.Conv2d) -> torch.Tensor:
    """(C_out, C_in, kh, kw) with the groups written out as zero blocks."""
    w = conv.weight.detach()
    if conv.groups == 1:
        return w
    out_per, in_per = conv.out_channels // conv.groups, conv.in_channels // conv.groups
    full = torch.zeros(conv.out_channels, conv.in_channels, *w.shape[2:], dtype=w.dtype)
    for g in range(conv.groups):
        full[g * out_per:(g + 1) * out_per, g * in_per:(g + 1) * in_per] = w[g * out_per:(g + 1) * out_per]
    return full


def _bias(layer: nn.Module) -> torch.Tensor:
    n = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    return layer.bias.detach() if layer.bias is not None else torch.zeros(n)


def compose(outer: nn.Module, inner: nn.Module) -> nn.Module | None:
    """One layer equal to ``outer(inner(x))``, or None where no such layer exists."""
    if isinstance(outer, nn.Linear) and isinstance(inner, nn.Linear):
        layer = nn.Linear(inner.in_features, outer.out_features)
        weight = outer.weight.detach() @ inner.weight.detach()
        bias = outer.weight.detach() @ _bias(inner) + _bias(outer)
    elif isinstance(outer, nn.Conv2d) and isinstance(inner, nn.Conv2d) and outer.kernel_size == (1, 1) \
            and outer.stride == (1, 1) and outer.padding == (0, 0) and outer.padding_mode == "zeros" \
            and inner.padding_mode == "zeros" and not isinstance(inner.padding, str):
        mix = _full_conv_weight(outer)[:, :, 0, 0]  # (C_out, C_mid)
        layer = nn.Conv2d(inner.in_channels, outer.out_channels, inner.kernel_size, inner.stride, inner.padding,
                          inner.dilation)
        weight = torch.einsum("om,mikl->oikl", mix, _full_conv_weight(inner))
        bias = mix @ _bias(inner) + _bias(outer)
    elif isinstance(outer, nn.AvgPool2d) and isinstance(inner, nn.Conv2d):
        return _pooled_conv(outer, inner)
    elif isinstance(outer, nn.Conv2d) and isinstance(inner, nn.Conv2d) and inner.kernel_size == (1, 1) \
            and inner.stride == (1, 1) and inner.padding == (0, 0) and inner.padding_mode == "zeros" \
            and outer.padding_mode == "zeros" and not isinstance(outer.padding, str) \
            and (outer.padding == (0, 0) or not _bias(inner).any()):
        # W after a 1×1 P: mix W's input channels by P; zero padding commutes with P when P adds
        # no bias (else the borders would see P's bias where W's padding puts zeros)
        mix = _full_conv_weight(inner)[:, :, 0, 0]  # (C_mid, C_in)
        kernel = _full_conv_weight(outer)  # (C_out, C_mid, kh, kw)
        layer = nn.Conv2d(inner.in_channels, outer.out_channels, outer.kernel_size, outer.stride, outer.padding,
                          outer.dilation)
        weight = torch.einsum("omkl,mi->oikl", kernel, mix)
        bias = kernel.sum(dim=(2, 3)) @ _bias(inner) + _bias(outer)
    else:
        return None
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer



def _pooled_conv(pool: nn.AvgPool2d, conv: nn.Conv2d) -> nn.Conv2d | None:
    """One convolution equal to an unpadded average pool of ``conv`` (:func:`pooled_conv_kernel`);
    the bias passes through the average."""
    if pool.padding not in (0, (0, 0)) or pool.ceil_mode or pool.divisor_override is not None \
            or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return None
    (p_h, p_w), (q_h, q_w) = _pair(pool.kernel_size), _pair(pool.stride if pool.stride is not None else pool.kernel_size)
    kernel = torch.from_numpy(pooled_conv_kernel(_full_conv_weight(conv).numpy(), conv.stride, conv.dilation,
                                                 (p_h, p_w), 1.0 / (p_h * p_w)))
    layer = nn.Conv2d(conv.in_channels, conv.out_channels, kernel.shape[2:],
                      (conv.stride[0] * q_h, conv.stride[1] * q_w), conv.padding)
    with torch.no_grad():
        layer.weight.copy_(kernel)
        layer.bias.copy_(_bias(conv))
    return layer


def fold_linear_chains(gm: fx.GraphModule) -> fx.GraphModule:
    """Rewrite every weighted layer or average pool that reads a weighted layer or a sum (module docstring)."""
    changed = False
    for node in list(gm.graph.nodes):
        outer = module_of(gm, node)
        if not isinstance(outer, WEIGHTED + (nn.AvgPool2d,)) or not isinstance(node.args[0], fx.Node):
            continue
        terms = _terms(gm, node.args[0])
        weighted_terms = sum(isinstance(module_of(gm, t), WEIGHTED) for t in terms)
        if (len(terms) == 1 or isinstance(outer, nn.AvgPool2d)) and not weighted_terms:
            continue  # reads activations (or anything else): an ordinary layer
        parts = []
        for i, term in enumerate(terms):
            inner = module_of(gm, term)
            layer = compose(outer, inner) if isinstance(inner, WEIGHTED) else None
            if isinstance(inner, WEIGHTED) and layer is None:
                break  # not composable: left for the integer stage to name
            source = term.args[0] if layer is not None else term
            layer = layer if layer is not None else copy.deepcopy(outer)
            if i and isinstance(outer, WEIGHTED):  # the outer bias is added once
                layer = _with_bias(layer, _bias(layer) - _bias(outer))
            parts.append((layer, source))
        else:
            name = node.target.replace(".", "_")
            with gm.graph.inserting_before(node):
                total = None
                for i, (layer, source) in enumerate(parts):
                    gm.add_submodule(f"{name}_part{i}", layer)
                    out = gm.graph.call_module(f"{name}_part{i}", (source,))
                    total = out if total is None else gm.graph.call_function(operator.add, (total, out))
            node.replace_all_uses_with(total)
            gm.graph.erase_node(node)
            changed = True
    if changed:
        gm.graph.eliminate_dead_code()
        gm.graph.lint()
        gm.delete_all_unused_submodules()
        gm.recompile()
    return gm


def _with_bias(layer: nn.Module, bias: torch.Tensor) -> nn.Module:
    layer.bias = nn.Parameter(bias.clone())
    return layer
