"""check_kernel (op="cast"): the example kernels pass or fail as they should, with a useful
report; the input cases hold what they claim (checked against the enumerated oracle values);
kernel errors are reported, not raised; the report serialises to JSON and JUnit XML."""

from __future__ import annotations

import json
import math
import sys
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from oracle import finite_values

import precisionlab as pl
from precisionlab.rounding import make_round_spec
from precisionlab.testing import ConformanceReport, check_kernel
from precisionlab.testing.conformance import cast_cases

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
import cast_kernels as K  # noqa: E402


def strict_json(text: str):
    def bad(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=bad)


# ------------------------------------------------------------ the examples ----


def test_correct_bf16_kernel_passes():
    report = check_kernel(K.cast_bf16, make_round_spec("bf16"))
    assert report.passed and report.mismatches == 0 and report.diagnosis == ()
    assert report.elements > 2 * 65000                # every value and every tie of bf16
    assert "PASSED" in str(report)


def test_truncating_bf16_kernel_fails_with_a_diagnosis():
    report = check_kernel(K.cast_bf16_truncating, "bf16")
    assert not report.passed
    by_name = {c.name: c for c in report.cases}
    assert by_name["values"].mismatches == 0 and by_name["specials"].mismatches == 0
    # RNE rounds up exactly the ties whose lower neighbour has an odd code, 0x0001, 0x0003, ..., 0x7f7f
    # (max: its tie with the first value past max goes to Inf), both signs; truncation rounds them down
    assert by_name["ties"].elements == 2 * 0x7F7F and by_name["ties"].mismatches == 2 * (0x7F7F + 1) // 2
    assert report.diagnosis[0].startswith("matches rounding='rtz' instead of 'rne'")
    first = by_name["normal[1000]"].first[0]
    x = float(by_name["normal[1000]"].first[0].index[0])
    assert first.actual_code is not None and first.ulps in (1.0, -1.0) and x >= 0
    text = str(report)
    assert "FAILED" in text and "ties" in text and "rtz" in text and "ULP distance histogram: 1:" in text


def test_saturating_e4m3_kernel():
    report = check_kernel(K.cast_e4m3_saturating, "e4m3")
    assert not report.passed
    assert "matches overflow='saturate' instead of 'default'" in report.diagnosis[0]
    assert "saturates" in report.diagnosis[0] and "NaN" in report.diagnosis[0]
    failing = {c.name for c in report.cases if c.mismatches}
    assert "overflow" in failing and "values" not in failing and "ties" not in failing
    overflow = next(c for c in report.cases if c.name == "overflow")
    assert any(m.expected_code == "0x7f" and m.actual_code == "0x7e" for m in overflow.first)  # NaN vs 448
    assert check_kernel(K.cast_e4m3_saturating, make_round_spec("e4m3", overflow="saturate")).passed
    assert check_kernel(K.cast_e4m3, "e4m3").passed


# ------------------------------------------------------------ diagnoses ----


def test_diagnosis_finds_ftz_daz_and_other_formats():
    def ftz(x):
        y = K.cast_e4m3(x)
        return np.where(np.abs(y) < 2.0**-6, np.copysign(np.float32(0), y), y)

    report = check_kernel(ftz, "e4m3")
    assert "subnormals=False instead of True" in report.diagnosis[0] and "FTZ" in report.diagnosis[0]

    def fnuz(x):
        return x.astype(ml_dtypes.float8_e4m3fnuz).astype(np.float32)

    report = check_kernel(fnuz, "e4m3")
    assert report.diagnosis[0].startswith("matches format='e4m3fnuz' instead of 'e4m3'")

    def rna(x):
        return pl.round(x, "fp16", rounding="rna", backend="numpy")

    assert "rounding='rna' instead of 'rne'" in check_kernel(rna, "fp16").diagnosis[0]


def test_diagnosis_of_an_unrounded_kernel():
    report = check_kernel(lambda x: x, "e4m3")
    assert any("not values of e4m3" in d for d in report.diagnosis)
    row = next(c for c in report.cases if c.name == "ties").first[0]
    assert row.actual_code is None and row.ulps is None


def test_stochastic_spec_uses_the_seed_per_call():
    spec = make_round_spec("bf16", "sr", seed=3, sr_bits=8)
    def kernel(seed):
        return lambda x: pl.round(x, "bf16", rounding="sr", seed=seed, sr_bits=8, backend="numpy")

    assert check_kernel(kernel(3), spec, dists=("normal",), backend="numpy").passed
    bad = check_kernel(kernel(4), spec, dists=("normal",), backend="numpy")
    assert not bad.passed and bad.cases[0].name == "values" and bad.cases[0].mismatches == 0  # exact: no randomness


# ------------------------------------------------------------ the cases ----


def test_cast_cases_hold_what_they_claim():
    fmt = pl.get_format("e4m3")
    cases = {c.name: c.inputs[0] for c in cast_cases(make_round_spec(fmt))}
    vals = finite_values(fmt)
    positive = [v for v in vals if v > 0]
    assert set(cases["values"].tolist()) == {float(v) for v in vals}
    assert np.signbit(cases["values"][cases["values"] == 0]).any()
    ties = {float((a + b) / 2) for a, b in zip(positive, positive[1:], strict=False)} | {464.0}
    assert set(np.abs(cases["ties"]).tolist()) == ties and (cases["ties"] < 0).any()
    assert set(np.abs(cases["beside_ties"]).tolist()) == \
        {float(np.nextafter(np.float32(t), np.float32(d))) for t in ties for d in (0, np.inf)}
    over = set(np.abs(cases["overflow"]).tolist())
    assert {448.0, 464.0, 480.0, float(np.nextafter(np.float32(464), np.float32(0))),
            float(np.nextafter(np.float32(464), np.float32(np.inf))), float(np.finfo(np.float32).max)} <= over
    sub = set(np.abs(cases["subnormals"]).tolist())
    assert {2.0**-10, 3 * 2.0**-10, 2.0**-149} <= sub and 2.0**-6 - 2.0**-10 in sub
    specials = cases["specials"]
    assert np.isnan(specials).sum() == 2 and np.isinf(specials).sum() == 2 and (specials == 0).sum() == 2
    assert all(c.dtype == np.float32 for c in cases.values())
    assert cases["normal[7, 33]"].shape == (7, 33)


