"""The matmul property-test corpus of the CPU kernels (tests/test_matmul.py: random specs,
K from 0 up past every block, NaN/Inf/±0/subnormals/overflow operands, block scales), drawn
for the GPU kernels' tests, and the comparison with the NumPy reference.

``kernel(a3, b3, c3, sa, sb, spec, seed)`` is any implementation of the matmul kernel
interface (``matmul_values``); the reference result comes from ``pl.matmul(backend="numpy")``
on the same operands, and the kernel is called on the same arrays that pl.matmul hands its
kernels, so the front end's rounding of the operands is not part of what is compared.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from test_matmul import SPECIALS, SPREAD, VALUES, draw_operands, draw_scales, specs

import precisionlab as pl
from precisionlab.backends import numpy_backend as ref
from precisionlab.backends.cuda import matmul_unsupported

__all__ = ["draw_case", "kernel_inputs", "check_kernel", "covered_specs", "VALUES", "SPREAD", "SPECIALS"]


def covered_specs():
    """test_matmul's random specs that the GPU kernels compute (nearly all of them)."""
    return specs().filter(lambda s: matmul_unsupported(s) is None)


def draw_case(data, spec, M, N, K, specials: bool, with_c: bool):
    values = (VALUES | SPREAD | SPECIALS) if specials else (VALUES | SPREAD)
    a, b, c = draw_operands(data, M, N, K, values, with_c)
    sa, sb = draw_scales(data, spec, M, N, K)
    return a, b, c, sa, sb


def kernel_inputs(a, b, c, sa, sb, spec):
    """The arrays pl.matmul hands matmul_values: (B, M, K), (B, K, N), (B, M, N) float64 values of
    the input formats, scales expanded to the operands' shapes."""
    captured = {}

    class Capture:                  # the reference backend, recording what its matmul kernel gets
        name = "capture"
        round_values = staticmethod(ref.round_values)

        @staticmethod
        def matmul_values(*args):
            captured["args"] = args
            return ref.matmul_values(*args)

    import precisionlab.backends as backends

    saved = backends.select_backend
    backends.select_backend = lambda backend, array=None: Capture
    try:
        kw = {} if c is None else {"c": c}
        if sa is not None:
            kw.update(a_scale=sa, b_scale=sb)
        pl.matmul(a, b, spec, seed=0 if spec.stochastic else None, backend="numpy", **kw)
    finally:
        backends.select_backend = saved
    return captured["args"][:5]


def bits(x: np.ndarray) -> np.ndarray:
    return x.view(np.uint64 if x.dtype == np.float64 else np.uint32)


def check_kernel(kernel, a3, b3, c3, sa, sb, spec, seed, context: str = "") -> None:
    """The kernel's (B, M, N) float64 result bit for bit against the reference kernel's."""
    want = ref.matmul_values(a3, b3, c3, sa, sb, spec, seed)
    got = np.asarray(kernel(a3, b3, c3, sa, sb, spec, seed))
    assert got.dtype == np.float64 and got.shape == want.shape, context
    bad = np.flatnonzero(bits(got).reshape(-1) != bits(want).reshape(-1))
    assert bad.size == 0, (f"{context}: {bad.size} of {want.size} elements differ, first at {bad[:4].tolist()}: "
                           f"{got.reshape(-1)[bad[:4]].tolist()} vs {want.reshape(-1)[bad[:4]].tolist()}; {spec}")
