"""precisionlab.frameworks: the framework cast rules (against their definitions and, for ml_dtypes, against
ml_dtypes itself) and the matmul dispatch rules.  The golden files (tests/golden) check both against
real torch / JAX / ml_dtypes outputs."""

from __future__ import annotations

import dataclasses
import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import precisionlab as pl
from precisionlab import frameworks as fw

F32 = np.float32


def codes(x, fmt, rule):
    return fw.cast(np.asarray(x), fmt, rule, codes=True)


def test_torch_e4m3_saturates_where_ml_dtypes_gives_nan():
    x = np.array([448, 464, 465, 470, 1e6, np.inf, -np.inf, -500, np.nan], F32)
    torch_vals = fw.cast(x, "e4m3", "torch")
    assert torch_vals[:8].tolist() == [448, 448, 448, 448, 448, 448, -448, -448] and math.isnan(torch_vals[8])
    ml = fw.cast(x, "e4m3", "ml_dtypes")
    assert ml[:2].tolist() == [448, 448] and np.isnan(ml[2:]).all()     # 464 ties to 448; beyond is NaN


def test_e8m0_sign_zero_and_subnormal_rules():
    x = np.array([-4.0, -0.75, 0.0, -0.0, 1.25 * 2.0**-127, 2.0**-127, 2.0**-130, 3.0, 6.0], F32)
    e127 = 2.0**-127
    torch = fw.cast(x, "e8m0", "torch").tolist()
    assert torch == [4.0, 1.0, e127, e127, 2.0**-126, e127, e127, 4.0, 8.0]    # |x|, 0 -> 2^-127, subnormals up
    ml = fw.cast(x, "e8m0", "ml_dtypes")
    assert np.isnan(ml[:4]).all() and ml[4:].tolist() == [2.0**-126, e127, e127, 4.0, 8.0]
    # precisionlab's own rule is nearest: 1.25·2^-127 -> 2^-127
    assert float(pl.round(x[4:5], "e8m0")[0]) == e127


def test_float64_double_rounding_through_float32():
    x = np.array([1 + 2.0**-8 + 2.0**-30])             # above the bf16 tie 1 + 2^-8, below half a float32 ulp
    assert float(pl.round(x, "bf16")[0]) == 1 + 2.0**-7   # one rounding: up
    assert fw.cast(x, "bf16", "torch").tolist() == [1.0]   # float32 rounds onto the tie, which goes to even
    assert fw.cast(x, "bf16", "ml_dtypes").tolist() == [1.0]
    y = np.array([1 + 2.0**-11 + 2.0**-40])               # above an fp16 tie: numpy (ml_dtypes) and JAX round once
    assert fw.cast(y, "fp16", "ml_dtypes").tolist() == fw.cast(y, "fp16", "jax").tolist() == [1 + 2.0**-10]
    assert fw.cast(y, "fp16", "torch").tolist() == [1.0]   # torch goes through float32 for fp16 too
    tiny = np.array([2.0**-130])                            # a float32 subnormal: JAX's f64 -> f32 flushes it
    assert fw.cast(tiny, "bf16", "jax").tolist() == [0.0]
    assert fw.cast(tiny, "bf16", "ml_dtypes").tolist() == [2.0**-130]


def test_nan_codes():
    nan = np.array([np.nan, -np.nan], F32)
    assert codes(nan, "bf16", "torch").tolist() == [0xFFFF, 0xFFFF]
    assert codes(nan, "bf16", "ml_dtypes").tolist() == [0x7FC0, 0xFFC0]
    assert codes(nan, "e5m2", "torch").tolist() == [0x7F, 0xFF]
    assert codes(nan, "fp4_e2m1", "ml_dtypes").tolist() == [0x8, 0x0]
    assert codes(nan, "fp4_e2m1", "jax").tolist() == [0x8, 0x8]
    with pytest.raises(ValueError, match="no NaN"):
        fw.cast(nan, "fp4_e2m1", fw.CastRule())


EDGE = st.sampled_from([0.0, -0.0, np.inf, -np.inf, np.nan, 448.0, 464.0, 465.0, 57344.0, 61440.0, 65504.0, 65520.0,
                        2.0**-149, 2.0**-127, 1.25 * 2.0**-127, 1.5 * 2.0**-127, 2.0**-126, 3.0e38, -3.5, 6.0, 7.5])
ML_FORMATS = ["fp16", "bf16", "e4m3", "e5m2", "e4m3fnuz", "e5m2fnuz", "e4m3b11fnuz", "e3m4", "e4m3_ieee", "e8m0",
              "fp6_e2m3", "fp6_e3m2", "fp4_e2m1"]


@settings(max_examples=60, deadline=None)
@given(fmt=st.sampled_from(ML_FORMATS), wide=st.booleans(),
       xs=st.lists(st.floats(width=32) | EDGE, min_size=1, max_size=64))
