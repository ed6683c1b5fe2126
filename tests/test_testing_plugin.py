"""The pytest plugin, run on a small user suite with pytester: the option, the fixture, the
parametrisation over backends, the report header, and a user's check_kernel test."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

import precisionlab as pl
from precisionlab.backends import BACKENDS, available_backends, select_backend

pytest_plugins = ["pytester"]

# The inner pytest runs in a subprocess: in-process runs drop the modules first imported
# inside them (pytester's sys.modules snapshot), and numba cannot be imported twice.

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

SUITE = f'''
import sys
import numpy as np
import precisionlab as pl
from precisionlab.testing import assert_bitwise_equal, check_kernel
from precisionlab.testing.plugin import parametrize_backends

sys.path.insert(0, {str(EXAMPLES)!r})
import cast_kernels

SEEN = []

def test_backend_fixture(precisionlab_backend):
    assert precisionlab_backend in ("auto", {", ".join(repr(b) for b in BACKENDS)})
    y = pl.round(np.array([464.0, 470.0], np.float32), "e4m3", backend=precisionlab_backend)
    assert_bitwise_equal(y, np.array([448.0, np.nan], np.float32), "e4m3")

def test_user_kernel(precisionlab_backend):
    assert check_kernel(cast_kernels.cast_e4m3, "e4m3", backend=precisionlab_backend, shapes=((16,),)).passed

@parametrize_backends()
def test_every_backend(backend):
    assert backend in {available_backends()!r}
'''


def test_entry_point_is_registered():
    eps = importlib.metadata.entry_points(group="pytest11")
    assert any(ep.name == "precisionlab" and ep.value == "precisionlab.testing.plugin" for ep in eps), \
        "reinstall the package (pip install -e .) to register the pytest11 entry point"


def test_default_runs_once_with_auto(pytester):
    pytester.makepyfile(test_user=SUITE)
    result = pytester.runpytest_subprocess("-v")
    result.assert_outcomes(passed=2 + len(available_backends()))
    result.stdout.fnmatch_lines(["*precisionlab*--precisionlab-backend=auto*", "*test_backend_fixture?auto? PASSED*"])


def test_all_runs_over_every_available_backend(pytester):
    pytester.makepyfile(test_user=SUITE)
    result = pytester.runpytest_subprocess("-v", "--precisionlab-backend=all")
    n = len(available_backends())
    result.assert_outcomes(passed=3 * n)
    result.stdout.fnmatch_lines([f"*test_backend_fixture?{name}? PASSED*" for name in available_backends()])


def test_one_named_backend(pytester):
    pytester.makepyfile(test_user=SUITE)
    result = pytester.runpytest_subprocess("-v", "--precisionlab-backend", "numpy")
    result.assert_outcomes(passed=2 + len(available_backends()))
    result.stdout.fnmatch_lines(["*test_user_kernel?numpy? PASSED*"])


def test_bad_backend_is_a_usage_error(pytester):
    pytester.makepyfile(test_user=SUITE)
    result = pytester.runpytest_subprocess("--precisionlab-backend=tpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--precisionlab-backend*invalid choice*tpu*"])


def test_help_lists_the_option(pytester):
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--precisionlab-backend=NAME*"])
    assert all(name in result.stdout.str() for name in BACKENDS)


# ------------------------------------------------------------------ presets ----

PRESET_SUITE = f'''
import sys
import pytest
import precisionlab as pl
from precisionlab.backends import select_backend
from precisionlab.testing import check_kernel

sys.path.insert(0, {str(EXAMPLES)!r})
import matmul_kernels

def test_every_preset(precisionlab_preset):
    assert isinstance(precisionlab_preset, pl.MatmulSpec)
    assert pl.get_preset(precisionlab_preset.name) == precisionlab_preset

@pytest.mark.precisionlab_presets("torch_cpu_tn", "bf16_accumulate")
def test_user_gemm(precisionlab_preset, precisionlab_backend):
    if not hasattr(select_backend(precisionlab_backend), "matmul_values"):
        pytest.skip("no matmul kernel on this backend")
    report = check_kernel(matmul_kernels.gemm_bf16, precisionlab_preset, shapes=((2, 16, 3),), dists=("normal",),
                          backend=precisionlab_backend)
    assert report.passed == (precisionlab_preset.name == "torch_cpu_tn"), report    # fp32 accumulation
'''


def test_preset_fixture_runs_once_per_preset(pytester):
    pytester.makepyfile(test_user=PRESET_SUITE)
    result = pytester.runpytest_subprocess("-v")
    result.assert_outcomes(passed=len(pl.presets) + 2)
    result.stdout.fnmatch_lines(["*--precisionlab-preset=all*", "*test_every_preset?h100_e4m3? PASSED*",
                                 "*test_user_gemm?auto-torch_cpu_tn? PASSED*"])
    assert "test_user_gemm[auto-h100_fp16]" not in result.stdout.str()


def test_preset_option_narrows_every_test(pytester):
    pytester.makepyfile(test_user=PRESET_SUITE)
    result = pytester.runpytest_subprocess("-v", "--precisionlab-preset", "H100_FP16, torch_cpu_tn",
                                           "--precisionlab-backend=all")
    n = len(available_backends())
    with_matmul = sum(hasattr(select_backend(b), "matmul_values") for b in available_backends())
    # two presets; the gemm test keeps only torch_cpu_tn, per backend (skipped where no matmul kernel exists)
    result.assert_outcomes(passed=2 + with_matmul, skipped=n - with_matmul)
    result.stdout.fnmatch_lines(["*test_every_preset?h100_fp16? PASSED*", "*test_every_preset?torch_cpu_tn? PASSED*"])
    result = pytester.runpytest_subprocess("-v", "--precisionlab-preset=exact")
    result.assert_outcomes(passed=1, skipped=1)  # nothing in common with the marker: skipped


def test_bad_preset_is_a_usage_error(pytester):
    pytester.makepyfile(test_user=PRESET_SUITE)
    result = pytester.runpytest_subprocess("--precisionlab-preset=h100_fp17")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--precisionlab-preset*'h100_fp17' is not a preset*h100_fp16*"])
    pytester.makepyfile(test_user=PRESET_SUITE.replace('"bf16_accumulate"', '"bf16_acc"'))
    result = pytester.runpytest_subprocess()
    assert result.ret != 0
    assert "'bf16_acc' is not a preset" in result.stdout.str() + result.stderr.str()


def test_help_lists_the_preset_option(pytester):
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--precisionlab-preset=NAMES*"])
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["*precisionlab_presets(*names)*"])


def test_the_example_user_suite(pytester):
    """examples/test_my_kernels.py (shown verbatim in docs/conformance.md) passes, with the options too."""
    for name in ("test_my_kernels.py", "cast_kernels.py", "matmul_kernels.py"):
        (pytester.path / name).write_text((EXAMPLES / name).read_text(encoding="utf-8"), encoding="utf-8")
    result = pytester.runpytest_subprocess("-v", "test_my_kernels.py")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*test_gemm_bf16?torch_cpu_tn? PASSED*", "*test_gemm_bf16?ml_dtypes_dot? PASSED*"])
    result = pytester.runpytest_subprocess("-v", "test_my_kernels.py", "--precisionlab-backend=numpy",
                                           "--precisionlab-preset=torch_cpu_tn")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_cast_bf16?numpy? PASSED*", "*test_gemm_bf16?torch_cpu_tn? PASSED*"])
