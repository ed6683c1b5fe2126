"""The ``precisionlab`` command (DESIGN §10).

Subcommands so far:

* ``precisionlab formats [NAME ...]`` -- the format catalogue with its derived facts;
* ``precisionlab presets [NAME ...]`` -- the matmul presets with their parameters and sources;
* ``precisionlab round VALUE ... --to FMT`` -- round values given on the command line
  and show the result, its code, its neighbours and the rounding error;
* ``precisionlab error matmul --presets ...`` -- matmul presets x K x distributions
  against the exact product;
* ``precisionlab error train --recipes ...`` -- train one model with several
  mixed-precision recipes and compare them side by side;
* ``precisionlab conformance --golden [DIR]`` -- the golden suite, a table per file;
* ``precisionlab report [--out DIR]`` -- the formats, cast error, matmul error and
  recipes tables in one deterministic report (``precisionlab/report.py``).

Every subcommand is one ``_add_<name>(subparsers)`` function that builds its parser
and sets ``func`` to a ``(args, out) -> int`` handler; :data:`SUBCOMMANDS` lists them.
Handlers produce rows (a list of dicts of exact, machine-readable values) plus a
column list saying how each value reads in a table; :func:`_emit` prints them as a
table, Markdown, CSV or JSON.

Output conventions (also in ``--help``):

* tables and Markdown show numbers for people: integers in full, powers of two as
  ``2^k`` (with the decimal value), other values as their shortest round-trip
  decimal when that is exact, else marked ``≈``;
* CSV and JSON are for machines: values that are float64 numbers (inputs, results,
  neighbours, format facts) are written as the shortest decimal that reads back as
  exactly that float64 (Python ``repr``); ``inf``, ``-inf`` and ``nan`` are strings
  (JSON has no such numbers); errors, which need not be float64 numbers, are strings
  holding their exact decimal value; a missing value is ``null`` (JSON) or empty (CSV).
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np

from . import __version__
from .formats import _ALIASES, Format, formats, get_format
from .rounding import Overflow, Rounding, encode
from .rounding import round as pl_round

__all__ = ["main", "SUBCOMMANDS", "parse_value"]

PROG = "precisionlab"
OUTPUT_FORMATS = ("table", "markdown", "csv", "json")
DASH = "—"

# ---------------------------------------------------------------------------
# number formatting
# ---------------------------------------------------------------------------


def _strip(d: Decimal) -> Decimal:
    """Remove trailing zeros after the decimal point, exactly (no context rounding)."""
    sign, digits, exp = d.as_tuple()
    digits = list(digits)
    while len(digits) > 1 and digits[-1] == 0 and exp < 0:
        digits.pop()
        exp += 1
    return Decimal((sign, tuple(digits), exp))


def _decimal_str(d: Decimal) -> str:
    """Decimal -> exact string, trailing zeros removed, lower-case exponent."""
    if d == 0:
        return "-0" if d.is_signed() else "0"
    return str(_strip(d)).replace("E", "e")


def _dyadic_decimal(fr: Fraction) -> Decimal:
    """The exact decimal value of a dyadic rational (denominator a power of two)."""
    q = fr.denominator.bit_length() - 1
    if fr.denominator != 1 << q:
        raise ValueError(f"{fr} is not dyadic")
    n = abs(fr.numerator) * 5**q
    return Decimal((int(fr.numerator < 0), tuple(int(c) for c in str(n)), -q))


def _significant_digits(d: Decimal) -> int:
    digits = _strip(d).as_tuple().digits
    return len(str(int("".join(map(str, digits))))) if any(digits) else 1


def _odd_times_power(a: float) -> tuple[int, int]:
    """``a = M * 2^k`` with ``M`` odd (``a`` positive, finite)."""
    fr = Fraction(a)
    if fr.denominator == 1:
        n = fr.numerator
        k = (n & -n).bit_length() - 1
        return n >> k, k
    return fr.numerator, -(fr.denominator.bit_length() - 1)


def _approx(a: float) -> str:
    return f"≈{a:.6g}"


def _is_power_of_two(a: float) -> bool:
    return math.isfinite(a) and a != 0 and math.frexp(abs(a))[0] == 0.5


def _short_exact(a: float) -> str | None:
    """Shortest round-trip decimal of ``a`` when it is exactly ``a``'s value, else None."""
    r = repr(a)
    return r if Decimal(r) == Decimal(a) else None


def _exact_or_approx(x: float, max_digits: int = 25) -> str:
    d = Decimal(x)
    return _decimal_str(d) if _significant_digits(d) <= max_digits else _approx(x)


def fmt_number(x: float) -> str:
    """A float64 value for people: exact where short, ``2^k`` for powers of two.

    ``448``, ``0.3125``, ``2^-9 (0.001953125)``, ``2^-1074 (≈4.94066e-324)``,
    ``(2-2^-23)·2^127 ≈3.40282e+38``.
    """
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    sign = "-" if x < 0 else ""
    a = abs(x)
    if a.is_integer() and a < 1e16:
        return sign + str(int(a))
    mant, exp = math.frexp(a)
    short = _short_exact(a)
    if mant == 0.5 and not -4 <= exp - 1 <= 53:
        return f"{sign}2^{exp - 1} ({_exact_or_approx(x)})"
    if short is not None:
        return sign + short
    m, k = _odd_times_power(a)
    n = m.bit_length()
    if n >= 4 and (m + 1) & m == 0:  # m = 2^n - 1: the largest value of a binade, (2 - 2^(1-n)) * 2^(k+n-1)
        return f"{sign}(2-2^{1 - n})·2^{k + n - 1} {_approx(a)}"
    d = Decimal(a)
    if _significant_digits(d) <= 25:
        return sign + _decimal_str(d)
    return f"{sign}{m}·2^{k} {_approx(a)}"


def fmt_exact(x: float, max_digits: int = 80) -> str:
    """The exact decimal value of a float64 (``0.1`` ->
    ``0.1000000000000000055511151231257827021181583404541015625``); beyond
    ``max_digits`` significant digits, ``M·2^k ≈ ...``."""
    x = float(x)
    if not math.isfinite(x) or x == 0:
        return fmt_number(x)
    if x.is_integer() and abs(x) < 1e16:
        return str(int(x))
    short = _short_exact(x)
    if short is not None:
        return short
    d = Decimal(x)
    if _significant_digits(d) <= max_digits:
        return _decimal_str(d)
    if _is_power_of_two(x):
        return fmt_number(x)
    m, k = _odd_times_power(abs(x))
    return f"{'-' if x < 0 else ''}{m}·2^{k} {_approx(abs(x))}"


def fmt_fraction(fr: Fraction | float | None, max_digits: int) -> str:
    """An exact dyadic value: its decimal when it has at most ``max_digits``
    significant digits, else ``≈`` six."""
    if fr is None:
        return DASH
    if isinstance(fr, float):
        return fmt_number(fr)
    if fr == 0:
        return "0"
    d = _dyadic_decimal(fr)
    if _significant_digits(d) <= max_digits:
        return _decimal_str(d)
    return _approx(float(fr))


def _json_float(x: float | None) -> float | str | None:
    """float64 for JSON/CSV: a number (shortest round-trip), or 'inf'/'-inf'/'nan'."""
    if x is None:
        return None
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def _exact_str(fr: Fraction | float | None) -> str | None:
    """Exact decimal string of a dyadic rational (machine output)."""
    if fr is None:
        return None
    if isinstance(fr, float):
        return _json_float(fr) if not math.isfinite(fr) else _decimal_str(Decimal(fr))
    return "0" if fr == 0 else _decimal_str(_dyadic_decimal(fr))


# ---------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------


class Column:
    """One output column: the record key, the table header, how the value reads for people."""

    def __init__(self, key: str, header: str, show: Callable[[Any], str] | None = None, align: str = "left"):
        self.key, self.header, self.align = key, header, align
        self.show = show or (lambda v: DASH if v is None else str(v))


def _csv_cell(v: Any) -> Any:
    """None -> empty, lists joined with ';', booleans as true/false; floats print as repr."""
    if v is None:
        return ""
    if isinstance(v, list):
        return ";".join(map(str, v))
    if isinstance(v, bool):
        return "true" if v else "false"
    return v


def _emit(records: list[dict[str, Any]], columns: Sequence[Column], output: str, out: io.TextIOBase,
          document: dict[str, Any] | None = None, list_key: str = "rows") -> None:
    """Print ``records`` as a table, Markdown, CSV or JSON.

    Keys starting with ``_`` are for tables only (values prepared for people). JSON is
    the records as an array, or ``document`` with the records under ``list_key``.
    """
    machine = [{k: v for k, v in rec.items() if not k.startswith("_")} for rec in records]
    if output == "json":
        records = machine
        payload: Any = records if document is None else {**document, list_key: records}
        out.write(json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
        return
    if output == "csv":
        records = machine
        keys = list(records[0]) if records else [c.key for c in columns]
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(keys)
        for rec in records:
            writer.writerow([_csv_cell(rec[k]) for k in keys])
        return
    from tabulate import tabulate

    rows = [[c.show(rec[c.key]) for c in columns] for rec in records]
    headers = [c.header for c in columns]
    tablefmt = "pipe" if output == "markdown" else "simple"
    if output == "markdown":  # a '|' inside a cell (the header 'overflows at |x|') would end the cell
        rows = [[cell.replace("|", "\\|") for cell in row] for row in rows]
        headers = [h.replace("|", "\\|") for h in headers]
    out.write(tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True,
                       colalign=[c.align for c in columns]) + "\n")


