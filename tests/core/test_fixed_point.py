"""Loihi's integer formats in one place: the chip specs' widths, saturation counting and the
rules the reference and Lava share."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends.hardware.spec import load_chip
from n2c.errors import QuantizationError
from n2c.fixed_point import LOIHI, IntegerFormat, StateClamp, bias_mantissa_exponent, clamp24, to_signed


def test_loihi_widths():
    assert (LOIHI.state_max, LOIHI.state_min, LOIHI.weight_max, LOIHI.multi_threshold_bits, LOIHI.vth_limit,
            LOIHI.decay_unity, LOIHI.accumulator_limit, LOIHI.max_delay) == \
        (2 ** 23 - 1, -2 ** 23, 254, 23, 2 ** 17, 4096, 2 ** 15, 62)


@pytest.mark.parametrize("chip", ["loihi1", "loihi2"])
def test_the_shipped_chips_quantize_with_lavas_widths(chip):
    assert load_chip(chip).integer_format() == LOIHI


def test_a_narrower_chip_gets_its_own_widths():
    fmt = IntegerFormat.for_chip(weight_bits=6, delay_bits=4)
    assert (fmt.weight_bits, fmt.weight_max, fmt.max_delay) == (6, 62, 15)
    with pytest.raises(QuantizationError, match="weight_bits >= 2"):
        IntegerFormat.for_chip(weight_bits=1, delay_bits=4)


@given(st.lists(st.integers(-2 ** 30, 2 ** 30), min_size=1, max_size=20))
def test_state_clamp_counts_what_it_changes(values):
    x = np.array(values, np.int64)
    clamp = StateClamp()
    assert np.array_equal(clamp(x), clamp24(x))
    assert clamp.count == int(((x > LOIHI.state_max) | (x < LOIHI.state_min)).sum())


def test_to_signed_names_the_layer():
    assert to_signed(np.array([1.4, -2.6]), 8, "fc", "the bias").tolist() == [1, -3]
    with pytest.raises(QuantizationError, match="layer 'fc': the bias does not fit 8-bit"):
        to_signed(np.array([128.0]), 8, "fc", "the bias")


@given(st.lists(st.integers(-2 ** 18, 2 ** 18), min_size=1, max_size=8))
def test_bias_mantissa_exponent_is_exact_or_refused(values):
    bias = np.array(values, np.int64)
    try:
        mant, exp = bias_mantissa_exponent(bias, "n")
    except QuantizationError:
        assert all(not ((bias >> e << e == bias).all() and (np.abs(bias >> e) < 2 ** 12).all()) for e in range(8))
        return
    assert np.array_equal(mant << exp, bias) and (np.abs(mant) < 2 ** 12).all() and 0 <= exp <= 7
