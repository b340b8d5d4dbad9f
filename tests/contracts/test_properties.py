"""Hypothesis property tests of the neuron equations against the invariants of
docs/conversion-methods.md §9 (QCFS, IF, conservation, unevenness, parallel neuron,
MTN, OPI, polarity/PMSM, SFN) and of the torch modules that spell them out.

Exactness: inputs are dyadic rationals (k / 2^n) and thresholds powers of two, so every
float operation below is exact and the tests demand equality with the formulas. A
tolerance appears only where the mathematics itself is approximate (a Riemann sum, a
convergence bound); each one says why.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from n2c.neurons.multi_threshold import qcfs_count
from n2c.neurons.multi_threshold import step as multi_threshold_step
from n2c.neurons.parallel import count as parallel_count
from n2c.neurons.parallel import spikes as parallel_spikes
from n2c.neurons.polarity import signed_qcfs_count
from n2c.neurons.scale_and_fire import step as scale_and_fire_step
from tests.oracles import if_counts, parallel_spikes_matrix
from n2c.ann.qcfs import QCFS, SignedQCFS
from n2c.snn.modules import MultiThresholdIF, ParallelNeuron, ScaleAndFire


def fast(n: int):
    """max_examples chosen so the whole file stays well under 30 s on 2 cores; no deadline
    (the first torch call of a test can take longer than hypothesis' default 200 ms)."""
    return settings(max_examples=n, deadline=None)


# ---------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------
dyadic = st.integers(-4096, 4096).map(lambda k: k / 256.0)
levels = st.sampled_from([1, 2, 4, 8, 16])
lams = st.sampled_from([0.5, 1.0, 2.0, 4.0, 8.0])
pow2_T = st.sampled_from([1, 2, 4, 8, 16])
seeds = st.integers(0, 2**31 - 1)
coarse = st.integers(-128, 128).map(lambda k: k / 8.0)  # lands on thresholds and ties often
fine_or_coarse = st.one_of(dyadic, coarse)


def z_near_grid(lam: float, L: int):
    """z on a fine grid of the level step θ = λ/L: hits zero band, ties and saturation often."""
    theta = lam / L
    return st.integers(-8 * (L + 2), 8 * (L + 2)).map(lambda j: theta * j / 8.0)


def paper_qcfs(z, lam, L):
    """Bu et al. 2022: h(z) = λ·clip(floor(z·L/λ + 1/2), 0, L)/L."""
    return lam * np.clip(np.floor(np.asarray(z, dtype=np.float64) * L / lam + 0.5), 0, L) / L


def paper_signed(z, lam, L):
    """PMSM signed quantizer: q(z) = λ/L·clip(floor(z·L/λ + 1/2), -L, L)."""
    return lam / L * np.clip(np.floor(np.asarray(z, dtype=np.float64) * L / lam + 0.5), -L, L)


def cumulative(counts):
    return np.cumsum(np.asarray(counts), axis=0)


# ---------------------------------------------------------------------------------------
# §9.1 QCFS forward
# ---------------------------------------------------------------------------------------
@fast(150)
@given(st.data(), lams, levels)
def test_qcfs_range_zero_band_saturation_and_formula(data, lam, L):
    z = data.draw(st.one_of(dyadic, z_near_grid(lam, L)))
    out = float(QCFS(L, lam)(torch.tensor(z)))
    theta = lam / L
    k = out / theta
    assert k == int(k) and 0 <= k <= L  # range {0, λ/L, …, λ}
    if z < lam / (2 * L):
        assert out == 0.0
    if z >= lam * (1 - 1 / (2 * L)):
        assert out == lam
    assert out == paper_qcfs(z, lam, L)


@fast(100)
@given(st.integers(-3, 20), lams, levels)
def test_qcfs_ties_round_up(n, lam, L):
    """At z·L/λ + 1/2 = n ∈ ℤ the level is n (clipped): floor(·+1/2), not round-half-even."""
    theta = lam / L
    z = theta * (n - 0.5)
    assert float(QCFS(L, lam)(torch.tensor(z))) == min(max(n, 0), L) * theta
    assert float(SignedQCFS(L, lam)(torch.tensor(z))) == min(max(n, -L), L) * theta


@fast(40)
@given(seeds, levels, st.lists(lams, min_size=1, max_size=5), st.booleans())
def test_per_channel_lambda_gives_each_channel_its_scalar_result(seed, L, channel_lams, signed):
    """λ shaped (C, 1, 1): channel c of the output equals the scalar-λ_c layer on channel c."""
    cls = SignedQCFS if signed else QCFS
    C = len(channel_lams)
    rng = np.random.default_rng(seed)
    z = torch.tensor(rng.integers(-3000, 3000, size=(3, C, 4, 5)) / 256.0, dtype=torch.float32)
    layer = cls(L, torch.tensor(channel_lams).reshape(C, 1, 1))
    out = layer(z)
    assert out.shape == z.shape
    for c, lam in enumerate(channel_lams):
        assert torch.equal(out[:, c], cls(L, lam)(z[:, c]))


@fast(150)
@given(st.data(), lams, levels)
def test_signed_qcfs_range_formula_and_odd_symmetry(data, lam, L):
    z = data.draw(st.one_of(dyadic, z_near_grid(lam, L)))
    q = SignedQCFS(L, lam)
    theta = lam / L
    out, out_neg = float(q(torch.tensor(z))), float(q(torch.tensor(-z)))
    k = out / theta
    assert k == int(k) and -L <= k <= L  # range {-λ, …, λ} in steps λ/L
    assert out == paper_signed(z, lam, L)
    u = z * L / lam + 0.5  # exact: dyadic z, power-of-two λ and L
    if u != np.floor(u):
        assert out_neg == -out  # odd symmetry off the ties
    else:
        # at a tie z = θ(n - 1/2) both z and -z round up: q(z) + q(-z) = θ while neither side
        # saturates (|z| < λ), and 0 once both are clipped (|z| > λ)
        assert out + out_neg == (theta if abs(z) < lam else 0.0)


# ---------------------------------------------------------------------------------------
# §9.2 IF neuron, §9.3 conservation
# ---------------------------------------------------------------------------------------
@fast(120)
@given(st.data(), lams, levels)
def test_if_neuron_constant_input_at_T_equal_L_is_qcfs(data, lam, L):
    """θ = λ, v(0) = θ/2, K = 1, T = L, constant z (any real, incl. < 0 and > λ):
    mean output == QCFS(z) exactly; cumulative count 0 ≤ n(t) ≤ t; threshold inclusive."""
    z = data.draw(st.one_of(dyadic, z_near_grid(lam, L)))
    counts, _ = if_counts(np.full((L, 1), z), lam, lam / 2)
    assert lam * counts.sum() / L == paper_qcfs(z, lam, L)
    n = cumulative(counts)[:, 0]
    assert all(0 <= n[t] <= t + 1 for t in range(L))
    module = MultiThresholdIF(lam, max_spikes=1, timesteps=L)
    out = module(torch.full((L, 1), z))
    assert float(out.sum()) / L == paper_qcfs(z, lam, L)
    assert torch.equal(module.counts(torch.full((L, 1), z))[:, 0, 0], torch.tensor(counts[:, 0], dtype=torch.float32))


@pytest.mark.parametrize("theta", [0.5, 1.0, 4.0])
def test_if_threshold_is_inclusive(theta):
    """m = θ fires (H(0) = 1) and leaves v = 0; m just below θ does not fire."""
    k, v = multi_threshold_step(theta / 2, theta / 2, theta, 1)
    assert (k, v) == (1, 0.0)
    k, v = multi_threshold_step(theta / 2, theta / 2 - 1 / 256, theta, 1)
    assert (k, v) == (0, theta - 1 / 256)


@fast(120)
@given(st.lists(dyadic, min_size=1, max_size=16), lams, st.integers(1, 4), st.integers(0, 4), dyadic)
def test_conservation_multi_spike_and_polarity(inputs, theta, K, K_neg, v0):
    """Σ out = θ·Σk and v(T) = v(0) + Σ I − θ·Σk exactly, for K ≥ 1 positive and K⁻ ≥ 0
    negative spikes per step; the cumulative count stays in [-K⁻·t, K·t]."""
    counts, vT = if_counts(np.array(inputs), theta, v0, K, K_neg)
    assert vT == v0 + sum(inputs) - theta * counts.sum()
    n = cumulative(counts)
    assert all(-K_neg * (t + 1) <= n[t] <= K * (t + 1) for t in range(len(inputs)))
    module = MultiThresholdIF(theta, max_spikes=K, timesteps=len(inputs), v_init=v0, min_spikes=K_neg)
    out = module(torch.tensor(inputs, dtype=torch.float32).reshape(-1, 1))
    assert float(out.sum()) == theta * counts.sum()


# ---------------------------------------------------------------------------------------
# §9.4 multi-layer sequential IF is not exact (unevenness error)
# ---------------------------------------------------------------------------------------
def _two_layer_sequential(seed, T=4, lam1=2.0, lam2=2.0):
    """Dyadic 2-layer network: layer-1 IF fed W1·x at every step, layer 2 fed W2·(θ1·s1(t)).
    Returns (layer-1 SNN mean, layer-1 ANN, layer-2 SNN mean, layer-2 ANN, layer-2 currents)."""
    rng = np.random.default_rng(seed)
    n0, n1, n2, B = 8, 16, 16, 32
    W1 = rng.integers(-16, 17, (n1, n0)) / 16
    W2 = rng.integers(-16, 17, (n2, n1)) / 16
    x = rng.integers(0, 17, (B, n0)) / 16
    z1 = x @ W1.T
    c1, _ = if_counts(np.broadcast_to(z1, (T,) + z1.shape), lam1, lam1 / 2)
    a1 = paper_qcfs(z1, lam1, T)
    current2 = (lam1 * c1) @ W2.T
    c2, _ = if_counts(current2, lam2, lam2 / 2)
    a2 = paper_qcfs(a1 @ W2.T, lam2, T)
    return lam1 * c1.sum(0) / T, a1, lam2 * c2.sum(0) / T, a2, current2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_layer_sequential_if_has_unevenness_error(seed):
    """Layer 1 (constant input) equals QCFS exactly; layer 2 (uneven spike trains) does not:
    some outputs differ (measured ~15–20% of them with these sizes), although its summed input
    equals T times the ANN pre-activation exactly. The parallel neuron fed the same
    currents has no such error."""
    T, lam2 = 4, 2.0
    snn1, ann1, snn2, ann2, current2 = _two_layer_sequential(seed, T=T, lam2=lam2)
    assert np.array_equal(snn1, ann1)
    mismatch = np.mean(snn2 != ann2)
    assert 0 < mismatch < 0.5
    parallel = lam2 * parallel_count(current2.sum(0), lam2, T) / T
    assert np.array_equal(parallel, ann2)


def test_unevenness_paper_example_weight_one_and_a_half():
    """Weight 1.5, θ = λ = 1, v(0) = 1/2, T = L = 4. The input neuron's rate alone fixes the
    ANN value, but the IF output depends on when the input spikes arrive: a late train at
    t = 3, 4 (rate 1/2) leaves charge in the membrane and gives 2 spikes where QCFS(0.75)
    gives 3; the even train t = 1, 3 with the same rate gives 3. A train at t = 1, 3, 4
    (rate 3/4) gives 4 = QCFS(1.125). The parallel neuron gives the ANN value in every case.
    (The doc reports this example as reproduced; the paper figure itself was not available
    here, so this is the reading of it that the numbers support.)"""
    T, w, theta = 4, 1.5, 1.0

    def run(spike_times):
        train = np.array([1.0 if t in spike_times else 0.0 for t in range(1, T + 1)])
        counts, _ = if_counts(w * train, theta, theta / 2)
        ann = paper_qcfs(w * train.mean(), theta, T) * T / theta
        par = parallel_count((w * train).sum(), theta, T)
        return int(counts.sum()), int(ann), int(par)

    assert run({3, 4}) == (2, 3, 3)  # one spike fewer than expected: unevenness error
    assert run({1, 3}) == (3, 3, 3)  # even train, same rate: exact
    assert run({1, 2}) == (3, 3, 3)
    assert run({1, 3, 4}) == (4, 4, 4)


# ---------------------------------------------------------------------------------------
# §9.5 parallel neuron
# ---------------------------------------------------------------------------------------
@fast(150)
@given(st.lists(dyadic, min_size=1, max_size=16), lams)
def test_parallel_count_formula_and_sorted_spikes(inputs, theta):
    """For any (uneven, signed) input sequence: n = clip(floor(ΣI/θ + 1/2), 0, T), and the spike
    train is non-increasing in t (spikes first)."""
    T = len(inputs)
    total = float(np.sum(inputs))
    n = parallel_count(np.float64(total), theta, T)
    assert n == np.clip(np.floor(total / theta + 0.5), 0, T)
    spikes = parallel_spikes(np.asarray(n), T)
    assert spikes.shape == (T,) and spikes.sum() == n
    assert np.all(np.diff(spikes) <= 0)
    module = ParallelNeuron(theta, timesteps=T)
    counts = module.counts(torch.tensor(inputs, dtype=torch.float32).reshape(T, 1))
    assert torch.equal(counts[:, 0, 0], torch.tensor(spikes, dtype=torch.float32))


@fast(80)
@given(st.lists(dyadic, min_size=1, max_size=12), lams, st.randoms(use_true_random=False))
def test_parallel_neuron_is_independent_of_input_time_order(inputs, theta, rnd):
    T = len(inputs)
    order = list(range(T))
    rnd.shuffle(order)
    module = ParallelNeuron(theta, timesteps=T)
    x = torch.tensor(inputs, dtype=torch.float32).reshape(T, 1)
    assert torch.equal(module(x), module(x[order]))


def _tie(inputs, theta):
    u = float(np.sum(inputs)) / theta + 0.5
    return u == np.floor(u)


@fast(150)
@given(st.lists(st.integers(-512, 512).map(lambda k: k / 64.0), min_size=1, max_size=12),
       st.sampled_from([0.5, 1.0, 2.0]))
def test_parallel_matrix_form_is_closed_form_reversed(inputs, theta):
    """Paper order s = H(Λ_pc·I + b − θ) equals the O(T) spikes-first train reversed in time.
    Ties (ΣI/θ + 1/2 ∈ ℤ) are excluded here: see the xfail test below."""
    assume(not _tie(inputs, theta))
    T = len(inputs)
    matrix = parallel_spikes_matrix(np.array(inputs), theta)
    closed = parallel_spikes(parallel_count(np.float64(np.sum(inputs)), theta, T), T)
    assert np.array_equal(matrix, closed[::-1])
    # batched: trailing dimensions are neurons
    batch = np.stack([np.array(inputs), -np.array(inputs)], axis=1)
    closed_b = parallel_spikes(parallel_count(batch.sum(0), theta, T), T)
    if not _tie([-v for v in inputs], theta):
        assert np.array_equal(parallel_spikes_matrix(batch, theta), closed_b[::-1])


def test_parallel_matrix_form_at_exact_tie():
    inputs = np.array([0.96875, -4.6875, -4.25, -0.53125, 4.40625, 3.34375, 4.640625, -1.140625])
    """At an exact tie the closed form is exact, and so is the paper's matrix form in exact
    rational arithmetic; only its float evaluation (1/(T-x+1) rounded) can lose the spike,
    which is why the simulators use the closed form."""
    from fractions import Fraction
    theta, T = 0.5, 8  # ΣI = 2.75: (ΣI + θ/2)/θ = 6 exactly, so 6 spikes
    assert parallel_count(np.float64(inputs.sum()), theta, T) == 6
    total = sum(Fraction(v) for v in inputs) + Fraction(theta) / 2
    exact_rows = [total / (T - x + 1) >= Fraction(theta) for x in range(1, T + 1)]
    assert sum(exact_rows) == 6 and exact_rows == sorted(exact_rows)  # paper order: spikes last


@fast(60)
@given(seeds, st.integers(1, 8), st.lists(lams, min_size=1, max_size=4))
def test_parallel_module_equals_functions_per_channel(seed, T, channel_thetas):
    C = len(channel_thetas)
    rng = np.random.default_rng(seed)
    x = rng.integers(-2000, 2000, size=(T * 3, C)) / 256.0
    theta = np.array(channel_thetas)
    module = ParallelNeuron(torch.tensor(channel_thetas), timesteps=T)
    counts = module.counts(torch.tensor(x, dtype=torch.float32))
    expected = parallel_spikes(parallel_count(x.reshape(T, 3, C).sum(0), theta, T), T)
    assert np.array_equal(counts.numpy(), expected)
    out = module(torch.tensor(x, dtype=torch.float32))
    assert np.array_equal(out.numpy(), (expected * theta).reshape(T * 3, C))


@fast(30)
@given(seeds, st.sampled_from([1, 2, 4, 8]), st.integers(2, 3), st.lists(st.sampled_from([1.0, 2.0, 4.0]), min_size=3,
                                                                          max_size=3))
def test_parallel_network_equals_qcfs_ann_at_every_layer(seed, T, depth, layer_lams):
    """Linear → ParallelNeuron(θ = λ, T) stacks, direct encoding, T = L: the SNN's per-layer
    spike counts equal the QCFS ANN's levels exactly, and so do the mean outputs (dyadic
    weights/inputs/biases, powers of two: every float32 sum is exact)."""
    rng = np.random.default_rng(seed)
    widths = [int(w) for w in rng.integers(2, 12, size=depth + 1)]
    B = 5
    linears = []
    for i in range(depth):
        lin = nn.Linear(widths[i], widths[i + 1])
        with torch.no_grad():
            lin.weight.copy_(torch.tensor(rng.integers(-16, 17, (widths[i + 1], widths[i])) / 16.0))
            lin.bias.copy_(torch.tensor(rng.integers(-32, 33, widths[i + 1]) / 64.0))
        linears.append(lin)
    x = torch.tensor(rng.integers(0, 17, (B, widths[0])) / 16.0, dtype=torch.float32)

    a = x
    s = x.unsqueeze(0).expand(T, *x.shape).reshape(T * B, -1)  # direct encoding
    with torch.no_grad():
        for lin, lam in zip(linears, layer_lams):
            qcfs = QCFS(T, lam)
            a = qcfs(lin(a))
            ann_levels = a / (lam / T)
            neuron = ParallelNeuron(lam, timesteps=T)
            current = lin(s)
            counts = neuron.counts(current).sum(0)
            assert torch.equal(counts, ann_levels)
            s = neuron(current)
            assert torch.equal(s.reshape(T, B, -1).mean(0), a)


# ---------------------------------------------------------------------------------------
# §9.7 MTN temporal-to-spatial equivalence
# ---------------------------------------------------------------------------------------
@fast(150)
@given(st.data(), lams, pow2_T)
def test_mtn_one_step_equals_T_step_if_average(data, theta, T):
    """MTN (θ/T, v(0)/T, K = T), one step, == mean over T steps of the IF neuron (θ, v(0), K = 1),
    compared as mean outputs. Holds for z ∈ [0, θ] (Chen et al.'s Theorem 1); for a constant input
    it holds for every real z, because outside [0, θ] both saturate at 0 or T spikes."""
    z = data.draw(st.one_of(st.integers(0, 256).map(lambda j: theta * j / 256), dyadic))
    v0 = data.draw(st.integers(0, 255).map(lambda j: theta * j / 256))  # any v(0) ∈ [0, θ)
    k_mtn, _ = multi_threshold_step(v0 / T, z, theta / T, T)
    mtn_out = (theta / T) * k_mtn
    counts, _ = if_counts(np.full(T, z), theta, v0)
    if_mean = theta * counts.sum() / T
    assert mtn_out == if_mean
    if v0 == theta / 2:  # optimal initial potential: both are QCFS with L = T, λ = θ
        assert mtn_out == paper_qcfs(z, theta, T)


# ---------------------------------------------------------------------------------------
# §9.11 OPI
# ---------------------------------------------------------------------------------------
@fast(40)
@given(pow2_T, st.integers(1, 2000), lams)
def test_opi_mean_error_over_uniform_z(T, N, theta):
    """z on the midpoint grid θ(j + 1/2)/N of [0, θ): mean(φ_T(z) − z) = 0 at v(0) = θ/2 and
    −θ/(2T) at v(0) = 0, up to the grid: g(z) = φ_T(z) − z is linear (slope −1, which the
    midpoint rule integrates exactly) with at most T jumps of θ/T, each costing at most
    (θ/T)·(θ/N)/2 of integral, hence |grid mean − exact mean| ≤ θ/(2N) (+ float round-off)."""
    z = theta * (np.arange(N) + 0.5) / N
    tol = theta / (2 * N) + 1e-12 * theta
    for v0, expected in [(theta / 2, 0.0), (0.0, -theta / (2 * T))]:
        counts, _ = if_counts(np.broadcast_to(z, (T, N)), theta, v0)
        phi = theta * counts.sum(0) / T
        assert abs(np.mean(phi - z) - expected) <= tol
    if N % (2 * T) == 0:  # every jump on a cell boundary: the grid mean is exact
        counts, _ = if_counts(np.broadcast_to(z, (T, N)), theta, theta / 2)
        assert abs(np.mean(theta * counts.sum(0) / T - z)) <= 1e-12 * theta


# ---------------------------------------------------------------------------------------
# §9.12 polarity (PMSM)
# ---------------------------------------------------------------------------------------
@fast(150)
@given(st.data(), lams, levels)
def test_polarity_neuron_at_T1_is_signed_quantizer(data, lam, L):
    """K = K⁻ = L, θ = λ/L, v(0) = θ/2, one step: (positive − negative spikes)·λ/L ==
    λ/L·clip(floor(zL/λ + 1/2), −L, L), ties included."""
    z = data.draw(st.one_of(dyadic, z_near_grid(lam, L)))
    theta = lam / L
    k, _ = multi_threshold_step(theta / 2, z, theta, L, L)
    positive, negative = max(k, 0), max(-k, 0)
    assert (positive - negative) * theta == paper_signed(z, lam, L)
    assert signed_qcfs_count(z, theta, L) == k
    assert float(SignedQCFS(L, lam)(torch.tensor(z))) == k * theta
    module = MultiThresholdIF(theta, max_spikes=L, timesteps=1, min_spikes=L)
    assert float(module(torch.tensor([[z]]))) == k * theta


@fast(150)
@given(st.data(), lams, levels)
def test_two_unsigned_channels_equal_signed_quantizer_except_negative_ties(data, lam, L):
    """A polarity pair built from two unsigned QCFS neurons (one fed z, one fed −z, both from
    θ/2) equals the signed quantizer except at negative ties: there both channels round up, so
    z = θ(n − 1/2), −L < n ≤ 0 gives one negative spike too many."""
    z = data.draw(st.one_of(dyadic, z_near_grid(lam, L)))
    theta = lam / L
    pair = qcfs_count(z, theta, L) - qcfs_count(-z, theta, L)
    signed = signed_qcfs_count(z, theta, L)
    n = z / theta + 0.5
    if n == np.floor(n) and -L < n <= 0:
        assert pair == signed - 1
    else:
        assert pair == signed


@fast(150)
@given(st.data(), lams, levels, pow2_T)
def test_polarity_neuron_over_T_steps_constant_input(data, lam, L, T):
    """K = K⁻ = L, θ = λ/L, v(0) = θ/2, constant z, T steps. v stays in [0, θ) (no clipping
    inside [−λ, λ], saturation outside), so Σk = clip(floor((Tz + θ/2)/θ), −TL, TL) exactly:
    the mean output is the signed quantizer with T·L levels. Hence
    |mean − clip(z, −λ, λ)| ≤ θ/(2T) ≤ θ/T: the mean converges to the clipped input (the
    quantizer's limit), not to the L-level quantizer q_L(z), from which it differs by up to
    θ/2 + θ/(2T). At T = 1 it is q_L itself."""
    z = data.draw(st.one_of(dyadic, z_near_grid(lam, L)))
    theta = lam / L
    counts, vT = if_counts(np.full(T, z), theta, theta / 2, L, L)
    mean = theta * counts.sum() / T
    assert counts.sum() == np.clip(np.floor((T * z + theta / 2) / theta), -T * L, T * L)
    assert mean == paper_signed(z, lam, T * L)
    assert abs(mean - np.clip(z, -lam, lam)) <= theta / (2 * T)
    assert abs(mean - paper_signed(z, lam, L)) <= theta / 2 + theta / (2 * T)
    if abs(z) <= lam:
        assert 0 <= vT < theta


@fast(120)
@given(st.data(), lams, levels)
def test_polarity_if_with_theta_lambda_at_T_equal_L_is_signed_qcfs(data, lam, L):
    """The temporal form of §9.12 (analogue of §9.2): K = K⁻ = 1, θ = λ, v(0) = θ/2, T = L,
    constant z: mean output == SignedQCFS(z) exactly."""
    z = data.draw(st.one_of(dyadic, z_near_grid(lam, L)))
    counts, _ = if_counts(np.full(L, z), lam, lam / 2, 1, 1)
    assert lam * counts.sum() / L == paper_signed(z, lam, L)


# ---------------------------------------------------------------------------------------
# SFN
# ---------------------------------------------------------------------------------------
@fast(120)
@given(st.lists(fine_or_coarse, min_size=1, max_size=12), lams, st.integers(1, 8))
def test_sfn_with_uniform_thresholds_is_the_mtn(inputs, theta, N):
    """e_i = (i − 1/2)θ, c_i = i, unit θ, v(0) = 0 == MTN(θ, K = N, v(0) = θ/2) at every step,
    for any input sequence; the membranes differ by the constant θ/2."""
    edges = np.array([(i - 0.5) * theta for i in range(1, N + 1)])
    codes = np.arange(N + 1)
    v_sfn, v_mtn = 0.0, theta / 2
    for current in inputs:
        code, v_sfn = scale_and_fire_step(v_sfn, current, edges, codes, theta)
        k, v_mtn = multi_threshold_step(v_mtn, current, theta, N)
        assert code * theta == k * theta
        assert v_mtn == v_sfn + theta / 2
    module = ScaleAndFire(edges, codes, theta, timesteps=len(inputs))
    mtn = MultiThresholdIF(theta, max_spikes=N, timesteps=len(inputs))
    x = torch.tensor(inputs, dtype=torch.float32).reshape(-1, 1)
    assert torch.equal(module(x), mtn(x))


def sfn_tables():
    """N ascending dyadic thresholds and N+1 non-decreasing integer codes."""
    return st.integers(1, 8).flatmap(lambda N: st.tuples(
        st.lists(st.integers(-128, 128), min_size=N, max_size=N, unique=True).map(lambda e: sorted(k / 8 for k in e)),
        st.lists(st.integers(-8, 8), min_size=N + 1, max_size=N + 1).map(sorted),
    ))


@fast(100)
@given(sfn_tables(), st.sampled_from([0.25, 0.5, 1.0, 2.0]), fine_or_coarse, fine_or_coarse)
def test_sfn_step_code_is_bin_code_and_reset_subtracts(tables, unit, v, current):
    edges, codes = tables
    m = v + current
    k = sum(e <= m for e in edges)  # bin index: number of thresholds at or below m
    code, v_next = scale_and_fire_step(v, current, np.array(edges), np.array(codes), unit)
    assert code == codes[k] and v_next == m - unit * codes[k]
    code_t, v_next_t = scale_and_fire_step(torch.tensor([v]), torch.tensor([current]), torch.tensor(edges),
                                           torch.tensor(codes, dtype=torch.float32), unit)
    assert float(code_t) == codes[k] and float(v_next_t) == v_next


@fast(60)
@given(sfn_tables(), st.sampled_from([0.25, 0.5, 1.0]), st.integers(1, 10), seeds, dyadic)
def test_sfn_module_equals_scale_and_fire_step(tables, unit, T, seed, v0):
    edges, codes = tables
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(T * 2, 3)) / 8.0  # coarse: membranes land on thresholds
    module = ScaleAndFire(edges, codes, unit, timesteps=T, v_init=v0)
    got = module.counts(torch.tensor(x, dtype=torch.float32)).numpy()
    v = np.full((2, 3), v0)
    for t, current in enumerate(x.reshape(T, 2, 3)):
        code, v = scale_and_fire_step(v, current, np.array(edges), np.array(codes), unit)
        assert np.array_equal(got[t], code)
    assert np.array_equal(module(torch.tensor(x, dtype=torch.float32)).numpy(), got.reshape(T * 2, 3) * unit)


