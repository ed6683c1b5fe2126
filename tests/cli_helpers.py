"""Helpers shared by the CLI test files: run a command in-process, parse strict JSON, check a usage error."""

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


def assert_usage_error(rc: int, out: str, err: str, needle: str | None = None, context: object = None) -> None:
    """Exit code 2, nothing on stdout, one ``precisionlab ...: error: ...`` line on stderr (holding ``needle``)."""
    assert rc == 2, (context, out, err)
    assert out == "", context
    lines = err.strip().splitlines()
    assert len(lines) == 1, (context, err)
    assert lines[0].startswith("precisionlab") and "error:" in lines[0], (context, err)
    if needle is not None:
        assert needle in lines[0], (context, needle, err)
