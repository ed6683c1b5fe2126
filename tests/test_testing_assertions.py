"""assert_bitwise_equal / assert_ulp_close / compare: what passes, what fails, and what the
failure message says, checked against codes and ordinals computed independently
(ml_dtypes bit views, the enumerated oracle values)."""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import finite_values, of

import precisionlab as pl
from precisionlab.testing import assert_bitwise_equal, assert_ulp_close, compare
from precisionlab.testing import strategies as S
from precisionlab.testing.assertions import histogram_label


def bf16_hex(v: float) -> str:
    return f"0x{int(np.array([v], np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)[0]):04x}"


def message(fn, *args) -> str:
    with pytest.raises(AssertionError) as info:
        fn(*args)
    return str(info.value)


# ------------------------------------------------------------------ bitwise ----


def test_equal_arrays_pass_and_nan_equals_any_nan():
    x = np.array([1.0, -0.0, np.inf, 3.3895313892515355e38, 2.0**-133], np.float32)
    assert_bitwise_equal(x, x.copy(), "bf16")
    payload = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFFFFFFF], np.uint32).view(np.float32)
    assert_bitwise_equal(payload, np.full(4, np.nan, np.float32), "bf16")
    assert_bitwise_equal(np.array([1.5], ml_dtypes.bfloat16), np.array([1.5]), "bf16")   # any float dtype


def test_bitwise_failure_message():
    actual = np.array([1.0, 1.0078125, -0.0, 2.0, np.nan, 0.1], np.float32)
    expected = np.array([1.0, 1.0, 0.0, 2.0, 3.0, 1.0], np.float32)
    text = message(assert_bitwise_equal, actual, expected, "bf16")
    assert "4 of 6 elements differ" in text and "bf16" in text and "shape (6,)" in text
    lines = text.splitlines()
    row = next(line for line in lines if line.strip().startswith("[1]"))
    assert "1.0078125" in row and bf16_hex(1.0078125) in row and bf16_hex(1.0) in row and "+1" in row
    row = next(line for line in lines if line.strip().startswith("[2]"))
    assert "-0.0 (0x8000)" in row and "0.0 (0x0000)" in row
    row = next(line for line in lines if line.strip().startswith("[4]"))
    assert "nan" in row and "inf" in row
    row = next(line for line in lines if line.strip().startswith("[5]"))
    assert "not a bf16 value" in row
    hist = next(line for line in lines if line.startswith("ULP distance histogram"))
    assert re.search(r"0 \(sign of zero\): 1, 1: 1, inf \(NaN vs number\): 1, not in format: 1$", hist)


def test_first_mismatches_are_limited_and_indexed_nd():
    expected = np.ones((3, 5), np.float32)
    actual = expected.copy()
    actual[1, 2:] = 1.0078125
    actual[2, :] = 1.015625
    result = compare(actual, expected, "bf16", max_reported=4)
    assert result.mismatches == 8 and [m.index for m in result.first] == [(1, 2), (1, 3), (1, 4), (2, 0)]
    assert dict(result.histogram) == {"1": 3, "2": 5}
    text = message(assert_bitwise_equal, actual, expected, "bf16")
    assert "[1, 2]" in text and "first 8" not in text


def test_zero_dimensional_arrays():
    text = message(assert_bitwise_equal, np.float32(1.0), np.float32(2.0), "e4m3")
    assert "1 of 1 elements" in text and "shape ()" in text and "0x38" in text and "0x40" in text


def test_bad_arguments():
    with pytest.raises(AssertionError, match=r"shape mismatch.*\(2,\).*\(3,\)"):
        assert_bitwise_equal(np.zeros(2), np.zeros(3), "bf16")
    with pytest.raises(TypeError, match="decode"):
        assert_bitwise_equal(np.zeros(2, np.uint16), np.zeros(2), "bf16")
    with pytest.raises(ValueError, match="e9m9"):
        assert_bitwise_equal(np.zeros(2), np.zeros(2), "e9m9")
    with pytest.raises(ValueError, match="max_ulp=-1"):
        assert_ulp_close(np.zeros(2), np.zeros(2), "bf16", -1)
    with pytest.raises(TypeError, match="max_ulp"):
        assert_ulp_close(np.zeros(2), np.zeros(2), "bf16", "1")


