"""Compiled composite orders: the order over K as a straight-line program of accumulator additions.

The CPU framework models (``split``, ``group``, ``strided``, ``blocked(kc, inner)`` of DESIGN §6 and
precisionlab/matmul.py) nest plain orders.  Rather than a second implementation of each, the NumPy
reference's own ``chunk_sum`` is run once per K on symbolic values: every ``add`` it performs is
recorded as an instruction, so the program *is* the definition's order of additions.  The compiled
kernel then runs that program for every output row, each instruction a loop over a tile of columns
(vectorised), with the Numba backend's accumulator rounding.

Covered: ``step="ieee"`` (one product per step, exact or rounded to ``product_format``), any order,
deterministic step rounding, no promotion, ``scale_at="operands"``.  Other specs are not covered
(:func:`covers`); the Numba backend then runs the reference.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from ..rounding import Rounding, fits_float32
from . import numpy_backend as _reference
from .numba_backend import (
    _FP32,
    _add_odd,
    _add_round,
    _fast_consts,
    _fma32,
    _mode_params,
    _rne_fast,
    _round_any,
    _rtz_fast,
)

#: Instructions: INIT r (r <- -0), ADD_PRODUCT r k (r <- r + a_k b_k), ADD r s (r <- r + s), one rounding each.
INIT, ADD_PRODUCT, ADD = 0, 1, 2


class _Product:
    """The k-th product as the reference's chunk_sum sees it (a Term's value)."""

    def __init__(self, k: int) -> None:
        self.k = k


class _Recorder(_reference.ReferenceMatmul):
    """The reference's accumulation model with ``add`` recording instructions on virtual registers.

    Each addition writes into its left operand's register (every caller in the reference uses the result
    in place of the left operand); a literal ``-0.0`` (a partial sum with no term yet) gets a new register.
    """

    def __init__(self, spec) -> None:
        super().__init__(spec, None)
        self.program: list[tuple[int, int, int]] = []
        self.registers = 0

    def new_register(self) -> int:
        self.registers += 1
        self.program.append((INIT, self.registers - 1, 0))
        return self.registers - 1

    def value(self, v) -> int:
        if isinstance(v, int):
            return v
        assert isinstance(v, float) and v == 0.0 and np.signbit(v), v     # -0.0: an empty partial sum
        return self.new_register()

    def add(self, x, y) -> int:
        x = self.value(x)
        if isinstance(y, _Product):
            self.program.append((ADD_PRODUCT, x, y.k))
        else:
            self.program.append((ADD, x, self.value(y)))
        return x


@functools.lru_cache(maxsize=256)
def program(spec, K: int) -> tuple[np.ndarray, int, int]:
    """(instructions (n, 3) int64 with physical registers, registers needed, register of the result).

    Register 0 holds C on entry.  Virtual registers are mapped to physical ones by their live ranges."""
    rec = _Recorder(spec)
    c0 = rec.new_register()
    rec.program.pop()                                     # register 0 is loaded with C, not -0
    terms = [_reference.Term(_Product(k), None) for k in range(K)]
    result = rec.value(rec.chunk_sum(terms, c0))
    last = {}
    for i, (op, dst, src) in enumerate(rec.program):
        last[dst] = i
        if op == ADD:
            last[src] = i
    last[result] = len(rec.program)
    phys, free, used = {c0: 0}, [], 1
    out = np.empty((len(rec.program), 3), np.int64)
    for i, (op, dst, src) in enumerate(rec.program):
        if op == INIT:
            if free:
                phys[dst] = free.pop()
            else:
                phys[dst], used = used, used + 1
        out[i] = (op, phys[dst], phys[src] if op == ADD else src)
        for v in ((dst, src) if op == ADD else (dst,)):
            if last[v] == i:
                free.append(phys[v])
    return out, used, phys[result]


def covers(spec) -> bool:
    """Whether :func:`matmul_values` runs ``spec`` (the Numba backend's formats, see its ``_fits``)."""
    from .numba_backend import _fits

    return (spec.step == "ieee" and not spec.stochastic and not spec.promotes and spec.scale_at == "operands"
            and all(_fits(f, 23) for f in (spec.a_format, spec.effective_b_format))
            and all(_fits(f) for f in (spec.accumulator, spec.effective_c_format))
            and (spec.product_format is None or _fits(spec.product_format)))


@njit(parallel=True, cache=True)
def _run(a, b, c, out, prog, n_regs, result, P_acc, P_prod, has_prod):
    """out (n_tiles, batch, M, T) <- the program over each row of ``a`` (batch, M, K) and column tile of ``b``."""
    n_tiles, n_batch, K, n_cols = b.shape
    n_rows = a.shape[1]
    F = _fast_consts(P_acc)
    rne, rtz = P_acc[0] == 0, P_acc[0] == 2
    for r in prange(n_tiles * n_batch * n_rows):
        t, bi, m = r // (n_batch * n_rows), (r // n_rows) % n_batch, r % n_rows
        regs = np.empty((n_regs, n_cols))
        regs[0, :] = c[t, bi, m]
        a_row, bt = a[bi, m], b[t, bi]
        for i in range(prog.shape[0]):
            op, dst, src = prog[i, 0], prog[i, 1], prog[i, 2]
            x = regs[dst]
            if op == 0:
                x[:] = -0.0
            elif op == 2:
                y = regs[src]
                for n in range(n_cols):
                    x[n] = _add_round(x[n], y[n], P_acc)
            else:
                ak, bk = a_row[src], bt[src]
                if has_prod:
                    for n in range(n_cols):
                        x[n] = _add_round(x[n], _round_any(ak * bk[n], P_prod), P_acc)
                elif rne:                      # exact products (2 x 24 bits): branch-free, vectorised across n
                    for n in range(n_cols):
                        x[n] = _rne_fast(_add_odd(x[n], ak * bk[n]), F)
                elif rtz:
                    for n in range(n_cols):
                        x[n] = _rtz_fast(_add_odd(x[n], ak * bk[n]), F)
                else:
                    for n in range(n_cols):
                        x[n] = _add_round(x[n], ak * bk[n], P_acc)
        out[t, bi, m, :] = regs[result]


@njit(parallel=True, cache=True)
def _run_fp32(a, b, c, out, prog, n_regs, result, has_prod):
    """:func:`_run` for an fp32 RNE accumulator in hardware: a product step is one fp32 FMA (exact
    products) or an fp32 multiply then add (``product_format=fp32``); the additions are fp32 additions."""
    n_tiles, n_batch, K, n_cols = b.shape
    n_rows = a.shape[1]
    for r in prange(n_tiles * n_batch * n_rows):
        t, bi, m = r // (n_batch * n_rows), (r // n_rows) % n_batch, r % n_rows
        regs = np.empty((n_regs, n_cols), np.float32)
        regs[0, :] = c[t, bi, m]
        a_row, bt = a[bi, m], b[t, bi]
        for i in range(prog.shape[0]):
            op, dst, src = prog[i, 0], prog[i, 1], prog[i, 2]
            x = regs[dst]
            if op == 0:
                x[:] = np.float32(-0.0)
            elif op == 2:
                y = regs[src]
                for n in range(n_cols):
                    x[n] = x[n] + y[n]
            else:
                ak, bk = a_row[src], bt[src]
                if has_prod:
                    for n in range(n_cols):
                        x[n] = x[n] + ak * bk[n]
                else:
                    for n in range(n_cols):
                        x[n] = _fma32(ak, bk[n], x[n])
        out[t, bi, m, :] = regs[result]


def matmul_values(a: np.ndarray, b: np.ndarray, c: np.ndarray, spec, tile: int) -> np.ndarray:
    """The accumulated sums (batch, M, N) before the output rounding; ``a``, ``b``, ``c`` as the Numba
    backend's matmul_values has them (operand scales applied)."""
    from .numba_backend import _tiles

    prog, n_regs, result = program(spec, a.shape[2])
    N = b.shape[2]
    width = min(tile, max(N, 1))
    bt = _tiles(b, width)
    out = np.empty((bt.shape[0], a.shape[0], a.shape[1], width))
    prod = spec.product_spec()
    acc = spec.accumulator_spec(None)
    if (acc.format == _FP32 and acc.rounding is Rounding.RNE and acc.subnormals and fits_float32(spec.a_format)
            and fits_float32(spec.effective_b_format) and fits_float32(spec.effective_c_format)
            and (prod is None or prod.format == _FP32)):
        out32 = np.empty(out.shape, np.float32)
        _run_fp32(a.astype(np.float32), _tiles(b.astype(np.float32), width), _tiles(c.astype(np.float32), width),
                  out32, prog, n_regs, result, prod is not None)
        out[...] = out32
    else:
        P_acc = _mode_params(acc)
        _run(a, bt, _tiles(c, width), out, prog, n_regs, result, P_acc, _mode_params(prod) if prod else P_acc,
             prod is not None)
    return np.moveaxis(out, 0, -2).reshape(a.shape[0], a.shape[1], -1)[..., :N]
