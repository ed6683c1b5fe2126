"""Formats: the DESIGN §4 catalogue as data, finfo-style facts, P3109, custom formats."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from oracle import code_values, finite_values, of

import precisionlab as pl

inf = math.inf

# DESIGN §4, transcribed: name, aliases, e, m, bias, max, min normal, min subnormal, has Inf, NaN rule
#   NaN rule is (nan field, the NaN codes of an 8-bit format or None).
CATALOGUE = [
    ("fp64", ["float64", "double"], 11, 52, 1023, 1.7976931348623157e308, 2.0**-1022, 2.0**-1074, True, "ieee"),
    ("fp32", ["float32", "single"], 8, 23, 127, 3.4028234663852886e38, 2.0**-126, 2.0**-149, True, "ieee"),
    ("tf32", [], 8, 10, 127, (2 - 2.0**-10) * 2.0**127, 2.0**-126, 2.0**-136, True, "ieee"),
    ("fp16", ["float16", "half", "binary16"], 5, 10, 15, 65504.0, 2.0**-14, 2.0**-24, True, "ieee"),
    ("bf16", ["bfloat16"], 8, 7, 127, (2 - 2.0**-7) * 2.0**127, 2.0**-126, 2.0**-133, True, "ieee"),
    ("e4m3", ["fp8_e4m3", "float8_e4m3fn"], 4, 3, 7, 448.0, 2.0**-6, 2.0**-9, False, "fn"),
    ("e5m2", ["fp8_e5m2", "float8_e5m2"], 5, 2, 15, 57344.0, 2.0**-14, 2.0**-16, True, "ieee"),
    ("e4m3fnuz", ["float8_e4m3fnuz"], 4, 3, 8, 240.0, 2.0**-7, 2.0**-10, False, "fnuz"),
    ("e5m2fnuz", ["float8_e5m2fnuz"], 5, 2, 16, 57344.0, 2.0**-15, 2.0**-17, False, "fnuz"),
    ("e4m3b11fnuz", ["float8_e4m3b11fnuz"], 4, 3, 11, 30.0, 2.0**-10, 2.0**-13, False, "fnuz"),
    ("e3m4", ["float8_e3m4"], 3, 4, 3, 15.5, 2.0**-2, 2.0**-6, True, "ieee"),
    ("e4m3_ieee", ["float8_e4m3"], 4, 3, 7, 240.0, 2.0**-6, 2.0**-9, True, "ieee"),
    ("fp6_e3m2", ["float6_e3m2fn"], 3, 2, 3, 28.0, 2.0**-2, 2.0**-4, False, "none"),
    ("fp6_e2m3", ["float6_e2m3fn"], 2, 3, 1, 7.5, 1.0, 2.0**-3, False, "none"),
    ("fp4_e2m1", ["float4_e2m1fn"], 2, 1, 1, 6.0, 1.0, 0.5, False, "none"),
    ("e8m0", ["float8_e8m0fnu"], 8, 0, 127, 2.0**127, 2.0**-127, None, False, "fn"),
]
IDS = [row[0] for row in CATALOGUE]

# NaN / Inf codes the table spells out for the 8-bit formats.
NAN_CODES_8BIT = {
    "e4m3": {0x7F, 0xFF},
    "e5m2": {0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF},
    "e4m3fnuz": {0x80},
    "e5m2fnuz": {0x80},
    "e4m3b11fnuz": {0x80},
    "e8m0": {0xFF},
}
INF_CODES_8BIT = {"e5m2": {0x7C, 0xFC}, "e4m3": set(), "e4m3fnuz": set(), "e5m2fnuz": set(),
                  "e4m3b11fnuz": set(), "e8m0": set()}


@pytest.mark.parametrize("row", CATALOGUE, ids=IDS)
def test_catalogue_row(row):
    name, aliases, e, m, bias, vmax, vmin_normal, vmin_sub, has_inf, nan = row
    fmt = pl.get_format(name)
    assert pl.formats[name] is fmt
    assert (fmt.exponent_bits, fmt.mantissa_bits, fmt.bias) == (e, m, bias)
    assert fmt.max == vmax
    assert fmt.smallest_normal == vmin_normal
    if vmin_sub is None:  # e8m0: no subnormals, smallest positive is the smallest normal
        assert not fmt.has_subnormals
        assert fmt.smallest_subnormal == vmin_normal
    else:
        assert fmt.smallest_subnormal == vmin_sub
    assert fmt.has_inf == has_inf
    assert fmt.nan == nan
    for alias in aliases:
        assert pl.get_format(alias) is fmt, alias
        assert pl.get_format(alias.upper()) is fmt, alias


@pytest.mark.parametrize("name", sorted(NAN_CODES_8BIT))
def test_8bit_special_codes(name):
    fmt = pl.get_format(name)
    codes = np.arange(256, dtype=np.uint8)
    vals = pl.decode(codes, fmt, backend="numpy")
    assert set(np.flatnonzero(np.isnan(vals)).tolist()) == NAN_CODES_8BIT[name]
    assert set(np.flatnonzero(np.isinf(vals)).tolist()) == INF_CODES_8BIT[name]


def test_e8m0_is_unsigned_without_zero():
    fmt = pl.get_format("e8m0")
    assert not fmt.signed and not fmt.has_zero and fmt.bits == 8
    vals = pl.decode(np.arange(255, dtype=np.uint8), fmt, backend="numpy")
    assert np.all(vals > 0)
    assert np.array_equal(vals, 2.0 ** (np.arange(255) - 127.0))


def test_fnuz_has_no_negative_zero():
    for name in ("e4m3fnuz", "e5m2fnuz", "e4m3b11fnuz"):
        codes = pl.encode(np.array([-0.0, 0.0, -1e-30], np.float32), name, backend="numpy")
        assert codes.tolist() == [0, 0, 0], name


def test_catalogue_has_every_design_format_and_p3109():
    for name in IDS:
        assert name in pl.formats
    for p in range(1, 8):
        assert f"binary8p{p}" in pl.formats


# ---- finfo-named properties -------------------------------------------------------------

ML_FORMATS = [n for n in IDS if pl.get_format(n).ml_dtype is not None]


@pytest.mark.parametrize("name", ML_FORMATS)
def test_finfo_matches_ml_dtypes(name):
    fmt = pl.get_format(name)
    fi = ml_dtypes.finfo(fmt.ml_dtype)
    for attr in ("max", "eps", "smallest_normal", "smallest_subnormal", "tiny", "bits", "nmant", "nexp",
                 "maxexp", "minexp", "min"):
        assert float(getattr(fmt, attr)) == float(getattr(fi, attr)), attr
    # precision as numpy.finfo defines it: int(-log10(eps)) (ml_dtypes rounds it up for fp8)
    assert fmt.precision == int(math.floor(-math.log10(float(fi.eps))))


def test_ml_dtype_mapping():
    expect = {"fp64": np.float64, "fp32": np.float32, "fp16": np.float16, "bf16": ml_dtypes.bfloat16,
              "e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2,
              "e4m3fnuz": ml_dtypes.float8_e4m3fnuz, "e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
              "e4m3b11fnuz": ml_dtypes.float8_e4m3b11fnuz, "e3m4": ml_dtypes.float8_e3m4,
              "e4m3_ieee": ml_dtypes.float8_e4m3, "fp6_e3m2": ml_dtypes.float6_e3m2fn,
              "fp6_e2m3": ml_dtypes.float6_e2m3fn, "fp4_e2m1": ml_dtypes.float4_e2m1fn,
              "e8m0": ml_dtypes.float8_e8m0fnu}
    for name, dt in expect.items():
        assert pl.get_format(name).ml_dtype == np.dtype(dt), name
    assert pl.get_format("tf32").ml_dtype is None
    assert pl.get_format("binary8p3").ml_dtype is None


@pytest.mark.parametrize("name", ["fp16", "bf16", "e4m3", "e5m2", "tf32", "e8m0", "fp4_e2m1", "binary8p3"])
def test_derived_facts(name):
    fmt = pl.get_format(name)
    f = of(fmt)
    assert fmt.bits == int(f.signed) + f.e + f.m
    assert fmt.nmant == f.m and fmt.nexp == f.e
    assert fmt.eps == 2.0**-f.m
    assert fmt.emin == math.log2(fmt.smallest_normal) == fmt.minexp
    assert fmt.emax == math.floor(math.log2(fmt.max))
    assert fmt.maxexp == fmt.emax + 1
    assert fmt.max == float(f.max)
    assert fmt.smallest_subnormal == float(f.smallest)
    assert fmt.dynamic_range == pytest.approx(math.log10(fmt.max / fmt.smallest_subnormal))


@pytest.mark.parametrize("name", [n for n in pl.formats if pl.formats[n].bits <= 16])
def test_facts_agree_with_enumeration(name):
    """max / smallest values from the Format equal those of the oracle's code enumeration."""
    fmt = pl.get_format(name)
    vals = finite_values(fmt)
    positive = [v for v in vals if v > 0]
    assert fmt.max == float(positive[-1])
    assert fmt.smallest_subnormal == float(positive[0])
    if fmt.signed:
        assert fmt.min == -fmt.max
        assert float(vals[0]) == -fmt.max
    # decode_exact agrees with the oracle's decoding, code by code
    for code, v in enumerate(code_values(fmt)):
        got = fmt.decode_exact(code)
        if isinstance(v, float):
            if math.isnan(v):
                assert math.isnan(got), code
            else:
                assert got == v and math.copysign(1, got) == math.copysign(1, v), code
        else:
            assert got == v, code


