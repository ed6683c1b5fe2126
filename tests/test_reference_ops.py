"""The ops seam: role and cast-point vocabularies, Float64Ops, shape errors."""

from __future__ import annotations

import numpy as np
import pytest
from precisionlab.reference import CAST_POINTS, ROLES, Float32Ops, Float64Ops

OPS = Float64Ops()


def test_vocabularies():
    assert ROLES == ("forward", "dgrad", "wgrad")
    assert {"input", "weight", "master", "param_grad", "loss.grad", "optimizer.exp_avg"} <= set(CAST_POINTS)


def test_float64_ops_is_float64_matmul_and_identity_cast():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.arange(12, dtype=np.float32).reshape(3, 4)
    c = np.arange(4.0)
    out = OPS.matmul(a, b, "forward", "fc", c=c)
    assert out.dtype == np.float64 and np.array_equal(out, a.astype(np.float64) @ b + c)
    batched = OPS.matmul(np.ones((5, 2, 3)), np.ones((3, 4)), "dgrad", "attn.scores")
    assert batched.shape == (5, 2, 4)
    x = np.array([0.1, -2.0], dtype=np.float32)
    assert np.array_equal(OPS.cast(x, "relu.out", "act"), x.astype(np.float64))


def test_float32_ops_is_plain_float32_numpy():
    ops = Float32Ops()
    a = np.arange(6, dtype=np.float64).reshape(2, 3) / 7
    b = np.arange(12, dtype=np.float64).reshape(3, 4) / 3
    out = ops.matmul(a, b, "forward", "fc", c=np.ones(4))
    assert out.dtype == np.float32 and np.array_equal(out, a.astype(np.float32) @ b.astype(np.float32) + 1)
    assert ops.cast(a, "weight", "fc.weight").dtype == np.float32 and ops.master_dtype == np.float32


@pytest.mark.parametrize("call, words", [
    (lambda: OPS.matmul(np.ones((2, 3)), np.ones((3, 2)), "backward", "fc"), "role='backward'"),
    (lambda: OPS.cast(np.ones(2), "activation", "fc"), "what='activation'"),
    (lambda: OPS.matmul(np.ones((2, 3)), np.ones((4, 2)), "forward", "fc1"), "site='fc1'"),
    (lambda: OPS.matmul(np.ones(3), np.ones((3, 2)), "forward", "fc"), "at least 2 dimensions"),
    (lambda: OPS.matmul(np.ones((2, 2, 3)), np.ones((3, 3, 2)), "forward", "fc"), "do not broadcast"),
])
def test_bad_input_is_named(call, words):
    with pytest.raises(ValueError) as info:
        call()
    assert words in str(info.value)
