"""What real CPU frameworks compute: their cast rules and the matmul each call runs (measured).

precisionlab's own rounding is single, correctly rounded and IEEE-flavoured (DESIGN §5).  The
frameworks differ from it, and from one another, in a handful of documented ways; this module
writes each difference down as data, so that ``cast(x, fmt, "torch")`` gives torch's bits and
``torch_cpu_spec(...)`` gives the :class:`~precisionlab.matmul.MatmulSpec` of a torch CPU call.
Every rule here is reproduced bit for bit by a golden file (golden/README.md, ``golden/cpu/*``),
recorded on an Intel Xeon with AVX-512 (BF16, FP16) and AMX-BF16, torch 2.13.0+cpu (oneDNN 3.12),
ml_dtypes 0.6.0 and JAX 0.10.2.

Casts (:class:`CastRule`, ``CAST_RULES``):

* torch rounds float64 inputs to every low-precision dtype through float32 (double rounding,
  also for fp16); ml_dtypes does so for bfloat16 and float8, not for float16 (numpy); JAX converts
  float64 directly to float16 / float8, and to bfloat16 through float32 with float32 subnormals
  flushed to zero.
* torch's ``.to(float8_e4m3fn)`` saturates finite overflow and ±Inf to ±448; ml_dtypes and JAX give
  NaN (DESIGN §5 ``overflow="saturate"`` vs ``"default"``).
* E8M0 (``float8_e8m0fnu``): torch drops the sign (rounds |x|) and maps ±0 to the smallest value
  2^-127; ml_dtypes and JAX give NaN for both.  All three round float32-subnormal inputs up
  (x in (0, 2^-127] to 2^-127, x in (2^-127, 2^-126) to 2^-126) instead of to nearest.
* NaN codes: torch writes bfloat16 NaN as 0xFFFF and float8_e5m2 NaN as S.11111.11 (precisionlab's
  canonical quiet NaNs are 0x7FC0 / S.11111.10); for the formats without NaN (FP4, FP6), where
  precisionlab refuses to guess, ml_dtypes turns NaN into a zero of the opposite sign (+NaN -> -0)
  and JAX into -0.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .formats import Format, get_format
from .matmul import MatmulSpec
from .rounding import decode, encode

__all__ = ["CastRule", "CAST_RULES", "cast_rule", "cast", "torch_cpu_spec", "jax_cpu_spec", "onednn_amx_k_block"]

FLOAT64_MODES = ("direct", "via_fp32", "via_fp32_ftz")


@dataclass(frozen=True)
class CastRule:
    """How one framework casts to one format, on top of round-to-nearest-even.

    ``float64``: ``"direct"`` (one rounding), ``"via_fp32"`` (first to float32, RNE) or
    ``"via_fp32_ftz"`` (the same with float32 subnormals flushed to signed zero).
    ``overflow``: the :class:`~precisionlab.Overflow` policy.  ``negative`` for unsigned formats:
    ``"nan"`` or ``"magnitude"`` (round |x|).  ``zero`` for formats without zero: ``"nan"`` or
    ``"smallest"``.  ``subnormal_inputs``: ``"nearest"`` or ``"up"`` (float32-subnormal inputs are
    rounded toward +Inf).  ``nan_codes``: the codes of a NaN with the sign bit clear / set, where
    they differ from precisionlab's canonical NaN (also for formats without NaN).
    """

    float64: str = "direct"
    overflow: str = "default"
    negative: str = "nan"
    zero: str = "nan"
    subnormal_inputs: str = "nearest"
    nan_codes: tuple[int, int] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        for arg, allowed in (("float64", FLOAT64_MODES), ("overflow", ("default", "saturate", "saturate_finite")),
                             ("negative", ("nan", "magnitude")), ("zero", ("nan", "smallest")),
                             ("subnormal_inputs", ("nearest", "up"))):
            if getattr(self, arg) not in allowed:
                raise ValueError(f"CastRule: {arg}={getattr(self, arg)!r} not allowed; choose one of {allowed}")


_TORCH = "torch 2.13 c10 casts (golden/cpu/casts_torch.npz)"
_ML = "ml_dtypes 0.6 astype (golden/cpu/casts_ml_dtypes.npz)"
_JAX = "JAX 0.10 / XLA CPU convert (golden/cpu/casts_jax.npz)"
_E8M0_UP = dict(subnormal_inputs="up")

#: (framework, format name) -> CastRule; ``(framework, None)`` is the framework's default.
CAST_RULES: dict[tuple[str, str | None], CastRule] = {
    ("torch", None): CastRule(float64="via_fp32", source=_TORCH),
    ("torch", "e4m3"): CastRule(float64="via_fp32", overflow="saturate", source=_TORCH + ": saturating fp8 cast"),
    ("torch", "bf16"): CastRule(float64="via_fp32", nan_codes=(0xFFFF, 0xFFFF), source=_TORCH),
    ("torch", "e5m2"): CastRule(float64="via_fp32", nan_codes=(0x7F, 0xFF), source=_TORCH),
    ("torch", "e8m0"): CastRule(float64="via_fp32", negative="magnitude", zero="smallest", **_E8M0_UP,
                                source=_TORCH + ": the exponent field of |x|, rounded"),
    ("ml_dtypes", None): CastRule(float64="via_fp32", source=_ML),
    ("ml_dtypes", "fp16"): CastRule(float64="direct", source="numpy float64 -> float16 (one rounding)"),
    ("ml_dtypes", "e8m0"): CastRule(float64="via_fp32", **_E8M0_UP, source=_ML),
    ("ml_dtypes", "fp4_e2m1"): CastRule(float64="via_fp32", nan_codes=(0x8, 0x0), source=_ML + ": NaN -> ∓0"),
    ("ml_dtypes", "fp6_e2m3"): CastRule(float64="via_fp32", nan_codes=(0x20, 0x0), source=_ML + ": NaN -> ∓0"),
    ("ml_dtypes", "fp6_e3m2"): CastRule(float64="via_fp32", nan_codes=(0x20, 0x0), source=_ML + ": NaN -> ∓0"),
    ("jax", None): CastRule(float64="direct", source=_JAX),
    ("jax", "bf16"): CastRule(float64="via_fp32_ftz", source=_JAX + ": f64 -> f32 (FTZ) -> bf16"),
    ("jax", "e8m0"): CastRule(float64="direct", **_E8M0_UP, source=_JAX),
    ("jax", "fp4_e2m1"): CastRule(float64="direct", nan_codes=(0x8, 0x8), source=_JAX + ": NaN -> -0"),
}


def cast_rule(framework: str, fmt: str | Format) -> CastRule:
    """The rule ``framework`` ("torch", "ml_dtypes", "jax") uses to cast to ``fmt``."""
    name = get_format(fmt).name
    if (framework, None) not in CAST_RULES:
        allowed = sorted({f for f, _ in CAST_RULES})
        raise ValueError(f"framework={framework!r} has no cast rules; allowed: {', '.join(allowed)}")
    return CAST_RULES.get((framework, name), CAST_RULES[(framework, None)])


def cast(x: Any, fmt: str | Format, rule: CastRule | str, codes: bool = False, backend: str = "auto") -> np.ndarray:
    """``x`` cast to ``fmt`` as ``rule`` (a :class:`CastRule` or a framework name) says.

    Returns the values (``pl.decode``'s dtype) or, with ``codes=True``, the framework's codes.
    """
    fmt = get_format(fmt)
    if isinstance(rule, str):
        rule = cast_rule(rule, fmt)
    xp = np.asarray(x)
    if xp.dtype not in (np.float32, np.float64):
        raise TypeError(f"x has dtype {xp.dtype}; allowed: float32, float64")
    xp = xp.copy()
    if xp.dtype == np.float64 and rule.float64 != "direct":
        with np.errstate(over="ignore"):
            xp = xp.astype(np.float32)
        if rule.float64 == "via_fp32_ftz":
            xp = np.where(np.abs(xp) < np.float32(2.0**-126), np.copysign(np.float32(0), xp), xp)
    nan = np.isnan(xp)
    nan_sign = np.signbit(xp) & nan
    if not fmt.signed and rule.negative == "magnitude":
        xp = np.abs(xp)
    if not fmt.has_zero and rule.zero == "smallest":
        xp = np.where(xp == 0, xp.dtype.type(fmt.smallest_normal), xp)     # no zero: no subnormals either
    if fmt.nan == "none":
        xp = np.where(nan, xp.dtype.type(0), xp)       # codes set below
    out = encode(xp, fmt, overflow=rule.overflow, backend=backend)
    if rule.subnormal_inputs == "up":
        tiny = (np.abs(xp) < 2.0**-126) & (xp != 0) & ~nan
        if tiny.any():
            out[tiny] = encode(xp[tiny], fmt, rounding="rup", overflow=rule.overflow, backend=backend)
    if rule.nan_codes is not None:
        out[nan & ~nan_sign] = rule.nan_codes[0]
        out[nan_sign] = rule.nan_codes[1]
    elif fmt.nan == "none" and nan.any():
        raise ValueError(f"x holds NaN but format={fmt.name!r} has no NaN and the rule gives no code for it")
    return out if codes else decode(out, fmt, backend=backend)


# =====================================================================================================
# matmul: which unit a CPU framework call runs
# =====================================================================================================

#: torch hands a GEMM to oneDNN when M·K·N (times the batch for bmm) exceeds 16^3 (ATen's checksize).
ONEDNN_MIN_MACS = 16 ** 3
#: torch.bmm uses its naive kernel (one sequential dot per element) below this K·M·N per batch.
BMM_NAIVE_MACS = 400


def onednn_amx_k_block(K: int, balanced: bool = True) -> int:
    """The K block oneDNN 3.12's AMX brgemm uses: with n = ceil(K/32) blocks, K/n when that is an even
    integer (balanced blocks), else 32 with a shorter last block.  Measured for 2-D row-major A with
    M, N > 1 (``tools/torch_order_probe.py``); A column-major (``src:ba``) or M or N = 1 use 32."""
    n = -(-K // 32)
    return K // n if balanced and K % n == 0 and (K // n) % 2 == 0 else 32


def torch_cpu_spec(op: str, a_format: str, out_format: str, M: int, K: int, N: int, *,
                   b_format: str | None = None, batch: int | None = None, a_transposed: bool = False,
                   b_transposed: bool = False, bias: bool = False, rowwise_scales: bool = False,
                   onednn: bool = True, cpu_flags: frozenset[str] | set[str] = frozenset()) -> MatmulSpec:
    """The spec of a torch 2.13 CPU call (``op``: matmul, linear, bmm, scaled_mm), measured.

    ``a_transposed`` / ``b_transposed``: the operand is a transposed view of a contiguous tensor
    (torch's is_contiguous() is False and its transpose's is True).  ``rowwise_scales``: _scaled_mm
    with (M, 1) / (1, N) scales.  ``onednn``: torch.backends.mkldnn is enabled; ``cpu_flags``:
    /proc/cpuinfo flags (oneDNN's bf16 path needs avx512bw/vl/dq, its AMX kernels amx_bf16, the fp16
    one avx512_fp16).  Raises ValueError for a call no measurement covers.
    """
    from .presets import get_preset

    b_format = b_format or a_format
    macs = M * K * N * (batch or 1)
    flags = set(cpu_flags)
    if op == "scaled_mm":
        if onednn and a_format == b_format == "e4m3" and not rowwise_scales:
            spec = get_preset("torch_cpu_scaled_mm")
        else:
            spec = get_preset("torch_cpu_scaled_mm_emulated")
        blocks = ((1, None), (None, 1)) if rowwise_scales else ((None, None), (None, None))
        return replace(spec, a_format=a_format, b_format=None if b_format == a_format else b_format,
                       output_format=out_format, a_scale_block=blocks[0], b_scale_block=blocks[1])
    if a_format not in ("bf16", "fp16", "e4m3"):
        raise ValueError(f"a_format={a_format!r}: no torch CPU measurement; allowed: bf16, fp16, e4m3")
    avx512 = {"avx512bw", "avx512vl", "avx512dq"} <= flags
    fp16_gemv = a_format == "fp16" and M == 1 and b_transposed       # torch's fp16 gemv fast path (ATen dot)
    use_onednn = onednn and macs > ONEDNN_MIN_MACS and (
        (a_format == "bf16" and avx512 and "amx_bf16" in flags) or
        (a_format == "fp16" and "avx512_fp16" in flags and not fp16_gemv))
    if use_onednn and a_format == "bf16":
        balanced = not (M == 1 or N == 1 or (a_transposed and op != "bmm"))
        kb = onednn_amx_k_block(K, balanced)
        spec = replace(get_preset("torch_cpu_amx_bf16"), order=f"group(blocked({kb},interleaved(2)))")
    elif use_onednn:
        spec = get_preset("torch_cpu_onednn_fp16")
    elif op == "bmm" and K * M * N < BMM_NAIVE_MACS:
        spec = replace(get_preset("torch_cpu_tn"), name="torch_cpu_bmm_naive")
    elif b_transposed and not a_transposed and a_format in ("bf16", "fp16"):
        spec = get_preset("torch_cpu_nt")           # the reduced-float dot; float8 takes the generic kernel
    elif a_transposed and not b_transposed:
        spec = get_preset("torch_cpu_tn")
        if bias:
            spec = replace(spec, order="group(sequential)")
    else:
        spec = get_preset("torch_cpu_nn")
    return replace(spec, a_format=a_format, b_format=None if b_format == a_format else b_format,
                   output_format=out_format)


def jax_cpu_spec(a_format: str, out_format: str, M: int, K: int, N: int, *, ynn: bool = True) -> MatmulSpec:
    """The spec of ``jnp.dot`` of an (M, K) and a (K, N) array on CPU (JAX 0.10.2), measured; ``ynn``: XLA's
    default YNNPACK dot fusion (off with ``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=``)."""
    from .presets import get_preset

    if not ynn or M == 1:                   # M = 1: a vector-matrix product, one sequential dot per element
        spec = get_preset("jax_cpu_xla_dot")
    elif a_format == "bf16" and out_format == "fp32":
        spec = get_preset("jax_cpu_bf16_f32")
    else:
        spec = get_preset("jax_cpu_dot")
        if K % 4 == 1 and K <= 17:          # measured: these K run one sequential dot
            spec = replace(spec, order="sequential")
    via = "fp16" if (a_format not in ("bf16", "fp16") and out_format not in ("fp32", "bf16", "fp16")) else None
    return replace(spec, a_format=a_format, output_format=out_format, output_via=via)