def test_cast_cases_for_formats_without_nan_or_sign():
    fp4 = {c.name: c.inputs[0] for c in cast_cases(make_round_spec("fp4_e2m1"))}
    assert not any(np.isnan(x).any() for x in fp4.values())
    assert set(np.abs(fp4["ties"]).tolist()) == {0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0}
    assert 0.25 in fp4["subnormals"]                 # the tie between 0 and the smallest value
    e8m0 = {c.name: c.inputs[0] for c in cast_cases(make_round_spec("e8m0"))}
    assert (e8m0["values"] < 0).any()          # negative inputs are NaN in an unsigned format with NaN
    fp32 = cast_cases(make_round_spec("fp32"))
    assert all(c.inputs[0].dtype == np.float64 for c in fp32)
    assert check_kernel(lambda x: x.astype(np.float32), "fp32", dists=("normal",), shapes=((50,),)).passed
    assert check_kernel(lambda x: np.asarray(K.cast_e4m3(np.abs(x).astype(np.float32))) * 0 + 1, "fp4_e2m1",
                        dists=()).passed is False


# ------------------------------------------------ kernel errors and bad args ----


def test_kernel_errors_are_reported():
    def broken(x):
        raise RuntimeError("no GPU here")

    report = check_kernel(broken, "e4m3", dists=("normal",), shapes=((10,),))
    assert not report.passed and all(c.error and "RuntimeError: no GPU here" in c.error for c in report.cases)
    report = check_kernel(lambda x: x.reshape(-1)[:1].astype(np.float32), "e4m3", dists=(), shapes=())
    assert all("shape" in c.error for c in report.cases if c.elements > 1)
    report = check_kernel(lambda x: np.zeros(x.shape, np.int32), "e4m3", dists=())
    assert all("dtype int32" in c.error for c in report.cases)
    junit = ET.fromstring(report.to_junit_xml())
    assert int(junit.get("errors")) == len(report.cases) and junit.find(".//error") is not None


def test_bad_arguments():
    with pytest.raises(TypeError, match="callable"):
        check_kernel(3, "e4m3")
    with pytest.raises(ValueError, match="op='conv'"):
        check_kernel(K.cast_e4m3, "e4m3", op="conv")
    with pytest.raises(ValueError, match="gamma"):
        check_kernel(K.cast_e4m3, "e4m3", dists=("gamma",))
    with pytest.raises(ValueError, match="e9m9"):
        check_kernel(K.cast_e4m3, "e9m9", op="cast")
    with pytest.raises(TypeError, match="RoundSpec"):
        check_kernel(K.cast_e4m3, 3.0, op="cast")


# ------------------------------------------------------------ the report ----


def test_report_serialises():
    report = check_kernel(K.cast_e4m3_saturating, "e4m3", shapes=((20,),))
    assert isinstance(report, ConformanceReport)
    doc = strict_json(report.to_json())
    assert doc == report.to_dict() | {"cases": doc["cases"]} and doc["passed"] is False
    assert doc["spec"] == {"format": "e4m3", "rounding": "rne", "overflow": "default", "subnormals": True,
                           "flush_inputs": False, "seed": None, "sr_bits": None, "via": None}
    assert doc["mismatches"] == sum(c["mismatches"] for c in doc["cases"]) > 0
    nan_rows = [m for c in doc["cases"] for m in c["first_mismatches"] if m["expected"] == "nan"]
    assert nan_rows and all(isinstance(m["actual"], float) and m["ulps"] == "inf" for m in nan_rows)
    root = ET.fromstring(report.to_junit_xml())
    suite = root.find("testsuite")
    assert int(suite.get("tests")) == len(report.cases)
    failures = suite.findall("testcase/failure")
    assert len(failures) == int(suite.get("failures")) == sum(1 for c in report.cases if c.mismatches)
    assert "saturate" in failures[0].text and "of" in failures[0].get("message")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["spec.overflow"] == "default" and props["format"] == "e4m3"


def test_report_values_are_exact():
    report = check_kernel(K.cast_bf16_truncating, "bf16", dists=("normal",), shapes=((30,),))
    for case in report.cases:
        for m in case.first:
            if math.isfinite(m.actual) and math.isfinite(m.expected):
                assert Fraction(m.actual) != Fraction(m.expected)
                code = int(np.array([m.actual], np.float32).view(np.uint32)[0]) >> 16
                assert m.actual_code == f"0x{code:04x}"


# ------------------------------------------------------------- op="matmul" ----

def test_matmul_examples_against_torch_cpu_tn():
    import matmul_kernels as MK

    good = check_kernel(MK.gemm_bf16, "torch_cpu_tn", shapes=((3, 48, 2),), backend="numpy")
    assert good.passed and {c.name.split("[")[0] for c in good.cases} >= {"cancelling_pairs", "wide_exponents"}
    bad = check_kernel(MK.gemm_bf16_acc16, "torch_cpu_tn", shapes=((3, 48, 2),), backend="numpy")
    assert not bad.passed and "bf16" in bad.diagnosis[0]
    assert strict_json(bad.to_json())["op"] == "matmul"