@fast(150)
@given(st.integers(1, 8).flatmap(lambda N: st.tuples(
    st.lists(st.integers(-8, 8), min_size=N + 1, max_size=N + 1, unique=True).map(sorted),
    st.lists(st.integers(1, 8), min_size=N, max_size=N))),
    st.sampled_from([0.25, 0.5, 1.0]), st.integers(1, 32), st.integers(0, 64))
def test_sfn_constant_input_mean_converges(tables, unit, T, j):
    """Levels y_k = unit·c_k (strictly increasing), each threshold inside its gap:
    y_{i−1} < e_i ≤ y_i, v(0) = 0, constant z ∈ [y_0, y_N]. Then |v(t)| ≤ G (G = max gap)
    for all t — below e_1 the residual is m − y_0 ∈ [−G, G), in bin k it is m − y_k ∈
    (−gap_k, gap_{k+1}), above e_N it is m − y_N ∈ (−G, G] — and since
    mean = z + (v(0) − v(T))/T, |mean − z| ≤ G/T."""
    codes, fractions = tables
    y = unit * np.array(codes, dtype=np.float64)
    edges = [y[i] + (y[i + 1] - y[i]) * f / 8 for i, f in enumerate(fractions)]  # e_{i+1} ∈ (y_i, y_{i+1}]
    gap = float(np.max(np.diff(y))) if len(y) > 1 else 0.0
    z = y[0] + (y[-1] - y[0]) * j / 64
    v, total = 0.0, 0.0
    for _ in range(T):
        code, v = scale_and_fire_step(v, z, np.array(edges), np.array(codes), unit)
        total += unit * code
        assert abs(v) <= gap
    assert total == T * z - v  # conservation (exact: dyadic)
    assert abs(total / T - z) <= gap / T


