"""Load a trained model from a file, whatever way it was saved.

:func:`load_model` accepts four formats, recognised by their content:

1. **TorchScript** (``torch.jit.save`` of a scripted or traced model). The
   ScriptModule's graph is interpreted and rebuilt as a ``torch.fx``
   GraphModule of real ``nn`` modules carrying the saved tensors.
2. **torch.export** (``torch.export.save``, ``.pt2``). The ATen graph of the
   ExportedProgram is mapped back onto modules; QCFS and SignedQCFS activations,
   which export decomposes into arithmetic (they differ only in the clamp's lower
   bound), are recovered from ``nn_module_stack``.
3. **state_dict** (``torch.save(model.state_dict())``) together with
   ``arch="package.module:ClassName"``. Loaded with ``weights_only=True``.
4. **pickled nn.Module** (``torch.save(model)``), only with ``trust_pickle``
   because unpickling runs arbitrary code.

Formats 1 and 2 come back already in the canonical form of :mod:`n2c.ingest.canonical`;
formats 3 and 4 are the user's own module and are canonicalised by tracing.
QCFS thresholds λ keep their saved shape, a scalar or per channel (for a
state_dict, even if the ``arch`` class builds λ with another shape).

A converted SNN saved by :func:`n2c.snn.io.save_snn` is refused with a
ModelLoadError pointing to ``n2c export`` / :func:`n2c.snn.io.load_snn`: it is not
a model to convert (that module's docstring gives the reasons).

Every failure is a one-line :class:`ModelLoadError` or
:class:`UnsupportedLayerError` naming the problem and the fix.
"""

from __future__ import annotations

import ast
import importlib
import io
import logging
import math
import operator
import os
import pickle
import re
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import fx, nn

from n2c.errors import ModelLoadError, UnsupportedLayerError
from n2c.ann.qcfs import QCFS, SignedQCFS

ARCH_HINT = "--arch package.module:ClassName"
EXPORT_HINT = f"export a state_dict (torch.save(model.state_dict(), path)) and pass {ARCH_HINT} instead"


def load_model(path: str, arch: str | None = None, trust_pickle: bool = False) -> nn.Module:
    """Load the model saved at ``path`` and return it in eval mode.

    ``arch`` (``"package.module:ClassName"`` or ``"package.module:ClassName(k=v, ...)"``)
    names the class to instantiate for a state_dict; it is ignored for files
    that carry their own architecture. ``trust_pickle`` allows unpickling a
    whole ``nn.Module``, which executes code from the file.
    """
    path = os.fspath(path)
    _check_file(path)
    kind = _sniff(path)
    if kind == "torchscript":
        _refuse_snn(path)
        model = _load_torchscript(path)
    elif kind == "export":
        model = _load_exported(path, trust_pickle)
    else:
        model = _load_pickle(path, arch, trust_pickle)
    return model.eval()


# --------------------------------------------------------------------------- files

def _refuse_snn(path: str) -> None:
    """A converted SNN (n2c.snn.io.save_snn) is not a model to convert again."""
    from n2c.snn.io import is_snn_file  # n2c.snn.io imports this module

    if is_snn_file(path):
        raise ModelLoadError(
            f"{path} is a converted SNN (written by n2c convert), not a model to convert; pass it to "
            "`n2c export`, or load it with n2c.snn.io.load_snn")


def check_readable(path: str, what: str, directory_hint: str, empty_hint: str) -> None:
    """One-line ModelLoadErrors for a missing, directory, unreadable or empty file."""
    if not os.path.exists(path):
        raise ModelLoadError(f"{what} {path} does not exist; check the path")
    if os.path.isdir(path):
        raise ModelLoadError(f"{path} is a directory; {directory_hint}")
    if not os.access(path, os.R_OK):
        raise ModelLoadError(f"cannot read {path}: permission denied; check the file's permissions")
    if os.path.getsize(path) == 0:
        raise ModelLoadError(f"{path} is empty (0 bytes); {empty_hint}")


def _check_file(path: str) -> None:
    check_readable(path, "model file", "pass the model file inside it (.pt, .pth or .pt2)",
                   "the save was probably interrupted, save the model again")


