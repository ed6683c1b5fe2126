"""Floating-point formats as data.

A :class:`Format` holds only primitive facts (exponent and mantissa widths, bias,
signedness, which special values exist and how NaN is encoded).  Everything else
(``max``, ``eps``, ``smallest_normal`` ... named as in :class:`numpy.finfo`) is
derived from those facts by decoding the format's own codes, so a custom format
is exactly as well described as a catalogue one.

NaN encodings (``nan``):

* ``"ieee"`` -- every code with an all-ones exponent field is Inf (mantissa 0) or
  NaN (mantissa non-zero).  Needs ``has_inf=True``.
* ``"fn"`` -- only the all-ones magnitude ``S.1111.111`` is NaN (OCP E4M3, E8M0).
  With ``has_inf`` the magnitude just below it is Inf (P3109 unsigned).
* ``"fnuz"`` -- only the negative-zero code ``1.0000.000`` is NaN and there is no
  -0 (AMD MI300, P3109 signed).  With ``has_inf`` the all-ones magnitude is Inf.
* ``"none"`` -- no NaN (OCP FP4/FP6); every code is a number.

The exponent field 0 holds subnormals (``has_subnormals=True``, the default) or,
with ``has_subnormals=False``, only ±0 (every mantissa there decodes as zero, as
flush-to-zero hardware reads it), so the smallest normal is the same either way.
Exponent-only formats without a zero (``has_zero=False``, E8M0) use the field 0
as their lowest normal binade.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import ml_dtypes
import numpy as np

__all__ = ["Format", "formats", "get_format", "p3109", "NAN_ENCODINGS"]

NAN_ENCODINGS = ("ieee", "fn", "fnuz", "none")


@dataclass(frozen=True)
class Format:
    """A binary floating-point format: ``(-1)^s * 2^(E - bias) * 1.M`` (or ``0.M``
    for subnormals, exponent field 0).

    Formats must fit inside binary64 (every value exactly representable as a
    Python float), which covers every format used in machine learning.
    """

    exponent_bits: int
    mantissa_bits: int
    bias: int | None = None
    signed: bool = True
    has_inf: bool = True
    nan: str = "ieee"
    has_subnormals: bool = True
    has_zero: bool = True
    name: str | None = None
    ml_dtypes_name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        e, m = self.exponent_bits, self.mantissa_bits
        for arg, value in (("exponent_bits", e), ("mantissa_bits", m)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise TypeError(f"Format: {arg} must be an int, got {value!r}")
        if not 1 <= e <= 11:
            raise ValueError(f"Format: exponent_bits={e} not allowed; must be 1..11")
        if not 0 <= m <= 52:
            raise ValueError(f"Format: mantissa_bits={m} not allowed; must be 0..52")
        if self.nan not in NAN_ENCODINGS:
            raise ValueError(f"Format: nan={self.nan!r} not allowed; choose one of {NAN_ENCODINGS}")
        if self.bias is None:
            object.__setattr__(self, "bias", 2 ** (e - 1) - 1)
        if not isinstance(self.bias, (int, np.integer)) or isinstance(self.bias, bool):
            raise TypeError(f"Format: bias must be an int, got {self.bias!r}")
        object.__setattr__(self, "bias", int(self.bias))
        if self.nan == "ieee" and not self.has_inf:
            raise ValueError("Format: nan='ieee' reserves the all-ones exponent for Inf; has_inf must be True")
        if self.nan == "none" and self.has_inf:
            raise ValueError("Format: has_inf=True needs a NaN encoding (Inf - Inf); nan='none' is not allowed with it")
        if self.nan == "fnuz" and not self.signed:
            raise ValueError("Format: nan='fnuz' uses the negative-zero code; it needs signed=True")
        if not self.has_zero and (self.mantissa_bits != 0 or self.has_subnormals):
            raise ValueError("Format: has_zero=False is only meaningful for exponent-only formats "
                             "(mantissa_bits=0, has_subnormals=False), like e8m0")
        if not self.has_zero and self.nan in ("none", "fnuz"):
            raise ValueError(f"Format: has_zero=False with nan={self.nan!r} is not allowed: rounding 0 gives NaN "
                             "there, so the format needs a NaN code apart from -0 (nan='fn' or 'ieee')")
        if self.nan == "ieee" and m == 0:
            raise ValueError(f"Format: nan='ieee' with exponent_bits={e}, mantissa_bits=0 has no NaN code (the "
                             "all-ones exponent is only Inf); use mantissa_bits >= 1 or nan='fn'")
        if self._max_magnitude_code <= 0 or self.decode_exact(self._max_magnitude_code) == 0:
            raise ValueError(f"Format: exponent_bits={e}, mantissa_bits={m}, nan={self.nan!r}, "
                             f"has_inf={self.has_inf} leave no finite non-zero value")
        emax = self.emax
        emin_sub = self.emin - (m if self.has_subnormals else 0)
        if emax > 1023 or emin_sub < -1074 or (emax == 1023 and m > 52):
            raise ValueError(f"Format: bias={self.bias} with exponent_bits={e}, mantissa_bits={m} "
                             f"gives exponents {emin_sub}..{emax}, outside binary64 (-1074..1023)")
        if self.name is None:
            object.__setattr__(self, "name", self._default_name())

    def _default_name(self) -> str:
        parts = [f"e{self.exponent_bits}m{self.mantissa_bits}"]
        if self.bias != 2 ** (self.exponent_bits - 1) - 1:
            parts.append(f"b{self.bias}")
        if not self.signed:
            parts.append("u")
        if self.nan != "ieee":
            parts.append(self.nan + ("inf" if self.has_inf else ""))
        if not self.has_subnormals:
            parts.append("nosub")
        return "_".join(parts)

    # ---- codes ----------------------------------------------------------------
    @property
    def bits(self) -> int:
        """Storage width in bits (sign + exponent + mantissa)."""
        return int(self.signed) + self.exponent_bits + self.mantissa_bits

    @property
    def code_dtype(self) -> np.dtype:
        """Smallest unsigned integer dtype holding one code."""
        for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
            if self.bits <= np.dtype(dt).itemsize * 8:
                return np.dtype(dt)
        raise AssertionError("unreachable: formats are at most 64 bits")

    @property
    def sign_mask(self) -> int:
        """The sign bit of a code (0 for unsigned formats)."""
        return (1 << (self.exponent_bits + self.mantissa_bits)) if self.signed else 0

    @property
    def _all_ones_magnitude(self) -> int:
        return (1 << (self.exponent_bits + self.mantissa_bits)) - 1

    @property
    def inf_code(self) -> int | None:
        """Magnitude code of +Inf, or None."""
        if not self.has_inf:
            return None
        if self.nan == "ieee":
            return ((1 << self.exponent_bits) - 1) << self.mantissa_bits
        if self.nan == "fn":
            return self._all_ones_magnitude - 1
        return self._all_ones_magnitude

    @property
    def nan_code(self) -> int | None:
        """The canonical (quiet, positive) NaN code, or None when the format has no NaN."""
        if self.nan == "ieee":
            quiet = 1 << (self.mantissa_bits - 1) if self.mantissa_bits else 0
            return (((1 << self.exponent_bits) - 1) << self.mantissa_bits) | quiet
        if self.nan == "fn":
            return self._all_ones_magnitude
        if self.nan == "fnuz":
            return self.sign_mask
        return None

    @property
    def _max_magnitude_code(self) -> int:
        if self.nan == "ieee":
            return (((1 << self.exponent_bits) - 1) << self.mantissa_bits) - 1
        top = self._all_ones_magnitude
        return top - (self.nan == "fn") - self.has_inf

    def is_nan_code(self, code: int) -> bool:
        mag = code & ~self.sign_mask
        if self.nan == "ieee":
            all_ones_exponent = (mag >> self.mantissa_bits) == (1 << self.exponent_bits) - 1
            return all_ones_exponent and (mag & ((1 << self.mantissa_bits) - 1)) != 0
        if self.nan == "fn":
            return mag == self._all_ones_magnitude
        if self.nan == "fnuz":
            return code == self.sign_mask
        return False

    def decode_exact(self, code: int) -> Fraction | float:
        """Exact value of one code: a Fraction, or ``math.inf``/``-math.inf``/``math.nan``.

        -0 is returned as the float ``-0.0`` so its sign survives.
        """
        code = int(code)
        if not 0 <= code < (1 << self.bits):
            raise ValueError(f"code={code} not allowed for {self.name}; must be 0..{(1 << self.bits) - 1}")
        if self.is_nan_code(code):
            return math.nan
        negative = bool(code & self.sign_mask)
        mag = code & ~self.sign_mask
        if mag == self.inf_code:
            return -math.inf if negative else math.inf
        exp_field = mag >> self.mantissa_bits
        frac = mag & ((1 << self.mantissa_bits) - 1)
        if exp_field == 0 and self.has_zero:       # subnormal, or (without subnormals) zero
            value = Fraction(frac, 1 << self.mantissa_bits) * Fraction(2) ** (1 - self.bias) if self.has_subnormals \
                else Fraction(0)
        else:
            significand = Fraction((1 << self.mantissa_bits) + frac, 1 << self.mantissa_bits)
            value = significand * Fraction(2) ** (exp_field - self.bias)
        if value == 0:
            return -0.0 if negative else 0.0
        return -value if negative else value

    # ---- numpy.finfo-style facts -----------------------------------------------
    @property
    def nmant(self) -> int:
        return self.mantissa_bits

    @property
    def nexp(self) -> int:
        return self.exponent_bits

    @property
    def emax(self) -> int:
        """Exponent of the largest finite value (``floor(log2(max))``)."""
        return (self._max_magnitude_code >> self.mantissa_bits) - self.bias

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal value.

        The exponent field 0 holds subnormals, or (``has_subnormals=False``) only ±0;
        in a format without zero (E8M0) it is the lowest normal binade.
        """
        return (1 if self.has_zero else 0) - self.bias

    @property
    def maxexp(self) -> int:
        """As numpy.finfo: the smallest power of two that overflows, as an exponent."""
        return self.emax + 1

    @property
    def minexp(self) -> int:
        return self.emin

    @property
    def max(self) -> float:
        return float(self.decode_exact(self._max_magnitude_code))

    @property
    def min(self) -> float:
        """Most negative finite value (0 edge for unsigned formats: the smallest value)."""
        return -self.max if self.signed else self.smallest

    @property
    def smallest_normal(self) -> float:
        return 2.0 ** self.emin

    tiny = smallest_normal

    @property
    def smallest_subnormal(self) -> float:
        """Smallest positive value (the smallest normal when there are no subnormals)."""
        return 2.0 ** (self.emin - (self.mantissa_bits if self.has_subnormals else 0))

    smallest = smallest_subnormal

    @property
    def eps(self) -> float:
        """Distance from 1 to the next larger value: ``2^-mantissa_bits``."""
        return 2.0 ** -self.mantissa_bits

    @property
    def precision(self) -> int:
        """Approximate decimal digits, as numpy.finfo: ``floor(-log10(eps))``."""
        return int(math.floor(-math.log10(self.eps)))

    @property
    def resolution(self) -> float:
        return 10.0 ** -self.precision

    @property
    def decimal_digits(self) -> float:
        """Significant decimal digits: ``(mantissa_bits + 1) * log10(2)``."""
        return (self.mantissa_bits + 1) * math.log10(2)

    @property
    def dynamic_range(self) -> float:
        """Decades between the smallest positive and the largest finite value."""
        return math.log10(self.max) - math.log10(self.smallest_subnormal)

    @property
    def ml_dtype(self) -> np.dtype | None:
        """The equivalent ``ml_dtypes``/NumPy dtype, or None."""
        if self.ml_dtypes_name is None:
            return None
        if hasattr(np, self.ml_dtypes_name):
            return np.dtype(getattr(np, self.ml_dtypes_name))
        return np.dtype(getattr(ml_dtypes, self.ml_dtypes_name))

    def __str__(self) -> str:
        return self.name


