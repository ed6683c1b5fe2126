"""Matmul with configurable accumulation: :class:`MatmulSpec` and :func:`matmul` (DESIGN §6).

A :class:`MatmulSpec` is plain data describing how one output element
``d = Σ_k a_k·b_k (+ c)`` is computed; presets (``precisionlab.presets``) are
instances of it.  :func:`matmul` validates its arguments once, rounds the operands
to the spec's input formats with :func:`precisionlab.round`, and hands a batch of
dot products to a backend kernel ``matmul_values``; the NumPy backend's kernel is
the definition, written next to this text.

The model of one output element, in the order it is computed:

1. **Operands** are rounded to ``a_format`` / ``b_format`` with ``input_rounding``
   and ``input_overflow`` (``input_subnormals=False`` flushes subnormal inputs and
   results, DAZ+FTZ); C is rounded to ``c_format`` (default: the output format) with
   RNE, as ``mma`` rounds an fp32 C for an fp16 D.  ``c=None`` means C = +0, which is
   what the hardware and BLAS do without C.
2. **Scales** (optional): with ``scale_at="operands"`` each operand is multiplied by
   its scale and rounded to fp32 (RNE) before the products (``torch._scaled_mm`` on
   CPU); with ``scale_at="promotion"`` the partial sum of each promotion chunk is
   multiplied by ``fp32(a_scale·b_scale)`` in the promotion FMA (DeepSeek-V3,
   CUTLASS/DeepGEMM); with ``scale_at="products"`` each product (exact, or rounded to
   ``product_format``) is multiplied by its A scale and then by its B scale, each
   multiplication rounded to fp32 (RNE), before it is accumulated (oneDNN's reference
   matmul, which ``torch._scaled_mm`` runs on CPU); with ``scale_at="output"`` the accumulated
   sum (after promotion, C included) is multiplied once by ``fp32(a_scale·b_scale)`` with one fp32
   RNE rounding before the output rounding (cuBLASLt's ``alpha`` epilogue, H100 ``_scaled_mm``);
   its scales must not vary along K.  ``a_scale_block = (rows, k)`` and ``b_scale_block = (k, cols)``
   give the block each scale covers; ``None`` in a block means the whole dimension.
3. **Products** are exact, or rounded (RNE) to ``product_format`` (flushed like the
   accumulator when ``accumulator_subnormals=False``).
4. **Steps** of ``k_fused`` products (``step``): ``ieee`` (one IEEE addition per
   product, the FMA loop), ``fused`` (the tensor-core block FMA, see below),
   ``pairwise`` (a tree of IEEE additions, then added to the running sum),
   ``exact`` (all products of a promotion chunk and the running sum added exactly,
   one rounding).  Every rounding inside a step is to ``accumulator`` with
   ``step_rounding`` (``accumulator_subnormals=False`` flushes results, as AMD CDNA2).
5. **Order** of the steps over K (``order``, an :class:`Order`): ``sequential``
   (C is the initial running sum), ``interleaved(w)`` (w partial sums ``s[j mod w]``,
   tail steps into ``s[0]``, then ``s0+s1+…`` in order), ``lanes(w)`` (w partial
   sums, a halving tree ``s[i] += s[i+w/2]``, then the tail steps into ``s[0]``),
   ``pairwise`` (each step from zero, a tree of the step results) and
   ``blocked(kc)`` (blocks of kc K-elements summed from zero, the block sums added in
   order to the running sum that starts at C).  The reductions without a single
   running sum (interleaved, lanes, pairwise) add their result to C with one more
   accumulator addition at the end, as a BLAS epilogue ``beta·C + dot`` does.
   Partial sums (lanes, blocks, promotion chunks) start at −0, the additive identity,
   so that the zero rule below holds in every order.
   Composite orders, measured on CPU frameworks (see ``precisionlab.presets``), nest
   these: ``blocked(kc, inner)`` reduces each block with ``inner`` from −0 and adds the
   block sums in order to the running sum; ``split(g, head, tail)`` reduces the first
   ``g·floor(K/g)`` K-elements with ``head`` from the running sum and continues with
   ``tail`` on the rest (a part without elements is skipped); ``group(inner)`` reduces
   with ``inner`` from −0 and adds the result to the running sum with one addition (a
   BLAS epilogue ``C + dot``); ``strided(w)`` keeps w partial sums ``s[j mod w]`` over
   all steps and adds them to the running sum as a balanced tree of adjacent pairs.
   Widths of ``blocked`` and ``split`` count K-elements, the others count steps.
6. **Promotion** (``promote_every`` = N_C, or ``scale_at="promotion"``): the K
   elements are cut into chunks of N_C (one chunk of K without N_C); each chunk is
   computed as above from −0, multiplied by its scale and added into an outer fp32
   accumulator (initialised to C) with one RNE rounding (an FMA).
7. **Output**: the result is rounded to ``output_via`` (if set) and then to
   ``output_format`` with ``output_rounding`` and ``output_overflow``.

The fused step (``step="fused"``) takes the step's exact products and, with
``c_mode="early"``, the running sum C.  ``e_ref`` is the largest exponent among the
non-zero terms, where a product's exponent is ``E(a)+E(b)`` without renormalising
(``E(x) = max(floor(log2|x|), emin of x's format)``, so subnormals count at emin) and
C's is ``E(C)`` in the accumulator format; it is floored at ``ref_exp_floor`` when
set (equivalent to MMA-Sim's exponent for zero terms, since C, or a padding zero,
is always a term).  Each term's magnitude is cut to a multiple of
``2^(e_ref − n_frac)`` with ``align_rounding`` (``n_frac=None``: no cut, an exact
block FMA); the cut terms are added exactly, normalised and rounded once.
``c_mode="late_rn"`` sums the products only, rounds that, and adds C with one RNE
addition (B200 FP8 ``mma.sync``).  ``c_mode="late_rd"`` is AMD CDNA3's two-stage
form: the products' cut sum D (exponent ``e_dot``, not renormalised) is floored to
a multiple of ``2^(e_max − late_n_frac − 1)`` and C to ``2^(e_max − n_frac)`` with
``e_max = max(e_dot, E(C))`` (``E(0)`` = the accumulator's emin), their exact sum is
normalised and floored to ``late_n_frac`` fraction bits and then rounded with
``step_rounding``.

Special values: any NaN, Inf − Inf or 0·Inf gives NaN, otherwise an Inf gives that
Inf (this holds step by step, so an overflow to Inf inside the accumulation behaves
the same); finite overflow follows the IEEE rule of the rounding (``step_rounding``
toward zero gives ±max); an exactly zero sum is +0 unless every term is −0.  A NaN
result is the canonical (positive, quiet) NaN.

Stochastic ``step_rounding`` / ``output_rounding`` take random bits (DESIGN §5) at
counter ``flat output index × rounding_events(spec, K) + event``, where the events
are the roundings that use ``step_rounding`` (in execution order), then the
``output_via`` rounding and the output rounding.  Roundings with a fixed RNE
(products, scaled operands, promotion, the late C addition) are not events.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from .backends.arrays import as_array, ascontiguous, is_cupy_array
from .formats import Format, get_format
from .random import normalize_seed
from .rounding import Overflow, Rounding, RoundSpec, fits_float32, make_round_spec
from .rounding import round as round_to_format

__all__ = ["MatmulSpec", "Order", "matmul", "rounding_events", "STEPS", "C_MODES", "ALIGN_ROUNDINGS",
           "SCALE_AT", "ORDER_KINDS"]

STEPS = ("ieee", "fused", "pairwise", "exact")
C_MODES = ("early", "late_rn", "late_rd")
ALIGN_ROUNDINGS = ("rtz", "floor")
SCALE_AT = ("operands", "promotion", "products", "output")
ORDER_KINDS = ("sequential", "interleaved", "lanes", "pairwise", "blocked", "split", "group", "strided")
_WIDTH_ORDERS = ("interleaved", "lanes", "blocked", "split", "strided")
#: How many nested orders each kind takes (blocked: none, or its inner order).
_PARTS = {"blocked": (0, 1), "split": (2,), "group": (1,)}
_ORDER_HELP = ("sequential, interleaved(w), lanes(w), pairwise, blocked(kc), blocked(kc,inner), strided(w), "
               "split(g,head,tail), group(inner)")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


class _OrderSyntax(Exception):
    """A malformed order string (reported as one ValueError by :meth:`Order.parse`)."""


@dataclass(frozen=True)
class Order:
    """The order of the steps over K: ``kind``, ``width`` (w, kc or g) where it has one, and the
    nested orders (``parts``) of the composite kinds ``blocked(kc, inner)``, ``split(g, head, tail)``
    and ``group(inner)``.

    ``Order.parse("split(64,lanes(64),sequential)")`` and ``str(order)`` convert to and from the
    string form.
    """

    kind: str = "sequential"
    width: int | None = None
    parts: tuple[Order, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ORDER_KINDS:
            raise ValueError(f"order={self.kind!r} is not an order; allowed: {_ORDER_HELP}")
        if self.kind in _WIDTH_ORDERS:
            if not _is_int(self.width) or self.width < 1:
                raise ValueError(f"order={self.kind}({self.width}) needs a positive integer width")
            object.__setattr__(self, "width", int(self.width))
            if self.kind == "lanes" and self.width & (self.width - 1):
                raise ValueError(f"order=lanes({self.width}): the halving tree needs a power-of-two width")
        elif self.width is not None:
            raise ValueError(f"order={self.kind!r} takes no width, got width={self.width!r}")
        parts = tuple(Order.parse(p) for p in self.parts)
        if len(parts) not in _PARTS.get(self.kind, (0,)):
            raise ValueError(f"order={self.kind!r} takes {' or '.join(map(str, _PARTS.get(self.kind, (0,))))} "
                             f"nested orders, got {len(parts)}; allowed: {_ORDER_HELP}")
        object.__setattr__(self, "parts", parts)

    @property
    def composite(self) -> bool:
        """True for the kinds that nest other orders (and for the single-width ``strided``)."""
        return self.kind in ("split", "group", "strided") or bool(self.parts)

    @classmethod
    def parse(cls, value: str | Order) -> Order:
        if isinstance(value, Order):
            return value
        if not isinstance(value, str):
            raise TypeError(f"order={value!r} must be a string such as 'lanes(64)' or an Order")
        tokens = re.findall(r"[a-z_]+|\d+|[(),]|\S", value.strip().lower())
        try:
            order, pos = cls._parse_tokens(tokens, 0)
            if pos != len(tokens):
                raise _OrderSyntax
        except (_OrderSyntax, IndexError):
            raise ValueError(f"order={value!r} is not an order; allowed: {_ORDER_HELP}") from None
        return order

    @classmethod
    def _parse_tokens(cls, tokens: list[str], pos: int) -> tuple[Order, int]:
        kind = tokens[pos]
        if not kind.isidentifier():
            raise _OrderSyntax
        pos += 1
        width, parts = None, []
        if pos < len(tokens) and tokens[pos] == "(":
            pos += 1
            while True:
                if tokens[pos].isdigit():
                    if width is not None or parts:
                        raise _OrderSyntax
                    width = int(tokens[pos])
                    pos += 1
                else:
                    part, pos = cls._parse_tokens(tokens, pos)
                    parts.append(part)
                if tokens[pos] == ")":
                    pos += 1
                    break
                if tokens[pos] != ",":
                    raise _OrderSyntax
                pos += 1
        return cls(kind, width, tuple(parts)), pos

    def __str__(self) -> str:
        args = ([] if self.width is None else [str(self.width)]) + [str(p) for p in self.parts]
        return self.kind if not args else f"{self.kind}({','.join(args)})"

    def widths_in_k(self) -> list[int]:
        """The widths counted in K-elements (blocked, split) here and in every nested order."""
        own = [self.width] if self.kind in ("blocked", "split") else []
        return own + [w for p in self.parts for w in p.widths_in_k()]


def _check_choice(arg: str, value: Any, allowed: tuple[str, ...]) -> str:
    if isinstance(value, str) and value.strip().lower() in allowed:
        return value.strip().lower()
    raise ValueError(f"{arg}={value!r} not allowed; choose one of {', '.join(allowed)}")


def _check_optional_int(arg: str, value: Any, minimum: int | None = None) -> int | None:
    if value is None:
        return None
    if not _is_int(value):
        raise TypeError(f"{arg}={value!r} must be an int or None")
    if minimum is not None and value < minimum:
        raise ValueError(f"{arg}={value} not allowed; must be >= {minimum} (or None)")
    return int(value)


def _check_block(arg: str, value: Any) -> tuple[int | None, int | None] | None:
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{arg}={value!r} must be a pair (rows, cols) of positive ints or None (whole dimension)")
    out = []
    for v in value:
        if v is not None and (not _is_int(v) or v < 1):
            raise ValueError(f"{arg}={value!r} must be a pair of positive ints or None (whole dimension)")
        out.append(None if v is None else int(v))
    return (out[0], out[1])


def _check_arith_format(arg: str, fmt: Format) -> None:
    """Formats that hold sums must be able to hold every result: signed, with zero and NaN."""
    if not fmt.signed or not fmt.has_zero or fmt.nan == "none":
        raise ValueError(f"{arg}={fmt.name!r} cannot hold a sum (needs a sign, a zero and a NaN); "
                         "choose e.g. fp32, fp16, bf16 or a custom Format")


@dataclass(frozen=True)
class MatmulSpec:
    """How one output element ``d = Σ_k a_k·b_k (+ c)`` is computed (see the module docstring).

    Strings are accepted for formats, roundings, overflow policies and the order, and
    are normalised to :class:`Format`, :class:`Rounding`, :class:`Overflow` and
    :class:`Order`.  Parameters that do not apply to the chosen ``step`` are ignored.
    ``name`` and ``source`` (the citation of a preset) do not take part in equality.
    """

    a_format: Format | str = "fp16"
    b_format: Format | str | None = None
    input_rounding: Rounding | str = "rne"
    input_overflow: Overflow | str = "default"
    input_subnormals: bool = True
    a_scale_block: tuple[int | None, int | None] | None = None
    b_scale_block: tuple[int | None, int | None] | None = None
    scale_at: str = "operands"
    product_format: Format | str | None = None
    step: str = "ieee"
    k_fused: int = 1
    n_frac: int | None = None
    align_rounding: str = "rtz"
    c_mode: str = "early"
    ref_exp_floor: int | None = None
    late_n_frac: int | None = None
    accumulator: Format | str = "fp32"
    step_rounding: Rounding | str = "rne"
    accumulator_subnormals: bool = True
    order: Order | str = "sequential"
    promote_every: int | None = None
    c_format: Format | str | None = None
    output_format: Format | str = "fp32"
    output_rounding: Rounding | str = "rne"
    output_overflow: Overflow | str = "default"
    output_via: Format | str | None = None
    name: str | None = field(default=None, compare=False)
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        _validate(self)

    # ---- derived facts ---------------------------------------------------------------
    @property
    def stochastic(self) -> bool:
        """True when a rounding of the accumulation or the output is stochastic (needs a seed)."""
        return self.step_rounding.stochastic or self.output_rounding.stochastic

    @property
    def effective_b_format(self) -> Format:
        """B's input format: ``b_format``, or ``a_format`` when it is None."""
        return self.a_format if self.b_format is None else self.b_format

    @property
    def effective_c_format(self) -> Format:
        """C's format: ``c_format``, or the output format when it is None."""
        return self.output_format if self.c_format is None else self.c_format

    @property
    def promotes(self) -> bool:
        """Whether partial sums are promoted into an outer fp32 accumulator."""
        return self.promote_every is not None or (self.scale_at == "promotion" and self.has_scales)

    @property
    def has_scales(self) -> bool:
        return self.a_scale_block is not None or self.b_scale_block is not None

    @property
    def output_dtype(self) -> np.dtype:
        """float32 when every output value is a float32, else float64."""
        return np.dtype(np.float32) if fits_float32(self.output_format) else np.dtype(np.float64)

    def accumulator_spec(self, seed: int | None) -> RoundSpec:
        """The rounding of every addition inside the accumulation (``step_rounding``)."""
        return make_round_spec(self.accumulator, self.step_rounding, "default", self.accumulator_subnormals,
                               seed=seed if self.step_rounding.stochastic else None)

    def accumulator_rne_spec(self) -> RoundSpec:
        """The fixed RNE addition of C in ``c_mode="late_rn"``."""
        return make_round_spec(self.accumulator, "rne", "default", self.accumulator_subnormals)

    def product_spec(self) -> RoundSpec | None:
        if self.product_format is None:
            return None
        return make_round_spec(self.product_format, "rne", "default", self.accumulator_subnormals)

    def via_spec(self, seed: int | None) -> RoundSpec | None:
        if self.output_via is None:
            return None
        return make_round_spec(self.output_via, self.output_rounding, "default",
                               seed=seed if self.output_rounding.stochastic else None)

    def output_spec(self, seed: int | None) -> RoundSpec:
        return make_round_spec(self.output_format, self.output_rounding, self.output_overflow,
                               seed=seed if self.output_rounding.stochastic else None)

    def describe(self) -> dict[str, str]:
        """Parameter name -> readable value (for tables and the CLI)."""
        out = {}
        for f in fields(self):
            if f.name == "source":
                continue
            v = getattr(self, f.name)
            out[f.name] = "-" if v is None else (v.name if isinstance(v, Format) else
                                                 v.value if isinstance(v, (Rounding, Overflow)) else str(v))
        return out


