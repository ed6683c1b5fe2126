"""CUDA C sources of the GPU kernels and the argument conventions they share.

``round.cuh`` holds all the rounding arithmetic as ``__host__ __device__`` functions and
``matmul.cuh`` the matmul accumulation model built on it; ``kernels.cu`` wraps them in CuPy
kernels; the tests compile both headers for the host (nvcc or g++) and check them bit for
bit against the NumPy reference.  This module is
the one place that turns a :class:`~precisionlab.formats.Format` / :class:`RoundSpec`
into the flat argument lists of ``PL_FORMAT_PARAMS`` / ``PL_SPEC_PARAMS`` and that
fixes the numeric codes of modes, policies and NaN encodings (the Numba-CUDA device
functions use the same lists, so all GPU code reads the same facts).  Pure Python: it
imports no GPU package.
"""

from __future__ import annotations

import re
from importlib import resources

import numpy as np

from ...formats import Format
from ...rounding import Overflow, Rounding, RoundSpec, fits_float32

__all__ = ["MODE_CODES", "OVERFLOW_CODES", "NAN_KINDS", "FORMAT_ARG_TYPES", "SPEC_ARG_TYPES", "format_args",
           "spec_args", "source", "source_dir", "kernel_source", "uses_fast_path", "round_kernel_name",
           "encode_kernel_name", "decode_kernel_name", "kernel_names", "MATMUL_KERNEL", "SCALE_KERNEL",
           "MATMUL_FIELDS", "MATMUL_SPECS", "matmul_unsupported", "matmul_model", "matmul_specs", "matmul_params",
           "needs_exact_sum", "check_matmul", "GPU_SCALE_AT"]

#: Rounding -> PL_* mode code of round.cuh.
MODE_CODES = {Rounding.RNE: 0, Rounding.RNA: 1, Rounding.RTZ: 2, Rounding.RUP: 3, Rounding.RDN: 4,
              Rounding.RTO: 5, Rounding.SR: 6, Rounding.SR_EQUAL: 7}
#: Overflow -> PL_OVERFLOW_* code.
OVERFLOW_CODES = {Overflow.DEFAULT: 0, Overflow.SATURATE: 1, Overflow.SATURATE_FINITE: 2}
#: Format.nan -> PL_NAN_* code.
NAN_KINDS = {"ieee": 0, "fn": 1, "fnuz": 2, "none": 3}
#: Format flags (PL_HAS_INF ...) and spec flags (PL_KEEP_SUBNORMALS, PL_FLUSH_INPUTS).
HAS_INF, HAS_ZERO, HAS_SUBNORMALS, SIGNED = 1, 2, 4, 8
KEEP_SUBNORMALS, FLUSH_INPUTS = 1, 2

#: C types of format_args() / spec_args(), in order ("i32": int, "u64": unsigned long long).
FORMAT_ARG_TYPES = ("i32",) * 5 + ("u64",) * 4
SPEC_ARG_TYPES = FORMAT_ARG_TYPES + ("i32",) * 4 + ("u64",)


def format_args(fmt: Format) -> tuple[int, ...]:
    """``PL_FORMAT_PARAMS``: e, m, bias, nan kind, flags, sign mask, max / Inf / NaN codes."""
    flags = (HAS_INF * fmt.has_inf) | (HAS_ZERO * fmt.has_zero) | (HAS_SUBNORMALS * fmt.has_subnormals) \
        | (SIGNED * fmt.signed)
    return (fmt.exponent_bits, fmt.mantissa_bits, fmt.bias, NAN_KINDS[fmt.nan], flags, fmt.sign_mask,
            fmt._max_magnitude_code, fmt.inf_code or 0, fmt.nan_code or 0)


def spec_args(spec: RoundSpec) -> tuple[int, ...]:
    """``PL_SPEC_PARAMS``: format_args, then mode, overflow, flags, sr_bits, seed."""
    flags = (KEEP_SUBNORMALS * spec.keeps_subnormals) | (FLUSH_INPUTS * spec.flush_inputs)
    return format_args(spec.format) + (MODE_CODES[spec.rounding], OVERFLOW_CODES[spec.overflow], flags,
                                       spec.sr_bits, spec.seed or 0)


