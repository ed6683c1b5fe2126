"""An independent, exact oracle for rounding to any precisionlab format.

Written from DESIGN §4-§5 and the decisions recorded in the docstrings of
``precisionlab/rounding.py`` and ``precisionlab/formats.py`` -- never from the
backends.  It reads only the primitive fields of a Format (``exponent_bits``,
``mantissa_bits``, ``bias``, ``signed``, ``has_inf``, ``nan``,
``has_subnormals``, ``has_zero``) and works on the exact rational value of the
input (``fractions.Fraction``).  It is slow (pure Python) and meant to be obviously
right.

Model
-----
A code is ``[sign] exponent-field mantissa-field``.  A magnitude code with exponent
field ``E`` and mantissa field ``f`` is ``(2^m + f) * 2^(E - bias - m)``, except
that with subnormals the field ``E = 0`` means ``f * 2^(1 - bias - m)``.  Which
magnitudes are Inf/NaN depends on ``nan`` (see formats.py):

* ``ieee``: exponent field all ones -> Inf (f == 0) or NaN;
* ``fn``:   all-ones magnitude -> NaN; with ``has_inf`` the one below is Inf;
* ``fnuz``: the negative-zero code is NaN (no -0); with ``has_inf`` the all-ones
  magnitude is Inf;
* ``none``: every code is a number.

Without subnormals the exponent field 0 holds only ±0 (every mantissa there reads
as zero), except in formats without a zero (E8M0), where it is the lowest normal
binade, starting at ``2^-bias``.

Rounding is done on an *extended* grid: the format's binades continued without an
upper bound (so E4M3's 448 is followed by a virtual 480, and 464 is a tie between
them), and continued below the smallest normal by a subnormal grid of spacing
``2^(emin - m)`` whether or not the format really has subnormals; results that land
outside the format are then dealt with by the overflow and flush rules.

Inside one binade (quantum ``u``) the neighbours of ``a`` are ``n*u`` and
``(n+1)*u`` with ``n = floor(a/u)``.  "Even"/"odd" refer to the integer ``n``
(the significand's last bit), as in IEEE 754 and ml_dtypes; for ``m >= 1`` that is
the code's last bit.  For exponent-only formats (``m = 0``) every normal
significand is 1, so a tie between two powers of two goes to the larger one (what
ml_dtypes does for E8M0: 1.5 -> 2, 3 -> 4) and round-to-odd truncates.  (gfloat
instead breaks such ties by the parity of the code; see test_rounding.)
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from fractions import Fraction
from functools import cache

__all__ = ["OFormat", "of", "finite_values", "code_values", "canonical_nan_code", "neighbours",
           "oracle_round", "oracle_encode", "oracle_decode", "MODES", "POLICIES"]

MODES = ("rne", "rna", "rtz", "rup", "rdn", "rto", "sr", "sr_equal")
POLICIES = ("default", "saturate", "saturate_finite")


@dataclass(frozen=True)
class OFormat:
    """The primitive facts of a format, copied out of a precisionlab Format."""

    e: int
    m: int
    bias: int
    signed: bool
    has_inf: bool
    nan: str
    sub: bool
    has_zero: bool

    @property
    def bits(self) -> int:
        return int(self.signed) + self.e + self.m

    @property
    def sign_bit(self) -> int:
        return 1 << (self.e + self.m) if self.signed else 0

    @property
    def all_ones(self) -> int:
        return (1 << (self.e + self.m)) - 1

    @property
    def e0(self) -> int:
        """Exponent of the smallest normal value (the lowest normal binade)."""
        return 1 - self.bias if self.has_zero else -self.bias

    @property
    def min_normal(self) -> Fraction:
        return Fraction(2) ** self.e0

    @property
    def has_nan(self) -> bool:
        # An 'ieee' format with m == 0 has no NaN code left (all-ones exponent = Inf);
        # we still say it has NaN here: the documented behaviour is "NaN maps to NaN".
        return self.nan != "none"

    @property
    def has_negzero(self) -> bool:
        return self.signed and self.nan != "fnuz" and self.has_zero

    def classify_mag(self, mag: int) -> str:
        """'nan', 'inf' or 'num' for a magnitude code (fnuz NaN is handled on full codes)."""
        top_exp = (1 << self.e) - 1
        if self.nan == "ieee":
            if mag >> self.m == top_exp:
                return "inf" if mag & ((1 << self.m) - 1) == 0 else "nan"
            return "num"
        if self.nan == "fn":
            if mag == self.all_ones:
                return "nan"
            if self.has_inf and mag == self.all_ones - 1:
                return "inf"
            return "num"
        if self.nan == "fnuz":
            return "inf" if self.has_inf and mag == self.all_ones else "num"
        return "num"

    def mag_value(self, mag: int) -> Fraction:
        """The value of a numeric magnitude code."""
        E, f = mag >> self.m, mag & ((1 << self.m) - 1)
        if E == 0 and self.has_zero:
            return f * Fraction(2) ** (1 - self.bias - self.m) if self.sub else Fraction(0)
        return ((1 << self.m) + f) * Fraction(2) ** (E - self.bias - self.m)

    @property
    def max_mag_code(self) -> int:
        if self.nan == "ieee":
            return (((1 << self.e) - 1) << self.m) - 1
        if self.nan == "fn":
            return self.all_ones - 1 - int(self.has_inf)
        if self.nan == "fnuz":
            return self.all_ones - int(self.has_inf)
        return self.all_ones

    @property
    def max(self) -> Fraction:
        return self.mag_value(self.max_mag_code)

    @property
    def smallest(self) -> Fraction:
        """Smallest positive value."""
        return Fraction(2) ** (self.e0 - (self.m if self.sub else 0))


def of(fmt) -> OFormat:
    """Copy the primitive fields out of a precisionlab Format (or pass an OFormat through)."""
    if isinstance(fmt, OFormat):
        return fmt
    return OFormat(int(fmt.exponent_bits), int(fmt.mantissa_bits), int(fmt.bias), bool(fmt.signed),
                   bool(fmt.has_inf), str(fmt.nan), bool(fmt.has_subnormals), bool(fmt.has_zero))


# ---- enumeration (formats of at most 16 bits) -----------------------------------------

@cache
def code_values(fmt) -> tuple:
    """Value of every code (index = code), as Fraction / float('inf') / float('nan') / -0.0.

    Only for formats of at most 16 bits.
    """
    f = of(fmt)
    if f.bits > 16:
        raise ValueError("code_values enumerates formats of at most 16 bits")
    out = []
    for code in range(1 << f.bits):
        neg = bool(code & f.sign_bit)
        mag = code & ~f.sign_bit
        if f.nan == "fnuz" and code == f.sign_bit:
            out.append(math.nan)
            continue
        kind = f.classify_mag(mag)
        if kind == "nan":
            out.append(math.nan)
        elif kind == "inf":
            out.append(-math.inf if neg else math.inf)
        else:
            v = f.mag_value(mag)
            if v == 0:
                out.append(-0.0 if neg else 0.0)
            else:
                out.append(-v if neg else v)
    return tuple(out)


@cache
def finite_values(fmt) -> tuple:
    """Sorted tuple of all distinct finite values (Fractions) of a format of at most 16
    bits, with 0 included when the format has a zero (also for formats without
    subnormals, whose zero has no code of its own in the model above)."""
    f = of(fmt)
    vals = {Fraction(v) for v in code_values(f) if not (isinstance(v, float) and not math.isfinite(v))}
    if f.has_zero:
        vals.add(Fraction(0))
    return tuple(sorted(vals))


def canonical_nan_code(fmt, negative: bool = False) -> int | None:
    """The canonical quiet NaN code (DESIGN §5), signed where the format's NaN has a sign."""
    f = of(fmt)
    if f.nan == "ieee":
        quiet = 1 << (f.m - 1) if f.m else 0
        mag = (((1 << f.e) - 1) << f.m) | quiet
    elif f.nan == "fn":
        mag = f.all_ones
    elif f.nan == "fnuz":
        return f.sign_bit
    else:
        return None
    return mag | (f.sign_bit if negative else 0)


