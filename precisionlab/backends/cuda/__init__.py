"""CUDA C sources of the GPU kernels and the argument conventions they share.

``round.cuh`` holds all the rounding arithmetic as ``__host__ __device__`` functions;
``kernels.cu`` wraps them in CuPy kernels; the tests compile ``round.cuh`` for the host
(nvcc or g++) and check it bit for bit against the NumPy reference.  This module is
the one place that turns a :class:`~precisionlab.formats.Format` / :class:`RoundSpec`
into the flat argument lists of ``PL_FORMAT_PARAMS`` / ``PL_SPEC_PARAMS`` and that
fixes the numeric codes of modes, policies and NaN encodings (the Numba-CUDA device
functions use the same lists, so all GPU code reads the same facts).  Pure Python: it
imports no GPU package.
"""

from __future__ import annotations

from importlib import resources

from ...formats import Format
from ...rounding import Overflow, Rounding, RoundSpec, fits_float32

__all__ = ["MODE_CODES", "OVERFLOW_CODES", "NAN_KINDS", "FORMAT_ARG_TYPES", "SPEC_ARG_TYPES", "format_args",
           "spec_args", "source", "source_dir", "kernel_source", "uses_fast_path", "round_kernel_name",
           "encode_kernel_name", "decode_kernel_name", "kernel_names"]

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


def kernel_source() -> str:
    """The text the CuPy backend compiles: round.cuh followed by kernels.cu, its
    ``#include "round.cuh"`` resolved inline (CuPy's kernel cache keys on a hash of the
    text, so an edit of the header then recompiles, and no include path is needed)."""
    include = '#include "round.cuh"'
    kernels = source("kernels.cu")
    if include not in kernels:
        raise AssertionError(f"kernels.cu no longer has the line {include!r}")
    return source("round.cuh") + "\n" + kernels.replace(include, "")


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


def kernel_names() -> list[str]:
    """Every template instance the CuPy backend can launch (the fast path only with float32)."""
    names = [round_kernel_name(False, True), round_kernel_name(False, False), round_kernel_name(True, False)]
    for nbytes in _C_CODE_TYPES:
        names += [encode_kernel_name(False, True, nbytes), encode_kernel_name(False, False, nbytes),
                  encode_kernel_name(True, False, nbytes), decode_kernel_name(nbytes, False, True),
                  decode_kernel_name(nbytes, False, False), decode_kernel_name(nbytes, True, False)]
    return names
