"""Helpers shared by the CLI test files: run a command in-process, parse strict JSON."""

from __future__ import annotations

import json

from precisionlab import cli


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``precisionlab ARGV...`` in this process: (exit code, stdout, stderr)."""
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def strict_json(text: str):
    """json.loads that refuses NaN/Infinity (not JSON)."""
    def bad(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=bad)