#: fp32, the format of the promotion accumulator and of scaled operands.
FP32 = get_format("fp32")


def _validate(spec: MatmulSpec) -> None:
    """The one validator: normalise every field in place, raise ValueError/TypeError naming it."""
    def put(name: str, value: Any) -> None:
        object.__setattr__(spec, name, value)

    put("a_format", get_format(spec.a_format))
    put("b_format", None if spec.b_format is None else get_format(spec.b_format))
    rounding = Rounding.parse(spec.input_rounding, "input_rounding")
    if rounding.stochastic:
        raise ValueError(f"input_rounding={rounding.value!r}: stochastic operand rounding is not part of a matmul; "
                         "round the operands yourself with pl.round(..., seed=...)")
    put("input_rounding", rounding)
    put("input_overflow", Overflow.parse(spec.input_overflow, "input_overflow"))
    for arg in ("input_subnormals", "accumulator_subnormals"):
        if not isinstance(getattr(spec, arg), (bool, np.bool_)):
            raise TypeError(f"{arg}={getattr(spec, arg)!r} must be True or False")
        put(arg, bool(getattr(spec, arg)))
    put("a_scale_block", _check_block("a_scale_block", spec.a_scale_block))
    put("b_scale_block", _check_block("b_scale_block", spec.b_scale_block))
    put("scale_at", _check_choice("scale_at", spec.scale_at, SCALE_AT))
    put("product_format", None if spec.product_format is None else get_format(spec.product_format))
    put("step", _check_choice("step", spec.step, STEPS))
    if not _is_int(spec.k_fused):
        raise TypeError(f"k_fused={spec.k_fused!r} must be an int >= 1")
    if spec.k_fused < 1:
        raise ValueError(f"k_fused={spec.k_fused} not allowed; must be >= 1 (products per step)")
    put("k_fused", int(spec.k_fused))
    if spec.step == "ieee" and spec.k_fused != 1:
        raise ValueError(f"k_fused={spec.k_fused} not allowed with step='ieee' (one product per addition); use 1")
    put("n_frac", _check_optional_int("n_frac", spec.n_frac, 0))
    put("align_rounding", _check_choice("align_rounding", spec.align_rounding, ALIGN_ROUNDINGS))
    put("c_mode", _check_choice("c_mode", spec.c_mode, C_MODES))
    put("ref_exp_floor", _check_optional_int("ref_exp_floor", spec.ref_exp_floor))
    put("late_n_frac", _check_optional_int("late_n_frac", spec.late_n_frac, 0))
    if spec.step == "fused" and spec.c_mode == "late_rd" and (spec.n_frac is None or spec.late_n_frac is None):
        raise ValueError(f"c_mode='late_rd' needs n_frac and late_n_frac; got n_frac={spec.n_frac}, "
                         f"late_n_frac={spec.late_n_frac}")
    put("accumulator", get_format(spec.accumulator))
    _check_arith_format("accumulator", spec.accumulator)
    put("step_rounding", Rounding.parse(spec.step_rounding, "step_rounding"))
    put("order", Order.parse(spec.order))
    for width in spec.order.widths_in_k():
        if width % spec.k_fused:
            raise ValueError(f"order={spec.order}: the width {width} (K-elements) must be a multiple of "
                             f"k_fused={spec.k_fused}")
    put("promote_every", _check_optional_int("promote_every", spec.promote_every, 1))
    if spec.promote_every is not None and spec.promote_every % spec.k_fused:
        raise ValueError(f"promote_every={spec.promote_every} must be a multiple of k_fused={spec.k_fused}")
    put("c_format", None if spec.c_format is None else get_format(spec.c_format))
    put("output_format", get_format(spec.output_format))
    _check_arith_format("output_format", spec.output_format)
    put("output_rounding", Rounding.parse(spec.output_rounding, "output_rounding"))
    put("output_overflow", Overflow.parse(spec.output_overflow, "output_overflow"))
    put("output_via", None if spec.output_via is None else get_format(spec.output_via))
    if spec.output_via is not None:
        _check_arith_format("output_via", spec.output_via)
    if spec.product_format is not None:
        _check_arith_format("product_format", spec.product_format)
    if spec.scale_at == "promotion":
        for arg, block, k_axis in (("a_scale_block", spec.a_scale_block, 1), ("b_scale_block", spec.b_scale_block, 0)):
            if block is None or block[k_axis] is None:
                continue
            if spec.promote_every is None or block[k_axis] % spec.promote_every:
                raise ValueError(f"{arg}={block}: with scale_at='promotion' the K block ({block[k_axis]}) must be a "
                                 f"multiple of promote_every={spec.promote_every}, so that each promotion chunk has "
                                 "one scale")
    if spec.scale_at == "output":
        for arg, block, k_axis in (("a_scale_block", spec.a_scale_block, 1), ("b_scale_block", spec.b_scale_block, 0)):
            if block is not None and block[k_axis] is not None:
                raise ValueError(f"{arg}={block}: with scale_at='output' one scale covers all of K; use None for the "
                                 "K block")
    if spec.name is not None and not isinstance(spec.name, str):
        raise TypeError(f"name={spec.name!r} must be a string or None")


