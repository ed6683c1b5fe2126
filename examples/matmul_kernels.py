"""Example user matmul kernels for ``check_kernel(..., op="matmul")`` and
``precisionlab conformance --op matmul``.

* :func:`gemm_bf16` -- bf16 operands (float32 arrays holding bf16 values), products exact in
  float32, a float32 running sum over K in ascending order, one rounding to bf16: what
  ``torch.matmul`` does on an AVX2 CPU for a column-major A (preset ``torch_cpu_tn``);
* :func:`gemm_bf16_acc16` -- wrong for that preset: the running sum is rounded to bf16
  after every addition (a bf16 accumulator).
"""

import ml_dtypes
import numpy as np


def gemm_bf16(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    acc = np.zeros((a.shape[0], b.shape[1]), dtype=np.float32)
    for k in range(a.shape[1]):
        acc = acc + a[:, k:k + 1].astype(np.float32) * b[k:k + 1, :].astype(np.float32)
    return acc.astype(ml_dtypes.bfloat16).astype(np.float32)


def gemm_bf16_acc16(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    acc = np.zeros((a.shape[0], b.shape[1]), dtype=np.float32)
    for k in range(a.shape[1]):
        acc = acc + a[:, k:k + 1].astype(np.float32) * b[k:k + 1, :].astype(np.float32)
        acc = acc.astype(ml_dtypes.bfloat16).astype(np.float32)
    return acc
