"""The matmul property-test corpus of the CPU kernels (tests/test_matmul.py: random specs,
K from 0 up past every block, NaN/Inf/±0/subnormals/overflow operands, block scales), drawn
for the GPU kernels' tests, and the comparison with the NumPy reference.

``kernel(a3, b3, c3, sa, sb, spec, seed)`` is any implementation of the matmul kernel
interface (``matmul_values``); the reference result comes from ``pl.matmul(backend="numpy")``
on the same operands, and the kernel is called on the same arrays that pl.matmul hands its
kernels, so the front end's rounding of the operands is not part of what is compared.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import strategies as st
from test_matmul import SPECIALS, SPREAD, VALUES, draw_operands, draw_scales, specs

import precisionlab as pl
from precisionlab.backends import numpy_backend as ref
from precisionlab.backends.cuda import matmul_unsupported

__all__ = ["draw_case", "kernel_inputs", "check_kernel", "covered_specs", "fused_specs", "order_specs",
           "scaled_specs", "wide_cases", "preset_scales", "assert_not_covered", "VALUES", "SPREAD", "SPECIALS",
           "MODES"]


def covered_specs():
    """test_matmul's random specs that the GPU kernels compute (nearly all of them)."""
    return specs().filter(lambda s: matmul_unsupported(s) is None)


