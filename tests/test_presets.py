"""Presets (DESIGN §6): the catalogue, the Fasi et al. test vectors, the published tensor-core
outputs (shared/hw-vectors, read from $PRECISIONLAB_HW_VECTORS), ml_dtypes' dot, and every
preset against the independent oracle."""

from __future__ import annotations

import dataclasses
import os
import zlib
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from matmul_oracle import check_against_oracle

import precisionlab as pl
from precisionlab.matmul import MatmulSpec

# ---- the catalogue ------------------------------------------------------------------------------

DESIGN_TABLE = {
    # name: (inputs, step, k_fused, n_frac, c_mode, step rounding)       -- DESIGN §6 presets table
    "v100_fp16": ("fp16", "fused", 4, 23, "early", "rtz"),
    "t4_fp16": ("fp16", "fused", 8, 24, "early", "rtz"),
    "a100_fp16": ("fp16", "fused", 8, 24, "early", "rtz"),
    "a100_bf16": ("bf16", "fused", 8, 24, "early", "rtz"),
    "a100_tf32": ("tf32", "fused", 4, 24, "early", "rtz"),
    "ada_fp16": ("fp16", "fused", 8, 24, "early", "rtz"),
    "ada_bf16": ("bf16", "fused", 8, 24, "early", "rtz"),
    "ada_e4m3": ("e4m3", "fused", 16, 13, "early", "rtz"),
    "ada_e5m2": ("e5m2", "fused", 16, 13, "early", "rtz"),
    "h100_fp16": ("fp16", "fused", 16, 25, "early", "rtz"),
    "h100_bf16": ("bf16", "fused", 16, 25, "early", "rtz"),
    "h100_tf32": ("tf32", "fused", 8, 25, "early", "rtz"),
    "h100_e4m3": ("e4m3", "fused", 32, 13, "early", "rtz"),
    "h100_e5m2": ("e5m2", "fused", 32, 13, "early", "rtz"),
    "deepseek_fp8": ("e4m3", "fused", 32, 13, "early", "rtz"),
    "b200_fp16": ("fp16", "fused", 16, 25, "early", "rtz"),
    "b200_bf16": ("bf16", "fused", 16, 25, "early", "rtz"),
    "b200_tf32": ("tf32", "fused", 8, 25, "early", "rtz"),
    "b200_e4m3": ("e4m3", "fused", 32, 25, "late_rn", "rtz"),
    "b200_e5m2": ("e5m2", "fused", 32, 25, "late_rn", "rtz"),
    "mi300_fp16": ("fp16", "fused", 8, 24, "late_rd", "rne"),
    "mi300_bf16": ("bf16", "fused", 8, 24, "late_rd", "rne"),
    "mi250_fp16": ("fp16", "pairwise", 4, None, "early", "rne"),
    "torch_cpu_nn": ("bf16", "ieee", 1, None, "early", "rne"),
    "torch_cpu_nt": ("bf16", "ieee", 1, None, "early", "rne"),
    "torch_cpu_tn": ("bf16", "ieee", 1, None, "early", "rne"),
    "ml_dtypes_dot": ("bf16", "ieee", 1, None, "early", "rne"),
    "exact": ("fp32", "exact", 1, None, "early", "rne"),
    "fp32_sequential": ("fp32", "ieee", 1, None, "early", "rne"),
    "fp16_accumulate": ("fp16", "ieee", 1, None, "early", "rne"),
    "bf16_accumulate": ("bf16", "ieee", 1, None, "early", "rne"),
}


@pytest.mark.parametrize("name", sorted(DESIGN_TABLE))
def test_presets_carry_the_design_table(name):
    inputs, step, k, n_frac, c_mode, rounding = DESIGN_TABLE[name]
    s = pl.get_preset(name)
    assert (s.a_format.name, s.step, s.k_fused, s.n_frac, s.c_mode, s.step_rounding.value) == \
        (inputs, step, k, n_frac, c_mode, rounding)


