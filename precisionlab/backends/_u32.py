"""32-bit integer operations for Numba kernels.

Numba types every scalar integer operation on 32-bit values as 64-bit (NumPy's
scalar promotion), which halves the SIMD width of a rounding kernel and, on
AVX2, turns int->float conversions into scalar code.  These intrinsics emit the
plain 32-bit LLVM instruction instead, so a float32 kernel vectorises 8 lanes
wide.  Arguments are cast to uint32 at the call; shift counts must be < 32.
"""

from __future__ import annotations

from numba import types
from numba.extending import intrinsic

__all__ = ["add", "sub", "and_", "or_", "shl", "shr", "ult", "ueq", "sel", "b2u", "u2f", "as_f32", "as_u32",
           "prefer_wide_vectors"]

_U = types.uint32


def _binop(op: str):
    @intrinsic
    def impl(typingctx, a, b):
        def codegen(context, builder, signature, args):
            return getattr(builder, op)(args[0], args[1])
        return _U(_U, _U), codegen
    return impl


add, sub, and_, or_, shl, shr = (_binop(op) for op in ("add", "sub", "and_", "or_", "shl", "lshr"))


def _cmp(op: str):
    @intrinsic
    def impl(typingctx, a, b):
        def codegen(context, builder, signature, args):
            return builder.icmp_unsigned(op, args[0], args[1])
        return types.boolean(_U, _U), codegen
    return impl


ult, ueq = _cmp("<"), _cmp("==")


@intrinsic
def sel(typingctx, c, a, b):
    """c ? a : b on uint32, as one select instruction."""
    def codegen(context, builder, signature, args):
        return builder.select(args[0], args[1], args[2])
    return _U(types.boolean, _U, _U), codegen


@intrinsic
def b2u(typingctx, c):
    """A boolean as 0 or 1."""
    def codegen(context, builder, signature, args):
        return builder.zext(args[0], context.get_value_type(_U))
    return _U(types.boolean), codegen


@intrinsic
def u2f(typingctx, a):
    """uint32 (< 2^31) to float32, exact below 2^24."""
    def codegen(context, builder, signature, args):
        return builder.sitofp(args[0], context.get_value_type(types.float32))
    return types.float32(_U), codegen


@intrinsic
def as_f32(typingctx, a):
    """Reinterpret bits as float32."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))
    return types.float32(_U), codegen


@intrinsic
def as_u32(typingctx, a):
    """Reinterpret a float32 as its bits."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(_U))
    return _U(types.float32), codegen


@intrinsic
def prefer_wide_vectors(typingctx):
    """Ask LLVM for the widest vectors the CPU has in the function that calls this.

    LLVM's tuning for many AVX-512 CPUs prefers 256-bit vectors ("prefer-256-bit"); the function
    attribute ``"prefer-vector-width"="512"`` lifts that for one function (the parallel loop body
    when called inside a prange), so the rounding loops run 16 float32 lanes wide.  The attribute is
    a hint, harmless on CPUs without AVX-512.  llvmlite only lets known attribute names through
    ``add``; where its attribute set changes shape the hint is dropped and the code stays correct."""
    def codegen(context, builder, signature, args):
        try:
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        except TypeError:
            pass
        return context.get_dummy_value()
    return types.none(), codegen
