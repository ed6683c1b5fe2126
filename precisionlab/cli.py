"""The ``precisionlab`` command (DESIGN §10).

Subcommands so far:

* ``precisionlab formats [NAME ...]`` -- the format catalogue with its derived facts;
* ``precisionlab round VALUE ... --to FMT`` -- round values given on the command line
  and show the result, its code, its neighbours and the rounding error;
* ``precisionlab conformance --golden [DIR]`` -- the golden suite, a table per file.

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
    tablefmt = "pipe" if output == "markdown" else "simple"
    out.write(tabulate(rows, headers=[c.header for c in columns], tablefmt=tablefmt, disable_numparse=True,
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


def _run_conformance(args: argparse.Namespace, out: io.TextIOBase) -> int:
    if args.golden is None:
        raise ValueError("conformance needs --golden [DIR] (a golden folder; MODULE:FUNCTION targets are not "
                         "available in this build)")
    rows, notable = golden_rows(args.golden or None, True if args.full else None)
    _emit(rows, _GOLDEN_COLUMNS, args.output, out)
    if args.output in ("table", "markdown"):
        for r in notable:
            out.write(f"{r.status}: {r.file} {r.key}: {r.reason}\n")
    return 1 if any(row["mismatch"] for row in rows) else 0


def _add_conformance(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("conformance", parents=[_output_parent()], formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="check golden files (or a kernel) against precisionlab's models",
                       description="Run the golden suite: every recorded case of every golden file against the\n"
                                   "model precisionlab claims for it, bit for bit (NaN as NaN). Prints a table per\n"
                                   "file and lists open findings; exit status 1 on any mismatch that is not a\n"
                                   "documented open finding (golden/README.md).",
                       epilog="examples:\n  precisionlab conformance --golden\n"
                              "  precisionlab conformance --golden path/to/golden --full --format json")
    p.add_argument("target", nargs="?", metavar="MODULE:FUNCTION", help=argparse.SUPPRESS)
    p.add_argument("--golden", nargs="?", const="", default=None, metavar="DIR",
                   help="golden folder with MANIFEST.json (default: the checkout's golden/)")
    p.add_argument("--full", action="store_true", help="check every output element (slow without a fast "
                   "matmul backend; by default a fixed sample of each matmul case)")
    p.set_defaults(func=_run_conformance)


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
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_formats, _add_round, _add_conformance]


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
