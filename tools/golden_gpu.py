#!/usr/bin/env python3
"""Record golden outputs of real GPU GEMMs (torch + cuBLAS) into ``golden/gpu/``.

Run by hand on a machine with a CUDA GPU and PyTorch (DESIGN §9, §11)::

    python tools/golden_gpu.py --device cuda --out golden/gpu

It depends only on ``torch`` and ``numpy`` (never on precisionlab itself) and writes

* ``<out>/<dev>_torch_gemm.npz`` -- ``torch.matmul`` fp16/bf16 (fp16/bf16 output),
  ``torch.mm(..., out_dtype=torch.float32)`` fp16/bf16, fp32 matmul with TF32 on and
  off, and single-step cases built from the Fasi et al. (2021) test vectors;
* ``<out>/<dev>_scaled_mm.npz`` -- ``torch._scaled_mm`` FP8 (e4m3 x e4m3, e4m3 x e5m2),
  fp32 and bf16 output, per-tensor scales, ``use_fast_accum`` True and False;
* ``MANIFEST.json`` -- merged into ``golden/MANIFEST.json`` when ``--out`` is
  ``golden/gpu`` (else ``<out>/MANIFEST.json``): entries for other files are kept,
  entries for the files written here are replaced.

Array layout inside an npz (everything is a bit pattern, never a float):

* inputs are shared between the cases that use the same values:
  ``in_<fmt>_<data>_m<M>k<K>n<N>_a`` / ``_b`` hold the float32 bit patterns (uint32)
  of the operand values, always as logical row-major (M, K) and (K, N) arrays; every
  value is exactly representable in ``<fmt>`` (the operand format), so the cast to
  the operand dtype is exact. A case names its inputs in ``a_array`` / ``b_array``;
  the memory layout the GPU saw is in ``strides_a`` / ``strides_b``.
* ``<key>_out``: the output's bit patterns, logical (M, N) row-major: uint16 for
  fp16/bf16 outputs, uint32 for fp32 outputs.
* ``<key>_c`` (addmm only): the fp32 C operand, uint32 bit patterns.
* ``scale_<tag>_a`` / ``scale_<tag>_b`` (``_scaled_mm`` only, shared like the inputs
  and named by the case's ``scale_a_array`` / ``scale_b_array``): the fp32 per-tensor
  scales, uint32 bit patterns, shape ().

Input data kinds (fixed numpy seeds; the inputs themselves are stored):

* ``normal``: N(0, 1) rounded (RNE) to the operand format;
* ``cancelling``: K/4 pairs of large products that cancel exactly (a[:, q] = a[:, p],
  b[q, :] = -b[p, :] at random positions p, q) plus a few small terms (the rest
  zero), so the summation order and alignment shift show in the result;
* ``wide``: sign * 2^e * (1 + u), e uniform over an exponent range (fp16: [-5, 5],
  so products span about 2^-10..2^10; bf16: [-10, 10]; fp8: the format's whole range
  including subnormals), rounded to the format (left out at K = 4096 for size);
* ``fasi``: the Fasi, Higham, Mikaitis & Pranesh (2021) vectors of DESIGN §6, test i
  on row i of A and column i of B (see ``fasi_tests``).

Each case is run twice (``repeat_identical`` records whether the bits agreed) and,
once per group of cases that differ only in their data, under the torch profiler to
record the names of the GPU kernels cuBLAS chose (``kernels``).

``--device cpu --dry-run`` runs every case that CPU torch supports (to debug the
script without a GPU); it writes to a scratch folder, never into ``golden/``.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback

import numpy as np
import torch
from golden_manifest import merge_manifest

SEED = 20261122
K_LIST = [16, 32, 48, 64, 100, 128, 256, 1024, 4096]
M_DEF, N_DEF = 16, 16
DATA_KINDS = ["normal", "cancelling", "wide"]


def wanted(data: str, K: int) -> bool:
    """The size budget of golden/ (< 6 MB) leaves out the wide data at K = 4096."""
    return not (data == "wide" and K == 4096)

TORCH_DTYPE = {
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp32": torch.float32,
    "e4m3": getattr(torch, "float8_e4m3fn", None),
    "e5m2": getattr(torch, "float8_e5m2", None),
}
DTYPE_FMT = {str(v): k for k, v in TORCH_DTYPE.items() if v is not None}

# exponent range of the "wide" data per operand format (unbiased, of the value)
WIDE_EXP = {"fp16": (-5, 5), "bf16": (-10, 10), "fp32": (-10, 10),
            "e4m3": (-9, 8), "e5m2": (-16, 15)}
FMT_MAX = {"fp16": 65504.0, "bf16": 3.0e38, "fp32": 3.0e38, "e4m3": 448.0, "e5m2": 57344.0}
# magnitudes of the cancelling data: (large operand scale, small operand scale)
CANCEL_SCALE = {"fp16": (2.0 ** 4, 2.0 ** -6), "bf16": (2.0 ** 4, 2.0 ** -6),
                "fp32": (2.0 ** 4, 2.0 ** -6), "e4m3": (2.0 ** 4, 2.0 ** -4),
                "e5m2": (2.0 ** 4, 2.0 ** -4)}


def log(*a):
    print(*a, flush=True)


# --------------------------------------------------------------------------- inputs

def to_format(x: np.ndarray, fmt: str) -> np.ndarray:
    """Round float32 values to ``fmt`` (RNE, via torch's CPU casts); float32 result."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if fmt == "fp32":
        return x.copy()
    if fmt == "tf32":  # RNE to 10 fraction bits (finite values only)
        u = x.view(np.uint32).astype(np.uint64)
        u = (u + 0xFFF + ((u >> 13) & 1)) & ~np.uint64(0x1FFF)
        return u.astype(np.uint32).view(np.float32)
    dt = TORCH_DTYPE[fmt]
    if fmt in ("e4m3", "e5m2"):
        x = np.clip(x, -FMT_MAX[fmt], FMT_MAX[fmt])
    return torch.from_numpy(x).to(dt).to(torch.float32).numpy().copy()


def _rng(*parts) -> np.random.Generator:
    h = hashlib.sha256(("|".join(str(p) for p in (SEED,) + parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def make_operand(fmt: str, data: str, M: int, K: int, N: int, side: str) -> np.ndarray:
    """One operand (side 'a' -> (M, K), 'b' -> (K, N)) of an input set.

    The *structure* of the cancelling data (which positions pair up) depends only on
    (data, M, K, N), so an A of one format and a B of another still cancel exactly.
    """
    shape = (M, K) if side == "a" else (K, N)
    vals = _rng("values", fmt, data, M, K, N, side)
    if data == "normal":
        return to_format(vals.standard_normal(shape).astype(np.float32), fmt)
    if data == "wide":
        lo, hi = WIDE_EXP[fmt]
        e = vals.integers(lo, hi + 1, size=shape)
        m = 1.0 + vals.random(shape)
        s = np.where(vals.random(shape) < 0.5, -1.0, 1.0)
        return to_format((s * m * np.exp2(e)).astype(np.float32), fmt)
    if data == "cancelling":
        st = _rng("structure", data, M, K, N)
        perm = st.permutation(K)
        npairs = K // 4
        p, q, rest = perm[:npairs], perm[npairs:2 * npairs], perm[2 * npairs:]
        nsmall = min(len(rest), max(4, K // 16))
        small = rest[:nsmall]
        big_s, small_s = CANCEL_SCALE[fmt]
        x = np.zeros(shape, dtype=np.float32)
        if side == "a":
            x[:, p] = to_format((vals.standard_normal((M, npairs)) * big_s).astype(np.float32), fmt)
            x[:, q] = x[:, p]
            x[:, small] = to_format((vals.standard_normal((M, nsmall)) * small_s).astype(np.float32), fmt)
        else:
            x[p, :] = to_format((vals.standard_normal((npairs, N)) * big_s).astype(np.float32), fmt)
            x[q, :] = -x[p, :]
            x[small, :] = to_format((vals.standard_normal((nsmall, N)) * small_s).astype(np.float32), fmt)
        return x
    raise ValueError(data)


F = float
FASI_TESTS = [
    # name, a (first values, rest 0), b, c, expected H100 result per DESIGN §6 (fp32
    # output, except fp16_output_rne: fp16 output); None where the table has none
    ("accumulator_binary32", [1, 1, 1, 1], [2 ** -24] * 4, 1.0, 1 + 2 ** -22),
    ("accumulator_binary32_second", [0.5] * 4, [2 ** -24] * 4, 1.0, 1 + 2 ** -23),
    ("truncation_positive", [1, 1], [2, 2 ** -23 + 2 ** -24], 0.0, 2.0),
    ("truncation_negative", [1, 1], [-2, -(2 ** -23 + 2 ** -24)], 0.0, -2.0),
    ("extra_alignment_bit", [1], [1], -(1 - 2 ** -24), 2 ** -24),
    ("normalisation_in_addition", [1] * 4, [2 ** -24] * 4, 1 - 2 ** -24, 1 + 2 ** -23),
    ("normalisation_in_subtraction", [1, 1], [1, -2 ** -24], -1 + 2 ** -24, 0.0),
    ("third_carry_bit", [1] * 4, [1, 1.5, 1.75, 1.875], 1.875, 8.0),
    ("rounding_down_when_normalising", [1] * 4, [1] * 4, 1 + 2 ** -22 + 2 ** -23, 5.0),
    ("rounding_up_when_normalising_negative", [1] * 4, [-1] * 4, -1 - 2 ** -22 - 2 ** -23, -5.0),
    ("non_monotone_a100_c_below", [0.5] * 4, [2 ** -24] * 3 + [3 * 2 ** -24], 1 - 2 ** -24, None),
    ("non_monotone_a100_c_one", [0.5] * 4, [2 ** -24] * 3 + [3 * 2 ** -24], 1.0, None),
    ("fp16_output_rne", [2 ** -24, 2 ** -24], [0.5, 0.25], 0.0, 2 ** -24),
]
# c as an exact sum of fp16 products (a_t, b_t), used to load C through a first K-block
FASI_C_TERMS = {
    1.0: [(1, 1)],
    0.0: [],
    -(1 - 2 ** -24): [(-1, 1), (2 ** -12, 2 ** -12)],
    1 - 2 ** -24: [(1, 1), (2 ** -12, -2 ** -12)],
    1.875: [(1.875, 1)],
    1 + 2 ** -22 + 2 ** -23: [(1, 1), (2 ** -11, 2 ** -11), (2 ** -11, 2 ** -12)],
    -1 - 2 ** -22 - 2 ** -23: [(-1, 1), (-2 ** -11, 2 ** -11), (-2 ** -11, 2 ** -12)],
}


def fasi_operands(K: int, c_first: bool):
    """A (16, K), B (K, 16), c (16,) with test i on row i of A / column i of B.

    K=16: the test's a, b at k = 0..3 (c not loaded).  K=32 with ``c_first``: c is
    loaded as an exact sum of fp16 products at k = 0..2 (first 16-wide block) and the
    test's a, b sit at k = 16..19 (second block), so that on a 16-wide fused unit the
    running sum entering the second block is exactly c.
    """
    A = np.zeros((16, K), np.float32)
    B = np.zeros((K, 16), np.float32)
    c = np.zeros(16, np.float32)
    off = 16 if c_first else 0
    for i, (_, a, b, cv, _) in enumerate(FASI_TESTS):
        A[i, off:off + len(a)] = a
        B[off:off + len(b), i] = b
        c[i] = cv
        if c_first:
            terms = FASI_C_TERMS[min(FASI_C_TERMS, key=lambda v: abs(v - cv))]
            assert abs(sum(x * y for x, y in terms) - cv) == 0.0, cv
            for t, (x, y) in enumerate(terms):
                A[i, t] = x
                B[t, i] = y
    assert np.array_equal(to_format(A, "fp16"), A) and np.array_equal(to_format(B, "fp16"), B)
    return A, B, c


# --------------------------------------------------------------------------- producer

def _cublas_versions() -> dict:
    out = {}
    try:
        libs = {}
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.split()[-1] if line.strip() else ""
                base = os.path.basename(p)
                if base.startswith("libcublasLt.so"):
                    libs.setdefault("cublasLt", p)
                elif base.startswith("libcublas.so"):
                    libs.setdefault("cublas", p)
        out["libraries"] = libs
        if "cublas" in libs:
            lib = ctypes.CDLL(libs["cublas"])
            v = []
            for prop in (0, 1, 2):  # MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL
                val = ctypes.c_int(-1)
                lib.cublasGetProperty(prop, ctypes.byref(val))
                v.append(val.value)
            out["cublas"] = ".".join(str(x) for x in v)
        if "cublasLt" in libs:
            lt = ctypes.CDLL(libs["cublasLt"])
            lt.cublasLtGetVersion.restype = ctypes.c_size_t
            out["cublasLt_version"] = int(lt.cublasLtGetVersion())
    except Exception as e:  # noqa: BLE001
        out["error"] = repr(e)[:300]
    try:
        from importlib import metadata
        for d in metadata.distributions():
            n = (d.metadata.get("Name") or "").lower()
            if n.startswith("nvidia-cublas") or n.startswith("nvidia-cuda-runtime"):
                out["pip:" + n] = d.version
    except Exception:  # noqa: BLE001
        pass
    return out


def producer_info(device: str) -> dict:
    p = {
        "library": "torch",
        "torch": torch.__version__,
        "torch_git": getattr(torch.version, "git_version", None),
        "cuda": torch.version.cuda,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "device": device,
        "threads": torch.get_num_threads(),
        "recorded_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "generator": "tools/golden_gpu.py",
        "seed": SEED,
        "env": {k: os.environ[k] for k in sorted(os.environ)
                if k.startswith(("CUBLAS", "CUDA_", "NVIDIA_TF32", "TORCH_BLAS", "TORCH_CUDA",
                                 "PYTORCH_", "CUBLASLT"))
                and k not in ("CUDA_HOME", "CUDA_PATH")},
    }
    try:
        with open(__file__, "rb") as f:
            p["generator_sha256"] = hashlib.sha256(f.read()).hexdigest()
    except OSError:
        pass
    try:
        p["deterministic_algorithms"] = torch.are_deterministic_algorithms_enabled()
        p["preferred_blas_library"] = str(torch.backends.cuda.preferred_blas_library())
    except Exception as e:  # noqa: BLE001
        p["preferred_blas_library"] = "error: " + repr(e)[:200]
    if device == "cuda":
        prop = torch.cuda.get_device_properties(0)
        p["device_name"] = prop.name
        p["compute_capability"] = "%d.%d" % (prop.major, prop.minor)
        p["multiprocessors"] = prop.multi_processor_count
        p["total_memory"] = prop.total_memory
        try:
            p["cudnn"] = torch.backends.cudnn.version()
        except Exception:  # noqa: BLE001
            pass
        try:
            r = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,vbios_version,"
                                "clocks.max.sm,clocks.max.mem,pci.device_id",
                                "--format=csv,noheader"], capture_output=True, text=True,
                               timeout=30)
            p["nvidia_smi"] = r.stdout.strip()
            p["driver"] = r.stdout.strip().split(",")[1].strip() if r.stdout else None
        except Exception as e:  # noqa: BLE001
            p["nvidia_smi"] = "error: " + repr(e)[:200]
        # make sure cuBLAS / cuBLASLt are loaded before reading their versions
        x = torch.ones(16, 16, device="cuda", dtype=torch.float16)
        (x @ x).sum().item()
        p["cublas"] = _cublas_versions()
    else:
        p["device_name"] = platform.processor() or platform.machine()
        p["cpu_capability"] = getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)()
    return p


def device_tag(prod: dict, device: str) -> str:
    if device != "cuda":
        return "cpu_dryrun"
    name = prod.get("device_name", "").lower()
    for tag in ("h100", "h200", "h800", "h20", "gh200", "b200", "b100", "gb200", "a100",
                "l40s", "l4", "a10", "v100", "t4", "rtx"):
        if tag in name:
            return tag
    return "gpu"


# --------------------------------------------------------------------------- flags

MM = torch.backends.cuda.matmul


def set_flags(flags: dict) -> dict:
    """Set the cuBLAS flags of a case and return what torch reports afterwards."""
    torch.backends.cuda.preferred_blas_library(flags.get("blas_library", "cublas"))
    MM.allow_tf32 = bool(flags.get("allow_tf32", False))
    for name in ("allow_fp16_reduced_precision_reduction",
                 "allow_bf16_reduced_precision_reduction"):
        v = flags.get(name, False)
        setattr(MM, name, tuple(v) if isinstance(v, (list, tuple)) else bool(v))
    got = read_flags()
    # refuse to record under flags torch did not take
    for name, v in flags.items():
        if name == "blas_library":
            if got[name].lower().rsplit(".", 1)[-1] != v.lower():
                raise RuntimeError("blas library %s not applied (%s)" % (v, got[name]))
            continue
        v = list(v) if isinstance(v, (list, tuple)) else [bool(v)]
        if got.get(name) != v[0] or (len(v) > 1 and got.get(name + "_split_k") != v[1]):
            raise RuntimeError("flag %s=%r not applied (torch reports %r)" % (name, v, got))
    return got


def read_flags() -> dict:
    got = {}
    try:
        got["blas_library"] = str(torch.backends.cuda.preferred_blas_library())
    except Exception as e:  # noqa: BLE001
        got["blas_library"] = "unavailable: " + str(e).splitlines()[0][:120]
    for name in ("allow_tf32", "allow_fp16_reduced_precision_reduction",
                 "allow_fp16_reduced_precision_reduction_split_k",
                 "allow_bf16_reduced_precision_reduction",
                 "allow_bf16_reduced_precision_reduction_split_k",
                 "allow_fp16_accumulation", "fp32_precision"):
        try:
            got[name] = getattr(MM, name)
        except Exception as e:  # noqa: BLE001
            got[name] = "unavailable: " + str(e).splitlines()[0][:120]
    try:
        got["float32_matmul_precision"] = torch.get_float32_matmul_precision()
    except Exception:  # noqa: BLE001
        pass
    return got


# --------------------------------------------------------------------------- cases

class Case(dict):
    pass


def input_name(fmt, data, M, K, N, side):
    return "in_%s_%s_m%dk%dn%d_%s" % (fmt, data, M, K, N, side)


def build_cases(device: str) -> list:
    cases = []
    base_flags = {"blas_library": "cublas", "allow_tf32": False,
                  "allow_fp16_reduced_precision_reduction": False,
                  "allow_bf16_reduced_precision_reduction": False}

    def add(**kw):
        c = Case(kw)
        c.setdefault("flags", dict(base_flags))
        c.setdefault("layout", "nn")
        c.setdefault("c_kind", None)
        cases.append(c)

    # 1. fp16 / bf16 matmul, 16-bit output and fp32 output (mm out_dtype)
    for fmt in ("fp16", "bf16"):
        for K in K_LIST:
            for data in [d for d in DATA_KINDS if wanted(d, K)]:
                shapes = [(M_DEF, N_DEF)] + ([(64, 48)] if K in (64, 256) and data != "wide" else [])
                for (M, N) in shapes:
                    for layout in ("nn", "nt"):
                        if (M, N) != (M_DEF, N_DEF) and layout == "nt":
                            continue
                        sfx = "m%dk%dn%d_%s_%s" % (M, K, N, data, layout)
                        add(key="matmul_%s_out%s_%s" % (fmt, fmt, sfx), file="torch_gemm",
                            call="matmul", a_fmt=fmt, b_fmt=fmt, out_fmt=fmt, data=data,
                            M=M, K=K, N=N, layout=layout,
                            preset_hint="h100_%s (output_format=%s)" % (fmt, fmt),
                            description="torch.matmul %s x %s -> %s, reduced-precision "
                            "reduction off" % (fmt, fmt, fmt))
                        add(key="mm_%s_outfp32_%s" % (fmt, sfx), file="torch_gemm",
                            call="mm_out_dtype", a_fmt=fmt, b_fmt=fmt, out_fmt="fp32",
                            data=data, M=M, K=K, N=N, layout=layout,
                            preset_hint="h100_%s" % fmt,
                            description="torch.mm(a, b, out_dtype=torch.float32), %s inputs"
                            % fmt)
                # split-K / reduced-precision variants at large K
                if K in (256, 1024, 4096) and data in ("normal", "cancelling"):
                    sfx = "m%dk%dn%d_%s_nn" % (M_DEF, K, N_DEF, data)
                    flag = "allow_%s_reduced_precision_reduction" % fmt
                    for tag, val, lib, what in (
                            ("nosplitk", [False, False], "cublaslt",
                             "cuBLASLt backend, split-K disallowed (allow_splitk=False; torch "
                             "requires the cuBLASLt backend for it)"),
                            ("lt", False, "cublaslt", "cuBLASLt backend "
                             "(preferred_blas_library('cublaslt'))"),
                            ("rpr", True, "cublas", "reduced-precision reduction ALLOWED")):
                        fl = dict(base_flags)
                        fl[flag] = val
                        fl["blas_library"] = lib
                        add(key="matmul_%s_out%s_%s_%s" % (fmt, fmt, sfx, tag), file="torch_gemm",
                            call="matmul", a_fmt=fmt, b_fmt=fmt, out_fmt=fmt, data=data,
                            M=M_DEF, K=K, N=N_DEF, flags=fl,
                            preset_hint="h100_%s (output_format=%s)" % (fmt, fmt),
                            description="torch.matmul %s -> %s, %s" % (fmt, fmt, what))

    # 2. fp32 matmul, TF32 on and off: fp16-representable values (exact in TF32) and
    #    full-precision fp32 values (shows how fp32 is converted to TF32)
    for K in K_LIST:
        for vfmt, datas in (("fp16", DATA_KINDS), ("fp32", ["normal"] if K < 4096 else [])):
            for data in [d for d in datas if wanted(d, K)]:
                for tf32 in (True, False):
                    fl = dict(base_flags)
                    fl["allow_tf32"] = tf32
                    sfx = "m%dk%dn%d_%s_nn" % (M_DEF, K, N_DEF, data)
                    add(key="matmul_fp32_%s_vals%s_%s" % ("tf32" if tf32 else "notf32", vfmt, sfx),
                        file="torch_gemm", call="matmul", a_fmt="fp32", b_fmt="fp32",
                        out_fmt="fp32", a_vals=vfmt, b_vals=vfmt, data=data, M=M_DEF, K=K,
                        N=N_DEF, flags=fl,
                        preset_hint="h100_tf32" if tf32 else "none (fp32 FMA, order unknown)",
                        description="torch.matmul fp32 x fp32, allow_tf32=%s, operand values "
                        "%s" % (tf32, "exact in fp16 (so in TF32)" if vfmt == "fp16"
                                else "full 24-bit fp32 significands"))

    # 3. torch._scaled_mm FP8
    scales = [("s1", 1.0, 1.0), ("spow2", 2.0 ** -4, 2.0 ** 2), ("snp2", 0.3, 1.7)]
    for bf in ("e4m3", "e5m2"):
        for K in K_LIST:
            for data in [d for d in DATA_KINDS if wanted(d, K)]:
                for od in ("fp32", "bf16"):
                    for stag, sa, sb in scales:
                        for fast in (True, False):
                            if K % 16 and not (od == "fp32" and stag == "s1" and not fast
                                               and data == "normal"):
                                continue  # one attempt documents the K % 16 restriction
                            sfx = "m%dk%dn%d_%s" % (M_DEF, K, N_DEF, data)
                            add(key="scaled_e4m3x%s_out%s_%s_%s_%s" % (
                                bf, od, stag, "fast" if fast else "nofast", sfx),
                                file="scaled_mm", call="scaled_mm", a_fmt="e4m3", b_fmt=bf,
                                out_fmt=od, data=data, M=M_DEF, K=K, N=N_DEF, layout="nt",
                                scale_tag=stag, scale_a=sa, scale_b=sb, use_fast_accum=fast,
                                preset_hint=("h100_e4m3" + ("" if bf == "e4m3" else
                                                            " (b_format=e5m2)")
                                             + ("" if fast else " + fp32 promotion (non-fast "
                                                "accumulation; promote_every=128 likely)"))
                                + ("" if od == "fp32" else ", output_format=bf16"),
                                description="torch._scaled_mm e4m3 x %s -> %s, per-tensor "
                                "scales %r, %r, use_fast_accum=%s" % (bf, od, sa, sb, fast))

    # 4. Fasi et al. single-step vectors (fp16 inputs)
    desc = ("Fasi et al. (2021) vectors of DESIGN §6, test i = row i of A / column i of "
            "B (rows 13-15 zero); out[i, i] is test i, off-diagonal entries are valid "
            "extra dot products")
    add(key="fasi_k16_mm_outfp32", file="torch_gemm", call="mm_out_dtype", a_fmt="fp16",
        b_fmt="fp16", out_fmt="fp32", data="fasi", M=16, K=16, N=16, fasi=("k16", False),
        preset_hint="h100_fp16",
        description=desc + "; K=16, C NOT applied (only tests with c = 0 are meaningful)")
    add(key="fasi_k16_addmm_outfp32", file="torch_gemm", call="addmm_out_dtype", a_fmt="fp16",
        b_fmt="fp16", out_fmt="fp32", data="fasi", M=16, K=16, N=16, fasi=("k16", False),
        c_kind="fasi_rows", preset_hint="h100_fp16 (C added by the cuBLAS epilogue?)",
        description=desc + "; K=16, torch.addmm with fp32 C[i, j] = c_i (beta = 1: cuBLAS "
        "adds C in its epilogue, which need not be the tensor core's C input)")
    add(key="fasi_k32_cfirst_mm_outfp32", file="torch_gemm", call="mm_out_dtype",
        a_fmt="fp16", b_fmt="fp16", out_fmt="fp32", data="fasi", M=16, K=32, N=16,
        fasi=("k32c", True), preset_hint="h100_fp16",
        description=desc + "; K=32: c loaded as an exact sum of fp16 products at k=0..2 "
        "(first 16-wide block), the test at k=16..19; the stored c is the intended C")
    add(key="fasi_k16_matmul_outfp16", file="torch_gemm", call="matmul", a_fmt="fp16",
        b_fmt="fp16", out_fmt="fp16", data="fasi", M=16, K=16, N=16, fasi=("k16", False),
        preset_hint="h100_fp16 (output_format=fp16)",
        description=desc + "; K=16, fp16 output (test fp16_output_rne), C not applied")
    add(key="fasi_k32_cfirst_matmul_outfp16", file="torch_gemm", call="matmul", a_fmt="fp16",
        b_fmt="fp16", out_fmt="fp16", data="fasi", M=16, K=32, N=16, fasi=("k32c", True),
        preset_hint="h100_fp16 (output_format=fp16)",
        description=desc + "; K=32 with c in the first block, fp16 output")
    return cases


def group_key(c: Case) -> str:
    """Cases that differ only in their values (data, scale values) use one kernel."""
    return "|".join(str(x) for x in (
        c["call"], c["a_fmt"], c["b_fmt"], c["out_fmt"], c["M"], c["K"], c["N"], c["layout"],
        json.dumps(c["flags"], sort_keys=True), c.get("use_fast_accum"), c.get("c_kind")))


# --------------------------------------------------------------------------- running

def u32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


def f32(u: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(u, dtype=np.uint32).view(np.float32)


def out_bits(t: torch.Tensor) -> np.ndarray:
    t = t.detach().to("cpu").contiguous()
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.view(torch.int16).numpy().view(np.uint16).copy()
    if t.dtype == torch.float32:
        return t.view(torch.int32).numpy().view(np.uint32).copy()
    raise TypeError(t.dtype)


def to_dev(x32: np.ndarray, fmt: str, device: str, colmajor: bool) -> torch.Tensor:
    src = torch.from_numpy(np.ascontiguousarray(x32, dtype=np.float32))
    dt = TORCH_DTYPE[fmt]
    if dt is None:
        raise RuntimeError("torch has no dtype for " + fmt)
    t = src.to(dt)
    if not torch.equal(t.to(torch.float32), src):
        raise RuntimeError("operand values are not exact in " + fmt)
    if colmajor:
        t = t.t().contiguous().t()
    return t.to(device)


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def kernels_of(fn, device) -> list:
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CUDA] if device == "cuda" else [ProfilerActivity.CPU]
    with profile(activities=acts) as prof:
        fn()
        sync(device)
    names = []
    for e in prof.events():
        dt = str(getattr(e, "device_type", ""))
        if device == "cuda" and "CUDA" not in dt:
            continue
        if e.name not in names:
            names.append(e.name)
    return names


def strides(t: torch.Tensor) -> list:
    return list(t.stride())


class Recorder:
    def __init__(self, device: str, profile: bool, profile_budget: float):
        self.device = device
        self.profile = profile
        self.profile_budget = profile_budget
        self.profile_spent = 0.0
        self.arrays = {"torch_gemm": {}, "scaled_mm": {}}
        self.group_kernels = {}
        self.fasi_cache = {}

    # inputs -------------------------------------------------------------
    def operand(self, c: Case, side: str) -> tuple:
        """(array name, float32 values) of operand ``side`` of case ``c``."""
        M, K, N = c["M"], c["K"], c["N"]
        if c["data"] == "fasi":
            tag, cfirst = c["fasi"]
            if tag not in self.fasi_cache:
                self.fasi_cache[tag] = fasi_operands(K, cfirst)
            A, B, _ = self.fasi_cache[tag]
            name = "in_fp16_fasi_%s_%s" % (tag, side)
            x = A if side == "a" else B
        else:
            vfmt = c.get(side + "_vals", c[side + "_fmt"])
            name = input_name(vfmt, c["data"], M, K, N, side)
            store = self.arrays[c["file"]]
            if name in store:
                return name, f32(store[name])
            x = make_operand(vfmt, c["data"], M, K, N, side)
        self.arrays[c["file"]][name] = u32(x)
        return name, x

    # one case -----------------------------------------------------------
    def run(self, c: Case) -> dict:
        dev = self.device
        key = c["key"]
        entry = {"key": key}
        store = self.arrays[c["file"]]
        a_name, A = self.operand(c, "a")
        b_name, B = self.operand(c, "b")
        colmajor_b = c["layout"] == "nt"
        a = to_dev(A, c["a_fmt"], dev, False)
        b = to_dev(B, c["b_fmt"], dev, colmajor_b)
        od = TORCH_DTYPE[c["out_fmt"]]
        entry.update(a_array=a_name, b_array=b_name, a_dtype=str(a.dtype), b_dtype=str(b.dtype),
                     out_dtype=str(od), a_format=c.get("a_vals", c["a_fmt"]),
                     b_format=c.get("b_vals", c["b_fmt"]),
                     shape_a=list(a.shape), strides_a=strides(a),
                     shape_b=list(b.shape), strides_b=strides(b))
        extra = {}
        if c["call"] == "matmul":
            call = "torch.matmul(a, b)"
            fn = lambda: torch.matmul(a, b)  # noqa: E731
        elif c["call"] == "mm_out_dtype":
            call = "torch.mm(a, b, out_dtype=%s)" % od
            fn = lambda: torch.mm(a, b, out_dtype=od)  # noqa: E731
        elif c["call"] == "addmm_out_dtype":
            _, _, cvec = self.fasi_cache[c["fasi"][0]]
            C = np.repeat(cvec[:, None], c["N"], axis=1).astype(np.float32)
            ct = torch.from_numpy(C).to(dev)
            extra["c"] = u32(C)
            entry.update(c_array=key + "_c", shape_c=list(ct.shape), strides_c=strides(ct),
                         c_dtype=str(ct.dtype))
            call = "torch.addmm(c, a, b, out_dtype=%s)" % od
            fn = lambda: torch.addmm(ct, a, b, out_dtype=od)  # noqa: E731
        elif c["call"] == "scaled_mm":
            sa = torch.tensor(c["scale_a"], dtype=torch.float32, device=dev)
            sb = torch.tensor(c["scale_b"], dtype=torch.float32, device=dev)
            fast = c["use_fast_accum"]
            names = {}
            for side in ("a", "b"):  # scales are shared by the cases that use them
                names[side] = "scale_%s_%s" % (c["scale_tag"], side)
                store[names[side]] = u32(np.array(c["scale_" + side], np.float32))
            entry.update(scale_a_array=names["a"], scale_b_array=names["b"],
                         scale_a=float(np.float32(c["scale_a"])),
                         scale_b=float(np.float32(c["scale_b"])),
                         scale_shape=list(sa.shape), use_fast_accum=fast)
            call = ("torch._scaled_mm(a, b, scale_a, scale_b, out_dtype=%s, use_fast_accum=%s)"
                    % (od, fast))
            fn = lambda: torch._scaled_mm(a, b, sa, sb, out_dtype=od,  # noqa: E731
                                          use_fast_accum=fast)
        else:
            raise ValueError(c["call"])
        entry["call"] = call
        entry["flags"] = set_flags(c["flags"])
        if c.get("fasi"):
            entry["fasi_tests"] = [
                {"row": i, "name": t[0], "a": [F(v).hex() for v in t[1]],
                 "b": [F(v).hex() for v in t[2]], "c": F(t[3]).hex(),
                 "expected_h100": None if t[4] is None else F(t[4]).hex()}
                for i, t in enumerate(FASI_TESTS)]
            _, _, cvec = self.fasi_cache[c["fasi"][0]]
            entry["c_intended_hex"] = [F(v).hex() for v in cvec]
        out1 = fn()
        sync(dev)
        out2 = fn()
        sync(dev)
        if out1.dtype != od:
            raise RuntimeError("output dtype %s, expected %s" % (out1.dtype, od))
        bits1, bits2 = out_bits(out1), out_bits(out2)
        entry.update(shape_out=list(out1.shape), strides_out=strides(out1),
                     repeat_identical=bool(np.array_equal(bits1, bits2)),
                     nonfinite_out=int((~torch.isfinite(out1.float())).sum().item()))
        # kernels: profile once per group
        g = group_key(c)
        if g in self.group_kernels:  # same call, shapes, flags: see that case's kernels
            entry["kernels_from"] = self.group_kernels[g][1]
        elif self.profile and self.profile_spent < self.profile_budget:
            t0 = time.time()
            try:
                ks = kernels_of(fn, dev)
                self.group_kernels[g] = (ks, key)
                entry["kernels"], entry["kernels_from"] = ks, key
            except Exception as e:  # noqa: BLE001
                entry["kernels"] = "profiler failed: " + str(e).splitlines()[0][:200]
            self.profile_spent += time.time() - t0
        store[key + "_out"] = bits1
        entry["out_array"] = key + "_out"
        for k, v in extra.items():
            store[key + "_" + k] = v
        return entry


def case_meta(c: Case) -> dict:
    return {"data": c["data"], "preset_hint": c["preset_hint"], "description": c["description"],
            "layout": {"nn": "a row-major, b row-major",
                       "nt": "a row-major, b column-major (a transposed view)"}[c["layout"]]}


# --------------------------------------------------------------------------- manifest

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--out", default=None, help="folder for the npz files (default golden/gpu; "
                    "a scratch folder with --dry-run)")
    ap.add_argument("--manifest", default=None, help="manifest to update (default: "
                    "<out>/../MANIFEST.json when <out> is golden/gpu, else <out>/MANIFEST.json)")
    ap.add_argument("--dry-run", action="store_true", help="debug run (use with --device cpu)")
    ap.add_argument("--only", default=None, help="run only cases whose key contains this")
    ap.add_argument("--no-profile", action="store_true", help="do not record kernel names")
    ap.add_argument("--profile-budget", type=float, default=120.0,
                    help="seconds to spend at most on profiling")
    ap.add_argument("--merge-from", default=None, help="only merge this manifest's file "
                    "entries into --manifest (after copying a device run's files here)")
    args = ap.parse_args(argv)

    here = os.path.dirname(os.path.abspath(__file__))
    golden_gpu = os.path.normpath(os.path.join(here, "..", "golden", "gpu"))
    if args.merge_from:
        with open(args.merge_from) as f:
            src = json.load(f)
        target = args.manifest or os.path.join(os.path.dirname(golden_gpu), "MANIFEST.json")
        merge_manifest(target, src["files"])
        log("merged %d file entries into %s" % (len(src["files"]), target))
        return 0

    if args.device == "cuda" and not torch.cuda.is_available():
        log("CUDA not available")
        return 2
    out = args.out or ("/tmp/golden_gpu_dryrun" if args.dry_run else golden_gpu)
    out = os.path.abspath(out)
    if args.dry_run and os.path.normpath(out).startswith(os.path.dirname(golden_gpu)):
        log("--dry-run refuses to write into golden/")
        return 2
    os.makedirs(out, exist_ok=True)
    if args.manifest:
        manifest = args.manifest
    elif os.path.basename(out) == "gpu" and os.path.basename(os.path.dirname(out)) == "golden":
        manifest = os.path.join(os.path.dirname(out), "MANIFEST.json")
    else:
        manifest = os.path.join(out, "MANIFEST.json")

    t_start = time.time()
    prod = producer_info(args.device)
    prod["torch_default_flags"] = read_flags()
    log(json.dumps(prod, indent=1, default=str))
    tag = device_tag(prod, args.device)
    cases = build_cases(args.device)
    if args.only:
        cases = [c for c in cases if args.only in c["key"]]
    log("%d cases" % len(cases))
    rec = Recorder(args.device, not args.no_profile, args.profile_budget)
    entries = {"torch_gemm": [], "scaled_mm": []}
    n_ok = n_fail = 0
    for i, c in enumerate(cases):
        meta = case_meta(c)
        try:
            e = rec.run(c)
            e.update(meta)
            e["status"] = "recorded"
            n_ok += 1
        except Exception as ex:  # noqa: BLE001
            msg = str(ex).strip().splitlines()[0][:300] if str(ex).strip() else repr(ex)
            e = {"key": c["key"], "status": "not recorded: %s: %s" % (type(ex).__name__, msg),
                 "call": c["call"], "a_format": c["a_fmt"], "b_format": c["b_fmt"],
                 "out_format": c["out_fmt"], "shape_a": [c["M"], c["K"]],
                 "shape_b": [c["K"], c["N"]], "flags_requested": c["flags"]}
            e.update(meta)
            n_fail += 1
            if n_fail <= 40:
                log("FAIL %s: %s" % (c["key"], e["status"]))
            if n_fail <= 2:
                log(traceback.format_exc()[-1500:])
        entries[c["file"]].append(e)
        if (i + 1) % 100 == 0:
            log("%d/%d cases, %d failed, %.1f s (profiling %.1f s)"
                % (i + 1, len(cases), n_fail, time.time() - t_start, rec.profile_spent))
    log("ran %d cases: %d recorded, %d not recorded, %.1f s"
        % (len(cases), n_ok, n_fail, time.time() - t_start))
    # restore torch defaults
    set_flags({"allow_tf32": False, "allow_fp16_reduced_precision_reduction": True,
               "allow_bf16_reduced_precision_reduction": True})

    new_files = []
    for fname in ("torch_gemm", "scaled_mm"):
        if not entries[fname]:
            continue
        rel = "gpu/%s_%s.npz" % (tag, fname)
        path = os.path.join(out, os.path.basename(rel))
        np.savez_compressed(path, **rec.arrays[fname])
        with open(path, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        n_rec = sum(1 for e in entries[fname] if e["status"] == "recorded")
        new_files.append({"path": rel, "sha256": sha, "producer": prod,
                          "n_cases": len(entries[fname]), "n_recorded": n_rec,
                          "cases": entries[fname]})
        log("wrote %s: %d bytes, %d arrays, %d/%d cases recorded"
            % (path, os.path.getsize(path), len(rec.arrays[fname]), n_rec, len(entries[fname])))
    merge_manifest(manifest, new_files)
    log("manifest %s: %d bytes" % (manifest, os.path.getsize(manifest)))
    log("total %.1f s" % (time.time() - t_start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