def uses_fast_path(fmt: Format, float32_data: bool) -> bool:
    """The 32-bit kernels apply to float32 data (inputs, or decoded outputs) of formats
    whose values all fit float32; everything else takes the 64-bit path."""
    return float32_data and fits_float32(fmt)


def source_dir():
    """The directory holding round.cuh and kernels.cu (inside the installed package)."""
    return resources.files(__name__)


def source(name: str) -> str:
    """The text of one shipped CUDA source, e.g. ``source("round.cuh")``."""
    return (source_dir() / name).read_text(encoding="utf-8")


_INCLUDE = re.compile(r'^#include "([^"]+)"[ \t]*$', re.MULTILINE)


def kernel_source() -> str:
    """The text the CuPy backend compiles: kernels.cu with its ``#include "..."`` of the shipped
    headers (round.cuh, matmul.cuh) resolved inline, each once (CuPy's kernel cache keys on a
    hash of the text, so an edit of a header then recompiles, and no include path is needed)."""
    seen: set[str] = set()

    def expand(name: str) -> str:
        if name in seen:
            return ""
        seen.add(name)
        return _INCLUDE.sub(lambda match: expand(match.group(1)), source(name))

    text = expand("kernels.cu")
    if seen != {"kernels.cu", "round.cuh", "matmul.cuh"}:
        raise AssertionError(f"kernels.cu should include round.cuh and matmul.cuh; it includes {sorted(seen)}")
    return text


def _b(flag: bool) -> str:
    return "true" if flag else "false"


_C_CODE_TYPES = {1: "unsigned char", 2: "unsigned short", 4: "unsigned int", 8: "unsigned long long"}


def round_kernel_name(in64: bool, fast: bool) -> str:
    """The template instance of pl_round_kernel for float64 (in64) or float32 data."""
    return f"pl_round_kernel<{_b(in64)}, {_b(fast)}>"


def encode_kernel_name(in64: bool, fast: bool, code_bytes: int) -> str:
    return f"pl_encode_kernel<{_b(in64)}, {_b(fast)}, {_C_CODE_TYPES[code_bytes]}>"


def decode_kernel_name(code_bytes: int, out64: bool, fast: bool) -> str:
    return f"pl_decode_kernel<{_C_CODE_TYPES[code_bytes]}, {_b(out64)}, {_b(fast)}>"


#: The matmul kernels of kernels.cu (plain functions, no template).
MATMUL_KERNEL, SCALE_KERNEL = "pl_matmul_kernel", "pl_scale_kernel"


def kernel_names() -> list[str]:
    """Every kernel the CuPy backend can launch (the rounding templates' instances, the fast path
    only with float32, and the matmul kernels)."""
    names = [round_kernel_name(False, True), round_kernel_name(False, False), round_kernel_name(True, False)]
    for nbytes in _C_CODE_TYPES:
        names += [encode_kernel_name(False, True, nbytes), encode_kernel_name(False, False, nbytes),
                  encode_kernel_name(True, False, nbytes), decode_kernel_name(nbytes, False, True),
                  decode_kernel_name(nbytes, False, False), decode_kernel_name(nbytes, True, False)]
    return names + [MATMUL_KERNEL, SCALE_KERNEL]


# ---- matmul (DESIGN §6) ---------------------------------------------------------------------
# The matmul kernels of both GPU backends (numba_cuda_matmul.py, matmul.cuh) take the model as
# one tuple / array of int64 in the order of MATMUL_FIELDS, and six RoundSpecs (MATMUL_SPECS) as
# spec_args() each.  They hold every value exactly (integer significand and exponent, 128-bit
# where a sum needs it) and round with pl_round_code / round_code, so they cover every spec
# whose operands have at most 24 significant bits, with the limits matmul_unsupported() names.

