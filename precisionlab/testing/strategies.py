"""Hypothesis strategies for property tests of low-precision kernels.

* :func:`values` -- values of a format (every representable value is reachable: a code
  is drawn and decoded), with the edge values drawn often: ±0, the smallest and largest
  subnormals, the smallest normal, ±max, ±Inf, NaN (each can be switched off).
* :func:`cast_inputs` -- inputs for a cast *to* a format, in a float dtype: values of
  the format, ties (midpoints of adjacent values, at every binade and in the subnormal
  range), values one or two float steps beside them, the overflow band (including the
  tie between ``max`` and the first value past it, where saturating and IEEE rounding
  part), values below the smallest subnormal, ±0, ±Inf, NaN, and arbitrary floats.
* :func:`arrays` -- NumPy arrays of such elements.
* :func:`formats` -- catalogue formats and valid random custom formats.
* :func:`specs` -- matmul presets and valid random :class:`~precisionlab.matmul.MatmulSpec` instances.

Requires ``hypothesis`` (a test dependency, not a runtime one).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

try:
    from hypothesis import reject
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError as exc:  # pragma: no cover - exercised only without hypothesis
    raise ImportError("precisionlab.testing.strategies needs hypothesis: pip install hypothesis") from exc

from ..formats import NAN_ENCODINGS, Format, get_format, p3109
from ..formats import formats as catalogue
from ..matmul import ALIGN_ROUNDINGS, C_MODES, STEPS, MatmulSpec, Order
from ..rounding import Overflow, Rounding, decode_dtype

__all__ = ["values", "cast_inputs", "arrays", "formats", "specs", "edge_values"]


def _float(v: Fraction | float) -> float:
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def _keep(v: float, fmt: Format, allow_nan: bool, allow_infinity: bool, allow_subnormal: bool,
          allow_negative_zero: bool) -> bool:
    if math.isnan(v):
        return allow_nan
    if math.isinf(v):
        return allow_infinity
    if v == 0 and math.copysign(1.0, v) < 0:           # fnuz: a zero-exponent code without subnormals
        return allow_negative_zero and fmt.signed and fmt.nan != "fnuz"
    if 0 < abs(v) < fmt.smallest_normal:
        return allow_subnormal
    return True


def edge_values(fmt: str | Format) -> list[float]:
    """The values of ``fmt`` where kernels most often go wrong, as floats (both signs where
    the format is signed): ±0, smallest and largest subnormal, smallest normal, 1, the
    largest values below and at ``max``, ±Inf, NaN (those the format has)."""
    fmt = get_format(fmt)
    codes = {0, 1, (1 << fmt.mantissa_bits) - 1, 1 << fmt.mantissa_bits, (1 << fmt.mantissa_bits) + 1}
    top = int(fmt._max_magnitude_code)
    codes |= {top, top - 1}
    if fmt.inf_code is not None:
        codes.add(fmt.inf_code)
    if fmt.nan_code is not None:
        codes.add(fmt.nan_code)
    out: list[float] = []
    for c in sorted(codes):
        if not 0 <= c < 1 << fmt.bits:
            continue
        for code in (c, c | fmt.sign_mask) if fmt.signed else (c,):
            v = _float(fmt.decode_exact(code))
            if _keep(v, fmt, True, True, True, True) and not any(_same(v, w) for w in out):
                out.append(v)
    if fmt.smallest_normal <= 1 <= fmt.max:                 # 1 is then a normal value
        out += [v for v in ([1.0, -1.0] if fmt.signed else [1.0]) if not any(_same(v, w) for w in out)]
    return out


def _same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def values(fmt: str | Format, *, allow_nan: bool = True, allow_infinity: bool = True, allow_subnormal: bool = True,
           allow_negative_zero: bool = True) -> st.SearchStrategy[float]:
    """Python floats holding values of ``fmt``: every code's value is reachable, and the
    :func:`edge_values` are drawn often.  The flags leave out NaN, ±Inf, subnormals, -0."""
    fmt = get_format(fmt)
    flags = (allow_nan, allow_infinity, allow_subnormal, allow_negative_zero)
    edges = [v for v in edge_values(fmt) if _keep(v, fmt, *flags)]
    codes = st.integers(0, (1 << fmt.bits) - 1).map(lambda c: _float(fmt.decode_exact(c)))
    codes = codes.filter(lambda v: _keep(v, fmt, *flags))
    return st.one_of(st.sampled_from(edges), codes) if edges else codes


@st.composite
def _grid_point(draw: Any, fmt: Format) -> tuple[Fraction, Fraction]:
    """A point ``n * u`` of the format's grid continued two binades past ``max`` and with the
    subnormal spacing below the smallest normal, and its spacing ``u``."""
    m = fmt.mantissa_bits
    k = draw(st.integers(fmt.emin - 1, fmt.emax + 2))
    if k < fmt.emin:
        u = Fraction(2) ** (fmt.emin - m)
        n = draw(st.integers(0, max((1 << m) - 1, 0)))
    else:
        u = Fraction(2) ** (k - m)
        n = draw(st.integers(1 << m, (1 << (m + 1)) - 1))
    return n * u, u


def cast_inputs(fmt: str | Format, dtype: Any = np.float32, *, allow_nan: bool = True,
                allow_infinity: bool = True) -> st.SearchStrategy[float]:
    """Python floats of ``dtype`` (float32 or float64) built to separate the behaviours of a
    cast to ``fmt``: grid points, ties, dyadic fractions of an ulp, one or two float steps
    beside those, the overflow band, values below the smallest subnormal, specials, and any
    float.  Negative values only for signed formats; NaN only where ``fmt`` has one."""
    fmt = get_format(fmt)
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype={dtype} not allowed; choose float32 or float64")
    allow_nan = allow_nan and fmt.nan != "none"
    width = 32 if dtype == np.float32 else 64

    @st.composite
    def near_grid(draw: Any) -> float:
        point, u = draw(_grid_point(fmt))
        kind = draw(st.sampled_from(["point", "tie", "tie", "fraction", "below_smallest"]))
        if kind == "tie":
            point += u / 2
        elif kind == "fraction":
            point += u * Fraction(draw(st.integers(1, 255)), 256)
        elif kind == "below_smallest":
            point = Fraction(fmt.smallest_subnormal) * Fraction(draw(st.integers(1, 255)), 256)
        with np.errstate(over="ignore"):
            v = float(dtype.type(_float(point)))
        steps = draw(st.sampled_from([0, 0, -1, 1, -2, 2]))
        t = np.array([v], dtype)
        for _ in range(abs(steps)):
            t = np.nextafter(t, np.array([np.inf if steps > 0 else -np.inf], dtype))
        return float(t[0])

    specials = [0.0, -0.0] + ([math.inf, -math.inf] if allow_infinity else []) + ([math.nan] if allow_nan else [])
    anything = st.floats(width=width, allow_nan=allow_nan, allow_infinity=allow_infinity)
    base = st.one_of(near_grid(), st.sampled_from(specials), anything)
    if fmt.signed:
        return st.tuples(base, st.booleans()).map(lambda t: -t[0] if t[1] else t[0])
    return base.filter(lambda v: math.isnan(v) or math.copysign(1.0, v) > 0)


def arrays(fmt: str | Format, shape: Any, *, dtype: Any = None, elements: st.SearchStrategy | None = None,
           **value_flags: bool) -> st.SearchStrategy[np.ndarray]:
    """NumPy arrays of ``shape`` (an int, a tuple or a strategy) holding values of ``fmt``
    (:func:`values`, with its flags), in float32 where the format fits it, else float64.
    ``elements=cast_inputs(fmt)`` gives arrays of cast inputs instead."""
    fmt = get_format(fmt)
    dtype = decode_dtype(fmt) if dtype is None else np.dtype(dtype)
    return hnp.arrays(dtype, shape, elements=values(fmt, **value_flags) if elements is None else elements)


@st.composite
def _custom_format(draw: Any, max_bits: int | None) -> Format:
    budget = 16 if max_bits is None else max_bits
    e = draw(st.integers(1, min(8, max(budget - 1, 1))))
    m = draw(st.integers(0, max(0, min(10, budget - 1 - e))))
    signed = draw(st.booleans())
    nan = draw(st.sampled_from(NAN_ENCODINGS))
    has_inf = nan == "ieee" or (nan in ("fn", "fnuz") and draw(st.booleans()))
    subnormals = draw(st.booleans())
    has_zero = True if (m or subnormals) else draw(st.booleans())
    default_bias = 2 ** (e - 1) - 1
    bias = draw(st.one_of(st.just(default_bias), st.integers(default_bias - 2, default_bias + 4)))
    try:
        fmt = Format(exponent_bits=e, mantissa_bits=m, bias=bias, signed=signed, has_inf=has_inf, nan=nan,
                     has_subnormals=subnormals, has_zero=has_zero)
    except ValueError:
        reject()
    if max_bits is not None and fmt.bits > max_bits:
        reject()
    return fmt


@st.composite
def _p3109_format(draw: Any, max_bits: int | None) -> Format:
    k = draw(st.integers(3, min(16, 16 if max_bits is None else max_bits)))
    signed = draw(st.booleans())
    p = draw(st.integers(max(1, k - 8), k - 1))              # at most 8 or 9 exponent bits
    try:
        return p3109(k, p, signed=signed, extended=draw(st.booleans()))
    except ValueError:
        reject()


def formats(*, catalogue_formats: bool = True, custom: bool = True, max_bits: int | None = None,
            with_ml_dtype: bool = False) -> st.SearchStrategy[Format]:
    """Formats: from the catalogue (``pl.formats``) and/or valid random custom ones (any
    exponent/mantissa split, bias, signedness, NaN encoding, Inf, subnormals; P3109
    formats).  ``max_bits`` bounds the storage width (e.g. 16 to enumerate every code);
    ``with_ml_dtype`` keeps only catalogue formats that ``ml_dtypes`` also has."""
    options = []
    known = [f for f in catalogue.values() if (max_bits is None or f.bits <= max_bits)
             and (f.ml_dtype is not None or not with_ml_dtype)]
    if catalogue_formats and known:
        options.append(st.sampled_from(known))
    if custom and not with_ml_dtype:
        options += [_custom_format(max_bits), _p3109_format(max_bits)]
    if not options:
        raise ValueError("formats(): nothing to draw from; allow catalogue_formats or custom formats")
    return st.one_of(options)


# ---------------------------------------------------------------------------
# MatmulSpecs
# ---------------------------------------------------------------------------

#: Operand formats of random specs: the signed catalogue formats with a zero that float32 holds.
_INPUT_FORMATS = ("fp32", "tf32", "fp16", "bf16", "e4m3", "e5m2", "e4m3fnuz", "e5m2fnuz", "e3m4", "e4m3_ieee",
                  "fp6_e3m2", "fp6_e2m3", "fp4_e2m1")
#: Formats that can hold a sum (accumulator, output): fp32, fp16, bf16 and custom fp32-range
#: accumulators with fewer fraction bits (the 1-8-13 of Hopper FP8 among them).
_SUM_FORMATS = ("fp32", "fp16", "bf16")


def _orders(k_fused: int) -> st.SearchStrategy[Order]:
    """Orders over K: the plain kinds and, nested up to two levels, the composites
    ``blocked(kc, inner)``, ``split(g, head, tail)``, ``group(inner)``; the widths counted in
    K-elements (blocked, split) are multiples of ``k_fused``, as the validator requires."""
    in_k = st.integers(1, 4).map(lambda n: n * k_fused)
    leaves = st.one_of(st.just(Order("sequential")), st.just(Order("pairwise")),
                       st.integers(1, 8).map(lambda w: Order("interleaved", w)),
                       st.sampled_from([1, 2, 4, 8, 16]).map(lambda w: Order("lanes", w)),
                       st.integers(1, 8).map(lambda w: Order("strided", w)),
                       in_k.map(lambda w: Order("blocked", w)))

    def nest(inner: st.SearchStrategy[Order]) -> st.SearchStrategy[Order]:
        return st.one_of(st.tuples(in_k, inner).map(lambda t: Order("blocked", t[0], (t[1],))),
                         st.tuples(in_k, inner, inner).map(lambda t: Order("split", t[0], t[1:])),
                         inner.map(lambda o: Order("group", None, (o,))))
    return st.one_of(leaves, nest(leaves), nest(nest(leaves)))    # plain orders as often as nested ones


def _deterministic_modes(draw: Any) -> Rounding:
    return draw(st.sampled_from([m for m in Rounding if not m.stochastic]))


@st.composite
def _random_spec(draw: Any, stochastic: bool, input_formats: tuple[str, ...]) -> MatmulSpec:
    step = draw(st.sampled_from(STEPS))
    k_fused = 1 if step == "ieee" else draw(st.sampled_from([1, 2, 4, 8, 16, 32]))
    a = draw(st.sampled_from(input_formats))
    b = draw(st.one_of(st.none(), st.sampled_from(input_formats)))
    accumulator: Format | str = draw(st.one_of(st.sampled_from(_SUM_FORMATS),
                                               st.integers(10, 23).map(lambda m: Format(8, m, name=f"e8m{m}"))))
    order = draw(_orders(k_fused))
    c_mode = draw(st.sampled_from(C_MODES)) if step == "fused" else "early"
    n_frac = draw(st.one_of(st.none(), st.integers(0, 30))) if step == "fused" else None
    if c_mode == "late_rd" and n_frac is None:
        n_frac = draw(st.integers(0, 30))
    step_rounding = draw(st.sampled_from(list(Rounding))) if stochastic else _deterministic_modes(draw)
    output_rounding = draw(st.sampled_from(list(Rounding))) if stochastic else _deterministic_modes(draw)
    try:
        return MatmulSpec(
            a_format=a, b_format=b, input_rounding=_deterministic_modes(draw),
            input_overflow=draw(st.sampled_from(list(Overflow))), input_subnormals=draw(st.booleans()),
            product_format=draw(st.one_of(st.none(), st.sampled_from(_SUM_FORMATS))) if step != "exact" else None,
            step=step, k_fused=k_fused, n_frac=n_frac, align_rounding=draw(st.sampled_from(ALIGN_ROUNDINGS)),
            c_mode=c_mode, ref_exp_floor=draw(st.one_of(st.none(), st.integers(-160, -100))),
            late_n_frac=draw(st.integers(n_frac or 0, 34)) if c_mode == "late_rd" else None,
            accumulator=accumulator, step_rounding=step_rounding, accumulator_subnormals=draw(st.booleans()),
            order=order, promote_every=draw(st.one_of(st.none(), st.integers(1, 8).map(
                lambda n: n * k_fused))),
            output_format=draw(st.sampled_from(_SUM_FORMATS)), output_rounding=output_rounding,
            output_overflow=draw(st.sampled_from(list(Overflow))),
            output_via=draw(st.one_of(st.none(), st.just("fp16"))), name="random")
    except ValueError:
        reject()


def specs(*, presets: bool = True, custom: bool = True, stochastic: bool = False, with_scales: bool = False,
          input_formats: tuple[str, ...] | None = None) -> st.SearchStrategy[MatmulSpec]:
    """Valid :class:`~precisionlab.matmul.MatmulSpec` instances: the presets of ``pl.presets`` and/or
    random specs (any step, k_fused, n_frac, C mode, accumulator -- fp32, fp16, bf16 or an
    fp32-range one with 10 to 23 fraction bits --, rounding, order over K including the nested
    ones, promotion, product, via and output format), each built through MatmulSpec's own
    validator.

    ``stochastic=False`` (the default) leaves out stochastic step and output roundings, which
    need ``seed=`` in ``pl.matmul``; ``with_scales=False`` leaves out the presets with block
    scales (``deepseek_fp8``), which need ``a_scale``/``b_scale``.  ``input_formats`` (names)
    limits the operand formats of the random specs and of the presets."""
    if input_formats is not None:
        input_formats = tuple(get_format(f).name for f in input_formats)
        if not input_formats:
            raise ValueError("specs(): input_formats is empty; give format names or None")
    options = []
    if presets:
        from ..presets import presets as catalogue_presets

        chosen = [p for p in catalogue_presets.values() if (with_scales or not p.has_scales)
                  and (stochastic or not p.stochastic)
                  and (input_formats is None or {p.a_format.name, p.effective_b_format.name} <= set(input_formats))]
        if chosen:
            options.append(st.sampled_from(chosen))
    if custom:
        options.append(_random_spec(stochastic, input_formats or _INPUT_FORMATS))
    if not options:
        raise ValueError("specs(): nothing to draw from; allow presets or custom specs")
    return st.one_of(options)
