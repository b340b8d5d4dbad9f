"""Real ``nn`` modules rebuilt from saved tensors and hyper-parameters (shared by the TorchScript
and torch.export importers), and the fx graph builder they are added to.
"""

from __future__ import annotations

import operator
import re
from typing import Any

import torch
from torch import fx, nn

from n2c.ann.attention import Product
from n2c.products import MODES
from n2c.ann.qcfs import QCFS, SignedQCFS
from n2c.errors import UnsupportedLayerError
from n2c.ingest.files import EXPORT_HINT
from n2c.ingest.files import one_line


class GraphBuilder:
    """Accumulates a canonical fx graph: leaf modules, operator.add, one input."""

    def __init__(self) -> None:
        self.root = nn.Module()
        self.graph = fx.Graph()
        self._targets: dict[str, nn.Module] = {}

    def input(self) -> fx.Node:
        return self.graph.placeholder("x")

    def module(self, name: str, module: nn.Module, *args: fx.Node) -> fx.Node:
        """Register ``module`` under a free name derived from ``name`` and call it on ``args``."""
        name = self._free_name(name)
        self._targets[name] = module
        parent = self.root
        *parents, leaf = name.split(".")
        for part in parents:
            if not hasattr(parent, part):
                parent.add_module(part, nn.Module())
            parent = getattr(parent, part)
        parent.add_module(leaf, module)
        return self.graph.call_module(name, args)

    def call_again(self, name: str, *args: fx.Node) -> fx.Node:
        """Call an already registered module again (a module used twice shares its weights)."""
        return self.graph.call_module(name, args)

    def add(self, a: fx.Node, b: fx.Node) -> fx.Node:
        return self.graph.call_function(operator.add, (a, b))

    def finish(self, out: fx.Node, class_name: str) -> fx.GraphModule:
        self.graph.output(out)
        class_name = re.sub(r"\W", "_", class_name) or "GraphModule"
        gm = fx.GraphModule(self.root, self.graph, class_name=class_name)
        return gm.eval()

    def _free_name(self, name: str) -> str:
        name = re.sub(r"[^\w.]", "_", name).strip(".") or "layer"
        candidate, i = name, 0
        while self._taken(candidate):
            i += 1
            candidate = f"{name}_{i}"
        return candidate

    def _taken(self, name: str) -> bool:
        return any(t == name or t.startswith(name + ".") or name.startswith(t + ".") for t in self._targets)


def _adopt(module: nn.Module, tensors: dict[str, torch.Tensor | None], where: str) -> nn.Module:
    """Replace ``module``'s own parameters and buffers by ``tensors`` (exact values and dtypes)."""
    expected = {k for k, v in module._parameters.items() if v is not None} | \
               {k for k, v in module._buffers.items() if v is not None}
    given = {k for k, v in tensors.items() if v is not None}
    if expected != given:
        raise UnsupportedLayerError(
            f"{where}: a {type(module).__name__} needs tensors {sorted(expected)} but the file has "
            f"{sorted(given)}; {EXPORT_HINT}")
    for k in expected:
        t = tensors[k].detach().clone()
        if k in module._parameters:
            module._parameters[k] = nn.Parameter(t, requires_grad=t.is_floating_point())
        else:
            module._buffers[k] = t
    return module


def _pair(v: Any) -> Any:
    return tuple(v) if isinstance(v, (list, tuple)) else v


def make_conv(w, b, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros", where="") -> nn.Conv2d:
    if w.dim() != 4:
        raise UnsupportedLayerError(f"{where}: only 2-d convolutions are supported (weight has shape "
                                    f"{tuple(w.shape)}); {EXPORT_HINT}")
    conv = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=_pair(stride),
                     padding=padding if isinstance(padding, str) else _pair(padding),
                     dilation=_pair(dilation), groups=groups, bias=b is not None,
                     padding_mode=padding_mode, device="meta")
    return _adopt(conv, {"weight": w, "bias": b}, where)


def make_linear(w, b, where="") -> nn.Linear:
    lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device="meta")
    return _adopt(lin, {"weight": w, "bias": b}, where)


