#!/usr/bin/env python3
"""Record a PyTorch CPU mixed-precision training run into ``golden/train/`` (DESIGN §8, §9).

Run by hand in a scratch environment with torch (never a precisionlab dependency)::

    python3 -m venv /tmp/torch-venv
    /tmp/torch-venv/bin/pip install torch numpy          # or a local wheel
    /tmp/torch-venv/bin/python tools/make_golden_train.py

The run: an MLP 16 -> 32 -> 10 (``nn.Linear``, ``nn.ReLU``, ``nn.Linear``, torch's default
initialisation from ``torch.manual_seed``), cross-entropy, full-batch SGD with lr 0.1 on 64
stored inputs, ``torch.autocast("cpu", dtype=torch.float16)`` and
``torch.amp.GradScaler("cpu", init_scale=2**24)``, 50 steps.  The large initial scale makes
the first steps overflow fp16 and be skipped, so the scale trajectory is not trivial.

It writes ``golden/train/torch_cpu_amp_fp16_mlp.npz`` (every float as its bit pattern):

* ``x`` (64, 16) float32 bits (uint32), ``y`` (64,) int64 labels;
* ``init/<name>`` and ``after/<name>`` the parameters (float32 bits) before step 0 and
  after every step (``after/<name>`` has a leading step axis);
* ``loss`` (50,) float32 bits of ``loss.item()`` (the unscaled loss of each step, before
  its update), ``scale`` (50,) float32 bits of the scale the step used, ``skipped``
  (50,) bool (the scale went down, i.e. GradScaler found Inf/NaN and skipped ``opt.step``);

and replaces its entry in ``golden/MANIFEST.json`` (other entries are kept byte for
byte).  The entry records the producer (torch version, CPU capability, threads, MKL-DNN
switch, environment), the exact calls, and every ATen op of step 0 and of the first step
that updates the weights (taken with a ``TorchDispatchMode``) with its dtypes, shapes and
strides: that is where one reads which GEMM layout torch used for each product, that
autocast runs the loss in float32 and how SGD updates (``add_`` with ``alpha``).

The run uses torch's defaults, MKL-DNN (oneDNN) included.  On a CPU with AVX512-FP16 or
AMX-FP16 torch hands its fp16 GEMMs to oneDNN (``mkldnn_fp16_gemm``, from ``addmm``/``mm``
and from ``cpublas::gemm``); with ``torch.backends.mkldnn.enabled = False`` it runs
ATen's own vectorised kernels instead, whose accumulation order is different again
(measured with order-separating data: for ``F.linear`` they match neither ``lanes(64)``
nor any other single order of the candidates for most K).  ``--check`` shows the
difference.

``--check`` additionally reruns the recording in subprocesses with
``ATEN_CPU_CAPABILITY=avx2``, with one thread and with MKL-DNN disabled, and records which
arrays agree bit for bit.  Inputs come from a fixed numpy seed; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_manifest import merge_manifest  # noqa: E402  (same MANIFEST formatting)

SEED = 20261124
N, D_IN, HIDDEN, CLASSES = 64, 16, 32, 10
STEPS, LR, INIT_SCALE = 50, 0.1, 2.0 ** 24
NAME = "train/torch_cpu_amp_fp16_mlp.npz"

CALLS = [
    "torch.manual_seed(SEED); model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))",
    "opt = torch.optim.SGD(model.parameters(), lr=0.1)",
    "scaler = torch.amp.GradScaler('cpu', init_scale=2.0**24)",
    "for step in range(50):",
    "    opt.zero_grad(set_to_none=True)",
    "    with torch.autocast('cpu', dtype=torch.float16):",
    "        loss = F.cross_entropy(model(x), y)",
    "    scale = scaler.get_scale()",
    "    scaler.scale(loss).backward()",
    "    scaler.step(opt)",
    "    scaler.update()",
    "    skipped = scaler.get_scale() < scale",
]


def make_data() -> tuple[np.ndarray, np.ndarray]:
    """64 standard-normal inputs, labels from a fixed random linear teacher (argmax over 10)."""
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((N, D_IN)).astype(np.float32)
    teacher = rng.standard_normal((D_IN, CLASSES))
    y = np.argmax(x.astype(np.float64) @ teacher, axis=1).astype(np.int64)
    return x, y


def bits32(a) -> np.ndarray:
    return np.array(a, dtype=np.float32, copy=True, order="C").view(np.uint32)  # a copy: params change in place


class OpLog(TorchDispatchMode):
    """Every ATen op with the dtype, shape and strides of its tensor arguments and result."""

    def __init__(self):
        super().__init__()
        self.ops = []

    @staticmethod
    def _describe(v):
        if isinstance(v, torch.Tensor):
            return {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape), "stride": list(v.stride())}
        if isinstance(v, (list, tuple)) and any(isinstance(t, torch.Tensor) for t in v):
            return [OpLog._describe(t) for t in v]
        if isinstance(v, (int, float, bool)) or v is None:
            return v
        return str(v)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.append({"op": str(func.overloadpacket.__name__) + "." + func._overloadname,
                         "args": [self._describe(a) for a in args],
                         "kwargs": {k: self._describe(v) for k, v in (kwargs or {}).items()},
                         "out": self._describe(out)})
        return out


def record(mkldnn: bool = True) -> tuple[dict, list, dict | None]:
    torch.backends.mkldnn.enabled = mkldnn
    x_np, y_np = make_data()
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    torch.manual_seed(SEED)
    model = torch.nn.Sequential(torch.nn.Linear(D_IN, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, CLASSES))
    names = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]  # the reference MLP's parameter names
    params = list(model.parameters())
    arrays = {"x": bits32(x_np), "y": y_np}
    for n, p in zip(names, params, strict=True):
        arrays[f"init/{n}"] = bits32(p.detach().numpy())
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    scaler = torch.amp.GradScaler("cpu", init_scale=INIT_SCALE)
    losses, scales, skipped, after = [], [], [], {n: [] for n in names}
    ops, first_update_ops = [], None
    for step in range(STEPS):
        before = [p.detach().clone() for p in params]
        log = OpLog() if first_update_ops is None else None
        if log is not None:
            log.__enter__()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.float16):
            loss = F.cross_entropy(model(x), y)
        scale = scaler.get_scale()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        skip = scaler.get_scale() < scale
        if log is not None:
            log.__exit__(None, None, None)
            if step == 0:
                ops = log.ops
            if not skip:
                first_update_ops = {"step": step, "ops": log.ops}
        unchanged = all(torch.equal(b, p.detach()) for b, p in zip(before, params, strict=True))
        assert skip == unchanged, f"step {step}: skipped={skip} but parameters unchanged={unchanged}"
        losses.append(loss.item())
        scales.append(scale)
        skipped.append(skip)
        for n, p in zip(names, params, strict=True):
            after[n].append(p.detach().numpy().copy())
    arrays["loss"] = bits32(losses)
    arrays["scale"] = bits32(scales)
    arrays["skipped"] = np.array(skipped, dtype=bool)
    for n in names:
        arrays[f"after/{n}"] = bits32(np.stack(after[n]))
    return arrays, ops, first_update_ops


def _cpu_flags() -> list:
    """The CPU flags that decide torch's fp16 GEMM path (AVX2, AVX-512 FP16, AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    return sorted(f for f in set(flags) if f in ("avx2", "fma", "f16c", "avx512f", "avx512_fp16", "avx512_bf16",
                                                   "amx_tile", "amx_bf16", "amx_fp16", "amx_int8"))


