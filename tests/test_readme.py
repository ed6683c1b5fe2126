"""The code examples of README.md and docs/*.md run and print what they say they print.

* ```python blocks are doctests; all blocks of one file run in order in one namespace, as a
  reader would type them.
* ```console blocks are shell sessions: ``$ precisionlab ...`` runs the CLI (in a scratch
  directory holding a copy of examples/), ``$ echo $?`` prints the previous command's exit
  code and ``$ head -n N FILE`` the start of a file it wrote; the output that follows each
  command must match (doctest's ELLIPSIS and NORMALIZE_WHITESPACE).
* ```python blocks whose info string names a file (```python file=examples/x.py) show that
  file verbatim; tests/test_testing_plugin.py runs it.
* ```bash blocks are commands that install things; only the Quick start has them.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import re
import shlex
import shutil
from pathlib import Path

import pytest

from precisionlab import cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
FILES = [README, *DOCS]
#: The pages that are not generated and must show runnable examples.
CONCEPT_PAGES = ("formats.md", "rounding.md", "accumulation.md", "trainer.md", "conformance.md")
FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
_FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", flags=re.MULTILINE | re.DOTALL)


def fenced_blocks(text: str) -> list[tuple[str, int, str]]:
    """Every fenced block as (info string, line number of its first line, body)."""
    return [(m.group("info").strip(), text.count("\n", 0, m.start("body")) + 1, m.group("body"))
            for m in _FENCE.finditer(text)]


def python_blocks(text: str) -> list[tuple[int, str]]:
    """The doctest blocks: ```python without a file= in the info string."""
    return [(line, body) for info, line, body in fenced_blocks(text) if info == "python"]


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_docs_pages_exist():
    assert [p for p in CONCEPT_PAGES if not (ROOT / "docs" / p).is_file()] == []
    readme = README.read_text(encoding="utf-8")
    for page in CONCEPT_PAGES + ("report.md",):
        assert f"docs/{page}" in readme, f"README does not link docs/{page}"


@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_blocks_are_of_known_kinds(path):
    text = path.read_text(encoding="utf-8")
    for info, line, body in fenced_blocks(text):
        where = f"{_rel(path)}:{line}"
        kind = info.split()[0] if info else ""
        assert kind in ("python", "console", "bash"), f"{where}: a ```{info} block is not executed; use python or " \
                                                      "console"
        if kind == "bash":
            assert path == README and line < text.index("\n## ", text.index("## Quick start")), \
                f"{where}: ```bash only in the Quick start (install commands); show commands as ```console"
        if info.startswith("python ") and "file=" in info:
            target = ROOT / info.split("file=", 1)[1].split()[0]
            assert target.is_file() and target.read_text(encoding="utf-8") == body, \
                f"{where}: the block must be {target.name} verbatim"
        if kind == "python" and info == "python":
            assert doctest.DocTestParser().get_examples(body), f"{where}: a ```python block with no >>> example"


@pytest.mark.parametrize("path", [README] + [ROOT / "docs" / p for p in CONCEPT_PAGES], ids=_rel)
def test_has_examples(path):
    blocks = fenced_blocks(path.read_text(encoding="utf-8"))
    assert any(info == "python" for info, _, _ in blocks), f"{_rel(path)} has no ```python examples"


@pytest.mark.parametrize("path", [p for p in FILES if python_blocks(p.read_text(encoding="utf-8"))], ids=_rel)
def test_python_examples(path, monkeypatch):
    monkeypatch.chdir(ROOT)                         # as a reader in the checkout: "examples" is a folder there
    blocks = python_blocks(path.read_text(encoding="utf-8"))
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    globs: dict = {}
    report: list[str] = []
    for lineno, src in blocks:
        test = parser.get_doctest(src, globs, f"{_rel(path)}:{lineno}", str(path), lineno - 1)
        runner.run(test, out=report.append, clear_globs=False)
        globs = test.globs  # DocTest copies its globals: carry them to the next block
    results = runner.summarize(verbose=False)
    assert results.attempted > 0
    assert results.failed == 0, f"{_rel(path)} examples failed:\n" + "".join(report)


