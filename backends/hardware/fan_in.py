"""Fan-in that does not fit one core: relay neurons, inserted into the integer network.

A neuron needs, on its core, an input axon per source neuron it reads (per bit plane) and
the synapse rows of all of them. When one neuron alone passes a core's input axons or
synaptic memory, the layer cannot be placed at all. n2c then rewrites the integer network
(``IntNetwork``) with relay neurons (kind ``relay``, :mod:`n2c.neurons.relay`), which send
the integer current they receive, exactly:

1. **Pooling through relays.** A sum-pool folded into the next layer's synapses multiplies
   its fan-in (2x2 pooling before a 3x3 conv: a 6x6 window, 4x the axons). A relay layer
   after the sum-pool sends the pooled sums; the conv then reads 3x3 of them.
2. **Partial sums.** Still too wide: the widest weighted synapse is split by input channel
   (dense: by contiguous input columns) into G parts, each feeding a relay layer of the
   neuron's shape, then the next widest while the neuron does not fit (a neuron may sum
   several sources); the neuron joins the G partial sums through weights of 1::

       I = Σ_g 1 · relay_g,   relay_g = W[:, group g] · s[group g]   (= W · s)

   G is the smallest count at which a part fits one core (a part's fan-in shrinks as G grows,
   the join's grows, so when the join does not fit at that G no split fits).

The neuron's current is the same integer as before (without wrap-around, which is counted
as before), so the rewritten network computes exactly what the original does: the
reference simulator, Lava (the stock ``GradedVec``) and the mapper all run the rewritten
network, and the energy counts the relays' messages. Each relay adds one synapse stage to
its path; Lava's lowering aligns the other inputs by delays, as it does for residual paths.

On Loihi 2 (graded spikes up to 32 bits) a relay message is one spike. On Loihi 1 (binary
spikes) it travels as bit planes, as every wide message does in n2c's model: exact, but
costly; the report shows it. What still does not fit is left as it is and named by the
mapper.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from backends.hardware.mapping.chains import compartments, connections_into
from backends.hardware.mapping.usage import over_limits, usage_grids
from backends.hardware.spec import ChipSpec
from backends.ir.integer import IntNetwork, IntNeuron, IntSynapse, message_range
MAX_PARTS = 64  # partial-sum relays per neuron layer tried before the layer is left unfit


def fit_fan_in(net: IntNetwork, chip: ChipSpec) -> IntNetwork:
    """``net`` with relays wherever a neuron's inputs do not fit one core of ``chip``; ``net``
    itself when nothing needs them. ``fan_in`` of the result lists what was added."""
    work = _Rewrite(net, chip)
    for neuron in [x for x in net.layers if isinstance(x, IntNeuron)]:
        if not work.over(neuron):
            continue
        work.relay_pools(neuron)
        if work.over(neuron):
            work.split_partial_sums(neuron)
    if not work.added:
        return net
    return dataclasses.replace(net, layers=work.layers, fan_in=net.fan_in + work.added)


class _Rewrite:
    """The network's layer list, rewritten in place one neuron at a time."""

    def __init__(self, net: IntNetwork, chip: ChipSpec):
        self.net, self.chip = net, chip
        self.layers = list(net.layers)
        self.added: list[dict] = []

    def by_name(self) -> dict:
        return {self.net.source.name: self.net.source, **{x.name: x for x in self.layers}}

    def view(self) -> IntNetwork:
        return dataclasses.replace(self.net, layers=self.layers)

    def over(self, neuron: IntNeuron) -> dict:
        """Limits one neuron of the layer alone passes on its core (input side only)."""
        layers = self.by_name()
        neuron = layers[neuron.name]
        into = connections_into(self.view(), neuron, self.chip, layers)
        usage = usage_grids(neuron, compartments(neuron, self.chip), into, np.zeros(neuron.shape, np.int64),
                            tuple(neuron.shape), self.chip)
        return over_limits(usage, self.chip)

    def _replace(self, name: str, layer) -> None:
        self.layers[[x.name for x in self.layers].index(name)] = layer

    def _insert_before(self, name: str, new: list) -> None:
        i = [x.name for x in self.layers].index(name)
        self.layers[i:i] = new

    def _message_range(self, name: str) -> tuple[int, int]:
        """Smallest and largest message of a spike source (the input or a neuron layer)."""
        src = self.by_name()[name]
        return src.message_range if src is self.net.source else message_range(src)

    # --- 1. pooling through relays ---------------------------------------------------------
    def relay_pools(self, neuron: IntNeuron) -> None:
        """A relay after the last sum-pool of every pool→weights chain into ``neuron``."""
        layers = self.by_name()
        for name in self.by_name()[neuron.name].inputs:
            weighted = layers[name]
            if not isinstance(weighted, IntSynapse) or weighted.kind == "sumpool":
                continue
            pool = layers[weighted.input]
            if not (isinstance(pool, IntSynapse) and pool.kind == "sumpool"):
                continue
            chain, src = [pool], layers[pool.input]
            while isinstance(src, IntSynapse):
                chain.insert(0, src)
                src = layers[src.input]
            lo, hi = self._message_range(src.name)
            window = int(np.prod([np.prod(p.kernel) for p in chain]))
            relay = IntNeuron(f"{pool.name}_relay", "relay", [pool.name], tuple(pool.out_shape), 1.0,
                              bias=np.zeros(pool.out_shape, np.int64), max_spikes=window * hi,
                              min_spikes=window * -lo, spike_value=np.ones(pool.out_shape))
            self._insert_before(weighted.name, [relay])
            self._replace(weighted.name, dataclasses.replace(weighted, input=relay.name))
            self.added.append({"layer": neuron.name, "relay": [relay.name], "why": "pooling",
                               "reads": pool.name})
            layers = self.by_name()

    # --- 2. partial sums --------------------------------------------------------------------
    def split_partial_sums(self, neuron: IntNeuron) -> None:
        """Split the weighted synapses into ``neuron`` by input channel, widest first, until the
        neuron (the joins and any unsplit inputs) fits; leave the layer as it was when no split
        fits (the mapper then names it)."""
        saved, added = list(self.layers), []
        while self.over(neuron):
            layers = self.by_name()
            # never a join (it reads a partial-sum relay): splitting joins adds joins without end
            partial = {r for rec in self.net.fan_in + self.added + added if rec["why"] == "partial sums"
                       for r in rec["relay"]}
            weighted = [layers[n] for n in layers[neuron.name].inputs if isinstance(layers[n], IntSynapse)
                        and _splittable(layers[n]) and not isinstance(layers[layers[n].input], IntSynapse)
                        and layers[n].input not in partial]
            split = self._split_one(layers[neuron.name], max(weighted, key=_width)) if weighted else None
            if split is None:
                self.layers = saved  # the joins' fan-in only grows with G: no split fits
                return
            added.append(split)
        self.added += added

    def _split_one(self, neuron: IntNeuron, syn: IntSynapse) -> dict | None:
        """Split ``syn`` into the fewest parts at which the widest part fits a core (None: none fits)."""
        saved = list(self.layers)

        def part_fits(groups: int) -> bool:  # the widest part (near-equal slices) fits
            self.layers = list(saved)
            widest = self._split(neuron, syn, groups)[int(np.argmax(np.diff(_edges(_width(syn), groups))))]
            return not self.over(self.by_name()[widest])

        # a part's fan-in shrinks as G grows: the smallest G at which it fits, by bisection
        lo, hi = 1, min(_width(syn), MAX_PARTS)
        if not part_fits(hi):
            self.layers = saved
            return None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if part_fits(mid) else (mid, hi)
        self.layers = list(saved)
        parts = self._split(neuron, syn, hi)
        return {"layer": neuron.name, "relay": parts, "why": "partial sums", "parts": hi, "reads": syn.input}

    def _split(self, neuron: IntNeuron, syn: IntSynapse, groups: int) -> list[str]:
        """Replace ``syn`` by ``groups`` parts → relays → joins of weight 1 into ``neuron``."""
        edges = _edges(_width(syn), groups)
        lo, hi = self._message_range(syn.input)
        new, relays, joins = [], [], []
        for g, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
            a, b = int(a), int(b)
            weight = syn.weight[:, a:b]
            part = dataclasses.replace(syn, name=f"{syn.name}_part{g}", weight=weight, in_slice=(a, b),
                                       delay=None if syn.delay is None else syn.delay[:, a:b])
            rows = np.abs(weight).reshape(len(weight), -1).sum(axis=1)
            bound = int(rows.max()) * max(abs(lo), abs(hi))
            relay = IntNeuron(f"{syn.name}_partial{g}", "relay", [part.name], tuple(neuron.shape), neuron.scale,
                              bias=np.zeros(neuron.shape, np.int64), max_spikes=bound, min_spikes=bound,
                              spike_value=np.full(neuron.shape, 1.0 / neuron.scale))
            join = _identity(f"{syn.name}_join{g}", relay.name, tuple(neuron.shape))
            new += [part, relay, join]
            relays.append(relay.name)
            joins.append(join.name)
        self.layers.remove(syn)
        self._insert_before(neuron.name, new)
        inputs = [j for n in neuron.inputs for j in (joins if n == syn.name else [n])]
        self._replace(neuron.name, dataclasses.replace(neuron, inputs=inputs))
        return relays


