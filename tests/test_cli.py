"""The precisionlab command: help, formats, round, output formats and errors."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_usage_error, run, strict_json

import precisionlab as pl
from precisionlab import cli
from precisionlab.formats import _ALIASES

ROOT = Path(__file__).resolve().parent.parent




def round_json(capsys, *argv: str) -> dict:
    rc, out, err = run(capsys, "round", *argv, "--format", "json")
    assert rc == 0, err
    return strict_json(out)


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


# ---------------------------------------------------------------- help ----


def test_top_level_help_lists_subcommands(capsys):
    rc, out, _ = run(capsys, "--help")
    assert rc == 0
    for name in subcommand_parsers():
        assert name in out


def test_version(capsys):
    rc, out, _ = run(capsys, "--version")
    assert rc == 0 and pl.__version__ in out


@pytest.mark.parametrize("name", sorted(subcommand_parsers()))
def test_subcommand_help_mentions_every_option(capsys, name):
    rc, out, err = run(capsys, name, "--help")
    assert rc == 0, err
    parser = subcommand_parsers()[name]
    for action in parser._actions:
        for opt in action.option_strings:
            assert opt in out, f"{name} --help does not mention {opt}"
        if action.option_strings and action.help:
            assert action.help.split()[0] in out
        for choice in action.choices or ():
            assert str(choice) in out
    assert "example" in out


def test_no_subcommand_is_an_error(capsys):
    rc, _, err = run(capsys)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "error" in err


# ------------------------------------------------------------- formats ----


def test_formats_json_has_the_catalogue(capsys):
    rc, out, err = run(capsys, "formats", "--format", "json")
    assert rc == 0, err
    records = strict_json(out)
    by_name = {r["name"]: r for r in records}
    assert list(by_name) == list(pl.formats)
    expected_max = {"e4m3": 448, "fp16": 65504, "e5m2": 57344, "e4m3fnuz": 240, "e5m2fnuz": 57344,
                    "e4m3b11fnuz": 30, "e3m4": 15.5, "e4m3_ieee": 240, "fp6_e3m2": 28, "fp6_e2m3": 7.5,
                    "fp4_e2m1": 6, "e8m0": 2.0**127, "fp32": 3.4028234663852886e38,
                    "fp64": 1.7976931348623157e308, "bf16": (2 - 2**-7) * 2.0**127, "tf32": (2 - 2**-10) * 2.0**127}
    for name, mx in expected_max.items():
        assert by_name[name]["max"] == mx, name
    e4m3 = by_name["e4m3"]
    assert (e4m3["exponent_bits"], e4m3["mantissa_bits"], e4m3["bias"], e4m3["bits"]) == (4, 3, 7, 8)
    assert e4m3["smallest_normal"] == 2.0**-6 and e4m3["smallest_subnormal"] == 2.0**-9 and e4m3["eps"] == 0.125
    assert e4m3["has_inf"] is False and e4m3["nan"] == "fn" and e4m3["ml_dtype"] == "float8_e4m3fn"
    assert by_name["e8m0"]["smallest_subnormal"] is None and by_name["e8m0"]["smallest_normal"] == 2.0**-127
    assert by_name["fp64"]["smallest_subnormal"] == 2.0**-1074
    assert by_name["tf32"]["ml_dtype"] is None
    for alias, target in _ALIASES.items():
        assert alias in by_name[target]["aliases"]
    for rec in records:
        fmt = pl.get_format(rec["name"])
        assert rec["bits"] == fmt.bits and rec["max"] == fmt.max
        assert rec["dynamic_range_decades"] == pytest.approx(fmt.dynamic_range)


def test_formats_names_and_aliases(capsys):
    rc, out, err = run(capsys, "formats", "float8_e4m3fn", "HALF", "binary8p3", "binary16p5", "--format", "json")
    assert rc == 0, err
    records = strict_json(out)
    assert [r["name"] for r in records] == ["e4m3", "fp16", "binary8p3", "binary16p5"]
    assert records[2]["max"] == 49152 and records[2]["nan"] == "fnuz" and records[2]["has_inf"] is True


def test_formats_table(capsys):
    rc, out, err = run(capsys, "formats")
    assert rc == 0, err
    lines = out.splitlines()
    assert "max finite" in lines[0] and "min subnormal" in lines[0] and "ml_dtypes" in lines[0]
    assert len(lines) == 2 + len(pl.formats)
    e4m3 = next(line for line in lines if line.startswith("e4m3 "))
    assert " 448 " in e4m3 and "2^-9 (0.001953125)" in e4m3 and "2^-6 (0.015625)" in e4m3
    assert "S.1111.111" in e4m3 and "float8_e4m3fn" in e4m3
    fp32 = next(line for line in lines if line.startswith("fp32 "))
    assert "(2-2^-23)·2^127" in fp32 and "2^-149" in fp32
    fp16 = next(line for line in lines if line.startswith("fp16 "))
    assert " 65504 " in fp16 and "2^-24 (5.9604644775390625e-8)" in fp16


def test_formats_markdown(capsys):
    rc, out, err = run(capsys, "formats", "e4m3", "fp16", "--format", "markdown")
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("|") and line.endswith("|") for line in lines)
    assert set(lines[1]) <= set("|:- ")
    assert "| e4m3" in lines[2] and "448" in lines[2]


def test_formats_csv(capsys):
    rc, out, err = run(capsys, "formats", "--format", "csv")
    assert rc == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["name"] for r in rows] == list(pl.formats)
    e4m3 = next(r for r in rows if r["name"] == "e4m3")
    assert float(e4m3["max"]) == 448 and float(e4m3["smallest_subnormal"]) == 2.0**-9
    assert "float8_e4m3fn" in e4m3["aliases"].split(";") and e4m3["has_inf"] == "false"
    e8m0 = next(r for r in rows if r["name"] == "e8m0")
    assert e8m0["smallest_subnormal"] == "" and float(e8m0["max"]) == 2.0**127


# --------------------------------------------------------------- round ----


def test_round_470_e4m3(capsys):
    doc = round_json(capsys, "470", "464", "448", "--to", "e4m3")
    assert (doc["format"], doc["rounding"], doc["overflow"]) == ("e4m3", "rne", "default")
    r470, r464, r448 = doc["results"]
    assert r470["result"] == "nan" and r470["code"] == 0x7F and r470["code_hex"] == "0x7f"
    assert r470["status"] == "overflow → nan" and r470["next_up"] is None and r470["next_down"] is None
    assert r464["result"] == 448 and r464["code_hex"] == "0x7e" and r464["fields"] == "0.1111.110"
    assert r464["error"] == "-16" and r464["error_ulps"] == "-0.5" and r464["status"] == "tie → max"
    assert r448["next_down"] == 416 and r448["next_up"] is None and r448["status"] == "exact"


def test_round_table(capsys):
    rc, out, err = run(capsys, "round", "470", "0.1", "--to", "e4m3")
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 4 and "next down" in lines[0] and "error (ulp)" in lines[0]
    assert "0x7f" in lines[2] and "nan" in lines[2]
    assert "0.1000000000000000055511151231257827021181583404541015625" in lines[3]
    assert "0.1015625" in lines[3] and "0x1d" in lines[3] and "0.09375" in lines[3] and "0.109375" in lines[3]


def test_round_markdown_and_csv(capsys):
    rc, out, _ = run(capsys, "round", "470", "0.1", "--to", "e4m3", "--format", "markdown")
    assert rc == 0
    lines = out.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("|") for line in lines)
    rc, out, _ = run(capsys, "round", "470", "0.1", "--to", "e4m3", "--format", "csv")
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["code_hex"] for r in rows] == ["0x7f", "0x1d"]
    assert rows[0]["next_down"] == "" and rows[0]["result"] == "nan" and float(rows[1]["result"]) == 0.1015625


def test_round_options(capsys):
    doc = round_json(capsys, "470", "-1e5", "-inf", "--to", "e4m3", "--overflow", "saturate")
    assert [r["result"] for r in doc["results"]] == [448, -448, -448]
    assert [r["status"] for r in doc["results"]] == ["saturated", "saturated", "inf → max"]
    doc = round_json(capsys, "0.1", "17", "--to", "e4m3", "--rounding", "toward_zero")
    assert doc["rounding"] == "rtz" and [r["result"] for r in doc["results"]] == [0.09375, 16]
    doc = round_json(capsys, "1e-5", "--to", "fp16", "--no-subnormals")
    assert doc["results"][0]["result"] == 0 and doc["subnormals"] is False
    assert doc["results"][0]["status"] == "underflow → 0"
    doc = round_json(capsys, "1e-5", "--to", "fp16")
    assert doc["results"][0]["result"] == float(pl.round(np.array([1e-5]), "fp16")[0]) != 0


def test_round_stochastic_is_seeded(capsys):
    argv = ["0.3"] * 6 + ["--to", "bf16", "--rounding", "sr", "--seed", "42", "--sr-bits", "8"]
    first = round_json(capsys, *argv)
    second = round_json(capsys, *argv)
    assert first == second and first["seed"] == 42 and first["sr_bits"] == 8
    expected = pl.round(np.full(6, 0.3), "bf16", rounding="sr", seed=42, sr_bits=8)
    assert [r["result"] for r in first["results"]] == expected.tolist()


def test_round_machine_values_are_exact(capsys):
    doc = round_json(capsys, "0.1", "1e-9", "2^-1074", "--to", "fp16")
    for rec in doc["results"]:
        x = float(rec["input"])
        assert Decimal(rec["input_exact"]) == Decimal(x)
        err = Fraction(Decimal(rec["error"]))
        assert err == Fraction(float(rec["result"])) - Fraction(x)
        assert Fraction(Decimal(rec["error_ulps"])) == err / cli.ulp(x, pl.get_format("fp16"))
    assert doc["results"][0]["input"] == 0.1


def test_round_values_parse(capsys):
    doc = round_json(capsys, "0x1.8p3", "2^-9", "-2^-9", "1.5*2^-10", "2**4", "-inf", "nan", "-1e-3", "-0",
                     "--to", "e4m3")
    results = doc["results"]
    assert [r["input"] for r in results] == [12, 2.0**-9, -(2.0**-9), 1.5 * 2.0**-10, 16, "-inf", "nan",
                                             -1e-3, -0.0]
    assert math.copysign(1, results[-1]["result"]) == -1 and results[-1]["code_hex"] == "0x80"
    assert results[6]["code_hex"] == "0x7f" and results[5]["code_hex"] == "0xff"


@pytest.mark.parametrize("text, value", [
    ("0.1", 0.1), ("-1e-3", -1e-3), ("1E5", 1e5), ("inf", math.inf), ("-Infinity", -math.inf), ("+2^3", 8.0),
    ("0x1.8p3", 12.0), ("-0x1p-3", -0.125), ("2^-9", 2.0**-9), ("1.5*2^-10", 1.5 * 2.0**-10), ("3·2^2", 12.0),
    ("2**10", 1024.0), ("2^-1074", 2.0**-1074), ("2^-1080", 0.0), ("2^1024", math.inf), ("1e400", math.inf),
    ("-0", -0.0),
])
def test_parse_value(text, value):
    got = cli.parse_value(text)
    assert got == value and math.copysign(1, got) == math.copysign(1, value)


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "--1", "2^x", "0xg", "1,5", "."])
def test_parse_value_rejects(text):
    with pytest.raises(ValueError):
        cli.parse_value(text)


def test_parse_value_nan():
    assert math.isnan(cli.parse_value("nan")) and math.isnan(cli.parse_value("-NaN"))


@pytest.mark.parametrize("name", [n for n, f in pl.formats.items() if f.bits <= 8])
def test_neighbours_are_adjacent_values(name):
    """next down / next up of every code are the adjacent values of the format (±0 as one)."""
    fmt = pl.get_format(name)
    codes = [c for c in range(1 << fmt.bits) if not fmt.is_nan_code(c)]
    value = {c: float(fmt.decode_exact(c)) for c in codes}
    ordered = sorted(set(value.values()))
    for c in codes:
        down, up = cli.neighbour_codes(c, fmt)
        i = ordered.index(value[c])
        assert (None if down is None else value[down]) == (ordered[i - 1] if i > 0 else None), (name, hex(c))
        assert (None if up is None else value[up]) == (ordered[i + 1] if i + 1 < len(ordered) else None), \
            (name, hex(c))
    assert cli.neighbour_codes(fmt.nan_code, fmt) == (None, None) if fmt.nan_code is not None else True


def test_neighbours_keep_ieee_signs():
    e4m3 = pl.get_format("e4m3")
    assert cli.neighbour_codes(0x81, e4m3) == (0x82, 0x80)  # -2^-9 steps up to -0
    assert cli.neighbour_codes(0x00, e4m3) == (0x81, 0x01)
    assert cli.neighbour_codes(0x80, e4m3) == (0x81, 0x01)
    assert cli.neighbour_codes(0x81, pl.get_format("e4m3fnuz")) == (0x82, 0x00)  # no -0: up to +0
    e5m2 = pl.get_format("e5m2")
    assert cli.neighbour_codes(0x7B, e5m2) == (0x7A, 0x7C)  # max -> +inf
    assert cli.neighbour_codes(0x7C, e5m2) == (0x7B, None)
    assert cli.neighbour_codes(0xFC, e5m2) == (None, 0xFB)


def test_ulp():
    e4m3 = pl.get_format("e4m3")
    assert cli.ulp(464.0, e4m3) == 32 and cli.ulp(470.0, e4m3) == 32 and cli.ulp(1e6, e4m3) == 32
    assert cli.ulp(1.0, e4m3) == Fraction(1, 8) and cli.ulp(0.0, e4m3) == Fraction(1, 512)
    assert cli.ulp(2.0**-12, e4m3) == Fraction(1, 512)


@pytest.mark.parametrize("x, text", [
    (448.0, "448"), (-0.0, "-0"), (0.3125, "0.3125"), (2.0**-9, "2^-9 (0.001953125)"),
    (-(2.0**-9), "-2^-9 (-0.001953125)"), (math.inf, "inf"), (math.nan, "nan"),
    (2.0**-1074, "2^-1074 (≈4.94066e-324)"), (3.4028234663852886e38, "(2-2^-23)·2^127 ≈3.40282e+38"),
    (2.0**127, "2^127 (≈1.70141e+38)"), (15.5, "15.5"),
])
def test_fmt_number(x, text):
    assert cli.fmt_number(x) == text


# -------------------------------------------------------------- errors ----


@pytest.mark.parametrize("argv, needle", [
    (["round", "1", "--to", "e9m9"], "e9m9"),
    (["round", "1", "--to", "e4m3", "--rounding", "bogus"], "bogus"),
    (["round", "1", "--to", "e4m3", "--overflow", "wrap"], "wrap"),
    (["round", "1", "--to", "e4m3", "--rounding", "sr"], "seed"),
    (["round", "nan", "--to", "fp4"], "NaN"),
    (["round", "abc", "--to", "e4m3"], "abc"),
    (["round", "1"], "--to"),
    (["round", "1", "--to", "e4m3", "--format", "xml"], "xml"),
    (["formats", "nope"], "nope"),
    (["bogus"], "bogus"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, argv, needle):
    assert_usage_error(*run(capsys, *argv), needle)


# ---------------------------------------------------------- subprocess ----


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def test_python_m_precisionlab():
    proc = subprocess.run([sys.executable, "-m", "precisionlab", "round", "470", "464", "--to", "e4m3",
                           "--format", "json"], capture_output=True, text=True, encoding="utf-8",
                          env=_env(), cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = strict_json(proc.stdout)
    assert [r["code_hex"] for r in doc["results"]] == ["0x7f", "0x7e"]
    proc = subprocess.run([sys.executable, "-m", "precisionlab", "formats", "e4m3x"], capture_output=True,
                          text=True, encoding="utf-8", env=_env(), cwd=ROOT, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "e4m3x" in proc.stderr


# ---- precisionlab conformance --golden -------------------------------------------------------------

def _golden_root(tmp_path, paths, tamper=None):
    """A golden folder holding ``paths`` of the checkout's golden/, optionally with one verification changed."""
    import shutil

    src = ROOT / "golden"
    man = json.loads((src / "MANIFEST.json").read_text())
    entries = [e for e in man["files"] if e["path"] in paths]
    for e in entries:
        (tmp_path / e["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / e["path"], tmp_path / e["path"])
    ver = {p: dict(man["verification"][p]) for p in paths}
    if tamper:
        tamper(ver)
    (tmp_path / "MANIFEST.json").write_text(json.dumps({"version": 1, "files": entries, "verification": ver}))
    return str(tmp_path)


def test_conformance_golden_prints_a_table_per_file(capsys, tmp_path):
    root = _golden_root(tmp_path, ["cpu/casts_torch.npz", "cpu/casts_jax.npz"])
    rc, out, _ = run(capsys, "conformance", "--golden", root)
    assert rc == 0
    assert "cpu/casts_torch.npz" in out and "elements matched" in out and "open findings" in out
    rc, out, _ = run(capsys, "conformance", "--golden", root, "--format", "json")
    rows = strict_json(out)
    assert rc == 0 and {r["file"] for r in rows} == {"cpu/casts_torch.npz", "cpu/casts_jax.npz"}
    torch_row = next(r for r in rows if r["file"] == "cpu/casts_torch.npz")
    assert torch_row["match"] == 14 and torch_row["not_recorded"] == 2 and torch_row["mismatch"] == 0
    assert torch_row["checked"] == torch_row["matched"] == torch_row["elements"] > 10000


def test_conformance_golden_fails_on_an_undocumented_mismatch(capsys, tmp_path):
    def claim_a_wrong_model(ver):
        ver["cpu/casts_torch.npz"]["cast_e4m3_from_float32"]["model"] = "another model"
    root = _golden_root(tmp_path, ["cpu/casts_torch.npz"], claim_a_wrong_model)
    rc, out, _ = run(capsys, "conformance", "--golden", root)
    assert rc == 1 and "mismatch: cpu/casts_torch.npz cast_e4m3_from_float32" in out


def test_conformance_golden_reports_a_corrupt_file(capsys, tmp_path):
    root = _golden_root(tmp_path, ["cpu/casts_torch.npz"])
    (tmp_path / "cpu/casts_torch.npz").write_bytes(b"PK\x03\x04 truncated")
    rc, _, err = run(capsys, "conformance", "--golden", root)
    assert rc == 2 and "cpu/casts_torch.npz: sha256" in err


def test_conformance_needs_golden(capsys):
    rc, _, err = run(capsys, "conformance")
    assert rc == 2 and "--golden" in err