def _sniff(path: str) -> str:
    """``"torchscript"``, ``"export"`` or ``"pickle"`` (torch.save, new or legacy, or unknown)."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if not zipfile.is_zipfile(path):
        if magic == b"PK\x03\x04":
            raise ModelLoadError(f"{path} is a truncated or corrupt zip archive; save the model again")
        return "pickle"
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelLoadError(f"{path} is a corrupt zip archive ({e}); save the model again") from None
    if any(n.rsplit("/", 1)[-1] in ("serialized_exported_program.json", "archive_format") for n in names):
        return "export"
    if any(n.endswith("/constants.pkl") or "/code/__torch__" in n for n in names):
        return "torchscript"
    if any(n.endswith("data.pkl") for n in names):
        return "pickle"
    raise ModelLoadError(
        f"{path} is a zip archive but not a PyTorch model (no TorchScript code, exported program or "
        "torch.save data); save the model with torch.jit.save, torch.export.save or torch.save")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# --------------------------------------------------------------- pickle and state_dict

_DATA_MODULES = {"numpy", "builtins", "collections", "argparse", "pathlib", "datetime", "enum", "_codecs"}


def _load_pickle(path: str, arch: str | None, trust_pickle: bool) -> nn.Module:
    obj = _load_weights_only(path, trust_pickle)
    if isinstance(obj, nn.Module):
        return obj
    state = _state_dict_of(obj)
    if state is None:
        raise ModelLoadError(
            f"{path} holds a {type(obj).__name__}, not a model of any known format; save the model with "
            f"torch.jit.save, torch.export.save, or torch.save(model.state_dict()) plus {ARCH_HINT}")
    if isinstance(state, nn.Module):
        return state
    if arch is None:
        raise ModelLoadError(
            f"{path} is a state_dict (weights only, no architecture); pass {ARCH_HINT} naming the model class")
    model = instantiate_arch(arch)
    _load_state(model, state, path, arch)
    return model


def _load_weights_only(path: str, trust_pickle: bool) -> Any:
    """torch.load with ``weights_only=True``; fall back to full unpickling only if trusted."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        cls = _pickled_class(str(e))
        if cls is None:
            raise ModelLoadError(
                f"{path} is not a model of any known format (unreadable: {_one_line(e)[:160]})") from None
        if not trust_pickle:
            raise ModelLoadError(_pickle_refusal(path, cls)) from None
    except Exception as e:  # torch.load raises many types for foreign or corrupt files
        raise ModelLoadError(
            f"{path} is not a model of any known format or is corrupt ({_one_line(e)[:160]}); "
            "save it with torch.save, torch.jit.save or torch.export.save") from None
    return _load_trusted(path)


def _pickled_class(message: str) -> str | None:
    """The class a weights-only load refused, or None if the file is simply not a pickle."""
    m = re.search(r"Unsupported (?:class|global:?\s*(?:GLOBAL)?)\s*([\w.]+)", message)
    return m.group(1) if m else None


def _pickle_refusal(path: str, cls: str) -> str:
    fix = (f"Pass --trust-pickle if you trust its source, or save a state_dict and pass {ARCH_HINT}")
    if cls.split(".")[0] in _DATA_MODULES:
        return f"{path} contains pickled Python objects ({cls}); loading it runs arbitrary code. {fix}"
    return f"{path} is a pickled nn.Module ({cls}); loading it runs arbitrary code. {fix}"


