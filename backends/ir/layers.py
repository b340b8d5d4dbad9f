"""Layer IR: a NIR graph as typed, topologically ordered float layers.

Every backend starts here (``backends.nir.to_layers`` builds it from a NIR
file). Shapes follow torch/NIR order without a batch dimension: (C, H, W) for
images, (C, L) for 1-D signals, (N,) for vectors. Each layer lists the layers
whose outputs sum into its input (NIR's rule for several in-edges); an input
listed in ``LayerGraph.recurrent`` is a back edge of a cycle and delivers the
value of the previous time step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np



@dataclass
class Layer:
    name: str
    inputs: list[str]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


@dataclass
class InputLayer(Layer):
    input_scale: float | None = None  # real value of one integer input unit, if the exporter knew it


@dataclass
class ConvLayer(Layer):
    """Conv1d or Conv2d in torch semantics (one entry per spatial dimension in stride etc.)."""
    weight: np.ndarray = None  # (Cout, Cin/groups, kH, kW) or (Cout, Cin/groups, k)
    bias: np.ndarray = None  # (Cout,)
    stride: tuple[int, ...] = (1, 1)
    padding: tuple[int, ...] = (0, 0)
    dilation: tuple[int, ...] = (1, 1)
    groups: int = 1

    @property
    def dims(self) -> int:
        return self.weight.ndim - 2


@dataclass
class DenseLayer(Layer):
    weight: np.ndarray = None  # (out, in); `in` indexes the C-order flattening of in_shape
    bias: np.ndarray = None


@dataclass
class PoolLayer(Layer):
    """Sum pooling times ``scale`` (1 for SumPool2d, 1/(kH·kW) for AvgPool2d)."""
    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int] = (0, 0)
    scale: float = 1.0


@dataclass
class FlattenLayer(Layer):
    """C-order flattening of dimensions start_dim..end_dim (no batch dimension)."""
    start_dim: int = 0
    end_dim: int = -1


@dataclass
class ScaleLayer(Layer):
    """Element-wise product with ``scale`` (broadcast to the shape)."""
    scale: np.ndarray = None


@dataclass
class ProductLayer(Layer):
    """y = scale · P_mode(a, b) (``n2c.products``): ``inputs`` = [a, b], ``in_shape`` a's shape,
    ``b_shape`` b's. Over T steps: the increments of t·P of the running input means."""
    mode: str = "scores"
    heads: int = 1
    scale: float = 1.0
    b_shape: tuple[int, ...] = ()


@dataclass
class SoftmaxLayer(Layer):
    """y = softmax over the last axis; over T steps the increments of t·softmax(running input mean)."""


@dataclass
class DelayLayer(Layer):
    """y(t) = x(t - τ): ``delay`` τ per element in NIR's time unit; steps = round(τ/dt)."""
    delay: np.ndarray = None


@dataclass
class ThresholdLayer(Layer):
    """z = [x > θ] (NIR's Threshold is strict)."""
    threshold: np.ndarray = None


@dataclass
class DynamicsLayer(Layer):
    """A standard NIR neuron of any tool: I, LI, IF, LIF, CubaLI or CubaLIF.

    Parameters are broadcast to the shape; those the kind lacks are None. The
    discrete equations, per time step dt, are in ``backends.float.dynamics``.
    """
    kind: str = "LIF"
    r: np.ndarray = None
    tau_mem: np.ndarray | None = None
    tau_syn: np.ndarray | None = None
    v_leak: np.ndarray | None = None
    v_threshold: np.ndarray | None = None
    v_reset: np.ndarray | None = None
    w_in: np.ndarray | None = None

    @property
    def spiking(self) -> bool:
        return self.kind in ("IF", "LIF", "CubaLIF")


@dataclass
class NeuronLayer(Layer):
    """A spiking layer with reset by subtraction (equations in ``n2c.neurons``).

    ``kind``: "mtn" (multi-threshold IF, polarity when ``min_spikes`` > 0),
    "parallel" (parallel neuron over the T-step window) or "sfn" (scale-and-fire,
    thresholds ``edges`` and integer output ``codes``). A spike of count/code k
    carries the real value ``spike_value``·k.
    """
    threshold: np.ndarray = None  # θ, broadcast to out_shape (sfn: first positive threshold)
    v_init: np.ndarray = None
    max_spikes: int = 1
    kind: str = "mtn"
    min_spikes: int = 0
    spike_value: np.ndarray = None  # broadcast to out_shape
    edges: np.ndarray | None = None  # sfn only, (N,)
    codes: np.ndarray | None = None  # sfn only, (N+1,) integers
    max_current: float | None = None  # n2c.max_current: largest |input| per step on the exporter's data
    scale: float | None = None  # n2c.scale: the integer scale S pinned by integer-exact training


@dataclass
class OutputLayer(Layer):
    max_current: float | None = None  # n2c.max_current: largest |input| per step on the exporter's data
    scale: float | None = None  # n2c.scale: the integer scale S pinned by integer-exact training


@dataclass
class LayerGraph:
    layers: list[Layer]  # topological order over forward edges; layers[0] is the input
    timesteps: int = 1  # n2c.timesteps of n2c graphs; 1 for other tools' graphs (their T is the input's)
    metadata: dict = field(default_factory=dict)
    recurrent: set[tuple[str, str]] = field(default_factory=set)  # back edges (src, dst): one step late

    @property
    def is_n2c(self) -> bool:
        """Written by n2c (its conventions define encoding, readout and T)."""
        return "n2c.version" in self.metadata

    def by_name(self) -> dict[str, Layer]:
        return {layer.name: layer for layer in self.layers}

    @property
    def input(self) -> InputLayer:
        return self.layers[0]

    @property
    def output(self) -> OutputLayer:
        return self.layers[-1]
