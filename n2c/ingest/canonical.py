"""The canonical torch graph every model is brought into before conversion.

A canonical graph is a ``torch.fx.GraphModule`` whose nodes are only

* ``call_module`` of a type in :data:`LEAF_MODULES`,
* ``call_function`` of ``operator.add`` (residual additions),
* ``call_module`` of :class:`n2c.ann.attention.Product` with two inputs (attention's products),
* ``placeholder`` (one input) and ``output``.

Functional activations and reshapes (``F.relu``, ``torch.relu``,
``x.clamp(min=0)``, ``torch.flatten``, ``x.view(x.size(0), -1)``) are rewritten
into modules so that no ReLU is ever left analog without notice. Anything else
is an :class:`UnsupportedLayerError` naming the node, its type and what to do.
"""

from __future__ import annotations

import copy
import os
import operator
import warnings

import torch
import torch.nn.functional as F
from torch import fx, nn

from n2c.errors import UnsupportedLayerError
from n2c.ann.attention import Product
from n2c.ingest.concat import module_of, remove_concatenations
from n2c.ingest.channels import needs_shapes, selections_to_convolutions
from n2c.ingest.normalization import fold_input_affine
from n2c.ingest.vit import recognize as recognize_vit
from n2c.ann.qcfs import QCFS, SignedQCFS
from n2c.snn.modules import NEURON_TYPES, OPERATION_TYPES

# The spiking neurons are leaves too, so that a converted network's graph is canonical
# (n2c.snn.io rebuilds saved SNNs in this form).
LEAF_MODULES = (
    nn.Conv2d, nn.Linear, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxPool2d, nn.Flatten,
    nn.BatchNorm2d, nn.BatchNorm1d, nn.ReLU, QCFS, SignedQCFS, nn.Dropout, nn.Identity,
    Product, nn.Softmax, *NEURON_TYPES, *OPERATION_TYPES,
)
RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_, torch.nn.functional.relu_)
ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
FLATTEN_FUNCTIONS = (torch.flatten,)


class ClippedReLU(nn.ReLU):
    """min(max(x, 0), cap): ``nn.ReLU6``, ``F.relu6`` and ``Hardtanh(0, cap)`` in the canonical graph.
    A ReLU to every stage that handles ReLUs, whose quantizer threshold λ never exceeds ``cap``."""

    def __init__(self, cap: float = 6.0):
        super().__init__()
        self.cap = float(cap)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, 0.0, self.cap)

    def extra_repr(self) -> str:
        return f"cap={self.cap:g}"


def _clipped_relu_cap(node: fx.Node, gm: nn.Module) -> float | None:
    """The cap of a ReLU6 / Hardtanh(0, c) / clamp(x, 0, c) / F.relu6 node, else None."""
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, nn.Hardtanh) and m.min_val == 0 and m.max_val > 0:  # nn.ReLU6 is Hardtanh(0, 6)
            return float(m.max_val)
        return None
    fname = getattr(node.target, "__name__", "") if node.op == "call_function" else ""
    if fname in ("relu6", "relu6_") or node.op == "call_method" and node.target == "relu6":
        return 6.0
    if fname in ("hardtanh", "hardtanh_"):
        lo = node.kwargs.get("min_val", node.args[1] if len(node.args) > 1 else -1.0)
        hi = node.kwargs.get("max_val", node.args[2] if len(node.args) > 2 else 1.0)
        return float(hi) if lo == 0 and hi > 0 else None
    lo, hi = _clamp_bounds(node)
    return float(hi) if lo == 0 and isinstance(hi, (int, float)) and hi > 0 else None


# Functional layers as the modules that do the same, with their parameters in torch's order.
FUNCTIONAL_LAYERS = {
    "max_pool2d": (nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")),
    "avg_pool2d": (nn.AvgPool2d, ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                                  "divisor_override")),
    "adaptive_avg_pool2d": (nn.AdaptiveAvgPool2d, ("output_size",)),
    "dropout": (nn.Dropout, ("p", "training", "inplace")),
}


def _functional_layer(node: fx.Node) -> nn.Module | None:
    """``F.max_pool2d(x, 2)`` → ``nn.MaxPool2d(2)`` and the like (a dropout: the identity)."""
    name = getattr(node.target, "__name__", "") if node.op == "call_function" else ""
    if name not in FUNCTIONAL_LAYERS or any(isinstance(a, fx.Node) for a in node.args[1:]):
        return None
    cls, params = FUNCTIONAL_LAYERS[name]
    values = dict(zip(params, node.args[1:]), **node.kwargs)
    if cls is nn.Dropout:
        return nn.Identity()
    if values.get("stride") is None:
        values.pop("stride", None)  # torch's default: the kernel size
    try:
        return cls(**values)
    except TypeError:
        return None


