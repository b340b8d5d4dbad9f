"""Chip specifications: per-core limits, energy and time constants, each with its source.

A spec is a JSON file (format ``n2c-chip-spec``, version 1; Loihi 1 and 2 ship in
``backends/hardware/chips/``, and ``docs/hardware-model.md`` documents the format for
your own). Every value carries a source (the spec's ``sources`` table) and a provenance tag:

    M measured on silicon · S pre-silicon simulation · C vendor claim ·
    D derived by arithmetic · U secondary source only · P a stated proxy
    (another chip's value where none is published) · E estimate from process data
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from n2c.errors import N2CError
from n2c.fixed_point import IntegerFormat

CHIPS_DIR = Path(__file__).parent / "chips"
FORMAT, FORMAT_VERSION = "n2c-chip-spec", 1
TAGS = {"M": "measured on silicon", "S": "pre-silicon simulation", "C": "vendor claim", "D": "derived by arithmetic",
        "U": "secondary source only", "P": "stated proxy (another chip's value)", "E": "estimate from process data",
        "A": "stated assumption (no published value)"}
SYSTEM_FORMAT = "n2c-system-spec"
BAND = 4  # rows of chips per band of a system's chip order (SystemSpec.position)
# name → unit family; every system spec states each of these (chip-to-chip links)
SYSTEM_REQUIRED = {"chips_x": "count", "chips_y": "count", "energy_chip_crossing": "J", "time_chip_crossing": "s"}
MEMORY_USES = ("synapses", "neuron_state", "routing")

# name → unit family; every spec must state each of these
REQUIRED = {
    "cores_per_chip": "count", "mesh_tiles_x": "count", "mesh_tiles_y": "count", "cores_per_tile": "count",
    "neurons_per_core": "count", "input_axons_per_core": "count", "output_fanout_per_core": "count",
    "neuron_state_bits": "count", "routing_entry_bits": "count", "weight_bits": "count", "delay_bits": "count",
    "tag_bits": "count", "synapse_block_size": "count", "synapse_block_header_bits": "count",
    "synapse_word_bits": "count", "conv_weight_sharing": "bool", "graded_spike_bits": "count",
    "energy_synop": "J", "energy_neuron_update_active": "J", "energy_neuron_update_inactive": "J",
    "energy_spike_in_tile": "J", "energy_hop_ew": "J", "energy_hop_ns": "J", "static_power_per_chip": "W",
    "time_synop": "s", "time_neuron_update_active": "s", "time_neuron_update_inactive": "s",
    "time_spike_in_tile": "s", "time_hop_ew": "s", "time_hop_ns": "s",
    "barrier_sync_one_tile": "s", "barrier_sync_chip": "s", "barrier_sync_multichip": "s",
    "embedded_processors_per_chip": "count", "energy_offcore_mac": "J", "energy_offcore_exp": "J",
    "time_offcore_op": "s",
}
# The largest plausible value per unit family: a spec past these has its units wrong, and its
# products (energy x count, time x count) would overflow a report (1e308 J becomes inf).
PLAUSIBLE_MAX = {"count": 2 ** 40, "bool": 1, "J": 1e-3, "W": 1e4, "s": 1.0, "bits": 2 ** 40}
BIT_WIDTH_MAX = {"weight_bits": 16, "delay_bits": 16, "graded_spike_bits": 32, "neuron_state_bits": 4096,
                 "routing_entry_bits": 4096, "tag_bits": 64, "synapse_word_bits": 4096,
                 "synapse_block_header_bits": 4096}


@dataclass(frozen=True)
class Quantity:
    value: float
    unit: str
    tag: str
    source: str  # full citation
    where: str = ""  # table, page or remark
    alternatives: tuple = ()  # other published values, as Quantity

    def as_dict(self) -> dict:
        d = asdict(self)
        d["alternatives"] = [a.as_dict() for a in self.alternatives]
        return d


@dataclass(frozen=True)
class MemoryPool:
    """A per-core memory that holds some of ``synapses``, ``neuron_state`` and ``routing``."""
    name: str
    holds: tuple[str, ...]
    bits: Quantity


@dataclass(frozen=True)
class SystemSpec:
    """Chips of one kind on a 2-D grid (``chips_x`` x ``chips_y``) joined by chip-to-chip links.
    Chip c sits at grid position :meth:`position`: bands of :data:`BAND` rows, each walked column
    by column (a snake inside a snake), so that consecutive chips are neighbours and chips a few
    apart in order stay a few links apart (about d / BAND + BAND for d chips, not d as along
    one row). A message between chips crosses one link per step of grid distance, each costing
    ``energy_chip_crossing`` and ``time_chip_crossing``."""
    key: str
    name: str
    note: str
    values: dict  # name → Quantity (SYSTEM_REQUIRED, plus any other stated value)
    path: str = ""

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.values["chips_x"].value), int(self.values["chips_y"].value)

    @property
    def chips(self) -> int:
        return self.grid[0] * self.grid[1]

    def position(self, c: int) -> tuple[int, int]:
        cx, cy = self.grid
        band, i = divmod(c, cx * BAND)
        rows = min(BAND, cy - band * BAND)  # the last band may be thinner
        k, r = divmod(i, rows)  # k-th column of the band, r-th chip in it
        x = k if band % 2 == 0 else cx - 1 - k
        return x, band * BAND + (r if k % 2 == 0 else rows - 1 - r)

    def as_dict(self) -> dict:
        return {"key": self.key, "name": self.name, "note": self.note, "spec_file": self.path, "chips": self.chips,
                "grid": list(self.grid), "values": {k: q.as_dict() for k, q in self.values.items()}}


@dataclass(frozen=True)
class ChipSpec:
    key: str
    name: str
    note: str
    values: dict  # name → Quantity
    memory: tuple  # MemoryPool, ...
    path: str = ""
    system: SystemSpec | None = None  # several chips on a grid; None: as many chips as needed, in a row

    def chip_position(self, c: int) -> tuple[int, int]:
        """Grid position of chip c: the system's, or (c, 0) for chips in a row."""
        return self.system.position(c) if self.system else (c, 0)

    def chip_origin(self, c: int) -> tuple[int, int]:
        """Global tile (x, y) of chip c's tile (0, 0): chips tile one mesh."""
        gx, gy = self.chip_position(c)
        return gx * self.mesh[0], gy * self.mesh[1]

    def chip_distance(self, a: int, b: int) -> int:
        """Chip-to-chip links between chips a and b (grid distance)."""
        (xa, ya), (xb, yb) = self.chip_position(a), self.chip_position(b)
        return abs(xa - xb) + abs(ya - yb)

    @property
    def max_chips(self) -> int | None:
        return self.system.chips if self.system else None

    def crossing(self, name: str) -> float:
        """energy_chip_crossing or time_chip_crossing of the system (0 for a bare chip: not priced)."""
        return self.system.values[name].value if self.system else 0.0

    def __getitem__(self, name: str) -> float:
        return self.values[name].value

    def int(self, name: str) -> int:
        return int(self.values[name].value)

    def integer_format(self) -> IntegerFormat:
        """The integer widths networks are quantized to for this chip (its weight and delay bits,
        never wider than Lava's fixed-point models)."""
        return IntegerFormat.for_chip(self.int("weight_bits"), self.int("delay_bits"))

    @property
    def mesh(self) -> tuple[int, int]:
        return self.int("mesh_tiles_x"), self.int("mesh_tiles_y")

    def barrier_sync(self, tiles: int, chips: int) -> float:
        """Barrier time [s]: measured end points, linear in the number of tiles in between [D]."""
        if chips > 1:
            return self["barrier_sync_multichip"]
        full = self.mesh[0] * self.mesh[1]
        a, b = self["barrier_sync_one_tile"], self["barrier_sync_chip"]
        return a + (b - a) * (max(tiles, 1) - 1) / max(full - 1, 1)

    def as_dict(self) -> dict:
        return {"key": self.key, "name": self.name, "note": self.note, "spec_file": self.path,
                "values": {k: q.as_dict() for k, q in self.values.items()},
                "memory_per_core": [{"name": m.name, "holds": list(m.holds), "bits": m.bits.as_dict()}
                                    for m in self.memory],
                "system": self.system.as_dict() if self.system else None}


