"""Property tests of the neuron equations (n2c.neurons) and the QCFS activation."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from n2c.neurons.multi_threshold import qcfs_count
from n2c.neurons.multi_threshold import step as multi_threshold_step
from n2c.ann.qcfs import QCFS
from n2c.snn.modules import MultiThresholdIF

# Dyadic rationals (k / 2^8) keep every float operation below exact, so the tests can
# demand equality with the paper's formula rather than a tolerance.
dyadic = st.integers(-4096, 4096).map(lambda k: k / 256.0)
levels = st.sampled_from([1, 2, 4, 8, 16])
lams = st.sampled_from([0.5, 1.0, 2.0, 4.0, 8.0])


def paper_qcfs(z: float, lam: float, L: int) -> float:
    """Bu et al. 2022: h(z) = λ·clip(floor(z·L/λ + 1/2)/L, 0, 1)."""
    return lam * min(max(np.floor(z * L / lam + 0.5) / L, 0.0), 1.0)


@given(dyadic, lams, levels)
def test_qcfs_matches_paper_formula(z, lam, L):
    q = QCFS(L, lam)
    assert float(q(torch.tensor(z))) == paper_qcfs(z, lam, L)


@given(lams, levels)
def test_qcfs_range_and_ties_round_up(lam, L):
    q = QCFS(L, lam)
    theta = lam / L
    z = torch.tensor([theta * (i + 0.5) for i in range(-2, L + 2)])  # exactly at the ties
    out = q(z)
    expected = torch.clamp(torch.arange(-2, L + 2) + 1, 0, L) * theta
    assert torch.equal(out, expected.float())
    assert float(q(torch.tensor(-1e6))) == 0.0 and float(q(torch.tensor(1e6))) == lam


@given(dyadic, lams, levels)
def test_one_step_multi_threshold_neuron_equals_qcfs(z, lam, L):
    theta = lam / L
    k, v = multi_threshold_step(theta / 2, z, theta, L)
    assert k * theta == paper_qcfs(z, lam, L)
    # conservation: what was not emitted stays in the membrane
    assert theta / 2 + z - k * theta == v


@given(st.lists(dyadic, min_size=1, max_size=12), lams, st.sampled_from([1, 2, 3]))
def test_if_neuron_conservation_and_count_bounds(inputs, theta, K):
    """Σ_t out = θ·count, v(T) = v(0) + Σ I − θ·count and 0 ≤ count(t) ≤ K·t."""
    v0 = theta / 2
    v, total = v0, 0
    for t, current in enumerate(inputs, start=1):
        k, v = multi_threshold_step(v, current, theta, K)
        total += k
        assert 0 <= total <= K * t
    assert v == v0 + sum(inputs) - theta * total


@given(st.integers(0, 512).map(lambda k: k / 256.0), levels)
def test_if_at_T_equal_L_with_constant_input_equals_qcfs(z, L):
    """§9.2: an IF neuron (θ = λ, K = 1, v(0) = θ/2) fed a constant z for T = L steps
    averages exactly to QCFS(z), ties included."""
    lam = 1.0
    neuron = MultiThresholdIF(lam, max_spikes=1, timesteps=L)
    out = neuron(torch.full((L, 1), z))
    assert float(out.sum()) / L == paper_qcfs(z, lam, L)


@settings(max_examples=50)
@given(st.lists(st.integers(-2000, 2000), min_size=1, max_size=8), st.integers(1, 500), st.integers(1, 9),
       st.integers(-500, 500))
def test_integer_step_is_floor_division(currents, theta, K, v0):
    """On int64 the same function is exact: k = clip((v + I) // θ, 0, K)."""
    v = np.int64(v0)
    for c in currents:
        m = v + c
        k, v = multi_threshold_step(v, np.int64(c), np.int64(theta), K)
        assert k == min(max(m // theta, 0), K)
        assert v == m - k * theta


@settings(max_examples=30)
@given(st.integers(0, 2 ** 31 - 1), lams, levels)
def test_qcfs_module_and_neuron_equation_agree_bit_for_bit(seed, lam, L):
    """The QCFS module computes n2c.neurons.multi_threshold.qcfs_count with the kind's torch kernel: same floats on any input."""
    z = torch.randn(1000, generator=torch.Generator().manual_seed(seed)) * lam
    q = QCFS(L, lam)
    assert torch.equal(q(z), qcfs_count(z, q.lam.detach() / L, L) * (q.lam.detach() / L))
    assert torch.equal(torch.jit.script(q)(z), q(z))


def test_qcfs_gradient_passes_straight_through_inside_the_window():
    q = QCFS(4, 1.0)
    z = torch.tensor([-0.5, 0.3, 0.6, 2.0], requires_grad=True)
    q(z).sum().backward()
    assert z.grad.tolist() == [0.0, 1.0, 1.0, 0.0]
    assert q.lam.grad is not None
