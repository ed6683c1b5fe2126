"""Collects the per-file outcome of tests/golden and prints it as a table at the end of the run."""

from __future__ import annotations

import pytest

from precisionlab import golden

RESULTS: dict[str, list[golden.CaseResult]] = {}


@pytest.fixture
def golden_results() -> dict[str, list[golden.CaseResult]]:
    return RESULTS


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001 -- pytest's hook signature
    if not RESULTS:
        return
    terminalreporter.section("golden files: cases and output elements matched bit for bit")
    head = f"{'file':34} {'cases':>5} {'match':>5} {'finding':>7} {'mismatch':>8} {'skipped':>7} {'unrec':>5} " \
           f"{'checked':>8} {'matched':>8} {'elements':>8}"
    terminalreporter.write_line(head)
    for path in sorted(RESULTS):
        s = golden.summarize(RESULTS[path])
        terminalreporter.write_line(
            f"{path:34} {s['cases']:>5} {s['match']:>5} {s['open finding']:>7} {s['mismatch']:>8} {s['skipped']:>7} "
            f"{s['not recorded']:>5} "
            f"{s['checked']:>8} {s['matched']:>8} {s['elements']:>8}")
