"""An independent oracle for ``pl.matmul``, written from DESIGN §6 and the model in the
docstring of precisionlab/matmul.py -- never from the backends.

Values are Python floats (every format value is one) and exact sums are
``fractions.Fraction``; rounding uses the extended grid of tests/oracle.py
(``neighbours``).  It is slow and meant to be obviously right.  Operands, C and the
scales are taken as given: the caller rounds them to the input formats with
``tests.oracle.oracle_round``.
"""

from __future__ import annotations

import math
from fractions import Fraction

from oracle import neighbours, of, oracle_round

import precisionlab as pl
from precisionlab.formats import get_format
from precisionlab.matmul import rounding_events
from precisionlab.random import splitmix64

NAN, INF = math.nan, math.inf


def same(x: float, y: float) -> bool:
    """Bit-level equality of two values: NaN == NaN, and the sign of zero counts."""
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return x == y and math.copysign(1.0, x) == math.copysign(1.0, y)


def floor_log2(x: Fraction) -> int:
    x = abs(x)
    e = x.numerator.bit_length() - x.denominator.bit_length()
    while Fraction(2) ** e > x:
        e -= 1
    while Fraction(2) ** (e + 1) <= x:
        e += 1
    return e


def is_neg_zero(v: float) -> bool:
    return v == 0 and math.copysign(1.0, v) < 0


def round_fraction(x: Fraction, fmt, mode: str = "rne", *, R: int | None = None, sr_bits: int = 64,
                   subnormals: bool = True, overflow: str = "default", negative_zero: bool = False) -> float:
    """``x`` rounded once to ``fmt`` (DESIGN §5): a float (-0.0, ±inf, nan where they apply).

    ``negative_zero`` is the sign of an exactly zero ``x``.  ``R`` is the random integer of
    stochastic modes (``sr_bits`` bits for ``sr``, one bit for ``sr_equal``).
    """
    f = of(fmt)

    def zero(neg: bool) -> float:
        return -0.0 if (neg and f.has_negzero) else 0.0

    if x == 0:
        return zero(negative_zero)
    neg = x < 0
    a = abs(x)
    lower, upper, n, u = neighbours(a, f)
    if lower == a:
        r = a
    else:
        if mode == "rne":
            away = (upper - a) < (a - lower) or ((upper - a) == (a - lower) and n % 2 == 1)
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
            away = math.floor((a - lower) / u * (1 << sr_bits)) + R >= (1 << sr_bits)
        elif mode == "sr_equal":
            away = R == 1
        else:
            raise ValueError(mode)
        r = upper if away else lower
    sign = -1.0 if neg else 1.0
    if r > f.max:
        toward_zero = mode in ("rtz", "rto") or (mode == "rdn" and not neg) or (mode == "rup" and neg)
        if overflow != "default" or toward_zero:
            return sign * float(f.max)
        return sign * INF if f.has_inf else NAN
    if 0 < r < f.min_normal and not (subnormals and f.sub):
        return zero(neg)
    return sign * float(r)


def round_special(v: float, fmt, overflow: str = "default") -> float:
    """A NaN or an Inf in ``fmt``."""
    f = of(fmt)
    if math.isnan(v):
        return NAN
    if overflow == "saturate":
        return math.copysign(float(f.max), v)
    return v if f.has_inf else NAN


def special_sum(values: list[float]) -> float | None:
    """NaN if any NaN or +Inf and -Inf, else the Inf, else None (all finite)."""
    if any(math.isnan(v) for v in values):
        return NAN
    infs = {v for v in values if math.isinf(v)}
    if len(infs) == 2:
        return NAN
    return infs.pop() if infs else None


def product(x: float, y: float) -> float:
    """The exact product as a float (exact for every format pair used here; checked)."""
    if math.isnan(x) or math.isnan(y) or (math.isinf(x) and y == 0) or (math.isinf(y) and x == 0):
        return NAN
    p = x * y
    if math.isfinite(p):
        assert Fraction(p) == Fraction(x) * Fraction(y), "product not exact in float64"
    return p


