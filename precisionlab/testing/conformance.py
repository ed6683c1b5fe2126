"""``check_kernel``: run a user's kernel on inputs built to separate behaviours and compare
it, bit for bit, with the emulator (DESIGN §1, §10).

The loop is the same for every operation; what an operation contributes is an
:class:`_Op`: how a spec is validated and described, which input cases separate the
behaviours that real kernels get wrong, how the emulator computes the expected output,
and which nearby specs ("alternatives") to try when the kernel disagrees, so the report
can say *what* the kernel does instead (``matches rounding='rtz' instead of 'rne'``).

``op="cast"``: ``spec`` is a :class:`precisionlab.rounding.RoundSpec` (from
``make_round_spec``; a format name or ``Format`` means round-to-nearest-even with the
default overflow), ``fn(x) -> y`` takes a float32 array (float64 for formats whose
values float32 cannot hold, e.g. fp32 itself) and returns the rounded values in any
float dtype (float32, float64, ``ml_dtypes``), same shape.  Expected: ``pl.round``.
Cases: every value of the format (formats up to 16 bits; a per-binade sample above),
the ties between adjacent values at every binade, the floats just beside them, the
subnormal range (on the subnormal grid, also for flushing formats, and the input's own
subnormals for DAZ), the overflow band with the tie between ``max`` and the first value
past it (where saturating and IEEE rounding part), the specials (±0, ±Inf, NaN), and
random data from ``dists`` in each of ``shapes``.  A stochastic spec is compared with its
seed: each case is one call, whose element ``i`` uses the random word of counter ``i``.

``op="matmul"``: ``spec`` is a ``MatmulSpec`` or a preset name and ``fn(a, b) -> d``
takes float32 ``(M, K)`` and ``(K, N)`` operands holding values of the spec's input
formats; expected: ``pl.matmul(a, b, spec)``.  Cases: random normal data, products that
cancel exactly in pairs plus small terms (which only an order-exact model reproduces),
operands with widely spread exponents, and special values; ``shapes`` are ``(M, K, N)``.
``pl.matmul`` is imported when a matmul check runs, not when this module is.

The report (:class:`ConformanceReport`) prints as text, serialises with ``to_dict`` /
``to_json`` and writes JUnit XML (``to_junit_xml``) for CI systems.
"""

from __future__ import annotations

import dataclasses
import json
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..analysis import DISTRIBUTIONS, as_float64, input_dtype, sample
from ..formats import Format, formats, get_format
from ..rounding import Overflow, Rounding, RoundSpec, check_input_dtype, make_round_spec
from ..rounding import round as pl_round
from .assertions import Mismatch, compare

__all__ = ["check_kernel", "ConformanceReport", "CaseResult", "Case", "cast_cases", "OPS"]


# ---------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One call of the kernel: a name, what the inputs are built to separate, the inputs."""

    name: str
    description: str
    inputs: tuple[np.ndarray, ...]

    @property
    def size(self) -> int:
        return int(self.inputs[0].size)


@dataclass(frozen=True)
class CaseResult:
    """How the kernel did on one case: output elements, mismatches, the first ones, the
    ULP histogram, or the error the kernel raised (or the bad output it returned)."""

    name: str
    description: str
    elements: int
    mismatches: int
    first: tuple[Mismatch, ...] = ()
    histogram: tuple[tuple[str, int], ...] = ()
    error: str | None = None
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.error is None and self.mismatches == 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "elements": self.elements,
                "mismatches": self.mismatches, "passed": self.passed, "error": self.error,
                "first_mismatches": [m.to_dict() for m in self.first],
                "ulp_histogram": [{"ulps": k, "count": v} for k, v in self.histogram]}