def _splittable(syn: IntSynapse) -> bool:
    """Dense, or a conv without groups; not already sliced; no negative weight exponent (a floor
    shift of partial sums is not the shift of their sum); not recurrent (a relay would make the
    loop a step late)."""
    if syn.in_slice is not None or syn.weight_exp < 0 or syn.recurrent:
        return False
    return syn.kind == "dense" or (syn.kind == "conv" and syn.groups == 1)


def _edges(width: int, groups: int) -> np.ndarray:
    """Boundaries of ``groups`` near-equal contiguous slices of ``width``."""
    return np.arange(groups + 1) * width // groups


def _width(syn: IntSynapse) -> int:
    """Input columns (dense) or channels (conv) a split can divide."""
    return int(syn.weight.shape[1])


def _identity(name: str, source: str, shape: tuple[int, ...]) -> IntSynapse:
    """Weights of 1 from a relay to the neuron of the same shape (a 1x1 depthwise conv for images)."""
    if len(shape) == 3:
        c = shape[0]
        return IntSynapse(name, "conv", source, shape, shape, weight=np.ones((c, 1, 1, 1), np.int64), groups=c)
    n = int(np.prod(shape))
    return IntSynapse(name, "dense", source, shape, shape, weight=np.eye(n, dtype=np.int64))