def test_preset_facts_beyond_the_columns():
    p = pl.presets
    assert p["a100_fp16"].ref_exp_floor == -132 and p["a100_fp16_acc16"].ref_exp_floor == -20
    assert p["h100_fp16"].ref_exp_floor == -133 and p["h100_fp16_acc16"].ref_exp_floor == -21
    for fp8 in ("ada_e4m3", "h100_e4m3", "h100_e5m2"):
        acc = p[fp8].accumulator
        assert (acc.exponent_bits, acc.mantissa_bits, acc.emin) == (8, 13, -126)    # 1-8-13
    assert p["a100_tf32"].input_rounding is pl.Rounding.RTZ
    assert p["deepseek_fp8"].promote_every == 128 and p["deepseek_fp8"].scale_at == "promotion"
    assert p["deepseek_fp8"].a_scale_block == (1, 128) and p["deepseek_fp8"].b_scale_block == (128, 128)
    assert p["h100_e4m3"].promote_every is None                                     # fast accumulation
    # DESIGN §6's lanes(64) for torch_cpu_nt holds where K mod 64 < 16; the measured rule (golden/README.md)
    # adds ATen's 8-lane vector tail and scalar tail, and adds C after the dot product
    assert [str(p[n].order) for n in ("torch_cpu_nn", "torch_cpu_nt", "torch_cpu_tn")] == \
        ["interleaved(4)", "group(split(64,lanes(64),split(16,lanes(8),sequential)))", "sequential"]
    assert not p["mi250_fp16"].input_subnormals and not p["mi250_fp16"].accumulator_subnormals
    for name in ("v100_fp16", "t4_fp16", "a100_fp16", "ada_fp16", "h100_fp16", "b200_fp16"):
        acc16 = p[name + "_acc16"]
        assert acc16 == dataclasses.replace(p[name], accumulator="fp16", step_rounding="rne", output_format="fp16",
                                            ref_exp_floor=acc16.ref_exp_floor)
        assert acc16.effective_c_format.name == "fp16"                             # C rounded to fp16 first


def test_every_preset_is_named_data_with_a_source():
    assert set(DESIGN_TABLE) <= set(pl.presets)
    for name, spec in pl.presets.items():
        assert isinstance(spec, MatmulSpec) and spec.name == name
        assert len(spec.source) > 30, name
        assert any(w in spec.source for w in ("FHMP21", "KM25", "MMA-Sim", "DESIGN", "DeepSeek", "ml_dtypes",
                                              "OCP", "Higham", "golden/cpu/")), name


def test_get_preset():
    assert pl.get_preset("H100_FP16") is pl.presets["h100_fp16"]
    with pytest.raises(ValueError, match="h100_fp16.*a100_bf16|a100_bf16.*h100_fp16"):
        pl.get_preset("h100_fp17")
    with pytest.raises(TypeError):
        pl.get_preset(3)


def test_mixed_fp8_operands_by_replace():
    mixed = dataclasses.replace(pl.get_preset("h100_e4m3"), b_format="e5m2")
    a = np.array([[448.0, 1.0]], np.float32)
    b = np.array([[57344.0], [1.0]], np.float32)
    assert pl.matmul(a, b, mixed, backend="numpy")[0, 0] == np.float32(448.0 * 57344.0)  # the 1 is cut (13 bits)


# ---- Fasi, Higham, Mikaitis & Pranesh (2021): the DESIGN §6 test vectors ----------------------------

