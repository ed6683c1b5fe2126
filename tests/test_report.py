"""`precisionlab report` (precisionlab/report.py): the committed docs/report.md is what the
documented command writes now, the same command gives the same bytes, the numbers are those
of the `error` commands and agree with DESIGN facts, the Markdown is well formed, the plots,
the options and their one-line errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import assert_usage_error, run, strict_json
from precisionlab.reference.recipes import recipes

import precisionlab as pl
from precisionlab import report

ROOT = Path(__file__).resolve().parent.parent
DOCS_REPORT = ROOT / "docs" / "report.md"
#: A small report for the tests that do not need the default one.
SMALL = ["--formats", "bf16,e4m3,fp4_e2m1", "--rounding", "rne,rtz,sr", "--n", "3000",
         "--presets", "exact,fp16_accumulate,h100_e4m3,h100_e4m3+promote128", "--k", "32,512",
         "--train", "fp32,pure_fp16", "--steps", "3", "--dist", "uniform,cancelling"]




@pytest.fixture(scope="module")
def small_json() -> dict:
    return strict_json(report.build_report(**{a.lstrip("-"): v for a, v in zip(SMALL[::2], SMALL[1::2],
                                                                                 strict=True)}).to_json())


# ------------------------------------------------------------ docs/report.md ----


def test_committed_report_is_what_the_documented_command_writes(capsys, tmp_path):
    """docs/report.md cannot go stale: the command its first lines name, run now, writes the same bytes.
    (Regenerate with: precisionlab report --out docs --no-plots.)"""
    committed = DOCS_REPORT.read_text(encoding="utf-8")
    assert "`precisionlab report --out docs --no-plots`" in committed.split("\n## ")[0]
    rc, out, err = run(capsys, "report", "--out", str(tmp_path), "--no-plots", "--format", "markdown")
    assert rc == 0, err
    written = (tmp_path / "report.md").read_bytes()
    assert written == out.encode("utf-8"), "--format markdown prints what --out writes"
    assert sorted(os.listdir(tmp_path)) == ["report.md"], "--no-plots writes no plots"
    assert written == DOCS_REPORT.read_bytes(), \
        "docs/report.md is stale: regenerate it with 'precisionlab report --out docs --no-plots'"


def test_readme_quick_start_runs_the_report():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", quick, flags=re.DOTALL)
    assert len(commands) == 2, "the Quick start has exactly two commands"
    assert "pip install ." in commands[0] and "precisionlab report" in commands[0]
    assert "pytest" in commands[1]
    assert "precisionlab report --out docs --no-plots" in readme


# ---------------------------------------------------------------- determinism ----


def test_same_command_same_bytes(tmp_path):
    """Two processes (different hash seeds) running the same command write the same bytes, and
    nothing in the output reads like a time or a date."""
    outputs = []
    for i, hashseed in enumerate(("1", "2")):
        env = {**os.environ, "PYTHONHASHSEED": hashseed,
               "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
        target = tmp_path / f"run{i}"
        proc = subprocess.run([sys.executable, "-m", "precisionlab", "report", *SMALL, "--out", str(target),
                               "--no-plots", "--format", "json"], capture_output=True, env=env, cwd=tmp_path,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr.decode()
        outputs.append((proc.stdout, (target / "report.md").read_bytes()))
    assert outputs[0] == outputs[1]
    text = outputs[0][1].decode("utf-8")
    assert not re.search(r"\b(19|20)\d\d-\d\d-\d\d\b|\d\d:\d\d:\d\d", text), "a date or a time in the report"
    assert not re.search(r"\bseconds\b|\btime \(s\)|elapsed", text, flags=re.IGNORECASE)
    assert str(tmp_path) not in text


# -------------------------------------------------------------------- content ----


def test_json_sections_and_settings(small_json):
    doc = small_json
    assert set(doc) == {"report", "version", "command", "settings", "formats", "cast_error", "matmul_error",
                        "recipes", "training"}
    assert doc["version"] == pl.__version__
    assert doc["command"] == "precisionlab report " + " ".join(SMALL[:-2])   # the default --dist is left out
    s = doc["settings"]
    assert s["cast_formats"] == ["bf16", "e4m3", "fp4_e2m1"] and s["roundings"] == ["rne", "rtz", "sr"]
    assert s["k"] == [32, 512] and s["matmul_backend"] == "numpy" and s["cast_inputs"] == 3000
    assert [(r["format"], r["rounding"]) for r in doc["cast_error"]] == \
        [(f, m) for f in ("bf16", "e4m3", "fp4_e2m1") for m in ("rne", "rtz", "sr")]
    assert [(r["preset"], r["dist"], r["k"]) for r in doc["matmul_error"]] == \
        [(p, d, k) for p in ("exact", "fp16_accumulate", "h100_e4m3", "h100_e4m3+promote128")
         for d in ("uniform", "cancelling") for k in (32, 512)]
    assert [r["recipe"] for r in doc["recipes"]] == list(recipes)
    assert s["train_recipes"] == ["fp32", "pure_fp16"] and s["train_steps"] == 3
    assert [r["recipe"] for r in doc["training"]] == ["fp32", "pure_fp16"]
    assert doc["training"][0]["divergence"] == 0 and "seconds" not in doc["training"][0]


def test_formats_section_is_the_catalogue(small_json):
    rows = {r["name"]: r for r in small_json["formats"]}
    assert list(rows) == list(pl.formats)
    # DESIGN §4 facts
    assert rows["e4m3"]["max"] == 448 and rows["e4m3"]["smallest_subnormal"] == 2.0**-9
    assert rows["e4m3"]["has_inf"] is False and rows["e5m2"]["max"] == 57344
    assert rows["fp4_e2m1"]["max"] == 6 and rows["fp4_e2m1"]["smallest_subnormal"] == 0.5
    assert rows["bf16"]["smallest_normal"] == 2.0**-126 and rows["fp16"]["max"] == 65504


def test_cast_rows_are_those_of_error_cast(capsys, small_json):
    rc, out, err = run(capsys, "error", "cast", "--formats", "bf16,e4m3,fp4_e2m1", "--rounding", "rne,rtz,sr",
                       "--n", "3000", "--format", "json")
    assert rc == 0, err
    assert strict_json(out)["rows"] == small_json["cast_error"]


def test_cast_rows_agree_with_rounding_facts(small_json):
    rows = {(r["format"], r["rounding"]): r for r in small_json["cast_error"]}
    for fmt in ("bf16", "e4m3", "fp4_e2m1"):
        assert rows[fmt, "rne"]["max_ulp_error"] <= 0.5            # nearest: within half an ulp
        assert 0.5 < rows[fmt, "rtz"]["max_ulp_error"] < 1         # truncation: below one ulp
        assert rows[fmt, "sr"]["max_ulp_error"] < 1
        assert rows[fmt, "rtz"]["mean_ulp_error"] > rows[fmt, "rne"]["mean_ulp_error"]
    # E4M3: 464 is the tie between 448 and the would-be 480 and goes to 448; anything larger overflows (DESIGN §5)
    assert rows["e4m3", "rne"]["overflow_threshold"] == {"value": 464.0, "inclusive": False}
    assert rows["e4m3", "rne"]["underflow_threshold"] == {"value": 2.0**-10, "inclusive": True}
    assert rows["e4m3", "rtz"]["underflow_threshold"] == {"value": 2.0**-9, "inclusive": False}
    # bf16 with RNE overflows from the midpoint between max and 2^128 (a tie goes to the even 2^128)
    assert rows["bf16", "rne"]["overflow_threshold"] == {"value": (2 - 2.0**-8) * 2.0**127, "inclusive": True}
    # FP4 saturates: standard-normal inputs beyond 7 (the midpoint of 6 and 8) overflow, none are NaN
    assert rows["fp4_e2m1", "rne"]["overflow_threshold"] == {"value": 7.0, "inclusive": True}


def test_matmul_rows_are_those_of_error_matmul_on_the_default_backend(capsys, small_json):
    """The report's matmuls run on the NumPy reference, `error matmul` on Numba: the same rows."""
    rc, out, err = run(capsys, "error", "matmul", "--presets", "exact,fp16_accumulate,h100_e4m3,h100_e4m3+promote128",
                       "--k", "32,512", "--dist", "uniform,cancelling", "--format", "json")
    assert rc == 0, err
    assert strict_json(out)["rows"] == small_json["matmul_error"]