# ---- the schedule's rounding events (shared by every backend) -------------------------------

def _step_events(spec: MatmulSpec, n_products: int) -> int:
    return n_products if spec.step == "pairwise" else 1


def _chunk_events(spec: MatmulSpec, length: int, order: Order | None = None) -> int:
    """Roundings with ``step_rounding`` for one chunk of ``length`` K elements (in ``order``,
    by default the spec's)."""
    if spec.step == "exact":
        return 1
    order = spec.order if order is None else order
    if order.composite:
        return _composite_events(spec, length, order)
    k = spec.k_fused
    steps = [min(k, length - j) for j in range(0, length, k)]
    inner = sum(_step_events(spec, n) for n in steps)
    kind, w = order.kind, order.width
    if kind == "sequential":
        return inner
    if kind in ("interleaved", "lanes"):
        return inner + (w - 1) + 1
    if kind == "pairwise":
        return inner + max(len(steps) - 1, 0) + 1
    return inner + math.ceil(length / w)          # blocked: one addition per block sum


def _composite_events(spec: MatmulSpec, length: int, order: Order) -> int:
    """Events of the composite orders, following the module docstring (empty parts are skipped)."""
    kind, w = order.kind, order.width
    if kind == "group":
        return _chunk_events(spec, length, order.parts[0]) + 1 if length else 0
    if kind == "split":
        head = length // w * w
        sizes = (head, length - head)
        return sum(_chunk_events(spec, n, part) for n, part in zip(sizes, order.parts, strict=True) if n)
    if kind == "blocked":
        return sum(_chunk_events(spec, min(w, length - b), order.parts[0]) + 1 for b in range(0, length, w))
    k = spec.k_fused                                     # strided(w): lanes, a tree, one addition
    steps = [min(k, length - j) for j in range(0, length, k)]
    return sum(_step_events(spec, n) for n in steps) + min(w, len(steps)) if steps else 0