def test_ml_dtypes_rule_equals_ml_dtypes(fmt, wide, xs):
    """The ml_dtypes rule gives ml_dtypes' own codes, for float32 and for float64 inputs.  The rule is
    ml_dtypes 0.6's (golden/cpu/casts_ml_dtypes.npz was recorded with it); 0.7 rounds float64 to
    bf16 and float8 once, which the rule with float64="direct" gives."""
    x = np.array(xs, np.float64 if wide else F32)
    if wide:
        x = x * (1 + 2.0**-40)                      # off the float32 grid: double rounding shows
    dt = pl.get_format(fmt).ml_dtype
    with np.errstate(all="ignore"):
        want = x.astype(dt).view(np.uint16 if dt.itemsize == 2 else np.uint8)
    rule = fw.cast_rule("ml_dtypes", fmt)
    if tuple(int(p) for p in ml_dtypes.__version__.split(".")[:2]) >= (0, 7):
        rule = dataclasses.replace(rule, float64="direct")
    assert codes(x, fmt, rule).tolist() == want.tolist()


def test_cast_rule_validation():
    with pytest.raises(ValueError, match="float64"):
        fw.CastRule(float64="twice")
    with pytest.raises(ValueError, match="framework='numpy'"):
        fw.cast_rule("numpy", "bf16")
    with pytest.raises(TypeError, match="dtype"):
        fw.cast(np.array([1], np.int32), "bf16", "torch")


# ---- matmul dispatch --------------------------------------------------------------------------------

AMX = frozenset({"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16", "avx512_fp16",
                 "amx_bf16", "amx_tile"})
AVX2 = frozenset({"avx2", "fma"})


@pytest.mark.parametrize("K, balanced, kb", [(17, True, 32), (40, True, 20), (47, True, 32), (48, True, 24),
                                             (66, True, 22), (100, True, 32), (112, True, 28), (300, True, 30),
                                             (48, False, 32), (130, False, 32)])
def test_onednn_amx_k_block(K, balanced, kb):
    assert fw.onednn_amx_k_block(K, balanced) == kb


def test_torch_cpu_dispatch():
    spec = fw.torch_cpu_spec("matmul", "bf16", "bf16", 16, 48, 16, cpu_flags=AMX)
    assert spec.name == "torch_cpu_amx_bf16" and str(spec.order) == "group(blocked(24,interleaved(2)))"
    assert not spec.input_subnormals and not spec.accumulator_subnormals
    tn = fw.torch_cpu_spec("matmul", "bf16", "bf16", 16, 48, 16, a_transposed=True, cpu_flags=AMX)
    assert str(tn.order) == "group(blocked(32,interleaved(2)))"
    small = fw.torch_cpu_spec("matmul", "bf16", "bf16", 16, 16, 16, b_transposed=True, cpu_flags=AMX)  # 16^3
    assert small.name == "torch_cpu_nt"
    assert fw.torch_cpu_spec("matmul", "bf16", "bf16", 16, 48, 16, cpu_flags=AVX2).name == "torch_cpu_nn"
    assert fw.torch_cpu_spec("matmul", "fp16", "fp16", 16, 48, 16, cpu_flags=AMX).name == "torch_cpu_onednn_fp16"
    assert fw.torch_cpu_spec("matmul", "fp16", "fp16", 1, 130, 64, b_transposed=True, cpu_flags=AMX).name == \
        "torch_cpu_nt"
    assert fw.torch_cpu_spec("bmm", "fp16", "fp16", 4, 13, 4, batch=2, cpu_flags=AVX2).name == "torch_cpu_bmm_naive"
    assert fw.torch_cpu_spec("matmul", "bf16", "bf16", 16, 48, 16, onednn=False, cpu_flags=AMX).name == \
        "torch_cpu_nn"
    assert fw.torch_cpu_spec("scaled_mm", "e4m3", "fp32", 16, 48, 16, cpu_flags=AMX).scale_at == "products"
    emu = fw.torch_cpu_spec("scaled_mm", "e4m3", "bf16", 16, 48, 16, b_format="e5m2", cpu_flags=AMX)
    assert emu.scale_at == "operands" and emu.effective_b_format.name == "e5m2"
    with pytest.raises(ValueError, match="a_format='fp32'"):
        fw.torch_cpu_spec("matmul", "fp32", "fp32", 4, 4, 4)


def test_jax_cpu_dispatch():
    assert fw.jax_cpu_spec("bf16", "fp32", 16, 100, 16).name == "jax_cpu_bf16_f32"
    assert str(fw.jax_cpu_spec("bf16", "bf16", 16, 100, 16).order) == "split(4,strided(4),group(sequential))"
    assert str(fw.jax_cpu_spec("bf16", "bf16", 16, 17, 16).order) == "sequential"
    assert fw.jax_cpu_spec("e4m3", "e4m3", 16, 48, 16).output_via.name == "fp16"
    assert fw.jax_cpu_spec("bf16", "bf16", 1, 100, 64).name == "jax_cpu_xla_dot"
    assert fw.jax_cpu_spec("bf16", "fp32", 16, 100, 16, ynn=False).name == "jax_cpu_xla_dot"


def test_ml_dtypes_is_available_for_the_property_test():
    assert ml_dtypes.__version__