T = 2.0**-24
FASI = [
    # (test, a, b, c, {preset: expected})       fp16 inputs, C and D binary32 unless the preset says fp16
    ("accumulator is binary32", [1, 1, 1, 1], [T] * 4, 1.0,
     {"v100_fp16": 1.0, "a100_fp16": 1 + 2**-22, "h100_fp16": 1 + 2**-22, "b200_fp16": 1 + 2**-22}),
    ("same, second form", [0.5] * 4, [T] * 4, 1.0,
     {"v100_fp16": 1.0, "a100_fp16": 1.0, "h100_fp16": 1 + 2**-23, "b200_fp16": 1 + 2**-23}),
    ("truncation, positive", [1, 1], [2, 2**-23 + T], 0.0,
     {"v100_fp16": 2.0, "a100_fp16": 2.0, "h100_fp16": 2.0, "b200_fp16": 2.0}),
    ("truncation, negative", [1, 1], [-2, -(2**-23 + T)], 0.0,
     {"v100_fp16": -2.0, "a100_fp16": -2.0, "h100_fp16": -2.0, "b200_fp16": -2.0}),
    ("extra alignment bit", [1], [1], -(1 - T),
     {"v100_fp16": 2**-23, "a100_fp16": T, "h100_fp16": T, "b200_fp16": T}),
    ("normalisation in addition", [1] * 4, [T] * 4, 1 - T,
     {"v100_fp16": 1 + 2**-23, "a100_fp16": 1 + 2**-23, "h100_fp16": 1 + 2**-23, "b200_fp16": 1 + 2**-23}),
    ("normalisation in subtraction", [1, 1], [1, -T], -1 + T,
     {"v100_fp16": 2**-23, "a100_fp16": 0.0, "h100_fp16": 0.0, "b200_fp16": 0.0}),
    ("third carry bit", [1] * 4, [1, 1.5, 1.75, 1.875], 1.875,
     {"v100_fp16": 8.0, "a100_fp16": 8.0, "h100_fp16": 8.0, "b200_fp16": 8.0}),
    ("rounding down when normalising", [1] * 4, [1] * 4, 1 + 2**-22 + 2**-23,
     {"v100_fp16": 5.0, "a100_fp16": 5.0, "h100_fp16": 5.0, "b200_fp16": 5.0}),
    ("rounding up when normalising, negative", [1] * 4, [-1] * 4, -1 - 2**-22 - 2**-23,
     {"v100_fp16": -5.0, "a100_fp16": -5.0, "h100_fp16": -5.0, "b200_fp16": -5.0}),
    ("fp16 output, RNE", [T, T], [0.5, 0.25], 0.0,
     {"v100_fp16_acc16": T, "a100_fp16_acc16": T, "h100_fp16_acc16": T, "b200_fp16_acc16": T}),
]


def fasi_dot(name: str, a, b, c) -> float:
    """One instruction: K padded with zeros to the preset's width."""
    spec = pl.get_preset(name)
    width = spec.k_fused
    av = np.array(list(a) + [0.0] * (width - len(a)), np.float32)
    bv = np.array(list(b) + [0.0] * (width - len(b)), np.float32)
    return float(pl.matmul(av[None, :], bv[:, None], spec, c=np.float32(c), backend="numpy")[0, 0])


@pytest.mark.parametrize("test, a, b, c, expected", FASI, ids=[row[0] for row in FASI])
def test_fasi_et_al_vectors(test, a, b, c, expected):
    for name, want in expected.items():
        got = fasi_dot(name, a, b, c)
        assert got == want and np.signbit(got) == np.signbit(want), (name, got, want)


def test_fasi_non_monotone_pairs():
    """Increasing C from 1 - 2^-24 to 1 decreases D: the alignment to the larger exponent drops the products."""
    for name in ("v100_fp16",):
        assert fasi_dot(name, [1] * 4, [T] * 4, 1 - T) == 1 + 2**-23
        assert fasi_dot(name, [1] * 4, [T] * 4, 1.0) == 1.0
    b = [T, T, T, 3 * T]
    assert fasi_dot("a100_fp16", [0.5] * 4, b, 1 - T) == 1 + 2**-23
    assert fasi_dot("a100_fp16", [0.5] * 4, b, 1.0) == 1.0
    for name in ("h100_fp16", "b200_fp16"):                     # one more alignment bit: monotone ("equal")
        assert fasi_dot(name, [0.5] * 4, b, 1 - T) == fasi_dot(name, [0.5] * 4, b, 1.0) == 1 + 2**-23


# ---- real hardware: the published tensor-core outputs ------------------------------------------------

GPU_FAMILY = {"V100": "v100", "A100": "a100", "A2": "a100", "Ada": "ada", "L40S": "ada", "H100": "h100",
              "H200": "h100", "B200": "b200"}
HW_SETS = ["A100_bf16_fp32", "A100_fp16_fp16", "A100_fp16_fp32", "A100_tf32_fp32", "A2_bf16_fp32", "A2_fp16_fp16",
           "A2_fp16_fp32", "A2_tf32_fp32", "Ada_E4M3_fp16", "Ada_E4M3_fp32", "Ada_E5M2_fp16", "Ada_E5M2_fp32",
           "Ada_bf16_fp32", "Ada_fp16_fp16", "Ada_fp16_fp32", "Ada_tf32_fp32", "B200_E4M3_fp16", "B200_E4M3_fp32",
           "B200_E5M2_fp16", "B200_E5M2_fp32", "B200_bf16_fp32", "B200_fp16_fp16", "B200_fp16_fp32", "B200_tf32_fp32",
           "H100_E4M3_fp16", "H100_E4M3_fp32", "H100_E5M2_fp16", "H100_E5M2_fp32", "H100_bf16_fp32", "H100_fp16_fp16",
           "H100_fp16_fp32", "H100_tf32_fp32", "H200_E4M3_fp16", "H200_E4M3_fp32", "H200_E5M2_fp16", "H200_E5M2_fp32",
           "H200_bf16_fp32", "H200_fp16_fp16", "H200_fp16_fp32", "H200_tf32_fp32", "L40S_E4M3_fp32", "L40S_E5M2_fp32",
           "L40S_bf16_fp32", "L40S_fp16_fp16", "L40S_fp16_fp32", "L40S_tf32_fp32", "V100_fp16_fp16", "V100_fp16_fp32"]