def p3109(k: int, p: int, signed: bool = True, extended: bool = True) -> Format:
    """IEEE P3109 ``binary{k}p{p}`` format (interim report; bias as in gfloat).

    Signed formats: ``k - p`` exponent bits, bias ``2^(k-p-1)``, NaN at the
    negative-zero code, ±Inf at the all-ones magnitudes when ``extended``.
    Unsigned formats: ``k - p + 1`` exponent bits, bias ``2^(k-p)``, NaN at all
    ones, +Inf just below it when ``extended``.
    """
    for arg, value in (("k", k), ("p", p)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"p3109: {arg} must be an int, got {value!r}")
    if not 2 <= k <= 16:
        raise ValueError(f"p3109: k={k} not allowed; must be 2..16")
    if not 1 <= p <= k - (1 if signed else 0):
        raise ValueError(f"p3109: p={p} not allowed for k={k}; must be 1..{k - (1 if signed else 0)}")
    e = k - p if signed else k - p + 1
    if e < 1:
        raise ValueError(f"p3109: k={k}, p={p} leaves no exponent bits")
    bias = 2 ** (k - p - 1) if signed else 2 ** (k - p)
    suffix = ("" if signed else "u") + ("" if extended else "f")
    return Format(e, p - 1, bias=bias, signed=signed, has_inf=extended,
                  nan="fnuz" if signed else "fn", name=f"binary{k}p{p}{suffix}")


