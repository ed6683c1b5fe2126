"""`precisionlab error matmul`: presets x K x distributions against the exact product.

The reference (cli.exact_matmul) is checked against a Fraction sum written from the
definition; the table's facts are the textbook ones of issue 3: an exact step gives no
error, fp16 accumulation loses more with K, and promoting H100 FP8 partial sums to fp32
every 128 K-elements (DeepSeek-V3) bounds the error growth that plain h100_e4m3 shows."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import sys
from fractions import Fraction

import numpy as np
import pytest
from cli_helpers import run, strict_json

import precisionlab as pl
from precisionlab import cli


def error_matmul(capsys, *argv: str) -> dict:
    rc, out, err = run(capsys, "error", "matmul", *argv, "--format", "json")
    assert rc == 0, err
    return strict_json(out)


def rows_by(doc: dict) -> dict:
    return {(r["preset"], r["dist"], r["k"]): r for r in doc["rows"]}


EXACT64 = "exact+a_format=e4m3+accumulator=fp64+output_format=fp64"


def test_help_is_complete(capsys):
    rc, out, err = run(capsys, "error", "matmul", "--help")
    assert rc == 0, err
    (sub,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    (esub,) = [a for a in sub.choices["error"]._actions if isinstance(a, argparse._SubParsersAction)]
    for action in esub.choices["matmul"]._actions:
        for opt in action.option_strings:
            assert opt in out
    for text in ("relative error", "ULPs", "bits lost", "promote", "h100_e4m3+promote128", "example", "cancelling"):
        assert text in out
    rc, out, _ = run(capsys, "error", "--help")
    assert rc == 0 and "matmul" in out


# ---------------------------------------------------------------- reference ----


def fraction_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The definition: sum of Fraction products."""
    out = np.empty((a.shape[0], b.shape[1]), dtype=object)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            out[i, j] = sum((Fraction(x) * Fraction(y) for x, y in zip(a[i], b[:, j], strict=True)), Fraction(0))
    return out


def test_exact_matmul_is_the_fraction_sum():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((3, 50)) * np.exp2(rng.integers(-60, 60, (3, 50)))
    b = rng.standard_normal((50, 2)) * np.exp2(rng.integers(-60, 60, (50, 2)))
    a[0, :3] = [0.0, -0.0, 5e-324]                    # zeros and the smallest subnormal
    b[:2, 1] = [1e300, -1e300]
    assert (cli.exact_matmul(a, b) == fraction_matmul(a, b)).all()
    assert cli.exact_matmul(np.zeros((1, 3)), np.ones((3, 1)))[0, 0] == 0


def test_cancelling_pairs_cancel_exactly():
    a, b = cli.matmul_inputs("cancelling", 2, 64, 3, seed=1)
    ar, br = (np.asarray(pl.round(x, "e4m3"), dtype=np.float64) for x in (a, b))
    big = np.abs(br[:, 0]) > 1                        # the pair rows of B (~16 each)
    assert big.sum() == 32
    exact = cli.exact_matmul(ar, br)
    small = cli.exact_matmul(ar[:, ~big], br[~big])
    assert (exact == small).all()                     # the 16 pairs contribute exactly 0


def test_inputs_are_deterministic_and_as_described():
    a1, b1 = cli.matmul_inputs("uniform", 4, 256, 4, seed=3)
    a2, b2 = cli.matmul_inputs("uniform", 4, 256, 4, seed=3)
    assert (a1 == a2).all() and (b1 == b2).all() and (a1 >= 0).all() and (b1 < 1).all()
    with pytest.raises(ValueError, match="dist='loguniform'"):
        cli.matmul_inputs("loguniform", 1, 1, 1, seed=0)


# --------------------------------------------------------------- the table ----


def test_json_rows_and_exact_rows(capsys):
    doc = error_matmul(capsys, "--presets", f"exact,{EXACT64}", "--k", "1,64,1000", "--m", "3", "--n", "2",
                       "--seed", "7")
    assert (doc["command"], doc["m"], doc["n"], doc["seed"]) == ("error matmul", 3, 2, 7)
    assert [(r["preset"], r["dist"], r["k"]) for r in doc["rows"]] == [
        (p, d, k) for p in ("exact", EXACT64) for d in ("normal", "uniform", "cancelling") for k in (1, 64, 1000)]
    for r in doc["rows"]:
        if r["preset"] == EXACT64:   # e4m3 products span < 53 bits: the exact sum is an fp64 number
            assert r["output_format"] == "fp64"
            assert all(r[key] == 0 for key in ("max_rel_error", "mean_rel_error", "max_ulp_error",
                                               "mean_ulp_error", "max_bits_lost", "mean_bits_lost"))
        else:                        # one rounding to fp32: correctly rounded
            assert r["output_format"] == "fp32"
            assert r["max_ulp_error"] <= 0.5 and r["max_rel_error"] <= 2.0**-24 and r["max_bits_lost"] == 0