def _yes_no(v: bool) -> str:
    return "yes" if v else "no"


# ---------------------------------------------------------------------------
# precisionlab formats
# ---------------------------------------------------------------------------


def _aliases_of() -> dict[str, list[str]]:
    inv: dict[str, list[str]] = {}
    for alias, name in _ALIASES.items():
        inv.setdefault(name, []).append(alias)
    return inv


def _hex(code: int, fmt: Format) -> str:
    return f"0x{code:0{(fmt.bits + 3) // 4}x}"


def _fields(code: int, fmt: Format) -> str:
    """A code as ``s.eeee.mmm`` bit fields."""
    bits = format(code, f"0{fmt.bits}b")
    parts = []
    if fmt.signed:
        parts.append(bits[0])
        bits = bits[1:]
    parts.append(bits[:fmt.exponent_bits])
    if fmt.mantissa_bits:
        parts.append(bits[fmt.exponent_bits:])
    return ".".join(parts)


def _nan_text(fmt: Format) -> str:
    if fmt.nan == "ieee":
        return "IEEE"
    if fmt.nan == "none":
        return "none"
    if fmt.nan == "fnuz":
        return f"{_hex(fmt.nan_code, fmt)} only (the -0 code)"
    pattern = ("S." if fmt.signed else "") + "1" * fmt.exponent_bits + ("." + "1" * fmt.mantissa_bits
                                                                          if fmt.mantissa_bits else "")
    codes = [fmt.nan_code] + ([fmt.nan_code | fmt.sign_mask] if fmt.signed else [])
    return f"{pattern} only ({', '.join(_hex(c, fmt) for c in codes)})"


def _notes(fmt: Format) -> str:
    notes = []
    if not fmt.signed:
        notes.append("unsigned")
    if not fmt.has_zero:
        notes.append("no zero")
    elif fmt.signed and fmt.nan == "fnuz":
        notes.append("no -0")
    return ", ".join(notes)


def format_record(fmt: Format, aliases: Sequence[str] = ()) -> dict[str, Any]:
    """The machine-readable facts of one format (the row of ``precisionlab formats``)."""
    return {
        "name": fmt.name,
        "aliases": list(aliases),
        "exponent_bits": fmt.exponent_bits,
        "mantissa_bits": fmt.mantissa_bits,
        "bias": fmt.bias,
        "bits": fmt.bits,
        "signed": fmt.signed,
        "max": _json_float(fmt.max),
        "smallest_normal": _json_float(fmt.smallest_normal),
        "smallest_subnormal": _json_float(fmt.smallest_subnormal) if fmt.has_subnormals else None,
        "eps": _json_float(fmt.eps),
        "emax": fmt.emax,
        "emin": fmt.emin,
        "decimal_digits": fmt.decimal_digits,
        "dynamic_range_decades": fmt.dynamic_range,
        "has_inf": fmt.has_inf,
        "nan": fmt.nan,
        "nan_code": _hex(fmt.nan_code, fmt) if fmt.nan_code is not None else None,
        "has_subnormals": fmt.has_subnormals,
        "has_zero": fmt.has_zero,
        "ml_dtype": fmt.ml_dtypes_name,
    }


_FORMAT_COLUMNS = (
    Column("name", "name"),
    Column("aliases", "aliases", lambda v: ", ".join(v) if v else DASH),
    Column("exponent_bits", "e", align="right"),
    Column("mantissa_bits", "m", align="right"),
    Column("bias", "bias", align="right"),
    Column("bits", "bits", align="right"),
    Column("max", "max finite", lambda v: fmt_number(float(v)), "right"),
    Column("smallest_normal", "min normal", lambda v: fmt_number(float(v)), "right"),
    Column("smallest_subnormal", "min subnormal", lambda v: DASH if v is None else fmt_number(float(v)), "right"),
    Column("eps", "eps", lambda v: fmt_number(float(v)), "right"),
    Column("decimal_digits", "digits", lambda v: f"{v:.2f}", "right"),
    Column("dynamic_range_decades", "range (decades)", lambda v: f"{v:.2f}", "right"),
    Column("has_inf", "Inf", _yes_no),
    Column("_nan_text", "NaN"),
    Column("has_subnormals", "subnormals", _yes_no),
    Column("ml_dtype", "ml_dtypes", lambda v: v or DASH),
    Column("_notes", "notes"),
)


def _run_formats(args: argparse.Namespace, out: io.TextIOBase) -> int:
    aliases = _aliases_of()
    fmts = [get_format(n) for n in args.names] if args.names else list(formats.values())
    records = [{**format_record(f, aliases.get(f.name, [])), "_nan_text": _nan_text(f), "_notes": _notes(f)}
               for f in fmts]
    _emit(records, _FORMAT_COLUMNS, args.output, out)
    return 0


def _add_formats(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "formats", parents=[_output_parent()], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="the format catalogue with its derived facts",
        description="Show floating-point formats: exponent and mantissa bits, bias, storage bits, the largest\n"
                    "finite value, the smallest normal and subnormal values, eps (2^-m), decimal digits\n"
                    "((m+1)·log10 2), dynamic range (decades from the smallest positive to the largest\n"
                    "finite value), whether the format has Inf, how NaN is encoded, whether it has\n"
                    "subnormals, and the equivalent ml_dtypes/NumPy dtype.",
        epilog="NAME is a catalogue name, an alias (float8_e4m3fn, half, ...) or binary{K}p{P}[u][f] for\n"
               "any IEEE P3109 format. Without NAME every catalogue format is listed.\n\n"
               "examples:\n"
               "  precisionlab formats\n"
               "  precisionlab formats e4m3 e5m2 float8_e4m3fnuz binary8p3\n"
               "  precisionlab formats --format json fp16\n\n" + _OUTPUT_EPILOG)
    p.add_argument("names", nargs="*", metavar="NAME", help="formats to show (default: the whole catalogue)")
    p.set_defaults(func=_run_formats)


# ---------------------------------------------------------------------------
# precisionlab round
# ---------------------------------------------------------------------------

_POWER = re.compile(r"^(?:(?P<coef>[0-9.]+(?:e[+-]?\d+)?)\s*[*·x]\s*)?2\s*(?:\^|\*\*)\s*(?P<k>[+-]?\d+)$")


def parse_value(text: str) -> float:
    """A command-line value as a float64: a decimal (``0.1``, ``1e-3``), ``inf``,
    ``nan``, a hex float (``0x1.8p3``) or a power of two (``2^-9``, ``1.5*2^-9``,
    ``2**10``), with an optional sign.  Decimals and scaled powers are rounded to
    the nearest float64 (as ``float()``), beyond the float64 range to ±inf."""
    s = text.strip().lower()
    body = s.lstrip("+-")
    negative = s.startswith("-")
    if len(s) - len(body) > 1 or not body:
        raise ValueError(f"not a number: {text!r}")
    if body.startswith("0x"):
        return float.fromhex(s)
    m = _POWER.match(body)
    if m:
        coef = Fraction(m.group("coef")) if m.group("coef") else Fraction(1)
        k = int(m.group("k"))
        if abs(k) > 100_000:
            value = math.inf if k > 0 else 0.0
        else:
            exact = coef * Fraction(2) ** k
            try:
                value = float(exact)
            except OverflowError:
                value = math.inf
        return -value if negative else value
    if body in ("inf", "infinity", "nan"):
        return float(s)
    if not re.fullmatch(r"[0-9._]+(e[+-]?[0-9_]+)?", body) or not any(c.isdigit() for c in body):
        raise ValueError(f"not a number: {text!r}")
    return float(s)


def _value_arg(text: str) -> tuple[str, float]:
    try:
        return text, parse_value(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: use a decimal (0.1, -1e-3), inf, nan, a hex float (0x1.8p3) "
            f"or a power of two (2^-9, 1.5*2^-9)") from None


@functools.lru_cache(maxsize=64)
def _max_magnitude_code(fmt: Format) -> int:
    """Magnitude code of the largest non-NaN value (+Inf where the format has it)."""
    if fmt.has_inf:
        return fmt.inf_code
    return int(np.asarray(encode(np.array([fmt.max], dtype=np.float64), fmt)).reshape(-1)[0])


def neighbour_codes(code: int, fmt: Format) -> tuple[int | None, int | None]:
    """Codes of the next smaller and next larger values of ``fmt`` (``None`` past the
    ends, and for NaN).  +0 and -0 both neighbour ±(smallest positive); -smallest
    steps up to -0 (+0 where the format has no -0); ±max steps out to ±Inf when the
    format has it."""
    if fmt.is_nan_code(code):
        return None, None
    top = _max_magnitude_code(fmt)
    negative = bool(code & fmt.sign_mask)
    mag = code & ~fmt.sign_mask
    is_zero = fmt.has_zero and fmt.decode_exact(code) == 0
    if is_zero:
        below = (fmt.sign_mask | 1) if fmt.signed else None
        return below, (1 if top >= 1 else None)
    if not negative:
        return (mag - 1 if mag > 0 else None), (mag + 1 if mag < top else None)
    down = (fmt.sign_mask | (mag + 1)) if mag < top else None
    up = fmt.sign_mask | (mag - 1)
    if fmt.is_nan_code(up):  # fnuz: the -0 code is NaN; -smallest steps up to +0
        up = 0
    return down, up


