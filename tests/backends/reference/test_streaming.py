"""Streaming: runs over the data in chunks give what one big batch gives, bit for bit, while
holding one chunk at a time."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.float.dynamics import discretization
from backends.hardware.spec import load_chip
from backends.nir.to_layers import import_nir
from backends.reference.simulate import run_chunks, run_encoded
from n2c.cli.pipeline import chunk_size, load_network, report_network, run_arrays, run_integer, unit_spikes
from n2c.fixed_point import StateClamp
from n2c.neurons.kind import floor_divide
from tests.random_networks import dense_network


def _inputs(net, samples, seed=3):
    return np.random.default_rng(seed).integers(0, 256, (net.timesteps, samples, *net.source.shape))


@pytest.mark.parametrize("kind", ["mtn", "parallel", "sfn"])
def test_chunks_keeping_nothing_give_the_big_batch_readout_and_spike_counts(kind):
    net = dense_network(7, kind, timesteps=3)
    s_in = _inputs(net, 11)
    whole = run_encoded(net, s_in)
    streamed = run_integer(net, lambda b: s_in[:, b], 11, record=False, batch_size=3)
    assert np.array_equal(streamed.output, whole.output) and np.array_equal(streamed.current, whole.readout_current)
    assert streamed.messages == {}  # nothing of any layer kept
    assert streamed.spikes == unit_spikes(net, whole.messages) and sum(streamed.spikes.values()) > 0
    assert streamed.overflows == whole.overflows


def test_a_run_keeps_only_the_messages_asked_for():
    net = dense_network(1, "mtn", timesteps=2)
    s_in = _inputs(net, 4)
    whole = run_encoded(net, s_in)
    some = next(name for name in whole.messages if name != net.source.name)
    part = run_encoded(net, s_in, keep={some})
    assert set(part.messages) == {some} and np.array_equal(part.messages[some], whole.messages[some])
    assert np.array_equal(part.output, whole.output)
    assert run_encoded(net, s_in, keep=()).messages == {}


def test_chunks_cover_every_sample_once():
    net = dense_network(2, "mtn", timesteps=2)
    s_in = _inputs(net, 10)
    seen = [batch for batch, _ in run_chunks(net, lambda b: s_in[:, b], 10, 4, keep=())]
    assert seen == [slice(0, 4), slice(4, 8), slice(8, 10)]


def test_array_runs_in_chunks_equal_one_batch(digits_nir, digits_test):
    graph = import_nir(str(digits_nir))
    x = np.broadcast_to(digits_test.x[:40], (graph.timesteps, 40, *digits_test.x.shape[1:]))
    one = run_arrays(graph, x, "int", input_scale=digits_test.input_scale, batch_size=40, record=True)
    chunked = run_arrays(graph, x, "int", input_scale=digits_test.input_scale, batch_size=7)
    assert np.array_equal(one.output, chunked.output) and chunked.messages is None
    assert chunked.spikes == unit_spikes(one.net, one.messages) and one.overflows == chunked.overflows
    floats = [run_arrays(graph, x, "float", discretization("nir"), batch_size=n) for n in (40, 7)]
    # float64: BLAS blocks a product by its batch size, so the last bits may differ; the classes may not
    assert np.array_equal(floats[0].predictions, floats[1].predictions)
    assert np.abs(floats[0].output - floats[1].output).max() <= 1e-12 * np.abs(floats[0].output).max()


def test_reports_in_small_chunks_equal_one_chunk(digits_nir, digits_test):
    """The activity counts accumulate per chunk (and the next chunk runs in a second thread while
    one is counted): the report is the same, number for number."""
    chip, data = load_chip("loihi2"), digits_test.head(60)
    small = report_network(str(digits_nir), chip, data, chunk=7)
    whole = report_network(str(digits_nir), chip, data, chunk=60)
    assert json.dumps(small, sort_keys=True) == json.dumps(whole, sort_keys=True)
    assert small["activity"]["totals"]["synops"] > 0 and small["data"]["samples"] == 60


def test_chunk_size_bounds_a_chunk_and_is_at_least_one(digits_nir):
    _, net = load_network(str(digits_nir))
    per_sample = chunk_size(net, budget=10 ** 9)
    assert chunk_size(net, budget=1) == 1 and chunk_size(net, budget=10 ** 9) > chunk_size(net, budget=10 ** 6)
    assert per_sample >= 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-2 ** 40, 2 ** 40), min_size=1, max_size=20), st.integers(1, 2 ** 24))
def test_integer_floor_division_through_float64_is_exact(m, theta):
    m = np.array(m, np.int64)
    assert np.array_equal(floor_divide(m, np.int64(theta)), np.floor_divide(m, theta))


def test_integer_floor_division_past_float64_falls_back_to_integers():
    m = np.array([2 ** 62 + 1, -(2 ** 62) - 3], np.int64)
    assert np.array_equal(floor_divide(m, np.int64(3)), np.floor_divide(m, 3))


@given(st.lists(st.integers(-2 ** 30, 2 ** 30), min_size=1, max_size=30))
def test_state_clamp_counts_exactly_what_it_saturates(values):
    x = np.array(values, np.int64)
    clamp = StateClamp()
    y = clamp(x)
    assert np.array_equal(y, np.clip(x, -2 ** 23, 2 ** 23 - 1))
    assert clamp.count == int((y != x).sum())


@given(st.lists(st.integers(-2 ** 30, 2 ** 30), min_size=1, max_size=20), st.integers(1, 2 ** 23),
       st.integers(-2 ** 23, 2 ** 23))
def test_the_one_spike_step_without_division_equals_the_floor_rule(currents, theta, v0):
    from n2c.neurons.multi_threshold import step
    current = np.array(currents, np.int64)
    v = np.full(len(current), v0, np.int64)
    k, v_next = step(v, current, np.int64(theta), 1, 0)
    m = v + current
    want = np.clip(np.floor_divide(m, theta), 0, 1)
    assert np.array_equal(k, want) and np.array_equal(v_next, m - theta * want)
