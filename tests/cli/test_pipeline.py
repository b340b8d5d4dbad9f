"""The pipeline's one backend dispatch (run_integer): both timings and both backends give the
same readout; bad requests fail with one line."""

from __future__ import annotations

import numpy as np
import pytest

from backends.reference.simulate import run_encoded
from n2c.cli.pipeline import run_backend, run_integer
from n2c.errors import N2CError
from tests.random_networks import dense_network


def _inputs(net, samples=4):
    return np.random.default_rng(5).integers(0, 256, (net.timesteps, samples, *net.source.shape))


@pytest.mark.parametrize("kind", ["mtn", "parallel", "sfn"])
def test_reference_dispatch_equals_the_simulator_in_batches(kind):
    net = dense_network(2, kind, timesteps=3)
    s_in = _inputs(net, 5)
    ref = run_encoded(net, s_in)
    run = run_integer(net, lambda batch: s_in[:, batch], 5, batch_size=2)
    assert np.array_equal(run.output, ref.output) and np.array_equal(run.current, ref.readout_current)
    assert all(np.array_equal(run.messages[k], v) for k, v in ref.messages.items())


@pytest.mark.parametrize("kind", ["mtn", "parallel"])
def test_lava_timing_gives_the_zero_delay_readout(kind):
    net = dense_network(4, kind, timesteps=2)
    s_in = _inputs(net, 3)
    zero, lava = run_integer(net, lambda b: s_in[:, b], 3), run_integer(net, lambda b: s_in[:, b], 3, timing="lava")
    assert np.array_equal(zero.output, lava.output) and np.array_equal(zero.current, lava.current)


def test_bad_requests_are_one_line_errors(digits_test):
    net = dense_network(0, "mtn", timesteps=1)
    with pytest.raises(N2CError, match="unknown backend 'gpu'"):
        run_integer(net, lambda b: _inputs(net)[:, b], 4, backend="gpu")
    with pytest.raises(N2CError, match=r"samples of shape \(1, 8, 8\) but the graph expects \(7,\)"):
        run_backend(net, digits_test.x[:2], "reference")
