"""Relay neuron (kind ``relay``): sends the current it receives, exactly, as a graded message.

Per step, no state kept between steps and no bias::

    v = I;   send v;   v = 0

A relay carries an integer current from one core to another. n2c inserts relays where a
neuron's inputs do not fit one core (``backends.hardware.fan_in``): a sum-pool's sums
before the layer that reads them, or the partial sums of a wide layer, split by input
channel, before the neuron that joins them through weights of 1. Since the join sees
the same integer current as before, the split network computes exactly what the
unsplit one does. Its messages are signed, ``min_spikes``..``max_spikes`` (the largest
partial sum its inputs can make). Lava: the stock ``GradedVec`` (``v = a_in``, sent when
``|v| > vth``, here vth = 0). Relays exist only in the integer network, never in NIR.
"""

from __future__ import annotations

from n2c.fixed_point import LOIHI, IntegerFormat, StateClamp
from n2c.neurons.kind import NeuronKind, zeros_like


class Relay(NeuronKind):
    name = "relay"
    spiking = False  # sends its input, a graded value

    def v_start(self, neuron):
        return 0

    def step(self, neuron, state, current, clamp: StateClamp):
        # no clamp: the synapse that made the current already wrapped it and counted any overflow
        state["v"] = zeros_like(current)
        return current

    def message_range(self, neuron, fmt: IntegerFormat = LOIHI):
        return -int(neuron.min_spikes), int(neuron.max_spikes)

    def float_bound(self, neuron, current_bound, fmt: IntegerFormat = LOIHI):
        return current_bound


KIND = Relay()
