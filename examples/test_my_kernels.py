"""A user's conformance suite: the example kernels checked with the precisionlab pytest plugin.

Run it with ``pytest examples/test_my_kernels.py`` (add ``--precisionlab-backend=all`` to
check against every backend, ``--precisionlab-preset=torch_cpu_tn`` to narrow the presets).
"""

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

import precisionlab as pl
from precisionlab.testing import assert_bitwise_equal, check_kernel
from precisionlab.testing import strategies as S

sys.path.insert(0, str(Path(__file__).parent))
import cast_kernels  # noqa: E402
import matmul_kernels  # noqa: E402


def test_cast_bf16(precisionlab_backend):
    report = check_kernel(cast_kernels.cast_bf16, "bf16", backend=precisionlab_backend)
    assert report.passed, report


@settings(max_examples=50, deadline=None)
@given(x=S.arrays("bf16", 32, dtype=np.float32, elements=S.cast_inputs("bf16")))
def test_cast_bf16_on_any_input(x):
    assert_bitwise_equal(cast_kernels.cast_bf16(x), pl.round(x, "bf16"), "bf16")


@pytest.mark.precisionlab_presets("torch_cpu_tn", "ml_dtypes_dot")
def test_gemm_bf16(precisionlab_preset):
    report = check_kernel(matmul_kernels.gemm_bf16, precisionlab_preset)
    assert report.passed, report