def ulp(x: float, fmt: Format) -> Fraction:
    """The spacing of ``fmt``'s grid in the binade of ``x``:
    ``2^(max(floor(log2|x|), emin) - m)``, with the binade capped at ``emax``."""
    a = abs(x)
    e = math.frexp(a)[1] - 1 if a != 0 and math.isfinite(a) else fmt.emin
    e = min(max(e, fmt.emin), fmt.emax)
    return Fraction(2) ** (e - fmt.mantissa_bits)


def _status(x: float, y: float, err_ulps: Fraction | float | None, fmt: Format) -> str:
    """What happened: exact, inexact, tie, underflow, saturation, overflow, NaN."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if math.isinf(y) else "inf → nan" if math.isnan(y) else "inf → max"
    if math.isnan(y):
        return "overflow → nan" if abs(x) > fmt.max else "invalid → nan"
    if math.isinf(y):
        return "overflow → inf"
    if x == y:
        return "exact"
    tie = isinstance(err_ulps, Fraction) and abs(err_ulps) == Fraction(1, 2)
    if abs(x) > fmt.max and abs(y) == fmt.max:
        return "tie → max" if tie else "saturated"
    if y == 0:
        return "underflow → 0 (tie)" if tie else "underflow → 0"
    return "inexact (tie)" if tie else "inexact"


def round_records(values: Sequence[tuple[str, float]], fmt: Format, **kwargs: Any) -> list[dict[str, Any]]:
    """One record per value: input, result, code, neighbours, error (exact) and error in ULPs.

    All values are rounded in one call, so with a stochastic mode value ``i`` uses the
    random word of counter ``i`` (DESIGN §5).
    """
    x = np.array([v for _, v in values], dtype=np.float64)
    y = np.asarray(pl_round(x, fmt, **kwargs), dtype=np.float64).reshape(-1)
    codes = np.asarray(encode(x, fmt, **kwargs)).reshape(-1)
    records = []
    for (text, xi), yi, ci in zip(values, y.tolist(), codes.tolist(), strict=True):
        down, up = neighbour_codes(int(ci), fmt)
        nd = None if down is None else float(fmt.decode_exact(down))
        nu = None if up is None else float(fmt.decode_exact(up))
        if math.isfinite(xi) and math.isfinite(yi):
            err: Fraction | float | None = Fraction(yi) - Fraction(xi)
            err_ulps: Fraction | float | None = err / ulp(xi, fmt)
        elif math.isfinite(xi) and math.isinf(yi):
            err = err_ulps = yi
        else:
            err = err_ulps = None
        records.append({
            "value": text,
            "input": _json_float(xi),
            "input_exact": fmt_exact(xi, max_digits=10**6) if math.isfinite(xi) else _json_float(xi),
            "result": _json_float(yi),
            "code": int(ci),
            "code_hex": _hex(int(ci), fmt),
            "fields": _fields(int(ci), fmt),
            "next_down": _json_float(nd),
            "next_up": _json_float(nu),
            "error": _exact_str(err),
            "error_ulps": _exact_str(err_ulps),
            "status": _status(xi, yi, err_ulps, fmt),
            "_err": err,
            "_err_ulps": err_ulps,
        })
    return records


def _show_float(v: Any) -> str:
    return DASH if v is None else fmt_number(float(v))


def _round_columns(fmt: Format) -> list[Column]:
    cols = [
        Column("value", "value"),
        Column("input", "input (exact)", lambda v: fmt_exact(v) if isinstance(v, float) else v, "right"),
        Column("result", f"{fmt.name}", _show_float, "right"),
        Column("code_hex", "code", align="right"),
    ]
    if fmt.bits <= 16:
        cols.append(Column("fields", "bits", align="right"))
    cols += [
        Column("next_down", "next down", _show_float, "right"),
        Column("next_up", "next up", _show_float, "right"),
        Column("_err", "error", lambda v: fmt_fraction(v, 20), "right"),
        Column("_err_ulps", "error (ulp)", lambda v: fmt_fraction(v, 12), "right"),
        Column("status", "status"),
    ]
    return cols


def _run_round(args: argparse.Namespace, out: io.TextIOBase) -> int:
    fmt = get_format(args.to)
    kwargs = dict(rounding=args.rounding, overflow=args.overflow, subnormals=not args.no_subnormals,
                  seed=args.seed, sr_bits=args.sr_bits)
    records = round_records(args.values, fmt, **kwargs)
    document = {"format": fmt.name, "rounding": Rounding.parse(args.rounding).value,
                "overflow": Overflow.parse(args.overflow).value, "subnormals": not args.no_subnormals,
                "seed": args.seed, "sr_bits": args.sr_bits}
    _emit(records, _round_columns(fmt), args.output, out, document=document, list_key="results")
    return 0


def _add_round(sub: argparse._SubParsersAction) -> None:
    modes = ", ".join(m.value for m in Rounding)
    p = sub.add_parser(
        "round", parents=[_output_parent()], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="round values to a format; show codes, neighbours and errors",
        description="Round each VALUE (read as a float64) to the format FMT and show: the input's exact\n"
                    "decimal value, the result, its code in hex (and bit fields for formats of up to 16\n"
                    "bits), the result's two neighbours in the format (next down / next up, '—' past\n"
                    "the ends), the error (result - input, exact) and the error in ULPs, where\n"
                    "ulp(x) = 2^(max(floor(log2|x|), emin) - m) is the format's spacing at the input.",
        epilog="VALUE: a decimal (0.1, 1e-3), inf, nan, a hex float (0x1.8p3) or a power of two\n"
               "(2^-9, 1.5*2^-9, 2**10). Negative values work as they are (-1e-3, -inf, -2^-9);\n"
               "'--' before the values also stops option parsing.\n\n"
               "With a stochastic mode all values are rounded in one call: value i (from 0) uses\n"
               "the random word of counter i, so a given --seed always gives the same results.\n\n"
               "examples:\n"
               "  precisionlab round 470 464 0.1 --to e4m3\n"
               "  precisionlab round 470 --to e4m3 --overflow saturate\n"
               "  precisionlab round 0.3 0.3 0.3 --to bf16 --rounding sr --seed 42 --sr-bits 8\n"
               "  precisionlab round 2^-127 1e-40 --to e8m0\n\n" + _OUTPUT_EPILOG)
    p.add_argument("values", nargs="+", type=_value_arg, metavar="VALUE", help="values to round")
    p.add_argument("--to", required=True, metavar="FMT",
                   help="target format: a catalogue name, an alias or binary{K}p{P}[u][f] (see 'precisionlab formats')")
    p.add_argument("--rounding", default="rne", metavar="M",
                   help=f"rounding mode: {modes} or a long alias such as nearest_even, toward_zero, "
                        "stochastic (default: rne)")
    p.add_argument("--overflow", default="default", metavar="P",
                   help="overflow policy: " + ", ".join(o.value for o in Overflow) + " (default: default, "
                        "which follows IEEE 754 and gives NaN where the format has no Inf)")
    p.add_argument("--no-subnormals", action="store_true",
                   help="flush results below the smallest normal to signed zero (FTZ)")
    p.add_argument("--seed", type=int, default=None, metavar="S",
                   help="seed of the random bits; required by the stochastic modes sr and sr_equal")
    p.add_argument("--sr-bits", type=int, default=None, metavar="N",
                   help="number of random bits for rounding=sr, 1..64 (default: 64)")
    p.set_defaults(func=_run_round)
    # Let '-inf', '-2^-9', '-1e-3', '-0x1p3' be values rather than unknown options.
    p._negative_number_matcher = re.compile(r"^-(?:\d|\.\d|inf|nan)", re.IGNORECASE)


# ---------------------------------------------------------------------------
# precisionlab error train (training recipes side by side; registered in ERROR_SUBCOMMANDS)
# ---------------------------------------------------------------------------


def _show_fraction(v: Any) -> str:
    return DASH if v is None else ("0" if v == 0 else f"{float(v):.3g}")


def _show_stat(v: Any) -> str:
    if v is None:
        return DASH
    v = float(v)
    return "nan" if math.isnan(v) else ("inf" if math.isinf(v) else f"{v:.4g}")


_TRAIN_COLUMNS = (
    Column("recipe", "recipe"),
    Column("final_loss", "final loss", _show_stat, "right"),
    Column("test_accuracy", "test accuracy", _show_stat, "right"),
    Column("skipped_steps", "skipped", align="right"),
    Column("underflow_fraction", "grads flushed to 0", _show_fraction, "right"),
    Column("overflowed_gradients", "grads overflowed", align="right"),
    Column("divergence", "divergence vs fp32", _show_fraction, "right"),
    Column("seconds", "time (s)", lambda v: f"{v:.2f}", "right"),
)


def _train_progress(stream: Any) -> Callable[[str, int, int, Any], None]:
    """A progress bar on ``stream``: redrawn in place on a terminal, one line per recipe otherwise."""
    tty = hasattr(stream, "isatty") and stream.isatty()

    def report(recipe: str, i: int, n: int, log: Any) -> None:
        if tty:
            filled = int(24 * i / n)
            stream.write(f"\r{recipe:>20} [{'#' * filled}{'.' * (24 - filled)}] step {i}/{n} loss {log.loss:.4g}")
            if i == n:
                stream.write("\n")
        elif i == n:
            stream.write(f"{recipe}: {n} steps, final loss {log.loss:.4g}\n")
        stream.flush()
    return report


def train_record(r: Any, reference: Any) -> dict[str, Any]:
    """One row of the recipes-side-by-side table (a TrainResult against the fp32 run)."""
    return {"recipe": r.recipe, "final_loss": _json_float(r.final_loss), "test_loss": _json_float(r.test_loss),
            "test_accuracy": _json_float(r.test_accuracy), "skipped_steps": r.skipped_steps,
            "underflow_fraction": _json_float(r.underflow_fraction), "overflowed_gradients": r.overflow_count,
            "divergence": _json_float(r.divergence(reference)) if reference is not None else None,
            "seconds": round(r.seconds, 3)}


def _run_error_train(args: argparse.Namespace, out: io.TextIOBase) -> int:
    import importlib.util

    from .reference.trainer import compare_recipes, plot_losses

    if args.plot and importlib.util.find_spec("matplotlib") is None:
        sys.stderr.write(f"{PROG}: error: --plot needs matplotlib, which is not installed "
                         "(pip install 'precisionlab[plot]')\n")
        return 2
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    task_args = {"n_samples": args.samples} if args.samples is not None else None
    results, reference = compare_recipes(
        names, model=args.model, task=args.task, steps=args.steps, optimizer=args.optimizer, lr=args.lr,
        batch_size=args.batch_size, hidden=args.hidden, seed=args.seed, task_args=task_args,
        progress=None if args.no_progress else _train_progress(sys.stderr))
    records = [train_record(r, reference) for r in results]
    document = {"model": args.model, "task": args.task, "steps": args.steps, "optimizer": args.optimizer,
                "lr": args.lr, "batch_size": args.batch_size, "hidden": args.hidden, "seed": args.seed,
                "reference": "fp32",
                "curves": {r.recipe: {"loss": [_json_float(v) for v in r.losses.tolist()],
                                      "scale": r.scales.tolist(), "skipped": r.skipped.tolist()} for r in results}}
    _emit(records, _TRAIN_COLUMNS, args.output, out, document=document, list_key="recipes")
    if args.plot:
        plot_losses(results, args.plot, title=f"{args.model} on {args.task or 'its default task'}, {args.steps} steps")
    return 0


def _add_error_train(group: argparse._SubParsersAction) -> None:
    from .reference.data import TASKS
    from .reference.recipes import recipes
    from .reference.trainer import MODEL_TASKS

    p = group.add_parser(
        "train", parents=[_output_parent()], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="train one model with several mixed-precision recipes, side by side",
        description="Train the same model (same initial weights, same batches) with each recipe of the NumPy\n"
                    "reference trainer and compare: the final training loss, the test accuracy, how many\n"
                    "steps the loss scaler skipped, the fraction of gradient values flushed to zero when\n"
                    "rounded to a narrower format, how many overflowed, the divergence from the fp32 run\n"
                    "(max over steps of |loss - loss_fp32| / loss_fp32; fp32 is run as the reference when\n"
                    "it is not listed) and the time. Progress goes to stderr.",
        epilog="recipes: " + ", ".join(recipes) + "\n\n"
               "examples:\n"
               "  precisionlab error train --recipes fp32,pure_fp16,torch_amp_fp16 --steps 50\n"
               "  precisionlab error train --recipes fp32,fp8_delayed,mxfp8 --model transformer --steps 20\n"
               "  precisionlab error train --recipes torch_amp_bf16 --task digits --plot losses.png\n\n"
               + _OUTPUT_EPILOG)
    p.add_argument("--recipes", default="fp32,pure_fp16,torch_amp_fp16,torch_amp_bf16", metavar="LIST",
                   help="comma-separated recipe names (default: fp32,pure_fp16,torch_amp_fp16,torch_amp_bf16)")
    p.add_argument("--model", choices=list(MODEL_TASKS), default="mlp",
                   help="mlp (one hidden layer) or transformer (one block); default mlp")
    p.add_argument("--steps", type=int, default=50, metavar="N", help="training steps (default 50)")
    p.add_argument("--task", choices=list(TASKS), default=None,
                   help="data set (default: blobs for the MLP, sequence for the transformer)")
    p.add_argument("--samples", type=int, default=None, metavar="N",
                   help="samples of a synthetic task, train and test together (default: the task's)")
    p.add_argument("--hidden", type=int, default=32, metavar="H",
                   help="MLP hidden units / transformer d_model (default 32)")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="sgd", help="optimizer (default sgd)")
    p.add_argument("--lr", type=float, default=0.1, metavar="LR", help="learning rate (default 0.1)")
    p.add_argument("--batch-size", type=int, default=None, metavar="B", help="minibatch size (default: full batch)")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the data, the initial weights and the batch order (default 0)")
    p.add_argument("--plot", default=None, metavar="FILE", help="draw the loss curves into FILE (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=_run_error_train)


# ---------------------------------------------------------------------------
# precisionlab error ... (error-analysis sweeps; `error cast` here, `error matmul` and
# `error train` join ERROR_SUBCOMMANDS with the same plumbing)
# ---------------------------------------------------------------------------


def _list_arg(parse: Callable[[str], Any], what: str) -> Callable[[str], list[Any]]:
    """An argparse type for comma-separated lists whose items ``parse`` validates; a bad
    item becomes argparse's one-line error naming it."""
    def convert(text: str) -> list[Any]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"empty list of {what}")
        try:
            return [parse(t) for t in items]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(" ".join(str(exc).split())) from None
    return convert


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: give a positive integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"invalid count {n}: must be >= 1")
    return n


