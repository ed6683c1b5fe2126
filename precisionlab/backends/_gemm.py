"""Register-blocked GEMM kernels that keep the emulated order over K (DESIGN §6, ``ieee`` steps).

The model of one output element of an ``ieee`` spec is a fixed sequence of additions, each rounded
once to the accumulator.  Nothing in it couples different output elements, so a tile of ``MR`` rows
x ``NR`` columns can run together: its accumulators stay in vector registers while the K loop runs
innermost, and every element steps through the same k in the reference's order.  Two kinds of step:

* ``fp32`` accumulator, RNE, subnormals: ``fl(acc + a·b)`` with an exact product is one float32 FMA
  (a single rounding of the exact sum; IEEE signed zeros, Inf and NaN), and with
  ``product_format=fp32`` a float32 multiply then a float32 add (two roundings; the IR has no
  fast-math flags, so LLVM never contracts them).  Kinds ``fma32`` and ``mul_add32``; ``scaled32`` is
  ``mul_add32`` with the product times two per-tensor scales in between (``scale_at="products"``: three
  float32 multiplies, each rounded, then the add), the scales' float32 bits in ``rc[0]`` and ``rc[1]``.
* a narrower IEEE-like accumulator F (fp16, bf16, ...) with RNE: the step is computed in float64,
  ``s = RN53(acc + a·b)`` (the product is exact), then ``s`` is rounded to F by one more float64
  addition and subtraction (see :func:`_round_f64`).  That double rounding equals the single rounding
  of the exact sum when no midpoint of F can lie between the exact sum and ``s`` (see
  :func:`double_rounding_is_safe`); otherwise (bf16: a tiny accumulator
  under a product that is itself an F midpoint) the float64 sum is first rounded to odd (TwoSum and a
  sticky last bit; Boldo & Melquiond, IEEE TC 2008), which is exact for F of at most 51 fraction bits.
  Kinds ``rne64`` and ``rne64_odd``.

The orders over K become contiguous K ranges of a permuted packing: lane ``j`` of ``interleaved(w)``
/ ``lanes(w)`` owns k = j, j+w, ... below ``full = K - K mod w``; the packing puts lane 0's ks first,
then lane 1's, ..., then the tail ``full..K-1``.  A lane is one run of the micro-kernel from -0 over
its range; the reduction of the lanes (in order, or the halving tree), the tail and the final
``C + r`` are tile additions rounded the same way.

The micro-kernels are emitted as LLVM vector IR (``<V x float>``, ``<V x double>``): Numba's own
vectoriser keeps to 256 bits on AVX-512 hosts and cannot keep a tile in registers across the K loop;
explicit vectors and phi nodes do both.
"""

from __future__ import annotations

import functools
import threading

import llvmlite.binding as llvm_binding
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["KINDS", "ORDERS", "tile_shape", "lane_permutation", "rounding_constants", "double_rounding_is_safe",
           "pack_a", "pack_b", "gemm"]