def chip_names() -> list[str]:
    return sorted(p.stem for p in CHIPS_DIR.glob("*.json"))


def load_chip(name_or_path: str) -> ChipSpec:
    """A shipped chip or system by key (``loihi1``, ``loihi2``, ``kapoho_point``, ``hala_point``) or a
    spec file path (a chip spec, or a system spec naming its chip)."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        if name_or_path not in chip_names():
            raise N2CError(f"unknown hardware {name_or_path!r}; use one of {', '.join(chip_names())} "
                           "or a chip spec file (.json, format in docs/hardware-model.md)")
        path = CHIPS_DIR / f"{name_or_path}.json"
    elif not path.is_file():
        raise N2CError(f"chip spec {path} does not exist")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise N2CError(f"chip spec {path} is not readable JSON ({e.__class__.__name__}: {e}); fix the file") from None
    if isinstance(raw, dict) and raw.get("format") == SYSTEM_FORMAT:
        return parse_system(raw, str(path))
    return parse_chip(raw, str(path))


def parse_system(raw: dict, where: str) -> ChipSpec:
    """A system spec: its chip (a shipped key, or a chip spec file beside it) with the system attached."""
    def fail(msg: str):
        raise N2CError(f"{where}: {msg}; see the system spec format in docs/hardware-model.md")

    if raw.get("format_version") != FORMAT_VERSION:
        fail(f"format_version {raw.get('format_version')!r} is not supported (this n2c reads {FORMAT_VERSION})")
    for key in ("key", "name", "chip"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            fail(f"\"{key}\" must be a non-empty string")
    chip_ref = raw["chip"]
    if chip_ref.endswith(".json"):
        chip_ref = str(Path(where).parent / chip_ref)
    elif chip_ref not in chip_names():
        fail(f"chip {chip_ref!r} is not a shipped chip ({', '.join(chip_names())}) or a .json file")
    chip = load_chip(chip_ref)
    if chip.system is not None:
        fail(f"chip {raw['chip']!r} is itself a system; name a chip spec")
    values = _quantities(raw, SYSTEM_REQUIRED, fail)
    for k in ("chips_x", "chips_y"):
        if values[k].value < 1:
            fail(f"values.{k} must be at least 1")
    system = SystemSpec(raw["key"], raw["name"], str(raw.get("note", "")), values, where)
    return ChipSpec(chip.key, chip.name, chip.note, chip.values, chip.memory, chip.path, system)


def _quantity_parser(raw: dict, fail):
    """The function that reads one {value, unit, tag, source, where, alternatives} of a spec."""
    sources = raw.get("sources", {})
    if not isinstance(sources, dict) or not all(isinstance(v, str) for v in sources.values()):
        fail("\"sources\" must map short names to citations")

    def quantity(q, label: str, unit: str | None = None) -> Quantity:
        if not isinstance(q, dict):
            fail(f"{label} must be an object with value, unit, tag and source")
        missing = [k for k in ("value", "tag", "source") if k not in q]
        if missing:
            fail(f"{label} lacks {', '.join(missing)}")
        v = q["value"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            fail(f"{label}.value must be a finite number >= 0, not {v!r}")
        if q["tag"] not in TAGS:
            fail(f"{label}.tag {q['tag']!r} is not one of {', '.join(TAGS)}")
        if q["source"] not in sources:
            fail(f"{label}.source {q['source']!r} is not listed in \"sources\"")
        alts = q.get("alternatives", [])
        if not isinstance(alts, list):
            fail(f"{label}.alternatives must be a list")
        return Quantity(float(v), q.get("unit", unit or ""), q["tag"], sources[q["source"]], q.get("where", ""),
                        tuple(quantity({**a, "unit": q.get("unit")}, f"{label}.alternatives[{i}]")
                              for i, a in enumerate(alts)))
    return quantity


def _quantities(raw: dict, required: dict, fail) -> dict:
    """The "values" of a spec as Quantity objects, each with a listed source and a known tag; the
    ``required`` ones (name → unit family) present, whole where counts, and plausible."""
    quantity = _quantity_parser(raw, fail)
    values_raw = raw.get("values")
    if not isinstance(values_raw, dict):
        fail("\"values\" must be an object")
    missing = [k for k in required if k not in values_raw]
    if missing:
        fail(f"missing values: {', '.join(missing)}")
    values = {k: quantity(q, f"values.{k}") for k, q in values_raw.items()}
    for k, family in required.items():
        v = values[k].value
        if family in ("count", "bool") and v != int(v):
            fail(f"values.{k} must be a whole number, not {v}")
        if family == "bool" and v not in (0, 1):
            fail(f"values.{k} must be 0 or 1")
        largest = BIT_WIDTH_MAX.get(k, PLAUSIBLE_MAX[family])
        for q in (values[k], *values[k].alternatives):
            if q.value > largest:
                fail(f"values.{k} = {q.value:g} {'' if family == 'count' else family} is implausible (at most "
                     f"{largest:g}); check its unit")
    return values


def parse_chip(raw, where: str = "chip spec") -> ChipSpec:
    """Validate a decoded spec; every problem is a one-line error naming the field."""
    def fail(msg: str):
        raise N2CError(f"{where}: {msg}; see the chip spec format in docs/hardware-model.md")

    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        fail(f"not an {FORMAT} file (\"format\": \"{FORMAT}\" missing)")
    if raw.get("format_version") != FORMAT_VERSION:
        fail(f"format_version {raw.get('format_version')!r} is not supported (this n2c reads {FORMAT_VERSION})")
    for key in ("key", "name"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            fail(f"\"{key}\" must be a non-empty string")
    values = _quantities(raw, REQUIRED, fail)
    quantity = _quantity_parser(raw, fail)
    for k in ("cores_per_chip", "embedded_processors_per_chip", "mesh_tiles_x", "mesh_tiles_y", "cores_per_tile",
              "neurons_per_core",
              "input_axons_per_core", "output_fanout_per_core", "weight_bits", "synapse_block_size",
              "synapse_word_bits", "graded_spike_bits"):
        if values[k].value < 1:
            fail(f"values.{k} must be at least 1")
    tiles = values["mesh_tiles_x"].value * values["mesh_tiles_y"].value
    if tiles * values["cores_per_tile"].value < values["cores_per_chip"].value:
        fail(f"the mesh ({int(tiles)} tiles x {int(values['cores_per_tile'].value)} cores) holds fewer than "
             f"{int(values['cores_per_chip'].value)} cores per chip")

    pools_raw = raw.get("memory_per_core")
    if not isinstance(pools_raw, list) or not pools_raw:
        fail("\"memory_per_core\" must be a non-empty list of {name, holds, bits}")
    pools, held = [], []
    for i, p in enumerate(pools_raw):
        if not isinstance(p, dict) or not isinstance(p.get("holds"), list) or not p["holds"]:
            fail(f"memory_per_core[{i}] needs \"holds\", a list drawn from {', '.join(MEMORY_USES)}")
        bad = [h for h in p["holds"] if h not in MEMORY_USES]
        if bad:
            fail(f"memory_per_core[{i}].holds has unknown {', '.join(map(repr, bad))}; use {', '.join(MEMORY_USES)}")
        bits = quantity(p.get("bits"), f"memory_per_core[{i}].bits", "bits")
        if bits.value != int(bits.value) or not 1 <= bits.value <= PLAUSIBLE_MAX["bits"]:
            fail(f"memory_per_core[{i}].bits must be a whole number from 1 to {PLAUSIBLE_MAX['bits']:g}")
        pools.append(MemoryPool(str(p.get("name", f"memory {i}")), tuple(p["holds"]), bits))
        held += p["holds"]
    for use in MEMORY_USES:
        if held.count(use) != 1:
            fail(f"{use} must be held by exactly one memory_per_core entry (found {held.count(use)})")
    return ChipSpec(raw["key"], raw["name"], str(raw.get("note", "")), values, tuple(pools), where)


# The 45 nm convention of the SNN papers (Yao et al. 2023, Spikformer): an ANN layer costs one
# multiply-accumulate per synapse, an SNN layer one accumulate per synaptic operation.
HOROWITZ_2014 = "Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, 45 nm, 0.9 V"
ANN_ENERGY_PER_MAC = Quantity(4.6e-12, "J", "E", HOROWITZ_2014, "fp32 multiply 3.7 pJ + add 0.9 pJ")
ANN_ENERGY_PER_AC = Quantity(0.9e-12, "J", "E", HOROWITZ_2014, "fp32 add")
ANN_ENERGY_PER_EXP = Quantity(46e-12, "J", "E", HOROWITZ_2014, "an fp32 exponential taken as 10 fp32 multiply-adds "
                              "(a stated assumption)")
