"""Every command of the CLI, found by walking the parser (so a new command cannot be left out):
``--help`` is complete, a bad argument is a one-line error with exit code 2, and
``--format json`` prints valid JSON (strict: no NaN/Infinity constants)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from cli_helpers import assert_usage_error, run

from precisionlab import cli

ROOT = Path(__file__).resolve().parent.parent
CAST_KERNELS = str(ROOT / "examples" / "cast_kernels.py")
MATMUL_KERNELS = str(ROOT / "examples" / "matmul_kernels.py")


def leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...],
                                                                                        argparse.ArgumentParser]:
    """Command path (e.g. ``("error", "cast")``) -> parser, for every command that runs something."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {prefix: parser}
    out = {}
    for name, child in subs[0].choices.items():
        out.update(leaf_commands(child, prefix + (name,)))
    return out


LEAVES = leaf_commands(cli.build_parser())

#: Small, fast arguments that make each command print JSON.
JSON_ARGS: dict[tuple[str, ...], list[str]] = {
    ("formats",): ["e4m3", "bf16"],
    ("presets",): ["h100_e4m3"],
    ("round",): ["470", "0.1", "--to", "e4m3"],
    ("error", "cast"): ["--formats", "e4m3", "--n", "200"],
    ("error", "matmul"): ["--presets", "exact", "--k", "16", "--dist", "normal"],
    ("error", "train"): ["--recipes", "torch_amp_bf16", "--steps", "2", "--hidden", "4", "--samples", "16",
                         "--no-progress"],
    ("conformance",): [f"{CAST_KERNELS}:cast_e4m3", "--to", "e4m3", "--cases", "20"],
    ("report",): ["--formats", "e4m3", "--rounding", "rne", "--n", "200", "--presets", "exact", "--k", "16"],
}

#: One bad argument per command, and a word its one-line error must name.
BAD_ARGS: dict[tuple[str, ...], tuple[list[str], str]] = {
    ("formats",): (["e9m9"], "e9m9"),
    ("presets",): (["h100_fp17"], "h100_fp17"),
    ("round",): (["1", "--to", "e4m3", "--rounding", "bogus"], "bogus"),
    ("error", "cast"): (["--formats", "e4m3", "--n", "-5"], "-5"),
    ("error", "matmul"): (["--k", "0"], "K"),
    ("error", "train"): (["--recipes", "fp64_magic", "--no-progress"], "fp64_magic"),
    ("conformance",): ([f"{MATMUL_KERNELS}:gemm_bf16", "--op", "matmul", "--spec", "tpu_v9"], "tpu_v9"),
    ("report",): (["--k", "0"], "K"),
}


def test_every_command_is_covered():
    assert set(JSON_ARGS) == set(LEAVES), "add the new command to JSON_ARGS and BAD_ARGS"
    assert set(BAD_ARGS) == set(LEAVES)


@pytest.mark.parametrize("path", sorted(LEAVES), ids=" ".join)
def test_help_is_complete(capsys, path):
    rc, out, err = run(capsys, *path, "--help")
    assert rc == 0 and err == ""
    assert out.startswith(f"usage: precisionlab {' '.join(path)}")
    parser = LEAVES[path]
    assert parser.description, f"{path}: no description"
    for action in parser._actions:
        for opt in action.option_strings:
            assert opt in out, f"{path} --help does not mention {opt}"
        if action.help and action.help != argparse.SUPPRESS:
            assert action.help.split()[0] in out
        elif action.option_strings != ["-h", "--help"]:
            pytest.fail(f"{path}: {action.option_strings or action.dest} has no help text")
        for choice in action.choices or ():
            assert str(choice) in out
    assert "examples:" in out
    assert all(f"precisionlab {' '.join(path)}" in line for line in out.split("examples:")[1].strip().splitlines()
               if line.startswith("  precisionlab"))


@pytest.mark.parametrize("path", sorted(LEAVES), ids=" ".join)
def test_bad_argument_is_a_one_line_error_with_exit_code_2(capsys, path):
    argv, needle = BAD_ARGS[path]
    for args in (argv, ["--no-such-option"], ["--format", "yaml"]):
        assert_usage_error(*run(capsys, *path, *args), context=(path, args))
    rc, _, err = run(capsys, *path, *argv)
    assert needle in err


@pytest.mark.parametrize("path", sorted(LEAVES), ids=" ".join)
def test_format_json_is_valid_json(capsys, path):
    def bad(name):
        raise ValueError(f"non-standard JSON constant {name}")

    rc, out, err = run(capsys, *path, *JSON_ARGS[path], "--format", "json")
    assert rc in (0, 1), err                     # conformance exits 1 on a mismatch, still printing its JSON
    doc = json.loads(out, parse_constant=bad)
    assert isinstance(doc, (dict, list)) and doc
