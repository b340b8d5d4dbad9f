"""Per-core usage of a block of neurons, and the per-core limits it must stay inside.

Per-core usage of a block
    neurons           = block size · compartments per neuron
    input_axons       = Σ_connections (#sources with a synapse into the block) · m
    synapse_bits      = Σ_axons bits(n), the nengo-loihi rule for an axon with n synapses:
                        bits(n) = Σ_{blocks of ≤ B synapses} W·⌈(n_blk·(w + d + t) + H) / W⌉
                        (B block size, H header bits, W word bits, t tag bits, d delay bits when
                        the chain has a nonzero delay, w = 8 weighted / 1 sum-pool only)
        dense chain:  every axon reaching the block stores a dense row, n = block size
        conv, shared: the folded kernel is stored once per core: per group touched,
                      (Cin/groups · KH · KW) · m entries of bits(block channels in the group);
                      sum-pool then conv folds to extent d·sp·(k−1) + kp, stride s·sp;
                      a sum-pool alone is a depthwise ones kernel (w = 1)
        conv, unshared: each axon stores a row of its n connected targets in the block
    neuron_state_bits = neurons · neuron_state_bits
    output_fanout     = Σ_{neurons of the block} (#destination cores it has a synapse into) ·
                        compartments;  routing_bits = output_fanout · routing_entry_bits
    memory            : per memory pool, Σ of the uses it holds ≤ its bits
"""

from __future__ import annotations

import numpy as np

from backends.hardware.mapping.chains import BlockSums, grid_sum, outer, split_starts
from backends.hardware.spec import ChipSpec
from n2c.errors import MappingError
USAGE_KEYS = ("neurons", "input_axons", "output_fanout", "synapse_bits", "neuron_state_bits", "routing_bits")
POOL_USE = {"synapses": "synapse_bits", "neuron_state": "neuron_state_bits", "routing": "routing_bits"}
LIMIT_KEYS = {"neurons": "neurons_per_core", "input_axons": "input_axons_per_core",
              "output_fanout": "output_fanout_per_core"}
LABELS = {"neurons": "compartments", "input_axons": "input axons", "output_fanout": "output fan-out edges"}
HINTS = {"neurons": "use narrower messages or a chip with graded spikes",
         "input_axons": "give it fewer inputs (a pooling stage before it, a smaller previous layer) "
                        "or use a chip with more input axons per core",
         "output_fanout": "give its outputs fewer consumers or use a chip with more fan-out per core"}


def limits(chip: ChipSpec) -> dict:
    return {**{k: chip.int(v) for k, v in LIMIT_KEYS.items()}, **{p.name: int(p.bits.value) for p in chip.memory}}


def usage_grids(neuron, comp, conns, fanout, split, chip) -> dict[str, np.ndarray]:
    """Usage grids (one entry per block) of a split (counts or starts per axis, ``split_starts``).
    ``fanout``: per neuron, or its :class:`BlockSums` (for many splits of one layer)."""
    starts = split_starts(neuron.shape, split)
    sizes = outer([np.diff(np.append(s, n)) for s, n in zip(starts, neuron.shape)])
    grid = tuple(len(s) for s in starts)
    u = {"neurons": sizes * comp,
         "input_axons": sum((c._axons(starts) for c in conns), np.zeros(grid, np.int64)),
         "output_fanout": (fanout.of(starts) if isinstance(fanout, BlockSums) else grid_sum(fanout, starts)) * comp,
         "synapse_bits": sum((c._synapse_bits(starts, chip) for c in conns), np.zeros(grid, np.int64))}
    u["neuron_state_bits"] = u["neurons"] * chip.int("neuron_state_bits")
    u["routing_bits"] = u["output_fanout"] * chip.int("routing_entry_bits")
    return u


def memory_use(usage: dict, chip: ChipSpec) -> dict:
    """Bits per memory pool: Σ of the uses it holds."""
    return {p.name: sum(usage[POOL_USE[h]] for h in p.holds) for p in chip.memory}


def over_limits(usage: dict, chip: ChipSpec) -> dict:
    """Resources over their limit in some block: name → (largest use, limit)."""
    used = {**{k: usage[k] for k in LIMIT_KEYS}, **memory_use(usage, chip)}
    return {k: (int(np.max(used[k])), lim) for k, lim in limits(chip).items() if np.max(used[k]) > lim}


def fit_reason(over: dict) -> str:
    """Why one neuron of the layer exceeds a core: what it needs against each limit, and the fix."""
    needs = " and ".join(f"{used} {LABELS.get(k, 'bits of ' + k)} (limit {lim} per core)"
                         for k, (used, lim) in over.items())
    hint = HINTS.get(next(iter(over)), "give it fewer or narrower inputs or use a chip with more memory per core")
    return f"one neuron needs {needs}; {hint}"


def fit_error(neuron, chip, over: dict) -> MappingError:
    """The error of a layer whose single neuron cannot fit a core; ``reason`` holds :func:`fit_reason`."""
    error = MappingError(f"layer '{neuron.name}' cannot fit one {chip.name} core: {fit_reason(over)}")
    error.reason = fit_reason(over)
    return error