# ---------------------------------------------------------------------------------------
# torch modules == numpy functions (int64 and float), and TorchScript
# ---------------------------------------------------------------------------------------
def test_numpy_and_torch_float_paths_agree_off_dyadic_values():
    theta, z, L = 0.1, 0.95, 16  # λ = 1.6: z·L/λ + 1/2 = 10 in exact arithmetic (a tie)
    numpy_k = qcfs_count(np.float64(z), theta, L)
    torch_k = qcfs_count(torch.tensor(z, dtype=torch.float64), theta, L)
    assert float(torch_k) == float(QCFS(L, 1.6)(torch.tensor(z)) / QCFS(L, 1.6).threshold)  # the ANN: 10
    assert float(numpy_k) == float(torch_k)


@fast(60)
@given(seeds, st.integers(1, 8), st.integers(1, 4), st.integers(0, 4), st.integers(1, 4))
def test_multi_threshold_module_equals_int64_reference(seed, T, K, K_neg, C):
    """Integer thresholds/potentials/currents: the float32 module equals the exact int64
    floor-division path of multi_threshold_step (per-channel thresholds, min_spikes)."""
    rng = np.random.default_rng(seed)
    theta = rng.integers(1, 300, size=C)
    v0 = rng.integers(-300, 300, size=C)
    x = rng.integers(-1500, 1500, size=(T, 4, C))
    counts, _ = if_counts(x.astype(np.int64), theta.astype(np.int64), v0.astype(np.int64), K, K_neg)
    module = MultiThresholdIF(torch.tensor(theta), max_spikes=K, timesteps=T, v_init=torch.tensor(v0),
                              min_spikes=K_neg)
    got = module.counts(torch.tensor(x.reshape(T * 4, C), dtype=torch.float32))
    assert np.array_equal(got.numpy(), counts)
    assert np.array_equal(module(torch.tensor(x.reshape(T * 4, C), dtype=torch.float32)).numpy(),
                          (counts * theta).reshape(T * 4, C))


