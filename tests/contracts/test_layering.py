"""The import rules of docs/architecture.md, checked on the source: the front end never imports
a backend, there are no import cycles (function-level imports included), only the Lava lowering
imports Lava, and importing everything else does not start Lava."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("n2c", "backends")
LAVA_MODULES = {"backends.lava.lower", "backends.lava.neurons", "backends.lava.runtime",
                "backends.lava.processes.neurons", "backends.lava.processes.attention.product"}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module (of any package) ``name`` imports, at any depth of the file."""
    found = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join(anchor[:len(anchor) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)
    return found


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _project(targets: set[str]) -> set[str]:
    """The project modules among ``targets`` (a submodule import counts as its module)."""
    return {t for t in targets if t in MODULES}


def test_the_front_end_imports_no_backend():
    offenders = {name: sorted(t for t in targets if t.split(".")[0] == "backends")
                 for name, targets in IMPORTS.items()
                 if name.startswith("n2c") and not name.startswith("n2c.cli")}
    assert not {k: v for k, v in offenders.items() if v}


def test_no_import_cycles():
    graph = {name: _project(targets) - {name} for name, targets in IMPORTS.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles


def test_only_the_lava_lowering_imports_lava():
    importers = {name for name, targets in IMPORTS.items() if any(t.split(".")[0] == "lava" for t in targets)}
    assert importers <= LAVA_MODULES, importers - LAVA_MODULES
    assert "backends.lava.runtime" in importers


def test_importing_everything_else_does_not_start_lava():
    others = [name for name in MODULES if name not in LAVA_MODULES and name != "n2c.__main__"]
    code = ("import importlib, sys\n"
            f"for name in {others!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted({m.split('.')[0] for m in sys.modules if m == 'lava' or m.startswith('lava.')}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_the_checks_see_real_imports():
    """The parser finds what the code imports (guards the tests above against passing vacuously)."""
    assert "n2c.neurons.cuba" in _project(IMPORTS["backends.quantize"])
    assert "backends.lava.runtime" in _project(IMPORTS["backends.lava.lower"])
    assert "backends.quantize" in _project(IMPORTS["n2c.cli.pipeline"])