# ---------------------------------------------------------------- ulp close ----


def test_ulp_close_rules():
    e = np.array([1.0, 1.0, 0.0, 57344.0, np.nan, np.inf], np.float32)
    assert_ulp_close(np.array([1.25, 0.875, -0.0, 57344.0, np.nan, np.inf], np.float32), e, "e5m2", 1)
    text = message(assert_ulp_close, np.array([1.5, 1.0, 0.0, np.inf, 1.0, np.inf], np.float32), e, "e5m2", 1)
    assert "3 of 6 elements differ" in text and "within 1 ulp" in text
    # an Inf where max is expected is an overflow difference: no tolerance accepts it
    with pytest.raises(AssertionError, match="1 of 1"):
        assert_ulp_close(np.array([np.inf]), np.array([57344.0]), "e5m2", 10**6)
    with pytest.raises(AssertionError, match="NaN vs number"):
        assert_ulp_close(np.array([np.nan]), np.array([1.0]), "e5m2", 10**6)
    assert_ulp_close(np.array([2.0**-16]), np.array([-(2.0**-16)]), "e5m2", 2)   # through ±0: two steps


@pytest.mark.parametrize("d, label", [(0, "0 (sign of zero)"), (1, "1"), (-2, "2"), (3, "3-4"), (4, "3-4"),
                                      (5, "5-8"), (8, "5-8"), (9, "9-16"), (-1000, "513-1024"),
                                      (math.inf, "inf (NaN vs number)"), (None, "not in format")])
def test_histogram_labels(d, label):
    assert histogram_label(d) == label


# ---------------------------------------- counts against an independent model ----


def ordinal(v: float, fmt) -> int:
    vals = finite_values(fmt)
    origin = vals.index(Fraction(0)) if of(fmt).has_zero else next(i for i, w in enumerate(vals) if w > 0)
    if math.isinf(v):
        return (len(vals) - origin) if v > 0 else -(origin + 1)
    return bisect_left(vals, Fraction(v)) - origin


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_compare_counts_match_the_model(data):
    fmt = data.draw(S.formats(max_bits=12))
    n = data.draw(st.integers(1, 10))
    a = data.draw(st.lists(S.values(fmt), min_size=n, max_size=n))
    b = data.draw(st.one_of(st.just(list(a)), st.lists(S.values(fmt), min_size=n, max_size=n)))
    tol = data.draw(st.sampled_from([None, 0, 1, 3]))

    def bad(x: float, y: float) -> bool:
        if math.isnan(x) or math.isnan(y):
            return not (math.isnan(x) and math.isnan(y))
        if tol is None:
            return not (x == y and math.copysign(1, x) == math.copysign(1, y))
        if math.isinf(x) or math.isinf(y):
            return x != y
        return abs(ordinal(x, fmt) - ordinal(y, fmt)) > tol

    result = compare(np.array(a), np.array(b), fmt, tol)
    assert result.mismatches == sum(bad(x, y) for x, y in zip(a, b, strict=True))
    assert sum(count for _, count in result.histogram) == result.mismatches
    for m in result.first:
        x, y = a[m.index[0]], b[m.index[0]]
        assert bad(x, y)
        if not (math.isnan(x) or math.isnan(y)):
            assert m.ulps == ordinal(x, fmt) - ordinal(y, fmt)


def test_to_dict_is_json_safe():
    import json

    result = compare(np.array([np.nan, np.inf]), np.array([1.0, 2.0]), pl.get_format("e5m2"))
    doc = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert doc["mismatches"] == 2 and doc["first_mismatches"][0]["actual"] == "nan"
    assert doc["first_mismatches"][1]["actual_code"] == "0x7c" and doc["first_mismatches"][1]["ulps"] == 124 - 64