_AVX512 = llvm_binding.get_host_cpu_features().get("avx512f", False)
_BYTES = 64 if _AVX512 else 32                     # vector register width
#: kind -> (MR, V, NV): rows per tile, lanes per vector, vectors per tile row.  fp32: 8 x 32 on AVX-512
#: (16 zmm accumulators), 6 x 16 on AVX2 (12 ymm); float64: 4 x 2 vectors, leaving registers for the
#: rounding's temporaries.
_SHAPES = {"fma32": (8 if _AVX512 else 6, _BYTES // 4, 2), "mul_add32": (8 if _AVX512 else 6, _BYTES // 4, 2),
           "scaled32": (8 if _AVX512 else 6, _BYTES // 4, 2), "rne64": (4, _BYTES // 8, 2),
           "rne64_odd": (4, _BYTES // 8, 2)}
KINDS = tuple(_SHAPES)

#: Order kinds these kernels run, numbered as the driver reads them.
ORDERS = {"sequential": 0, "interleaved": 1, "lanes": 2, "blocked": 4}


def tile_shape(kind: str) -> tuple[int, int]:
    """(MR, NR): rows and columns of one tile of ``kind``."""
    mr, v, nv = _SHAPES[kind]
    return mr, v * nv


def _lanes_first(K: int, width: int) -> np.ndarray:
    full = K - K % width
    lanes = np.arange(full, dtype=np.int64).reshape(-1, width).T.reshape(-1)
    return np.concatenate([lanes, np.arange(full, K, dtype=np.int64)])


@functools.lru_cache(maxsize=64)
def lane_permutation(K: int, kind: str, width: int, inner: int = 1) -> np.ndarray:
    """The packing order of K (read-only): identity, or each lane's ks (j, j+w, ... below full) lane by lane,
    then the tail; for ``blocked`` with an ``inner`` interleaving, that order within each block."""
    if kind in ("interleaved", "lanes"):
        perm = _lanes_first(K, width)
    elif kind == "blocked" and inner > 1:
        perm = np.concatenate([k0 + _lanes_first(min(width, K - k0), inner) for k0 in range(0, K, width)]
                              + [np.zeros(0, np.int64)])
    else:
        perm = np.arange(K, dtype=np.int64)
    perm.flags.writeable = False
    return perm


def double_rounding_is_safe(acc, a, b, c) -> bool:
    """Whether RNE to ``acc`` of the float64 sum RN53(x + y) equals RNE of the exact sum for every step.

    The additions are acc + product (a product of an ``a`` and a ``b`` value, exact in float64), two
    accumulator values, and C (a ``c`` value) plus either.  Let L be the larger addend, T the smaller.
    If the exact sum spans at most 53 bits it is a float64 and there is one rounding.  Otherwise T's
    lowest bit lies more than 52 places below L's top, and:

    * L is a value of F (the accumulator, or C when it lies on F's grid): then |T| < 2^(e_L - 52 + p_T)
      and the sum and its RN53 stay within 2^(e_L - 52 + p_T) + 2^(e_L - 52) of L, closer than F's
      nearest midpoint (at least 2^(e_L - m - 2) away), when p_T + m + 5 <= 53;
    * L is not on F's grid (a product with up to p_a + p_b bits may be an F midpoint): T can only lie
      that far below when e_L >= q_T + 52 with q_T the lowest bit T can have; when that makes |x| at
      least 2^(emax + 2), both roundings overflow to the same Inf.

    ``c`` on F's grid means every ``c`` value is an ``acc`` value.
    """
    m, emax, q_acc = acc.mantissa_bits, acc.emax, acc.emin - acc.mantissa_bits
    p_prod = a.mantissa_bits + b.mantissa_bits + 2
    c_on_grid = c.mantissa_bits <= m and c.emin - c.mantissa_bits >= q_acc and c.emax <= emax
    acc_over_product = p_prod + m + 5 <= 53         # L = acc (or C, or a partial sum), T = a product
    acc_over_acc = (m + 1) + m + 5 <= 53            # L and T both values of F (the reductions of partial sums)
    product_over_acc = q_acc + 52 >= emax + 2       # L = a product, T = acc: only in overflow
    return c_on_grid and acc_over_product and acc_over_acc and product_over_acc


def rounding_constants(fmt) -> np.ndarray:
    """The int64 constants of the float64 -> F RNE rounding, in the order _round_f64 reads them: the
    exponent field of 2^(52 - m) (the offset from a value's binade to the adder's), of 2^emin and of
    2^(emax + 1) (the binades the quantum is taken from are clamped to these), F's max, +Inf."""
    m = fmt.mantissa_bits
    field = 0x7FF0000000000000
    return np.array([(52 - m) << 52, np.float64(2.0 ** fmt.emin).view(np.int64) & field,
                     np.float64(2.0 ** (fmt.emax + 1)).view(np.int64) & field, np.float64(fmt.max).view(np.int64),
                     np.float64(np.inf).view(np.int64)], np.int64)


_SIGN = 1 << 63
_ABS = (1 << 63) - 1


class _IR:
    """Small helpers over an IRBuilder for vectors of V lanes."""

    def __init__(self, builder, V: int, double: bool):
        self.b = builder
        self.V = V
        self.double = double
        self.f = ir.DoubleType() if double else ir.FloatType()
        self.vt = ir.VectorType(self.f, V)
        self.it = ir.VectorType(ir.IntType(64), V)
        self.i64 = ir.IntType(64)
        self.i32 = ir.IntType(32)

    def const(self, x: int):
        return ir.Constant(self.i64, x)

    def splat(self, x, vt=None):
        vt = vt or self.vt
        undef = ir.Constant(vt, ir.Undefined)
        mask = ir.Constant(ir.VectorType(self.i32, self.V), [ir.Constant(self.i32, 0)] * self.V)
        return self.b.shuffle_vector(self.b.insert_element(undef, x, ir.Constant(self.i32, 0)), undef, mask)

    def isplat(self, x: int):
        return ir.Constant(self.it, [ir.Constant(self.i64, x)] * self.V)

    def load(self, base, off):
        return self.b.load(self.b.bitcast(self.b.gep(base, [off]), self.vt.as_pointer()), align=4)

    def store(self, value, base, off):
        self.b.store(value, self.b.bitcast(self.b.gep(base, [off]), self.vt.as_pointer()), align=4)

    def fma(self, x, y, z):
        name = f"llvm.fma.v{self.V}{'f64' if self.double else 'f32'}"
        fn = cgutils.get_or_insert_function(self.b.module, ir.FunctionType(self.vt, [self.vt] * 3), name)
        return self.b.call(fn, [x, y, z])

    def bits(self, x):
        return self.b.bitcast(x, self.it)

    def value(self, u):
        return self.b.bitcast(u, self.vt)


def _round_f64(g: _IR, s, rc, err=None):
    """RNE of the float64 vector ``s`` to F (constants ``rc`` splatted); ``err``: the exact error of ``s``
    (TwoSum), to round ``s`` to odd first.  Branch-free, every lane independent.

    The magnitude is rounded by one float64 addition of ``2^(E + 52 - m)`` and its subtraction, where
    ``2^E`` is the value's binade clamped to F's normal range: the sum's last place is then F's quantum
    ``2^(E - m)`` (the subnormal quantum below 2^emin), the hardware addition rounds to nearest even on
    that grid, and the subtraction is exact.  Results above F's max become +Inf; NaN stays NaN."""
    b = g.b
    offset, emin, eclamp, fmax, inf = rc
    u = g.bits(s)
    sign = b.and_(u, g.isplat(_SIGN))
    mag = b.and_(u, g.isplat(_ABS))
    if err is not None:                             # round to odd: the truncation toward zero, with its last bit set
        away = b.lshr(b.xor(g.bits(err), u), g.isplat(63))      # 1 where the exact sum is below |s|
        odd_mag = b.or_(b.sub(mag, away), g.isplat(1))
        mag = b.select(b.fcmp_ordered("one", err, ir.Constant(g.vt, [ir.Constant(g.f, 0.0)] * g.V)), odd_mag, mag)
    binade = b.and_(mag, g.isplat(0x7FF0000000000000))
    binade = b.select(b.icmp_unsigned("<", binade, emin), emin, binade)
    binade = b.select(b.icmp_unsigned(">", binade, eclamp), eclamp, binade)
    big = g.value(b.add(binade, offset))
    r = b.fsub(b.fadd(g.value(mag), big), big)
    r = b.select(b.fcmp_ordered(">", r, g.value(fmax)), g.value(inf), r)
    return g.value(b.or_(g.bits(r), sign))


def _splat_constants(g: _IR, rc_ptr):
    return [g.splat(g.b.load(g.b.gep(rc_ptr, [g.const(i)])), g.it) for i in range(5)]


def _rounded_add(g: _IR, kind: str, p, q, rc):
    """p + q rounded as the kind's steps are."""
    s = g.b.fadd(p, q)
    if kind == "rne64":
        return _round_f64(g, s, rc)
    if kind == "rne64_odd":
        bb = g.b.fsub(s, p)
        err = g.b.fadd(g.b.fsub(p, g.b.fsub(s, bb)), g.b.fsub(q, bb))
        return _round_f64(g, s, rc, err)
    return s


def _tile_kernel(kind: str, from_zero: bool, add_into: bool = False):
    """The micro-kernel ``tile[r, c] <- tile[r, c] (+) a[k, r] * b[k, c]`` for k in 0..nk, in order.

    ``tile`` (MR*NR) from offset ``t0``, ``a`` packed as ``a[a0 + k*MR + r]``, ``b`` as ``b[b0 + k*NR + c]``;
    ``rc``: rounding_constants (rne64 kinds).  ``from_zero``: the sums start at -0 (a new partial sum).
    ``add_into`` (with from_zero): the new sums are added to the tile, ``tile + s`` rounded once, instead of
    stored (one merge of the lanes' tree without storing and reloading the new tile)."""
    MR, V, NV = _SHAPES[kind]
    NR = V * NV
    double = kind.startswith("rne64")

    @intrinsic
    def tile_steps(typingctx, tile, t0, a, a0, b, b0, nk, rc):
        sig = types.void(tile, types.intp, a, types.intp, b, types.intp, types.intp, rc)

        def codegen(context, builder, signature, args):
            tile_v, t0_v, a_v, a0_v, b_v, b0_v, nk_v, rc_v = args
            tptr = context.make_array(signature.args[0])(context, builder, tile_v).data
            aptr = context.make_array(signature.args[2])(context, builder, a_v).data
            bptr = context.make_array(signature.args[4])(context, builder, b_v).data
            g = _IR(builder, V, double)
            rc_ptr = context.make_array(signature.args[7])(context, builder, rc_v).data
            rc = _splat_constants(g, rc_ptr) if double else None
            if kind == "scaled32":                   # the two scales' float32 bits, in rc[0] and rc[1]
                scale_a, scale_b = (g.splat(builder.bitcast(builder.trunc(builder.load(builder.gep(
                    rc_ptr, [g.const(i)])), ir.IntType(32)), g.f)) for i in range(2))
            if from_zero:
                zero = ir.Constant(g.vt, [ir.Constant(g.f, -0.0)] * V)
                acc0 = [[zero] * NV for _ in range(MR)]
            else:
                acc0 = [[g.load(tptr, builder.add(t0_v, g.const(r * NR + v * V))) for v in range(NV)]
                        for r in range(MR)]
            pre = builder.block
            head = builder.append_basic_block("tile.head")
            body = builder.append_basic_block("tile.body")
            done = builder.append_basic_block("tile.done")
            builder.branch(head)
            builder.position_at_end(head)
            k = builder.phi(g.i64)
            k.add_incoming(g.const(0), pre)
            acc = [[builder.phi(g.vt) for _ in range(NV)] for _ in range(MR)]
            for r in range(MR):
                for v in range(NV):
                    acc[r][v].add_incoming(acc0[r][v], pre)
            builder.cbranch(builder.icmp_signed("<", k, nk_v), body, done)
            builder.position_at_end(body)
            b_row = builder.add(b0_v, builder.mul(k, g.const(NR)))
            a_row = builder.add(a0_v, builder.mul(k, g.const(MR)))
            bv = [g.load(bptr, builder.add(b_row, g.const(v * V))) for v in range(NV)]
            new = []
            for r in range(MR):
                xs = g.splat(builder.load(builder.gep(aptr, [builder.add(a_row, g.const(r))])))
                row = []
                for v in range(NV):
                    s = acc[r][v]
                    if kind == "fma32":
                        row.append(g.fma(xs, bv[v], s))
                    elif kind == "mul_add32":
                        row.append(builder.fadd(s, builder.fmul(xs, bv[v])))
                    elif kind == "scaled32":
                        p = builder.fmul(builder.fmul(builder.fmul(xs, bv[v]), scale_a), scale_b)
                        row.append(builder.fadd(s, p))
                    elif kind == "rne64":
                        row.append(_round_f64(g, g.fma(xs, bv[v], s), rc))
                    else:                            # TwoSum of acc and the exact product, then odd, then F
                        p = builder.fmul(xs, bv[v])
                        t = builder.fadd(s, p)
                        bb = builder.fsub(t, s)
                        err = builder.fadd(builder.fsub(s, builder.fsub(t, bb)), builder.fsub(p, bb))
                        row.append(_round_f64(g, t, rc, err))
                new.append(row)
            k_next = builder.add(k, g.const(1))
            end = builder.block
            k.add_incoming(k_next, end)
            for r in range(MR):
                for v in range(NV):
                    acc[r][v].add_incoming(new[r][v], end)
            builder.branch(head)
            builder.position_at_end(done)
            for r in range(MR):
                for v in range(NV):
                    off = builder.add(t0_v, g.const(r * NR + v * V))
                    value = _rounded_add(g, kind, g.load(tptr, off), acc[r][v], rc) if add_into else acc[r][v]
                    g.store(value, tptr, off)
            return context.get_dummy_value()

        return sig, codegen

    return tile_steps


def _tile_add(kind: str):
    """``x[x0 + i] <- x[x0 + i] + y[y0 + i]`` over one tile, rounded as the kind's steps are."""
    MR, V, NV = _SHAPES[kind]
    size = MR * V * NV
    double = kind.startswith("rne64")

    @intrinsic
    def add_tile(typingctx, x, x0, y, y0, rc):
        sig = types.void(x, types.intp, y, types.intp, rc)

        def codegen(context, builder, signature, args):
            x_v, x0_v, y_v, y0_v, rc_v = args
            xptr = context.make_array(signature.args[0])(context, builder, x_v).data
            yptr = context.make_array(signature.args[2])(context, builder, y_v).data
            g = _IR(builder, V, double)
            rc = _splat_constants(g, context.make_array(signature.args[4])(context, builder, rc_v).data) \
                if double else None
            for i in range(0, size, V):
                xo, yo = builder.add(x0_v, g.const(i)), builder.add(y0_v, g.const(i))
                g.store(_rounded_add(g, kind, g.load(xptr, xo), g.load(yptr, yo), rc), xptr, xo)
            return context.get_dummy_value()

        return sig, codegen

    return add_tile


@njit(inline="always")
def _bit_reverse(x, bits):
    r = 0
    for _ in range(bits):
        r = (r << 1) | (x & 1)
        x >>= 1
    return r


@intrinsic
def _fetch_add(typingctx, counter, value):
    """Atomically ``counter[0] += value``; returns the old value (the next free tile)."""
    sig = types.int64(counter, types.int64)

    def codegen(context, builder, signature, args):
        ptr = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.atomic_rmw("add", ptr, args[1], "monotonic")

    return sig, codegen


def _make_driver(kind: str):
    """The parallel GEMM of one kind (a closure over its micro-kernels, compiled and cached separately).

    Each worker thread takes the next ``chunk`` tiles from a shared atomic counter until none are left,
    rather than a fixed share: on a machine where another process holds a core, the thread that runs
    does the work of the one that waits (a static split would wait for the slow half)."""
    MR, NR = tile_shape(kind)
    T = MR * NR
    steps, new, new_add, add_tile = (_tile_kernel(kind, False), _tile_kernel(kind, True),
                                     _tile_kernel(kind, True, add_into=True), _tile_add(kind))
    dtype = np.float64 if kind.startswith("rne64") else np.float32

    @njit(parallel=True, cache=True)
    def driver(ap, bp, c, out, M, N, K, order, width, inner, rc, counter, chunk, workers):
        nb = c.shape[0]
        n_mp = (M + MR - 1) // MR
        n_np = (N + NR - 1) // NR
        n_tiles = nb * n_np * n_mp
        w = width if (order == 1 or order == 2) else 1
        full = K - K % w
        seg = full // w
        levels = 0
        while (1 << levels) < w:
            levels += 1
        for _worker in prange(workers):
            tile = np.empty(T, dtype)
            acc = np.empty(2 * T, dtype)
            stack = np.empty((levels + 1) * T, dtype)
            height = np.zeros(levels + 1, np.int64)
            while True:
                first = _fetch_add(counter, chunk)
                if first >= n_tiles:
                    break
                for t in range(first, min(first + chunk, n_tiles)):
                    bi = t // (n_np * n_mp)
                    j = (t // n_mp) % n_np
                    i = t % n_mp
                    a0 = (bi * n_mp + i) * K * MR
                    b0 = (bi * n_np + j) * K * NR
                    m0 = i * MR
                    n0 = j * NR
                    rows = min(MR, M - m0)
                    cols = min(NR, N - n0)
                    tile[:] = 0.0
                    for r in range(rows):
                        for cc in range(cols):
                            tile[r * NR + cc] = c[bi, m0 + r, n0 + cc]
                    if order == 0:
                        if K > 0:
                            steps(tile, 0, ap, a0, bp, b0, K, rc)
                    elif order == 4:                    # blocked: each block from -0 (interleaved(inner)
                        for k0 in range(0, K, width):   # within it: s0 with the block's tail, + s1 + ...)
                            length = min(width, K - k0)
                            lseg = length // inner
                            a1, b1 = a0 + k0 * MR, b0 + k0 * NR
                            if lseg == 0 or inner == 1:
                                new(acc, 0, ap, a1, bp, b1, length, rc)
                            else:
                                new(acc, 0, ap, a1, bp, b1, lseg, rc)
                                if length > lseg * inner:
                                    steps(acc, 0, ap, a1 + lseg * inner * MR, bp, b1 + lseg * inner * NR,
                                          length - lseg * inner, rc)
                                for lane in range(1, inner):
                                    new(acc, T, ap, a1 + lane * lseg * MR, bp, b1 + lane * lseg * NR, lseg, rc)
                                    add_tile(acc, 0, acc, T, rc)
                            add_tile(tile, 0, acc, 0, rc)
                    elif seg == 0:                      # K < w: every lane is -0 and x + -0 == x: the tail is r
                        new(acc, 0, ap, a0, bp, b0, K, rc)
                        add_tile(tile, 0, acc, 0, rc)   # C + r, one more addition
                    elif order == 1:                    # interleaved: s0 (with the tail) + s1 + ... in order
                        new(acc, 0, ap, a0, bp, b0, seg, rc)
                        if K > full:
                            steps(acc, 0, ap, a0 + full * MR, bp, b0 + full * NR, K - full, rc)
                        for lane in range(1, w):
                            new(acc, T, ap, a0 + lane * seg * MR, bp, b0 + lane * seg * NR, seg, rc)
                            add_tile(acc, 0, acc, T, rc)
                        add_tile(tile, 0, acc, 0, rc)
                    else:                               # lanes: the halving tree (bit-reversed leaves merged
                        top = 0                         # as a binary counter of equal levels), then the tail
                        for leaf in range(w):
                            lane = _bit_reverse(leaf, levels)
                            a1, b1 = a0 + lane * seg * MR, b0 + lane * seg * NR
                            if leaf & 1:                # the right sibling of the top: merged on the way out
                                new_add(stack, (top - 1) * T, ap, a1, bp, b1, seg, rc)
                                height[top - 1] += 1
                            else:
                                new(stack, top * T, ap, a1, bp, b1, seg, rc)
                                height[top] = 0
                                top += 1
                            while top >= 2 and height[top - 1] == height[top - 2]:
                                add_tile(stack, (top - 2) * T, stack, (top - 1) * T, rc)
                                height[top - 2] += 1
                                top -= 1
                        if K > full:
                            steps(stack, 0, ap, a0 + full * MR, bp, b0 + full * NR, K - full, rc)
                        add_tile(tile, 0, stack, 0, rc)
                    for r in range(rows):
                        for cc in range(cols):
                            v = tile[r * NR + cc]
                            out[bi, m0 + r, n0 + cc] = v if v == v else np.nan     # one NaN, as the reference

    return driver


_DRIVERS = {kind: _make_driver(kind) for kind in KINDS}


@njit(parallel=True, cache=True)
def pack_a(a, perm, MR, out):
    """A (nb, M, K) -> panels of MR rows, k-major: out[((bi*n_mp + i)*K + kk)*MR + r] = a[bi, i*MR + r, perm[kk]]."""
    nb, M, K = a.shape
    n_mp = (M + MR - 1) // MR
    for t in prange(nb * n_mp):
        bi = t // n_mp
        m0 = (t % n_mp) * MR
        rows = min(MR, M - m0)
        base = t * K * MR
        for kk in range(K):
            src = perm[kk]
            o = base + kk * MR
            for r in range(rows):
                out[o + r] = a[bi, m0 + r, src]
            for r in range(rows, MR):
                out[o + r] = 0.0


@njit(parallel=True, cache=True)
def pack_b(b, perm, NR, out):
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
            for cc in range(width):
                out[o + cc] = row[n0 + cc]
            for cc in range(width, NR):
                out[o + cc] = 0.0


_scratch = threading.local()


def _panels(which: int, size: int, dtype) -> np.ndarray:
    """A packing buffer of ``size`` elements, kept per thread and reused while big enough (fresh pages cost a
    fault each on first touch: about 0.1 ms per MB here); buffers over 64 MiB are not kept."""
    key = (which, np.dtype(dtype).char)
    buf = getattr(_scratch, "buffers", {}).get(key)
    if buf is None or buf.size < size:
        buf = np.empty(max(size, 1), dtype)
        if buf.nbytes <= 64 << 20:
            _scratch.__dict__.setdefault("buffers", {})[key] = buf
    return buf[:size]


def gemm(kind: str, a: np.ndarray, b: np.ndarray, c: np.ndarray, order: str, width: int, rc: np.ndarray,
         threads_for, inner: int = 1) -> np.ndarray:
    """``C + A·B`` (a (nb, M, K), b (nb, K, N), c (nb, M, N)) with ``kind`` steps in ``order`` of ``width``
    (``blocked``: each block summed in ``interleaved(inner)``, plain for inner = 1); returns (nb, M, N)
    float32 (every kind's values fit float32).  ``threads_for(ns)``: the context that picks the thread
    count for a kernel of that much single-thread work."""
    MR, NR = tile_shape(kind)
    nb, M, K = a.shape
    N = b.shape[2]
    dtype = np.float64 if kind.startswith("rne64") else np.float32
    perm = lane_permutation(K, order, width, inner)
    ap = _panels(0, nb * -(-M // MR) * K * MR, dtype)
    bp = _panels(1, nb * -(-N // NR) * K * NR, dtype)
    out = np.empty((nb, M, N), np.float32)
    with threads_for(ap.size):
        pack_a(a, perm, MR, ap)
    with threads_for(bp.size):
        pack_b(b, perm, NR, bp)
    cost = 0.02 if dtype == np.float32 else 0.4
    n_tiles = nb * -(-M // MR) * -(-N // NR)
    with threads_for(cost * nb * M * N * K + out.size):
        workers = numba.get_num_threads()
        tile_ns = cost * MR * NR * max(K, 1)
        chunk = max(1, min(int(20_000 / tile_ns), n_tiles // (4 * workers)))     # about 20 us of work each
        _DRIVERS[kind](ap, bp, c, out, M, N, K, ORDERS[order], width, inner, rc, np.zeros(1, np.int64), chunk,
                       workers)
    return out