# ---- the extended grid -----------------------------------------------------------------

def _floor_log2(a: Fraction) -> int:
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    assert Fraction(2) ** e <= a < Fraction(2) ** (e + 1)
    return e


def neighbours(a: Fraction, fmt) -> tuple[Fraction, Fraction, int, Fraction]:
    """For ``a >= 0``: ``(lower, upper, n, u)`` on the extended grid, ``lower = n*u <= a <
    upper = (n+1)*u`` (``lower == a`` when ``a`` is on the grid)."""
    f = of(fmt)
    if a < f.min_normal:
        u = Fraction(2) ** (f.e0 - f.m)
    else:
        u = Fraction(2) ** (_floor_log2(a) - f.m)
    n = math.floor(a / u)
    return n * u, (n + 1) * u, n, u


def neighbours_enumerated(a: Fraction, fmt) -> tuple[Fraction, Fraction]:
    """The same neighbours (within ``[min_normal, max]`` or among real subnormals) found by
    bisecting the enumerated value list; used to check :func:`neighbours`."""
    vals = finite_values(fmt)
    i = bisect_right(vals, a) - 1
    lower = vals[i]
    upper = lower if lower == a else vals[i + 1]
    return lower, upper


# ---- rounding ------------------------------------------------------------------------

def _check_R(R, nbits: int) -> int:
    if R is None:
        raise ValueError("stochastic rounding needs the random integer R")
    R = int(R)
    if not 0 <= R < (1 << nbits):
        raise ValueError(f"R={R} out of range for {nbits} bits")
    return R