def _distribution(text: str) -> str:
    from .analysis import DISTRIBUTIONS

    key = text.lower()
    if key not in DISTRIBUTIONS:
        raise ValueError(f"dist={text!r} is not a distribution; allowed: {', '.join(DISTRIBUTIONS)}")
    return key


def _sweep_parent() -> argparse.ArgumentParser:
    """Options every error-analysis sweep shares: input distributions, sample size, seed, plot."""
    from .analysis import DISTRIBUTIONS

    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--dist", type=_list_arg(_distribution, "distributions"), default=["normal"],
                        metavar="D[,D...]", help="input distributions: " + ", ".join(DISTRIBUTIONS) +
                        " (default: normal); loguniform spans the whole range of each format, with underflow "
                        "and overflow")
    parent.add_argument("--n", type=_positive_int, default=100_000, metavar="N",
                        help="inputs per distribution (default: 100000)")
    parent.add_argument("--seed", type=int, default=0, metavar="S",
                        help="seed of the inputs and of stochastic rounding (default: 0)")
    parent.add_argument("--plot", default=None, metavar="FILE",
                        help="also draw the results into FILE (PNG, SVG, PDF; needs matplotlib, the 'plot' extra)")
    return parent


def _need_matplotlib(path: str | None) -> Any:
    """pyplot (Agg backend) when ``--plot`` is given; a one-line error when matplotlib is missing."""
    if path is None:
        return None
    try:
        import matplotlib
    except ImportError:
        raise ValueError(f"--plot {path}: matplotlib is not installed; install it with "
                         "pip install 'precisionlab[plot]' (or leave out --plot)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _sweep(cells: Sequence[Any], compute: Callable[[Any], dict[str, Any]], label: Callable[[Any], str],
           command: str) -> list[dict[str, Any]]:
    """Compute one record per cell; progress on stderr when it is a terminal."""
    records = []
    show = sys.stderr.isatty()
    for i, cell in enumerate(cells, 1):
        if show:
            sys.stderr.write(f"\r{PROG} {command}: {i}/{len(cells)} {label(cell)}\033[K")
            sys.stderr.flush()
        records.append(compute(cell))
    if show:
        sys.stderr.write("\r\033[K")
    return records


def _show_sci(v: Any) -> str:
    if v is None:
        return DASH
    if isinstance(v, str):
        return v
    return "0" if v == 0 else f"{v:.3g}"


def _show_threshold(kind: str) -> Callable[[Any], str]:
    def show(rec: dict[str, Any] | None) -> str:
        if rec is None:
            return "never" if kind == "overflow" else DASH
        value = rec["value"]
        if value == "inf":
            return "never"
        op = (">=" if rec["inclusive"] else ">") if kind == "overflow" else ("<=" if rec["inclusive"] else "<")
        return f"{op} {fmt_number(float(value))}"
    return show


def _threshold_record(t: Any) -> dict[str, Any] | None:
    return None if t is None else {"value": _json_float(t.value), "inclusive": t.inclusive}


def cast_error_record(fmt: Format, rounding: Rounding, dist: str, n: int, seed: int, overflow: str = "default",
                      subnormals: bool = True, backend: str = "auto") -> dict[str, Any]:
    """One row of ``precisionlab error cast`` (also for ``precisionlab report``)."""
    from .analysis import cast_error, input_dtype, sample

    dtype = input_dtype(fmt)
    x = sample(dist, n, fmt, seed, dtype)
    stats = cast_error(x, fmt, rounding, overflow, subnormals, seed=seed if rounding.stochastic else None,
                       backend=backend)
    return {
        "format": fmt.name, "rounding": rounding.value, "dist": dist, "n": n, "input": dtype.name,
        "max_rel_error": _json_float(stats.relative.max), "mean_rel_error": _json_float(stats.relative.mean),
        "max_ulp_error": _json_float(stats.ulps.max), "mean_ulp_error": _json_float(stats.ulps.mean),
        "max_bits_lost": _json_float(stats.bits_lost.max), "mean_bits_lost": _json_float(stats.bits_lost.mean),
        "overflow_threshold": _threshold_record(stats.overflow_threshold),
        "underflow_threshold": _threshold_record(stats.underflow_threshold),
        "overflow_fraction": stats.overflow_fraction, "underflow_fraction": stats.underflow_fraction,
    }


