"""tools/bench/bench_gpu.py runs on the lent GPU machine; here: it imports, parses its
arguments, prints its plan, and without a GPU exits 2 saying what is missing; its matmul suite
also runs on the stand-in CuPy (tests/gpu/fake_cupy.py, kernels from the host build), checked
against the reference as on a GPU."""

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


def test_matmul_dry_run_and_bad_presets():
    proc = _run("--dry-run", "--suite", "matmul", "--presets", "h100_fp16", "exact", "--matmul-sizes", "4096")
    assert proc.returncode == 0, proc.stderr
    assert "suite matmul: sizes [4096]" in proc.stdout and "'h100_fp16', 'exact'" in proc.stdout
    assert "cupy.matmul float32" in proc.stdout and "suite round" not in proc.stdout
    proc = _run("--suite", "matmul", "--presets", "h100_fp17")
    assert proc.returncode == 2 and "preset='h100_fp17'" in proc.stderr, proc.stderr
    proc = _run("--suite", "matmul", "--presets", "torch_cpu_nt")
    assert proc.returncode == 2 and "--presets torch_cpu_nt" in proc.stderr and "composite order" in proc.stderr, \
        proc.stderr


def _bench_module(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_gpu", module)          # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_matmul_suite_runs_on_the_stand_in_cupy(cb, monkeypatch):
    """The matmul suite's code path (data, cupy.matmul baseline, each preset checked against the
    reference, timing, the table) on the stand-in CuPy whose kernels are the host build."""
    import fake_cupy

    bench = _bench_module(monkeypatch)
    args = bench.parse_args(["--suite", "matmul", "--matmul-sizes", "12", "--presets", "h100_fp16", "exact",
                             "mi250_fp16", "--backends", "cupy", "--repeat", "1", "--matmul-repeat", "1"])
    results = bench.bench_matmul(args, fake_cupy)
    assert [r.what for r in results] == ["cupy.matmul float32", "matmul cupy h100_fp16", "matmul cupy exact",
                                         "matmul cupy mi250_fp16"]
    assert [r.step for r in results] == ["-", "fused", "exact", "pairwise"]
    assert all(r.n == 12 and r.seconds > 0 and r.macs_per_s == 12**3 / r.seconds for r in results)
    table = bench.matmul_table(results)
    assert "T MAC/s" in table and "matmul cupy exact" in table


def test_matmul_suite_refuses_a_wrong_kernel(cb, monkeypatch):
    import fake_cupy

    bench = _bench_module(monkeypatch)
    right = cb.matmul_values
    monkeypatch.setattr(cb, "matmul_values", lambda *args: right(*args) * 2)
    args = bench.parse_args(["--suite", "matmul", "--matmul-sizes", "8", "--presets", "fp32_sequential",
                             "--backends", "cupy", "--repeat", "1"])
    with pytest.raises(SystemExit, match="fp32_sequential differs from the NumPy reference"):
        bench.bench_matmul(args, fake_cupy)
