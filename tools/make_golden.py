#!/usr/bin/env python3
"""Record golden outputs of CPU frameworks (torch, ml_dtypes, JAX) into ``golden/cpu/`` (DESIGN §9).

One command regenerates every CPU golden file and its ``golden/MANIFEST.json`` entries::

    python tools/make_golden.py            # record everything (needs torch, jax, ml_dtypes, numpy)
    python tools/make_golden.py --verify   # then write the "verification" section (needs precisionlab)

Recording depends only on the framework under test, numpy and ml_dtypes (never on precisionlab):
every input is built here with numpy and ml_dtypes and stored as bit patterns.  Each producer
configuration runs in its own subprocess, because its switches must be set before the framework is
imported (``ATEN_CPU_CAPABILITY``, ``XLA_FLAGS``):

* ``cpu/casts_torch.npz``, ``cpu/casts_ml_dtypes.npz``, ``cpu/casts_jax.npz`` -- float32 and float64
  inputs covering every edge band of each format (all codes, ties, ties ± one float32 ulp, the
  overflow band, underflow, ±0, ±Inf, NaN, and float64 values next to ties that show double
  rounding through float32) cast with ``tensor.to(dtype)``, ``array.astype(dtype)``,
  ``jnp.asarray(x).astype(dtype)``;
* ``cpu/torch_matmul.npz`` -- torch CPU as installed (this CPU's capability, oneDNN enabled):
  ``torch.matmul`` / ``F.linear`` (with and without bias) / ``torch.bmm`` in bf16 and fp16 in the
  three memory layouts, ``torch.matmul`` in float8_e4m3fn, ``torch._scaled_mm`` with scales;
* ``cpu/torch_matmul_avx2.npz`` -- the same calls with ``ATEN_CPU_CAPABILITY=avx2`` and
  ``torch.backends.mkldnn.enabled = False``: ATen's own AVX2 kernels (DESIGN §6's CPU facts);
* ``cpu/jax_dot.npz`` and ``cpu/jax_dot_noynn.npz`` -- ``jnp.dot`` bf16→bf16, bf16→f32, f16→f16 and
  e4m3→e4m3 with XLA's default YNNPACK dot fusion, and with it switched off
  (``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=``).

Entries for other files (the GPU recordings) are kept untouched.  ``--verify`` runs
``precisionlab.golden`` over every file and stores, per case, the spec that reproduces it bit for
bit or, for an open finding, the best model tried and its mismatch count.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

import ml_dtypes
import numpy as np
from golden_manifest import merge_manifest, write_manifest

SEED = 20261201
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GOLDEN = os.path.join(ROOT, "golden")

#: Producer configurations: worker name -> (golden file, environment overrides).
CONFIGS = {
    "casts_torch": ("cpu/casts_torch.npz", {}),
    "casts_ml_dtypes": ("cpu/casts_ml_dtypes.npz", {}),
    "casts_jax": ("cpu/casts_jax.npz", {"JAX_ENABLE_X64": "1"}),
    "torch_default": ("cpu/torch_matmul.npz", {"ONEDNN_VERBOSE": "1"}),
    "torch_avx2": ("cpu/torch_matmul_avx2.npz", {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_VERBOSE": "1"}),
    "jax_ynn": ("cpu/jax_dot.npz", {}),
    "jax_noynn": ("cpu/jax_dot_noynn.npz", {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}),
}
ENV_KEYS = ("ATEN_CPU_CAPABILITY", "ONEDNN_VERBOSE", "XLA_FLAGS", "JAX_ENABLE_X64", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ONEDNN_DEFAULT_FPMATH_MODE", "JAX_PLATFORMS")

#: precisionlab format name -> ml_dtypes / numpy dtype
ML = {"fp16": np.dtype(np.float16), "bf16": np.dtype(ml_dtypes.bfloat16),
      "e4m3": np.dtype(ml_dtypes.float8_e4m3fn), "e5m2": np.dtype(ml_dtypes.float8_e5m2),
      "e4m3fnuz": np.dtype(ml_dtypes.float8_e4m3fnuz), "e5m2fnuz": np.dtype(ml_dtypes.float8_e5m2fnuz),
      "e4m3b11fnuz": np.dtype(ml_dtypes.float8_e4m3b11fnuz), "e3m4": np.dtype(ml_dtypes.float8_e3m4),
      "e4m3_ieee": np.dtype(ml_dtypes.float8_e4m3), "e8m0": np.dtype(ml_dtypes.float8_e8m0fnu),
      "fp6_e2m3": np.dtype(ml_dtypes.float6_e2m3fn), "fp6_e3m2": np.dtype(ml_dtypes.float6_e3m2fn),
      "fp4_e2m1": np.dtype(ml_dtypes.float4_e2m1fn)}
CODE_DTYPE = {1: np.uint8, 2: np.uint16, 4: np.uint32}


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def rng(*parts) -> np.random.Generator:
    h = hashlib.sha256("|".join(str(p) for p in (SEED,) + parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def u32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, np.float32).view(np.uint32)


def u64(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, np.float64).view(np.uint64)


def to_fmt(x: np.ndarray, fmt: str) -> np.ndarray:
    """float32 values rounded (RNE, ml_dtypes) to ``fmt``; callers keep them inside the range."""
    return np.asarray(x, np.float32).astype(ML[fmt]).astype(np.float32)


# =====================================================================================================
# inputs
# =====================================================================================================

def format_values(fmt: str) -> np.ndarray:
    """Finite non-negative values of a format, from its codes (every code for 8-bit or smaller
    formats, the edge bands and a random sample for 16-bit ones)."""
    dt = ML[fmt]
    nbits = 16 if dt.itemsize == 2 else ml_dtypes.finfo(dt).bits
    codes = np.arange(1 << nbits, dtype=np.uint16 if nbits == 16 else np.uint8)
    if nbits == 16:
        mant = 10 if fmt == "fp16" else 7
        exp_field = (codes.astype(np.int64) >> mant) & (0x1F if fmt == "fp16" else 0xFF)
        top = exp_field.max()
        keep = (exp_field <= 2) | (exp_field >= top - 2) | ((exp_field >= (top // 2) - 1) & (exp_field <= top // 2 + 1))
        sample = rng("codes", fmt).choice(len(codes), 2048, replace=False)
        keep[sample] = True
        codes = codes[keep]
    with np.errstate(all="ignore"):
        v = codes.view(dt).astype(np.float64) if dt.itemsize == 2 else np.frombuffer(codes.tobytes(), dt).astype(
            np.float64)
    v = v[np.isfinite(v)]
    return np.unique(np.abs(v))


def cast_inputs(fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """(float32 inputs, float64 inputs) covering every edge band of ``fmt``."""
    v = format_values(fmt)
    mids = (v[:-1] + v[1:]) / 2                        # ties (exact in float64)
    mids32 = mids[np.float32(mids).astype(np.float64) == mids].astype(np.float32)
    step_up = np.nextafter(mids32, np.float32(np.inf))
    step_dn = np.nextafter(mids32, np.float32(0))
    vmax, vmin = v.max(), v[v > 0].min()
    half_ulp_top = (v[-1] - v[-2]) / 2
    special = np.array([0.0, vmax, vmax + half_ulp_top / 2, vmax + half_ulp_top, vmax + 1.5 * half_ulp_top,
                        vmax + 2 * half_ulp_top, vmax * 2, vmax * 1e3, 3.4028234663852886e38, np.inf, np.nan,
                        vmin / 2, vmin / 4, vmin * 0.75, vmin * 1.5, 2.0 ** -149, 2.0 ** -126, 1.5 * 2.0 ** -127,
                        1.25 * 2.0 ** -127, 2.0 ** -140, 1e-45, 2.0 ** 127, 1.5 * 2.0 ** 127],
                       np.float64)
    special = special[np.abs(special) <= np.finfo(np.float32).max].astype(np.float32)
    special = np.concatenate([special, np.float32([np.inf, np.nan])])
    x32 = np.concatenate([v.astype(np.float32), mids32, step_up, step_dn, special])
    x32 = np.concatenate([x32, -x32])
    x32 = np.concatenate([x32, rng("random32", fmt).standard_normal(256).astype(np.float32) * np.float32(vmax / 4)])
    # float64: next to the ties, inside half a float32 ulp, so float32 rounds onto the tie (double rounding)
    m = mids[(mids > 2.0 ** -126) & (mids < 3e38)]
    m = m[rng("pick64", fmt).choice(len(m), min(len(m), 512), replace=False)] if len(m) > 512 else m
    rel = np.ldexp(1.0, -40)
    x64 = np.concatenate([m * (1 + rel), m * (1 - rel), m, v[v > 0][:64] * (1 + rel), [0.0, np.inf, np.nan]])
    x64 = np.concatenate([x64, -x64])
    return x32, x64


# =====================================================================================================
# matmul operands (values exact in the operand format)
# =====================================================================================================

WIDE_EXP = {"fp16": (-7, 7), "bf16": (-20, 20), "e4m3": (-9, 8), "e5m2": (-16, 15)}
FMT_MAX = {"fp16": 65504.0, "bf16": 3.0e38, "e4m3": 448.0, "e5m2": 57344.0}


def operand(fmt: str, data: str, shape: tuple[int, ...], side: str, tag: str) -> np.ndarray:
    """One operand; ``side`` is 'a' (.., M, K) or 'b' (.., K, N).  The cancelling pattern depends only on
    (shape, tag), so A and B of one input set cancel exactly."""
    vals = rng("values", fmt, data, shape, side, tag)
    if data == "normal":
        return to_fmt(np.clip(vals.standard_normal(shape), -FMT_MAX[fmt], FMT_MAX[fmt]), fmt)
    if data == "wide":
        lo, hi = WIDE_EXP[fmt]
        e = vals.integers(lo, hi + 1, size=shape)
        x = np.where(vals.random(shape) < 0.5, -1.0, 1.0) * (1 + vals.random(shape)) * np.exp2(e)
        return to_fmt(np.clip(x, -FMT_MAX[fmt], FMT_MAX[fmt]), fmt)
    if data == "tiny":          # products near and below float32's smallest normal; some subnormal inputs
        e = vals.integers(-70, -56, size=shape) if side == "a" else vals.integers(-70, -56, size=shape)
        x = np.where(vals.random(shape) < 0.5, -1.0, 1.0) * (1 + vals.random(shape)) * np.exp2(e)
        sub = vals.random(shape) < 0.1
        x = np.where(sub & (side == "a"), np.exp2(-130.0) * (1 + vals.random(shape)), x)
        x = np.where(sub & (side == "b"), np.exp2(vals.integers(60, 100, size=shape).astype(float)), x)
        return to_fmt(x, fmt)
    if data == "cancelling":    # K/4 exactly cancelling pairs of large products plus a few small terms
        K = shape[-1] if side == "a" else shape[-2]
        st = rng("structure", shape[:-2], K, tag)
        perm = st.permutation(K)
        npairs = K // 4
        p, q, rest = perm[:npairs], perm[npairs:2 * npairs], perm[2 * npairs:]
        small = rest[:min(len(rest), max(4, K // 16))]
        big_s, small_s = (16.0, 2.0 ** -6) if fmt in ("fp16", "bf16") else (16.0, 2.0 ** -4)
        x = np.zeros(shape, np.float32)
        if side == "a":
            x[..., p] = to_fmt(vals.standard_normal(shape[:-1] + (npairs,)) * big_s, fmt)
            x[..., q] = x[..., p]
            x[..., small] = to_fmt(vals.standard_normal(shape[:-1] + (len(small),)) * small_s, fmt)
        else:
            x[..., p, :] = to_fmt(vals.standard_normal(shape[:-2] + (npairs, shape[-1])) * big_s, fmt)
            x[..., q, :] = -x[..., p, :]
            x[..., small, :] = to_fmt(vals.standard_normal(shape[:-2] + (len(small), shape[-1])) * small_s, fmt)
        return x
    raise ValueError(data)


# =====================================================================================================
# provenance
# =====================================================================================================

def cpu_info() -> dict:
    info = {"machine": platform.machine(), "platform": platform.platform(), "cpu_count": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
        flags = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
        info["model_name"] = model.group(1).strip() if model else None
        wanted = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16",
                  "avx512_fp16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_fp16", "amx_int8", "amx_tile")
        have = set(flags.group(1).split()) if flags else set()
        info["isa_flags"] = [f for f in wanted if f in have]
    except OSError:
        info["model_name"], info["isa_flags"] = None, []
    return info


def base_producer(library: str) -> dict:
    with open(__file__, "rb") as f:
        gen_sha = hashlib.sha256(f.read()).hexdigest()
    return {"library": library, "python": platform.python_version(), "numpy": np.__version__,
            "ml_dtypes": ml_dtypes.__version__, "cpu": cpu_info(),
            "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ},
            "recorded_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "generator": "tools/make_golden.py", "generator_sha256": gen_sha, "seed": SEED}


@contextlib.contextmanager
def captured_stdout_fd():
    """Capture what C/C++ code writes to file descriptor 1 (oneDNN's verbose lines)."""
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 1)
        box = []
        try:
            yield box
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            box.append(tmp.read().decode(errors="replace"))