def scale_grid(shape: tuple[int, ...], block) -> tuple[int, ...]:
    """The shape of the scales of an operand of ``shape`` (..., rows, cols) with ``block``:
    ceil(rows / block_rows) x ceil(cols / block_cols), None for the whole dimension."""
    *batch, rows, cols = shape
    return (*batch, *(-(-n // (bk or max(n, 1))) for n, bk in zip((rows, cols), block, strict=True)))


def preset_scales(rng, spec, a_shape, b_shape):
    """Random power-of-two scales of the spec's blocks for operands of these shapes (None without)."""
    return tuple(None if block is None else np.exp2(rng.integers(-3, 3, scale_grid(shape, block))).astype(np.float32)
                 for shape, block in ((a_shape, spec.a_scale_block), (b_shape, spec.b_scale_block)))


def assert_not_covered(call, spec, backend: str) -> None:
    """A spec the GPU kernels do not cover: ``call()`` raises the ValueError that names the backend
    and the parameter with its value (matmul_unsupported's reason), never a KeyError or a result."""
    reason = matmul_unsupported(spec)
    assert reason is not None and re.match(r"(order|scale_at)=", reason), reason
    with pytest.raises(ValueError, match=rf"backend={backend!r} cannot compute .*{re.escape(reason)}"):
        call()


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


MODES = ["rne", "rna", "rtz", "rup", "rdn", "rto", "sr", "sr_equal"]


@st.composite
def fused_specs(draw):
    """The block FMA in detail (test_matmul.test_fused_steps_equal_the_oracle): alignment, cuts,
    the e_ref floor, C early / late, AMD's two stages, every step rounding."""
    c_mode = draw(st.sampled_from(["early", "late_rn", "late_rd"]))
    return pl.MatmulSpec(
        a_format=draw(st.sampled_from(["fp16", "bf16", "e5m2", "e4m3"])), step="fused", k_fused=draw(st.integers(1, 6)),
        n_frac=draw(st.integers(0, 8) if c_mode == "late_rd" else st.none() | st.integers(0, 30)),
        align_rounding=draw(st.sampled_from(["rtz", "floor"])), c_mode=c_mode,
        ref_exp_floor=draw(st.none() | st.integers(-12, 3)), late_n_frac=draw(st.integers(0, 8)),
        accumulator=draw(st.sampled_from(["fp32", "fp16", "bf16", pl.Format(5, 6, name="e5m6"),
                                          pl.Format(8, 13, name="e8m13")])),
        step_rounding=draw(st.sampled_from(MODES)), c_format="fp32", output_format="fp32")


@st.composite
def order_specs(draw, stochastic=False):
    """The orders over K and promotion with a low-precision accumulator that shows every order
    (test_matmul.test_orders_and_promotion_equal_the_oracle); stochastic: random-bit counters."""
    step = draw(st.sampled_from(["ieee", "pairwise", "fused"]))
    k = 1 if step == "ieee" else draw(st.integers(1, 3))
    order = draw(st.sampled_from(["sequential", "pairwise", "interleaved(2)", "interleaved(3)", "lanes(1)", "lanes(2)",
                                  "lanes(4)", "lanes(8)", "blocked(1)", "blocked(2)", "blocked(3)"]))
    if order.startswith("blocked"):
        order = f"blocked({int(order[8:-1]) * k})"
    promote = draw(st.none() | st.integers(1, 4))
    modes = ["sr", "sr_equal", "rto"] if stochastic else ["rne", "rtz", "rup", "rna"]
    return pl.MatmulSpec(a_format="fp16", step=step, k_fused=k, n_frac=6,
                         accumulator=draw(st.sampled_from(["fp16", "bf16", pl.Format(5, 3, name="e5m3")])),
                         step_rounding=draw(st.sampled_from(modes)), order=order,
                         promote_every=None if promote is None else promote * k, c_format="fp32",
                         output_format="fp16" if stochastic else "fp32",
                         output_rounding="sr" if stochastic else "rne")


@st.composite
def scaled_specs(draw):
    """Block scales at the operands or at promotion (test_matmul.test_scales_equal_the_oracle)."""
    where = draw(st.sampled_from(["operands", "promotion"]))
    step = draw(st.sampled_from(["ieee", "fused", "exact"]))
    k = 2 if step == "fused" else 1
    promote = draw(st.integers(1, 4))
    kblock = draw(st.integers(1, 3)) * k * (promote if where == "promotion" else 1)
    return pl.MatmulSpec(a_format="e4m3", b_format="e5m2", step=step, k_fused=k, n_frac=10, accumulator="bf16",
                         step_rounding=draw(st.sampled_from(["rtz", "rne", "sr"])), promote_every=promote * k,
                         a_scale_block=(draw(st.none() | st.integers(1, 2)), kblock),
                         b_scale_block=(kblock, draw(st.none() | st.integers(1, 2))), scale_at=where,
                         output_format="fp32")


#: Sums that need more than 62 bits: an operand with a long significand (C as a float64, an
#: accumulator of up to 52 fraction bits) far above or below the products, and cancellation next
#: to the round-to-odd sticky bit.
FAR = st.builds(lambda s, m, e: s * m * 2.0**e, st.sampled_from([-1, 1]), st.integers(1, 2**11 - 1),
                st.integers(-60, 40))
WIDE_B = st.sampled_from([1.0, -1.0, 2.0**-30, 3.0, 2.0**20, -(2.0**-40), 2.0**30])
LONG = st.builds(lambda s, m, e: s * m * 2.0**e, st.sampled_from([-1, 1]), st.integers(2**52, 2**53 - 1),
                 st.integers(-120, 60))
#: Large values on the accumulator's grid: with the products shifted out of the 128-bit window
#: entirely, only the sticky bit says the sum is inexact.
SHORT_BIG = st.builds(lambda s, m, e: s * m * 2.0**e, st.sampled_from([-1, 1]), st.integers(1, 2**20),
                      st.integers(85, 107))
WIDE_C = LONG | SHORT_BIG | st.floats(-1e6, 1e6) | st.sampled_from([1.0 + 2.0**-52, -(2.0**-60), 2.0**70,
                                                                      2.0**-1074, 1e300])


@st.composite
def wide_cases(draw):
    """(spec, a, b, c): additions into accumulators up to fp64, 64 random bits for sr."""
    mode = draw(st.sampled_from(MODES))
    acc = draw(st.sampled_from(["fp32", "bf16", pl.Format(8, 40, name="e8m40"), pl.Format(11, 30, name="e11m30"),
                                "fp64"]))
    spec = pl.MatmulSpec(a_format="fp16", accumulator=acc, step_rounding=mode, c_format="fp64",
                         output_format="fp64", output_rounding=mode,
                         order=draw(st.sampled_from(["sequential", "pairwise", "lanes(2)"])))
    K = draw(st.integers(1, 6))
    a = np.array([draw(st.lists(FAR | SPREAD, min_size=K, max_size=K))])
    b = np.array([draw(st.lists(WIDE_B, min_size=K, max_size=K))]).T
    c = np.array([[draw(WIDE_C)]])
    return spec, a, b, c


def below_the_window_cases():
    """(spec, a, b, c) where C is on the accumulator's grid and the products lie wholly below the
    128-bit window of the addition: only the sticky bit tells the directed, odd and stochastic
    modes that the sum is inexact (and, with cancellation, which neighbour it is)."""
    cases = []
    for acc in ("fp32", "bf16", "fp64", pl.Format(8, 40, name="e8m40")):
        for mode in MODES:
            for order in ("sequential", "pairwise"):
                spec = pl.MatmulSpec(a_format="fp16", accumulator=acc, step_rounding=mode, order=order,
                                     c_format="fp64", output_format="fp64")
                for c in (2.0**120, -(3 * 2.0**118), 2.0**126 * (1 + 2.0**-7), 1e300):
                    for a, b in (([1.0], [2.0**-10]), ([-3.0, 1.0], [2.0**-12, 2.0**-12]), ([2.0**-24], [-(2.0**-14)])):
                        cases.append((spec, np.array([a]), np.array([b]).T, np.array([[c]])))
    return cases