class Oracle:
    """DESIGN §6 for one spec; ``dot`` computes one output element."""

    def __init__(self, spec, seed: int | None = None):
        self.s = spec
        self.seed = seed
        self.counter = 0

    # -- rounding events ----------------------------------------------------------------
    def _R(self, mode: str, counter: int) -> int | None:
        if mode == "sr":
            return splitmix64(self.seed, counter)          # sr_bits = 64 inside matmul
        if mode == "sr_equal":
            return splitmix64(self.seed, counter) >> 63
        return None

    def round_to(self, values: list[float], fmt, mode: str, subnormals: bool = True, overflow: str = "default",
                 event: bool = False) -> float:
        """Round the exact sum of ``values`` to ``fmt``; an event uses the next random counter."""
        R = None
        if event:
            R = self._R(mode, self.counter)
            self.counter += 1
        special = special_sum(values)
        if special is not None:
            return round_special(special, fmt, overflow)
        x = sum((Fraction(v) for v in values), Fraction(0))
        return round_fraction(x, fmt, mode, R=R, subnormals=subnormals, overflow=overflow,
                              negative_zero=all(is_neg_zero(v) for v in values))

    def round_exact(self, x: Fraction, neg_zero: bool) -> float:
        """One step rounding of an exact (finite) value to the accumulator: an event."""
        s = self.s
        R = self._R(s.step_rounding.value, self.counter)
        self.counter += 1
        return round_fraction(x, s.accumulator, s.step_rounding.value, R=R, subnormals=s.accumulator_subnormals,
                              negative_zero=neg_zero)

    def add(self, x: float, y: float) -> float:
        s = self.s
        return self.round_to([x, y], s.accumulator, s.step_rounding.value, s.accumulator_subnormals, event=True)

    def fp32(self, values: list[float]) -> float:
        return self.round_to(values, get_format("fp32"), "rne")

    # -- the model ------------------------------------------------------------------------
    def E(self, v: float, emin: int) -> int:
        return max(floor_log2(Fraction(v)), emin)

    def cut(self, x: Fraction, q: int, how: str) -> Fraction:
        unit = Fraction(2) ** q
        if how == "rtz":
            return (1 if x >= 0 else -1) * math.floor(abs(x) / unit) * unit
        return math.floor(x / unit) * unit

    def tree(self, values: list[float]) -> float:
        if len(values) == 1:
            return values[0]
        level = []
        for i in range(0, len(values), 2):
            level.append(self.add(values[i], values[i + 1]) if i + 1 < len(values) else values[i])
        return self.tree(level)

    def fused(self, acc: float, prods: list[tuple[float, int | None]]) -> float:
        s = self.s
        acc_emin = of(s.accumulator).e0
        values = [p for p, _ in prods]
        special = special_sum(values + [acc])
        if special is not None:
            self.counter += 1
            return round_special(special, s.accumulator)
        terms = list(prods)
        if s.c_mode == "early":
            terms.append((acc, None if acc == 0 else self.E(acc, acc_emin)))
        exps = [e for _, e in terms if e is not None] + ([s.ref_exp_floor] if s.ref_exp_floor is not None else [])
        e_ref = max(exps) if exps else None
        if e_ref is None or s.n_frac is None:
            cut_sum = sum((Fraction(v) for v, _ in terms), Fraction(0))
        else:
            cut_sum = sum((self.cut(Fraction(v), e_ref - s.n_frac, s.align_rounding) for v, _ in terms), Fraction(0))
        all_neg_zero = all(is_neg_zero(v) for v, _ in terms)
        if s.c_mode == "early":
            return self.round_exact(cut_sum, all_neg_zero)
        if s.c_mode == "late_rn":
            dot = self.round_exact(cut_sum, all_neg_zero)
            return self.round_to([dot, acc], s.accumulator, "rne", s.accumulator_subnormals)
        # late_rd
        e_c = self.E(acc, acc_emin) if acc != 0 else acc_emin
        e_max = e_c if e_ref is None else max(e_ref, e_c)
        total = self.cut(cut_sum, e_max - s.late_n_frac - 1, "floor") + self.cut(Fraction(acc), e_max - s.n_frac,
                                                                                  "floor")
        if total != 0:
            e_s = max(floor_log2(total), acc_emin)
            total = self.cut(total, e_s - s.late_n_frac, "floor")
        return self.round_exact(total, all(is_neg_zero(v) for v in values + [acc]))

    def step(self, acc: float, prods: list[tuple[float, int | None]]) -> float:
        kind = self.s.step
        if kind == "ieee":
            return self.add(acc, prods[0][0])
        if kind == "pairwise":
            return self.add(acc, self.tree([p for p, _ in prods]))
        return self.fused(acc, prods)

    def composite(self, order, prods: list[tuple[float, int | None]], c0: float) -> float:
        """The composite orders, from the definitions in precisionlab/matmul.py's docstring."""
        kind, w, parts = order.kind, order.width, order.parts
        if kind == "group":                      # inner from -0, then one addition to the running sum
            return self.add(c0, self.chunk(prods, -0.0, parts[0])) if prods else c0
        if kind == "split":                      # head over g*floor(K/g) elements, the tail continues
            n = len(prods) - len(prods) % w
            acc = c0
            if n:
                acc = self.chunk(prods[:n], acc, parts[0])
            if len(prods) > n:
                acc = self.chunk(prods[n:], acc, parts[1])
            return acc
        if kind == "blocked":                    # each block with the inner order from -0, added in order
            acc = c0
            for b0 in range(0, len(prods), w):
                acc = self.add(acc, self.chunk(prods[b0:b0 + w], -0.0, parts[0]))
            return acc
        k = self.s.k_fused                       # strided(w): s[j mod w] over all steps, a pairwise tree
        steps = [prods[i:i + k] for i in range(0, len(prods), k)]
        if not steps:
            return c0
        lanes = [-0.0] * min(w, len(steps))
        for j, st in enumerate(steps):
            lanes[j % w] = self.step(lanes[j % w], st)
        return self.add(c0, self.tree(lanes))

    def chunk(self, prods: list[tuple[float, int | None]], c0: float, order=None) -> float:
        s = self.s
        if s.step == "exact":
            return self.round_to([c0] + [p for p, _ in prods], s.accumulator, s.step_rounding.value,
                                 s.accumulator_subnormals, event=True)
        order = s.order if order is None else order
        if order.kind in ("split", "group", "strided") or order.parts:
            return self.composite(order, prods, c0)
        k = s.k_fused
        steps = [prods[i:i + k] for i in range(0, len(prods), k)]
        kind, w = order.kind, order.width
        if kind == "sequential":
            acc = c0
            for st in steps:
                acc = self.step(acc, st)
            return acc
        if kind == "blocked":
            acc = c0
            for b0 in range(0, len(prods), w):
                bsum = -0.0
                for st in [prods[i:i + k] for i in range(b0, min(b0 + w, len(prods)), k)]:
                    bsum = self.step(bsum, st)
                acc = self.add(acc, bsum)
            return acc
        if kind == "pairwise":
            results = [self.step(-0.0, st) for st in steps]
            return self.add(c0, self.tree(results) if results else -0.0)
        lanes = [-0.0] * w
        main = len(steps) // w * w
        for j in range(main):
            lanes[j % w] = self.step(lanes[j % w], steps[j])
        if kind == "interleaved":
            for j in range(main, len(steps)):
                lanes[0] = self.step(lanes[0], steps[j])
            r = lanes[0]
            for i in range(1, w):
                r = self.add(r, lanes[i])
            return self.add(c0, r)
        half = w // 2
        while half:
            for i in range(half):
                lanes[i] = self.add(lanes[i], lanes[i + half])
            half //= 2
        for j in range(main, len(steps)):
            lanes[0] = self.step(lanes[0], steps[j])
        return self.add(c0, lanes[0])

    def dot(self, a: list[float], b: list[float], c: float, sa: list[float] | None = None,
            sb: list[float] | None = None, counter: int = 0) -> float:
        """One output element; ``a``, ``b``, ``c`` already in the input formats, ``sa``/``sb`` the
        per-element scales (or None)."""
        s = self.s
        self.counter = counter
        a_emin, b_emin = of(s.a_format).e0, of(s.effective_b_format).e0
        if s.scale_at == "operands" and sa is not None:
            a = [self.fp32([product(x, y)]) for x, y in zip(a, sa, strict=True)]
            a_emin = -126
        if s.scale_at == "operands" and sb is not None:
            b = [self.fp32([product(x, y)]) for x, y in zip(b, sb, strict=True)]
            b_emin = -126
        prods = []
        for x, y in zip(a, b, strict=True):
            p = product(x, y)
            if not math.isfinite(p) or p == 0:
                prods.append((p, None))
            elif s.product_format is not None:
                p = self.round_to([p], s.product_format, "rne", s.accumulator_subnormals)
                e = None if (p == 0 or not math.isfinite(p)) else self.E(p, of(s.product_format).e0)
                prods.append((p, e))
            else:
                prods.append((p, self.E(x, a_emin) + self.E(y, b_emin)))
            if s.scale_at == "products" and (sa is not None or sb is not None):
                p = prods[-1][0]                 # times the A scale, then the B scale, each rounded to fp32
                for scale in (sa[len(prods) - 1] if sa else None, sb[len(prods) - 1] if sb else None):
                    if scale is not None:
                        p = self.fp32([product(p, scale)])
                prods[-1] = (p, None if (p == 0 or not math.isfinite(p)) else self.E(p, -126))
        promotes = s.promote_every is not None or (s.scale_at == "promotion" and (sa is not None or sb is not None))
        if not promotes:
            result = self.chunk(prods, c)
        else:
            size = s.promote_every or max(len(prods), 1)
            outer = self.fp32([c])
            for start in range(0, max(len(prods), 1), size):
                partial = self.chunk(prods[start:start + size], -0.0)
                scale = 1.0
                if s.scale_at == "promotion" and start < len(prods):
                    scale = self.fp32([product(sa[start] if sa else 1.0, sb[start] if sb else 1.0)])
                outer = self.fp32([outer, product(partial, scale)])
            result = outer
        if s.scale_at == "output" and (sa is not None or sb is not None):   # once, by fp32(sa·sb), in fp32
            scale = self.fp32([product(sa[0] if sa else 1.0, sb[0] if sb else 1.0)])
            result = self.fp32([product(result, scale)])
        if s.output_via is not None:
            result = self.round_to([result], s.output_via, s.output_rounding.value, event=True)
        return self.round_to([result], s.output_format, s.output_rounding.value,
                             overflow=s.output_overflow.value, event=True)