#: FP8 with binary16 output on Hopper/Blackwell: reproduced by no published model (hw-vectors README).
OPEN_QUESTIONS = {"B200_E4M3_fp16", "B200_E5M2_fp16", "H100_E4M3_fp16", "H100_E5M2_fp16", "H200_E4M3_fp16",
                  "H200_E5M2_fp16"}


def hw_folder() -> Path:
    folder = os.environ.get("PRECISIONLAB_HW_VECTORS")
    if not folder:
        message = ("PRECISIONLAB_HW_VECTORS is not set: point it at the published tensor-core vectors "
                   "(../shared/hw-vectors beside the checkout; .ci/run sets it)")
        if os.environ.get("CI"):
            pytest.fail(message + " -- CI must run this test, not skip it")
        pytest.skip(message)
    path = Path(folder)
    if not path.is_dir():
        pytest.fail(f"PRECISIONLAB_HW_VECTORS={folder!r} is not a folder")
    return path


def preset_for(data_set: str) -> str:
    gpu, inputs, out = data_set.split("_")
    return f"{GPU_FAMILY[gpu]}_{inputs.lower()}" + ("_acc16" if out == "fp16" else "")


def load_rows(data_set: str):
    """(a, b, c, d) as float32 arrays, C as the device saw it (README: C = 0 for Hopper FP8 wgmma)."""
    path = hw_folder() / f"{data_set}.npz"
    if not path.is_file():
        pytest.fail(f"{path} is missing from PRECISIONLAB_HW_VECTORS")
    with np.load(path) as z:
        a, b, c, d = (np.asarray(z[k], np.uint32).view(np.float32) for k in "abcd")
    gpu, inputs, out = data_set.split("_")
    if gpu in ("H100", "H200") and inputs.startswith("E") and out == "fp32":
        c = np.zeros_like(c)
    # _fp16 sets: the device rounded C to fp16 (RNE) first; the acc16 presets do that (c_format fp16).
    return a, b, c, d


def reproduce(spec, a, b, c) -> np.ndarray:
    """Each row is one dot product: d = a[i] . b[i] + c[i]."""
    return pl.matmul(a[:, None, :], b[:, :, None], spec, c=c[:, None, None], backend="numpy")[:, 0, 0]


@pytest.mark.parametrize("data_set", HW_SETS)
def test_published_tensor_core_outputs_bit_for_bit(data_set):
    a, b, c, d = load_rows(data_set)
    if data_set in OPEN_QUESTIONS:
        pytest.skip("FP8 with binary16 output on Hopper/Blackwell: no published model reproduces it "
                    "(hw-vectors README); not a target")
    name = preset_for(data_set)
    got = reproduce(name, a, b, c).astype(np.float32)
    bad = np.flatnonzero(got.view(np.uint32) != d.view(np.uint32))
    detail = [(int(i), float(got[i]), float(d[i])) for i in bad[:5]]
    assert bad.size == 0, f"{name}: {bad.size}/{d.size} rows differ, first (row, ours, device): {detail}"


PERTURBATIONS = [
    ("V100_fp16_fp32", {"n_frac": 24}), ("V100_fp16_fp32", {"n_frac": 22}), ("V100_fp16_fp32", {"k_fused": 2}),
    ("A100_fp16_fp32", {"n_frac": 25}), ("A100_fp16_fp32", {"step_rounding": "rne"}),
    ("A100_bf16_fp32", {"align_rounding": "floor"}), ("A100_tf32_fp32", {"n_frac": 23}),
    ("H100_fp16_fp32", {"n_frac": 24}), ("H100_fp16_fp32", {"k_fused": 8}), ("H100_fp16_fp32", {"c_mode": "late_rn"}),
    ("H100_E4M3_fp32", {"n_frac": 14}), ("H100_E4M3_fp32", {"accumulator": "fp32"}),
    ("Ada_E4M3_fp32", {"k_fused": 32}), ("Ada_E4M3_fp32", {"accumulator": "fp32"}),
    ("B200_E4M3_fp32", {"c_mode": "early"}), ("B200_E4M3_fp32", {"k_fused": 16}),
    ("H100_fp16_fp16", {"step_rounding": "rtz"}), ("V100_fp16_fp16", {"k_fused": 2}),
]


