"""The `precisionlab error cast` and `precisionlab conformance` commands (kept apart from
tests/test_cli.py, which covers every command's --help and one-line errors generically, to
ease merging): complete help, valid JSON, numbers checked against DESIGN facts and the
inputs, exit codes, JUnit XML, the example kernels."""

from __future__ import annotations

import argparse
import csv
import io
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_usage_error, run, strict_json

from precisionlab import cli
from precisionlab.analysis import sample

ROOT = Path(__file__).resolve().parent.parent
KERNELS = str(ROOT / "examples" / "cast_kernels.py")




def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def check_help(capsys, parser: argparse.ArgumentParser, *argv: str) -> str:
    rc, out, err = run(capsys, *argv, "--help")
    assert rc == 0, err
    for action in parser._actions:
        for opt in action.option_strings:
            assert opt in out, f"{argv} --help does not mention {opt}"
        for choice in action.choices or ():
            assert str(choice) in out
    assert "example" in out
    return out


# ------------------------------------------------------------------- help ----


def test_help_is_complete(capsys):
    top = subparsers(cli.build_parser())
    out = check_help(capsys, top["error"], "error")
    assert "cast" in out
    words = {"cast": ("relative error", "ULPs", "bits lost"), "matmul": ("relative error", "ULPs", "bits lost"),
             "train": ("recipes", "loss", "skipped")}
    for name, parser in subparsers(top["error"]).items():
        text = check_help(capsys, parser, "error", name)
        assert name in words, f"error {name}: add the words its --help must explain"
        assert all(w in text for w in words[name]), (name, words[name])
    text = check_help(capsys, top["conformance"], "conformance")
    assert "MODULE:FUNCTION" in text and "Exit code" in text and "JUnit" in text


# ------------------------------------------------------------- error cast ----


def error_cast_json(capsys, *argv: str) -> dict:
    rc, out, err = run(capsys, "error", "cast", *argv, "--format", "json")
    assert rc == 0, err
    return strict_json(out)


def test_error_cast_json(capsys):
    doc = error_cast_json(capsys, "--formats", "e4m3,fp16", "--rounding", "rne,rtz", "--dist", "normal,loguniform",
                          "--n", "4000", "--seed", "3")
    assert (doc["command"], doc["n"], doc["seed"], doc["overflow"], doc["subnormals"]) == \
        ("error cast", 4000, 3, "default", True)
    rows = doc["rows"]
    assert [(r["format"], r["rounding"], r["dist"]) for r in rows] == [
        (f, m, d) for f in ("e4m3", "fp16") for m in ("rne", "rtz") for d in ("normal", "loguniform")]
    by = {(r["format"], r["rounding"], r["dist"]): r for r in rows}
    for r in rows:
        assert r["input"] == "float32" and r["n"] == 4000
        assert 0 <= r["overflow_fraction"] <= 1 and 0 <= r["underflow_fraction"] <= 1
        assert r["max_ulp_error"] <= (0.5 if r["rounding"] == "rne" else 1)
        assert r["mean_rel_error"] <= r["max_rel_error"]
    # DESIGN §5: E4M3 with RNE overflows (to NaN) exactly for |x| > 464; fp16 for |x| >= 65520
    assert by["e4m3", "rne", "normal"]["overflow_threshold"] == {"value": 464, "inclusive": False}
    assert by["fp16", "rne", "normal"]["overflow_threshold"] == {"value": 65520, "inclusive": True}
    assert by["e4m3", "rtz", "normal"]["overflow_threshold"] == {"value": 480, "inclusive": True}
    assert by["fp16", "rne", "normal"]["underflow_threshold"] == {"value": 2.0**-25, "inclusive": True}
    assert by["fp16", "rtz", "normal"]["underflow_threshold"] == {"value": 2.0**-24, "inclusive": False}
    x = sample("loguniform", 4000, "e4m3", 3).astype(np.float64)
    assert by["e4m3", "rne", "loguniform"]["overflow_fraction"] == np.mean(np.abs(x) > 464) > 0
    assert by["e4m3", "rne", "loguniform"]["underflow_fraction"] == np.mean(np.abs(x) <= 2.0**-10) > 0
    assert by["e4m3", "rtz", "loguniform"]["overflow_fraction"] == np.mean(np.abs(x) >= 480)
    # bf16-style identity: rounding the normal sample to fp16 with RNE leaves every value in range
    assert by["fp16", "rne", "normal"]["overflow_fraction"] == 0


