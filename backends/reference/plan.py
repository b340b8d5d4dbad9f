"""How the reference simulator runs each layer: on floats that hold integers, where that is exact.

Integer arithmetic on floats is exact while every value stays below 2^24 (float32) or 2^53
(float64): sums, differences and products of such integers are then integers, and
``floor(m / θ)`` of the correctly rounded quotient is the floor division (the rounding error
|m/θ|·2^-p stays below the 1/θ gap to the next integer). So before a layer runs, its
values are bounded from what its inputs can send:

* a synapse: max row Σ|w| · the largest input message (:class:`SynapseRun`);
* a neuron: its kind's :meth:`NeuronKind.float_bound` of the summed input currents.

The layer then runs on float32 below 2^24, float64 below 2^53, and on the int64 kernel
otherwise (and for the kinds whose kernels are written for int64 only: CUBA, parallel).
Floats let torch run the whole network at the speed of the float ANN, with its threads;
the messages are integers all the same, and ``tests/backends/reference`` checks the float
runs against the int64 kernels bit for bit.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from backends.ir.integer import IntNetwork, IntNeuron, IntSynapse
from backends.reference.synapses import SynapseRun, as_tensor
from n2c.fixed_point import EXACT_FLOAT32, EXACT_FLOAT64


class RunPlan:
    """The prepared layers of one network (weights as tensors, parameters per float type),
    made once per run and reused by every chunk. ``floats=False`` runs every neuron on its
    int64 kernel (the differential tests' baseline)."""

    def __init__(self, net: IntNetwork, floats: bool = True):
        self.net, self.floats = net, floats
        self._synapses: dict[tuple[str, int], SynapseRun] = {}
        self._neurons: dict[tuple[str, torch.dtype], SimpleNamespace] = {}

    def synapse(self, syn: IntSynapse, in_bound: int) -> SynapseRun:
        key = (syn.name, int(in_bound))
        if key not in self._synapses:
            self._synapses[key] = SynapseRun(syn, in_bound)
        return self._synapses[key]

    def neuron_type(self, neuron: IntNeuron, current_bound: int) -> torch.dtype | None:
        """The float type the neuron's kernel runs on exactly, or None: int64."""
        bound = neuron.neuron_kind.float_bound(neuron, int(current_bound)) if self.floats else None
        if bound is None or bound >= EXACT_FLOAT64:
            return None
        return torch.float32 if bound < EXACT_FLOAT32 else torch.float64

    def neuron(self, neuron: IntNeuron, dtype: torch.dtype) -> SimpleNamespace:
        """The neuron's parameters with its integer arrays as tensors of ``dtype`` (kernels read
        parameters as attributes, whatever object carries them)."""
        key = (neuron.name, dtype)
        if key not in self._neurons:
            self._neurons[key] = SimpleNamespace(**{
                name: torch.from_numpy(np.ascontiguousarray(value, np.int64)).to(dtype)
                if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.integer) else value
                for name, value in vars(neuron).items()}, neuron_kind=neuron.neuron_kind, spiking=neuron.spiking)
        return self._neurons[key]


def float_tensor(values: np.ndarray, bound: int) -> torch.Tensor:
    """int64 ``values`` with |values| ≤ ``bound`` as a tensor of the narrowest exact float type;
    past 2^53 they stay int64."""
    t = as_tensor(values)
    if bound >= EXACT_FLOAT64:
        return t.to(torch.int64)
    return t.to(torch.float32 if bound < EXACT_FLOAT32 else torch.float64)


def as_int64(t: torch.Tensor) -> np.ndarray:
    return t.to(torch.int64).numpy()
