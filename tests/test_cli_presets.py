"""`precisionlab presets`: every preset listed with its parameters and source, JSON that
round-trips to the MatmulSpec, one-line errors for unknown names (exit code 2)."""

from __future__ import annotations

import csv
import dataclasses
import io

import pytest
from cli_helpers import run, strict_json

import precisionlab as pl
from precisionlab.formats import Format
from precisionlab.matmul import MatmulSpec


def test_json_lists_every_preset_with_every_field(capsys):
    rc, out, err = run(capsys, "presets", "--format", "json")
    assert rc == 0, err
    rows = strict_json(out)
    assert [r["name"] for r in rows] == list(pl.presets)
    field_names = {f.name for f in dataclasses.fields(MatmulSpec)}
    for row in rows:
        assert field_names <= set(row)
        assert row["source"], f"{row['name']} cites no source"
        # the JSON is the spec: rebuilding a MatmulSpec from it gives the preset back
        kwargs = {k: (tuple(v) if isinstance(v, list) else Format(**v) if isinstance(v, dict) else v)
                  for k, v in row.items() if k in field_names}
        assert MatmulSpec(**kwargs) == pl.get_preset(row["name"])


def test_named_presets_and_their_parameters(capsys):
    rc, out, err = run(capsys, "presets", "H100_E4M3", "deepseek_fp8", "--format", "json")
    assert rc == 0, err
    h100, deepseek = strict_json(out)
    assert (h100["name"], h100["a_format"], h100["effective_b_format"], h100["step"], h100["k_fused"],
            h100["n_frac"], h100["accumulator"]["name"], h100["step_rounding"], h100["promote_every"],
            h100["output_format"]) == ("h100_e4m3", "e4m3", "e4m3", "fused", 32, 13, "e8m13", "rtz", None, "fp32")
    assert (h100["accumulator"]["exponent_bits"], h100["accumulator"]["mantissa_bits"]) == (8, 13)  # 1-8-13
    assert deepseek["promote_every"] == 128 and deepseek["a_scale_block"] == [1, 128]
    assert deepseek["b_scale_block"] == [128, 128] and deepseek["scale_at"] == "promotion"


def test_table_shows_parameters_and_source(capsys):
    rc, out, err = run(capsys, "presets")
    assert rc == 0, err
    lines = out.splitlines()
    header = lines[0].split()
    for col in ("preset", "a", "b", "step", "k_fused", "n_frac", "c_mode", "accumulator", "order",
                "promote_every", "output", "source"):
        assert col in header
    assert len(lines) == 2 + len(pl.presets)
    (row,) = [ln for ln in lines if ln.startswith("deepseek_fp8 ")]
    assert "128" in row and "DeepSeek-V3 technical report" in row
    (row,) = [ln for ln in lines if ln.startswith("fp16_accumulate ")]
    assert row.split()[1:4] == ["fp16", "fp16", "ieee"] and "Textbook recursive summation" in row


def test_markdown_and_csv(capsys):
    rc, out, _ = run(capsys, "presets", "exact", "torch_cpu_nt", "--format", "markdown")
    order = str(pl.get_preset("torch_cpu_nt").order)
    assert rc == 0 and out.startswith("| preset") and order in out
    rc, out, _ = run(capsys, "presets", "exact", "torch_cpu_nt", "--format", "csv")
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["name"] for r in rows] == ["exact", "torch_cpu_nt"]
    assert rows[1]["order"] == order and rows[0]["step"] == "exact" and rows[0]["n_frac"] == ""


@pytest.mark.parametrize("argv, needle", [
    (["presets", "no_such_preset"], "no_such_preset"),
    (["presets", "h100_e4m3", "h100"], "'h100'"),
    (["presets", "--format", "xml"], "xml"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, argv, needle):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err and "error" in err
    if "no_such_preset" in argv:
        assert "h100_e4m3" in err  # the choices are listed