def test_error_cast_is_deterministic_and_covers_specials(capsys):
    argv = ["error", "cast", "--formats", "fp4,e8m0,fp64,binary8p3", "--rounding", "sr,rup", "--dist", "loguniform",
            "--n", "2000", "--format", "json"]
    first, second = run(capsys, *argv), run(capsys, *argv)
    assert first == second and first[0] == 0
    doc = strict_json(first[1])
    fp64 = [r for r in doc["rows"] if r["format"] == "fp64"]
    assert all(r["input"] == "float64" and r["max_rel_error"] == 0 and r["overflow_fraction"] == 0 for r in fp64)
    e8m0 = [r for r in doc["rows"] if r["format"] == "e8m0"]
    assert all(r["underflow_threshold"] is None and r["underflow_fraction"] == 0 for r in e8m0)


def test_error_cast_stochastic_rounding_is_unbiased(capsys):
    doc = error_cast_json(capsys, "--formats", "bf16", "--rounding", "sr,rtz", "--n", "20000")
    sr, rtz = doc["rows"]
    assert sr["max_ulp_error"] < 1 and rtz["max_ulp_error"] < 1
    assert abs(sr["mean_ulp_error"] - 1 / 3) < 0.01 and abs(rtz["mean_ulp_error"] - 0.5) < 0.01