def console_sessions(text: str) -> list[tuple[int, list[tuple[str, str]]]]:
    """Every ```console block as (line, [(command, expected output), ...])."""
    sessions = []
    for info, line, body in fenced_blocks(text):
        if info != "console":
            continue
        steps: list[tuple[str, list[str]]] = []
        for row in body.splitlines():
            if row.startswith("$ "):
                steps.append((row[2:], []))
            else:
                assert steps, f"line {line}: a console block must start with '$ '"
                steps[-1][1].append(row)
        sessions.append((line, [(cmd, "\n".join(out) + "\n" if out else "") for cmd, out in steps]))
    return sessions


def _run(command: str, last_rc: int | None) -> tuple[int | None, str]:
    argv = shlex.split(command)
    if argv == ["echo", "$?"]:
        return last_rc, f"{last_rc}\n"
    if argv[:2] == ["head", "-n"] and len(argv) == 4:
        lines = Path(argv[3]).read_text(encoding="utf-8").splitlines(keepends=True)
        return 0, "".join(lines[:int(argv[2])])
    assert argv[0] == "precisionlab", f"console examples run precisionlab, echo $? or head -n N FILE: {command!r}"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv[1:])
    return rc, out.getvalue()


CONSOLE_FILES = [p for p in FILES if console_sessions(p.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("path", CONSOLE_FILES, ids=_rel)
def test_console_examples(path, tmp_path, monkeypatch):
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(tmp_path)
    checker = doctest.OutputChecker()
    failures = []
    for line, steps in console_sessions(path.read_text(encoding="utf-8")):
        rc = None
        for command, expected in steps:
            next_rc, got = _run(command, rc)
            if not checker.check_output(expected, got, FLAGS):
                failures.append(f"{_rel(path)}:{line}: $ {command}\nexpected:\n{expected}got:\n{got}")
            if not command.startswith(("echo", "head")):
                if next_rc not in (0, 1) or (next_rc == 1 and not any(c == "echo $?" for c, _ in steps)):
                    failures.append(f"{_rel(path)}:{line}: $ {command} exited with {next_rc} (show a non-zero exit "
                                    "code with '$ echo $?')")
            rc = next_rc
    assert not failures, "\n\n".join(failures)


def test_accumulation_hardware_table_is_the_presets():
    """docs/accumulation.md's preset table states each preset's parameters: they must be the preset's."""
    import precisionlab as pl

    text = (ROOT / "docs" / "accumulation.md").read_text(encoding="utf-8")
    table = text.split("## The presets and the hardware they reproduce", 1)[1]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.splitlines()
            if line.startswith("| `")]
    seen = []
    for name, _hardware, inputs, step, k_fused, n_frac, c, acc, rnd, order, promote, output in rows:
        spec = pl.get_preset(name.strip("`"))
        seen.append(spec.name)
        b = spec.effective_b_format.name
        expected_inputs = spec.a_format.name + ("" if b == spec.a_format.name else f" × {b}")
        if spec.input_rounding.value != "rne":
            expected_inputs += f" ({spec.input_rounding.value} from fp32)"
        dash = lambda v: "—" if v is None else str(v)  # noqa: E731
        assert [inputs, step, k_fused, n_frac, c, acc, rnd, order, promote, output] == [
            expected_inputs, spec.step, str(spec.k_fused), dash(spec.n_frac),
            spec.c_mode if spec.step == "fused" else "—", spec.accumulator.name, spec.step_rounding.value,
            f"`{spec.order}`", dash(spec.promote_every), spec.output_format.name], name
    assert seen == list(pl.presets), "the table lists every preset once, in catalogue order"
