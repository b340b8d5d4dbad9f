"""The neuron kinds of n2c, one module each, and their registry.

======================  ======================  ==============================================================
module                  kind                    neuron
======================  ======================  ==============================================================
``multi_threshold``     ``mtn``                 IF / multi-threshold IF, reset by subtraction
``polarity``            (``mtn``)               the same with negative spikes (PMSM); signed quantizer
``parallel``            ``parallel``            parallel spiking neuron over the T-step window
``scale_and_fire``      ``sfn``                 non-uniform thresholds, integer output codes
``cuba``                ``lif``                 Loihi's CUBA neuron for NIR's I/IF/LIF/CubaLIF
``cuba``                ``li``                  the same, sending its potential (LI, CubaLI)
``cuba``                ``lif_subtract``        with snnTorch's reset (by subtraction, a step late)
``cuba``                ``lif_subtract_now``    with snnTorch's reset without delay
``readout``             ``readout``             the output accumulator
``relay``               ``relay``               sends its input current (fan-in splits; integer network only)
======================  ======================  ==============================================================

Each module states its equation and holds its kernels; the torch SNN (``n2c.snn``), the
float and integer simulators (``backends.float``, ``backends.reference``) and the Lava
process models (``backends.lava.processes``) all call them. ``docs/architecture.md`` has
the checklist for adding a kind.
"""

from __future__ import annotations

from n2c.errors import QuantizationError
from n2c.neurons import cuba, multi_threshold, parallel, readout, relay, scale_and_fire
from n2c.neurons.kind import NeuronKind

KINDS: dict[str, NeuronKind] = {k.name: k for k in (multi_threshold.KIND, parallel.KIND, scale_and_fire.KIND,
                                                    cuba.LIF, cuba.LI, cuba.LIF_SUBTRACT, cuba.LIF_SUBTRACT_NOW,
                                                    readout.KIND, relay.KIND)}
BY_NIR_NAME: dict[str, NeuronKind] = {k.nir_name: k for k in KINDS.values() if k.nir_name}


def kind(name: str) -> NeuronKind:
    """The kind registered under ``name``; a one-line error for an unknown one."""
    try:
        return KINDS[name]
    except KeyError:
        raise QuantizationError(f"unknown neuron kind {name!r}; known: {', '.join(KINDS)}") from None


__all__ = ["KINDS", "BY_NIR_NAME", "NeuronKind", "kind"]