def test_error_cast_table_markdown_csv(capsys):
    argv = ["error", "cast", "--formats", "e4m3,bf16", "--n", "500"]
    rc, out, err = run(capsys, *argv)
    assert rc == 0, err
    lines = out.splitlines()
    assert "max rel err" in lines[0] and "overflows at |x|" in lines[0] and len(lines) == 4
    assert "> 464" in lines[2] and "<= 2^-10" in lines[2]
    rc, out, _ = run(capsys, *argv, "--format", "markdown")
    assert rc == 0 and all(line.startswith("|") for line in out.strip().splitlines())
    rc, out, _ = run(capsys, *argv, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rc == 0 and [r["format"] for r in rows] == ["e4m3", "bf16"] and float(rows[0]["max_ulp_error"]) <= 0.5


def test_error_cast_options(capsys):
    doc = error_cast_json(capsys, "--formats", "e4m3", "--overflow", "saturate", "--dist", "loguniform", "--n", "3000")
    (row,) = doc["rows"]
    assert doc["overflow"] == "saturate" and row["overflow_fraction"] > 0 and row["max_ulp_error"] <= 0.5
    doc = error_cast_json(capsys, "--formats", "fp16", "--no-subnormals", "--dist", "loguniform", "--n", "3000")
    assert doc["subnormals"] is False
    assert doc["rows"][0]["underflow_threshold"]["value"] == 2.0**-14 - 2.0**-25


def test_error_cast_plot(capsys, tmp_path, monkeypatch):
    target = tmp_path / "cast.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        rc, out, err = run(capsys, "error", "cast", "--n", "100", "--plot", str(target))
        assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and "matplotlib" in err
        assert not target.exists()
        return
    rc, out, err = run(capsys, "error", "cast", "--n", "100", "--plot", str(target))
    assert rc == 0, err
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # as if it were not installed
    rc, out, err = run(capsys, "error", "cast", "--n", "100", "--plot", str(tmp_path / "b.png"))
    assert rc == 2 and "matplotlib" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------ conformance ----


def test_conformance_passes_the_right_kernel(capsys, tmp_path):
    junit = tmp_path / "ok.xml"
    rc, out, err = run(capsys, "conformance", f"{KERNELS}:cast_e4m3", "--op", "cast", "--to", "e4m3",
                       "--cases", "200", "--junit", str(junit))
    assert rc == 0, err
    assert "PASSED" in out and "ties" in out and "FAIL" not in out
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("failures") == "0" and suite.get("errors") == "0" and len(suite.findall("testcase")) > 6


def test_conformance_fails_the_truncating_kernel(capsys, tmp_path):
    junit = tmp_path / "bad.xml"
    rc, out, err = run(capsys, "conformance", f"{KERNELS}:cast_bf16_truncating", "--to", "bf16", "--cases", "100",
                       "--dist", "normal", "--junit", str(junit))
    assert rc == 1, err
    assert "FAILED" in out and "matches rounding='rtz' instead of 'rne'" in out
    assert "ULP distance histogram" in out and "0x" in out
    suite = ET.parse(junit).getroot().find("testsuite")
    failures = suite.findall("testcase/failure")
    assert int(suite.get("failures")) == len(failures) > 0
    assert {tc.get("name") for tc in suite.findall("testcase") if tc.find("failure") is not None} >= {"ties"}


def test_conformance_json_and_module_form(capsys, monkeypatch):
    monkeypatch.chdir(ROOT / "examples")
    rc, out, err = run(capsys, "conformance", "cast_kernels:cast_e4m3_saturating", "--to", "e4m3",
                       "--format", "json", "--cases", "50")
    assert rc == 1, err
    doc = strict_json(out)
    assert doc["passed"] is False and doc["kernel"] == "cast_kernels:cast_e4m3_saturating"
    assert "overflow='saturate'" in doc["diagnosis"][0]
    rc, out, err = run(capsys, "conformance", "cast_kernels:cast_e4m3_saturating", "--to", "e4m3",
                       "--overflow", "saturate", "--format", "json", "--cases", "50")
    assert rc == 0 and strict_json(out)["passed"] is True
    rc, out, _ = run(capsys, "conformance", "cast_kernels:cast_e4m3", "--to", "e4m3", "--format", "csv", "--cases", "9")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rc == 0 and rows[0]["name"] == "values" and all(r["passed"] == "true" for r in rows)


def test_conformance_stochastic(capsys, tmp_path):
    kernel = tmp_path / "sr_kernel.py"
    kernel.write_text("import precisionlab as pl\n\ndef to_bf16(x):\n"
                      "    return pl.round(x, 'bf16', rounding='sr', seed=7, backend='numpy')\n")
    rc, out, err = run(capsys, "conformance", f"{kernel}:to_bf16", "--to", "bf16", "--rounding", "sr", "--seed", "7",
                       "--dist", "normal", "--cases", "100", "--format", "json")
    assert rc == 0, err
    assert strict_json(out)["spec"]["seed"] == 7


@pytest.mark.parametrize("argv, needle", [
    (["error", "cast", "--formats", "e9m9"], "e9m9"),
    (["error", "cast", "--rounding", "bogus"], "bogus"),
    (["error", "cast", "--dist", "gamma"], "gamma"),
    (["error", "cast", "--n", "0"], "--n"),
    (["error", "cast", "--n", "many"], "many"),
    (["error", "cast", "--overflow", "wrap"], "wrap"),
    (["error", "cast", "--formats", ","], "formats"),
    (["error"], "ANALYSIS"),
    (["error", "bogus"], "bogus"),
    (["conformance", f"{KERNELS}:cast_e4m3"], "--to"),
    (["conformance", f"{KERNELS}:nope", "--to", "e4m3"], "nope"),
    (["conformance", "no_such_module_xyz:f", "--to", "e4m3"], "no_such_module_xyz"),
    (["conformance", "justaname", "--to", "e4m3"], "MODULE:FUNCTION"),
    (["conformance", "missing/file.py:f", "--to", "e4m3"], "missing/file.py"),
    (["conformance", f"{KERNELS}:ml_dtypes", "--to", "e4m3"], "not a function"),
    (["conformance", f"{KERNELS}:cast_e4m3", "--to", "e9m9"], "e9m9"),
    (["conformance", f"{KERNELS}:cast_e4m3", "--to", "e4m3", "--sr-bits", "8"], "sr_bits"),
    (["conformance", f"{KERNELS}:cast_e4m3", "--to", "e4m3", "--op", "conv"], "conv"),
    (["conformance", f"{KERNELS}:cast_e4m3", "--to", "e4m3", "--cases", "-3"], "-3"),
    (["conformance", f"{KERNELS}:cast_e4m3", "--op", "matmul"], "--spec"),
    (["conformance", f"{KERNELS}:cast_e4m3", "--to", "e4m3", "--junit", "/no/such/dir/x.xml"], "--junit"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, argv, needle):
    assert_usage_error(*run(capsys, *argv), needle)


def test_exit_code_of_the_real_process():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, "-m", "precisionlab", "conformance", f"{KERNELS}:cast_e4m3_saturating",
                           "--to", "e4m3", "--cases", "20", "--format", "json"], capture_output=True, text=True,
                          encoding="utf-8", env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert strict_json(proc.stdout)["mismatches"] > 0


def test_conformance_matmul(capsys):
    kernels = str(ROOT / "examples" / "matmul_kernels.py")
    rc, out, err = run(capsys, "conformance", f"{kernels}:gemm_bf16", "--op", "matmul", "--spec", "torch_cpu_tn",
                       "--cases", "40")
    assert rc == 0, err
    rc, out, err = run(capsys, "conformance", f"{kernels}:gemm_bf16_acc16", "--op", "matmul", "--spec",
                       "torch_cpu_tn", "--cases", "40", "--format", "json")
    doc = strict_json(out)
    assert rc == 1 and doc["passed"] is False and doc["cases"][0]["name"] == "normal[4x40x3]"