def expand_block_scale(s, block, rows, cols):
    br = rows if block[0] is None else block[0]
    bc = cols if block[1] is None else block[1]
    return [[float(s[i // max(br, 1), j // max(bc, 1)]) for j in range(cols)] for i in range(rows)]


def check_against_oracle(spec, a, b, c, sa, sb, seed, backend: str = "numpy"):
    """``pl.matmul(..., backend)`` equals the oracle on every element, bit for bit (the caller's
    float32 operands are rounded to the input formats here with tests/oracle.py)."""
    M, K = a.shape
    N = b.shape[1]
    kw = {} if c is None else {"c": c}
    if sa is not None:
        kw.update(a_scale=sa, b_scale=sb)
    got = pl.matmul(a, b, spec, seed=seed, backend=backend, **kw)
    flush = not spec.input_subnormals

    def rnd(x, fmt, mode="rne", overflow="default"):
        return oracle_round(float(x), fmt, mode, overflow, subnormals=not flush, flush_inputs=flush)

    ar = [[rnd(x, spec.a_format, spec.input_rounding.value, spec.input_overflow.value) for x in row] for row in a]
    br = [[rnd(x, spec.effective_b_format, spec.input_rounding.value, spec.input_overflow.value) for x in row]
          for row in b]
    cr = [[rnd(x, spec.effective_c_format) for x in row] for row in c] if c is not None else [[0.0] * N] * M
    sae = expand_block_scale(sa, spec.a_scale_block, M, K) if sa is not None else None
    sbe = expand_block_scale(sb, spec.b_scale_block, K, N) if sb is not None else None
    oracle = Oracle(spec, seed)
    oracle.dot([0.0] * K, [0.0] * K, 0.0, [1.0] * K if sae else None, [1.0] * K if sbe else None)
    events = oracle.counter                        # the oracle counts its own rounding events
    assert events == rounding_events(spec, K)
    for m in range(M):
        for n in range(N):
            want = oracle.dot(ar[m], [br[k][n] for k in range(K)], cr[m][n], sae[m] if sae else None,
                              [sbe[k][n] for k in range(K)] if sbe else None, counter=(m * N + n) * events)
            assert same(float(got[m, n]), want), (m, n, float(got[m, n]), want)
