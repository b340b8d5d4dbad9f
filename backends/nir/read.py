"""Read a NIR file without trusting it: every failure is a :class:`NIRFormatError` naming
the node that is damaged (a missing field, an unknown type, malformed parameters)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import h5py
import nir
from nir.serialization import hdf2dict, try_byte_to_str

from n2c.errors import NIRFormatError
from n2c.export import nodes as n2c_nodes


# The same read as read_graph, in a child process (see probe_hdf5); its typed errors are fine.
PROBE = ("import sys\n"
         "from backends.nir.read import read_graph\n"
         "from n2c.errors import NIRFormatError\n"
         "try:\n"
         "    read_graph(sys.argv[1])\n"
         "except NIRFormatError:\n"
         "    pass\n")
PROBE_SECONDS = 60


def probe_hdf5(path: Path, timeout: float | None = None) -> None:
    """Read the file in a child process first. libhdf5 can crash (segfault) or loop forever
    on a damaged file, which no Python code can catch; a child that dies or hangs becomes a
    one-line error here instead of taking the CLI down."""
    timeout = timeout or PROBE_SECONDS
    try:
        done = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise NIRFormatError(f"{path} is not a readable NIR file: reading it did not finish in {timeout:g} s "
                             "(a damaged HDF5 file); export it again") from None
    if done.returncode < 0:
        raise NIRFormatError(f"{path} is not a readable NIR file: the HDF5 library crashed reading it (signal "
                             f"{-done.returncode}; a damaged HDF5 file); export it again")


def read_graph(path: str | Path, isolate: bool = False) -> nir.NIRGraph:
    """The graph stored in ``path``. ``isolate``: probe the file in a child process first
    (:func:`probe_hdf5`; the CLI does, for files it did not write)."""
    path = Path(path)
    if not path.is_file():
        raise NIRFormatError(f"NIR file {path} does not exist")
    if isolate:
        probe_hdf5(path)
    try:  # nir.read(type_check=False) would still type-check nested graphs; n2c checks shapes itself, naming nodes
        with h5py.File(path, "r") as f:
            data = hdf2dict(f["node"])
        return build_node(data)
    except Exception as e:  # h5py and nir raise many types on corrupt files
        first = str(e).splitlines()[0] if str(e) else ""
        problem = _stored_problem(path)
        raise NIRFormatError(f"{path} is not a readable NIR file: {problem}" if problem else
                             f"{path} is not a readable NIR file ({type(e).__name__}: {first[:200]})") from None


NIR_TYPES = ("Affine", "Linear", "Scale", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d", "Delay", "Flatten", "I",
             "IF", "LI", "LIF", "CubaLI", "CubaLIF", "Input", "Output", "Threshold", "NIRGraph")


def build_node(data: dict) -> nir.NIRNode:
    """The node of a stored dict: nir's own types by nir, n2c's (``n2c.export.nodes``) by n2c, graphs
    without nir's type check (n2c checks shapes itself, naming nodes; nir's cannot follow edges into
    the input ports of an n2c.Product)."""
    kind = data.get("type") if isinstance(data, dict) else None
    if kind in n2c_nodes.TYPES:
        return n2c_nodes.from_dict(data)
    if kind != "NIRGraph":
        return nir.dict2NIRNode(data)
    extra = set(data) - {"type", "nodes", "edges", "metadata"}
    if extra or not isinstance(data.get("nodes"), dict) or "edges" not in data:
        raise ValueError(f"a NIRGraph needs nodes and edges{', not ' + ', '.join(sorted(extra)) if extra else ''}")
    edges = [(try_byte_to_str(a), try_byte_to_str(b)) for a, b in data["edges"]]
    return nir.NIRGraph(nodes={k: build_node(v) for k, v in data["nodes"].items()}, edges=edges,
                        metadata=data.get("metadata", {}), type_check=False)


def _stored_problem(path: Path) -> str | None:
    """Why nir cannot read ``path``, naming the node (None if the damage is not in one node)."""
    try:
        with h5py.File(path, "r") as f:
            if not isinstance(f.get("node"), h5py.Group):
                return "it has no 'node' group (an HDF5 file, but not one written by nir.write)"
            return _node_problem(f["node"], "")
    except Exception:  # too damaged to say which node; the caller reports nir's own error
        return None


def _node_problem(group, name: str) -> str | None:
    """Why nir cannot build the node stored in HDF5 ``group`` (None if it can); nested nodes first."""
    what = f"node '{name}'" if name else "the top graph"
    kind = try_byte_to_str(group["type"][()]) if isinstance(group.get("type"), h5py.Dataset) else None
    if kind is None:
        return f"{what} has no 'type' dataset; export it again with nir.write"
    if isinstance(kind, str) and kind in n2c_nodes.TYPES:  # n2c's own nodes: their fields are checked by building
        return _build_problem(group, what, kind)
    if not isinstance(kind, str) or kind not in NIR_TYPES:
        return f"{what} has type {show(kind)}, which NIR does not define; export it again with nir.write"
    stored = set(group.keys()) - {"type", "metadata"}
    fields = {f.name for f in dataclasses.fields(getattr(nir, kind)) if f.init} - {"metadata"}
    required = {f.name for f in dataclasses.fields(getattr(nir, kind)) if f.init and f.name != "metadata"
                and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    if kind in ("Input", "Output"):
        fields = required = {"shape"}
    if required - stored:
        return f"{what} ({kind}) lacks its {', '.join(sorted(required - stored))}; export it again"
    if stored - fields - ({"type_check"} if kind == "NIRGraph" else set()):
        return f"{what} ({kind}) has unknown field(s) {', '.join(sorted(stored - fields))}; remove them"
    if kind == "NIRGraph":
        if not isinstance(group["nodes"], h5py.Group):
            return f"{what} (NIRGraph): 'nodes' is not a group of nodes"
        edges = group["edges"]
        if not isinstance(edges, h5py.Dataset) or not (edges.shape in ((0,), (0, 2)) or (
                len(edges.shape) == 2 and edges.shape[1] == 2 and edges.dtype.kind in "SOU")):
            return (f"{what} (NIRGraph): edges must be an (N, 2) array of node names, got "
                    f"{getattr(edges, 'dtype', 'a group')} {getattr(edges, 'shape', '')}; export it again")
        for child, sub in group["nodes"].items():
            problem = _node_problem(sub, f"{name}.{child}" if name else child) if isinstance(sub, h5py.Group) \
                else f"node '{child}' is a dataset, not a node group"
            if problem:
                return problem
    return _build_problem(group, what, kind)


def _build_problem(group, what: str, kind: str) -> str | None:
    """Why the node stored in ``group`` cannot be built (None if it can)."""
    try:
        build_node(hdf2dict(group))
    except Exception as e:  # nir's constructors (and n2c's nodes) assert or fail on malformed values
        first = str(e).splitlines()[0][:160] if str(e) else ""
        return f"{what} ({kind}) has malformed parameters ({type(e).__name__}: {first}); export it again"
    return None


def show(v) -> str:
    """A value for an error message: one line, at most 80 characters."""
    text = " ".join(repr(v).split())
    return text if len(text) <= 80 else text[:77] + "..."
