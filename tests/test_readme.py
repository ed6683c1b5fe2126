"""The README's Python examples run and print what the README says they print."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def python_blocks(text: str) -> list[tuple[int, str]]:
    """Every ```python fenced block as (line number of its first line, source)."""
    blocks = []
    for m in re.finditer(r"^```python[ \t]*\n(.*?)^```[ \t]*$", text, flags=re.MULTILINE | re.DOTALL):
        blocks.append((text.count("\n", 0, m.start(1)) + 1, m.group(1)))
    return blocks


def test_readme_has_examples():
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert blocks, "README.md has no ```python examples"
    parser = doctest.DocTestParser()
    assert all(parser.get_examples(src) for _, src in blocks), "a ```python block in README.md has no >>> example"


def test_readme_examples():
    """All blocks run in order in one namespace, as a reader would type them."""
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    if not blocks:
        pytest.fail("README.md has no ```python examples")
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    globs: dict = {}
    report: list[str] = []
    for lineno, src in blocks:
        test = parser.get_doctest(src, globs, f"README.md:{lineno}", str(README), lineno - 1)
        runner.run(test, out=report.append, clear_globs=False)
        globs = test.globs  # DocTest copies its globals: carry them to the next block
    results = runner.summarize(verbose=False)
    assert results.attempted > 0
    assert results.failed == 0, "README.md examples failed:\n" + "".join(report)