def _load_trusted(path: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (ImportError, AttributeError) as e:
        raise ModelLoadError(
            f"cannot unpickle {path}: {_one_line(e)}; make the package defining the model importable "
            f"(install it or add it to PYTHONPATH), or save a state_dict and pass {ARCH_HINT}") from None
    except Exception as e:
        raise ModelLoadError(f"cannot unpickle {path} ({_one_line(e)[:160]}); save the model again") from None


_NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model")


def _state_dict_of(obj: Any) -> dict | nn.Module | None:
    """``obj`` itself if it is a state_dict, or the state_dict/module of a training checkpoint."""
    if not isinstance(obj, dict) or not obj:
        return None
    if all(isinstance(k, str) for k in obj) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    for key in _NESTED_STATE_KEYS:
        inner = obj.get(key)
        if isinstance(inner, nn.Module):
            return inner
        if isinstance(inner, dict) and _state_dict_of(inner) is inner:
            return inner
    return None


def instantiate_arch(arch: str) -> nn.Module:
    """Import and construct ``"package.module:ClassName"`` or ``"...:ClassName(kw=literal, ...)"``."""
    module_name, class_path, args, kwargs = _parse_arch(arch)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # an ImportError or any error raised while importing user code
        raise ModelLoadError(
            f"--arch {arch}: cannot import module '{module_name}' ({_one_line(e)}); install the package "
            "or add its directory to PYTHONPATH") from None
    cls: Any = module
    for part in class_path.split("."):
        if not hasattr(cls, part):
            raise ModelLoadError(f"--arch {arch}: module '{module_name}' has no attribute '{class_path}'; "
                                 "check the class name")
        cls = getattr(cls, part)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ModelLoadError(f"--arch {arch}: '{class_path}' is not an nn.Module subclass; "
                             "name the model class itself")
    try:
        return cls(*args, **kwargs)
    except Exception as e:
        raise ModelLoadError(f"--arch {arch}: constructing {class_path} failed ({_one_line(e)}); "
                             "pass its constructor arguments as ClassName(key=value, ...)") from None


def _parse_arch(arch: str) -> tuple[str, str, tuple, dict]:
    usage = f"--arch {arch!r} must look like package.module:ClassName or package.module:ClassName(key=value)"
    module_name, sep, expr = arch.partition(":")
    if not sep or not re.fullmatch(r"[A-Za-z_][\w.]*", module_name.strip()):
        raise ModelLoadError(usage)
    try:
        tree = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        raise ModelLoadError(usage) from None
    call = tree if isinstance(tree, ast.Call) else None
    target = call.func if call else tree
    class_path = _dotted_name(target)
    if class_path is None:
        raise ModelLoadError(usage)
    if call is None:
        return module_name.strip(), class_path, (), {}
    try:
        args = tuple(ast.literal_eval(a) for a in call.args)
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except ValueError:
        raise ModelLoadError(f"--arch {arch}: constructor arguments must be Python literals "
                             "(numbers, strings, tuples, lists, dicts, True/False/None)") from None
    if None in kwargs:
        raise ModelLoadError(f"--arch {arch}: **kwargs are not supported; write key=value")
    return module_name.strip(), class_path, args, kwargs


def _dotted_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted_name(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _load_state(model: nn.Module, state: dict, path: str, arch: str) -> None:
    """load_state_dict(strict=True) with a one-line error that lists the mismatched keys."""
    own = model.state_dict()
    if not set(state) & set(own) and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}  # saved from DataParallel
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ModelLoadError(
            f"the state_dict in {path} does not match --arch {arch} (wrong keys: missing {_few(missing)}, "
            f"unexpected {_few(unexpected)}); pass the class and arguments the weights were trained with")
    _fit_qcfs_thresholds(model, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelLoadError(
            f"the state_dict in {path} does not match --arch {arch} ({_one_line(e)[:300]}); "
            "pass the class and arguments the weights were trained with") from None


def _fit_qcfs_thresholds(model: nn.Module, state: dict) -> None:
    """Give each QCFS λ the shape saved in ``state`` (per-channel vs scalar).

    The shape of λ is learnt data, not architecture: a model trained with
    per-channel thresholds loads into a class whose constructor makes a scalar λ
    (and vice versa). Every other shape mismatch is left to load_state_dict.
    """
    for name, m in model.named_modules():
        saved = state.get(f"{name}.lam" if name else "lam")
        if isinstance(m, QCFS) and isinstance(saved, torch.Tensor) and saved.shape != m.lam.shape \
                and saved.numel() > 0:
            m.lam = nn.Parameter(torch.empty(saved.shape, dtype=m.lam.dtype, device=m.lam.device))


def _few(keys: list[str], n: int = 4) -> str:
    shown = ", ".join(keys[:n])
    return f"[{shown}{', ...' if len(keys) > n else ''}]"


# ------------------------------------------------------------- shared graph building

class _GraphBuilder:
    """Accumulates a canonical fx graph: leaf modules, operator.add, one input."""

    def __init__(self) -> None:
        self.root = nn.Module()
        self.graph = fx.Graph()
        self._targets: dict[str, nn.Module] = {}

    def input(self) -> fx.Node:
        return self.graph.placeholder("x")

    def module(self, name: str, module: nn.Module, arg: fx.Node) -> fx.Node:
        """Register ``module`` under a free name derived from ``name`` and call it on ``arg``."""
        name = self._free_name(name)
        self._targets[name] = module
        parent = self.root
        *parents, leaf = name.split(".")
        for part in parents:
            if not hasattr(parent, part):
                parent.add_module(part, nn.Module())
            parent = getattr(parent, part)
        parent.add_module(leaf, module)
        return self.graph.call_module(name, (arg,))

    def call_again(self, name: str, arg: fx.Node) -> fx.Node:
        """Call an already registered module again (a module used twice shares its weights)."""
        return self.graph.call_module(name, (arg,))

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


def _make_conv(w, b, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros", where="") -> nn.Conv2d:
    if w.dim() != 4:
        raise UnsupportedLayerError(f"{where}: only 2-d convolutions are supported (weight has shape "
                                    f"{tuple(w.shape)}); {EXPORT_HINT}")
    conv = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=_pair(stride),
                     padding=padding if isinstance(padding, str) else _pair(padding),
                     dilation=_pair(dilation), groups=groups, bias=b is not None,
                     padding_mode=padding_mode, device="meta")
    return _adopt(conv, {"weight": w, "bias": b}, where)


def _make_linear(w, b, where="") -> nn.Linear:
    lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device="meta")
    return _adopt(lin, {"weight": w, "bias": b}, where)


def _make_batchnorm(rank: int, weight, bias, mean, var, tracked=None, eps=1e-5, momentum=0.1,
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


_QCFS_TYPES = {"QCFS": QCFS, "SignedQCFS": SignedQCFS}


def _make_qcfs(lam, levels, where="", kind: str = "QCFS") -> QCFS:
    """A QCFS (or SignedQCFS) with exactly the saved ``lam`` (scalar or per-channel) and ``levels``."""
    if lam is None or levels is None:
        raise UnsupportedLayerError(f"{where}: {kind} needs its 'lam' parameter and 'levels' buffer, the file "
                                    f"lacks them; {EXPORT_HINT}")
    if levels.numel() != 1 or lam.numel() == 0 or not lam.is_floating_point():
        raise UnsupportedLayerError(f"{where}: {kind} has 'levels' of shape {tuple(levels.shape)} and 'lam' of "
                                    f"shape {tuple(lam.shape)} and dtype {lam.dtype}; n2c needs one integer "
                                    "level count and floating-point thresholds")
    try:
        q = _QCFS_TYPES[kind](levels=int(levels), lam=lam.detach().float())
    except ValueError as e:
        raise UnsupportedLayerError(f"{where}: {_one_line(e)}; train it again (λ > 0, levels >= 1)") from None
    return _adopt(q, {"lam": lam, "levels": levels}, where)


def _make_pool(kind: str, hp: dict) -> nn.Module:
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


@contextmanager
def _quiet(logger_name: str):
    """Silence a chatty torch logger (torch.export.load warns about unused symbols)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# -------------------------------------------------------------------------- TorchScript

def _load_torchscript(path: str) -> fx.GraphModule:
    try:
        script = torch.jit.load(path, map_location="cpu")
    except Exception as e:
        raise ModelLoadError(f"cannot load TorchScript file {path} ({_one_line(e)[:160]}); the file is "
                             "corrupt or from a newer PyTorch, save it again") from None
    return _ScriptImporter(script.eval()).run()  # `if self.training:` takes the inference branch


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
}
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


class _ScriptImporter:
    """Interprets a ScriptModule's forward graph into a :class:`_GraphBuilder`.

    ``leaves`` adds leaf types: ``{original_name: build(script_submodule, where)}``
    returning the ``nn.Module`` to put in the graph (:mod:`n2c.snn.io` adds the
    spiking neurons this way).
    """

    def __init__(self, script: torch.jit.ScriptModule, leaves: dict[str, LeafBuilder] | None = None):
        self.script = script
        self.leaves = dict(leaves or {})
        self.builder = _GraphBuilder()
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
        return self._emit(_make_pool(kind, hp), kind.lower(), ins[0], node, ref)

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
        x = args[0] if len(args) == 1 else None
        if not isinstance(x, fx.Node):
            raise self._unsupported(f"call of {kind} with arguments other than one tensor", ref)
        if ref.path in self._built:
            return self.builder.call_again(self._built[ref.path], x)
        node = self.builder.module(ref.path or kind.lower(), self._leaf_module(ref, kind), x)
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
            return _make_conv(tensors.get("weight"), tensors.get("bias"), **hp, where=where)
        if kind == "Linear":
            return _make_linear(tensors.get("weight"), tensors.get("bias"), where=where)
        if kind.startswith("BatchNorm"):
            return _make_batchnorm(4 if kind == "BatchNorm2d" else 2, tensors.get("weight"), tensors.get("bias"),
                                   tensors.get("running_mean"), tensors.get("running_var"),
                                   tensors.get("num_batches_tracked"), hp["eps"], hp["momentum"], where)
        if kind in _QCFS_TYPES:
            return _make_qcfs(tensors.get("lam"), tensors.get("levels"), where, kind)
        if kind in ("AvgPool2d", "MaxPool2d", "AdaptiveAvgPool2d"):
            return _make_pool(kind, hp)
        if kind == "Flatten":
            return nn.Flatten(hp["start_dim"], hp["end_dim"])
        if kind == "Dropout":
            return nn.Dropout(hp.get("p", 0.5))
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


# ------------------------------------------------------------------------ torch.export

def _load_exported(path: str, trust_pickle: bool) -> fx.GraphModule:
    if not trust_pickle:
        _check_export_pickles(path)
    try:
        with _quiet("torch._export.serde.serialize"):
            ep = torch.export.load(path)
    except Exception as e:
        raise ModelLoadError(f"cannot load torch.export file {path} ({_one_line(e)[:160]}); the file is "
                             "corrupt or from another PyTorch version, export it again") from None
    return _ExportImporter(ep).run()


def _check_export_pickles(path: str) -> None:
    """Refuse a .pt2 whose embedded tensors are pickled with arbitrary objects.

    torch.export.load (torch 2.3) unpickles the archive's state_dict and
    constants with ``weights_only=False``; check them the safe way first.
    """
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if not name.endswith(".pt"):
                continue
            data = z.read(name)
            if not data:
                continue
            try:
                torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as e:
                cls = _pickled_class(str(e))
                problem = f"embeds pickled Python objects ({cls}) in {name}" if cls else f"has an unreadable {name}"
                raise ModelLoadError(_export_refusal(path, problem, cls is not None)) from None
            except Exception as e:
                raise ModelLoadError(_export_refusal(path, f"has an unreadable {name} ({_one_line(e)[:100]})",
                                                     False)) from None


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
        if kind in _QCFS_TYPES:
            return path, kind
    return None


class _ExportImporter:
    """Maps an ExportedProgram's ATen graph back onto canonical modules."""

    def __init__(self, ep: torch.export.ExportedProgram):
        self.ep = ep
        self.builder = _GraphBuilder()
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
        q = _make_qcfs(self._state(f"{path}.lam"), self._state(f"{path}.levels"), where, kind)
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
        conv = _make_conv(w, b, a["stride"], a["padding"], a["dilation"], a["groups"], where=self._where(node))
        return self._emit(node, "Conv2d", conv, a["input"])

    def _linear(self, node, a):
        w, b = self._param(node, a["weight"]), self._param(node, a["bias"], optional=True)
        return self._emit(node, "Linear", _make_linear(w, b, self._where(node)), a["input"])

    def _matmul(self, node, a):
        """``addmm(bias, x, t(W))`` or ``mm(x, t(W))``: nn.Linear as export writes it."""
        weight = self.env.get(a["mat2"])
        scaled = a.get("beta", 1) != 1 or a.get("alpha", 1) != 1
        if not isinstance(weight, _Const) or not weight.transposed or scaled:
            raise self._unsupported(node, f"'{_aten_name(node)}' other than a Linear layer (x @ W.T + b)")
        b = self._param(node, a["self"]) if "beta" in a else None
        lin = _make_linear(weight.tensor, b, self._where(node))
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
        return self._emit(node, "AvgPool2d", _make_pool("AvgPool2d", a), a["self"])

    def _max_pool(self, node, a):
        pool = self._emit(node, "MaxPool2d", _make_pool("MaxPool2d", a), a["self"])
        return (pool, None) if _aten_name(node).endswith("with_indices") else pool

    def _adaptive_pool(self, node, a):
        return self._emit(node, "AdaptiveAvgPool2d", _make_pool("AdaptiveAvgPool2d", a), a["self"])

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
        bn = _make_batchnorm(len(shape) if shape else 4, self._param(node, a["weight"], optional=True),
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