_CAST_ERROR_COLUMNS = (
    Column("format", "format"),
    Column("rounding", "rounding"),
    Column("dist", "dist"),
    Column("max_rel_error", "max rel err", _show_sci, "right"),
    Column("mean_rel_error", "mean rel err", _show_sci, "right"),
    Column("max_ulp_error", "max ulp", _show_sci, "right"),
    Column("mean_ulp_error", "mean ulp", _show_sci, "right"),
    Column("mean_bits_lost", "bits lost (mean)", _show_sci, "right"),
    Column("overflow_threshold", "overflows at |x|", _show_threshold("overflow"), "right"),
    Column("underflow_threshold", "underflows at |x|", _show_threshold("underflow"), "right"),
    Column("overflow_fraction", "overflowed", lambda v: f"{100 * v:.3g}%", "right"),
    Column("underflow_fraction", "underflowed", lambda v: f"{100 * v:.3g}%", "right"),
)


def _plot_cast_error(plt: Any, path: str, records: list[dict[str, Any]]) -> None:
    labels = [f"{r['format']} {r['rounding']}" + (f" {r['dist']}" if len({x['dist'] for x in records}) > 1 else "")
              for r in records]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(records) + 2), 4.5))
    pos = np.arange(len(records))
    for shift, key, name in ((-0.2, "max_rel_error", "max"), (0.2, "mean_rel_error", "mean")):
        vals = [r[key] if isinstance(r[key], float) and r[key] > 0 else np.nan for r in records]
        ax.bar(pos + shift, vals, width=0.4, label=f"{name} relative error")
    ax.set_yscale("log")
    ax.set_xticks(pos, labels, rotation=45, ha="right")
    ax.set_ylabel("relative error (elements that did not overflow)")
    ax.set_title("precisionlab error cast")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _run_error_cast(args: argparse.Namespace, out: io.TextIOBase) -> int:
    plt = _need_matplotlib(args.plot)
    overflow = Overflow.parse(args.overflow)
    cells = [(fmt, rnd, dist) for fmt in args.formats for rnd in args.rounding for dist in args.dist]
    records = _sweep(cells, lambda c: cast_error_record(c[0], c[1], c[2], args.n, args.seed, overflow.value,
                                                        not args.no_subnormals),
                     lambda c: f"{c[0].name} {c[1].value} {c[2]}", "error cast")
    if plt is not None:
        _plot_cast_error(plt, args.plot, records)
    document = {"command": "error cast", "n": args.n, "seed": args.seed, "overflow": overflow.value,
                "subnormals": not args.no_subnormals}
    _emit(records, _CAST_ERROR_COLUMNS, args.output, out, document=document, list_key="rows")
    return 0


def _add_error_cast(sub: argparse._SubParsersAction) -> None:
    modes = ", ".join(m.value for m in Rounding)
    p = sub.add_parser(
        "cast", parents=[_output_parent(), _sweep_parent()], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="error of rounding random inputs to formats: relative error, ULPs, bits lost, range",
        description="For every format x rounding mode x distribution: round N random inputs (float32, float64\n"
                    "for formats float32 cannot feed) and measure the error against the inputs themselves:\n"
                    "max/mean relative error |y-x|/|x|, max/mean |error| in ULPs of the format at x\n"
                    "(ulp(x) = 2^(max(min(floor(log2|x|), emax), emin) - m)), mean bits lost\n"
                    "(m+1 - clip(-log2(relative error), 0, m+1): 0 for a correctly rounded normal result),\n"
                    "the overflow and underflow thresholds of the mode (for positive inputs; where |x|\n"
                    "overflows -- rounds past max with an unbounded exponent -- and where a non-zero x gives\n"
                    "0), and the fractions of inputs that overflowed and underflowed (to zero). The error\n"
                    "statistics cover the inputs that did not overflow.",
        epilog="examples:\n"
               "  precisionlab error cast\n"
               "  precisionlab error cast --formats bf16,fp16,e4m3 --rounding rne,rtz,sr --dist normal,loguniform\n"
               "  precisionlab error cast --formats e4m3 --overflow saturate --format json\n"
               "  precisionlab error cast --formats fp16,bf16 --plot cast-error.png\n\n" + _OUTPUT_EPILOG)
    p.add_argument("--formats", type=_list_arg(get_format, "formats"), default=[get_format(n) for n in
                   ("bf16", "fp16", "e4m3", "e5m2")], metavar="F[,F...]",
                   help="target formats: catalogue names, aliases or binary{K}p{P}[u][f] (default: bf16,fp16,"
                        "e4m3,e5m2)")
    p.add_argument("--rounding", type=_list_arg(Rounding.parse, "rounding modes"), default=[Rounding.RNE],
                   metavar="M[,M...]", help=f"rounding modes: {modes} or long aliases (default: rne)")
    p.add_argument("--overflow", default="default", type=_checked(Overflow.parse), metavar="P",
                   help="overflow policy: " + ", ".join(o.value for o in Overflow) + " (default: default)")
    p.add_argument("--no-subnormals", action="store_true",
                   help="flush results below the smallest normal to signed zero (FTZ)")
    p.set_defaults(func=_run_error_cast)


def _checked(parse: Callable[[str], Any]) -> Callable[[str], str]:
    """An argparse type that validates with ``parse`` but keeps the text."""
    def convert(text: str) -> str:
        try:
            parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(" ".join(str(exc).split())) from None
        return text
    return convert


# ---------------------------------------------------------------------------
# precisionlab error matmul (registered in ERROR_SUBCOMMANDS)
# ---------------------------------------------------------------------------

#: Input distributions of ``error matmul``: standard normal; uniform on [0, 1) (positive,
#: so the sum grows like K and the accumulator's spacing with it); cancelling (half the
#: K-elements are pairs a_k = a_l, b_k = -b_l of size ~16 whose products cancel exactly,
#: the other half small terms of size ~1/16, so the exact result is the small terms' sum).
MATMUL_DISTRIBUTIONS = ("normal", "uniform", "cancelling")


def parse_matmul_spec(text: str) -> Any:
    """``PRESET[+MOD...]`` -> a MatmulSpec named ``text``.  MOD is ``promoteN``
    (``promote_every=N``: partial sums promoted to fp32 every N K-elements, as DeepSeek-V3
    does on H100 FP8) or ``FIELD=VALUE`` for any MatmulSpec field (``none``, ``true``,
    ``false`` and integers are read as such), e.g. ``h100_e4m3+promote128`` or
    ``exact+accumulator=fp64+output_format=fp64``."""
    import dataclasses

    from .presets import get_preset

    base, *mods = [t.strip() for t in text.split("+")]
    spec = get_preset(base)
    names = {f.name for f in dataclasses.fields(spec)} - {"name", "source"}
    changes: dict[str, Any] = {}
    for mod in mods:
        m = re.fullmatch(r"promote(\d+)", mod.lower())
        if m:
            changes["promote_every"] = int(m.group(1))
            continue
        key, sep, value = mod.partition("=")
        key = key.strip().lower()
        if not sep or key not in names:
            raise ValueError(f"preset modifier {mod!r} in {text!r} is not promoteN or FIELD=VALUE with a "
                             f"MatmulSpec field; fields: {', '.join(sorted(names))}")
        v = value.strip()
        changes[key] = (None if v.lower() == "none" else v.lower() == "true" if v.lower() in ("true", "false")
                        else int(v) if re.fullmatch(r"-?\d+", v) else v)
    try:
        return dataclasses.replace(spec, **changes, name=text.strip())
    except (TypeError, ValueError) as exc:
        raise ValueError(f"preset {text!r}: {' '.join(str(exc).split())}") from None