def chunks(spec: MatmulSpec, K: int) -> list[tuple[int, int]]:
    """The (start, stop) K ranges that are accumulated separately (one without promotion)."""
    size = spec.promote_every if spec.promote_every is not None else max(K, 1)
    return [(s, min(s + size, K)) for s in range(0, K, size)] or [(0, 0)]


def rounding_events(spec: MatmulSpec, K: int) -> int:
    """Random-bit events per output element (DESIGN §5): accumulation roundings, via, output."""
    events = sum(_chunk_events(spec, stop - start) for start, stop in chunks(spec, K))
    return events + (spec.output_via is not None) + 1


# ---- the front end ----------------------------------------------------------------------------

def _float_array(x: Any, arg: str, device: bool | None = None) -> np.ndarray:
    """x as a float32/float64 array; a CuPy array stays one.  ``device``: which side the operands
    are on (True: CuPy), to which NumPy c / scales are copied; a CuPy one with NumPy operands is
    a TypeError (no silent device-host copies)."""
    xp = as_array(x)
    if xp.dtype not in (np.float32, np.float64):
        raise TypeError(f"{arg} has dtype {xp.dtype}; allowed: float32, float64 (convert explicitly)")
    if device and not is_cupy_array(xp):
        import cupy
        xp = cupy.asarray(xp)
    elif device is False and is_cupy_array(xp):
        raise TypeError(f"{arg} is a CuPy array but a and b are NumPy arrays; pass cupy.asnumpy({arg}) or CuPy "
                        "operands")
    return xp


