"""n2c's NIR node types for what NIR 1.0 cannot state: the operations of spiking attention.

NIR 1.0 has no node for the product of two activations, nor for a softmax. n2c writes them as
nodes of its own types, ``n2c.Product`` and ``n2c.Softmax`` (docs/nir-conventions.md):

    n2c.Product   inputs "a" and "b" (edges end at "<node>.a" and "<node>.b"), output "output"
                  y = scale · P_mode(a, b) per head (equations in n2c.products); over T steps the
                  increments of t · P of the inputs' running means
    n2c.Softmax   y = softmax over the last axis; over T steps the increments of t · softmax of the
                  input's running mean

Other tools' NIR readers fail on these types (nir.read raises on an unknown type); n2c's reader
(``backends.nir.read``) builds them with :func:`from_dict`.
"""

from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

from n2c import products

PRODUCT, SOFTMAX = "n2c.Product", "n2c.Softmax"
TYPES = (PRODUCT, SOFTMAX)
PORTS = ("a", "b")


@dataclass(eq=False)
class Product(nir.NIRNode):
    """y = scale · P_mode(a, b) (``n2c.products``): the product of two spiking tensors.

    ``mode`` "scores" (a, b: (C, H, W) → (heads, N, N)) or "mix" (a: (heads, N, N), b: (C, H, W)
    → (C, H, W)); ``a_shape`` and ``b_shape`` the operands' shapes."""
    mode: str
    heads: int
    scale: float
    a_shape: np.ndarray
    b_shape: np.ndarray

    def __post_init__(self):
        a, b = tuple(int(v) for v in np.asarray(self.a_shape).reshape(-1)), \
            tuple(int(v) for v in np.asarray(self.b_shape).reshape(-1))
        out = products.check(str(self.mode), int(self.heads), a, b)
        self.input_type = {"a": np.array(a), "b": np.array(b)}
        self.output_type = {"output": np.array(out)}

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.update(type=PRODUCT, a_shape=np.asarray(self.a_shape, np.int64), b_shape=np.asarray(self.b_shape, np.int64),
                 heads=int(self.heads), scale=float(self.scale), mode=str(self.mode))
        return d


@dataclass(eq=False)
class Softmax(nir.NIRNode):
    """y = softmax(x) over the last axis of ``shape`` (over T: increments of t·softmax(running mean))."""
    shape: np.ndarray

    def __post_init__(self):
        shape = np.asarray(self.shape, np.int64).reshape(-1)
        self.input_type = {"input": shape}
        self.output_type = {"output": shape}

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.update(type=SOFTMAX, shape=np.asarray(self.shape, np.int64))
        return d


def from_dict(data: dict) -> nir.NIRNode:
    """An n2c node from its stored dict (type, fields, metadata); ValueError on a malformed one."""
    kwargs = {k: v for k, v in data.items() if k != "type"}
    meta = kwargs.pop("metadata", {}) or {}
    text = {k: v.decode() if isinstance(v, bytes) else v for k, v in kwargs.items()}
    if data["type"] == PRODUCT:
        expected = {"mode", "heads", "scale", "a_shape", "b_shape"}
        if set(text) != expected:
            raise ValueError(f"fields {sorted(text)}, expected {sorted(expected)}")
        return Product(mode=str(text["mode"]), heads=int(text["heads"]), scale=float(text["scale"]),
                       a_shape=np.asarray(text["a_shape"]), b_shape=np.asarray(text["b_shape"]), metadata=meta)
    if set(text) != {"shape"}:
        raise ValueError(f"fields {sorted(text)}, expected ['shape']")
    return Softmax(shape=np.asarray(text["shape"]), metadata=meta)
