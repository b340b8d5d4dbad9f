"""``--arch package.module:Name(key=literal, ...)``: the model class or factory a state_dict belongs to.

What ``--arch`` may import (checked before anything is imported, so no module's top-level code
runs for a name that would be refused):

1. ``package.module`` is found on ``sys.path`` as a Python source file, located without
   importing it or its parent packages (``importlib.util.find_spec`` for the top-level name,
   ``importlib.machinery.PathFinder`` below it);
2. it is not part of Python's standard library (no model lives there);
3. its source defines ``Name`` at top level (``class Name``, ``def Name``, ``Name = ...``) or
   re-exports it (``from .x import Name``, ``from .x import *``, followed statically).

Only then is the module imported and ``Name`` called with the literal arguments; a class must
be an ``nn.Module`` subclass, and a factory (``torchvision.models:resnet18``) must return an
``nn.Module``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
from typing import Any

from torch import nn

from n2c.errors import ModelLoadError
from n2c.ingest.files import one_line

_STAR_DEPTH = 8  # how many `from x import *` hops the static check follows


def instantiate_arch(arch: str) -> nn.Module:
    """Check, import and construct ``"package.module:Name"`` or ``"...:Name(kw=literal, ...)"``."""
    module_name, class_path, args, kwargs = parse_arch(arch)
    check_importable(arch, module_name, class_path.split(".")[0])
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # an ImportError or any error raised while importing user code
        raise ModelLoadError(
            f"--arch {arch}: cannot import module '{module_name}' ({one_line(e)}); install the package "
            "or add its directory to PYTHONPATH") from None
    target: Any = module
    for part in class_path.split("."):
        if not hasattr(target, part):
            raise ModelLoadError(f"--arch {arch}: module '{module_name}' has no attribute '{class_path}'; "
                                 "check the class name")
        target = getattr(target, part)
    is_class = isinstance(target, type)
    if (is_class and not issubclass(target, nn.Module)) or not callable(target):
        raise ModelLoadError(f"--arch {arch}: '{class_path}' is neither an nn.Module subclass nor a function "
                             "that builds one; name the model class or its factory")
    try:
        model = target(*args, **kwargs)
    except Exception as e:
        raise ModelLoadError(f"--arch {arch}: constructing {class_path} failed ({one_line(e)}); "
                             "pass its constructor arguments as Name(key=value, ...)") from None
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"--arch {arch}: {class_path}(...) returned a {type(model).__name__}, not an "
                             "nn.Module; name the model class or a function that returns the model")
    return model


def parse_arch(arch: str) -> tuple[str, str, tuple, dict]:
    usage = f"--arch {arch!r} must look like package.module:ClassName or package.module:ClassName(key=value)"
    module_name, sep, expr = arch.partition(":")
    module_name = module_name.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", module_name):
        raise ModelLoadError(usage)
    try:
        tree = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        raise ModelLoadError(usage) from None
    call = tree if isinstance(tree, ast.Call) else None
    class_path = _dotted_name(call.func if call else tree)
    if class_path is None:
        raise ModelLoadError(usage)
    if call is None:
        return module_name, class_path, (), {}
    try:
        args = tuple(ast.literal_eval(a) for a in call.args)
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except ValueError:
        raise ModelLoadError(f"--arch {arch}: constructor arguments must be Python literals "
                             "(numbers, strings, tuples, lists, dicts, True/False/None)") from None
    if None in kwargs:
        raise ModelLoadError(f"--arch {arch}: **kwargs are not supported; write key=value")
    return module_name, class_path, args, kwargs


def check_importable(arch: str, module_name: str, name: str) -> None:
    """The checks 1-3 of the module docstring; a ModelLoadError names the one that failed."""
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names:
        raise ModelLoadError(f"--arch {arch}: '{module_name}' is a Python standard-library module, which holds no "
                             "model; name the module that defines your model class")
    source = _find_source(module_name)
    if source is None:
        raise ModelLoadError(f"--arch {arch}: no Python source for module '{module_name}' on the path; install the "
                             "package or add its directory to PYTHONPATH")
    if not _defines(source, module_name, name, _STAR_DEPTH):
        raise ModelLoadError(f"--arch {arch}: module '{module_name}' ({source}) defines no '{name}' at top level, "
                             "so it was not imported; check the class name")


def _find_source(module_name: str) -> str | None:
    """The .py file of ``module_name`` (a package's ``__init__.py``), found without importing anything."""
    top, *rest = module_name.split(".")
    try:  # a top-level name: every finder (editable installs too), and nothing is imported
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    for part in rest:
        if spec is None or not spec.submodule_search_locations:
            return None
        spec = importlib.machinery.PathFinder.find_spec(part, list(spec.submodule_search_locations))
    origin = spec.origin if spec else None
    return origin if origin and origin.endswith(".py") and os.path.isfile(origin) else None


def _defines(source: str, module_name: str, name: str, depth: int) -> bool:
    try:
        with open(source, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=source)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return False
    package = module_name if source.endswith("__init__.py") else module_name.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return True
                if alias.name == "*" and depth > 0:
                    other = _absolute(node, package)
                    other_source = _find_source(other) if other else None
                    if other_source and _defines(other_source, other, name, depth - 1):
                        return True
        if isinstance(node, ast.Import):
            if any((alias.asname or alias.name.split(".")[0]) == name for alias in node.names):
                return True
    return False


def _absolute(node: ast.ImportFrom, package: str) -> str | None:
    if not node.level:
        return node.module
    parts = package.split(".") if package else []
    if node.level - 1 > len(parts):
        return None
    base = parts[:len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else [])) or None


def _dotted_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted_name(node.value)
        return f"{base}.{node.attr}" if base else None
    return None