# ---- P3109 --------------------------------------------------------------------------------

# values gfloat gives for binary8p{p} (signed, extended): max finite, smallest positive
P3109 = {
    1: (2.0**62, 2.0**-63),
    2: (2.0**31, 2.0**-32),
    3: (49152.0, 2.0**-17),
    4: (224.0, 2.0**-10),
    5: (15.0, 2.0**-7),
    6: (3.875, 2.0**-6),
    7: (1.96875, 2.0**-6),
}


@pytest.mark.parametrize("p", sorted(P3109))
def test_p3109_binary8(p):
    vmax, vsmall = P3109[p]
    fmt = pl.p3109(8, p)
    assert fmt.bits == 8
    assert fmt.max == vmax
    assert fmt.smallest_subnormal == vsmall
    assert fmt.mantissa_bits == p - 1
    assert pl.get_format(f"binary8p{p}") == fmt
    assert pl.formats[f"binary8p{p}"] == fmt
    # NaN is the negative-zero code 0x80, +-Inf the all-ones magnitudes, no -0
    vals = pl.decode(np.arange(256, dtype=np.uint8), fmt, backend="numpy")
    assert np.flatnonzero(np.isnan(vals)).tolist() == [0x80]
    assert vals[0x7F] == inf and vals[0xFF] == -inf
    assert np.sum(vals == 0) == 1