#: Model parameters of the matmul kernels, in order (see matmul_model).
MATMUL_FIELDS = ("step", "k_fused", "n_frac", "align_floor", "c_mode", "has_ref_floor", "ref_exp_floor",
                 "late_n_frac", "order", "width", "log2_width", "chunk", "promotes", "scale_at_promotion",
                 "has_a_scale", "has_b_scale", "has_product", "has_via", "a_emin", "b_emin", "acc_emin",
                 "product_emin", "events", "K")
STEP_CODES = {"ieee": 0, "fused": 1, "pairwise": 2, "exact": 3}
C_MODE_CODES = {"early": 0, "late_rn": 1, "late_rd": 2}
ORDER_CODES = {"sequential": 0, "interleaved": 1, "lanes": 2, "pairwise": 3, "blocked": 4}
#: Where the GPU kernels apply block scales (the other MatmulSpec.scale_at values are the CPU
#: frameworks' and run on backend='numba' / 'numpy').
GPU_SCALE_AT = ("operands", "promotion")
#: The roundings a matmul kernel does, in order: steps (step_rounding), the RNE addition of C
#: (late_rn), products, fp32 (scaled operands, scales, promotion), output_via, output.
MATMUL_SPECS = ("accumulator", "accumulator_rne", "product", "fp32", "via", "output")
#: The exact sums (step="exact", fused without n_frac) use a fixed-point accumulator of
#: SACC_LIMBS limbs of 32 bits whose lowest bit is 2^SACC_BASE (int64 limbs, carries resolved at
#: the end); SACC_MAX_TERMS terms at most, so that no limb overflows.
SACC_LIMBS, SACC_BASE, SACC_MAX_TERMS = 24, -320, 1 << 28
#: Products of one fused step (held in a thread's local memory).
FUSED_MAX_K = 64
#: Bits a cut term of a fused step may use, so that k_fused of them and C sum in an int64.
_FUSED_BITS = 60


def _top(fmt: Format) -> int:
    """Every value of fmt is below 2^_top(fmt)."""
    return fmt.emax + 1


def _lsb(fmt: Format) -> int:
    """Every value of fmt is a multiple of 2^_lsb(fmt)."""
    return fmt.emin - fmt.mantissa_bits


def _operand_formats(spec):
    from ...matmul import FP32

    a = FP32 if spec.scale_at == "operands" and spec.a_scale_block is not None else spec.a_format
    b = FP32 if spec.scale_at == "operands" and spec.b_scale_block is not None else spec.effective_b_format
    return a, b


def needs_exact_sum(spec) -> bool:
    """Specs whose steps sum terms exactly without a cut: the fixed-point accumulator."""
    return spec.step == "exact" or (spec.step == "fused" and spec.n_frac is None)


def matmul_unsupported(spec) -> str | None:
    """Why the GPU matmul kernels cannot compute ``spec`` exactly, or None when they can."""
    if spec.order.composite:
        return (f"order={str(spec.order)!r} is a composite order; the GPU kernels run the orders "
                f"{', '.join(ORDER_CODES)} (blocked without a nested order)")
    if spec.scale_at not in GPU_SCALE_AT:
        return f"scale_at={spec.scale_at!r}; the GPU kernels scale at {' or '.join(map(repr, GPU_SCALE_AT))}"
    a, b = _operand_formats(spec)
    for arg, fmt in (("a", a), ("b", b)):
        if fmt.mantissa_bits > 23:
            return (f"the products of {arg}'s format {fmt.name!r} ({fmt.mantissa_bits} mantissa bits) need more than "
                    "48 bits; the GPU kernels take operands of at most 23 mantissa bits")
    k_bits = spec.k_fused.bit_length()
    if spec.step == "fused" and spec.k_fused > FUSED_MAX_K:
        return f"k_fused={spec.k_fused}: a fused step of the GPU kernels holds at most {FUSED_MAX_K} products"
    if spec.step == "fused" and spec.n_frac is not None:
        wide = max(spec.n_frac, spec.late_n_frac or 0) + (1 if spec.c_mode == "late_rd" else 0)
        if wide + 3 + k_bits > _FUSED_BITS:
            return (f"n_frac={spec.n_frac}, late_n_frac={spec.late_n_frac} with k_fused={spec.k_fused}: the cut terms "
                    f"of a step need more than {_FUSED_BITS} bits (int64 sums)")
    if needs_exact_sum(spec):
        product = spec.product_format
        ranges = [(_lsb(a) + _lsb(b), _top(a) + _top(b), "the products")]
        if product is not None:
            ranges.append((_lsb(product), _top(product), f"product_format={product.name!r}"))
        for arg, fmt in (("accumulator", spec.accumulator), ("c_format", spec.effective_c_format)):
            ranges.append((_lsb(fmt), _top(fmt), f"{arg}={fmt.name!r}"))
        ceiling = SACC_BASE + 32 * SACC_LIMBS - 32 - 64     # carries of 2^28 terms, a term spans 3 limbs
        for lsb, top, what in ranges:
            if lsb < SACC_BASE or top > ceiling:
                return (f"{what} span 2^{lsb}..2^{top}, outside the exact accumulator's 2^{SACC_BASE}..2^{ceiling} "
                        f"(step={spec.step!r} sums exactly)")
    return None