def test_fp16_accumulation_error_grows_with_k(capsys):
    ks = (64, 256, 1024, 4096)
    doc = error_matmul(capsys, "--presets", "fp16_accumulate", "--k", ",".join(map(str, ks)), "--dist", "uniform")
    by = rows_by(doc)
    errs = [by["fp16_accumulate", "uniform", k]["max_rel_error"] for k in ks]
    means = [by["fp16_accumulate", "uniform", k]["mean_rel_error"] for k in ks]
    assert errs == sorted(errs) and means == sorted(means)
    assert errs[-1] > 10 * errs[0]
    assert by["fp16_accumulate", "uniform", 4096]["mean_bits_lost"] > by["fp16_accumulate", "uniform", 64][
        "mean_bits_lost"] + 3


def test_promotion_bounds_h100_e4m3_error_growth(capsys):
    doc = error_matmul(capsys, "--presets", "h100_e4m3,h100_e4m3+promote128,deepseek_fp8", "--k", "64,256,4096",
                       "--dist", "normal,uniform")
    by = rows_by(doc)
    for dist in ("normal", "uniform"):
        plain, promoted = by["h100_e4m3", dist, 4096], by["h100_e4m3+promote128", dist, 4096]
        assert promoted["max_rel_error"] < plain["max_rel_error"]
        assert promoted["mean_rel_error"] < plain["mean_rel_error"]
        # K <= 128: one chunk, promotion changes nothing
        assert by["h100_e4m3", dist, 64] == {**by["h100_e4m3+promote128", dist, 64], "preset": "h100_e4m3"}
        # deepseek_fp8 with unit scales is h100_e4m3 promoted every 128
        assert {**by["deepseek_fp8", dist, 4096], "preset": "x"} == {**promoted, "preset": "x"}
    # positive sums: without promotion the error grows ~K, with it it stays at the chunk's level
    plain = [by["h100_e4m3", "uniform", k]["max_rel_error"] for k in (256, 4096)]
    promoted = [by["h100_e4m3+promote128", "uniform", k]["max_rel_error"] for k in (256, 4096)]
    assert plain[1] > 10 * plain[0] and promoted[1] < 2 * promoted[0]


def test_default_presets_include_promotion(capsys):
    names = [s.name for s in cli.build_parser().parse_args(["error", "matmul"]).presets]
    assert "h100_e4m3" in names and "h100_e4m3+promote128" in names and "fp16_accumulate" in names


def test_modifiers():
    spec = cli.parse_matmul_spec("h100_e4m3+promote128")
    assert spec == dataclasses.replace(pl.get_preset("h100_e4m3"), promote_every=128)
    assert spec.name == "h100_e4m3+promote128"
    spec = cli.parse_matmul_spec("deepseek_fp8+promote_every=none+a_scale_block=none+b_scale_block=none")
    assert spec.promote_every is None and not spec.has_scales
    assert cli.parse_matmul_spec("fp16_accumulate+step_rounding=rtz").step_rounding.value == "rtz"


def test_table_markdown_csv(capsys):
    argv = ["error", "matmul", "--presets", "h100_fp16,exact", "--k", "16", "--dist", "normal"]
    rc, out, err = run(capsys, *argv)
    assert rc == 0, err
    lines = out.splitlines()
    assert "max rel err" in lines[0] and "bits lost (max)" in lines[0] and len(lines) == 4
    rc, out, _ = run(capsys, *argv, "--format", "markdown")
    assert rc == 0 and out.startswith("| preset")
    rc, out, _ = run(capsys, *argv, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rc == 0 and [r["preset"] for r in rows] == ["h100_fp16", "exact"] and rows[1]["max_bits_lost"] == "0.0"


@pytest.mark.parametrize("argv, needle", [
    (["--presets", "no_such_preset"], "no_such_preset"),
    (["--presets", "h100_e4m3+promo"], "promo"),
    (["--presets", "h100_e4m3+promote0"], "promote_every=0"),
    (["--presets", "h100_e4m3+k_fused=0"], "k_fused=0"),
    (["--presets", ""], "empty list"),
    (["--k", "0"], "K='0'"),
    (["--k", "64,abc"], "K='abc'"),
    (["--dist", "loguniform"], "loguniform"),
    (["--m", "0"], "--m"),
    (["--n", "-3"], "--n"),
    (["--seed", "x"], "--seed"),
    (["--presets", "exact+a_format=binary8p7+accumulator=fp64+output_format=fp64", "--dist", "cancelling"],
     "overflow"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, argv, needle):
    rc, out, err = run(capsys, "error", "matmul", "--k", "64", *argv)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err and "error" in err


def test_plot(capsys, tmp_path, monkeypatch):
    target = tmp_path / "matmul.png"
    argv = ["error", "matmul", "--presets", "h100_e4m3,exact", "--k", "64,256", "--dist", "normal,cancelling",
            "--plot", str(target)]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        rc, out, err = run(capsys, *argv)
        assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and "matplotlib" in err
        assert not target.exists()
        return
    rc, out, err = run(capsys, *argv)
    assert rc == 0, err
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # as if it were not installed
    rc, out, err = run(capsys, *argv[:-1], str(tmp_path / "b.png"))
    assert rc == 2 and "matplotlib" in err and len(err.strip().splitlines()) == 1