def _catalogue() -> dict[str, Format]:
    F = Format
    fmts = [
        F(11, 52, name="fp64", ml_dtypes_name="float64"),
        F(8, 23, name="fp32", ml_dtypes_name="float32"),
        F(8, 10, name="tf32"),
        F(5, 10, name="fp16", ml_dtypes_name="float16"),
        F(8, 7, name="bf16", ml_dtypes_name="bfloat16"),
        F(4, 3, has_inf=False, nan="fn", name="e4m3", ml_dtypes_name="float8_e4m3fn"),
        F(5, 2, name="e5m2", ml_dtypes_name="float8_e5m2"),
        F(4, 3, bias=8, has_inf=False, nan="fnuz", name="e4m3fnuz", ml_dtypes_name="float8_e4m3fnuz"),
        F(5, 2, bias=16, has_inf=False, nan="fnuz", name="e5m2fnuz", ml_dtypes_name="float8_e5m2fnuz"),
        F(4, 3, bias=11, has_inf=False, nan="fnuz", name="e4m3b11fnuz", ml_dtypes_name="float8_e4m3b11fnuz"),
        F(3, 4, name="e3m4", ml_dtypes_name="float8_e3m4"),
        F(4, 3, name="e4m3_ieee", ml_dtypes_name="float8_e4m3"),
        F(3, 2, has_inf=False, nan="none", name="fp6_e3m2", ml_dtypes_name="float6_e3m2fn"),
        F(2, 3, has_inf=False, nan="none", name="fp6_e2m3", ml_dtypes_name="float6_e2m3fn"),
        F(2, 1, has_inf=False, nan="none", name="fp4_e2m1", ml_dtypes_name="float4_e2m1fn"),
        F(8, 0, bias=127, signed=False, has_inf=False, nan="fn", has_subnormals=False,
          has_zero=False, name="e8m0", ml_dtypes_name="float8_e8m0fnu"),
    ]
    fmts += [p3109(8, p) for p in range(1, 8)]
    return {f.name: f for f in fmts}


