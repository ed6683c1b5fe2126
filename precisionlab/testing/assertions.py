"""Assertions for arrays of low-precision values: bitwise and within-N-ULP equality.

Both compare arrays of *values* of a format (float16/32/64 or ``ml_dtypes`` arrays, as a
kernel returns them after decoding) and fail with a message built for debugging a
kernel: how many elements differ, the first few with their index, both values in
decimal and as codes of the format, their ULP distance, and a histogram of the ULP
distances.

Rules (the same as :mod:`precisionlab.analysis`):

* NaN equals NaN whatever its sign or payload: the emulator gives one canonical NaN per
  format (DESIGN §5) and float arrays do not keep a low-precision code's payload.  A
  NaN where a number is expected, or the reverse, is a mismatch at any tolerance.
* Bitwise: ``-0`` and ``+0`` differ (where the format has -0); every other pair of
  values is equal exactly when their codes are.
* Within ``max_ulp``: ``|ulp_distance| <= max_ulp`` (``-0`` equals ``+0``), and non-finite
  values must match exactly: an Inf where a finite value is expected is an overflow
  difference, not a rounding one, so no tolerance accepts it.
* A value that is not in the format (say ``0.1`` in a bf16 array) is a mismatch, shown
  as such; shapes must be equal (no broadcasting).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..analysis import as_float64, representable, ulp_distance
from ..formats import Format, get_format
from ..rounding import encode

__all__ = ["assert_bitwise_equal", "assert_ulp_close", "compare", "Comparison", "Mismatch", "hex_code",
           "histogram_label"]


def hex_code(value: float, fmt: Format) -> str:
    """The code of a value of ``fmt`` as ``0x..`` (zero-padded to the format's width)."""
    code = int(np.asarray(encode(np.array([value], dtype=np.float64), fmt, backend="numpy")).reshape(-1)[0])
    return f"0x{code:0{(fmt.bits + 3) // 4}x}"


def _json_float(v: float) -> float | str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


@dataclass(frozen=True)
class Mismatch:
    """One differing element: its index, both values, their codes (``None`` for a value that
    is not in the format) and their ULP distance (``None`` when it is undefined)."""

    index: tuple[int, ...]
    actual: float
    expected: float
    actual_code: str | None
    expected_code: str | None
    ulps: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: floats as numbers (shortest round trip), ``inf``/``-inf``/``nan`` as strings."""
        return {"index": list(self.index), "actual": _json_float(self.actual), "expected": _json_float(self.expected),
                "actual_code": self.actual_code, "expected_code": self.expected_code,
                "ulps": None if self.ulps is None else _json_float(self.ulps)}

    def row(self, fmt_name: str) -> list[str]:
        """The table row of the failure message: index, actual, expected, ulps."""
        def value(v: float, code: str | None) -> str:
            return f"{v!r} ({code})" if code is not None else f"{v!r} (not a {fmt_name} value)"
        ulps = "—" if self.ulps is None else ("inf" if math.isinf(self.ulps) else f"{self.ulps:+.0f}")
        return [str(list(self.index)), value(self.actual, self.actual_code), value(self.expected, self.expected_code),
                ulps]


def histogram_label(ulps: float | None) -> str:
    """The histogram bucket of a ULP distance: ``0 (sign of zero)``, ``1``, ``2``, ``3-4``,
    ``5-8``, ... (powers of two), ``inf (NaN vs number)``, ``not in format``."""
    if ulps is None:
        return "not in format"
    a = abs(ulps)
    if math.isinf(a):
        return "inf (NaN vs number)"
    if a == 0:
        return "0 (sign of zero)"
    if a <= 2:
        return f"{int(a)}"
    hi = 1 << math.ceil(math.log2(a))
    return f"{hi // 2 + 1}-{hi}"


def _label_order(label: str) -> tuple[int, float]:
    if label.startswith("0 "):
        return (0, 0.0)
    if label.startswith("inf"):
        return (1, 0.0)
    if label == "not in format":
        return (2, 0.0)
    return (0, float(label.split("-")[0]))


@dataclass(frozen=True)
class Comparison:
    """The result of :func:`compare`: the counts, the first mismatches and the histogram."""

    fmt: Format
    shape: tuple[int, ...]
    size: int
    mismatches: int
    first: tuple[Mismatch, ...]
    histogram: tuple[tuple[str, int], ...]
    max_ulp: float | None

    @property
    def equal(self) -> bool:
        return self.mismatches == 0

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.fmt.name, "shape": list(self.shape), "size": self.size,
                "mismatches": self.mismatches, "max_ulp": self.max_ulp,
                "first_mismatches": [m.to_dict() for m in self.first],
                "ulp_histogram": [{"ulps": k, "count": v} for k, v in self.histogram]}

    def message(self, what: str = "") -> str:
        """A multi-line description of the mismatches (empty when equal)."""
        if self.equal:
            return ""
        kind = "bitwise equal" if self.max_ulp is None else f"within {self.max_ulp:g} ulp"
        head = f"{what}: " if what else ""
        lines = [f"{head}arrays are not {kind} in {self.fmt.name}: {self.mismatches} of {self.size} elements differ "
                 f"(shape {self.shape})"]
        rows = [["index", "actual", "expected", "ulps"]] + [m.row(self.fmt.name) for m in self.first]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        more = "" if len(self.first) == self.mismatches else f" (first {len(self.first)})"
        lines.append(f"mismatches{more}:")
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines.append("ULP distance histogram: " + ", ".join(f"{k}: {v}" for k, v in self.histogram))
        return "\n".join(lines)


def _check_max_ulp(max_ulp: Any) -> float:
    if isinstance(max_ulp, bool) or not isinstance(max_ulp, (int, float, np.integer, np.floating)):
        raise TypeError(f"max_ulp={max_ulp!r} must be a number of ULPs (int or float)")
    if not max_ulp >= 0 or math.isinf(max_ulp):
        raise ValueError(f"max_ulp={max_ulp!r} not allowed; must be a finite number >= 0")
    return float(max_ulp)


def compare(actual: Any, expected: Any, fmt: str | Format, max_ulp: float | None = None,
            max_reported: int = 10) -> Comparison:
    """Compare two arrays of values of ``fmt`` bitwise (``max_ulp=None``) or within
    ``max_ulp`` ULPs, under the rules of the module docstring; never raises for unequal
    data (only for bad arguments: dtypes, shapes, ``max_ulp``)."""
    fmt = get_format(fmt)
    a = as_float64(actual, "actual")
    e = as_float64(expected, "expected")
    if a.shape != e.shape:
        raise AssertionError(f"shape mismatch: actual has shape {a.shape}, expected has shape {e.shape}")
    shape = a.shape
    a, e = a.reshape(a.shape or (1,)), e.reshape(e.shape or (1,))   # 0-d: report index [0]
    tol = None if max_ulp is None else _check_max_ulp(max_ulp)
    a_ok, e_ok = representable(a, fmt), representable(e, fmt)
    ok = a_ok & e_ok
    dist = np.full(a.shape, np.nan)
    if ok.any():
        dist[ok] = ulp_distance(a[ok], e[ok], fmt)
    a_nan, e_nan = np.isnan(a), np.isnan(e)
    both_nan = a_nan & e_nan
    if tol is None:
        same_bits = a.view(np.uint64) == e.view(np.uint64)
        bad = ~ok | ~(same_bits | both_nan)
    else:
        finite = np.isfinite(a) & np.isfinite(e)
        nonfinite_same = ~finite & ((a == e) | both_nan)
        close = np.zeros(a.shape, dtype=bool)
        close[ok & finite] = np.abs(dist[ok & finite]) <= tol
        bad = ~ok | ~(close | nonfinite_same)
    where = np.argwhere(bad)
    counts: dict[str, int] = {}
    for d in dist[bad].tolist():
        label = histogram_label(None if math.isnan(d) else d)
        counts[label] = counts.get(label, 0) + 1
    first = []
    for idx in where[:max_reported]:
        i = tuple(int(j) for j in idx)
        av, ev = float(a[i]), float(e[i])
        first.append(Mismatch(i, av, ev, hex_code(av, fmt) if a_ok[i] else None,
                              hex_code(ev, fmt) if e_ok[i] else None,
                              None if math.isnan(dist[i]) else float(dist[i])))
    hist = tuple(sorted(counts.items(), key=lambda kv: _label_order(kv[0])))
    return Comparison(fmt, tuple(shape), int(a.size), int(bad.sum()), tuple(first), hist, tol)


def assert_bitwise_equal(actual: Any, expected: Any, fmt: str | Format, max_reported: int = 10) -> None:
    """Assert that ``actual`` and ``expected`` hold the same values of ``fmt`` bit for bit
    (NaN equals NaN; -0 differs from +0); AssertionError with a mismatch report otherwise."""
    result = compare(actual, expected, fmt, None, max_reported)
    if not result.equal:
        raise AssertionError(result.message())


def assert_ulp_close(actual: Any, expected: Any, fmt: str | Format, max_ulp: float, max_reported: int = 10) -> None:
    """Assert that ``actual`` is within ``max_ulp`` ULPs of ``expected`` in ``fmt`` element by
    element (non-finite values must match exactly; NaN equals NaN)."""
    result = compare(actual, expected, fmt, max_ulp, max_reported)
    if not result.equal:
        raise AssertionError(result.message())
