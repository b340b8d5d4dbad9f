"""NIR's continuous neurons as steps, by each scheme of backends.float.dynamics, checked
against the equations written out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from backends.float.dynamics import DISCRETIZATIONS, NeuronState, discretization
from backends.ir.layers import DynamicsLayer
from n2c.errors import N2CError


def _lif(**params) -> DynamicsLayer:
    shape = (2,)
    full = {k: np.full(shape, v, np.float64) for k, v in params.items()}
    return DynamicsLayer("lif", ["x"], shape, shape, kind="LIF", **full)


LIF = dict(r=1.0, tau_mem=0.01, v_leak=0.0, v_threshold=1.0, v_reset=0.0)


def test_nir_scheme_is_forward_euler_with_a_hard_reset():
    state = NeuronState(_lif(**LIF), discretization("nir", 1e-3), batch=1)
    x = np.array([[30.0, 1.0]])  # the second neuron tends to v = 1 from below: never v > θ
    v, spikes = np.zeros(2), []
    for _ in range(6):
        v = v + 1e-3 / 0.01 * (0.0 - v + x[0])
        z = v > 1.0
        v = np.where(z, 0.0, v)
        spikes.append(z)
        assert np.array_equal(state.step(x)[0], z.astype(np.float64))
    assert np.allclose(state.v[0], v)
    assert np.array(spikes)[:, 0].any() and not np.array(spikes)[:, 1].any()


def test_snntorch_scheme_resets_by_subtraction_one_step_late():
    state = NeuronState(_lif(**LIF), discretization("snntorch", 1e-3), batch=1)
    x = np.array([[40.0, 0.0]])
    v, pending = np.zeros(2), np.zeros(2, bool)
    for _ in range(5):
        v = v + 1e-3 / 0.01 * (0.0 - v + x[0])
        v = v - pending * 1.0
        z = v > 1.0
        pending = z
        assert np.array_equal(state.step(x)[0], z.astype(np.float64))


def test_discretizations_and_their_errors():
    assert set(DISCRETIZATIONS) == {"nir", "snntorch", "snntorch-nodelay", "norse"}
    assert discretization("nir").dt == 1e-3 and discretization("nir", 0.5).dt == 0.5
    with pytest.raises(N2CError, match="unknown discretization 'euler'"):
        discretization("euler")
    with pytest.raises(N2CError, match="the time step must be positive"):
        discretization("nir", -1.0)