def _expand_scale(scale: Any, block: tuple[int | None, int | None] | None, rows: int, cols: int,
                  batch: tuple[int, ...], arg: str, block_arg: str, device: bool) -> np.ndarray | None:
    """Validate a block-scale array and repeat it to the operand's (batch, rows, cols) shape."""
    if block is None:
        if scale is not None:
            raise ValueError(f"{arg} given but the spec has {block_arg}=None; set {block_arg} "
                             "(e.g. (None, None) per tensor) with dataclasses.replace")
        return None
    if scale is None:
        raise ValueError(f"{arg} is required: the spec has {block_arg}={block}")
    sp = _float_array(scale, arg, device).astype(np.float64)
    br = max(rows, 1) if block[0] is None else block[0]
    bc = max(cols, 1) if block[1] is None else block[1]
    grid = (math.ceil(rows / br), math.ceil(cols / bc))
    try:
        sp = np.broadcast_to(sp, batch + grid)
    except ValueError:
        raise ValueError(f"{arg} has shape {np.shape(scale)}; with {block_arg}={block} and an operand of "
                         f"{rows}x{cols} it must broadcast to {batch + grid} (batch + ceil(rows/{br}) x "
                         f"ceil(cols/{bc}))") from None
    sp = np.repeat(np.repeat(sp, br, axis=-2), bc, axis=-1)[..., :rows, :cols]
    return ascontiguous(sp.reshape((math.prod(batch), rows, cols)))


