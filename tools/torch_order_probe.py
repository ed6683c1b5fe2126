#!/usr/bin/env python3
"""Reveal the summation order of a torch (or JAX) CPU matmul from its outputs, and match it against
precisionlab order strings.  Needs torch (or jax) and numpy only.

The probe: A is all ones, column n of B holds +L at k = i, -L at k = j and a small s at every
other k (L = 2^40, s = 1 for bf16; the values of the fp16 probe differ).  Every small term that
joins the partial sum of L or -L before the two cancel is absorbed, so the output is
s·(K - |leaves under the node where i and j meet|).  The sizes for all pairs (i, j) determine the
summation tree uniquely; it is printed in parentheses and compared with the trees of the candidate
orders, simulated here in float32.  Examples (the evidence for presets.torch_cpu_nt):

    ATEN_CPU_CAPABILITY=avx2 python tools/torch_order_probe.py --layout nt --no-mkldnn --K 13,16,48,64,79,80,100
    python tools/torch_order_probe.py --layout nn --M 16 --N 16 --K 40,48,100      # oneDNN AMX tiles
    python tools/torch_order_probe.py --framework jax --K 17,31,48                  # XLA + YNNPACK
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys

import numpy as np

CANDIDATES = ["sequential", "interleaved(4)", "lanes(64)", "split(64,lanes(64),split(16,lanes(8),sequential))",
              "split(128,lanes(128),split(32,lanes(16),sequential))", "blocked(32,interleaved(2))",
              "split(2,blocked(32,interleaved(2)),sequential)", "split(4,strided(4),group(sequential))"]


# ---- a float32 interpreter of precisionlab's order strings (matmul.py's docstring) -------------------

def parse(text: str):
    tokens = re.findall(r"[a-z_]+|\d+|[(),]", text.replace(" ", ""))
    pos = 0

    def node():
        nonlocal pos
        kind = tokens[pos]
        pos += 1
        width, parts = None, []
        if pos < len(tokens) and tokens[pos] == "(":
            pos += 1
            while tokens[pos] != ")":
                if tokens[pos].isdigit():
                    width = int(tokens[pos])
                    pos += 1
                else:
                    parts.append(node())
                if tokens[pos] == ",":
                    pos += 1
            pos += 1
        return kind, width, parts
    return node()


def reduce(order, P: np.ndarray, start: np.ndarray) -> np.ndarray:
    """float32 sum of the rows of P (K, cols) in ``order``, from ``start`` (the running sum)."""
    kind, w, parts = order
    K = P.shape[0]
    neg0 = np.full(P.shape[1:], -0.0, np.float32)
    add = np.add
    if kind == "sequential":
        acc = start
        for k in range(K):
            acc = add(acc, P[k])
        return acc
    if kind in ("interleaved", "lanes"):
        full = K - K % w
        s = [neg0.copy() for _ in range(w)]
        for k in range(full):
            s[k % w] = add(s[k % w], P[k])
        if kind == "interleaved":
            for k in range(full, K):
                s[0] = add(s[0], P[k])
            r = s[0]
            for i in range(1, w):
                r = add(r, s[i])
        else:
            h = w // 2
            while h:
                for i in range(h):
                    s[i] = add(s[i], s[i + h])
                h //= 2
            r = s[0]
            for k in range(full, K):
                r = add(r, P[k])
        return add(start, r)
    if kind == "strided":
        if K == 0:
            return start
        s = [neg0.copy() for _ in range(min(w, K))]
        for k in range(K):
            s[k % w] = add(s[k % w], P[k])
        while len(s) > 1:
            s = [add(s[i], s[i + 1]) if i + 1 < len(s) else s[i] for i in range(0, len(s), 2)]
        return add(start, s[0])
    if kind == "blocked":
        inner = parts[0] if parts else ("sequential", None, [])
        acc = start
        for b in range(0, K, w):
            acc = add(acc, reduce(inner, P[b:b + w], neg0))
        return acc
    if kind == "split":
        head = K - K % w
        acc = start
        if head:
            acc = reduce(parts[0], P[:head], acc)
        if head < K:
            acc = reduce(parts[1], P[head:], acc)
        return acc
    if kind == "group":
        return add(start, reduce(parts[0], P, neg0)) if K else start
    raise ValueError(kind)


# ---- the probe ------------------------------------------------------------------------------------

def sizes_from(out: np.ndarray, K: int, small: float) -> int:
    return K - int(round(float(out) / small))


def lca_sizes(mm, K: int, M: int, N: int, fmt: str) -> dict[tuple[int, int], int]:
    big, small = (2.0**40, 1.0) if fmt in ("bf16", "fp32") else (2.0**15, 2.0**-24)
    pairs = list(itertools.combinations(range(K), 2))
    out = {}
    for start in range(0, len(pairs), N):
        chunk = pairs[start:start + N]
        B = np.full((K, N), small, np.float32)
        for c, (i, j) in enumerate(chunk):
            B[i, c], B[j, c] = big, -big
        r = np.asarray(mm(np.ones((M, K), np.float32), B), np.float32)
        if not np.all(r == r[:1]):
            raise RuntimeError("rows differ: the order depends on the row")
        for c, p in enumerate(chunk):
            out[p] = sizes_from(r[0, c], K, small)
    return out


def simulated_sizes(order: str, K: int) -> dict[tuple[int, int], int]:
    pairs = list(itertools.combinations(range(K), 2))
    P = np.ones((K, len(pairs)), np.float32)
    for c, (i, j) in enumerate(pairs):
        P[i, c], P[j, c] = 2.0**40, -(2.0**40)
    r = reduce(parse(order), P, np.zeros(len(pairs), np.float32))
    return {p: K - int(round(float(r[c]))) for c, p in enumerate(pairs)}


def tree(K: int, sizes: dict[tuple[int, int], int]) -> str:
    clusters = set()
    for i in range(K):
        by: dict[int, list[int]] = {}
        for j in range(K):
            if j != i:
                by.setdefault(sizes[(min(i, j), max(i, j))], []).append(j)
        acc = {i}
        for s in sorted(by):
            acc |= set(by[s])
            clusters.add(frozenset(acc))
    ordered = sorted(clusters, key=len)

    def build(leaves: frozenset) -> str:
        if len(leaves) == 1:
            return str(next(iter(leaves)))
        subs = [c for c in ordered if c < leaves and not any(c < d < leaves for d in ordered)]
        covered = set().union(*subs) if subs else set()
        return "(" + " ".join([build(c) for c in sorted(subs, key=min)] + [str(x) for x in sorted(leaves - covered)]) \
            + ")"
    return build(frozenset(range(K)))


def torch_mm(fmt: str, layout: str, op: str, mkldnn: bool):
    import torch
    torch.backends.mkldnn.enabled = mkldnn
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[fmt]

    def mm(A, B):
        a, b = torch.from_numpy(A).to(dt), torch.from_numpy(B).to(dt)
        if layout[0] == "t":
            a = a.t().contiguous().t()
        if layout[1] == "t":
            b = b.t().contiguous().t()
        r = torch.nn.functional.linear(a, b.t()) if op == "linear" else torch.matmul(a, b)
        return r.float().numpy()
    print(f"torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}, mkldnn {mkldnn}, "
          f"{fmt} {op} {layout}", file=sys.stderr)
    return mm


def jax_mm(fmt: str, out: str | None):
    import jax
    import jax.numpy as jnp
    dt = {"bf16": jnp.bfloat16, "fp16": jnp.float16, "fp32": jnp.float32}[fmt]
    pet = None if out is None else {"fp32": jnp.float32}[out]
    f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=pet))
    print(f"jax {jax.__version__}, {fmt} -> {out or fmt}", file=sys.stderr)
    return lambda A, B: np.asarray(f(jnp.asarray(A.astype(dt)), jnp.asarray(B.astype(dt)))).astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--framework", choices=["torch", "jax"], default="torch")
    ap.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    ap.add_argument("--out", default=None, help="jax: preferred_element_type (fp32)")
    ap.add_argument("--layout", default="nn", choices=["nn", "nt", "tn", "tt"])
    ap.add_argument("--op", default="matmul", choices=["matmul", "linear"])
    ap.add_argument("--no-mkldnn", action="store_true", help="torch.backends.mkldnn.enabled = False")
    ap.add_argument("--M", type=int, default=4)
    ap.add_argument("--N", type=int, default=4)
    ap.add_argument("--K", default="13,16,48,64,100")
    ap.add_argument("--orders", default=";".join(CANDIDATES),
                    help="candidate orders separated by ';'")
    ap.add_argument("--tree", action="store_true", help="print the measured tree")
    args = ap.parse_args(argv)
    if args.dtype == "bf16" and max(map(int, args.K.split(","))) > 256:
        ap.error("the bf16 probe counts up to 256 exactly; use K <= 256")
    mm = torch_mm(args.dtype, args.layout, args.op, not args.no_mkldnn) if args.framework == "torch" else \
        jax_mm(args.dtype, args.out)
    orders = args.orders.split(";")
    for K in map(int, args.K.split(",")):
        sizes = lca_sizes(mm, K, args.M, args.N, args.dtype)
        hits = [o for o in orders if simulated_sizes(o, K) == sizes]
        print(f"M={args.M} K={K} N={args.N}: " + (", ".join(hits) if hits else "no candidate matches"))
        if args.tree or not hits:
            print("   tree:", tree(K, sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
