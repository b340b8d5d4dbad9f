"""Chip specs: the shipped files are complete and sourced; bad user specs fail with one line."""

import copy
import json

import pytest

from backends.hardware.spec import CHIPS_DIR, REQUIRED, TAGS, chip_names, load_chip, parse_chip
from n2c.cli.main import main
from n2c.errors import N2CError


def raw(name="loihi2"):
    return json.loads((CHIPS_DIR / f"{name}.json").read_text())


@pytest.mark.parametrize("name", ["loihi1", "loihi2"])
def test_shipped_specs_state_every_value_with_tag_and_source(name):
    chip = load_chip(name)
    assert set(REQUIRED) <= set(chip.values)
    for q in chip.values.values():
        assert q.tag in TAGS and q.source and q.unit
        assert all(a.tag in TAGS and a.source for a in q.alternatives)
    assert sum(len(p.holds) for p in chip.memory) == 3


def test_shipped_numbers_match_the_fact_sheet():
    l1, l2 = load_chip("loihi1"), load_chip("loihi2")
    assert (l1.int("neurons_per_core"), l2.int("neurons_per_core")) == (1024, 8192)
    assert l1.memory[0].bits.value == 16384 * 64 and l2.memory[0].bits.value == 192 * 1024 * 8
    assert l1["energy_synop"] == 23.6e-12 and l1.values["energy_synop"].tag == "S"
    assert l2.values["energy_synop"].tag == "P"  # no Loihi 2 per-op energy is published
    assert l2.values["static_power_per_chip"].tag == "M"
    assert (l1.int("graded_spike_bits"), l2.int("graded_spike_bits")) == (1, 32)
    assert "not public" in l2.note


def test_barrier_grows_from_one_tile_to_the_chip_and_jumps_across_chips():
    chip = load_chip("loihi1")
    assert chip.barrier_sync(1, 1) == pytest.approx(113e-9)
    assert chip.barrier_sync(32, 1) == pytest.approx(465e-9)
    assert 113e-9 < chip.barrier_sync(16, 1) < 465e-9
    assert chip.barrier_sync(5, 2) == 14.3e-6


def test_a_user_spec_file_loads(tmp_path):
    spec = raw()
    spec["key"], spec["name"] = "mychip", "My chip"
    spec["values"]["neurons_per_core"]["value"] = 2048
    path = tmp_path / "mychip.json"
    path.write_text(json.dumps(spec))
    chip = load_chip(str(path))
    assert chip.name == "My chip" and chip.int("neurons_per_core") == 2048
    assert "loihi1" in chip_names() and "loihi2" in chip_names()


def _broken(mutate):
    spec = copy.deepcopy(raw())
    mutate(spec)
    return spec


BAD = [
    (lambda s: s.pop("format"), "not an n2c-chip-spec file"),
    (lambda s: s.update(format_version=9), "format_version 9"),
    (lambda s: s["values"].pop("energy_synop"), "missing values: energy_synop"),
    (lambda s: s["values"]["energy_synop"].update(value=-1), "values.energy_synop.value must be a finite number"),
    (lambda s: s["values"]["energy_synop"].update(value="23 pJ"), "values.energy_synop.value"),
    (lambda s: s["values"]["energy_synop"].update(tag="X"), "tag 'X' is not one of"),
    (lambda s: s["values"]["energy_synop"].update(source="nobody"), "source 'nobody' is not listed"),
    (lambda s: s["values"]["energy_synop"].pop("source"), "values.energy_synop lacks source"),
    (lambda s: s["values"]["neurons_per_core"].update(value=10.5), "must be a whole number"),
    (lambda s: s["values"]["neurons_per_core"].update(value=0), "must be at least 1"),
    (lambda s: s["values"]["conv_weight_sharing"].update(value=2), "must be 0 or 1"),
    (lambda s: s["values"]["cores_per_chip"].update(value=1000), "holds fewer than 1000 cores"),
    (lambda s: s.update(memory_per_core=[]), "memory_per_core"),
    (lambda s: s["memory_per_core"][0].update(holds=["synapses", "state"]), "unknown 'state'"),
    (lambda s: s["memory_per_core"][0].update(holds=["synapses"]), "neuron_state must be held by exactly one"),
]


@pytest.mark.parametrize("mutate, message", BAD)
def test_bad_specs_fail_with_one_line_naming_the_field(mutate, message):
    with pytest.raises(N2CError) as e:
        parse_chip(_broken(mutate), "my.json")
    text = str(e.value)
    assert message in text and "\n" not in text and text.startswith("my.json:")


def test_cli_refuses_unknown_hardware_and_bad_spec_files(digits_nir, tmp_path, capsys):
    assert main(["report", str(digits_nir), "--hardware", "loihi3", "-o", str(tmp_path / "r")]) == 2
    assert "unknown hardware 'loihi3'" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["report", str(digits_nir), "--hardware", str(bad), "-o", str(tmp_path / "r")]) == 2
    assert "is not readable JSON" in capsys.readouterr().err
    assert main(["report", str(digits_nir), "--hardware", str(tmp_path / "none.json"), "-o", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