def _is_leaf(m: nn.Module) -> bool:
    """A module of a canonical type, or a subclass that keeps its base's forward. A subclass with
    a forward of its own is traced into: timm's BatchNormAct2d is a BatchNorm2d whose forward
    also applies its activation, which a leaf would hide."""
    if type(m) in LEAF_MODULES:
        return True
    base = next((b for b in type(m).__mro__ if b in LEAF_MODULES), None)
    return base is not None and type(m).forward is base.forward


class _Tracer(fx.Tracer):
    record_stack_traces = True  # errors name the user's source line

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _is_leaf(m) or super().is_leaf_module(m, qualname)


def _functional_batch_norm(node: fx.Node, model: nn.Module) -> nn.Module | None:
    """``F.batch_norm(x, running_mean, running_var, weight, bias, False, momentum, eps)`` on a
    module's own tensors (a traced-into BatchNorm subclass) as that BatchNorm in eval mode."""
    if node.op != "call_function" or getattr(node.target, "__name__", "") != "batch_norm":
        return None
    names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
    a = dict(zip(names, node.args), **node.kwargs)
    stats = [a.get(k) for k in ("running_mean", "running_var")]
    if a.get("training") or not all(isinstance(t, fx.Node) and t.op == "get_attr" for t in stats):
        return None
    owner = model.get_submodule(stats[0].target.rpartition(".")[0])  # the traced model's module itself
    bn = (nn.BatchNorm2d if isinstance(owner, nn.BatchNorm2d) else nn.BatchNorm1d)(
        len(owner.running_mean), eps=float(a.get("eps", 1e-5)), affine=owner.weight is not None)
    bn.load_state_dict({k: v for k, v in owner.state_dict().items() if k in bn.state_dict()}, strict=False)
    return bn.eval()


def _describe(node: fx.Node, gm: nn.Module) -> str:
    """The node as the user wrote it: its layer, or its operation with the module it sits in and
    the source line that made it (torch.fx's recorded stack)."""
    if node.op == "call_module":
        return f"layer '{node.target}' ({type(gm.get_submodule(node.target)).__name__})"
    target = getattr(node.target, "__name__", str(node.target))
    where = ""
    modules = list((node.meta.get("nn_module_stack") or {}).keys())
    if modules:
        where += f" in module '{modules[-1]}'"
    frames = [line.strip() for line in (node.stack_trace or "").strip().splitlines()]
    if len(frames) >= 2 and frames[-2].startswith("File "):  # the innermost frame: 'File "f", line n, in fn' + code
        head = frames[-2].split('"')
        line = frames[-2].split(", line ")[-1].split(",")[0]
        if len(head) >= 3:
            where += f" at {os.path.basename(head[1])}:{line} `{frames[-1][:80]}`"
    return f"operation '{node.name}' ({node.op} {target}){where}"


