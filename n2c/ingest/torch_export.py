"""torch.export (``torch.export.save``, ``.pt2``): the ATen graph of the ExportedProgram mapped
back onto modules; QCFS and SignedQCFS, which export decomposes into arithmetic, are
recovered from ``nn_module_stack``. No member of the archive is unpickled without trust.
"""

from __future__ import annotations

import io
import math
import operator
import pickle
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import fx, nn

from n2c.errors import ModelLoadError, UnsupportedLayerError
from n2c.ingest.files import ARCH_HINT, EXPORT_HINT
from n2c.ingest.files import one_line, quiet
from n2c.ingest.modules import GraphBuilder, QCFS_TYPES, make_batchnorm, make_conv, make_linear, make_pool, make_qcfs
from n2c.ingest.state_dict import pickled_class


def load_exported(path: str, trust_pickle: bool) -> fx.GraphModule:
    try:
        with quiet("torch._export.serde.serialize"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "This version of file is deprecated"
            ep = torch.export.load(path if trust_pickle else _vetted_archive(path))
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"cannot load torch.export file {path} ({one_line(e)[:160]}); the file is "
                             "corrupt or from another PyTorch version, export it again") from None
    return from_exported_program(ep)


def from_exported_program(ep: torch.export.ExportedProgram) -> fx.GraphModule:
    """An ExportedProgram's ATen graph as a graph of modules (QCFS recovered)."""
    return _ExportImporter(ep).run()


# The members torch.export.load (torch 2.3) reads, by role. It unpickles the state dict and the
# constants with weights_only=False under either name, so an untrusted file is never handed to it:
# _vetted_archive loads those tensors the safe way and writes a fresh archive of them.
_PROGRAM = "serialized_exported_program.json"
_PICKLED = {"state_dict": ("serialized_state_dict.pt", "serialized_state_dict.json"),
            "constants": ("serialized_constants.pt", "serialized_constants.json")}
MAX_PROGRAM_BYTES = 256 * 2 ** 20  # the JSON graph; tensors are counted by torch.load