@fast(60)
@given(seeds, st.integers(1, 8), st.integers(1, 4), st.integers(0, 4), st.lists(lams, min_size=1, max_size=4))
def test_multi_threshold_module_equals_float_reference(seed, T, K, K_neg, channel_thetas):
    rng = np.random.default_rng(seed)
    C = len(channel_thetas)
    theta = np.array(channel_thetas)
    x = rng.integers(-3000, 3000, size=(T, 4, C)) / 256.0
    counts, _ = if_counts(x, theta, theta / 2, K, K_neg)
    module = MultiThresholdIF(torch.tensor(channel_thetas), max_spikes=K, timesteps=T, min_spikes=K_neg)
    got = module.counts(torch.tensor(x.reshape(T * 4, C), dtype=torch.float32))
    assert np.array_equal(got.numpy(), counts)


@fast(40)
@given(seeds, st.integers(1, 8), st.integers(1, 4))
def test_parallel_module_equals_int64_reference(seed, T, C):
    rng = np.random.default_rng(seed)
    theta = rng.integers(1, 300, size=C)
    v0 = rng.integers(-300, 300, size=C)
    x = rng.integers(-1500, 1500, size=(T, 4, C))
    n = parallel_count(x.sum(0).astype(np.int64), theta.astype(np.int64), T, v_init=v0.astype(np.int64))
    assert n.dtype == np.int64
    module = ParallelNeuron(torch.tensor(theta), timesteps=T, v_init=torch.tensor(v0))
    got = module.counts(torch.tensor(x.reshape(T * 4, C), dtype=torch.float32))
    assert np.array_equal(got.numpy(), parallel_spikes(n, T))


