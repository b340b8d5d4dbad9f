"""Readout neuron (kind ``readout``): the non-spiking accumulator of the network output.

Per step, from ``v = 0`` at each window start (``b`` the bias)::

    v = clamp24(v + I + b);   send v (graded, 24-bit)

The network output is v after a window's last step (the T-step sum of the last layer's
input): its argmax is the class. Quantization: only the bias and weights, at the layer
scale. NIR: the graph's Output node.
"""

from __future__ import annotations

from n2c.fixed_point import LOIHI, IntegerFormat, StateClamp
from n2c.neurons.kind import NeuronKind, largest_magnitude


class Readout(NeuronKind):
    name = "readout"
    spiking = False

    def v_start(self, neuron):
        return 0

    def step(self, neuron, state, current, clamp: StateClamp):
        state["v"] = clamp(state["v"] + current + neuron.bias)
        return state["v"]

    def message_range(self, neuron, fmt: IntegerFormat = LOIHI):
        return -fmt.state_max, fmt.state_max

    def float_bound(self, neuron, current_bound, fmt: IntegerFormat = LOIHI):
        return fmt.state_max + 1 + current_bound + largest_magnitude(neuron.bias)


KIND = Readout()