def set_submodule(gm: nn.Module, target: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted path ``target`` of ``gm`` (the graph keeps calling it there)."""
    parent, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)


def _replace_with_module(gm: fx.GraphModule, node: fx.Node, module: nn.Module, arg: fx.Node) -> None:
    _replace_with_modules(gm, node, [module], arg)


def _replace_with_modules(gm: fx.GraphModule, node: fx.Node, modules: list[nn.Module], arg: fx.Node) -> None:
    """``node`` as a chain of modules applied to ``arg``."""
    with gm.graph.inserting_before(node):
        for i, module in enumerate(modules):
            name = f"{node.name}_module{i or ''}"
            gm.add_submodule(name, module)
            arg = gm.graph.call_module(name, (arg,))
    node.replace_all_uses_with(arg)
    gm.graph.erase_node(node)


def _clamp_bounds(node: fx.Node) -> tuple:
    """(min, max) of a ``clamp``/``clip``/``clamp_min`` node (None where not given), else (None, None)."""
    if node.op not in ("call_method", "call_function"):
        return None, None
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    lo = node.kwargs.get("min", node.args[1] if len(node.args) > 1 else None)
    if name in ("clamp", "clamp_", "clip"):
        return lo, node.kwargs.get("max", node.args[2] if len(node.args) > 2 else None)
    if name in ("clamp_min", "clamp_min_"):
        return lo, None
    return None, None


def _is_relu_clamp(node: fx.Node) -> bool:
    """``x.clamp(min=0)``, ``torch.clamp(x, min=0)``, ``x.clamp_min(0)`` without a max."""
    lo, hi = _clamp_bounds(node)
    return lo == 0 and hi is None


def _is_batch_size(node) -> bool:
    """``x.size(0)``, ``x.size()[0]``, ``x.shape[0]``, ``len(x)``: the batch size (of any tensor)."""
    if not isinstance(node, fx.Node):
        return False
    if node.op == "call_method" and node.target == "size" and node.args[1:] == (0,) and not node.kwargs:
        return True
    if node.op == "call_function" and node.target is len:
        return True
    if node.op == "call_function" and node.target is operator.getitem and node.args[1] == 0:
        of = node.args[0]
        return isinstance(of, fx.Node) and (of.op == "call_method" and of.target == "size" and len(of.args) == 1
                                            or of.op == "call_function" and of.target is getattr
                                            and of.args[1] == "shape")
    return False


def _flatten_features(node: fx.Node) -> int | None:
    """The features per sample a flatten spelling states: -1 where it leaves them to the shape
    (``torch.flatten(x, 1)``, ``x.view(x.size(0), -1)``), N for ``x.view(-1, N)`` or
    ``x.reshape(x.shape[0], N)``; None for anything that is not a flatten of each sample."""
    if node.op == "call_function" and node.target in FLATTEN_FUNCTIONS or \
            node.op == "call_method" and node.target == "flatten":
        start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
        end = node.kwargs.get("end_dim", node.args[2] if len(node.args) > 2 else -1)
        return -1 if start == 1 and end == -1 else None
    if node.op == "call_method" and node.target in ("view", "reshape") and len(node.args) > 1:
        shape = node.args[1:] if not isinstance(node.args[1], (tuple, list)) else tuple(node.args[1])
    elif node.op == "call_function" and node.target is torch.reshape and len(node.args) > 1:
        shape = tuple(node.args[1]) if isinstance(node.args[1], (tuple, list)) else ()
    else:
        return None
    if len(shape) != 2 or not isinstance(shape[1], int) or shape[1] < -1 or shape[1] == 0:
        return None
    if _is_batch_size(shape[0]):
        return shape[1]  # (batch, -1) or (batch, N)
    if shape[0] == -1 and shape[1] > 0:
        return shape[1]  # (-1, N): the batch, as long as N is each sample's size (checked after tracing)
    return None


def _checked_flatten(gm: fx.GraphModule, node: fx.Node, features: int) -> None:
    """``view(-1, N)`` is a flatten of each sample only when N is a sample's size; where the next
    layer is a Linear it must read N features (what the model was trained with)."""
    for user in node.users:
        m = module_of(gm, user)
        if features > 0 and isinstance(m, nn.Linear) and m.in_features != features:
            raise UnsupportedLayerError(f"{_describe(node, gm)} reshapes to {features} features but "
                                        f"'{user.target}' (Linear) reads {m.in_features}; write torch.flatten(x, 1)")


def _spatial_mean(node: fx.Node) -> bool | None:
    """``x.mean((2, 3))``, ``torch.mean(x, dim=[-2, -1], keepdim=True)``: global average pooling.
    Returns its keepdim, or None for any other mean."""
    if not (node.op == "call_method" and node.target == "mean" or
            node.op == "call_function" and node.target is torch.mean):
        return None
    dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    keepdim = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
    if node.kwargs.get("dtype") is not None or not isinstance(dims, (tuple, list)) or \
            sorted(dims) not in ([2, 3], [-2, -1]) or not isinstance(keepdim, bool):
        return None
    return keepdim


# Operations at the output that do not change the class (the argmax): dropped with a warning.
OUTPUT_NORMALIZERS = ("softmax", "log_softmax")


def _is_output_normalizer(node: fx.Node, gm: nn.Module) -> bool:
    """``F.log_softmax(x, dim=1)``, ``x.softmax(1)``, ``nn.LogSoftmax(1)``… whose only user is the output."""
    name = getattr(node.target, "__name__", "") if node.op == "call_function" else \
        node.target if node.op == "call_method" else ""
    m = module_of(gm, node)
    if m is not None:
        name = {nn.Softmax: "softmax", nn.LogSoftmax: "log_softmax"}.get(type(m), "")
    users = list(node.users)
    return name in OUTPUT_NORMALIZERS and len(users) == 1 and users[0].op == "output"


# Layers with no spiking form and what to do instead (the one-line error names the layer).
REPLACE_WITH = {
    "SiLU": "ReLU", "Hardswish": "ReLU (or ReLU6)", "GELU": "ReLU (GELU converts inside n2c's transformers only)",
    "Mish": "ReLU", "ELU": "ReLU", "SELU": "ReLU", "CELU": "ReLU", "Sigmoid": "ReLU",
    "Hardsigmoid": "ReLU6", "Tanh": "ReLU", "LeakyReLU": "ReLU (a LeakyReLU converts only with slope 0)",
    "PReLU": "ReLU", "Softplus": "ReLU",
    "LSTM": "a feed-forward layer: recurrent layers have no conversion in n2c",
    "GRU": "a feed-forward layer: recurrent layers have no conversion in n2c",
    "RNN": "a feed-forward layer: recurrent layers have no conversion in n2c",
}


def canonicalize(model: nn.Module, example: torch.Tensor | None = None) -> fx.GraphModule:
    """Trace ``model`` with torch.fx and rewrite it into the canonical form. Where torch.fx cannot
    trace it (control flow on shapes: timm's VGG head), ``example`` (one input batch) lets
    torch.export trace it at that input's shape instead.

    Raises :class:`UnsupportedLayerError` for every operation outside the
    vocabulary, naming it.
    """
    if isinstance(model, fx.GraphModule) and _is_canonical(model):
        return model
    kind = recognize_vit(model)
    if kind is not None:
        raise UnsupportedLayerError(
            f"a {kind} VisionTransformer (LayerNorm, GELU, softmax, class token) is not a spiking network yet; "
            "fine-tune it into n2c's spiking form first: n2c train MODEL [--arch ...] --dataset D -o vit_q.pt, "
            "then convert vit_q.pt (docs/concepts.md, Spiking attention)")
    try:
        gm = fx.GraphModule(model, _Tracer().trace(model))
    except Exception as e:  # torch.fx raises many types for data-dependent control flow
        if example is None:
            raise UnsupportedLayerError(
                f"torch.fx cannot trace {type(model).__name__}: {str(e).splitlines()[0]}; remove data-dependent "
                "control flow from forward(), pass calibration data (n2c then traces it with torch.export at "
                "that shape), or export it with torch.export") from None
        gm = _exported(model, example)
    fold_input_affine(gm, tuple(example.shape) if example is not None else None)  # (x - mean) / std first
    if example is not None:  # chunk, split, channel shuffle: 0/1 convolutions (shapes from the example)
        selections_to_convolutions(gm, example)
    elif (node := needs_shapes(gm)) is not None:
        raise UnsupportedLayerError(f"{_describe(node, gm)} splits or shuffles channels; n2c rewrites that from the "
                                    "input's shape: pass calibration data (--calib)")
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target in RELU_FUNCTIONS or \
                node.op == "call_method" and node.target in ("relu", "relu_") or _is_relu_clamp(node):
            _replace_with_module(gm, node, nn.ReLU(), node.args[0])
        elif type(module_of(gm, node)) in (nn.Identity, nn.Dropout) and len(node.args) == 1:
            node.replace_all_uses_with(node.args[0])  # no-ops in eval mode; gone, they hide nothing between layers
            gm.graph.erase_node(node)
        elif node.op == "call_function" and getattr(node.target, "__name__", "") == "_assert" and not node.users:
            gm.graph.erase_node(node)  # a shape check (timm's _assert(x.ndim == 4)): the export checks shapes
        elif (bn := _functional_batch_norm(node, model)) is not None:
            _replace_with_module(gm, node, bn, node.args[0])
        elif (layer := _functional_layer(node)) is not None:
            _replace_with_module(gm, node, layer, node.args[0])
        elif (cap := _clipped_relu_cap(node, gm)) is not None:
            _replace_with_module(gm, node, ClippedReLU(cap), node.args[0])
        elif (features := _flatten_features(node)) is not None:
            _checked_flatten(gm, node, features)
            _replace_with_module(gm, node, nn.Flatten(), node.args[0])
        elif (keepdim := _spatial_mean(node)) is not None:  # AdaptiveAvgPool2d(1) computes this mean exactly
            _replace_with_modules(gm, node, [nn.AdaptiveAvgPool2d(1)] + ([] if keepdim else [nn.Flatten()]),
                                  node.args[0])
        elif _is_output_normalizer(node, gm):
            warnings.warn(f"{_describe(node, gm)} at the output is dropped: the class (the argmax) is the same "
                          "without it", stacklevel=2)
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
        elif (m := module_of(gm, node)) is not None and isinstance(m, nn.LeakyReLU) and m.negative_slope == 0:
            set_submodule(gm, node.target, nn.ReLU())
        elif node.op == "call_method" and node.target == "add_" or \
                node.op == "call_function" and node.target is torch.Tensor.add_:
            node.op, node.target = "call_function", operator.add  # x.add_(y): the same sum
            _check_sum(node, gm)
        elif node.op == "call_function" and node.target in ADD_FUNCTIONS:
            _check_sum(node, gm)
            node.target = operator.add
    gm.graph.eliminate_dead_code()  # shape reads left by the checks removed above
    remove_concatenations(gm, lambda node: _describe(node, gm))
    gm.graph.eliminate_dead_code()
    _untie_reused_modules(gm)
    _check_canonical(gm)
    gm.recompile()
    return gm


def _exported(model: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    """``model`` traced by torch.export at ``example``'s shape, mapped back onto modules."""
    from n2c.ingest.torch_export import from_exported_program
    try:
        with torch.no_grad():
            program = torch.export.export(model, (example,))
    except Exception as e:  # torch.export raises many types too
        raise UnsupportedLayerError(f"neither torch.fx nor torch.export can trace {type(model).__name__} "
                                    f"({str(e).splitlines()[0][:160]}); remove data-dependent control flow "
                                    "from forward()") from None
    return from_exported_program(program)


def _check_sum(node: fx.Node, gm: nn.Module) -> None:
    if len(node.args) != 2 or node.kwargs or not all(isinstance(a, fx.Node) for a in node.args):
        raise UnsupportedLayerError(
            f"{_describe(node, gm)}: only the sum of two tensors (a residual connection) is supported")


def _untie_reused_modules(gm: fx.GraphModule) -> None:
    """A module called at several places (torchvision's BasicBlock calls one ``nn.ReLU`` twice) is
    several layers, not a recurrence: every call after the first gets its own copy, named
    ``<target>_call<k>``, with the same parameters (each activation then has its own threshold)."""
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        k = calls.get(node.target, 0)
        calls[node.target] = k + 1
        if k:
            name = f"{node.target}_call{k}".replace(".", "_")
            gm.add_submodule(name, copy.deepcopy(gm.get_submodule(node.target)))
            node.target = name


def _check_canonical(gm: fx.GraphModule) -> None:
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedLayerError(
            f"the model takes {len(placeholders)} inputs; n2c converts models with exactly one input tensor")
    bad = [node for node in gm.graph.nodes if node.op not in ("placeholder", "output", "get_attr")
           and not (node.op == "call_module" and isinstance(gm.get_submodule(node.target), LEAF_MODULES))
           and not (node.op == "call_function" and node.target is operator.add)]
    if bad:
        # a layer first (LayerNorm, GELU, attention): it says more than the shape reads around it
        first = next((n for n in bad if n.op == "call_module"), bad[0])
        kind = type(gm.get_submodule(first.target)).__name__ if first.op == "call_module" else \
            "".join(w.capitalize() for w in str(getattr(first.target, "__name__", first.target)).split("_"))
        hint = next((v for k, v in REPLACE_WITH.items() if k.lower() == kind.lower()), None)
        if hint:
            raise UnsupportedLayerError(f"{_describe(first, gm)} has no spiking form; replace it with {hint} and "
                                        "fine-tune (n2c train)")
        layers = sorted({type(gm.get_submodule(n.target)).__name__ for n in bad if n.op == "call_module"})
        more = f"; {len(bad) - 1} more unsupported operation(s)" + (
            f", layers of type {', '.join(layers)}" if layers else "") if len(bad) > 1 else ""
        raise UnsupportedLayerError(
            f"{_describe(first, gm)} cannot be converted to spikes{more}; supported are "
            f"{', '.join(t.__name__ for t in LEAF_MODULES)} and residual additions "
            "(replace the operation, or wrap it in one of these modules)")


def _is_canonical(gm: fx.GraphModule) -> bool:
    try:
        _check_canonical(gm)
        return True
    except UnsupportedLayerError:
        return False