@fast(40)
@given(sfn_tables(), st.integers(1, 4), st.integers(1, 6), seeds)
def test_sfn_module_equals_int64_reference(tables, unit, T, seed):
    edges, codes = tables
    int_edges = np.array([int(e * 64) for e in edges], dtype=np.int64)  # scale to integers
    rng = np.random.default_rng(seed)
    x = (rng.integers(-250, 250, size=(T, 5)) * 8).astype(np.int64)  # multiples of 8: hits thresholds
    v = np.zeros(5, dtype=np.int64)
    expected = []
    for current in x:
        code, v = scale_and_fire_step(v, current, int_edges, np.array(codes, dtype=np.int64), unit)
        assert code.dtype == np.int64 and v.dtype == np.int64
        expected.append(code)
    module = ScaleAndFire(int_edges.astype(np.float64), codes, float(unit), timesteps=T)
    got = module.counts(torch.tensor(x, dtype=torch.float32))  # [T, B = 1, 5]
    assert np.array_equal(got.numpy()[:, 0], np.stack(expected))


@fast(5)
@given(seeds)
def test_modules_survive_torchscript_with_identical_outputs(seed):
    rng = np.random.default_rng(seed)
    T, C = 4, 3
    x = torch.tensor(rng.integers(-3000, 3000, size=(T * 2, C, 2)) / 256.0, dtype=torch.float32)
    per_channel = torch.tensor([0.5, 1.0, 2.0]).reshape(C, 1)
    modules = [
        MultiThresholdIF(1.0, max_spikes=1, timesteps=T),
        MultiThresholdIF(per_channel, max_spikes=3, timesteps=T, min_spikes=2),
        ParallelNeuron(per_channel, timesteps=T),
        ScaleAndFire([-1.0, -0.25, 0.5, 1.5], [-2, -1, 0, 1, 3], 0.5, timesteps=T, v_init=0.25),
        QCFS(4, per_channel.reshape(C, 1)),
        SignedQCFS(4, per_channel.reshape(C, 1)),
    ]
    for module in modules:
        scripted = torch.jit.script(module)
        with torch.no_grad():
            assert torch.equal(scripted(x), module(x)), type(module).__name__