def _vetted_archive(path: str) -> io.BytesIO:
    """A copy of the .pt2 archive in memory holding only the version, the JSON program and the
    state dict and constants re-saved from a ``weights_only=True`` load (plain tensors): nothing
    from the file is unpickled with arbitrary objects, whatever its members are called."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            names = [i.filename for i in infos]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ModelLoadError(_export_refusal(path, f"has the member {twice[0]} twice", False))
            by_name = {i.filename: i for i in infos}
            if "version" not in by_name or _PROGRAM not in by_name:
                raise ModelLoadError(_export_refusal(path, f"has no {'version' if 'version' not in by_name else _PROGRAM}"
                                                     " member", False))
            if by_name[_PROGRAM].file_size > MAX_PROGRAM_BYTES:
                raise ModelLoadError(_export_refusal(path, f"declares a {by_name[_PROGRAM].file_size}-byte program "
                                                     f"(limit {MAX_PROGRAM_BYTES})", False))
            kept = {"version": z.read("version"), _PROGRAM: z.read(_PROGRAM)}
            for role, members in _PICKLED.items():
                present = [m for m in members if m in by_name]
                if len(present) != 1:
                    raise ModelLoadError(_export_refusal(
                        path, f"has {'no' if not present else 'two'} {role} member{'s' if present else ''} "
                        f"({' or '.join(members)})", False))
                kept[members[0]] = _resaved(path, present[0], z.read(present[0]))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error) as e:
        raise ModelLoadError(_export_refusal(path, f"is a damaged archive ({one_line(e)[:100]})", False)) from None
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in kept.items():
            z.writestr(name, data)
    out.seek(0)
    return out


def _resaved(path: str, name: str, data: bytes) -> bytes:
    """``data`` loaded with ``weights_only=True`` and saved again (torch.save of plain tensors)."""
    if not data:
        return b""
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        cls = pickled_class(str(e))  # else a pickle weights_only cannot read (unsupported opcodes)
        what = f"pickled Python objects ({cls})" if cls else "a pickle that only full unpickling can read"
        raise ModelLoadError(_export_refusal(path, f"embeds {what} in {name}", True)) from None
    except Exception as e:
        raise ModelLoadError(_export_refusal(path, f"has an unreadable {name} ({one_line(e)[:100]})", False)) from None
    if not isinstance(obj, dict):
        raise ModelLoadError(_export_refusal(path, f"has a {type(obj).__name__} in {name}, not a dict of tensors",
                                             False))
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _export_refusal(path: str, problem: str, pickled: bool) -> str:
    if pickled:
        return (f"{path} {problem}; loading it runs arbitrary code. Pass --trust-pickle if you trust its source, "
                f"or save a state_dict and pass {ARCH_HINT}")
    return f"{path} {problem}; the file is corrupt, export the model again"


@dataclass(frozen=True)
class _Const:
    """A lifted parameter, buffer or constant of the ExportedProgram."""
    tensor: torch.Tensor
    name: str
    transposed: bool = False


@dataclass(frozen=True)
class _SymSize:
    """A symbolic size read from the graph (dynamic batch)."""
    node: fx.Node
_EXPORT_NOOPS = {"aten::dropout", "aten::clone", "aten::detach", "aten::alias", "aten::contiguous",
                 "aten::lift_fresh_copy"}


def _aten_name(node: fx.Node) -> str:
    schema = getattr(node.target, "_schema", None)
    if schema is not None:
        return schema.name
    return getattr(node.target, "__name__", str(node.target))


def _bind(node: fx.Node) -> dict[str, Any]:
    """An ATen call's arguments by schema name, defaults filled in."""
    bound = {}
    for i, arg in enumerate(node.target._schema.arguments):
        if i < len(node.args):
            bound[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            bound[arg.name] = node.kwargs[arg.name]
        else:
            bound[arg.name] = arg.default_value if arg.has_default_value() else None
    return bound


def _shape(node: Any) -> tuple | None:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def _module_stack(node: fx.Node) -> list[tuple[str, str]]:
    """``[(path, qualified type name), ...]`` from outermost to innermost."""
    stack = node.meta.get("nn_module_stack") or {}
    entries = []
    for path, typ in stack.values():
        name = typ if isinstance(typ, str) else f"{typ.__module__}.{typ.__qualname__}"
        entries.append((path, name))
    return entries


def _qcfs_path(node: fx.Node) -> tuple[str, str] | None:
    """``(path, "QCFS" or "SignedQCFS")`` of the innermost quantizer module ``node`` belongs to.

    Export decomposes both into the same arithmetic, apart from the clamp's lower
    bound (0 or -levels); the module stack tells them apart.
    """
    for path, typ in reversed(_module_stack(node)):
        kind = typ.rsplit(".", 1)[-1]
        if kind in QCFS_TYPES:
            return path, kind
    return None


class _ExportImporter:
    """Maps an ExportedProgram's ATen graph back onto canonical modules."""

    def __init__(self, ep: torch.export.ExportedProgram):
        self.ep = ep
        self.builder = GraphBuilder()
        self.env: dict[fx.Node, Any] = {}
        sig = ep.graph_signature
        self._lifted = {**sig.inputs_to_parameters, **sig.inputs_to_buffers,
                        **sig.inputs_to_lifted_tensor_constants}
        self._user_inputs = list(sig.user_inputs)

    def run(self) -> fx.GraphModule:
        if len(self._user_inputs) != 1:
            raise UnsupportedLayerError(f"the exported model takes {len(self._user_inputs)} inputs; "
                                        "n2c converts models with exactly one input tensor")
        graph = self.ep.graph
        needed = self._needed(graph)
        groups = self._qcfs_groups(graph, needed)
        out = None
        for node in graph.nodes:
            if node not in needed or node in self.env:
                continue
            if node in groups:
                self._qcfs(*groups[node])
            elif node.op == "placeholder":
                self.env[node] = self._placeholder(node)
            elif node.op == "call_function":
                self.env[node] = self._op(node)
            elif node.op == "output":
                out = self._output(node)
            else:
                raise self._unsupported(node, f"{node.op} '{node.target}'")
        return self.builder.finish(out, self._model_name(graph))

    # --- structure

    @staticmethod
    def _needed(graph: fx.Graph) -> set[fx.Node]:
        """Nodes the output depends on (drops asserts and unused tuple items)."""
        output = next(n for n in reversed(graph.nodes) if n.op == "output")
        needed, todo = set(), [output]
        while todo:
            n = todo.pop()
            if n not in needed:
                needed.add(n)
                todo.extend(n.all_input_nodes)
        return needed

    @staticmethod
    def _qcfs_groups(graph: fx.Graph, needed: set) -> dict[fx.Node, tuple[str, str, list[fx.Node]]]:
        """Contiguous runs of nodes inside one QCFS/SignedQCFS module, keyed by each member node."""
        groups: dict[fx.Node, tuple[str, str, list[fx.Node]]] = {}
        run: list[fx.Node] = []
        run_key = None
        for node in graph.nodes:
            key = _qcfs_path(node) if node.op == "call_function" else None
            if key is None and node.op == "call_function" and node not in needed:
                continue  # an assert between QCFS ops does not end the run
            if key != run_key:
                run, run_key = [], key
            if key is not None:
                run.append(node)
                groups[node] = (*key, run)
        return groups

    def _model_name(self, graph: fx.Graph) -> str:
        for node in graph.nodes:
            stack = _module_stack(node)
            if stack:
                return stack[0][1].rsplit(".", 1)[-1]
        return "ExportedModel"

    def _placeholder(self, node: fx.Node) -> Any:
        if node.name in self._user_inputs:
            return self.builder.input()
        name = self._lifted.get(node.name)
        tensor = self._state(name)
        if tensor is None:
            raise self._unsupported(node, f"input '{node.name}' that is neither a parameter nor a buffer")
        return _Const(tensor, name)

    def _state(self, name: str | None) -> torch.Tensor | None:
        if name is None:
            return None
        if name in self.ep.state_dict:
            return self.ep.state_dict[name]
        return self.ep.constants.get(name)

    def _output(self, node: fx.Node) -> fx.Node:
        results = node.args[0]
        if not isinstance(results, (tuple, list)) or len(results) != 1 or not isinstance(
                self.env.get(results[0]), fx.Node):
            raise UnsupportedLayerError("the exported model must return exactly one tensor; " + EXPORT_HINT)
        return self.env[results[0]]

    def _qcfs(self, path: str, kind: str, nodes: list[fx.Node]) -> None:
        """Replace a QCFS/SignedQCFS module's decomposed ops by one module carrying its lam and levels."""
        inside = set(nodes)
        sources = {a for n in nodes for a in n.all_input_nodes if a not in inside}
        data = [a for a in sources if isinstance(self.env.get(a), fx.Node)]
        outputs = [n for n in nodes if any(u not in inside for u in n.users)]
        where = f"{kind} '{path}'"
        if len(data) != 1 or len(outputs) != 1:
            raise UnsupportedLayerError(f"{where}: its exported ops have {len(data)} inputs and {len(outputs)} "
                                        f"outputs instead of one each; {EXPORT_HINT}")
        q = make_qcfs(self._state(f"{path}.lam"), self._state(f"{path}.levels"), where, kind)
        result = self.builder.module(path, q, self.env[data[0]])
        for n in nodes:
            self.env[n] = None
        self.env[outputs[0]] = result

    # --- ops

    def _op(self, node: fx.Node) -> Any:
        if node.target is operator.getitem:
            return self._getitem(node)
        name = _aten_name(node)
        handler = self._HANDLERS.get(name)
        if handler is not None:
            return handler(self, node, _bind(node))
        if name in _EXPORT_NOOPS:
            return self._data(node, node.args[0])
        if "batch_norm" in name:
            raise self._unsupported(node, f"op '{name}' (batch norm in training mode: call model.eval() "
                                          "before torch.export.export)")
        raise self._unsupported(node, f"op '{name}'")

    def _getitem(self, node: fx.Node) -> Any:
        seq, index = self.env.get(node.args[0]), node.args[1]
        if isinstance(seq, tuple) and seq[index] is not None:
            return seq[index]
        raise self._unsupported(node, f"use of output {index} of '{node.args[0].name}'")

    def _conv(self, node, a):
        if a.get("transposed"):
            raise self._unsupported(node, "transposed convolution")
        w, b = self._param(node, a["weight"]), self._param(node, a["bias"], optional=True)
        conv = make_conv(w, b, a["stride"], a["padding"], a["dilation"], a["groups"], where=self._where(node))
        return self._emit(node, "Conv2d", conv, a["input"])

    def _linear(self, node, a):
        w, b = self._param(node, a["weight"]), self._param(node, a["bias"], optional=True)
        return self._emit(node, "Linear", make_linear(w, b, self._where(node)), a["input"])

    def _matmul(self, node, a):
        """``addmm(bias, x, t(W))`` or ``mm(x, t(W))``: nn.Linear as export writes it."""
        weight = self.env.get(a["mat2"])
        scaled = a.get("beta", 1) != 1 or a.get("alpha", 1) != 1
        if not isinstance(weight, _Const) or not weight.transposed or scaled:
            raise self._unsupported(node, f"'{_aten_name(node)}' other than a Linear layer (x @ W.T + b)")
        b = self._param(node, a["self"]) if "beta" in a else None
        lin = make_linear(weight.tensor, b, self._where(node))
        return self._emit(node, "Linear", lin, a["mat1"] if "mat1" in a else a["self"])

    def _transpose(self, node, a):
        """``W.t()`` of a 2-d weight, as export writes nn.Linear; consumed by addmm/mm."""
        const, name = self.env.get(a["self"]), _aten_name(node)
        if name == "aten::t":
            swaps = True
        elif name == "aten::transpose":
            swaps = {a["dim0"] % 2, a["dim1"] % 2} == {0, 1}
        else:
            swaps = [d % 2 for d in a["dims"]] == [1, 0]
        if isinstance(const, _Const) and const.tensor.dim() == 2 and swaps:
            return _Const(const.tensor, const.name, not const.transposed)
        raise self._unsupported(node, f"'{name}' other than the transposed weight of a Linear layer")

    def _relu(self, node, a):
        return self._emit(node, "ReLU", nn.ReLU(), a["self"])

    def _clamp(self, node, a):
        lo, hi = a.get("min"), a.get("max")
        if lo == 0 and hi is None:
            return self._emit(node, "ReLU", nn.ReLU(), a["self"])
        raise self._unsupported(node, f"clamp(min={lo}, max={hi}) (only clamp(min=0), a ReLU, converts)")

    def _avg_pool(self, node, a):
        return self._emit(node, "AvgPool2d", make_pool("AvgPool2d", a), a["self"])

    def _max_pool(self, node, a):
        pool = self._emit(node, "MaxPool2d", make_pool("MaxPool2d", a), a["self"])
        return (pool, None) if _aten_name(node).endswith("with_indices") else pool

    def _adaptive_pool(self, node, a):
        return self._emit(node, "AdaptiveAvgPool2d", make_pool("AdaptiveAvgPool2d", a), a["self"])

    def _mean(self, node, a):
        """Global average pooling: eager AdaptiveAvgPool2d((1, 1)) computes exactly this mean."""
        shape = _shape(a["self"])
        dims = {d % 4 for d in (a.get("dim") or ())} if shape and len(shape) == 4 else None
        if dims != {2, 3} or a.get("dtype") is not None:
            raise self._unsupported(node, "mean other than over the two spatial dimensions")
        pooled = self._emit(node, "AdaptiveAvgPool2d", nn.AdaptiveAvgPool2d(1), a["self"])
        return pooled if a.get("keepdim") else self.builder.module("flatten", nn.Flatten(), pooled)

    def _reshape(self, node, a):
        x = a.get("self", a.get("input"))
        before, after = _shape(x), _shape(node)
        if _aten_name(node) == "aten::flatten":
            ok = before is not None and a.get("start_dim") == 1 and a.get("end_dim") in (-1, len(before) - 1)
        else:
            ok = before is not None and after is not None and len(before) >= 2 and len(after) == 2 and \
                after[0] == before[0] and after[1] == math.prod(before[1:])
        if not ok:
            raise self._unsupported(node, f"'{_aten_name(node)}' to a shape other than (batch, -1)")
        return self._emit(node, "Flatten", nn.Flatten(), x)

    def _sym_size(self, node, a):
        """``x.size(d)`` of a dynamic dimension; only read by a reshape, which checks shapes itself."""
        return _SymSize(node)

    def _add(self, node, a):
        x, y = self.env.get(a["self"]), self.env.get(a["other"])
        if isinstance(x, fx.Node) and isinstance(y, fx.Node) and a.get("alpha", 1) == 1:
            return self.builder.add(x, y)
        raise self._unsupported(node, "add other than the sum of two tensors (a residual connection)")

    def _batch_norm(self, node, a):
        if a.get("training"):
            raise self._unsupported(node, "batch norm in training mode (export the model after model.eval())")
        mean = self._param(node, a["running_mean"], optional=True)
        prefix = self.env[a["running_mean"]].name.rsplit(".", 1)[0] if mean is not None else None
        shape = _shape(a["input"])
        bn = make_batchnorm(len(shape) if shape else 4, self._param(node, a["weight"], optional=True),
                             self._param(node, a["bias"], optional=True), mean,
                             self._param(node, a["running_var"], optional=True),
                             self._state(f"{prefix}.num_batches_tracked") if prefix else None,
                             a["eps"], a["momentum"], self._where(node))
        out = self._emit(node, type(bn).__name__, bn, a["input"])
        return out if _aten_name(node) == "aten::batch_norm" else (out, None, None)

    _HANDLERS: dict[str, Callable] = {
        "aten::convolution": _conv, "aten::conv2d": _conv, "aten::linear": _linear,
        "aten::addmm": _matmul, "aten::mm": _matmul,
        "aten::t": _transpose, "aten::transpose": _transpose, "aten::permute": _transpose,
        "aten::relu": _relu, "aten::relu_": _relu,
        "aten::clamp": _clamp, "aten::clamp_min": _clamp, "aten::clip": _clamp,
        "aten::avg_pool2d": _avg_pool,
        "aten::max_pool2d": _max_pool, "aten::max_pool2d_with_indices": _max_pool,
        "aten::adaptive_avg_pool2d": _adaptive_pool, "aten::_adaptive_avg_pool2d": _adaptive_pool,
        "aten::mean": _mean,
        "aten::view": _reshape, "aten::reshape": _reshape, "aten::_unsafe_view": _reshape,
        "aten::flatten": _reshape,
        "aten::add": _add, "aten::add_": _add, "aten::sym_size": _sym_size,
        "aten::_native_batch_norm_legit_no_training": _batch_norm, "aten::batch_norm": _batch_norm,
        "aten::native_batch_norm": _batch_norm,
    }

    # --- helpers

    def _emit(self, node: fx.Node, kind: str, module: nn.Module, arg: Any) -> fx.Node:
        """Add ``module``, named after the source module if it is one of type ``kind``."""
        stack = _module_stack(node)
        name = node.name
        if stack and stack[-1][1].rsplit(".", 1)[-1] == kind and stack[-1][0]:
            name = stack[-1][0]
        return self.builder.module(name, module, self._data(node, arg))

    def _data(self, node: fx.Node, arg: Any) -> fx.Node:
        value = self.env.get(arg) if isinstance(arg, fx.Node) else arg
        if isinstance(value, fx.Node):
            return value
        raise self._unsupported(node, f"'{_aten_name(node)}' applied to a parameter or constant instead of "
                                      "the activations")

    def _param(self, node: fx.Node, arg: Any, optional: bool = False) -> torch.Tensor | None:
        if arg is None and optional:
            return None
        value = self.env.get(arg) if isinstance(arg, fx.Node) else None
        if isinstance(value, _Const) and not value.transposed:
            return value.tensor
        raise self._unsupported(node, f"'{_aten_name(node)}' whose weights are computed at run time")

    def _where(self, node: fx.Node) -> str:
        stack = _module_stack(node)
        return f"layer '{stack[-1][0]}'" if stack and stack[-1][0] else f"operation '{node.name}'"

    def _unsupported(self, node: fx.Node, what: str) -> UnsupportedLayerError:
        return UnsupportedLayerError(f"exported {what} at {self._where(node)} is not supported; {EXPORT_HINT}")
