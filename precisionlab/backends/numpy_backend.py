"""The NumPy reference backend: the definition every other backend must equal.

Rounding works on exact integers.  Every float32/float64 input is split into
``|x| = M * 2^E`` with an integer ``M < 2^53``; the target quantum at that
magnitude is ``2^q`` with ``q = max(floor(log2|x|), emin) - mantissa_bits``;
``M`` is divided by ``2^(q - E)`` into a kept integer ``N`` and a remainder, and
the rounding mode decides from the remainder whether ``N`` goes one step away
from zero.  The result ``N * 2^q`` is exact in float64.  Overflow, flushing,
special values and the missing-zero / unsigned rules are then applied as data
(DESIGN §5).
"""

from __future__ import annotations

import numpy as np

from ..formats import Format
from ..random import random_bits
from ..rounding import Overflow, Rounding, RoundSpec, decode_dtype

name = "numpy"

_U1 = np.uint64(1)


def _shr(x: np.ndarray, n: np.ndarray) -> np.ndarray:
    """x >> n for uint64 arrays, 0 where n >= 64."""
    big = n >= 64
    return np.where(big, np.uint64(0), x >> np.where(big, 0, n).astype(np.uint64))


def _shl(x: np.ndarray, n: np.ndarray) -> np.ndarray:
    """x << n for uint64 arrays (n < 64 by construction)."""
    return x << n.astype(np.uint64)


def round_magnitudes(mag: np.ndarray, negative: np.ndarray, spec: RoundSpec, counter_start: int) -> np.ndarray:
    """Round finite non-negative float64 magnitudes on the format's grid with an unbounded
    exponent range above; returns the rounded magnitudes (float64, exact)."""
    fmt, mode = spec.format, spec.rounding
    m = fmt.mantissa_bits
    frac, exp = np.frexp(mag)                       # mag = frac * 2^exp, frac in [0.5, 1)
    M = np.ldexp(frac, 53).astype(np.uint64)        # integer significand, < 2^53
    E = exp.astype(np.int64) - 53                   # mag = M * 2^E exactly
    e = exp.astype(np.int64) - 1                    # floor(log2(mag)) for mag > 0
    q = np.maximum(e, fmt.emin) - m                 # quantum exponent of the target grid
    shift = q - E                                   # low bits of M that do not fit (>= 0)
    s = np.minimum(shift, 60)                       # M < 2^53: beyond 55 nothing changes
    N = _shr(M, s)                                  # kept integer significand
    rem = M - _shl(N, s)                            # discarded part, in units of 2^E
    half = _shl(np.ones_like(M), np.maximum(s - 1, 0))
    inexact = rem != 0
    if mode is Rounding.RNE:
        up = (rem > half) | ((rem == half) & inexact & ((N & _U1) == 1))
    elif mode is Rounding.RNA:
        up = (rem >= half) & inexact
    elif mode is Rounding.RTZ:
        up = np.zeros_like(inexact)
    elif mode is Rounding.RUP:
        up = inexact & ~negative
    elif mode is Rounding.RDN:
        up = inexact & negative
    elif mode is Rounding.RTO:
        N = N | inexact.astype(np.uint64)
        up = np.zeros_like(inexact)
    elif mode is Rounding.SR:
        nb = spec.sr_bits
        R = random_bits(spec.seed, counter_start, mag.size, nb)
        # f = floor(delta * 2^nb) with delta = rem / 2^shift (shift may exceed 64)
        f = np.where(shift >= nb, _shr(rem, np.maximum(shift - nb, 0)), _shl(rem, np.maximum(nb - shift, 0)))
        with np.errstate(over="ignore"):
            threshold = (np.uint64(0) - f) if nb == 64 else (np.uint64(1 << nb) - f)   # 2^nb - f
        up = inexact & (f > 0) & (R >= threshold)
    elif mode is Rounding.SR_EQUAL:
        R = random_bits(spec.seed, counter_start, mag.size, 1)
        up = inexact & (R == 1)
    else:
        raise AssertionError(mode)
    N = N + up.astype(np.uint64)
    return np.ldexp(N.astype(np.float64), q.astype(np.int32))