def matmul_inputs(dist: str, m: int, k: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float64 A (m x k) and B (k x n) drawn from ``dist`` (:data:`MATMUL_DISTRIBUTIONS`),
    deterministic in its arguments.  In ``cancelling`` the pairs share A's column and
    negate B's row, so their products cancel exactly after any sign-symmetric rounding."""
    import zlib

    if dist not in MATMUL_DISTRIBUTIONS:
        raise ValueError(f"dist={dist!r} is not a matmul distribution; allowed: {', '.join(MATMUL_DISTRIBUTIONS)}")
    rng = np.random.default_rng([int(seed) & (2**63 - 1), zlib.crc32(dist.encode()), k])
    if dist == "normal":
        return rng.standard_normal((m, k)), rng.standard_normal((k, n))
    if dist == "uniform":
        return rng.uniform(0.0, 1.0, (m, k)), rng.uniform(0.0, 1.0, (k, n))
    a, b = rng.standard_normal((m, k)) / 16, rng.standard_normal((k, n)) / 16
    pos = rng.permutation(k)
    pairs = k // 4
    first, second = pos[:pairs], pos[pairs:2 * pairs]
    a[:, first] *= 256
    a[:, second] = a[:, first]
    b[first] *= 256
    b[second] = -b[first]
    return a, b


def _significands(x: np.ndarray) -> tuple[list[list[int]], list[list[int]]]:
    """Each float64 of a 2-D array as ``sig·2^exp`` with Python integers (exactly)."""
    mant, exp = np.frexp(x)
    sig = np.ldexp(mant, 53).astype(np.int64)  # |mant| in [0.5, 1): mant·2^53 is an integer below 2^53
    return sig.tolist(), (exp - 53).tolist()


def exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The exact ``a @ b`` of finite float64 matrices as an object array of Fractions.

    Exact by construction: every float64 is ``sig·2^e`` with integers, so each product
    is ``(sa·sb)·2^(ea+eb)`` and the sum is formed in Python's unbounded integers over the
    smallest exponent -- no rounding anywhere, whatever K, the formats or cancellation.
    (A float64 result, even from the ``exact`` step, would be one rounding away from it
    once the sum needs more than 53 bits, as fp16 or bf16 sums over wide ranges can.)
    """
    sa, ea = _significands(a)
    sbt, ebt = _significands(np.ascontiguousarray(b.T))
    out = np.empty((a.shape[0], b.shape[1]), dtype=object)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            terms = [(x * y, p + q) for x, p, y, q in zip(sa[i], ea[i], sbt[j], ebt[j], strict=True) if x and y]
            if not terms:
                out[i, j] = Fraction(0)
                continue
            low = min(e for _, e in terms)
            total = sum(s << (e - low) for s, e in terms)
            out[i, j] = Fraction(total) * Fraction(2) ** low
    return out


def matmul_error_record(spec: Any, k: int, dist: str, m: int, n: int, seed: int,
                        cache: dict[Any, Any] | None = None, backend: str = "auto") -> dict[str, Any]:
    """One row of ``precisionlab error matmul``: ``pl.matmul(a, b, spec)`` against the exact
    product of the inputs rounded to the spec's input formats (also for ``precisionlab report``)."""
    from .analysis import bits_lost, error_ulps, relative_error, summarize
    from .matmul import matmul

    a, b = matmul_inputs(dist, m, k, n, seed)
    flush = not spec.input_subnormals
    kw = dict(rounding=spec.input_rounding, overflow=spec.input_overflow, subnormals=not flush, flush_inputs=flush)
    ar = np.asarray(pl_round(a, spec.a_format, **kw, backend=backend), dtype=np.float64)
    br = np.asarray(pl_round(b, spec.effective_b_format, **kw, backend=backend), dtype=np.float64)
    scales = {"a_scale": 1.0 if spec.a_scale_block is not None else None,
              "b_scale": 1.0 if spec.b_scale_block is not None else None}  # unit scales: the unscaled unit
    if not (np.isfinite(ar).all() and np.isfinite(br).all()):
        raise ValueError(f"preset {spec.name!r}: inputs of dist={dist!r} overflow its input formats ("
                         f"{spec.a_format.name}, {spec.effective_b_format.name}); the exact reference needs finite "
                         "values")
    d = np.asarray(matmul(ar, br, spec, seed=seed if spec.stochastic else None, backend=backend, **scales),
                   dtype=np.float64)
    key = (ar.tobytes(), br.tobytes(), ar.shape, br.shape)
    if cache is not None and key in cache:
        ref = cache[key]
    else:
        ref = exact_matmul(ar, br)
        if cache is not None:
            cache[key] = ref
    out = spec.output_format
    rel, ulps, lost = summarize(relative_error(d, ref)), summarize(error_ulps(d, ref, out)), \
        summarize(bits_lost(d, ref, out))
    return {
        "preset": spec.name, "k": k, "dist": dist, "m": m, "n": n, "output_format": out.name,
        "max_rel_error": _json_float(rel.max), "mean_rel_error": _json_float(rel.mean),
        "max_ulp_error": _json_float(ulps.max), "mean_ulp_error": _json_float(ulps.mean),
        "max_bits_lost": _json_float(lost.max), "mean_bits_lost": _json_float(lost.mean),
    }


_MATMUL_ERROR_COLUMNS = (
    Column("preset", "preset"),
    Column("dist", "dist"),
    Column("k", "K", align="right"),
    Column("output_format", "output"),
    Column("max_rel_error", "max rel err", _show_sci, "right"),
    Column("mean_rel_error", "mean rel err", _show_sci, "right"),
    Column("max_ulp_error", "max ulp", _show_sci, "right"),
    Column("mean_ulp_error", "mean ulp", _show_sci, "right"),
    Column("max_bits_lost", "bits lost (max)", _show_sci, "right"),
    Column("mean_bits_lost", "bits lost (mean)", _show_sci, "right"),
)


def _plot_matmul_error(plt: Any, path: str, records: list[dict[str, Any]]) -> None:
    dists = list(dict.fromkeys(r["dist"] for r in records))
    fig, axes = plt.subplots(1, len(dists), figsize=(5.0 * len(dists), 4.5), squeeze=False)
    for ax, dist in zip(axes[0], dists, strict=True):
        rows = [r for r in records if r["dist"] == dist]
        for preset in dict.fromkeys(r["preset"] for r in rows):
            pts = [(r["k"], r["max_rel_error"]) for r in rows if r["preset"] == preset]
            ks = [p[0] for p in pts]
            vals = [v if isinstance(v, float) and v > 0 else np.nan for _, v in pts]
            ax.plot(ks, vals, marker="o", label=preset)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("K")
        ax.set_ylabel("max relative error")
        ax.set_title(dist)
    axes[0][0].legend(fontsize="small")
    fig.suptitle("precisionlab error matmul")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _k_value(text: str) -> int:
    if not re.fullmatch(r"\d+", text) or int(text) < 1:
        raise ValueError(f"K={text!r} not allowed; give positive integers, e.g. 64,256,1024")
    return int(text)


def _matmul_distribution(text: str) -> str:
    key = text.lower()
    if key not in MATMUL_DISTRIBUTIONS:
        raise ValueError(f"dist={text!r} is not a matmul distribution; allowed: {', '.join(MATMUL_DISTRIBUTIONS)}")
    return key


_DEFAULT_MATMUL_PRESETS = "h100_e4m3,h100_e4m3+promote128,h100_fp16,bf16_accumulate,fp16_accumulate,exact"


def _run_error_matmul(args: argparse.Namespace, out: io.TextIOBase) -> int:
    plt = _need_matplotlib(args.plot)
    cache: dict[Any, Any] = {}
    cells = [(spec, k, dist) for spec in args.presets for dist in args.dist for k in args.k]
    records = _sweep(cells, lambda c: matmul_error_record(c[0], c[1], c[2], args.m, args.n, args.seed, cache),
                     lambda c: f"{c[0].name} K={c[1]} {c[2]}", "error matmul")
    if plt is not None:
        _plot_matmul_error(plt, args.plot, records)
    document = {"command": "error matmul", "m": args.m, "n": args.n, "seed": args.seed, "reference": "exact"}
    _emit(records, _MATMUL_ERROR_COLUMNS, args.output, out, document=document, list_key="rows")
    return 0


def _add_error_matmul(sub: argparse._SubParsersAction) -> None:
    from .presets import presets

    p = sub.add_parser(
        "matmul", parents=[_output_parent()], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="error of matmul presets against the exact product: relative error, ULPs, bits lost vs K",
        description="For every preset x K x distribution: draw A (M x K) and B (K x N), round them to the\n"
                    "preset's input formats, compute D = pl.matmul(A, B, preset) and compare it with the exact\n"
                    "product of the rounded inputs (summed in unbounded integers, so no rounding at all):\n"
                    "max/mean relative error |d-x|/|x|, max/mean |error| in ULPs of the preset's output\n"
                    "format at x, and max/mean bits lost ((m+1) - clip(-log2(relative error), 0, m+1) of the\n"
                    "output format: 0 for a correctly rounded result). Presets with block scales get unit\n"
                    "scales. Distributions: normal (standard normal), uniform (positive, on [0, 1)),\n"
                    "cancelling (half the K-elements are pairs of products ~±256 that cancel exactly, the\n"
                    "rest small terms ~1/256: the relative error of the small exact sum shows how much of\n"
                    "the cancelled magnitude the accumulation kept).",
        epilog="PRESET[+MOD...]: a preset name (see 'precisionlab presets') with optional modifiers:\n"
               "  +promoteN        promote the partial sums to fp32 every N K-elements (promote_every=N),\n"
               "                   e.g. h100_e4m3+promote128, DeepSeek-V3's fix for H100 FP8 'fast\n"
               "                   accumulation' (compare h100_e4m3 at large K: promotion bounds the growth)\n"
               "  +FIELD=VALUE     any MatmulSpec field, e.g. exact+a_format=e4m3+accumulator=fp64+\n"
               "                   output_format=fp64 (none, true, false and integers read as such)\n"
               "presets: " + ", ".join(presets) + "\n\n"
               "examples:\n"
               "  precisionlab error matmul\n"
               "  precisionlab error matmul --presets h100_e4m3,h100_e4m3+promote128 --k 1024,4096,16384\n"
               "  precisionlab error matmul --presets fp16_accumulate,bf16_accumulate --dist uniform --format json\n"
               "  precisionlab error matmul --presets a100_fp16,h100_fp16 --m 8 --n 8 --plot matmul-error.png\n\n"
               + _OUTPUT_EPILOG)
    p.add_argument("--presets", type=_list_arg(parse_matmul_spec, "presets"),
                   default=[parse_matmul_spec(t) for t in _DEFAULT_MATMUL_PRESETS.split(",")], metavar="P[,P...]",
                   help=f"presets, each PRESET[+promoteN][+FIELD=VALUE...] (default: {_DEFAULT_MATMUL_PRESETS})")
    p.add_argument("--k", type=_list_arg(_k_value, "K values"), default=[64, 256, 1024, 4096], metavar="K[,K...]",
                   help="inner dimensions K (default: 64,256,1024,4096)")
    p.add_argument("--dist", type=_list_arg(_matmul_distribution, "distributions"),
                   default=list(MATMUL_DISTRIBUTIONS), metavar="D[,D...]",
                   help="input distributions: " + ", ".join(MATMUL_DISTRIBUTIONS) + " (default: all three)")
    p.add_argument("--m", type=_positive_int, default=4, metavar="M", help="rows of A and D (default: 4)")
    p.add_argument("--n", type=_positive_int, default=4, metavar="N", help="columns of B and D (default: 4)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the inputs (default: 0)")
    p.add_argument("--plot", default=None, metavar="FILE",
                   help="also draw max relative error against K into FILE (PNG, SVG, PDF; needs matplotlib)")
    p.set_defaults(func=_run_error_matmul)


#: The analyses of ``precisionlab error``; each adds its parser to the error subparsers.
ERROR_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_error_cast, _add_error_matmul,
                                                                         _add_error_train]


