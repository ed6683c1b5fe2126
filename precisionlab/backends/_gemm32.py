"""Register-blocked float32 GEMM that keeps the emulated order over K (DESIGN §6, fp32 RNE ``ieee`` steps).

When the accumulator is fp32 with RNE and every operand is a float32 value, one ``ieee`` step
``fl(acc + a·b)`` with an exact product is one hardware float32 FMA (a single rounding of the
exact sum, gradual underflow, IEEE signed zeros and specials); with ``product_format=fp32`` it
is a float32 multiply followed by a float32 add (two roundings, never contracted: the IR below
has no fast-math flags).  So the model of one output element is plain float32 arithmetic in
a fixed order, and the freedom left is *which elements run together*: a tile of ``MR`` rows x
``NR`` columns keeps ``MR x NR/V`` vector accumulators in registers while the K loop runs
innermost, every column stepping through the same k in the same order as the reference.

The orders over K become contiguous K ranges of a permuted packing: lane ``j`` of
``interleaved(w)`` / ``lanes(w)`` owns the k = j, j+w, ... below ``full = K - K mod w``; the
packing puts lane 0's ks first, then lane 1's, ..., then the tail ``full..K-1``.  A lane is then
one call of the micro-kernel from -0 over its range, and the reduction of the lanes (in order,
or by the halving tree), the tail and the final ``C + r`` are float32 additions on tiles.

The micro-kernel is emitted as LLVM vector IR (``<V x float>``): Numba's vectoriser keeps to
256 bits on AVX-512 hosts and cannot keep a tile in registers across the K loop; explicit vectors
and phi nodes do both.  Tile shape from the host: AVX-512 8 x 32 (16 zmm accumulators), else
6 x 16 (12 ymm, AVX2), which leaves room for the B vectors and the broadcast A value.
"""

from __future__ import annotations

import llvmlite.binding as llvm_binding
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["MR", "NR", "ORDERS", "lane_permutation", "pack_a", "pack_b", "gemm32"]

_FEATURES = llvm_binding.get_host_cpu_features()
if _FEATURES.get("avx512f", False):
    V, NV, MR = 16, 2, 8
elif _FEATURES.get("avx2", False) or _FEATURES.get("avx", False):
    V, NV, MR = 8, 2, 6
else:
    V, NV, MR = 4, 2, 4
#: Columns per tile.
NR = V * NV

#: Order kinds this kernel runs, as the numba backend numbers them.
ORDERS = {"sequential": 0, "interleaved": 1, "lanes": 2, "blocked": 4}