def make_batchnorm(rank: int, weight, bias, mean, var, tracked=None, eps=1e-5, momentum=0.1,
                    where="") -> nn.Module:
    ref = weight if weight is not None else mean
    if ref is None:
        raise UnsupportedLayerError(f"{where}: batch norm without running statistics or affine weights "
                                    "cannot be converted; train with track_running_stats=True")
    cls = nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d
    bn = cls(ref.shape[0], eps=eps, momentum=momentum, affine=weight is not None,
             track_running_stats=mean is not None, device="meta")
    if mean is not None and tracked is None:
        tracked = torch.tensor(0, dtype=torch.long)
    tensors = {"weight": weight, "bias": bias, "running_mean": mean, "running_var": var,
               "num_batches_tracked": tracked}
    return _adopt(bn, tensors, where)
QCFS_TYPES = {"QCFS": QCFS, "SignedQCFS": SignedQCFS}


def make_qcfs(lam, levels, where="", kind: str = "QCFS") -> QCFS:
    """A QCFS (or SignedQCFS) with exactly the saved ``lam`` (scalar or per-channel) and ``levels``."""
    if lam is None or levels is None:
        raise UnsupportedLayerError(f"{where}: {kind} needs its 'lam' parameter and 'levels' buffer, the file "
                                    f"lacks them; {EXPORT_HINT}")
    if levels.numel() != 1 or lam.numel() == 0 or not lam.is_floating_point():
        raise UnsupportedLayerError(f"{where}: {kind} has 'levels' of shape {tuple(levels.shape)} and 'lam' of "
                                    f"shape {tuple(lam.shape)} and dtype {lam.dtype}; n2c needs one integer "
                                    "level count and floating-point thresholds")
    try:
        q = QCFS_TYPES[kind](levels=int(levels), lam=lam.detach().float())
    except ValueError as e:
        raise UnsupportedLayerError(f"{where}: {one_line(e)}; train it again (λ > 0, levels >= 1)") from None
    return _adopt(q, {"lam": lam, "levels": levels}, where)


def make_product(hp: dict, where: str = "", spec: torch.Tensor | None = None) -> Product:
    """A product of attention (``n2c.products``) from its saved ``spec`` buffer (mode index, heads,
    scale), or, without it, from attributes mode, heads and scale in ``hp``."""
    try:
        if spec is not None:
            if spec.shape != (3,) or not 0 <= int(spec[0]) < len(MODES):
                raise ValueError(f"spec buffer {tuple(spec.shape)} is not (mode, heads, scale)")
            return Product(MODES[int(spec[0])], int(spec[1]), float(spec[2]))
        return Product(str(hp["mode"]), int(hp["heads"]), float(hp["scale"]))
    except (KeyError, TypeError, ValueError) as e:
        raise UnsupportedLayerError(f"{where}: {one_line(e)}; the file's Product has no valid mode, heads and "
                                    f"scale; {EXPORT_HINT}") from None


def make_pool(kind: str, hp: dict) -> nn.Module:
    """A pooling module from hyper-parameters named as in ``nn`` (an empty stride means the kernel size)."""
    stride = _pair(hp.get("stride")) or None
    if kind == "MaxPool2d":
        if hp.get("return_indices"):
            raise UnsupportedLayerError("MaxPool2d(return_indices=True) cannot be converted; drop return_indices")
        return nn.MaxPool2d(_pair(hp["kernel_size"]), stride, _pair(hp.get("padding", 0)),
                            _pair(hp.get("dilation", 1)), ceil_mode=bool(hp.get("ceil_mode", False)))
    if kind == "AvgPool2d":
        return nn.AvgPool2d(_pair(hp["kernel_size"]), stride, _pair(hp.get("padding", 0)),
                            ceil_mode=bool(hp.get("ceil_mode", False)),
                            count_include_pad=bool(hp.get("count_include_pad", True)),
                            divisor_override=hp.get("divisor_override"))
    return nn.AdaptiveAvgPool2d(_pair(hp["output_size"]))
