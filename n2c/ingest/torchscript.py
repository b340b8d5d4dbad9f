"""TorchScript (``torch.jit.save`` of a scripted or traced model): the ScriptModule's graph is
interpreted and rebuilt as a ``torch.fx`` GraphModule of real ``nn`` modules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import fx, nn

from n2c.errors import ModelLoadError, UnsupportedLayerError
from n2c.ingest.files import EXPORT_HINT
from n2c.ingest.files import one_line
from n2c.ingest.modules import GraphBuilder, QCFS_TYPES, make_batchnorm, make_conv, make_linear, make_pool, make_product, \
    make_qcfs


def load_torchscript(path: str) -> fx.GraphModule:
    try:
        script = torch.jit.load(path, map_location="cpu")
    except Exception as e:
        raise ModelLoadError(f"cannot load TorchScript file {path} ({one_line(e)[:160]}); the file is "
                             "corrupt or from a newer PyTorch, save it again") from None
    return ScriptImporter(script.eval()).run()  # `if self.training:` takes the inference branch


@dataclass(frozen=True)
class _ModuleRef:
    """A (sub)module value in a TorchScript graph, with its qualified name."""
    module: Any
    path: str


@dataclass(frozen=True)
class _Function:
    """A ``prim::Constant`` of function type (``F.relu`` in scripted code)."""
    name: str


@dataclass(frozen=True)
class _Shape:
    """``x.shape`` / ``x.size()`` of a tensor."""
    of: fx.Node


@dataclass(frozen=True)
class _BatchSize:
    """``x.size(0)`` of a tensor (also through NumToTensor/Int in traced graphs)."""
    of: fx.Node


# TorchScript leaf types and where their hyper-parameters live. Scripted modules
# keep them as attributes; traced modules only as constants of one aten op in
# their own graph (name -> argument index).
_SCRIPT_ATTRS = {
    "Conv2d": ("stride", "padding", "dilation", "groups", "padding_mode"),
    "AvgPool2d": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    "MaxPool2d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "AdaptiveAvgPool2d": ("output_size",),
    "Flatten": ("start_dim", "end_dim"),
    "BatchNorm2d": ("eps", "momentum"),
    "BatchNorm1d": ("eps", "momentum"),
    "Dropout": ("p",),
    "Linear": (), "ReLU": (), "QCFS": (), "SignedQCFS": (), "Identity": (),
    "Product": (), "Softmax": ("dim",),  # a Product's hyper-parameters: its "spec" buffer
}
_TWO_INPUTS = {"Product", "SpikingProduct"}  # leaves called on two tensors
_BN_ARGS = {"momentum": 6, "eps": 7}
_TRACED_OPS = {
    "Conv2d": {"aten::_convolution": {"stride": 3, "padding": 4, "dilation": 5, "transposed": 6, "groups": 8},
               "aten::conv2d": {"stride": 3, "padding": 4, "dilation": 5, "groups": 6}},
    "AvgPool2d": {"aten::avg_pool2d": {"kernel_size": 1, "stride": 2, "padding": 3, "ceil_mode": 4,
                                       "count_include_pad": 5, "divisor_override": 6}},
    "MaxPool2d": {"aten::max_pool2d": {"kernel_size": 1, "stride": 2, "padding": 3, "dilation": 4, "ceil_mode": 5}},
    "AdaptiveAvgPool2d": {"aten::adaptive_avg_pool2d": {"output_size": 1}},
    "Flatten": {"aten::flatten": {"start_dim": 1, "end_dim": 2}},
    "BatchNorm2d": {"aten::batch_norm": _BN_ARGS},
    "BatchNorm1d": {"aten::batch_norm": _BN_ARGS},
    "Dropout": {"aten::dropout": {"p": 1}, "aten::feature_dropout": {"p": 1}},
}
_SCRIPT_NOOPS = {"aten::dropout", "aten::dropout_", "aten::feature_dropout", "aten::contiguous",
                 "aten::detach", "aten::clone"}
_FUNCTIONAL_POOLS = {  # top-level functional pooling: module type and argument names in order
    "aten::avg_pool2d": ("AvgPool2d", ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                                       "divisor_override")),
    "aten::max_pool2d": ("MaxPool2d", ("kernel_size", "stride", "padding", "dilation", "ceil_mode")),
    "aten::adaptive_avg_pool2d": ("AdaptiveAvgPool2d", ("output_size",)),
}
_SCRIPT_POOL_FUNCTIONS = {  # scripted F.max_pool2d / F.adaptive_avg_pool2d are calls, not aten ops
    "__torch__.torch.nn.functional._max_pool2d": ("MaxPool2d", _FUNCTIONAL_POOLS["aten::max_pool2d"][1]
                                                  + ("return_indices",)),
    "__torch__.torch.nn.functional.adaptive_avg_pool2d": ("AdaptiveAvgPool2d", ("output_size",)),
}
_SCRIPT_RELU_FUNCTIONS = {"__torch__.torch.nn.functional.relu", "__torch__.torch.nn.functional.relu_"}
_SCRIPT_PASSTHROUGH = {"prim::NumToTensor", "aten::Int", "aten::ScalarImplicit"}


def _script_type(module: Any) -> str:
    return getattr(module, "original_name", type(module).__name__)


LeafBuilder = Callable[[Any, str], nn.Module]


class ScriptImporter:
    """Interprets a ScriptModule's forward graph into a :class:`GraphBuilder`.

    ``leaves`` adds leaf types: ``{original_name: build(script_submodule, where)}``
    returning the ``nn.Module`` to put in the graph (:mod:`n2c.snn.io` adds the
    spiking neurons this way).
    """

    def __init__(self, script: torch.jit.ScriptModule, leaves: dict[str, LeafBuilder] | None = None):
        self.script = script
        self.leaves = dict(leaves or {})
        self.builder = GraphBuilder()
        self._built: dict[str, str] = {}  # submodule path -> registered target

    def run(self) -> fx.GraphModule:
        x = self.builder.input()
        out = self._call(_ModuleRef(self.script, ""), "forward", [x])
        if not isinstance(out, fx.Node):
            raise UnsupportedLayerError(
                f"the TorchScript model returns {type(out).__name__}, not one tensor; {EXPORT_HINT}")
        return self.builder.finish(out, _script_type(self.script))

    # --- graph interpretation

    def _call(self, ref: _ModuleRef, method: str, args: list) -> Any:
        """Run ``ref.module.<method>`` symbolically: leaf modules become one fx node."""
        kind = _script_type(ref.module)
        if kind in _SCRIPT_ATTRS or kind in self.leaves:
            if not re.fullmatch(r"forward\d*", method):  # a traced module called twice has forward1
                raise self._unsupported(f"method '{method}' of {kind}", ref)
            return self._call_leaf(ref, kind, args)
        try:
            graph = ref.module._c._get_method(method).graph
        except RuntimeError:
            raise self._unsupported(f"method '{method}'", ref) from None
        inputs = list(graph.inputs())
        if len(inputs) - 1 != len(args):
            raise self._unsupported(f"call of {kind}.{method} with {len(args)} arguments", ref)
        env: dict[int, Any] = {inputs[0].unique(): ref}
        env.update({v.unique(): a for v, a in zip(inputs[1:], args)})
        for node in graph.nodes():
            self._run_node(node, env, ref)
        outputs = [env[v.unique()] for v in graph.outputs()]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def _run_node(self, node, env: dict, ref: _ModuleRef) -> None:
        kind = node.kind()
        ins = [env.get(v.unique()) for v in node.inputs()]
        outs = list(node.outputs())
        handler = self._HANDLERS.get(kind)
        if handler is not None:
            result = handler(self, node, ins, ref)
        elif kind == "prim::If":
            result = self._if(node, ins[0], env, ref)
        elif kind in _SCRIPT_PASSTHROUGH:
            result = ins[0]
        elif kind in _SCRIPT_NOOPS:
            result = self._tensor(ins[0], node, ref)
        elif kind == "prim::Loop":
            raise self._unsupported("a loop (prim::Loop)", ref)
        elif _feeds_branch(node):
            raise self._unsupported(f"data-dependent control flow (an if on the result of {kind})", ref)
        else:
            raise self._unsupported(f"op '{kind}'", ref)
        if len(outs) == 1:
            env[outs[0].unique()] = result
        else:
            for v, r in zip(outs, result):
                env[v.unique()] = r

    def _constant(self, node, ins, ref):
        out = node.output()
        if out.type().kind() == "FunctionType":
            return _Function(str(out.type()))  # e.g. __torch__.torch.nn.functional.relu
        return out.toIValue()

    def _get_attr(self, node, ins, ref):
        owner = ins[0]
        if not isinstance(owner, _ModuleRef):
            raise self._unsupported("attribute access on a non-module value", ref)
        name = node.s("name")
        value = getattr(owner.module, name)
        if isinstance(value, torch.jit.ScriptModule):
            return _ModuleRef(value, f"{owner.path}.{name}" if owner.path else name)
        return value

    def _call_method(self, node, ins, ref):
        target, args = ins[0], ins[1:]
        if not isinstance(target, _ModuleRef):
            raise self._unsupported("method call on a non-module value", ref)
        return self._call(target, node.s("name"), args)

    def _call_function(self, node, ins, ref):
        fn = ins[0]
        name = fn.name if isinstance(fn, _Function) else "?"
        if name in _SCRIPT_RELU_FUNCTIONS:
            return self._emit(nn.ReLU(), "relu", ins[1], node, ref)
        if name in _SCRIPT_POOL_FUNCTIONS:
            return self._pool(_SCRIPT_POOL_FUNCTIONS[name], ins[1:], node, ref)
        raise self._unsupported(f"function call '{name}'", ref)

    def _if(self, node, cond: Any, env: dict, ref: _ModuleRef) -> Any:
        """An ``if`` on a known flag (a bool attribute or constant) runs the taken branch."""
        if not isinstance(cond, bool):
            raise self._unsupported("data-dependent control flow (prim::If)", ref)
        block = list(node.blocks())[0 if cond else 1]
        for inner in block.nodes():
            self._run_node(inner, env, ref)
        results = tuple(env[v.unique()] for v in block.outputs())
        return results[0] if len(results) == 1 else results

    def _list(self, node, ins, ref):
        return list(ins)

    def _tuple(self, node, ins, ref):
        return tuple(ins)

    def _unpack(self, node, ins, ref):
        return tuple(ins[0])

    def _index(self, node, ins, ref):
        return ins[0][ins[1]]

    def _size(self, node, ins, ref):
        if len(ins) == 1 and isinstance(ins[0], fx.Node):
            return _Shape(ins[0])
        if len(ins) == 2 and ins[1] == 0 and isinstance(ins[0], fx.Node):
            return _BatchSize(ins[0])
        raise self._unsupported("aten::size other than x.size(0)", ref)

    def _getitem(self, node, ins, ref):
        seq, index = ins[0], ins[1]
        if isinstance(seq, _Shape):
            if index == 0:
                return _BatchSize(seq.of)
            raise self._unsupported("x.shape[i] other than x.shape[0]", ref)
        if isinstance(seq, (list, tuple)):
            return seq[index]
        raise self._unsupported("indexing a tensor", ref)

    def _aten_pool(self, node, ins, ref):
        return self._pool(_FUNCTIONAL_POOLS[node.kind()], ins, node, ref)

    def _pool(self, signature: tuple[str, tuple[str, ...]], ins: list, node, ref) -> fx.Node:
        """``F.avg_pool2d`` / ``F.max_pool2d`` / ``F.adaptive_avg_pool2d`` with constant arguments."""
        kind, names = signature
        hp = dict(zip(names, ins[1:]))
        if not all(_is_literal(v) for v in hp.values()):
            raise self._unsupported(f"functional {kind} with arguments computed at run time", ref)
        return self._emit(make_pool(kind, hp), kind.lower(), ins[0], node, ref)

    def _relu(self, node, ins, ref):
        return self._emit(nn.ReLU(), "relu", ins[0], node, ref)

    def _clamp(self, node, ins, ref):
        lo, hi = (ins[1:] + [None, None])[:2]
        if node.kind().startswith("aten::clamp_min"):
            hi = None
        if lo == 0 and hi is None:
            return self._emit(nn.ReLU(), "relu", ins[0], node, ref)
        raise self._unsupported(f"{node.kind()}(min={lo}, max={hi}) (only clamp(min=0), a ReLU, converts)", ref)

    def _flatten(self, node, ins, ref):
        if ins[1:] == [1, -1]:
            return self._emit(nn.Flatten(), "flatten", ins[0], node, ref)
        raise self._unsupported(f"flatten(start_dim={ins[1]}, end_dim={ins[2]}) (only flatten(x, 1) converts)",
                                ref)

    def _view(self, node, ins, ref):
        x, shape = ins[0], ins[1]
        if isinstance(shape, (list, tuple)) and len(shape) == 2 and shape[1] == -1 \
                and isinstance(shape[0], _BatchSize) and shape[0].of is x:
            return self._emit(nn.Flatten(), "flatten", x, node, ref)
        raise self._unsupported(f"{node.kind()} to a shape other than (x.size(0), -1)", ref)

    def _mean(self, node, ins, ref):
        """``x.mean((2, 3))``: global average pooling, which AdaptiveAvgPool2d((1, 1)) computes exactly."""
        dims, keepdim = ins[1], ins[2] if len(ins) > 2 else False
        dtype = ins[3] if len(ins) > 3 else None
        if not isinstance(dims, (list, tuple)) or sorted(dims) not in ([2, 3], [-2, -1]) or dtype is not None:
            raise self._unsupported(f"aten::mean over dims {dims} (only the spatial mean over (2, 3) converts)",
                                    ref)
        pooled = self._emit(nn.AdaptiveAvgPool2d(1), "avgpool", ins[0], node, ref)
        return pooled if keepdim else self._emit(nn.Flatten(), "flatten", pooled, node, ref)

    def _add(self, node, ins, ref):
        a, b = ins[0], ins[1]
        alpha = ins[2] if len(ins) > 2 else 1
        if isinstance(a, fx.Node) and isinstance(b, fx.Node) and alpha == 1:
            return self.builder.add(a, b)
        raise self._unsupported(f"{node.kind()} other than the sum of two tensors (a residual connection)", ref)

    _HANDLERS: dict[str, Callable] = {
        "prim::Constant": _constant, "prim::GetAttr": _get_attr, "prim::CallMethod": _call_method,
        "prim::CallFunction": _call_function, "prim::ListConstruct": _list, "prim::TupleConstruct": _tuple,
        "prim::TupleUnpack": _unpack, "prim::ListUnpack": _unpack, "prim::TupleIndex": _index,
        "aten::size": _size, "aten::__getitem__": _getitem, "aten::relu": _relu, "aten::relu_": _relu,
        "aten::avg_pool2d": _aten_pool, "aten::max_pool2d": _aten_pool, "aten::adaptive_avg_pool2d": _aten_pool,
        "aten::clamp": _clamp, "aten::clamp_": _clamp, "aten::clip": _clamp,
        "aten::clamp_min": _clamp, "aten::clamp_min_": _clamp, "aten::flatten": _flatten,
        "aten::view": _view, "aten::reshape": _view, "aten::add": _add, "aten::add_": _add,
        "aten::mean": _mean,
    }

    # --- leaves

    def _call_leaf(self, ref: _ModuleRef, kind: str, args: list) -> Any:
        if not args and kind == "Identity":
            return None  # traced Identity: the tracer already wired its input through
        arity = 2 if kind in _TWO_INPUTS else 1
        if len(args) != arity or not all(isinstance(a, fx.Node) for a in args):
            raise self._unsupported(f"call of {kind} with arguments other than {arity} tensor(s)", ref)
        if ref.path in self._built:
            return self.builder.call_again(self._built[ref.path], *args)
        node = self.builder.module(ref.path or kind.lower(), self._leaf_module(ref, kind), *args)
        self._built[ref.path] = node.target
        return node

    def _leaf_module(self, ref: _ModuleRef, kind: str) -> nn.Module:
        sub, where = ref.module, f"layer '{ref.path}' ({kind})"
        if kind in self.leaves:
            return self.leaves[kind](sub, where)
        tensors = {**dict(sub.named_parameters(recurse=False)), **dict(sub.named_buffers(recurse=False))}
        hp = self._hyper_parameters(sub, kind, where)
        if kind == "Conv2d":
            if hp.pop("transposed", False):
                raise UnsupportedLayerError(f"{where}: transposed convolution cannot be converted")
            return make_conv(tensors.get("weight"), tensors.get("bias"), **hp, where=where)
        if kind == "Linear":
            return make_linear(tensors.get("weight"), tensors.get("bias"), where=where)
        if kind.startswith("BatchNorm"):
            return make_batchnorm(4 if kind == "BatchNorm2d" else 2, tensors.get("weight"), tensors.get("bias"),
                                   tensors.get("running_mean"), tensors.get("running_var"),
                                   tensors.get("num_batches_tracked"), hp["eps"], hp["momentum"], where)
        if kind in QCFS_TYPES:
            return make_qcfs(tensors.get("lam"), tensors.get("levels"), where, kind)
        if kind in ("AvgPool2d", "MaxPool2d", "AdaptiveAvgPool2d"):
            return make_pool(kind, hp)
        if kind == "Flatten":
            return nn.Flatten(hp["start_dim"], hp["end_dim"])
        if kind == "Dropout":
            return nn.Dropout(hp.get("p", 0.5))
        if kind == "Product":  # its spec buffer, or (files before it) a scripted module's attributes
            return make_product({n: getattr(sub, n) for n in ("mode", "heads", "scale") if hasattr(sub, n)}, where,
                                tensors.get("spec"))
        if kind == "Softmax":
            return nn.Softmax(dim=hp["dim"])
        return nn.ReLU() if kind == "ReLU" else nn.Identity()

    def _hyper_parameters(self, sub, kind: str, where: str) -> dict:
        names = _SCRIPT_ATTRS[kind]
        if all(hasattr(sub, n) for n in names):
            return {n: getattr(sub, n) for n in names}
        ops = _TRACED_OPS.get(kind)
        if not ops:
            return {}
        graph = sub.graph
        data_input = list(graph.inputs())[1]
        for node in graph.nodes():
            if node.kind() in ops:
                if node.inputsAt(0).unique() != data_input.unique():
                    raise UnsupportedLayerError(
                        f"{where}: its traced graph transforms the input before {node.kind()} "
                        f"(e.g. a padding_mode other than 'zeros'); {EXPORT_HINT}")
                inputs = list(node.inputs())
                return {n: _jit_constant(inputs[i], where) for n, i in ops[node.kind()].items()}
        if kind == "Dropout":
            return {}
        raise UnsupportedLayerError(f"{where}: cannot read its hyper-parameters from the traced graph "
                                    f"(no {' or '.join(ops)}); {EXPORT_HINT}")

    # --- helpers

    def _emit(self, module: nn.Module, name: str, x: Any, node, ref: _ModuleRef) -> fx.Node:
        x = self._tensor(x, node, ref)
        prefix = ref.path.replace(".", "_") + "_" if ref.path else ""
        return self.builder.module(prefix + name, module, x)

    def _tensor(self, x: Any, node, ref: _ModuleRef) -> fx.Node:
        if isinstance(x, fx.Node):
            return x
        what = "a parameter or constant" if isinstance(x, torch.Tensor) else type(x).__name__
        raise self._unsupported(f"{node.kind()} applied to {what} instead of the activations", ref)

    def _unsupported(self, what: str, ref: _ModuleRef) -> UnsupportedLayerError:
        where = f"'{ref.path}' ({_script_type(ref.module)})" if ref.path else \
            f"the top level of {_script_type(ref.module)}"
        return UnsupportedLayerError(f"TorchScript {what} in {where} is not supported; {EXPORT_HINT}")


def _is_literal(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_literal(v) for v in value)
    return value is None or isinstance(value, (bool, int, float))


def _feeds_branch(node, depth: int = 4) -> bool:
    """Whether ``node``'s result decides a ``prim::If`` within a few steps (``if x.sum() > 0``)."""
    if depth == 0:
        return False
    users = [use.user for out in node.outputs() for use in out.uses()]
    return any(u.kind() == "prim::If" or _feeds_branch(u, depth - 1) for u in users)


def _jit_constant(value, where: str) -> Any:
    """The Python value of a constant (or list of constants) in a TorchScript graph."""
    node = value.node()
    if node.kind() == "prim::Constant":
        return value.toIValue()
    if node.kind() == "prim::ListConstruct":
        return [_jit_constant(v, where) for v in node.inputs()]
    raise UnsupportedLayerError(
        f"{where}: a hyper-parameter is computed at run time ({node.kind()}); {EXPORT_HINT}")