def test_matmul_rows_show_the_accumulators(small_json):
    rows = {(r["preset"], r["dist"], r["k"]): r for r in small_json["matmul_error"]}
    for dist in ("uniform", "cancelling"):
        for k in (32, 512):
            exact = rows["exact", dist, k]   # one rounding of the exact sum: correctly rounded
            assert exact["max_ulp_error"] <= 0.5 and exact["max_bits_lost"] == 0
    # fp16 accumulation of positive terms: the error grows with K
    assert rows["fp16_accumulate", "uniform", 512]["mean_rel_error"] > rows["fp16_accumulate", "uniform", 32][
        "mean_rel_error"]
    # promotion to fp32 every 128 elements changes nothing below K = 128 and bounds the growth above
    assert rows["h100_e4m3+promote128", "uniform", 32] == {**rows["h100_e4m3", "uniform", 32],
                                                           "preset": "h100_e4m3+promote128"}
    assert rows["h100_e4m3+promote128", "uniform", 512]["max_rel_error"] < \
        rows["h100_e4m3", "uniform", 512]["max_rel_error"]


def test_recipes_rows(small_json):
    rows = {r["recipe"]: r for r in small_json["recipes"]}
    for name, r in recipes.items():
        roles = r.policy.matmul
        assert (rows[name]["forward"], rows[name]["dgrad"], rows[name]["wgrad"]) == \
            (roles.forward.name, roles.dgrad.name, roles.wgrad.name)
        assert rows[name]["loss_scaling"] == r.loss_scaling
    assert rows["pure_fp16"]["weight"] == "fp16" and rows["pure_fp16"]["master_weights"] is False
    assert rows["fp8_delayed"]["fp8"] == "DelayedScaling" and rows["mxfp8"]["fp8"] == "MXScaling"
    # DESIGN §8: GradScaler 2^16, x2 after 2000 clean steps, x0.5 on overflow; Apex max 2^24; Keras 2^15
    text = {name: report.recipe_record(r)["_loss"] for name, r in recipes.items()}
    assert text["torch_amp_fp16"] == "torch: init 2^16, ×2 after 2000 clean steps, ×0.5 and skip on overflow"
    assert text["apex_o1"].startswith("apex: init 2^16") and text["apex_o1"].endswith("max 2^24")
    assert text["keras_mixed_float16"].startswith("keras: init 2^15")
    assert text["fp32"] == text["torch_amp_bf16"] == "—"