class Store:
    """The arrays of one npz and its case entries."""

    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}
        self.cases: list[dict] = []

    def put(self, name: str, bits: np.ndarray) -> str:
        if name in self.arrays:
            assert np.array_equal(self.arrays[name], bits), name
        self.arrays[name] = np.ascontiguousarray(bits)
        return name

    def write(self, path: str, producer: dict) -> dict:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez_compressed(path, **self.arrays)
        with open(path, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        n_rec = sum(1 for c in self.cases if c["status"] == "recorded")
        return {"sha256": sha, "producer": producer, "n_cases": len(self.cases), "n_recorded": n_rec,
                "cases": self.cases}


# =====================================================================================================
# casts
# =====================================================================================================

CAST_FORMATS = ["fp16", "bf16", "e4m3", "e5m2", "e4m3fnuz", "e5m2fnuz", "e8m0", "e4m3b11fnuz", "e3m4", "e4m3_ieee",
                "fp6_e2m3", "fp6_e3m2", "fp4_e2m1"]


def record_casts(library: str) -> tuple[Store, dict]:
    store = Store()
    prod = base_producer(library)
    if library == "torch":
        import torch
        prod.update(torch_producer(torch))
        tdt = {"fp16": torch.float16, "bf16": torch.bfloat16, "e4m3": torch.float8_e4m3fn,
               "e5m2": torch.float8_e5m2, "e4m3fnuz": torch.float8_e4m3fnuz, "e5m2fnuz": torch.float8_e5m2fnuz,
               "e8m0": torch.float8_e8m0fnu, "fp4_e2m1": getattr(torch, "float4_e2m1fn_x2", None)}

        def cast(x, fmt):
            dt = tdt[fmt]
            t = torch.from_numpy(x).to(dt)
            view = {1: torch.uint8, 2: torch.int16}[t.element_size()]
            return t.view(view).numpy().view(CODE_DTYPE[t.element_size()]).copy(), f"torch.from_numpy(x).to({dt})"
        formats = [f for f in CAST_FORMATS if f in tdt]
    elif library == "ml_dtypes":
        def cast(x, fmt):
            with np.errstate(all="ignore"):
                y = x.astype(ML[fmt])
            name = "numpy.float16" if fmt == "fp16" else f"ml_dtypes.{ML[fmt].name}"
            return y.view(CODE_DTYPE[y.itemsize]).copy(), f"x.astype({name})"
        formats = CAST_FORMATS
    else:
        import jax
        import jax.numpy as jnp
        jax.config.update("jax_enable_x64", True)
        prod.update({"jax": jax.__version__, "jaxlib": __import__("jaxlib").__version__,
                     "jax_backend": jax.default_backend(), "jax_devices": [str(d) for d in jax.devices()]})

        def cast(x, fmt):
            y = np.asarray(jnp.asarray(x).astype(ML[fmt]))
            return y.view(CODE_DTYPE[y.itemsize]).copy(), f"jnp.asarray(x).astype(jnp.{ML[fmt].name})"
        formats = [f for f in CAST_FORMATS if hasattr(jnp, ML[f].name) or f == "fp16"]
    for fmt in formats:
        x32, x64 = cast_inputs(fmt)
        for src, x in (("float32", x32), ("float64", x64)):
            in_name = store.put(f"in_{fmt}_{src}", u32(x) if src == "float32" else u64(x))
            key = f"cast_{fmt}_from_{src}"
            entry = {"key": key, "kind": "cast", "format": fmt, "input_dtype": src, "input_array": in_name,
                     "shape": list(x.shape), "cpu_dependent": False}
            try:
                codes, call = cast(x, fmt)
                again, _ = cast(x, fmt)
                entry.update(call=call, out_array=store.put(f"{key}_out", codes), out_dtype=str(codes.dtype),
                             repeat_identical=bool(np.array_equal(codes, again)), status="recorded")
            except Exception as exc:  # noqa: BLE001 -- a framework that lacks the cast is a fact to record
                entry.update(call=None, status=f"not recorded: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            store.cases.append(entry)
            log(library, key, entry["status"])
    return store, prod


# =====================================================================================================
# torch matmul
# =====================================================================================================

def torch_producer(torch) -> dict:
    cfg = torch.__config__.show()
    onednn = re.search(r"MKL-DNN v([\d.]+)", cfg)
    mkl = re.search(r"Math Kernel Library Version ([\w.\-]+)", cfg)
    return {"torch": torch.__version__, "torch_git": torch.version.git_version,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
            "mkldnn_enabled": bool(torch.backends.mkldnn.enabled), "onednn": onednn.group(1) if onednn else None,
            "mkl": mkl.group(1) if mkl else None,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}


#: (M, K, N): K not a multiple of 4, 8 or 64; M or N = 1; M·K·N at or below 16^3 (ATen's own kernels) and above
#: it (oneDNN), small and medium sizes.
TORCH_SHAPES = [(16, 13, 16), (8, 48, 8), (4, 100, 4), (1, 100, 16), (16, 77, 1), (16, 48, 16), (16, 100, 16),
                (16, 129, 16), (1, 130, 64), (64, 130, 1), (16, 300, 16)]
MEDIUM = (64, 256, 64)


def torch_case_list() -> list[dict]:
    cases = []
    for fmt in ("bf16", "fp16"):
        for (M, K, N) in TORCH_SHAPES:
            datas = ["cancelling", "wide"] + (["normal"] if (M, K, N) in ((16, 100, 16), (4, 100, 4)) else []) \
                + (["tiny"] if fmt == "bf16" and (M, K, N) in ((16, 100, 16), (4, 100, 4)) else [])
            for data in datas:
                for op, layout in (("matmul", "nn"), ("matmul", "nt"), ("matmul", "tn"), ("linear", "nt"),
                                   ("linear_bias", "nt")):
                    cases.append(dict(op=op, layout=layout, fmt=fmt, out=fmt, M=M, K=K, N=N, batch=None, data=data))
                if (M, K, N) in ((16, 13, 16), (16, 100, 16), (4, 100, 4)):
                    for layout in ("nn", "nt", "tn"):
                        cases.append(dict(op="bmm", layout=layout, fmt=fmt, out=fmt, M=M, K=K, N=N, batch=2,
                                          data=data))
        for layout in ("nn", "nt", "tn"):
            cases.append(dict(op="matmul", layout=layout, fmt=fmt, out=fmt, M=MEDIUM[0], K=MEDIUM[1], N=MEDIUM[2],
                              batch=None, data="cancelling"))
    for (M, K, N) in ((4, 100, 4), (16, 48, 16), (16, 100, 16)):
        for data in ("normal", "cancelling"):
            for layout in ("nn", "nt"):
                cases.append(dict(op="matmul", layout=layout, fmt="e4m3", out="e4m3", M=M, K=K, N=N, batch=None,
                                  data=data))
    for (M, K, N) in ((16, 48, 16), (16, 100, 16)):
        for data in ("normal", "cancelling"):
            for bfmt in ("e4m3", "e5m2"):
                for out in ("fp32", "bf16"):
                    for scales in ("one", "pow2", "np2", "rowwise"):
                        if scales == "rowwise" and bfmt == "e5m2":
                            continue
                        cases.append(dict(op="scaled_mm", layout="nt", fmt="e4m3", bfmt=bfmt, out=out, M=M, K=K, N=N,
                                          batch=None, data=data, scales=scales))
    return cases


def torch_key(c: dict) -> str:
    b = f"_{c['bfmt']}" if c.get("bfmt") and c["bfmt"] != c["fmt"] else ""
    s = f"_s{c['scales']}" if c.get("scales") else ""
    bt = f"b{c['batch']}" if c["batch"] else ""
    return f"{c['op']}_{c['fmt']}{b}_out{c['out']}{s}_{c['layout']}_{bt}m{c['M']}k{c['K']}n{c['N']}_{c['data']}"


def record_torch(config: str) -> tuple[Store, dict]:
    import torch
    import torch.nn.functional as F

    if config == "torch_avx2":
        torch.backends.mkldnn.enabled = False
    store = Store()
    prod = base_producer("torch")
    prod.update(torch_producer(torch))
    prod["switches"] = {"torch.backends.mkldnn.enabled": bool(torch.backends.mkldnn.enabled)}
    if config == "torch_avx2":      # ATen pinned to its AVX2 kernels, oneDNN off: only these features matter
        prod["cpu_path_flags"] = ["avx2", "fma"]
    tdt = {"bf16": torch.bfloat16, "fp16": torch.float16, "e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2,
           "fp32": torch.float32}
    for c in torch_case_list():
        key = torch_key(c)
        M, K, N, B = c["M"], c["K"], c["N"], c["batch"]
        bfmt = c.get("bfmt", c["fmt"])
        tag = f"{c['fmt']}{bfmt}"
        sa_shape = ((B,) if B else ()) + (M, K)
        sb_shape = ((B,) if B else ()) + (K, N)
        A = operand(c["fmt"], c["data"], sa_shape, "a", tag)
        Bm = operand(bfmt, c["data"], sb_shape, "b", tag)
        stem = f"in_{c['fmt']}{bfmt}_{c['data']}_{'b%d' % B if B else ''}m{M}k{K}n{N}"
        entry = {"key": key, "kind": "matmul", "op": c["op"], "layout": c["layout"], "data": c["data"],
                 "a_format": c["fmt"], "b_format": bfmt, "out_format": c["out"], "batch": B, "M": M, "K": K, "N": N,
                 "a_array": store.put(stem + "_a", u32(A)), "b_array": store.put(stem + "_b", u32(Bm)),
                 "cpu_dependent": True}
        a = torch.from_numpy(A).to(tdt[c["fmt"]])
        b = torch.from_numpy(Bm).to(tdt[bfmt])
        if c["layout"][0] == "t":
            a = a.transpose(-1, -2).contiguous().transpose(-1, -2)
        if c["layout"][1] == "t":
            b = b.transpose(-1, -2).contiguous().transpose(-1, -2)
        extra = {}
        if c["op"] == "linear_bias":
            bias = to_fmt(rng("bias", key).standard_normal(N) * (4.0 if c["data"] != "tiny" else 2.0 ** -60), c["fmt"])
            extra["bias"] = torch.from_numpy(bias).to(tdt[c["fmt"]])
            entry["c_array"] = store.put(f"{key}_bias", u32(bias))
        if c["op"] == "scaled_mm":
            sa, sb = {"one": (1.0, 1.0), "pow2": (0.25, 8.0), "np2": (0.3, 1.7)}.get(c["scales"], (None, None))
            if c["scales"] == "rowwise":
                sa_v = (0.3 * (1 + np.arange(M) / 7)).astype(np.float32).reshape(M, 1)
                sb_v = (1.7 * (1 + np.arange(N) / 5)).astype(np.float32).reshape(1, N)
            else:
                sa_v, sb_v = np.float32(sa).reshape(()), np.float32(sb).reshape(())
            extra["scale_a"] = torch.from_numpy(np.array(sa_v))
            extra["scale_b"] = torch.from_numpy(np.array(sb_v))
            entry["scale_a_array"] = store.put(f"{key}_scale_a", u32(np.array(sa_v)))
            entry["scale_b_array"] = store.put(f"{key}_scale_b", u32(np.array(sb_v)))
            entry["scale_shape_a"], entry["scale_shape_b"] = list(np.shape(sa_v)), list(np.shape(sb_v))

        def run(a=a, b=b, c=c, extra=extra):
            op = c["op"]
            if op in ("matmul",):
                return torch.matmul(a, b), "torch.matmul(a, b)"
            if op == "bmm":
                return torch.bmm(a, b), "torch.bmm(a, b)"
            if op == "linear":
                return F.linear(a, b.t()), "torch.nn.functional.linear(a, w) with w = b.t() (N, K) contiguous"
            if op == "linear_bias":
                return F.linear(a, b.t(), extra["bias"]), ("torch.nn.functional.linear(a, w, bias) with w = b.t() "
                                                           "(N, K) contiguous")
            return (torch._scaled_mm(a, b, extra["scale_a"], extra["scale_b"], out_dtype=tdt[c["out"]]),
                    f"torch._scaled_mm(a, b, scale_a, scale_b, out_dtype={tdt[c['out']]})")

        entry.update(a_dtype=str(a.dtype), b_dtype=str(b.dtype), shape_a=list(a.shape), strides_a=list(a.stride()),
                     shape_b=list(b.shape), strides_b=list(b.stride()), a_contiguous=a.is_contiguous(),
                     b_contiguous=b.is_contiguous(),
                     a_transposed_view=(not a.is_contiguous()) and a.transpose(-1, -2).is_contiguous(),
                     b_transposed_view=(not b.is_contiguous()) and b.transpose(-1, -2).is_contiguous())
        try:
            with captured_stdout_fd() as box:
                out, call = run()
            verbose = [ln for ln in box[0].splitlines() if ",exec," in ln]
            again, _ = run()
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            single, _ = run()
            torch.set_num_threads(threads)
            bits = out_bits(torch, out)
            entry.update(call=call, out_dtype=str(out.dtype), shape_out=list(out.shape), strides_out=list(out.stride()),
                         out_array=store.put(f"{key}_out", bits),
                         repeat_identical=bool(np.array_equal(bits, out_bits(torch, again))),
                         one_thread_identical=bool(np.array_equal(bits, out_bits(torch, single))),
                         nonfinite_out=int((~torch.isfinite(out.float())).sum()),
                         kernels=[",".join(ln.split(",")[5:7] + ln.split(",")[8:9] + ln.split(",")[-2:-1])
                                  for ln in verbose] or ["aten (no oneDNN primitive ran)"],
                         status="recorded")
        except Exception as exc:  # noqa: BLE001
            entry.update(status=f"not recorded: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}")
        store.cases.append(entry)
        log(config, key, entry["status"], entry.get("kernels", [""])[0][:60])
    return store, prod


def out_bits(torch, t) -> np.ndarray:
    t = t.contiguous()
    size = t.element_size()
    view = {1: torch.uint8, 2: torch.int16, 4: torch.int32}[size]
    return t.view(view).numpy().view(CODE_DTYPE[size]).copy()


# =====================================================================================================
# JAX dots
# =====================================================================================================

JAX_SHAPES = [(16, 17, 16), (16, 48, 16), (16, 100, 16), (16, 129, 16), (16, 300, 16), (1, 100, 64)]


def record_jax(config: str) -> tuple[Store, dict]:
    import jax
    import jax.numpy as jnp

    store = Store()
    prod = base_producer("jax")
    prod.update({"jax": jax.__version__, "jaxlib": __import__("jaxlib").__version__,
                 "jax_backend": jax.default_backend(), "jax_devices": [str(d) for d in jax.devices()]})
    jdt = {"bf16": jnp.bfloat16, "fp16": jnp.float16, "fp32": jnp.float32, "e4m3": jnp.float8_e4m3fn}
    variants = [("bf16", "bf16", None), ("bf16", "fp32", jnp.float32), ("fp16", "fp16", None), ("e4m3", "e4m3", None)]
    for (M, K, N) in JAX_SHAPES:
        for fmt, out, pet in variants:
            datas = ["cancelling", "wide"] + (["normal"] if (M, K, N) == (16, 100, 16) else []) + \
                (["tiny"] if fmt == "bf16" and (M, K, N) == (16, 100, 16) else [])
            for data in datas:
                if fmt == "e4m3" and data == "tiny":
                    continue
                key = f"dot_{fmt}_out{out}_m{M}k{K}n{N}_{data}"
                A = operand(fmt, data, (M, K), "a", fmt)
                B = operand(fmt, data, (K, N), "b", fmt)
                stem = f"in_{fmt}_{data}_m{M}k{K}n{N}"
                call = "jax.jit(lambda a, b: jnp.dot(a, b" + ("" if pet is None else ", preferred_element_type="
                                                               "jnp.float32") + "))(a, b)"
                entry = {"key": key, "kind": "matmul", "op": "dot", "layout": "nn", "data": data, "a_format": fmt,
                         "b_format": fmt, "out_format": out, "batch": None, "M": M, "K": K, "N": N,
                         "a_array": store.put(stem + "_a", u32(A)), "b_array": store.put(stem + "_b", u32(B)),
                         "a_dtype": str(np.dtype(jdt[fmt])), "b_dtype": str(np.dtype(jdt[fmt])),
                         "shape_a": [M, K], "strides_a": [K, 1], "shape_b": [K, N], "strides_b": [N, 1],
                         "call": call, "cpu_dependent": True}
                f = jax.jit(lambda a, b, pet=pet: jnp.dot(a, b, preferred_element_type=pet))
                try:
                    a = jnp.asarray(A.astype(jdt[fmt]))
                    b = jnp.asarray(B.astype(jdt[fmt]))
                    hlo = f.lower(a, b).compile().as_text()
                    y = np.asarray(f(a, b))
                    y2 = np.asarray(f(a, b))
                    bits = y.view(CODE_DTYPE[y.itemsize]).copy()
                    roots = [ln.strip()[:160] for ln in hlo.splitlines() if ("ynn" in ln or " dot(" in ln or
                                                                              "convert(" in ln) and "=" in ln]
                    entry.update(out_dtype=str(y.dtype), shape_out=list(y.shape), strides_out=[N, 1],
                                 out_array=store.put(f"{key}_out", bits),
                                 repeat_identical=bool(np.array_equal(y.view(bits.dtype), y2.view(bits.dtype))),
                                 nonfinite_out=int((~np.isfinite(y.astype(np.float32))).sum()),
                                 kernels=["ynn_fusion" if "__ynn_fusion" in hlo else "xla dot"],
                                 hlo=roots[:8], status="recorded")
                except Exception as exc:  # noqa: BLE001
                    entry.update(status=f"not recorded: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}")
                store.cases.append(entry)
                log(config, key, entry["status"], entry.get("kernels", [""])[0])
    return store, prod


# =====================================================================================================
# the manifest
# =====================================================================================================

def worker(name: str, out_dir: str) -> int:
    rel, _ = CONFIGS[name]
    t0 = time.time()
    if name.startswith("casts_"):
        store, prod = record_casts(name[len("casts_"):])
    elif name.startswith("torch_"):
        store, prod = record_torch(name)
    else:
        store, prod = record_jax(name)
    prod["configuration"] = name
    entry = {"path": rel}
    entry.update(store.write(os.path.join(out_dir, rel), prod))
    with open(os.path.join(out_dir, rel + ".json"), "w") as f:
        json.dump(entry, f)
    log(f"{name}: {entry['n_recorded']}/{entry['n_cases']} cases recorded, {time.time() - t0:.0f} s")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", choices=sorted(CONFIGS), help="record (or verify) only these configurations")
    ap.add_argument("--out", default=GOLDEN, help="golden folder (default: golden/ of this checkout)")
    ap.add_argument("--verify", action="store_true", help="instead of recording: run precisionlab over the golden "
                    "files and write the manifest's verification section (cases whose claimed model is unchanged "
                    "keep their entry; with --all every case is redone)")
    ap.add_argument("--all", action="store_true", help="with --verify: redo every case")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.worker_out)
    manifest = os.path.join(args.out, "MANIFEST.json")
    if args.verify:
        sys.path.insert(0, ROOT)
        from precisionlab import golden
        only = None if not args.only else (lambda p: any(CONFIGS[n][0] == p for n in args.only))
        man = golden.verify_manifest(args.out, progress=log, only=only, incremental=not args.all)
        write_manifest(manifest, man)
        return 0
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or list(CONFIGS):
            env = dict(os.environ)
            env.update(CONFIGS[name][1])
            subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", name, "--worker-out", tmp],
                           env=env, check=True, stdout=subprocess.DEVNULL)
            rel = CONFIGS[name][0]
            with open(os.path.join(tmp, rel + ".json")) as f:
                entries.append(json.load(f))
            os.makedirs(os.path.dirname(os.path.join(args.out, rel)), exist_ok=True)
            os.replace(os.path.join(tmp, rel), os.path.join(args.out, rel))
    merge_manifest(manifest, entries)
    log(f"manifest {manifest}: {len(entries)} files recorded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