def _overflow_to_inf(spec: RoundSpec, negative: np.ndarray) -> np.ndarray:
    """Per element: does a finite overflow go to Inf (True) or to ±max (False)?"""
    mode = spec.rounding
    if spec.overflow is not Overflow.DEFAULT:
        return np.zeros_like(negative)
    if mode in (Rounding.RTZ, Rounding.RTO):
        return np.zeros_like(negative)
    if mode is Rounding.RUP:
        return ~negative
    if mode is Rounding.RDN:
        return negative.copy()
    return np.ones_like(negative)


def round_to_values(x: np.ndarray, spec: RoundSpec, counter_start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Round a flat float array; returns (magnitude float64, negative bool, is_nan bool).

    The magnitude is finite and exactly representable, or ``inf`` for ±Inf results.
    """
    fmt = spec.format
    x64 = x.astype(np.float64)
    negative = np.signbit(x64)
    is_nan = np.isnan(x64)
    is_inf = np.isinf(x64)
    mag = np.where(is_nan | is_inf, 0.0, np.abs(x64))
    if spec.flush_inputs:
        mag = np.where(mag < fmt.smallest_normal, 0.0, mag)
    rounded = np.where(mag > 0, round_magnitudes(np.where(mag > 0, mag, 1.0), negative, spec, counter_start), 0.0)

    # results below the smallest normal when subnormals are off: flush to zero
    if not spec.keeps_subnormals:
        rounded = np.where(rounded < fmt.smallest_normal, 0.0, rounded)
    # formats without zero: the smallest value is the floor
    if not fmt.has_zero:
        rounded = np.where((rounded == 0) & (mag > 0), fmt.smallest_subnormal, rounded)

    # finite overflow
    over = rounded > fmt.max
    to_inf = over & _overflow_to_inf(spec, negative)
    rounded = np.where(over, fmt.max, rounded)
    # infinite inputs: saturate clamps them, the other policies keep them
    inf_result = to_inf | (is_inf & (spec.overflow is not Overflow.SATURATE))
    rounded = np.where(is_inf & ~inf_result, fmt.max, rounded)
    # an Inf the format cannot hold is NaN, or ±max where there is no NaN either
    if not fmt.has_inf:
        if fmt.nan == "none":
            rounded = np.where(inf_result, fmt.max, rounded)
        else:
            is_nan = is_nan | inf_result
        inf_result = np.zeros_like(inf_result)
    rounded = np.where(inf_result, np.inf, rounded)

    # unsigned formats: below zero is NaN, -0 is +0; formats without zero: ±0 is NaN
    if not fmt.signed:
        is_nan = is_nan | (negative & ((mag > 0) | is_inf))
        negative = np.zeros_like(negative)
    if not fmt.has_zero:
        is_nan = is_nan | (rounded == 0)
    if fmt.nan == "fnuz":
        negative = negative & (rounded != 0)       # no -0
    return rounded, negative, is_nan


def encode_values(x: np.ndarray, spec: RoundSpec, counter_start: int) -> np.ndarray:
    fmt = spec.format
    mag, negative, is_nan = round_to_values(x, spec, counter_start)
    return values_to_codes(mag, negative, is_nan, fmt)


def values_to_codes(mag: np.ndarray, negative: np.ndarray, is_nan: np.ndarray, fmt: Format) -> np.ndarray:
    """Codes of exactly representable magnitudes (``inf`` allowed where the format has Inf)."""
    m = fmt.mantissa_bits
    finite = np.isfinite(mag) & ~is_nan
    safe = np.where(finite & (mag > 0), mag, 1.0)
    frac, exp = np.frexp(safe)
    e = exp.astype(np.int64) - 1
    normal = e >= fmt.emin
    # normal: exponent field e + bias, fraction bits of the significand
    sig = np.ldexp(frac, m + 1).astype(np.uint64)                 # 1.xxx * 2^m, exact
    normal_code = (((e + fmt.bias).astype(np.uint64)) << np.uint64(m)) | (sig - (np.uint64(1) << np.uint64(m)))
    sub_code = np.ldexp(np.where(normal, 0.0, safe), m - fmt.emin).astype(np.uint64)   # multiples of 2^(emin - m)
    code = np.where(normal, normal_code, sub_code)
    code = np.where(mag == 0, np.uint64(0), code)
    if fmt.inf_code is not None:
        code = np.where(np.isinf(mag), np.uint64(fmt.inf_code), code)
    code = code | np.where(negative, np.uint64(fmt.sign_mask), np.uint64(0))
    if fmt.nan_code is not None:
        nan_code = np.uint64(fmt.nan_code)
        if fmt.nan in ("ieee", "fn"):
            nan_code = nan_code | np.where(negative, np.uint64(fmt.sign_mask), np.uint64(0))
        code = np.where(is_nan, nan_code, code)
    return code.astype(fmt.code_dtype)


def round_values(x: np.ndarray, spec: RoundSpec, counter_start: int, out: np.ndarray | None = None) -> np.ndarray:
    mag, negative, is_nan = round_to_values(x, spec, counter_start)
    value = np.where(negative, -mag, mag)
    nan_negative = negative & (spec.format.nan != "fnuz")      # the fnuz NaN has no sign
    value = np.where(is_nan, np.where(nan_negative, -np.nan, np.nan), value)
    if out is None:
        return value.astype(x.dtype)
    out[...] = value
    return out


def decode_codes(codes: np.ndarray, fmt: Format) -> np.ndarray:
    c = codes.astype(np.uint64)
    m = fmt.mantissa_bits
    negative = (c & np.uint64(fmt.sign_mask)) != 0
    mag = c & ~np.uint64(fmt.sign_mask)
    exp_field = (mag >> np.uint64(m)).astype(np.int64)
    frac = (mag & np.uint64((1 << m) - 1)).astype(np.float64)
    value = np.ldexp(frac + 2.0 ** m, (exp_field - fmt.bias - m).astype(np.int32))
    if fmt.has_zero:      # exponent field 0: subnormals, or only zeros without subnormals
        sub = np.ldexp(frac, fmt.emin - m) if fmt.has_subnormals else np.zeros_like(frac)
        value = np.where(exp_field == 0, sub, value)
    if fmt.inf_code is not None:
        value = np.where(mag == np.uint64(fmt.inf_code), np.inf, value)
    is_nan = np.zeros(c.shape, dtype=bool)
    if fmt.nan == "ieee":
        is_nan = (exp_field == (1 << fmt.exponent_bits) - 1) & (frac != 0)
    elif fmt.nan == "fn":
        is_nan = mag == np.uint64((1 << (fmt.exponent_bits + m)) - 1)
    elif fmt.nan == "fnuz":
        is_nan = c == np.uint64(fmt.sign_mask)
    value = np.where(negative, -value, value)
    value = np.where(is_nan, np.where(negative & (fmt.nan != "fnuz"), -np.nan, np.nan), value)
    return value.astype(decode_dtype(fmt))


# =====================================================================================================
# Matmul: the reference accumulation model (DESIGN §6)
#
# One output element at a time, in exact integer arithmetic: every finite value is held as
# ``n * 2^e`` (an :class:`Exact`), products and sums are exact, and each rounding of the model
# is one call of :func:`round_exact`, which uses the grid rule of ``round_magnitudes`` on
# unbounded integers and then ``round_values`` for flushing, overflow and special values.
# The schedule (steps, order, promotion, output) follows precisionlab/matmul.py's docstring
# line by line.  Slow and obviously right; every other backend must equal it.
# =====================================================================================================

import math  # noqa: E402
from typing import NamedTuple  # noqa: E402

from ..random import splitmix64  # noqa: E402


class Exact(NamedTuple):
    """The finite value ``n * 2^e`` held exactly; ``neg`` is its sign bit (kept for zeros)."""

    n: int
    e: int
    neg: bool


def exact(x: float) -> Exact:
    """A finite float as an Exact."""
    m, e = math.frexp(x)
    return Exact(int(m * (1 << 53)), e - 53, math.copysign(1.0, x) < 0)


def floor_log2(x: Exact) -> int:
    """``floor(log2|x|)`` of a non-zero Exact."""
    return abs(x.n).bit_length() - 1 + x.e


def exponent(x: Exact, emin: int) -> int:
    """The alignment exponent ``E(x) = max(floor(log2|x|), emin)`` of a non-zero value."""
    return max(floor_log2(x), emin)


def all_negative_zero(values: list) -> bool:
    return all(isinstance(v, Exact) and v.n == 0 and v.neg for v in values)


def exact_sum(terms: list[Exact]) -> Exact:
    """The exact sum; an exactly zero sum is +0 unless every term is -0."""
    nonzero = [t for t in terms if t.n]
    if not nonzero:
        return Exact(0, 0, all_negative_zero(terms))
    e = min(t.e for t in nonzero)
    n = sum(t.n << (t.e - e) for t in nonzero)
    if n == 0:
        return Exact(0, 0, False)
    return Exact(n, e, n < 0)


def cut(x: Exact, q: int, how: str) -> Exact:
    """``x`` cut to a multiple of ``2^q``: ``rtz`` truncates the magnitude, ``floor`` goes toward -inf."""
    if x.e >= q:
        return x
    s = q - x.e
    n = -((-x.n) >> s) if (how == "rtz" and x.n < 0) else x.n >> s
    return Exact(n, q, x.neg)


def special_of(values: list) -> float | None:
    """DESIGN §6 special values of a sum: NaN if any NaN or Inf - Inf, else the Inf, else None."""
    specials = [v for v in values if isinstance(v, float)]
    if not specials:
        return None
    if any(math.isnan(v) for v in specials) or (math.inf in specials and -math.inf in specials):
        return math.nan
    return specials[0]


def as_term(x: float) -> Exact | float:
    """A float as a term: an Exact when finite, else the special float itself."""
    return exact(x) if math.isfinite(x) else x


def total(values: list) -> Exact | float:
    """The exact sum of terms (Exact or float), or the special value it is."""
    terms = [as_term(v) if isinstance(v, float) else v for v in values]
    special = special_of(terms)
    return special if special is not None else exact_sum(terms)


def exact_product(a: Exact | float, b: Exact | float) -> Exact | float:
    """The exact product (NaN for NaN or 0·Inf, signed Inf for Inf·x)."""
    a = as_term(a) if isinstance(a, float) else a
    b = as_term(b) if isinstance(b, float) else b
    if isinstance(a, float) or isinstance(b, float):
        if any(isinstance(v, float) and math.isnan(v) for v in (a, b)):
            return math.nan
        if any(isinstance(v, Exact) and v.n == 0 for v in (a, b)):
            return math.nan
        neg = (a < 0 if isinstance(a, float) else a.neg) != (b < 0 if isinstance(b, float) else b.neg)
        return -math.inf if neg else math.inf
    return Exact(a.n * b.n, a.e + b.e, a.neg != b.neg)


def _on_grid(value: float, spec: RoundSpec) -> float:
    """Flushing, overflow, special values and sign rules for a value already on the format's grid."""
    fmt = spec.format
    mag = abs(value)
    if (fmt.signed and not spec.flush_inputs and 0 < mag <= fmt.max
            and (mag >= fmt.smallest_normal or spec.keeps_subnormals)):
        return value                                   # the common case: nothing to do
    return float(round_values(np.array([value]), spec, 0)[0])


def round_exact(x: Exact | float, spec: RoundSpec, counter: int = 0) -> float:
    """Round an exact value (or a special float) once to ``spec.format`` (DESIGN §5).

    ``counter`` is the random-bit counter of stochastic modes.  The grid decision is the one of
    :func:`round_magnitudes`, on unbounded integers; everything after it is :func:`round_values`.
    """
    if isinstance(x, float):
        return _on_grid(x, spec) if math.isfinite(x) and x != 0 else float(round_values(np.array([x]), spec, 0)[0])
    if x.n == 0:
        return float(round_values(np.array([-0.0 if x.neg else 0.0]), spec, 0)[0])
    fmt, mode = spec.format, spec.rounding
    M, E, neg = abs(x.n), x.e, x.n < 0
    q = max(floor_log2(x), fmt.emin) - fmt.mantissa_bits      # quantum exponent of the target grid
    shift = q - E
    if shift <= 0:
        N, up = M << -shift, False                               # already on the grid
    else:
        N = M >> shift
        rem = M - (N << shift)
        half = 1 << (shift - 1)
        if rem == 0:
            up = False
        elif mode is Rounding.RNE:
            up = rem > half or (rem == half and N & 1 == 1)
        elif mode is Rounding.RNA:
            up = rem >= half
        elif mode is Rounding.RTZ:
            up = False
        elif mode is Rounding.RUP:
            up = not neg
        elif mode is Rounding.RDN:
            up = neg
        elif mode is Rounding.RTO:
            N, up = N | 1, False
        elif mode is Rounding.SR:
            nb = spec.sr_bits
            R = splitmix64(spec.seed, counter) >> (64 - nb)
            up = ((rem << nb) >> shift) + R >= (1 << nb)          # floor(delta·2^nb) + R >= 2^nb
        elif mode is Rounding.SR_EQUAL:
            up = splitmix64(spec.seed, counter) >> 63 == 1
        else:
            raise AssertionError(mode)
        N += int(up)
    if N.bit_length() - 1 + q > fmt.emax or math.ldexp(float(N), q) > fmt.max:
        # finite overflow: hand round_values the value that the policy makes of it
        to_inf = bool(_overflow_to_inf(spec, np.array([neg]))[0])
        value = math.inf if to_inf else fmt.max
    else:
        value = math.ldexp(float(N), q)
    return _on_grid(-value if neg else value, spec)


def canonical(x: float) -> float:
    """A NaN result is the one canonical (positive, quiet) NaN, whatever path made it."""
    return math.nan if math.isnan(x) else x


class Term(NamedTuple):
    """A product (or C) in a step: its value and its alignment exponent (None for zero / special)."""

    value: Exact | float
    exp: int | None


class ReferenceMatmul:
    """The accumulation model of one MatmulSpec (DESIGN §6), applied one output element at a time."""

    def __init__(self, spec, seed: int | None):
        from ..matmul import FP32, chunks, rounding_events

        self.spec = spec
        self.acc = spec.accumulator_spec(seed)
        self.acc_rne = spec.accumulator_rne_spec()
        self.product = spec.product_spec()
        self.fp32 = RoundSpec(FP32)                        # scaled operands and promotion: fp32 RNE
        self.via = spec.via_spec(seed)
        self.out = spec.output_spec(seed)
        self.chunks, self.rounding_events = chunks, rounding_events
        self.counter = 0

    # ---- roundings ------------------------------------------------------------------------
    def event(self) -> int:
        """The counter of the next rounding that uses step_rounding / output_rounding."""
        self.counter += 1
        return self.counter - 1

    def add(self, x, y) -> float:
        """One IEEE addition in the accumulator with step_rounding."""
        counter = self.event()
        return round_exact(total([x, y]), self.acc, counter)

    def tree(self, values: list):
        """A balanced tree of IEEE additions: adjacent pairs, level by level (an odd last one moves up)."""
        while len(values) > 1:
            values = [self.add(values[i], values[i + 1]) if i + 1 < len(values) else values[i]
                      for i in range(0, len(values), 2)]
        return values[0]

    # ---- products ---------------------------------------------------------------------------
    def products(self, a: list, b: list, sa: list | None, sb: list | None) -> list[Term]:
        spec = self.spec
        a_emin, b_emin = spec.a_format.emin, spec.effective_b_format.emin
        if spec.scale_at == "operands" and sa is not None:
            a = [round_exact(exact_product(x, s), self.fp32) for x, s in zip(a, sa, strict=True)]
            a_emin = self.fp32.format.emin
        if spec.scale_at == "operands" and sb is not None:
            b = [round_exact(exact_product(x, s), self.fp32) for x, s in zip(b, sb, strict=True)]
            b_emin = self.fp32.format.emin
        terms = []
        for x, y in zip(a, b, strict=True):
            p = exact_product(x, y)
            if isinstance(p, float) or p.n == 0:
                exp = None
            elif self.product is not None:
                p = as_term(round_exact(p, self.product))
                exp = exponent(p, self.product.format.emin) if isinstance(p, Exact) and p.n else None
            else:
                exp = exponent(exact(x), a_emin) + exponent(exact(y), b_emin)   # not renormalised
            if spec.scale_at == "products" and (sa is not None or sb is not None):
                p, exp = scaled_product(self, p, sa[len(terms)] if sa is not None else None,
                                        sb[len(terms)] if sb is not None else None)
            terms.append(Term(p, exp))
        return terms

    # ---- one step ---------------------------------------------------------------------------
    def step(self, acc: float, terms: list[Term]) -> float:
        kind = self.spec.step
        if kind == "ieee":
            return self.add(acc, terms[0].value)
        if kind == "pairwise":
            return self.add(acc, self.tree([t.value for t in terms]))
        return self.fused(acc, terms)

    def aligned_sum(self, terms: list[Term]) -> tuple[Exact, int | None]:
        """Cut every term to a multiple of 2^(e_ref - n_frac) and add exactly; returns (sum, e_ref)."""
        spec = self.spec
        exps = [t.exp for t in terms if t.exp is not None]
        if spec.ref_exp_floor is not None:
            exps.append(spec.ref_exp_floor)
        e_ref = max(exps) if exps else None
        values = [t.value for t in terms]
        if e_ref is None or spec.n_frac is None:
            return exact_sum(values), e_ref
        s = exact_sum([cut(v, e_ref - spec.n_frac, spec.align_rounding) for v in values])
        if s.n == 0:
            s = Exact(0, 0, all_negative_zero(values))
        return s, e_ref

    def fused(self, acc: float, terms: list[Term]) -> float:
        """The tensor-core block FMA (DESIGN §6 'fused'), with C early, late_rn or late_rd."""
        spec = self.spec
        counter = self.event()
        special = special_of([t.value for t in terms] + [as_term(acc)])
        if special is not None:
            return round_exact(special, self.acc, counter)
        c = exact(acc)
        acc_emin = self.acc.format.emin
        if spec.c_mode == "early":
            s, _ = self.aligned_sum(terms + [Term(c, exponent(c, acc_emin) if c.n else None)])
            return round_exact(s, self.acc, counter)
        if spec.c_mode == "late_rn":
            s, _ = self.aligned_sum(terms)
            dot = round_exact(s, self.acc, counter)
            return round_exact(total([dot, acc]), self.acc_rne)
        # late_rd, AMD CDNA3: floor-aligned second stage with C, floor to late_n_frac bits, then round
        d, e_dot = self.aligned_sum(terms)
        e_c = exponent(c, acc_emin) if c.n else acc_emin
        e_max = e_c if e_dot is None else max(e_dot, e_c)
        s = exact_sum([cut(d, e_max - spec.late_n_frac - 1, "floor"), cut(c, e_max - spec.n_frac, "floor")])
        if s.n:
            s = cut(s, exponent(s, acc_emin) - spec.late_n_frac, "floor")
        else:
            s = Exact(0, 0, all_negative_zero([t.value for t in terms] + [c]))
        return round_exact(s, self.acc, counter)

    # ---- the order of the steps over one chunk ----------------------------------------------
    def chunk_sum(self, terms: list[Term], c0: float, order=None) -> float:
        """The chunk's sum from ``c0`` in ``order`` (default: the spec's); partial sums start at -0,
        the additive identity (no term yet)."""
        spec = self.spec
        if spec.step == "exact":
            counter = self.event()
            return round_exact(total([c0] + [t.value for t in terms]), self.acc, counter)
        order = spec.order if order is None else order
        if order.composite:
            return composite_sum(self, order, terms, c0)
        k = spec.k_fused
        steps = [terms[j:j + k] for j in range(0, len(terms), k)]
        kind, w = order.kind, order.width
        if kind == "sequential":
            acc = c0
            for st in steps:
                acc = self.step(acc, st)
            return acc
        if kind == "blocked":
            per_block = w // k
            acc = c0
            for i in range(0, len(steps), per_block):
                block_sum = -0.0
                for st in steps[i:i + per_block]:
                    block_sum = self.step(block_sum, st)
                acc = self.add(acc, block_sum)
            return acc
        if kind == "pairwise":
            r = self.tree([self.step(-0.0, st) for st in steps]) if steps else -0.0
            return self.add(c0, r)
        full = len(steps) - len(steps) % w
        s = [-0.0] * w
        for j in range(full):
            s[j % w] = self.step(s[j % w], steps[j])
        if kind == "interleaved":
            for j in range(full, len(steps)):
                s[0] = self.step(s[0], steps[j])
            r = s[0]
            for i in range(1, w):
                r = self.add(r, s[i])
        else:                                                # lanes: halving tree, then the tail
            h = w // 2
            while h >= 1:
                for i in range(h):
                    s[i] = self.add(s[i], s[i + h])
                h //= 2
            for j in range(full, len(steps)):
                s[0] = self.step(s[0], steps[j])
            r = s[0]
        return self.add(c0, r)

    # ---- one output element -------------------------------------------------------------------
    def element(self, a: list, b: list, c: float, sa: list | None, sb: list | None, counter: int) -> float:
        spec = self.spec
        self.counter = counter
        terms = self.products(a, b, sa, sb)
        if not spec.promotes:
            result = self.chunk_sum(terms, c)
        else:
            outer = round_exact(as_term(c), self.fp32)
            for start, stop in self.chunks(spec, len(terms)):
                partial = self.chunk_sum(terms[start:stop], -0.0)
                scale = 1.0
                if spec.scale_at == "promotion" and start < len(terms):
                    scale = round_exact(exact_product(sa[start] if sa is not None else 1.0,
                                                      sb[start] if sb is not None else 1.0), self.fp32)
                outer = round_exact(total([outer, exact_product(partial, scale)]), self.fp32)
            result = outer
        if spec.scale_at == "output" and (sa is not None or sb is not None):
            result = output_scaled(self, result, sa, sb)
        if self.via is not None:
            result = round_exact(as_term(canonical(result)), self.via, self.event())
        return canonical(round_exact(as_term(canonical(result)), self.out, self.event()))


def matmul_values(a: np.ndarray, b: np.ndarray, c: np.ndarray, a_scale: np.ndarray | None,
                  b_scale: np.ndarray | None, spec, seed: int | None) -> np.ndarray:
    """The reference kernel: ``a`` (B, M, K), ``b`` (B, K, N), ``c`` (B, M, N) float32 or float64 values
    of the input formats, scales expanded to the operands' shapes (or None); returns (B, M, N) float64."""
    B, M, K = a.shape
    N = b.shape[2]
    model = ReferenceMatmul(spec, seed)
    events = model.rounding_events(spec, K)
    out = np.empty((B, M, N))
    for bi in range(B):
        rows, cols = a[bi].tolist(), b[bi].T.tolist()
        srows = a_scale[bi].tolist() if a_scale is not None else None
        scols = b_scale[bi].T.tolist() if b_scale is not None else None
        for m in range(M):
            for n in range(N):
                i = (bi * M + m) * N + n
                out[bi, m, n] = model.element(rows[m], cols[n], float(c[bi, m, n]),
                                              srows[m] if srows else None, scols[n] if scols else None,
                                              i * events)
                assert model.counter == (i + 1) * events, "rounding_events disagrees with the schedule"
    return out


# =====================================================================================================
# Matmul: composite orders and per-product scales (measured on CPU frameworks, precisionlab/presets.py)
#
# ``composite_sum`` follows the composite-order paragraph of precisionlab/matmul.py's docstring: it
# calls ``chunk_sum`` on the parts, so a nested plain order runs the code above.
# =====================================================================================================

def composite_sum(model: ReferenceMatmul, order, terms: list[Term], c0: float) -> float:
    """``blocked(kc, inner)``, ``split(g, head, tail)``, ``group(inner)`` and ``strided(w)`` from ``c0``."""
    kind, w = order.kind, order.width
    if kind == "group":
        return model.add(c0, model.chunk_sum(terms, -0.0, order.parts[0])) if terms else c0
    if kind == "split":
        head = len(terms) // w * w
        acc = c0
        for part_terms, part in ((terms[:head], order.parts[0]), (terms[head:], order.parts[1])):
            if part_terms:
                acc = model.chunk_sum(part_terms, acc, part)
        return acc
    if kind == "blocked":
        acc = c0
        for b in range(0, len(terms), w):
            acc = model.add(acc, model.chunk_sum(terms[b:b + w], -0.0, order.parts[0]))
        return acc
    k = model.spec.k_fused                                       # strided(w)
    steps = [terms[j:j + k] for j in range(0, len(terms), k)]
    if not steps:
        return c0
    lanes = [-0.0] * min(w, len(steps))
    for j, st in enumerate(steps):
        lanes[j % w] = model.step(lanes[j % w], st)
    return model.add(c0, model.tree(lanes))


def scaled_product(model: ReferenceMatmul, p, sa: float | None, sb: float | None):
    """``scale_at="products"``: the product times its A scale, then its B scale, each rounded to fp32."""
    for s in (sa, sb):
        if s is not None:
            p = as_term(round_exact(exact_product(p, s), model.fp32))
    exp = exponent(p, model.fp32.format.emin) if isinstance(p, Exact) and p.n else None
    return p, exp


def output_scaled(model: ReferenceMatmul, result: float, sa: list | None, sb: list | None) -> float:
    """``scale_at="output"``: the sum times fp32(a_scale·b_scale), rounded to fp32 (one scale along K)."""
    first_a = sa[0] if sa else 1.0
    first_b = sb[0] if sb else 1.0
    scale = round_exact(exact_product(first_a, first_b), model.fp32)
    return round_exact(exact_product(as_term(result), scale), model.fp32)