def test_p3109_unsigned_and_finite_variants():
    u = pl.p3109(8, 4, signed=False)
    assert not u.signed and u.bits == 8
    vals = pl.decode(np.arange(256, dtype=np.uint8), u, backend="numpy")
    assert np.flatnonzero(np.isnan(vals)).tolist() == [0xFF]
    assert np.flatnonzero(np.isinf(vals)).tolist() == [0xFE]
    assert np.all(vals[:0xFE] >= 0)
    f = pl.p3109(8, 4, extended=False)
    assert not f.has_inf
    assert f.max > pl.p3109(8, 4).max  # the Inf code becomes a number
    assert pl.get_format("binary8p4u") == u
    assert pl.get_format("binary8p4f") == f
    assert pl.get_format("binary8p4uf") == pl.p3109(8, 4, signed=False, extended=False)
    k16 = pl.get_format("binary16p11")
    assert k16.bits == 16 and k16.mantissa_bits == 10


@pytest.mark.parametrize("args, arg", [((8, 0), "p"), ((8, 8), "p"), ((1, 1), "k"), ((17, 3), "k")])
def test_p3109_bad(args, arg):
    with pytest.raises(ValueError, match=rf"\b{arg}="):
        pl.p3109(*args)


def test_p3109_bad_type():
    with pytest.raises(TypeError, match="k"):
        pl.p3109(8.0, 3)


# ---- custom formats -----------------------------------------------------------------------

def test_custom_format_equals_catalogue_facts():
    c = pl.Format(exponent_bits=5, mantissa_bits=2)
    e5m2 = pl.get_format("e5m2")
    for attr in ("bias", "max", "smallest_normal", "smallest_subnormal", "eps", "bits", "emax", "emin"):
        assert getattr(c, attr) == getattr(e5m2, attr), attr
    assert pl.get_format(c) is c


def test_custom_hopper_accumulator():
    # 1-8-13: 13 fraction bits with the fp32 exponent range
    acc = pl.Format(exponent_bits=8, mantissa_bits=13)
    assert acc.bias == 127
    assert acc.max == (2 - 2.0**-13) * 2.0**127
    assert acc.smallest_subnormal == 2.0**-139
    assert acc.bits == 22
    assert acc.code_dtype == np.uint32
    x = np.array([1 + 2.0**-14 + 2.0**-20], np.float32)
    assert pl.round(x, acc, backend="numpy")[0] == 1 + 2.0**-13


def test_custom_format_bias_and_flags():
    f = pl.Format(exponent_bits=4, mantissa_bits=3, bias=5, has_inf=False, nan="fn")
    assert f.max == 1.75 * 2.0**10
    assert f.smallest_normal == 2.0**-4
    assert f.name != pl.get_format("e4m3").name
    g = pl.Format(exponent_bits=4, mantissa_bits=3, signed=False, has_inf=False, nan="fn")
    assert g.bits == 7 and g.min >= 0


def test_format_is_frozen_and_hashable():
    f = pl.get_format("e4m3")
    with pytest.raises(AttributeError):
        f.bias = 3
    assert {f: 1}[pl.Format(4, 3, has_inf=False, nan="fn", name="e4m3")] == 1