@dataclass(frozen=True)
class ConformanceReport:
    """The result of :func:`check_kernel`: ``passed``, per-case results, a diagnosis."""

    op: str
    kernel: str
    spec: dict[str, Any]
    format: str
    seed: int
    backend: str
    cases: tuple[CaseResult, ...]
    diagnosis: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cases)

    @property
    def mismatches(self) -> int:
        return sum(c.mismatches for c in self.cases)

    @property
    def elements(self) -> int:
        return sum(c.elements for c in self.cases)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (non-finite floats as the strings ``inf``, ``-inf``, ``nan``)."""
        return {"op": self.op, "kernel": self.kernel, "spec": self.spec, "format": self.format, "seed": self.seed,
                "backend": self.backend, "passed": self.passed, "elements": self.elements,
                "mismatches": self.mismatches, "cases": [c.to_dict() for c in self.cases],
                "diagnosis": list(self.diagnosis)}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, allow_nan=False)

    def __str__(self) -> str:
        status = "PASSED" if self.passed else "FAILED"
        shown = {"preset": self.spec["preset"]} if self.spec.get("preset") else self.spec
        spec = ", ".join(f"{k}={v}" for k, v in shown.items() if v is not None)
        lines = [f"precisionlab conformance {status}: {self.kernel} ({self.op}; {spec})",
                 f"{self.mismatches} of {self.elements} elements differ in {self.format}"]
        width = max(len(c.name) for c in self.cases) if self.cases else 4
        lines.append(f"  {'case'.ljust(width)}  {'elements':>9}  {'mismatches':>10}")
        for c in self.cases:
            note = f"  error: {c.error}" if c.error else ""
            lines.append(f"  {c.name.ljust(width)}  {c.elements:>9}  {c.mismatches:>10}{note}")
        failing = [c for c in self.cases if not c.passed]
        for c in failing[:3]:
            lines += ["", f"case {c.name!r} ({c.description}):"] + ["  " + ln for ln in c.message.splitlines()]
        if len(failing) > 3:
            lines += ["", f"({len(failing) - 3} more cases with mismatches: see to_dict() or to_json())"]
        if self.diagnosis:
            lines += ["", "diagnosis:"] + [f"  - {d}" for d in self.diagnosis]
        return "\n".join(lines)

    def to_junit_xml(self) -> str:
        """JUnit XML: one test suite, one test case per input case (failure on mismatch,
        error when the kernel raised or returned something unusable)."""
        failures = sum(1 for c in self.cases if c.error is None and c.mismatches)
        errors = sum(1 for c in self.cases if c.error is not None)
        root = ET.Element("testsuites", name="precisionlab conformance", tests=str(len(self.cases)),
                          failures=str(failures), errors=str(errors))
        suite = ET.SubElement(root, "testsuite", name=f"precisionlab.conformance.{self.op}",
                              tests=str(len(self.cases)), failures=str(failures), errors=str(errors), skipped="0")
        props = ET.SubElement(suite, "properties")
        for key, value in [("kernel", self.kernel), ("format", self.format), ("seed", self.seed),
                           ("backend", self.backend)] + [(f"spec.{k}", v) for k, v in self.spec.items()]:
            ET.SubElement(props, "property", name=key, value=str(value))
        for c in self.cases:
            tc = ET.SubElement(suite, "testcase", classname=f"precisionlab.conformance.{self.op}.{self.kernel}",
                               name=c.name)
            if c.error is not None:
                ET.SubElement(tc, "error", message=c.error, type="KernelError").text = c.error
            elif c.mismatches:
                text = c.message + ("\n\ndiagnosis:\n" + "\n".join(f"- {d}" for d in self.diagnosis)
                                    if self.diagnosis else "")
                ET.SubElement(tc, "failure", message=f"{c.mismatches} of {c.elements} elements differ in "
                                                     f"{self.format}", type="Mismatch").text = text
        ET.indent(root)
        return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# ---------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------


def _count_mismatches(actual: np.ndarray, expected: np.ndarray) -> int:
    """Bitwise mismatches of float64 arrays, NaN equal to NaN (values not in the format
    never equal an emulator output, so no format check is needed here)."""
    same = (actual.view(np.uint64) == expected.view(np.uint64)) | (np.isnan(actual) & np.isnan(expected))
    return int(actual.size - same.sum())


def _kernel_name(fn: Callable) -> str:
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    return f"{module}:{name}" if module else str(name)


def _finite_positive_codes(fmt: Format, rng: np.random.Generator, per_binade: int = 8) -> np.ndarray:
    """Magnitude codes of positive finite values: all of them for formats up to 16 bits,
    else per binade the first and last few significands and ``per_binade`` random ones."""
    from ..rounding import decode

    m, e = fmt.mantissa_bits, fmt.exponent_bits
    if fmt.bits <= 16:
        codes = np.arange(1 << (e + m), dtype=np.uint64)
    else:
        edge = np.array([0, 1, 2, 3], dtype=np.uint64)
        edge = np.concatenate([edge, (1 << m) - 1 - edge])
        rand = rng.integers(0, 1 << m, size=((1 << e), per_binade), dtype=np.uint64)
        sig = np.concatenate([np.broadcast_to(edge, ((1 << e), edge.size)), rand], axis=1)
        codes = (np.arange(1 << e, dtype=np.uint64)[:, None] << np.uint64(m)) | sig
        codes = np.unique(codes.reshape(-1))
    vals = np.asarray(decode(codes.astype(fmt.code_dtype), fmt, backend="numpy"), dtype=np.float64)
    return codes[np.isfinite(vals) & (vals > 0)]


def _exactly(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The float64 ``values`` that ``dtype`` holds exactly, as ``dtype``."""
    with np.errstate(over="ignore"):
        cast = values.astype(dtype)
    return cast[cast.astype(np.float64) == values]