def producer() -> dict:
    p = {
        "library": "torch",
        "torch": torch.__version__,
        "torch_git": getattr(torch.version, "git_version", None),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "device": "cpu",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "mkldnn_enabled": torch.backends.mkldnn.enabled,
        "cpu_flags": _cpu_flags(),
        "mkl_available": torch.backends.mkl.is_available(),
        "recorded_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "generator": "tools/make_golden_train.py",
        "seed": SEED,
        "env": {k: os.environ[k] for k in sorted(os.environ)
                if k.startswith(("ATEN_", "OMP_", "MKL_", "KMP_", "DNNL_", "ONEDNN_", "PYTORCH_", "TORCH_"))},
    }
    with open(__file__, "rb") as f:
        p["generator_sha256"] = hashlib.sha256(f.read()).hexdigest()
    try:
        with open("/proc/cpuinfo") as f:
            model_names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        p["cpu"] = model_names[0] if model_names else None
    except OSError:
        p["cpu"] = None
    return p


def gemm_summary(ops: list) -> list:
    """The GEMMs of step 0: op, operand dtypes/shapes/strides and what they compute."""
    out = []
    for o in ops:
        if o["op"].split(".")[0] in ("addmm", "mm", "matmul", "bmm", "linear"):
            out.append({"op": o["op"], "args": [a for a in o["args"] if isinstance(a, dict)], "out": o["out"]})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden"),
                    help="the golden/ folder (default: this repository's)")
    ap.add_argument("--check", action="store_true",
                    help="also rerun with ATEN_CPU_CAPABILITY=avx2 and with one thread and compare the bits")
    ap.add_argument("--dump", default=None, help=argparse.SUPPRESS)  # internal: write arrays for --check
    ap.add_argument("--no-mkldnn", action="store_true", help=argparse.SUPPRESS)  # internal, with --dump
    args = ap.parse_args(argv)
    arrays, ops, first_update = record(mkldnn=not args.no_mkldnn)
    if args.dump:
        np.savez(args.dump, **arrays)
        return 0
    checks = {}
    if args.check:
        import tempfile
        for label, env, extra in (("ATEN_CPU_CAPABILITY=avx2", {"ATEN_CPU_CAPABILITY": "avx2"}, []),
                                  ("OMP_NUM_THREADS=1", {"OMP_NUM_THREADS": "1"}, []),
                                  ("torch.backends.mkldnn.enabled=False", {}, ["--no-mkldnn"])):
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "run.npz")
                subprocess.run([sys.executable, os.path.abspath(__file__), "--dump", path, *extra], check=True,
                               env={**os.environ, **env})
                other = np.load(path)
                checks[label] = {k: bool(np.array_equal(other[k], v)) for k, v in arrays.items()
                                 if not k.startswith("after/")}
                checks[label]["after"] = all(np.array_equal(other[k], v) for k, v in arrays.items()
                                             if k.startswith("after/"))
    path = os.path.join(args.out, NAME)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez_compressed(path, **arrays)
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    skipped = arrays["skipped"]
    entry = {
        "path": NAME,
        "sha256": sha,
        "producer": producer(),
        "kind": "training run",
        "calls": CALLS,
        "model": {"layers": ["Linear(16, 32)", "ReLU()", "Linear(32, 10)"], "init": "torch default (manual_seed)",
                  "parameter_names": ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]},
        "data": {"x": [N, D_IN], "x_dtype": "float32", "y": [N], "y_dtype": "int64", "generator":
                 "numpy default_rng(seed).standard_normal; labels argmax(x @ teacher)"},
        "optimizer": {"name": "SGD", "lr": LR, "momentum": 0, "foreach": "default (False on CPU)"},
        "loss_scaler": {"name": "torch.amp.GradScaler", "device": "cpu", "init_scale": INIT_SCALE,
                        "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000},
        "steps": STEPS,
        "arrays": {"x": "float32 bits (uint32)", "y": "int64", "init/<param>": "float32 bits",
                   "after/<param>": "float32 bits, (steps, *shape): parameters after each step",
                   "loss": "float32 bits of loss.item() per step (unscaled, before the update)",
                   "scale": "float32 bits of the loss scale used by each step",
                   "skipped": "bool per step: GradScaler skipped opt.step (found Inf/NaN)"},
        "skipped_steps": [int(i) for i in np.flatnonzero(skipped)],
        "step0_gemms": gemm_summary(ops),
        "step0_aten_ops": ops,
        "first_update_step": first_update["step"] if first_update else None,
        "first_update_aten_ops": first_update["ops"] if first_update else None,
        "checks": checks,
        "preset_hint": "precisionlab.reference recipe torch_amp_fp16 (torch_cpu_nt forward with bias, torch_cpu_nn "
                       "dgrad, torch_cpu_tn wgrad, fp16) with GradScaler init_scale 2^24",
        "status": "recorded",
    }
    merge_manifest(os.path.join(args.out, "MANIFEST.json"), [entry])
    print(f"wrote {path} ({os.path.getsize(path)} bytes); skipped steps {entry['skipped_steps']}; checks {checks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