def _batched(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``x`` broadcast to ``shape`` as a C-contiguous (batch, rows, cols) array (no copy when it already is one;
    NumPy or CuPy)."""
    if x.shape != shape:
        x = np.broadcast_to(x, shape)
    return ascontiguous(x).reshape((math.prod(shape[:-2]),) + shape[-2:])


def matmul(a: Any, b: Any, spec: MatmulSpec | str, c: Any = None, a_scale: Any = None, b_scale: Any = None,
           seed: int | None = None, backend: str = "auto") -> np.ndarray:
    """``a @ b (+ c)`` computed as ``spec`` says, bit for bit.

    ``a`` is ``(..., M, K)`` and ``b`` ``(..., K, N)`` (float32 or float64; batch dimensions
    broadcast as in ``np.matmul``); they are first rounded to the spec's input formats.  ``c``
    broadcasts to ``(..., M, N)``.  ``a_scale`` / ``b_scale`` are block scales (see
    ``MatmulSpec.a_scale_block``).  Returns float32 holding values of the output format
    (float64 where the output format does not fit float32).  ``spec`` may be a preset name.
    CuPy operands give a CuPy result (``backend="auto"`` picks the cupy backend for them,
    DESIGN §7); NumPy ``c`` / scales are then copied to the device.
    """
    from .backends import get_backend, select_backend
    from .presets import get_preset

    if isinstance(spec, str):
        spec = get_preset(spec)
    if not isinstance(spec, MatmulSpec):
        raise TypeError(f"spec={spec!r} must be a MatmulSpec or a preset name")
    ap, bp = _float_array(a, "a"), _float_array(b, "b")
    device = is_cupy_array(ap)
    if is_cupy_array(bp) != device:
        raise TypeError(f"a is a {type(ap).__module__} array and b a {type(bp).__module__} array; pass both as NumPy "
                        "or both as CuPy arrays")
    if ap.ndim < 2 or bp.ndim < 2:
        raise ValueError(f"a has shape {ap.shape} and b has shape {bp.shape}; both need at least 2 dimensions "
                         "(..., M, K) and (..., K, N)")
    M, K = ap.shape[-2:]
    K2, N = bp.shape[-2:]
    if K != K2:
        raise ValueError(f"a has shape {ap.shape} and b has shape {bp.shape}: K mismatch ({K} != {K2})")
    try:
        batch = np.broadcast_shapes(ap.shape[:-2], bp.shape[:-2])
    except ValueError:
        raise ValueError(f"a has shape {ap.shape} and b has shape {bp.shape}: batch dimensions "
                         f"{ap.shape[:-2]} and {bp.shape[:-2]} do not broadcast") from None
    if spec.stochastic and seed is None:
        raise ValueError(f"spec {spec.name or ''} has stochastic rounding (step_rounding="
                         f"{spec.step_rounding.value!r}, output_rounding={spec.output_rounding.value!r}) "
                         "and needs seed=<int>; got seed=None")
    seed = None if seed is None else normalize_seed(seed)

    flush = not spec.input_subnormals

    def to_input(x: np.ndarray, fmt: Format, arg: str, rnd: Rounding, overflow: Overflow) -> np.ndarray:
        if x.dtype == np.float32 and fmt == FP32 and overflow is Overflow.DEFAULT and not flush:
            return x                        # every float32 is an fp32 value: no rounding changes it
        if x.dtype == np.float32 and not fits_float32(fmt):
            x = x.astype(np.float64)
        try:
            r = round_to_format(x, fmt, rounding=rnd, overflow=overflow, subnormals=not flush,
                               flush_inputs=flush, backend=backend)
        except ValueError as exc:
            raise ValueError(f"{arg}: {exc}") from None
        return r.astype(np.float32 if fits_float32(fmt) else np.float64, copy=False)

    ar = to_input(ap, spec.a_format, "a", spec.input_rounding, spec.input_overflow)
    br = to_input(bp, spec.effective_b_format, "b", spec.input_rounding, spec.input_overflow)
    out_shape = batch + (M, N)
    if c is None:
        cr = np.zeros((), np.float32)                    # C = +0 (broadcast below: no memory)
        if device:
            cr = _float_array(cr, "c", device)
    else:
        cp = _float_array(c, "c", device)
        try:
            fits = np.broadcast_shapes(cp.shape, out_shape) == out_shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"c has shape {cp.shape}; it must broadcast to the output shape {out_shape}")
        # rounding is elementwise: round C at its own shape (a bias row: N values), then broadcast
        cr = to_input(ascontiguous(cp), spec.effective_c_format, "c", Rounding.RNE, Overflow.DEFAULT)
    a3, b3 = _batched(ar, batch + (M, K)), _batched(br, batch + (K, N))
    if device:
        c3 = _batched(cr, out_shape)
    else:
        c3 = np.broadcast_to(cr, out_shape).reshape((math.prod(batch), M, N))    # read-only; a view where it can be
    sa = _expand_scale(a_scale, spec.a_scale_block, M, K, batch, "a_scale", "a_scale_block", device)
    sb = _expand_scale(b_scale, spec.b_scale_block, K, N, batch, "b_scale", "b_scale_block", device)

    kernel = select_backend(backend, ap)
    if not hasattr(kernel, "matmul_values"):
        if backend != "auto":
            raise ValueError(f"backend={backend!r} has no matmul kernel yet; use backend='numpy' or 'auto'")
        kernel = get_backend("numpy")
    d = kernel.matmul_values(a3, b3, c3, sa, sb, spec, seed)
    return d.reshape(out_shape).astype(spec.output_dtype, copy=False)