#: The catalogue, name -> Format (DESIGN §4), plus the P3109 binary8 formats.
formats: dict[str, Format] = _catalogue()

_ALIASES = {
    "float64": "fp64", "double": "fp64", "binary64": "fp64",
    "float32": "fp32", "single": "fp32", "binary32": "fp32",
    "float16": "fp16", "half": "fp16", "binary16": "fp16",
    "bfloat16": "bf16",
    "fp8_e4m3": "e4m3", "float8_e4m3fn": "e4m3", "ocp_e4m3": "e4m3", "e4m3fn": "e4m3",
    "fp8_e5m2": "e5m2", "float8_e5m2": "e5m2", "ocp_e5m2": "e5m2",
    "float8_e4m3fnuz": "e4m3fnuz", "float8_e5m2fnuz": "e5m2fnuz",
    "float8_e4m3b11fnuz": "e4m3b11fnuz", "float8_e3m4": "e3m4", "float8_e4m3": "e4m3_ieee",
    "float6_e3m2fn": "fp6_e3m2", "float6_e2m3fn": "fp6_e2m3", "float4_e2m1fn": "fp4_e2m1",
    "fp4": "fp4_e2m1", "float8_e8m0fnu": "e8m0", "e8m0fnu": "e8m0",
}


def get_format(fmt: str | Format) -> Format:
    """Look up a format by name or alias (case-insensitive), or pass a Format through.

    ``binary{K}p{P}`` (with optional ``u``/``f`` suffixes) builds any P3109 format.
    """
    if isinstance(fmt, Format):
        return fmt
    if not isinstance(fmt, str):
        raise TypeError(f"format must be a name or a Format, got {type(fmt).__name__} {fmt!r}")
    key = fmt.strip().lower()
    key = _ALIASES.get(key, key)
    if key in formats:
        return formats[key]
    if key.startswith("binary") and "p" in key:
        body, _, rest = key[len("binary"):].partition("p")
        digits = rest.rstrip("uf")
        flags = rest[len(digits):]
        if body.isdigit() and digits.isdigit() and set(flags) <= {"u", "f"} and len(set(flags)) == len(flags):
            try:
                return p3109(int(body), int(digits), signed="u" not in flags, extended="f" not in flags)
            except ValueError as exc:
                raise ValueError(f"format={fmt!r} is not a valid P3109 format ({exc}); allowed: "
                                 f"{_allowed_names()}") from None
    raise ValueError(f"format={fmt!r} is not a known format; allowed: {_allowed_names()}")


def _allowed_names() -> str:
    return ", ".join(sorted(formats)) + "; aliases " + ", ".join(sorted(_ALIASES)) + "; binary{K}p{P}[u][f]"