def oracle_round(x: float, fmt, mode: str = "rne", overflow: str = "default", subnormals: bool = True,
                 flush_inputs: bool = False, R: int | None = None, sr_bits: int | None = None) -> float:
    """The correctly rounded value of the float ``x`` in ``fmt`` (as a Python float; -0.0,
    inf and nan where they apply).

    ``sr``: ``R`` is the random integer of ``sr_bits`` bits (64 when None); away from zero
    iff ``floor(delta * 2^N) + R >= 2^N``.  ``sr_equal``: ``R`` is one random bit, away
    from zero iff it is 1.  Raises ValueError for a NaN input to a format without NaN.
    """
    f = of(fmt)
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}")
    if overflow not in POLICIES:
        raise ValueError(f"overflow {overflow!r}")
    x = float(x)
    nan, inf = math.nan, math.inf

    if math.isnan(x):
        if not f.has_nan:
            raise ValueError("NaN input for a format without NaN")
        return nan
    neg = math.copysign(1.0, x) < 0
    if not f.signed:
        if x < 0:  # includes -inf; -0.0 < 0 is False
            if not f.has_nan:
                raise NotImplementedError("negative input to an unsigned format without NaN is undocumented")
            return nan
        neg = False
    sgn = -1.0 if neg else 1.0
    fmax = float(f.max)

    def zero() -> float:
        if not f.has_zero:
            return nan
        return -0.0 if (neg and f.has_negzero) else 0.0

    def no_inf_overflow() -> float:
        # an infinite result in a format that cannot hold it
        if f.has_inf:
            return sgn * inf
        if f.has_nan:
            return nan
        return sgn * fmax

    if math.isinf(x):
        if overflow == "saturate":
            return sgn * fmax
        return no_inf_overflow()
    if x == 0:
        return zero()

    a = abs(Fraction(x))
    if flush_inputs and a < f.min_normal:
        return zero()

    lower, upper, n, u = neighbours(a, f)
    if lower == a:
        r = a
        away = False
    else:
        if mode == "rne":
            d_lo, d_up = a - lower, upper - a
            away = d_up < d_lo or (d_up == d_lo and n % 2 == 1)
        elif mode == "rna":
            away = (upper - a) <= (a - lower)
        elif mode == "rtz":
            away = False
        elif mode == "rup":
            away = not neg
        elif mode == "rdn":
            away = neg
        elif mode == "rto":
            away = n % 2 == 0
        elif mode == "sr":
            N = 64 if sr_bits is None else int(sr_bits)
            Rv = _check_R(R, N)
            delta = (a - lower) / u
            away = math.floor(delta * (1 << N)) + Rv >= (1 << N)
        else:  # sr_equal
            away = _check_R(R, 1) == 1
        r = upper if away else lower

    if r > f.max:
        toward_zero = mode in ("rtz", "rto") or (mode == "rdn" and not neg) or (mode == "rup" and neg)
        if overflow in ("saturate", "saturate_finite") or toward_zero:
            return sgn * fmax
        return no_inf_overflow()

    if 0 < r < f.min_normal and not (subnormals and f.sub):
        r = Fraction(0)  # FTZ, tininess after rounding
    if r == 0:
        if not f.has_zero:
            return sgn * float(f.smallest)  # "too small to round to the smallest value"
        return zero()
    return sgn * float(r)


def oracle_encode_value(v: float, fmt) -> int:
    """The code of a value of ``fmt`` (as returned by :func:`oracle_round`); NaN -> the
    canonical NaN code (with the input's sign where the format's NaN has one).

    Raises LookupError when the value has no code (zero of a format without subnormals).
    """
    f = of(fmt)
    if math.isnan(v):
        code = canonical_nan_code(f, negative=math.copysign(1.0, v) < 0 and f.nan in ("ieee", "fn") and f.signed)
        if code is None:
            raise ValueError("format has no NaN")
        return code
    table = _value_to_code(f)
    key = (v, math.copysign(1.0, v) < 0) if v == 0 else (v, False)
    if key not in table:
        raise LookupError(f"{v!r} has no code in {f}")
    return table[key]


@cache
def _value_to_code(f: OFormat) -> dict:
    table = {}
    for code, v in enumerate(code_values(f)):
        if isinstance(v, float) and math.isnan(v):
            continue
        fv = float(v)
        key = (fv, math.copysign(1.0, fv) < 0) if fv == 0 else (fv, False)
        table.setdefault(key, code)
    return table


def oracle_encode(x: float, fmt, **kw) -> int:
    return oracle_encode_value(oracle_round(x, fmt, **kw), fmt)


def oracle_decode(code: int, fmt) -> float:
    v = code_values(fmt)[code]
    return v if isinstance(v, float) else float(v)