def _add_error(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "error", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="error-analysis tables (error cast, error matmul, error train)",
        description="Error-analysis sweeps against an exact reference, as tables (or Markdown, CSV, JSON).\n"
                    "Run 'precisionlab error ANALYSIS --help' for an analysis's options.",
        epilog="analyses:\n  cast    rounding error of formats x rounding modes x input distributions\n"
               "  matmul  error of matmul presets x K x input distributions against the exact product\n"
               "  train   mixed-precision training recipes side by side\n\n"
               "examples:\n  precisionlab error cast --formats bf16,e4m3 --rounding rne,rtz\n"
               "  precisionlab error train --recipes fp32,pure_fp16,torch_amp_fp16 --steps 50\n")
    esub = p.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True, parser_class=_Parser)
    for add in ERROR_SUBCOMMANDS:
        add(esub)


# ---------------------------------------------------------------------------
# precisionlab conformance
# ---------------------------------------------------------------------------


def load_kernel(target: str) -> Callable:
    """``MODULE:FUNCTION`` (an importable module, the working directory first on the path)
    or ``path/to/file.py:FUNCTION``; ValueError with a one-line reason otherwise."""
    import importlib
    import importlib.util

    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"kernel {target!r} must be MODULE:FUNCTION or path/to/file.py:FUNCTION")
    try:
        if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
            path = os.path.abspath(module_name)
            if not os.path.isfile(path):
                raise ValueError(f"kernel {target!r}: no file {module_name!r}")
            spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
            module = importlib.util.module_from_spec(spec)
            sys.path.insert(0, os.path.dirname(path))
            try:
                spec.loader.exec_module(module)
            finally:
                sys.path.remove(os.path.dirname(path))
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except ValueError:
        raise
    except Exception as exc:  # the user's module: any import-time failure is a bad argument
        raise ValueError(f"kernel {target!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"kernel {target!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"kernel {target!r} is a {type(obj).__name__}, not a function")
    return obj


_CONFORMANCE_COLUMNS = (
    Column("name", "case"),
    Column("elements", "elements", align="right"),
    Column("mismatches", "mismatches", align="right"),
    Column("passed", "result", lambda v: "pass" if v else "FAIL"),
    Column("description", "inputs"),
)


def _run_conformance(args: argparse.Namespace, out: io.TextIOBase) -> int:
    from .testing import check_kernel

    if args.golden is not None:
        if args.kernel is not None:
            raise ValueError(f"give either KERNEL ({args.kernel}) or --golden, not both")
        return _run_conformance_golden(args, out)
    if args.kernel is None:
        raise ValueError("conformance needs KERNEL (MODULE:FUNCTION) or --golden [DIR]")
    if args.full:
        raise ValueError("--full applies to --golden only")
    fn = load_kernel(args.kernel)
    if args.op == "cast":
        if args.to is None:
            raise ValueError("--op cast needs --to FMT (the target format)")
        from .rounding import make_round_spec

        spec: Any = make_round_spec(args.to, args.rounding, args.overflow, not args.no_subnormals,
                                    seed=args.seed if Rounding.parse(args.rounding).stochastic else None,
                                    sr_bits=args.sr_bits)
    else:
        if args.spec is None:
            raise ValueError("--op matmul needs --spec PRESET")
        spec = args.spec
    if args.cases is None:
        shapes = ((1000,),) if args.op == "cast" else None
    else:
        shapes = ((args.cases,),) if args.op == "cast" else ((4, args.cases, 3),)
    report = check_kernel(fn, spec, op=args.op, shapes=shapes, dists=args.dist, seed=args.seed)
    report = dataclasses_replace_kernel(report, args.kernel)
    if args.junit:
        try:
            with open(args.junit, "w", encoding="utf-8") as fh:
                fh.write(report.to_junit_xml())
        except OSError as exc:
            raise ValueError(f"--junit {args.junit}: cannot write: {exc.strerror}") from None
    if args.output == "json":
        out.write(report.to_json() + "\n")
    else:
        records = [{**c.to_dict()} for c in report.cases]
        _emit(records, _CONFORMANCE_COLUMNS, args.output, out)
        if args.output != "csv":
            status = "PASSED" if report.passed else "FAILED"
            out.write(f"\n{status}: {report.mismatches} of {report.elements} elements differ in {report.format} "
                      f"({report.kernel}, {args.op})\n")
            if report.diagnosis:
                out.write("diagnosis:\n" + "".join(f"  - {d}\n" for d in report.diagnosis))
            failing = [c for c in report.cases if not c.passed]
            for c in failing[:2]:
                out.write(f"\ncase {c.name!r}:\n" + "".join(f"  {line}\n" for line in c.message.splitlines()))
    return 0 if report.passed else 1


def dataclasses_replace_kernel(report: Any, kernel: str) -> Any:
    """The report with the kernel named as the user named it on the command line."""
    import dataclasses

    return dataclasses.replace(report, kernel=kernel)


def _add_conformance(sub: argparse._SubParsersAction) -> None:
    modes = ", ".join(m.value for m in Rounding)
    p = sub.add_parser(
        "conformance", parents=[_output_parent()], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="check a user's kernel against the emulator bit for bit (exit code 1 on mismatch)",
        description="Import KERNEL, run it on inputs built to separate behaviours and compare its outputs bit\n"
                    "for bit with the emulator (precisionlab.testing.check_kernel). --op cast: the kernel takes\n"
                    "a float32 array (float64 for formats float32 cannot feed) and returns the values rounded\n"
                    "to --to FMT in any float dtype; the cases are every value of the format, the ties between\n"
                    "adjacent values at every binade and the floats beside them, the subnormal range, the\n"
                    "overflow band (with the tie between max and the first value past it), +-0, +-Inf, NaN and\n"
                    "random inputs. --op matmul (needs pl.matmul): KERNEL(a, b) is compared with\n"
                    "pl.matmul(a, b, PRESET). Prints one row per case, a diagnosis of what the kernel does\n"
                    "instead (e.g. \"matches rounding='rtz' instead of 'rne'\") and the first mismatches.\n"
                    "With --golden [DIR] instead of KERNEL: run the golden suite (golden/README.md), every\n"
                    "recorded framework/GPU case against the model precisionlab claims for it, one row per file,\n"
                    "open findings listed as such.\n"
                    "Exit code: 0 all cases match, 1 a mismatch (or the kernel raised; for --golden: a mismatch\n"
                    "that is not a documented open finding), 2 bad arguments.",
        epilog="KERNEL is MODULE:FUNCTION (importable; the working directory is searched first) or\n"
               "path/to/file.py:FUNCTION.\n\n"
               "examples:\n"
               "  precisionlab conformance examples/cast_kernels.py:cast_bf16 --op cast --to bf16\n"
               "  precisionlab conformance mykernels:to_e4m3 --to e4m3 --overflow saturate --junit conformance.xml\n"
               "  precisionlab conformance mykernels:to_bf16_sr --to bf16 --rounding sr --seed 7 --format json\n"
               "  precisionlab conformance --golden\n"
               "  precisionlab conformance --golden path/to/golden --full --format json\n\n"
               + _OUTPUT_EPILOG)
    p.add_argument("kernel", nargs="?", metavar="KERNEL",
                   help="the kernel: MODULE:FUNCTION or path/to/file.py:FUNCTION (or --golden instead)")
    p.add_argument("--op", choices=("cast", "matmul"), default="cast",
                   help="the operation the kernel computes: cast (default) or matmul")
    p.add_argument("--to", metavar="FMT", default=None,
                   help="cast: the target format (a catalogue name, an alias or binary{K}p{P}[u][f])")
    p.add_argument("--spec", metavar="PRESET", default=None, help="matmul: the preset the kernel must match")
    p.add_argument("--rounding", default="rne", type=_checked(Rounding.parse), metavar="M",
                   help=f"cast: rounding mode: {modes} or a long alias (default: rne)")
    p.add_argument("--overflow", default="default", type=_checked(Overflow.parse), metavar="P",
                   help="cast: overflow policy: " + ", ".join(o.value for o in Overflow) + " (default: default)")
    p.add_argument("--no-subnormals", action="store_true", help="cast: the spec flushes subnormal results (FTZ)")
    p.add_argument("--sr-bits", type=int, default=None, metavar="N",
                   help="cast: random bits for rounding=sr, 1..64 (default: 64)")
    p.add_argument("--cases", type=_positive_int, default=None, metavar="N",
                   help="size of the random cases: cast: inputs per distribution (default: 1000), besides the "
                        "built edge cases; matmul: K of 4xKx3 products (default: 4x64x4 and 3x100x5)")
    p.add_argument("--dist", type=_list_arg(_distribution, "distributions"), default=["normal", "uniform",
                   "loguniform"], metavar="D[,D...]",
                   help="distributions of the random inputs: normal, uniform, loguniform (default: all three)")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the random inputs and of stochastic rounding (default: 0)")
    p.add_argument("--junit", default=None, metavar="FILE", help="also write the result as JUnit XML to FILE")
    p.add_argument("--golden", nargs="?", const="", default=None, metavar="DIR",
                   help="instead of a kernel: run the golden suite of DIR (default: the checkout's golden/), "
                        "a table per file; exit code 1 on a mismatch that is not a documented open finding")
    p.add_argument("--full", action="store_true", help="--golden: check every output element (by default a "
                   "fixed sample of each large matmul case)")
    p.set_defaults(func=_run_conformance)


# ---------------------------------------------------------------------------
# precisionlab conformance --golden
# ---------------------------------------------------------------------------

_GOLDEN_COLUMNS = [Column("file", "file"), Column("cases", "cases", align="right"),
                   Column("match", "match", align="right"), Column("open_findings", "open findings", align="right"),
                   Column("mismatch", "mismatch", align="right"), Column("skipped", "skipped", align="right"),
                   Column("not_recorded", "not recorded", align="right"),
                   Column("checked", "elements checked", align="right"),
                   Column("matched", "elements matched", align="right")]


def golden_rows(root: str | None = None, full: bool | None = None) -> tuple[list[dict[str, Any]], list[Any]]:
    """Per-file rows of the golden suite, and every case that is not a plain match."""
    from . import golden

    rows, notable = [], []
    for path, results in golden.run_suite(root, full).items():
        s = golden.summarize(results)
        rows.append({"file": path, "cases": s["cases"], "match": s["match"], "open_findings": s["open finding"],
                     "mismatch": s["mismatch"], "skipped": s["skipped"], "not_recorded": s["not recorded"],
                     "elements": s["elements"], "checked": s["checked"], "matched": s["matched"]})
        notable += [r for r in results if r.status in ("open finding", "mismatch", "skipped")]
    return rows, notable


def _run_conformance_golden(args: argparse.Namespace, out: io.TextIOBase) -> int:
    rows, notable = golden_rows(args.golden or None, True if args.full else None)
    _emit(rows, _GOLDEN_COLUMNS, args.output, out)
    if args.output in ("table", "markdown"):
        for r in notable:
            out.write(f"{r.status}: {r.file} {r.key}: {r.reason}\n")
    return 1 if any(row["mismatch"] for row in rows) else 0


# ---------------------------------------------------------------------------
# precisionlab presets
# ---------------------------------------------------------------------------


def _catalogued(fmt: Format) -> bool:
    try:
        return get_format(fmt.name) == fmt
    except (ValueError, TypeError):
        return False


def _spec_value(v: Any) -> Any:
    """A MatmulSpec field for JSON/CSV: catalogue formats by name (custom ones, such as the
    FP8 accumulator e8m13, as the dict of their Format fields), roundings and overflow
    policies by value, the order as its string form, scale blocks as lists, the rest as is."""
    if isinstance(v, Format):
        if _catalogued(v):
            return v.name
        return {f: getattr(v, f) for f in ("name", "exponent_bits", "mantissa_bits", "bias", "signed", "has_inf",
                                           "nan", "has_subnormals", "has_zero")}
    if isinstance(v, (Rounding, Overflow)):
        return v.value
    if isinstance(v, tuple):
        return list(v)
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)  # Order


