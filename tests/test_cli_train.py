"""precisionlab error train: the side-by-side table, its machine formats, progress and errors."""

from __future__ import annotations

import csv
import io
import json

import pytest

from precisionlab import cli

SMALL = ["--steps", "2", "--hidden", "4", "--samples", "16", "--seed", "1"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_error_is_a_group_with_train(capsys):
    rc, out, _ = run(capsys, "error", "--help")
    assert rc == 0 and "train" in out and "example" in out
    rc, out, _ = run(capsys, "error", "train", "--help")
    assert rc == 0
    for opt in ("--recipes", "--model", "--steps", "--task", "--seed", "--format", "--plot", "--lr", "--optimizer",
                "--batch-size", "--hidden", "--samples", "--no-progress", "torch_amp_fp16", "mxfp8"):
        assert opt in out, opt
    rc, _, err = run(capsys, "error")
    assert rc == 2 and "error" in err


def test_json_has_one_record_per_recipe_and_the_curves(capsys):
    rc, out, err = run(capsys, "error", "train", "--recipes", "fp32,torch_amp_bf16", *SMALL, "--format", "json")
    assert rc == 0, err
    doc = json.loads(out)
    assert [r["recipe"] for r in doc["recipes"]] == ["fp32", "torch_amp_bf16"]
    fp32, bf16 = doc["recipes"]
    assert fp32["divergence"] == 0 and 0 < bf16["divergence"] < 0.05
    assert fp32["skipped_steps"] == bf16["skipped_steps"] == 0
    assert fp32["underflow_fraction"] == 0 and 0 <= fp32["test_accuracy"] <= 1
    assert set(fp32) == {"recipe", "final_loss", "test_loss", "test_accuracy", "skipped_steps", "underflow_fraction",
                         "overflowed_gradients", "divergence", "seconds"}
    assert doc["curves"]["torch_amp_bf16"]["scale"] == [1.0, 1.0]
    assert len(doc["curves"]["fp32"]["loss"]) == 2 and doc["steps"] == 2 and doc["model"] == "mlp"
    assert "fp32: 2 steps" in err and "torch_amp_bf16: 2 steps" in err   # progress on stderr


def test_table_and_csv(capsys):
    rc, out, err = run(capsys, "error", "train", "--recipes", "torch_amp_fp16", *SMALL, "--no-progress")
    assert rc == 0, err
    assert "divergence vs fp32" in out.splitlines()[0] and "torch_amp_fp16" in out and err == ""
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["torch_amp_fp16"]  # no row for the reference
    rc, out, err = run(capsys, "error", "train", "--recipes", "torch_amp_fp16", *SMALL, "--no-progress",
                       "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rc == 0 and [r["recipe"] for r in rows] == ["torch_amp_fp16"] and rows[0]["skipped_steps"] == "0"


@pytest.mark.parametrize("argv, words", [
    (["--recipes", "fp32,amp_o3"], "recipe='amp_o3' is not a recipe; allowed: fp32, pure_fp16"),
    (["--recipes", ","], "give at least one recipe name"),
    (["--steps", "0"], "steps=0 must be >= 1"),
    (["--lr", "nan"], "lr=nan must be a finite number"),
    (["--model", "transformer", "--task", "blobs"], "needs (samples, seq, features) inputs"),
])
def test_bad_arguments_are_one_line_errors(capsys, argv, words):
    rc, out, err = run(capsys, "error", "train", *argv, "--no-progress")
    assert rc == 2 and out == ""
    assert words in err and len(err.strip().splitlines()) == 1


def test_plot_without_matplotlib_fails_before_training(capsys, tmp_path, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    rc, out, err = run(capsys, "error", "train", "--recipes", "fp32", *SMALL, "--plot", str(tmp_path / "l.png"))
    assert rc == 2 and out == "" and "--plot needs matplotlib" in err and "precisionlab[plot]" in err
    assert not (tmp_path / "l.png").exists()