def _tile_kernel(fused: bool, from_zero: bool):
    """The micro-kernel ``tile[r, c] <- tile[r, c] (+) a[k, r] * b[k, c]`` for k in 0..nk, in order.

    ``tile`` (MR*NR float32) from offset ``t0``, ``a`` packed as ``a[a0 + k*MR + r]``, ``b`` as
    ``b[b0 + k*NR + c]``.  ``fused``: one FMA per product; else a multiply and an add.
    ``from_zero``: the tile starts at -0 (a new partial sum) instead of its stored value."""

    @intrinsic
    def tile_steps(typingctx, tile, t0, a, a0, b, b0, nk):
        sig = types.void(tile, types.intp, a, types.intp, b, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            tile_v, t0_v, a_v, a0_v, b_v, b0_v, nk_v = args
            tptr = context.make_array(signature.args[0])(context, builder, tile_v).data
            aptr = context.make_array(signature.args[2])(context, builder, a_v).data
            bptr = context.make_array(signature.args[4])(context, builder, b_v).data
            i64 = ir.IntType(64)
            i32 = ir.IntType(32)
            f32 = ir.FloatType()
            vt = ir.VectorType(f32, V)
            vptr = vt.as_pointer()

            def const(x):
                return ir.Constant(i64, x)

            def vload(base, off):
                return builder.load(builder.bitcast(builder.gep(base, [off]), vptr), align=4)

            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt, vt, vt]),
                                                 f"llvm.fma.v{V}f32")
            zero_mask = ir.Constant(ir.VectorType(i32, V), [ir.Constant(i32, 0)] * V)
            undef = ir.Constant(vt, ir.Undefined)
            if from_zero:
                minus_zero = ir.Constant(vt, [ir.Constant(f32, -0.0)] * V)
                acc0 = [[minus_zero] * NV for r in range(MR)]
            else:
                acc0 = [[vload(tptr, builder.add(t0_v, const(r * NR + v * V))) for v in range(NV)]
                        for r in range(MR)]
            pre = builder.block
            head = builder.append_basic_block("tile.head")
            body = builder.append_basic_block("tile.body")
            done = builder.append_basic_block("tile.done")
            builder.branch(head)
            builder.position_at_end(head)
            k = builder.phi(i64)
            k.add_incoming(const(0), pre)
            acc = [[builder.phi(vt) for v in range(NV)] for r in range(MR)]
            for r in range(MR):
                for v in range(NV):
                    acc[r][v].add_incoming(acc0[r][v], pre)
            builder.cbranch(builder.icmp_signed("<", k, nk_v), body, done)
            builder.position_at_end(body)
            b_row = builder.add(b0_v, builder.mul(k, const(NR)))
            a_row = builder.add(a0_v, builder.mul(k, const(MR)))
            bv = [vload(bptr, builder.add(b_row, const(v * V))) for v in range(NV)]
            new = []
            for r in range(MR):
                x = builder.load(builder.gep(aptr, [builder.add(a_row, const(r))]), align=4)
                xs = builder.shuffle_vector(builder.insert_element(undef, x, ir.Constant(i32, 0)), undef, zero_mask)
                row = []
                for v in range(NV):
                    if fused:
                        row.append(builder.call(fma, [xs, bv[v], acc[r][v]]))
                    else:
                        row.append(builder.fadd(acc[r][v], builder.fmul(xs, bv[v])))
                new.append(row)
            k_next = builder.add(k, const(1))
            end = builder.block
            k.add_incoming(k_next, end)
            for r in range(MR):
                for v in range(NV):
                    acc[r][v].add_incoming(new[r][v], end)
            builder.branch(head)
            builder.position_at_end(done)
            for r in range(MR):
                for v in range(NV):
                    ptr = builder.bitcast(builder.gep(tptr, [builder.add(t0_v, const(r * NR + v * V))]), vptr)
                    builder.store(acc[r][v], ptr, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return tile_steps


_steps_fma, _steps_mul_add = _tile_kernel(True, False), _tile_kernel(False, False)
_new_fma, _new_mul_add = _tile_kernel(True, True), _tile_kernel(False, True)


def lane_permutation(K: int, kind: str, width: int) -> np.ndarray:
    """The packing order of K: identity, or each lane's ks (j, j+w, ... below full) lane by lane, then the tail."""
    if kind not in ("interleaved", "lanes"):
        return np.arange(K, dtype=np.int64)
    full = K - K % width
    lanes = np.arange(full, dtype=np.int64).reshape(-1, width).T.reshape(-1)
    return np.concatenate([lanes, np.arange(full, K, dtype=np.int64)])


@njit(parallel=True, cache=True)
def pack_a(a, perm, out):
    """A (nb, M, K) -> panels of MR rows, k-major: out[((bi*n_mp + i)*K + kk)*MR + r] = a[bi, i*MR + r, perm[kk]]."""
    nb, M, K = a.shape
    n_mp = (M + MR - 1) // MR
    for t in prange(nb * n_mp):
        bi = t // n_mp
        i = t % n_mp
        base = t * K * MR
        for r in range(MR):
            m = i * MR + r
            if m < M:
                for kk in range(K):
                    out[base + kk * MR + r] = np.float32(a[bi, m, perm[kk]])
            else:
                for kk in range(K):
                    out[base + kk * MR + r] = np.float32(0.0)


@njit(parallel=True, cache=True)
def pack_b(b, perm, out):
    """B (nb, K, N) -> panels of NR columns, k-major: out[((bi*n_np + j)*K + kk)*NR + c] = b[bi, perm[kk], j*NR + c]."""
    nb, K, N = b.shape
    n_np = (N + NR - 1) // NR
    for t in prange(nb * n_np):
        bi = t // n_np
        j = t % n_np
        base = t * K * NR
        n0 = j * NR
        width = min(NR, N - n0)
        for kk in range(K):
            row = b[bi, perm[kk]]
            o = base + kk * NR
            for c in range(width):
                out[o + c] = np.float32(row[n0 + c])
            for c in range(width, NR):
                out[o + c] = np.float32(0.0)


@njit(inline="always")
def _steps(fused, tile, t0, ap, a0, bp, b0, nk):
    """Continue the partial sums of a tile over nk steps."""
    if nk > 0:
        if fused:
            _steps_fma(tile, t0, ap, a0, bp, b0, nk)
        else:
            _steps_mul_add(tile, t0, ap, a0, bp, b0, nk)


@njit(inline="always")
def _new(fused, tile, t0, ap, a0, bp, b0, nk):
    """A tile of new partial sums (from -0) over nk steps."""
    if fused:
        _new_fma(tile, t0, ap, a0, bp, b0, nk)
    else:
        _new_mul_add(tile, t0, ap, a0, bp, b0, nk)


@intrinsic
def _add_tile(typingctx, x, x0, y, y0):
    """x[x0 + i] <- x[x0 + i] + y[y0 + i] (float32, RNE) over one tile, in vectors (the arrays may be one)."""
    sig = types.void(x, types.intp, y, types.intp)

    def codegen(context, builder, signature, args):
        x_v, x0_v, y_v, y0_v = args
        xptr = context.make_array(signature.args[0])(context, builder, x_v).data
        yptr = context.make_array(signature.args[2])(context, builder, y_v).data
        vptr = ir.VectorType(ir.FloatType(), V).as_pointer()
        for i in range(0, MR * NR, V):
            off = ir.Constant(ir.IntType(64), i)
            px = builder.bitcast(builder.gep(xptr, [builder.add(x0_v, off)]), vptr)
            py = builder.bitcast(builder.gep(yptr, [builder.add(y0_v, off)]), vptr)
            builder.store(builder.fadd(builder.load(px, align=4), builder.load(py, align=4)), px, align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always")
def _bit_reverse(x, bits):
    r = 0
    for _ in range(bits):
        r = (r << 1) | (x & 1)
        x >>= 1
    return r


@njit(parallel=True, cache=True)
def gemm32(ap, bp, c, out, M, N, K, order, width, fused):
    """``out (nb, M, N) float32 = C + A·B`` tile by tile in the order ``order`` (ORDERS) of width ``width``.

    ``ap`` / ``bp``: pack_a / pack_b of A and B with ``lane_permutation(K, order, width)``; ``c`` (nb, M, N).
    Lanes are computed one at a time into a small stack of tiles that stays in L1: ``interleaved`` adds
    each lane to the running s0 in order; ``lanes`` visits the lanes in bit-reversed order and merges equal
    levels (a binary counter), which is the halving tree s[i] += s[i + w/2], ... exactly."""
    nb = c.shape[0]
    n_mp = (M + MR - 1) // MR
    n_np = (N + NR - 1) // NR
    T = MR * NR
    w = width if (order == 1 or order == 2) else 1
    full = K - K % w
    seg = full // w
    levels = 0
    while (1 << levels) < w:
        levels += 1
    for t in prange(nb * n_np * n_mp):
        bi = t // (n_np * n_mp)
        j = (t // n_mp) % n_np
        i = t % n_mp
        a0 = (bi * n_mp + i) * K * MR
        b0 = (bi * n_np + j) * K * NR
        m0 = i * MR
        n0 = j * NR
        rows = min(MR, M - m0)
        cols = min(NR, N - n0)
        tile = np.zeros(T, np.float32)
        for r in range(rows):
            for cc in range(cols):
                tile[r * NR + cc] = np.float32(c[bi, m0 + r, n0 + cc])
        if order == 0:
            _steps(fused, tile, 0, ap, a0, bp, b0, K)
        elif order == 4:
            blk = np.empty(T, np.float32)
            for k0 in range(0, K, width):
                _new(fused, blk, 0, ap, a0 + k0 * MR, bp, b0 + k0 * NR, min(width, K - k0))
                _add_tile(tile, 0, blk, 0)
        elif seg == 0:                                  # K < w: every lane is -0 and x + -0 == x, the tail is s0
            acc = np.empty(T, np.float32)
            _new(fused, acc, 0, ap, a0, bp, b0, K)
            _add_tile(tile, 0, acc, 0)                  # C + r, one more addition
        elif order == 1:                                # interleaved: s0 (with the tail) + s1 + ... in order
            acc = np.empty(2 * T, np.float32)
            _new(fused, acc, 0, ap, a0, bp, b0, seg)
            _steps(fused, acc, 0, ap, a0 + full * MR, bp, b0 + full * NR, K - full)
            for lane in range(1, w):
                _new(fused, acc, T, ap, a0 + lane * seg * MR, bp, b0 + lane * seg * NR, seg)
                _add_tile(acc, 0, acc, T)
            _add_tile(tile, 0, acc, 0)
        else:                                           # lanes: the halving tree, then the tail into s0
            stack = np.empty((levels + 1) * T, np.float32)
            height = np.zeros(levels + 1, np.int64)
            top = 0
            for leaf in range(w):
                lane = _bit_reverse(leaf, levels)
                _new(fused, stack, top * T, ap, a0 + lane * seg * MR, bp, b0 + lane * seg * NR, seg)
                height[top] = 0
                top += 1
                while top >= 2 and height[top - 1] == height[top - 2]:
                    _add_tile(stack, (top - 2) * T, stack, (top - 1) * T)
                    height[top - 2] += 1
                    top -= 1
            _steps(fused, stack, 0, ap, a0 + full * MR, bp, b0 + full * NR, K - full)
            _add_tile(tile, 0, stack, 0)
        for r in range(rows):
            for cc in range(cols):
                out[bi, m0 + r, n0 + cc] = tile[r * NR + cc]