@pytest.mark.parametrize("data_set, change", PERTURBATIONS, ids=[f"{d}-{list(c.items())[0]}" for d, c in PERTURBATIONS])
def test_published_outputs_pin_the_parameters(data_set, change):
    """The data are sharp: one parameter off and some rows no longer match (so the test above can fail)."""
    a, b, c, d = load_rows(data_set)
    spec = dataclasses.replace(pl.get_preset(preset_for(data_set)), **change)
    got = reproduce(spec, a, b, c).astype(np.float32)
    assert np.count_nonzero(got.view(np.uint32) != d.view(np.uint32)) > 0


# ---- a real CPU library: ml_dtypes' dot ---------------------------------------------------------------

@pytest.mark.parametrize("fmt, dtype", [("bf16", ml_dtypes.bfloat16), ("e4m3", ml_dtypes.float8_e4m3fn),
                                        ("e5m2", ml_dtypes.float8_e5m2), ("fp16", np.float16)])
def test_ml_dtypes_dot_matches_numpy_dot_of_ml_dtypes_arrays(fmt, dtype):
    spec = dataclasses.replace(pl.get_preset("ml_dtypes_dot"), a_format=fmt, output_format=fmt)
    rng = np.random.default_rng(7)
    for _ in range(60):
        K = int(rng.integers(0, 80))
        x = np.clip(rng.standard_normal(K) * np.exp2(rng.integers(-8, 8, K)), -400, 400).astype(np.float32)
        y = np.clip(rng.standard_normal(K) * np.exp2(rng.integers(-8, 8, K)), -400, 400).astype(np.float32)
        y[: K // 2] = -x[: K // 2] * (1 + rng.integers(0, 2, K // 2) / 8)          # cancellation
        xd, yd = x.astype(dtype), y.astype(dtype)
        want = np.float32(np.dot(xd, yd))
        got = pl.matmul(xd.astype(np.float32)[None, :], yd.astype(np.float32)[:, None], spec, backend="numpy")[0, 0]
        assert want.view(np.uint32) == np.float32(got).view(np.uint32) or (np.isnan(want) and np.isnan(got))


# ---- every preset against the independent oracle ---------------------------------------------------------

@pytest.mark.parametrize("name", sorted(pl.presets))
def test_every_preset_equals_the_oracle(name):
    spec = pl.get_preset(name)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    K = 300 if spec.promote_every else 37
    M, N = 2, 2
    scale = 2.0 ** rng.integers(-12, 8, (M, K)) * np.where(rng.random((M, K)) < 0.5, -1, 1)
    a = (rng.standard_normal((M, K)) * scale).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    a[:, 1::2] = a[:, 0::2][:, : a[:, 1::2].shape[1]]                          # near-cancelling pairs
    b[1::2] = -b[0::2][: b[1::2].shape[0]] * (1 + 2.0**-6)
    if spec.a_format.max < 1e4:
        a, b = np.clip(a, -spec.a_format.max, spec.a_format.max), np.clip(b, -spec.a_format.max, spec.a_format.max)
    c = rng.standard_normal((M, N)).astype(np.float32)
    sa = sb = None
    if spec.a_scale_block is not None:                 # one scale per block of the spec's grid
        (ra, ka), (kb, cb) = spec.a_scale_block, spec.b_scale_block
        ga = (-(-M // (ra or M)), -(-K // (ka or K)))
        gb = (-(-K // (kb or K)), -(-N // (cb or N)))
        sa = np.exp2(rng.integers(-4, 4, ga)).astype(np.float32) * 1.5
        sb = np.exp2(rng.integers(-4, 4, gb)).astype(np.float32) * (1.0 if spec.scale_at == "promotion" else 0.3)
    check_against_oracle(spec, a, b, c, sa, sb, 1)