def _beside(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.concatenate([np.nextafter(x, x.dtype.type(np.inf)), np.nextafter(x, x.dtype.type(-np.inf))])


# ---------------------------------------------------------------------------
# op="cast"
# ---------------------------------------------------------------------------


def cast_cases(spec: RoundSpec, dtype: Any = None, shapes: Sequence[tuple[int, ...]] = ((1000,), (7, 33)),
               dists: Sequence[str] = DISTRIBUTIONS, seed: int = 0) -> list[Case]:
    """The input cases of a cast check (see the module docstring), as ``dtype`` arrays
    (default: float32, float64 for formats float32 cannot feed)."""
    from ..rounding import decode

    fmt = spec.format
    dtype = input_dtype(fmt) if dtype is None else np.dtype(dtype)
    rng = np.random.default_rng(seed)
    m = fmt.mantissa_bits
    codes = _finite_positive_codes(fmt, rng)
    value = np.asarray(decode(codes.astype(fmt.code_dtype), fmt, backend="numpy"), dtype=np.float64)
    nxt_codes = codes + np.uint64(1)
    nxt = np.asarray(decode(np.minimum(nxt_codes, np.uint64((1 << (fmt.exponent_bits + m)) - 1))
                            .astype(fmt.code_dtype), fmt, backend="numpy"), dtype=np.float64)
    top = 2.0 ** (fmt.emax - m)
    nxt = np.where(np.isfinite(nxt) & (nxt > value), nxt, value + top)  # past max: the first value beyond it
    ties = (value + nxt) / 2
    u_sub = 2.0 ** (fmt.emin - m)
    sub_grid = np.arange(0, (1 << m) + 1, dtype=np.float64) * u_sub if m < 16 else \
        np.concatenate([np.arange(0, 64), rng.integers(64, 1 << m, 256), [(1 << m) - 1, 1 << m]]) * u_sub
    sub_points = np.concatenate([sub_grid, sub_grid + u_sub / 2,
                                 fmt.smallest_subnormal * np.array([1 / 4, 1 / 3, 3 / 8, 2.0**-10])])
    info = np.finfo(dtype)
    own_subnormals = np.array([float(info.smallest_subnormal), 3 * float(info.smallest_subnormal),
                               float(info.smallest_normal) / 2, float(info.smallest_normal) * (1 - 2.0**-20)])
    mx = fmt.max
    overflow = np.array([mx, mx + top / 2, mx + top, mx + 1.5 * top, 2 * mx, 2.0 ** (fmt.emax + 1),
                         2.0 ** (fmt.emax + 2), float(info.max)])

    negatives = fmt.signed or fmt.nan != "none"    # unsigned formats give NaN for them, if they have one

    def signed(x: np.ndarray) -> np.ndarray:
        x = _exactly(x[np.isfinite(x)], dtype) if x.dtype != dtype else x
        return np.concatenate([x, -x]) if negatives else x

    specials = [0.0, -0.0, np.inf] + ([-np.inf] if negatives else []) + ([np.nan, -np.nan] if fmt.nan != "none"
                                                                         else [])
    cases = [
        ("values", "every value of the format" if fmt.bits <= 16 else "values of every binade",
         np.concatenate([signed(value), np.array([0.0, -0.0], dtype)])),
        ("ties", "midpoints of adjacent values at every binade, also between max and the first value past it",
         signed(ties)),
        ("beside_ties", "one float step above and below each tie", signed(_beside(_exactly(ties, dtype)))),
        ("subnormals", "the subnormal grid and its midpoints, below the smallest subnormal, input subnormals (DAZ)",
         signed(np.concatenate([sub_points, _beside(_exactly(sub_points[sub_points > 0], dtype))
                                .astype(np.float64), own_subnormals]))),
        ("overflow", "max, the overflow tie max + ulp/2 and beside it, the first value past max, far beyond",
         signed(np.concatenate([overflow, _beside(_exactly(overflow, dtype)).astype(np.float64)]))),
        ("specials", "±0, ±Inf, NaN", np.array(specials, dtype=dtype)),
    ]
    for dist in dists:
        for i, shape in enumerate(shapes):
            x = sample(dist, int(np.prod(shape)), fmt, seed + i, dtype).reshape(shape)
            cases.append((f"{dist}{list(shape)}", f"{dist} random inputs of shape {tuple(shape)}", x))
    return [Case(name, description, (np.ascontiguousarray(x, dtype=dtype),)) for name, description, x in cases]


_ROUNDING_WORDS = {
    "rne": "round to nearest, ties to even", "rna": "round to nearest, ties away from zero",
    "rtz": "truncation toward zero", "rup": "rounding toward +Inf", "rdn": "rounding toward -Inf",
    "rto": "round to odd", "sr": "stochastic rounding", "sr_equal": "stochastic rounding with probability 1/2",
}


def _overflow_words(policy: Overflow, fmt: Format) -> str:
    if policy is Overflow.SATURATE:
        return "saturates overflow and ±Inf to ±max"
    if policy is Overflow.SATURATE_FINITE:
        return "saturates finite overflow and keeps ±Inf" + ("" if fmt.has_inf else " (as NaN)")
    return "gives " + ("±Inf" if fmt.has_inf else "NaN" if fmt.nan != "none" else "±max") + " on overflow"


class _CastOp:
    name = "cast"

    def normalize(self, spec: Any) -> RoundSpec:
        if isinstance(spec, RoundSpec):
            return spec
        if isinstance(spec, (str, Format)):
            return make_round_spec(spec)
        if isinstance(spec, dict):
            return make_round_spec(**spec)
        raise TypeError(f"spec={spec!r} must be a RoundSpec (precisionlab.rounding.make_round_spec), a format "
                        "or a dict of make_round_spec arguments for op='cast'")

    def describe(self, spec: RoundSpec) -> dict[str, Any]:
        return {"format": spec.format.name, "rounding": spec.rounding.value, "overflow": spec.overflow.value,
                "subnormals": spec.subnormals, "flush_inputs": spec.flush_inputs, "seed": spec.seed,
                "sr_bits": spec.sr_bits if spec.rounding is Rounding.SR else None, "via": spec.via}

    def output_format(self, spec: RoundSpec) -> Format:
        return spec.format

    def cases(self, spec: RoundSpec, shapes: Sequence[tuple[int, ...]] | None, dists: Sequence[str],
              seed: int, dtype: Any) -> list[Case]:
        return cast_cases(spec, dtype, ((1000,), (7, 33)) if shapes is None else shapes, dists, seed)

    def expected(self, spec: RoundSpec, case: Case, backend: str) -> np.ndarray:
        return _round(case.inputs[0], spec, backend)

    def alternatives(self, spec: RoundSpec, cases: Sequence[Case]) -> list[tuple[RoundSpec, str, int]]:
        """Nearby specs: every deterministic mode × overflow policy × FTZ × DAZ (× double
        rounding through float32 for float64 inputs), and same-width formats."""
        float64_inputs = any(c.inputs[0].dtype == np.float64 for c in cases)
        modes = [r for r in Rounding if not r.stochastic] + ([spec.rounding] if spec.rounding.stochastic else [])
        out = []
        for rounding in modes:
            for overflow in Overflow:
                for subnormals in (True, False) if spec.format.has_subnormals else (spec.subnormals,):
                    for flush in (False, True):
                        for via in (None, "fp32") if float64_inputs else (spec.via,):
                            alt = make_round_spec(spec.format, rounding, overflow, subnormals, flush,
                                                  spec.seed if rounding.stochastic else None,
                                                  spec.sr_bits if rounding is Rounding.SR else None, via)
                            if alt != spec:
                                out.append((alt, *self._change(spec, alt)))
        for fmt in formats.values():
            if fmt.bits == spec.format.bits and fmt != spec.format:
                try:
                    check_input_dtype(fmt, cases[0].inputs[0].dtype)
                except ValueError:
                    continue
                alt = dataclasses.replace(spec, format=fmt)
                out.append((alt, *self._change(spec, alt)))
        return out

    def subset(self, spec: RoundSpec, case: Case, out: np.ndarray, expected: np.ndarray,
               limit: int) -> tuple[Case, np.ndarray] | None:
        """At most ``limit`` elements of a case (mismatching ones first); None for stochastic
        specs, whose alternatives depend on each element's position."""
        if spec.rounding.stochastic:
            return None
        flat_out, flat_exp = out.reshape(-1), expected.reshape(-1)
        same = (flat_out.view(np.uint64) == flat_exp.view(np.uint64)) | (np.isnan(flat_out) & np.isnan(flat_exp))
        order = np.concatenate([np.flatnonzero(~same), np.flatnonzero(same)])[:limit]
        x = case.inputs[0].reshape(-1)[order]
        return Case(case.name, case.description, (x,)), flat_out[order]

    def runs_on(self, alt: RoundSpec, case: Case) -> bool:
        x = case.inputs[0]
        fmt = alt.format
        if fmt.nan == "none" and np.isnan(x).any():
            return False
        return fmt.signed or fmt.nan != "none" or not (np.signbit(x) & (x != 0)).any()

    def alt_expected(self, alt: RoundSpec, case: Case, backend: str) -> np.ndarray:
        return _round(case.inputs[0], alt, "numpy")      # one kernel for every mode: no JIT per alternative

    @staticmethod
    def _change(spec: RoundSpec, alt: RoundSpec) -> tuple[str, int]:
        """What differs, in words, and how many fields differ."""
        fmt = spec.format
        said, did = [], []
        if alt.format != spec.format:
            said.append(f"format={alt.format.name!r} instead of {spec.format.name!r}")
            did.append(f"rounds to {alt.format.name}")
        if alt.rounding != spec.rounding:
            said.append(f"rounding={alt.rounding.value!r} instead of {spec.rounding.value!r}")
            did.append(f"rounds with {_ROUNDING_WORDS[alt.rounding.value]}")
        if alt.overflow != spec.overflow:
            said.append(f"overflow={alt.overflow.value!r} instead of {spec.overflow.value!r}")
            did.append(f"{_overflow_words(alt.overflow, fmt)} (the spec {_overflow_words(spec.overflow, fmt)})")
        if alt.subnormals != spec.subnormals:
            said.append(f"subnormals={alt.subnormals} instead of {spec.subnormals}")
            did.append("flushes subnormal results to zero (FTZ)" if not alt.subnormals else "keeps subnormal results")
        if alt.flush_inputs != spec.flush_inputs:
            said.append(f"flush_inputs={alt.flush_inputs} instead of {spec.flush_inputs}")
            did.append("treats subnormal inputs as zero (DAZ)" if alt.flush_inputs else "keeps subnormal inputs")
        if alt.via != spec.via:
            said.append(f"via={alt.via!r} instead of {spec.via!r}")
            did.append("rounds float64 inputs through float32 first (double rounding)" if alt.via
                       else "rounds float64 inputs once")
        return ", ".join(said) + ": the kernel " + "; ".join(did), len(said)


def _round(x: np.ndarray, spec: RoundSpec, backend: str) -> np.ndarray:
    return pl_round(x, spec.format, spec.rounding, spec.overflow, spec.subnormals, spec.flush_inputs, spec.seed,
                    spec.sr_bits if spec.rounding is Rounding.SR else None, spec.via, backend=backend)


# ---------------------------------------------------------------------------
# op="matmul" (pl.matmul, DESIGN §6; imported when used)
# ---------------------------------------------------------------------------


def _matmul_api() -> tuple[Any, Any, Any]:
    from ..matmul import MatmulSpec, matmul
    from ..presets import get_preset, presets
    return MatmulSpec, matmul, (get_preset, presets)


class _MatmulOp:
    name = "matmul"

    def normalize(self, spec: Any) -> Any:
        MatmulSpec, _, (get_preset, _presets) = _matmul_api()
        if isinstance(spec, str):
            return get_preset(spec)
        if isinstance(spec, MatmulSpec):
            return spec
        raise TypeError(f"spec={spec!r} must be a MatmulSpec or a preset name for op='matmul'")

    def describe(self, spec: Any) -> dict[str, Any]:
        described = spec.describe() if hasattr(spec, "describe") else {}
        return {"preset": spec.name, **{k: str(v) for k, v in described.items()}}

    def output_format(self, spec: Any) -> Format:
        return get_format(spec.output_format)

    def cases(self, spec: Any, shapes: Sequence[tuple[int, int, int]] | None, dists: Sequence[str], seed: int,
              dtype: Any) -> list[Case]:
        a_fmt, b_fmt = get_format(spec.a_format), get_format(spec.effective_b_format)
        rng = np.random.default_rng(seed)
        out = []
        for M, K, N in ((4, 64, 4), (3, 100, 5)) if shapes is None else shapes:
            def operands(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                with np.errstate(over="ignore"):
                    return (pl_round(a.astype(np.float64), a_fmt, spec.input_rounding, "saturate")
                            .astype(np.float32),
                            pl_round(b.astype(np.float64), b_fmt, spec.input_rounding, "saturate")
                            .astype(np.float32))
            tag = f"[{M}x{K}x{N}]"
            out.append(Case(f"normal{tag}", "standard normal operands",
                            operands(rng.standard_normal((M, K)), rng.standard_normal((K, N)))))
            a = rng.standard_normal((M, K)) * np.exp2(rng.integers(-6, 7, (M, K)))
            b = rng.standard_normal((K, N)) * np.exp2(rng.integers(-6, 7, (K, N)))
            a, b = operands(a, b)
            pairs = (K // 2) * 2
            a[:, 1:pairs:2] = -a[:, 0:pairs:2]          # products cancel exactly in pairs ...
            b[1:pairs:2, :] = b[0:pairs:2, :]
            small = rng.choice(K, size=max(1, K // 16), replace=False)
            a[:, small] *= np.float32(2.0**-12)          # ... plus a few small terms
            a, b = operands(a, b)
            out.append(Case(f"cancelling_pairs{tag}", "half the products cancel exactly in pairs, plus small terms "
                            "(separates summation orders)", (a, b)))
            wide_a = np.sign(rng.standard_normal((M, K))) * np.exp2(rng.uniform(-12, 12, (M, K)))
            wide_b = np.sign(rng.standard_normal((K, N))) * np.exp2(rng.uniform(-12, 12, (K, N)))
            out.append(Case(f"wide_exponents{tag}", "operands with exponents spread over 24 binades (alignment and "
                            "truncation inside fused steps)", operands(wide_a, wide_b)))
            a, b = operands(rng.standard_normal((M, K)), rng.standard_normal((K, N)))
            specials = [v for v in (np.inf if a_fmt.has_inf else None, np.nan if a_fmt.nan != "none" else None,
                                    -0.0) if v is not None]
            for i, v in enumerate(specials):
                a[i % M, (3 * i) % K] = v
            out.append(Case(f"specials{tag}", "a few ±0 / Inf / NaN operands", (a, b)))
        return out

    def expected(self, spec: Any, case: Case, backend: str) -> np.ndarray:
        _, matmul, _ = _matmul_api()
        return matmul(case.inputs[0], case.inputs[1], spec, backend=backend)

    def alternatives(self, spec: Any, cases: Sequence[Case]) -> list[tuple[Any, str, int]]:
        """Presets with the spec's operand and output formats, and the spec with another
        accumulator or summation order."""
        _, _, (_get_preset, presets) = _matmul_api()
        out: list[tuple[Any, str, int]] = []
        seen = {spec}

        def add(alt: Any, label: str) -> None:
            if alt not in seen:
                seen.add(alt)
                out.append((alt, label, 1))

        for name, preset in presets.items():
            try:
                alt = dataclasses.replace(preset, a_format=spec.a_format, b_format=spec.b_format,
                                          output_format=spec.output_format, name=name)
            except (ValueError, TypeError):
                continue
            add(alt, f"preset {name!r}: the kernel computes as {name} does")
        for acc in ("fp32", "fp16", "bf16"):
            if get_format(acc) != get_format(spec.accumulator):
                try:
                    add(dataclasses.replace(spec, accumulator=acc), f"accumulator={acc!r} instead of "
                        f"{get_format(spec.accumulator).name!r}: the kernel accumulates in {acc}")
                except (ValueError, TypeError):
                    pass
        for order in ("sequential", "pairwise", "interleaved(4)", "lanes(64)"):
            try:
                add(dataclasses.replace(spec, order=order), f"order={order!r} instead of {str(spec.order)!r}: "
                    f"the kernel sums in that order")
            except (ValueError, TypeError):
                pass
        return out

    def subset(self, spec: Any, case: Case, out: np.ndarray, expected: np.ndarray, limit: int) -> None:
        return None                                      # output elements depend on whole rows and columns

    def runs_on(self, alt: Any, case: Case) -> bool:
        return True

    def alt_expected(self, alt: Any, case: Case, backend: str) -> np.ndarray:
        return self.expected(alt, case, backend)


#: The operations ``check_kernel`` knows, by ``op`` name.
OPS: dict[str, Any] = {"cast": _CastOp(), "matmul": _MatmulOp()}


def _infer_op(spec: Any) -> str:
    if isinstance(spec, (RoundSpec, Format, dict)):
        return "cast"
    if type(spec).__name__ == "MatmulSpec":
        return "matmul"
    if isinstance(spec, str):
        try:
            get_format(spec)
            return "cast"
        except ValueError:
            return "matmul"
    raise TypeError(f"spec={spec!r}: cannot tell the operation; pass op='cast' or op='matmul'")


# ---------------------------------------------------------------------------
# check_kernel
# ---------------------------------------------------------------------------


def _call(fn: Callable, case: Case) -> tuple[np.ndarray | None, str | None]:
    try:
        out = fn(*(x.copy() for x in case.inputs))
    except Exception as exc:  # the user's kernel: report, do not crash the check
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        return None, f"kernel raised {type(exc).__name__}: {exc} ({frame.filename}:{frame.lineno})"
    try:
        out64 = as_float64(out, "kernel output")
    except TypeError as exc:
        return None, str(exc)
    return out64, None


def _score(op: Any, alt: Any, pairs: Sequence[tuple[Case, np.ndarray]], backend: str) -> int | None:
    """Mismatches of the kernel's outputs against ``alt``'s (None: ``alt`` cannot run here)."""
    count = 0
    for case, out in pairs:
        if not op.runs_on(alt, case):
            return None
        try:
            alt_out = np.asarray(op.alt_expected(alt, case, backend), dtype=np.float64).reshape(out.shape)
        except (ValueError, TypeError):
            return None
        count += _count_mismatches(out, alt_out)
    return count


def _diagnose(op: Any, spec: Any, cases: Sequence[Case], outputs: Sequence[np.ndarray | None],
              results: Sequence[CaseResult], fmt: Format, expected: Sequence[np.ndarray], backend: str) -> list[str]:
    """What the kernel does instead: the nearby specs (``op.alternatives``) that reproduce its
    outputs exactly (the simplest ones), else the closest one; plus where the mismatches are.

    Alternatives are first scored on the failing cases (for element-wise ops on a sample of
    at most 4096 elements per case, the mismatching ones first), and the best eight are then
    counted on every case, so what the report says is checked on all the data."""
    total = sum(r.mismatches for r in results)
    notes: list[str] = []
    failing = [r for r in results if not r.passed]
    if failing and 2 * len(failing) <= len(results):
        notes.append("mismatches only in: " + ", ".join(f"{r.name} ({r.mismatches})" for r in failing))
    hist: dict[str, int] = {}
    for r in results:
        for k, v in r.histogram:
            hist[k] = hist.get(k, 0) + v
    if hist.get("not in format"):
        notes.append(f"{hist['not in format']} outputs are not values of {fmt.name}: is the result rounded to "
                     f"{fmt.name} at all?")
    usable = [(c, out) for c, out in zip(cases, outputs, strict=True) if out is not None]
    if not usable or total == 0:
        return notes
    stage1 = []
    for case, out, exp, r in zip(cases, outputs, expected, results, strict=True):
        if out is not None and not r.passed:
            sub = op.subset(spec, case, out, exp, 4096)
            stage1.append(sub if sub is not None else (case, out))
    scored = []
    for alt, label, changes in op.alternatives(spec, cases):
        count = _score(op, alt, stage1, backend)
        if count is not None:
            scored.append((count, changes, label, alt))
    scored.sort(key=lambda t: t[:3])
    final = []
    for _, changes, label, alt in scored[:8]:
        count = _score(op, alt, usable, backend)
        if count is not None:
            final.append((count, changes, label))
    final.sort()
    exact = [f for f in final if f[0] == 0]
    if exact:
        simplest = [f for f in exact if f[1] == exact[0][1]][:3]
        notes.insert(0, " or ".join(f"matches {label}" for _, _, label in simplest))
    elif final and final[0][0] <= total // 2:
        count, _, label = final[0]
        notes.insert(0, f"closest alternative (leaves {count} of the {total} mismatches): {label}")
    return notes


def check_kernel(fn: Callable, spec: Any, *, op: str | None = None, shapes: Sequence[tuple[int, ...]] | None = None,
                 dists: Sequence[str] = DISTRIBUTIONS, seed: int = 0, dtype: Any = None, backend: str = "auto",
                 max_reported: int = 5) -> ConformanceReport:
    """Run ``fn`` on the cases of ``op`` (see the module docstring) and compare its outputs
    bit for bit with the emulator's; returns a :class:`ConformanceReport`.

    ``op`` defaults to what ``spec`` is (a RoundSpec / format: ``"cast"``; a MatmulSpec or
    preset name: ``"matmul"``).  ``shapes``: the shapes of the random cases (cast: array
    shapes; matmul: ``(M, K, N)``); ``dists``: their distributions
    (:data:`precisionlab.analysis.DISTRIBUTIONS`); ``seed``: of the random inputs;
    ``dtype``: the cast input dtype; ``backend``: computes the expected outputs (and the
    matmul diagnosis; the cast diagnosis uses the NumPy reference, which needs no JIT per
    rounding mode).  The kernel's exceptions and unusable
    outputs are reported per case, not raised.
    """
    if not callable(fn):
        raise TypeError(f"fn={fn!r} must be callable (the kernel under test)")
    op = _infer_op(spec) if op is None else op
    if op not in OPS:
        raise ValueError(f"op={op!r} not allowed; choose one of {', '.join(OPS)}")
    for d in dists:
        if d not in DISTRIBUTIONS:
            raise ValueError(f"dists holds {d!r}; allowed: {', '.join(DISTRIBUTIONS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed={seed!r} must be an int")
    impl = OPS[op]
    spec = impl.normalize(spec)
    fmt = impl.output_format(spec)
    cases = impl.cases(spec, shapes, dists, int(seed), dtype)
    results, outputs, expecteds = [], [], []
    for case in cases:
        expected = np.asarray(impl.expected(spec, case, backend))
        expecteds.append(expected.astype(np.float64))
        out, error = _call(fn, case)
        if out is not None and out.shape != expected.shape:
            out, error = None, (f"kernel returned shape {out.shape} for a case whose output has shape "
                                f"{expected.shape}")
        outputs.append(out)
        if error is not None:
            results.append(CaseResult(case.name, case.description, int(expected.size), int(expected.size),
                                      error=error, message=error))
            continue
        cmp = compare(out, expected, fmt, None, max_reported)
        results.append(CaseResult(case.name, case.description, cmp.size, cmp.mismatches, cmp.first, cmp.histogram,
                                  None, cmp.message()))
    failed = any(not r.passed for r in results)
    diagnosis = _diagnose(impl, spec, cases, outputs, results, fmt, expecteds, backend) if failed else []
    return ConformanceReport(op, _kernel_name(fn), impl.describe(spec), fmt.name, int(seed), backend,
                             tuple(results), tuple(diagnosis))
