"""The energy model (backends.hardware.cost): components add up, chunks add up, T is the
network's, and the bit-plane packet count is the number of set bits."""

from __future__ import annotations

import numpy as np
import pytest

from backends.hardware.cost import ENERGY_COMPONENTS, Activity, _popcount, price
from backends.hardware.mapping import map_network
from backends.hardware.spec import load_chip
from backends.reference.simulate import run_encoded
from n2c.errors import QuantizationError
from tests.random_networks import dense_network


def _messages(net, s_in):
    run = run_encoded(net, s_in)
    return {**run.messages, net.source.name: s_in}


@pytest.fixture(scope="module")
def net():
    return dense_network(3, "mtn", timesteps=2)


def _inputs(net, samples, seed=0):
    return np.random.default_rng(seed).integers(0, 200, (net.timesteps, samples, *net.source.shape))


def test_components_sum_to_the_totals(net):
    act = Activity(net, map_network(net, load_chip("loihi2")))
    act.add(_messages(net, _inputs(net, 5)))
    priced = price(act)
    energy = priced["energy"]
    assert set(energy["components"]) | {"static"} == set(ENERGY_COMPONENTS) | {"static"}
    assert energy["dynamic"] == pytest.approx(sum(v for k, v in energy["components"].items() if k != "static"),
                                              rel=1e-12)
    assert energy["total"] == pytest.approx(energy["dynamic"] + energy["components"]["static"], rel=1e-12)
    assert energy["range"]["low"] <= energy["total"] <= energy["range"]["high"]
    assert priced["edp_J_s"] == pytest.approx(energy["total"] * priced["latency"]["inference_s"], rel=1e-12)


def test_chunks_add_up_to_one_run(net):
    s_in = _inputs(net, 6, seed=1)
    chip = load_chip("loihi2")
    whole, parts = Activity(net, map_network(net, chip)), Activity(net, map_network(net, chip))
    whole.add(_messages(net, s_in))
    for i in (0, 2, 5):
        parts.add(_messages(net, s_in[:, i:{0: 2, 2: 5, 5: 6}[i]]))
    a, b = parts.per_inference(), whole.per_inference()
    assert a["totals"] == pytest.approx(b["totals"], rel=1e-12)
    assert {k: v for k, v in a["input"].items() if k != "name"} == \
        pytest.approx({k: v for k, v in b["input"].items() if k != "name"}, rel=1e-12)
    for x, y in zip(a["layers"], b["layers"]):
        assert {k: v for k, v in x.items() if k not in ("name", "kind")} == \
            pytest.approx({k: v for k, v in y.items() if k not in ("name", "kind")}, rel=1e-12)


def test_messages_of_another_t_are_refused(net):
    act = Activity(net, map_network(net, load_chip("loihi2")))
    with pytest.raises(QuantizationError, match="network runs T = 2"):
        act.add({net.source.name: np.zeros((3, 1, *net.source.shape), np.int64)})


def test_popcount_counts_twos_complement_bits():
    assert _popcount(np.array([0, 1, 3, -1, -2]), 4).tolist() == [0, 1, 2, 4, 3]
