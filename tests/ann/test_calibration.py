"""Calibration (n2c.ann.calibration): thresholds from data, PMSM's quantizer choice, SFN levels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from n2c.ann.calibration import choose_quantizer, quantized_entropy, sfn_levels, threshold_from
from n2c.errors import CalibrationError


def test_threshold_modes():
    values = torch.tensor([[0.0, 1.0, 2.0, 10.0], [3.0, 3.0, 3.0, 3.0]])
    assert threshold_from(values, "max", 99.9) == 10.0
    assert threshold_from(values, "percentile", 50.0) == pytest.approx(3.0)
    assert threshold_from(values, "channel-max", 99.9).tolist() == [10.0, 3.0]
    with pytest.raises(CalibrationError, match="unknown threshold mode 'mean'"):
        threshold_from(values, "mean", 99.9)
    with pytest.raises(CalibrationError, match=r"percentile must be in \(0, 100\]"):
        threshold_from(values, "percentile", 0.0)


def test_entropy_of_the_levels():
    z = np.array([0.0, 0.0, 1.0, 1.0])  # two levels, equally often: one bit
    assert quantized_entropy(z, lam=1.0, levels=1, signed=False) == pytest.approx(1.0)
    assert quantized_entropy(np.zeros(5), lam=1.0, levels=4) == 0.0


def test_choose_quantizer_picks_the_smallest_levels_within_the_entropy_margin():
    z = np.random.default_rng(0).normal(size=20_000)
    lam, levels = choose_quantizer(z)
    assert lam == pytest.approx(np.percentile(np.abs(z), 99.9))
    entropies = {L: quantized_entropy(z, lam, L) for L in (1, 2, 4, 8, 16, 32)}
    assert entropies[levels] >= max(entropies.values()) - 1.0
    assert all(entropies[L] < max(entropies.values()) - 1.0 for L in entropies if L < levels)
    with pytest.raises(CalibrationError, match="all zero"):
        choose_quantizer(np.zeros(10))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 16), levels=st.integers(1, 8), signed=st.booleans(), scale=st.floats(0.5, 2.0))
def test_sfn_levels_ascend_and_codes_are_integers(seed, levels, signed, scale):
    z = np.random.default_rng(seed).normal(size=2000)
    edges, codes, unit = sfn_levels(z, lam=2.0, levels=levels, signed=signed, scale=scale)
    assert unit > 0 and len(codes) == len(edges) + 1
    assert (np.diff(edges) > 0).all() and (np.diff(codes) > 0).all() and (codes == np.round(codes)).all()
    assert (codes.min() < 0) == signed and 0 in codes
