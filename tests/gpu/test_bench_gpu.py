"""tools/bench/bench_gpu.py runs on the lent GPU machine; here: it imports, parses its
arguments, prints its plan, and without a GPU exits 2 saying what is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "bench" / "bench_gpu.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


def test_help_and_dry_run():
    assert _run("--help").returncode == 0
    proc = _run("--dry-run", "--sizes", "1e6", "4096", "--formats", "e4m3", "bf16", "--modes", "rne", "sr")
    assert proc.returncode == 0, proc.stderr
    assert "sizes [1000000, 4096]" in proc.stdout and "'e4m3', 'bf16'" in proc.stdout


@pytest.mark.parametrize("args, words", [(["--formats", "e9m9"], "format='e9m9'"), (["--modes", "fast"], "rounding"),
                                         (["--sizes", "1.5"], "positive integer")])
def test_bad_arguments(args, words):
    proc = _run(*args)
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr


def test_without_a_gpu_says_what_is_missing():
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed: this machine may run the benchmark")
    except ImportError:
        pass
    proc = _run("--sizes", "1000")
    assert proc.returncode == 2 and "needs a CUDA GPU" in proc.stderr and "cupy" in proc.stderr, proc.stderr