def test_markdown_tables_are_well_formed():
    text = DOCS_REPORT.read_text(encoding="utf-8")
    tables = re.findall(r"(?:^\|.*\|\n)+", text, flags=re.MULTILINE)
    assert len(tables) == 5
    for table in tables:
        lines = table.splitlines()
        cells = [len(re.findall(r"(?<!\\)\|", line)) for line in lines]
        assert len(set(cells)) == 1, f"a row with a different number of cells: {lines[0]}"
        assert re.fullmatch(r"\|(:?-+:?\|)+", lines[1])
    headings = re.findall(r"^## (\d)\. (.*)$", text, flags=re.MULTILINE)
    assert [h[1] for h in headings] == ["Formats", "Cast error", "Matmul accumulation error", "Training recipes",
                                        "Training recipes side by side"]
    for number, title in headings:                       # the contents links resolve to the headings
        assert f"(#{number}-{title.lower().replace(' ', '-')})" in text


def test_table_output(capsys):
    rc, out, err = run(capsys, "report", *SMALL[:-4])
    assert rc == 0, err
    for title in ("1. Formats", "2. Cast error", "3. Matmul accumulation error", "4. Training recipes"):
        assert f"\n{title}\n" in "\n" + out
    assert "torch_amp_fp16" in out and "h100_e4m3+promote128" in out


# ---------------------------------------------------------------------- plots ----


def test_plots_with_and_without_matplotlib(capsys, tmp_path, monkeypatch):
    argv = ["report", "--formats", "bf16", "--rounding", "rne,rtz", "--n", "500", "--presets", "exact,h100_e4m3",
            "--k", "32,64", "--dist", "uniform"]
    try:
        import matplotlib  # noqa: F401
        have = True
    except ImportError:
        have = False
    if have:
        rc, _, err = run(capsys, *argv, "--out", str(tmp_path / "with"))
        assert rc == 0, err
        for name in ("cast-error.png", "matmul-error.png"):
            assert (tmp_path / "with" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"wrote {tmp_path / 'with' / name}" in err
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # as if it were not installed
    rc, _, err = run(capsys, *argv, "--out", str(tmp_path / "without"))
    assert rc == 0, err
    assert os.listdir(tmp_path / "without") == ["report.md"]
    assert "matplotlib is not installed" in err and len(err.strip().splitlines()) == 2
    if have:   # the Markdown does not depend on whether the plots could be drawn
        assert (tmp_path / "with" / "report.md").read_bytes() == (tmp_path / "without" / "report.md").read_bytes()


# ---------------------------------------------------------------------- errors ----


@pytest.mark.parametrize("argv, needle", [
    (["--k", "0"], "K='0'"),
    (["--k", "64,x"], "'x'"),
    (["--presets", "nope"], "nope"),
    (["--presets", "h100_e4m3+bogus"], "bogus"),
    (["--formats", "e9m9"], "e9m9"),
    (["--rounding", "bogus"], "bogus"),
    (["--dist", "gamma"], "gamma"),
    (["--n", "0"], "--n"),
    (["--m", "-1"], "-1"),
    (["--seed", "x"], "x"),
    (["--format", "csv"], "csv"),
    (["--backend", "tpu"], "tpu"),
    (["--out", str(Path(__file__))], "not a directory"),
    (["--out", str(Path(__file__) / "sub")], "--out"),
    (["--bogus"], "--bogus"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, argv, needle):
    assert_usage_error(*run(capsys, "report", *argv), needle)


def test_build_report_rejects_unknown_settings():
    with pytest.raises(ValueError, match="unknown settings \\['K'\\]"):
        report.build_report(K="32")
