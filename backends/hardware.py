"""Hardware constants used by reports, each with its source and provenance tag.

Tags (from ``shared/docs/loihi-hardware.md``): [M] measured on silicon,
[S] pre-silicon simulation, [C] vendor claim, [D] derived by arithmetic,
[P] a stated proxy (a value from another chip used where none is published).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from n2c.errors import N2CError


@dataclass(frozen=True)
class Constant:
    value: float
    unit: str
    tag: str
    source: str

    def as_dict(self) -> dict:
        return asdict(self)


DAVIES_2018 = "Davies et al., 'Loihi: a neuromorphic manycore processor', IEEE Micro 38(1), 2018, Table 2 (0.75 V)"
HOROWITZ_2014 = "Horowitz, 'Computing's energy problem', ISSCC 2014, 45 nm, fp32"

_LOIHI1 = {
    "energy_per_synop": Constant(23.6e-12, "J", "S", DAVIES_2018 + ": min energy per synaptic spike op"),
    "energy_per_neuron_update": Constant(81e-12, "J", "S", DAVIES_2018 + ": active neuron update"),
    "energy_per_spike_message": Constant(1.7e-12, "J", "S", DAVIES_2018 + ": spike energy within a tile"),
}

HARDWARE = {
    "loihi1": {"name": "Intel Loihi 1", "energy": _LOIHI1, "note": ""},
    "loihi2": {
        "name": "Intel Loihi 2",
        "energy": {k: Constant(c.value, c.unit, "P", c.source + " (Loihi 1 value used as proxy)")
                   for k, c in _LOIHI1.items()},
        "note": "No per-operation energy table for Loihi 2 has been published; Loihi 1 constants are used "
                "as a stated proxy.",
    },
}

ANN_ENERGY_PER_MAC = Constant(4.6e-12, "J", "S", HOROWITZ_2014 + ": fp32 mult 3.7 pJ + add 0.9 pJ (estimate)")


def hardware(name: str) -> dict:
    if name not in HARDWARE:
        raise N2CError(f"unknown hardware {name!r}; use one of {sorted(HARDWARE)}")
    return HARDWARE[name]