def check_matmul(spec, K: int, backend: str) -> None:
    """A ValueError naming what ``backend``'s matmul kernel cannot compute exactly, if anything."""
    reason = matmul_unsupported(spec)
    if reason is None and needs_exact_sum(spec) and min(spec.promote_every or K, K) > SACC_MAX_TERMS:
        reason = f"K={K} terms per exact sum, more than the exact accumulator's {SACC_MAX_TERMS}"
    if reason is not None:
        raise ValueError(f"backend={backend!r} cannot compute this spec ({spec.name or 'custom'}) exactly: {reason}; "
                         "use backend='numba' or backend='numpy'")


def matmul_model(spec, K: int) -> tuple[int, ...]:
    """The model parameters (MATMUL_FIELDS) of ``spec`` for a reduction of length K."""
    from ...matmul import rounding_events

    a, b = _operand_formats(spec)
    width = spec.order.width or 1
    values = dict(
        step=STEP_CODES[spec.step], k_fused=spec.k_fused, n_frac=-1 if spec.n_frac is None else spec.n_frac,
        align_floor=int(spec.align_rounding == "floor"), c_mode=C_MODE_CODES[spec.c_mode],
        has_ref_floor=int(spec.ref_exp_floor is not None), ref_exp_floor=spec.ref_exp_floor or 0,
        late_n_frac=spec.late_n_frac or 0, order=ORDER_CODES[spec.order.kind], width=width,
        log2_width=width.bit_length() - 1, chunk=spec.promote_every or max(K, 1), promotes=int(spec.promotes),
        scale_at_promotion=int(spec.scale_at == "promotion"), has_a_scale=int(spec.a_scale_block is not None),
        has_b_scale=int(spec.b_scale_block is not None), has_product=int(spec.product_format is not None),
        has_via=int(spec.output_via is not None), a_emin=a.emin, b_emin=b.emin, acc_emin=spec.accumulator.emin,
        product_emin=spec.product_format.emin if spec.product_format is not None else 0,
        events=rounding_events(spec, K), K=K)
    return tuple(int(values[f]) for f in MATMUL_FIELDS)


def matmul_specs(spec, seed: int | None) -> list[RoundSpec]:
    """The RoundSpecs of MATMUL_SPECS (fp32 RNE stands in for an absent product / via rounding)."""
    from ...matmul import FP32

    fp32 = RoundSpec(FP32)
    return [spec.accumulator_spec(seed), spec.accumulator_rne_spec(), spec.product_spec() or fp32, fp32,
            spec.via_spec(seed) or fp32, spec.output_spec(seed)]


def matmul_params(spec, K: int, seed: int | None) -> np.ndarray:
    """The uint64 array matmul.cuh's pl_mm_load reads: matmul_model, then spec_args() of each of
    matmul_specs (signed values as two's complement)."""
    values = list(matmul_model(spec, K))
    for s in matmul_specs(spec, seed):
        values += spec_args(s)
    return np.array([v % (1 << 64) for v in values], dtype=np.uint64)