@pytest.mark.parametrize("kwargs, exc, arg", [
    (dict(exponent_bits=0, mantissa_bits=3), ValueError, "exponent_bits"),
    (dict(exponent_bits=12, mantissa_bits=3), ValueError, "exponent_bits"),
    (dict(exponent_bits=4, mantissa_bits=-1), ValueError, "mantissa_bits"),
    (dict(exponent_bits=4, mantissa_bits=53), ValueError, "mantissa_bits"),
    (dict(exponent_bits=4.0, mantissa_bits=3), TypeError, "exponent_bits"),
    (dict(exponent_bits=True, mantissa_bits=3), TypeError, "exponent_bits"),
    (dict(exponent_bits=4, mantissa_bits="3"), TypeError, "mantissa_bits"),
    (dict(exponent_bits=4, mantissa_bits=3, nan="ieee", has_inf=False), ValueError, "has_inf"),
    (dict(exponent_bits=4, mantissa_bits=3, nan="bogus"), ValueError, "nan"),
    (dict(exponent_bits=4, mantissa_bits=3, nan="none", has_inf=True), ValueError, "nan"),
    (dict(exponent_bits=4, mantissa_bits=3, nan="fnuz", has_inf=False, signed=False), ValueError, "signed"),
    (dict(exponent_bits=4, mantissa_bits=3, bias=5000), ValueError, "bias"),
    (dict(exponent_bits=4, mantissa_bits=3, bias=2.5), TypeError, "bias"),
    (dict(exponent_bits=4, mantissa_bits=3, has_zero=False), ValueError, "has_zero"),
    (dict(exponent_bits=1, mantissa_bits=0), ValueError, "exponent_bits"),  # IEEE e=1, m=0: no finite non-zero
])
def test_invalid_custom_format(kwargs, exc, arg):
    with pytest.raises(exc, match=arg):
        pl.Format(**kwargs)


@pytest.mark.parametrize("name", ["e4m4", "fp8", "bf8", "float8_e4m3fnx", "binary8p9", "binary8px", ""])
def test_unknown_format_name(name):
    with pytest.raises(ValueError, match="format") as info:
        pl.get_format(name)
    assert repr(name) in str(info.value)
    assert "e4m3" in str(info.value)  # lists the allowed choices


@pytest.mark.parametrize("bad", [3, None, 4.5, np.float32])
def test_format_argument_wrong_type(bad):
    with pytest.raises(TypeError, match="format"):
        pl.get_format(bad)


def test_ieee_format_without_mantissa_has_no_nan_code():
    """nan='ieee' with mantissa_bits=0 leaves no NaN code (the all-ones exponent is Inf).
    Either the Format is rejected, or a NaN still encodes to a NaN (not to Inf)."""
    try:
        fmt = pl.Format(exponent_bits=3, mantissa_bits=0)
    except ValueError as exc:
        assert "mantissa_bits" in str(exc) or "nan" in str(exc)
        return
    assert fmt.nan_code != fmt.inf_code
    codes = pl.encode(np.array([np.nan], np.float32), fmt, backend="numpy")
    assert np.isnan(pl.decode(codes, fmt, backend="numpy")[0])


def test_format_without_subnormals_has_a_zero_code():
    """A custom format with has_subnormals=False but has_zero=True rounds 0 to 0, so 0 needs
    a code: decode(encode(0)) must be 0 (or the Format must be rejected)."""
    try:
        fmt = pl.Format(exponent_bits=4, mantissa_bits=3, has_subnormals=False)
    except ValueError:
        return
    x = np.array([0.0, -0.0, 1e-30], np.float32)
    r = pl.round(x, fmt, backend="numpy")
    assert np.all(r == 0)
    back = pl.decode(pl.encode(x, fmt, backend="numpy"), fmt, backend="numpy")
    assert np.array_equal(back, r)


def test_fnuz_format_without_zero_is_consistent():
    """With nan='fnuz' the NaN is the code 1.000..0; without a zero that code would otherwise be
    -smallest.  Either such a Format is rejected, or -smallest is never a result of round
    (every result must encode to a code that decodes back to it)."""
    try:
        fmt = pl.Format(exponent_bits=3, mantissa_bits=0, signed=True, has_inf=False, nan="fnuz",
                        has_subnormals=False, has_zero=False)
    except ValueError:
        return
    x = np.array([-fmt.smallest_subnormal, -1e-30, fmt.smallest_subnormal], np.float32)
    r = pl.round(x, fmt, backend="numpy")
    back = pl.decode(pl.encode(x, fmt, backend="numpy"), fmt, backend="numpy")
    assert np.array_equal(back, r, equal_nan=True)