def preset_record(spec: Any) -> dict[str, Any]:
    """Every field of a MatmulSpec (the JSON row of ``precisionlab presets``), with the
    effective B and C formats and the short source the table shows."""
    import dataclasses

    rec = {f.name: _spec_value(getattr(spec, f.name)) for f in dataclasses.fields(spec)}
    rec["_accumulator"] = spec.accumulator.name
    rec["effective_b_format"] = spec.effective_b_format.name
    rec["effective_c_format"] = spec.effective_c_format.name
    rec["_source"] = _source_head(spec.source)
    return rec


def _source_head(source: str) -> str:
    """The part of a preset's citation before its first ': ' (the unit and the paper)."""
    head = source.split(": ", 1)[0].strip()
    return head or DASH


def _show_none(v: Any) -> str:
    return DASH if v is None else str(v)


_PRESET_COLUMNS = (
    Column("name", "preset"),
    Column("a_format", "a"),
    Column("effective_b_format", "b"),
    Column("step", "step"),
    Column("k_fused", "k_fused", align="right"),
    Column("n_frac", "n_frac", _show_none, "right"),
    Column("c_mode", "c_mode"),
    Column("_accumulator", "accumulator"),
    Column("step_rounding", "step rnd"),
    Column("order", "order"),
    Column("promote_every", "promote_every", _show_none, "right"),
    Column("output_format", "output"),
    Column("_source", "source"),
)


def _run_presets(args: argparse.Namespace, out: io.TextIOBase) -> int:
    from .presets import get_preset, presets

    specs = [get_preset(n) for n in args.names] if args.names else list(presets.values())
    _emit([preset_record(s) for s in specs], _PRESET_COLUMNS, args.output, out)
    return 0


def _add_presets(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "presets", parents=[_output_parent()], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="the matmul presets (MatmulSpecs of real hardware and libraries) with their parameters",
        description="Show the matmul presets (pl.presets, DESIGN §6): the input formats of A and B, the step\n"
                    "algorithm (ieee, fused, pairwise, exact), the products per step (k_fused), the fraction\n"
                    "bits kept after alignment (n_frac, '—' for none: exact), when C enters a fused step\n"
                    "(c_mode), the accumulator format and its step rounding, the order of the steps over K,\n"
                    "promote_every (partial sums promoted to fp32 every N K-elements), the output format\n"
                    "and the source of the parameters (the table shows the start of the citation; csv and\n"
                    "json give the whole 'source' and every MatmulSpec field).",
        epilog="NAME is a preset name (case-insensitive). Without NAME every preset is listed.\n\n"
               "examples:\n"
               "  precisionlab presets\n"
               "  precisionlab presets h100_e4m3 deepseek_fp8\n"
               "  precisionlab presets b200_e4m3 --format json\n\n" + _OUTPUT_EPILOG)
    p.add_argument("names", nargs="*", metavar="NAME", help="preset names (default: all)")
    p.set_defaults(func=_run_presets)


# ---------------------------------------------------------------------------
# precisionlab report (the logic is in precisionlab/report.py)
# ---------------------------------------------------------------------------


def _add_report(sub: argparse._SubParsersAction) -> None:
    from .report import add_parser

    add_parser(sub)


# ---------------------------------------------------------------------------
# the parser
# ---------------------------------------------------------------------------

_OUTPUT_EPILOG = (
    "output (--format): 'table' and 'markdown' are for people: powers of two as 2^k with\n"
    "their decimal value, other values exact where short, else marked ≈. 'csv' and 'json'\n"
    "are for machines: float64 values are numbers written as the shortest decimal that\n"
    "reads back as exactly that float64; inf, -inf and nan are strings; exact errors\n"
    "(which need not be float64 numbers) are strings of their exact decimal value; a\n"
    "missing value is null (JSON) or empty (CSV)."
)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``<prog>: error: <message> (see '<prog> --help')``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _output_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--format", dest="output", choices=OUTPUT_FORMATS, default="table",
                        help="output format: table (default, aligned text), markdown, csv or json")
    return parent


#: One function per subcommand; each adds its parser to the subparsers and sets ``func``.
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_formats, _add_presets, _add_round,
                                                                   _add_error, _add_conformance, _add_report]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="precisionlab: bit-exact emulation of low-precision floating-point "
                                            "arithmetic. Run 'precisionlab COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def _ensure_encodable(stream: Any) -> None:
    """Keep '—' and '≈' from crashing on a non-UTF-8 console: replace what cannot be written."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        "—≈·".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad arguments)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    out = sys.stdout
    _ensure_encodable(out)
    try:
        return args.func(args, out)
    except ValueError as exc:  # the library names the argument, the value and the choices
        msg = " ".join(str(exc).split())
        sys.stderr.write(f"{PROG}: error: {msg}\n")
        return 2
    except BrokenPipeError:  # e.g. 'precisionlab formats | head': stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, io.UnsupportedOperation):
            pass
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
