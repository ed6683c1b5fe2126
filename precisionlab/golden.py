"""Golden files: load, validate and check the recordings of real frameworks and hardware (DESIGN §9).

``golden/MANIFEST.json`` lists every file (``files[i]``: path, sha256, producer, cases) and, in
``verification``, what precisionlab reproduces: per case the model that is claimed to reproduce it
(``model``, its spec) and the outcome of checking every element (``reproduced``, or an ``open
finding`` with its mismatch count, a bit mask of the mismatching elements and the other models
tried).  This module is the one place that reads them (tests/golden and ``precisionlab conformance
--golden`` use it):

* :func:`open_golden` loads the manifest and :meth:`GoldenFile.load` one npz, checking its sha256, that
  it is a readable archive and that it holds every array its cases name, with the right dtype and
  size; anything else raises :class:`GoldenError` naming the file.
* :func:`case_models` gives, per case, the claimed model first (the cast rule or the spec that
  ``precisionlab.frameworks`` / the GPU presets say the call runs) and the alternatives tried for
  findings; :func:`evaluate` runs a model on some or all output elements and compares bit patterns
  (NaN compared as NaN, the sign of zero counts).
* :func:`check_case` checks a case against its verification entry; :func:`run_suite` does every
  file.  Without a fast matmul backend (the exact NumPy reference is slow), matmul cases are checked
  on a fixed sample of output elements (each element is a full K-long dot product, so every order
  detail is exercised); ``full=True`` checks all of them.
* A case whose result depends on the producer's CPU (``cpu_dependent``: the framework picks its
  kernels by CPU features) is skipped, with the reason, when this machine's features that choose
  those kernels differ from the producer's (:func:`cpu_flags`, from /proc/cpuinfo, mapped to torch's
  capability names by :func:`torch_capability`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import frameworks
from .formats import get_format
from .matmul import MatmulSpec
from .presets import get_preset
from .rounding import decode, encode

__all__ = ["GoldenError", "GoldenFile", "GoldenCase", "Model", "CaseResult", "open_golden", "default_root",
           "cpu_flags", "torch_capability", "cpu_skip_reason", "case_models", "evaluate", "check_case",
           "run_suite", "verify_manifest", "PER_CASE_MACS"]

MANIFEST = "MANIFEST.json"
#: ``kind`` of a manifest entry that records a training run rather than cases.
TRAINING_RUN = "training run"
#: Multiply-accumulates spent per matmul case when only the slow reference backend is available.
PER_CASE_MACS = 1024
#: Output elements on which the alternatives of an open finding are tried (the claimed model: all).
ALTERNATIVE_SAMPLE = 64
#: CPU flags that choose the kernels of torch / oneDNN / XLA (a cpu_dependent case needs the same set).
PATH_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16", "avx512_fp16",
              "amx_bf16", "amx_fp16", "amx_tile")
TORCH_DTYPE_FORMAT = {"torch.float16": "fp16", "torch.bfloat16": "bf16", "torch.float32": "fp32",
                      "torch.float8_e4m3fn": "e4m3", "torch.float8_e5m2": "e5m2"}


class GoldenError(ValueError):
    """A golden file or the manifest is missing, corrupt, truncated or inconsistent (names the file)."""


def default_root() -> str:
    """``$PRECISIONLAB_GOLDEN``, else the ``golden/`` folder of this checkout."""
    env = os.environ.get("PRECISIONLAB_GOLDEN")
    return env or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden")


# =====================================================================================================
# loading and validation
# =====================================================================================================

@dataclass
class GoldenCase:
    """One recorded call of a golden file (its manifest entry plus access to its arrays)."""

    file: GoldenFile
    entry: dict

    @property
    def key(self) -> str:
        return self.entry["key"]

    @property
    def recorded(self) -> bool:
        return self.entry.get("status") == "recorded"

    @property
    def kind(self) -> str:
        return self.entry.get("kind", "matmul")

    def array(self, role: str) -> np.ndarray:
        return self.file.array(self.entry[role])

    @property
    def verification(self) -> dict | None:
        return self.file.verification.get(self.key)


@dataclass
class GoldenFile:
    """One npz of the manifest; :meth:`load` reads and validates it once."""

    root: str
    entry: dict
    verification: dict = field(default_factory=dict)
    _arrays: dict[str, np.ndarray] | None = None

    @property
    def path(self) -> str:
        return self.entry["path"]

    @property
    def abspath(self) -> str:
        return os.path.join(self.root, self.path)

    @property
    def producer(self) -> dict:
        return self.entry.get("producer", {})

    @property
    def training_run(self) -> bool:
        """A recorded training run (``kind: "training run"``): no cases; tests/golden/test_golden_train.py checks it."""
        return self.entry.get("kind") == TRAINING_RUN

    @property
    def cases(self) -> list[GoldenCase]:
        return [GoldenCase(self, c) for c in self.entry.get("cases", [])]

    def load(self) -> GoldenFile:
        """Read every array, checking sha256, the archive and what the cases name; GoldenError otherwise."""
        if self._arrays is not None:
            return self
        try:
            with open(self.abspath, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise GoldenError(f"golden file {self.path}: cannot read {self.abspath}: {exc.strerror}") from None
        sha = hashlib.sha256(data).hexdigest()
        if sha != self.entry.get("sha256"):
            raise GoldenError(f"golden file {self.path}: sha256 {sha} does not match the manifest's "
                              f"{self.entry.get('sha256')} (corrupt, truncated or regenerated without the manifest)")
        try:
            with np.load(self.abspath, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
            raise GoldenError(f"golden file {self.path}: not a readable npz archive ({type(exc).__name__}: {exc})") \
                from None
        self._arrays = arrays
        for case in self.cases:
            _validate_case(self, case)
        return self

    def array(self, name: str) -> np.ndarray:
        self.load()
        if name not in self._arrays:
            raise GoldenError(f"golden file {self.path}: array {name!r} named by the manifest is missing")
        return self._arrays[name]


def _validate_case(gf: GoldenFile, case: GoldenCase) -> None:
    e = case.entry
    if not case.recorded:
        return
    where = f"golden file {gf.path}, case {case.key}"
    for role in [r for r in e if r.endswith("_array")]:
        if e[role] not in gf._arrays:
            raise GoldenError(f"{where}: array {e[role]!r} ({role}) is missing from the npz")
        if gf._arrays[e[role]].dtype.kind != "u":
            raise GoldenError(f"{where}: array {e[role]!r} has dtype {gf._arrays[e[role]].dtype}; bit patterns "
                              "(unsigned integers) expected")
    out = gf._arrays[e["out_array"]]
    if case.kind == "matmul":
        a, b = gf._arrays[e["a_array"]], gf._arrays[e["b_array"]]
        if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
            raise GoldenError(f"{where}: operand shapes {a.shape} and {b.shape} do not multiply")
        want = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
        if out.shape != want:
            raise GoldenError(f"{where}: output shape {out.shape}, expected {want}")
    elif out.shape != gf._arrays[e["input_array"]].shape:
        raise GoldenError(f"{where}: output shape {out.shape} differs from the input's")


def open_golden(root: str | None = None) -> tuple[dict, list[GoldenFile]]:
    """The manifest (validated JSON) and its files (not yet loaded) under ``root``."""
    root = root or default_root()
    path = os.path.join(root, MANIFEST)
    try:
        with open(path) as f:
            man = json.load(f)
    except OSError as exc:
        raise GoldenError(f"golden manifest {path}: cannot read it: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise GoldenError(f"golden manifest {path}: not valid JSON ({exc})") from None
    if not isinstance(man, dict) or not isinstance(man.get("files"), list):
        raise GoldenError(f"golden manifest {path}: expected an object with a 'files' list")
    files = []
    for i, entry in enumerate(man["files"]):
        if not isinstance(entry, dict):
            raise GoldenError(f"golden manifest {path}: files[{i}] is a {type(entry).__name__}, not an object")
        needed = ("path", "sha256", "producer") + (("steps",) if entry.get("kind") == TRAINING_RUN else ("cases",))
        missing = [k for k in needed if k not in entry]
        if missing:
            raise GoldenError(f"golden manifest {path}: files[{i}] ({entry.get('path', '?')}) lacks {missing}")
        keys = [c.get("key") for c in entry.get("cases", [])]
        if len(set(keys)) != len(keys):
            raise GoldenError(f"golden manifest {path}: {entry['path']} has duplicate case keys")
        files.append(GoldenFile(root, entry, man.get("verification", {}).get(entry["path"], {})))
    return man, files


# =====================================================================================================
# the CPU a case depends on
# =====================================================================================================

def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str] | None:
    """This machine's CPU feature flags (Linux /proc/cpuinfo), or None where they cannot be read."""
    try:
        with open(cpuinfo) as f:
            text = f.read()
    except OSError:
        return None
    m = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    return frozenset(m.group(1).split()) if m else None


def torch_capability(flags: frozenset[str] | set[str]) -> str:
    """torch's name for the ATen kernels a CPU with these flags runs: AVX512, AVX2 or DEFAULT (x86)."""
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "fma"} <= set(flags):
        return "AVX512"
    if {"avx2", "fma"} <= set(flags):
        return "AVX2"
    return "DEFAULT"


def cpu_skip_reason(gf: GoldenFile, case: GoldenCase, flags: frozenset[str] | None | str = "detect") -> str | None:
    """Why ``case`` does not apply to this CPU, or None.  Only ``cpu_dependent`` cases depend on it:
    their kernels were chosen by the producer's CPU features (``PATH_FLAGS``, or the file's
    ``cpu_path_flags`` where a switch pinned them, e.g. ATEN_CPU_CAPABILITY=avx2)."""
    if not case.entry.get("cpu_dependent") or os.environ.get("PRECISIONLAB_GOLDEN_ANY_CPU"):
        return None
    if flags == "detect":
        flags = cpu_flags()
    cpu = gf.producer.get("cpu", {})
    relevant = set(gf.producer.get("cpu_path_flags", PATH_FLAGS))
    theirs = set(cpu.get("isa_flags", [])) & relevant
    cap = gf.producer.get("cpu_capability", torch_capability(theirs))
    if flags is None:
        return (f"recorded on {cpu.get('model_name')} (capability {cap}); this machine's CPU flags cannot be read, so "
                "whether the framework takes the same kernels here is unknown")
    ours = set(flags) & relevant
    if ours == theirs:
        return None
    return (f"recorded on {cpu.get('model_name')} with capability {cap} and {sorted(theirs)}; this CPU is "
            f"{torch_capability(flags)}: lacks {sorted(theirs - ours)}, adds {sorted(ours - theirs)}, so the framework "
            "picks other kernels here")


# =====================================================================================================
# models
# =====================================================================================================

@dataclass(frozen=True)
class Model:
    """A way precisionlab computes a case: a cast rule or a matmul spec, with a readable label."""

    label: str
    spec: MatmulSpec | None = None
    rule: frameworks.CastRule | None = None

    def describe(self) -> dict[str, str]:
        if self.spec is not None:
            return {k: v for k, v in self.spec.describe().items() if k != "name"}
        return {f.name: str(getattr(self.rule, f.name)) for f in dataclasses.fields(self.rule) if f.name != "source"}


def _fmt(entry: dict, key: str, dtype_key: str) -> str:
    if entry.get(key):
        return get_format(entry[key]).name
    return TORCH_DTYPE_FORMAT[entry[dtype_key]]


def _label(spec: MatmulSpec, base: str) -> str:
    """``base`` plus the fields where ``spec`` differs from the preset called ``base``."""
    ref, mine = get_preset(base).describe(), spec.describe()
    diff = [f"{f.name}={mine[f.name]}" for f in dataclasses.fields(MatmulSpec) if f.compare
            and mine[f.name] != ref[f.name]]
    return base + (f" ({', '.join(diff)})" if diff else "")


def _alternatives(spec: MatmulSpec, orders: list[str], **more: Any) -> list[MatmulSpec]:
    out = [dataclasses.replace(spec, order=o) for o in orders if str(spec.order) != o]
    for k, values in more.items():
        out += [dataclasses.replace(spec, **{k: v}) for v in values if getattr(spec, k) != v]
    return out


def case_models(gf: GoldenFile, case: GoldenCase, alternatives: bool = True) -> list[Model]:
    """The claimed model first, then (with ``alternatives``) the ones a finding is compared with."""
    models = _case_models(gf, case, alternatives)
    return models if alternatives else models[:1]


def _case_models(gf: GoldenFile, case: GoldenCase, alternatives: bool) -> list[Model]:
    e, prod = case.entry, gf.producer
    lib = prod.get("library")
    if case.kind == "cast":
        claimed = frameworks.cast_rule(lib, e["format"])
        others = [("precisionlab default (RNE, IEEE overflow, one rounding)", frameworks.CastRule())]
        others += [(f"{name} rule", frameworks.cast_rule(name, e["format"])) for name in ("torch", "ml_dtypes", "jax")
                   if name != lib]
        others += [("default rule, float64 via fp32", frameworks.CastRule(float64="via_fp32"))]
        return [Model(f"{lib} cast rule (precisionlab.frameworks)", rule=claimed)] + \
            [Model(lbl, rule=r) for lbl, r in others if r != claimed]
    if "gpu" in gf.path:
        return _gpu_models(case)
    a_fmt, b_fmt, out = e["a_format"], e["b_format"], e["out_format"]
    M, K, N = e["M"], e["K"], e["N"]
    if lib == "jax":
        ynn = prod.get("configuration") == "jax_ynn"
        spec = frameworks.jax_cpu_spec(a_fmt, out, M, K, N, ynn=ynn)
        base = spec.name
        if not alternatives:
            return [Model(_label(spec, base) + f" [jax_cpu_spec(ynn={ynn})]", spec)]
        alts = _alternatives(spec, ["sequential", "split(4,strided(4),group(sequential))",
                                    "split(2,blocked(32,interleaved(2)),sequential)", "blocked(32,interleaved(2))"],
                             input_subnormals=[False, True], accumulator_subnormals=[False, True])
        return [Model(_label(spec, base) + f" [jax_cpu_spec(ynn={ynn})]", spec)] + \
            [Model(_label(s, base), s) for s in alts]
    spec = frameworks.torch_cpu_spec(
        e["op"].replace("linear_bias", "linear"), a_fmt, out, M, K, N, b_format=b_fmt, batch=e.get("batch"),
        a_transposed=e.get("a_transposed_view", False), b_transposed=e.get("b_transposed_view", False),
        bias="c_array" in e, rowwise_scales=bool(e.get("scale_shape_a")), onednn=prod.get("mkldnn_enabled", True),
        cpu_flags=frozenset(prod["cpu"]["isa_flags"]))
    base = spec.name
    if not alternatives:
        return [Model(_label(spec, base) + " [torch_cpu_spec]", spec)]
    orders = ["interleaved(4)", "sequential", "group(sequential)", "group(split(64,lanes(64),split(16,lanes(8),"
              "sequential)))", "lanes(64)", "group(blocked(32,interleaved(2)))"]
    alts = _alternatives(spec, orders, input_subnormals=[False, True], accumulator_subnormals=[False, True])
    if e["op"] == "scaled_mm":
        alts += [dataclasses.replace(spec, scale_at=w, product_format=p) for w in ("operands", "products")
                 for p in (None, "fp32")]
    return [Model(_label(spec, base) + " [torch_cpu_spec]", spec)] + [Model(_label(s, base), s) for s in alts]


def _gpu_models(case: GoldenCase) -> list[Model]:
    """The H100 presets each recorded GPU call claims (its ``preset_hint``), with the variants the
    hint itself names."""
    e = case.entry
    key = e["key"]
    out = TORCH_DTYPE_FORMAT[e["out_dtype"]]
    if key.startswith("scaled_"):
        spec = get_preset("h100_e4m3")
        b = TORCH_DTYPE_FORMAT[e["b_dtype"]]
        spec = dataclasses.replace(spec, b_format=None if b == "e4m3" else b, a_scale_block=(None, None),
                                   b_scale_block=(None, None), scale_at="output", output_format=out)
        promote = None if e.get("use_fast_accum") else 128       # the hint: fp32 promotion without fast accum
        claimed = dataclasses.replace(spec, promote_every=promote)
        others = [dataclasses.replace(spec, promote_every=p, scale_at=w) for p in (None, 128)
                  for w in ("output", "promotion") if (p, w) != (promote, "output")]
        return [Model(_label(claimed, "h100_e4m3") + " [preset_hint; scales in the epilogue]", claimed)] + \
            [Model(_label(o, "h100_e4m3"), o) for o in others]
    if "tf32" in key and "notf32" not in key:
        spec = get_preset("h100_tf32")
        rn = dataclasses.replace(spec, input_rounding="rne")
        return [Model("h100_tf32 [preset_hint]", spec), Model("h100_tf32 (input_rounding=rne)", rn)] + \
            _gpu_variants(e, rn, "h100_tf32")
    if "notf32" in key:
        spec = get_preset("fp32_sequential")
        return [Model("fp32_sequential (hint: none, fp32 FMA, order unknown)", spec),
                Model("exact (fp32 out)", dataclasses.replace(get_preset("exact"), a_format="fp32"))]
    a = TORCH_DTYPE_FORMAT[e["a_dtype"]]
    base = "h100_bf16" if a == "bf16" else "h100_fp16"
    spec = dataclasses.replace(get_preset(base), output_format=out, c_format="fp32")
    models = [Model(_label(spec, base) + " [preset_hint]", spec)]
    if "c_array" in e:            # the hint: "C added by the cuBLAS epilogue?": after the product sum, RNE
        epilogue = dataclasses.replace(spec, c_mode="late_rn")
        models.insert(0, Model(_label(epilogue, base) + " [preset_hint: C added by the cuBLAS epilogue]", epilogue))
    if out == "fp16":
        models.append(Model("h100_fp16_acc16", get_preset("h100_fp16_acc16")))
    return models + _gpu_variants(e, spec, base)


def _gpu_variants(e: dict, spec: MatmulSpec, base: str) -> list[Model]:
    """What the recorded kernels suggest beyond the hint: a split-K reduction (slices of K summed in
    fp32, modelled as promotion every K/s elements), or sm80 kernels (the Ampere block FMA)."""
    K = e["shape_a"][-1]
    kernels = " ".join(e.get("kernels", []))
    out = []
    if "splitK" in kernels:
        for slices in (2, 4, 8, 16):
            if K % (slices * spec.k_fused) == 0:
                s = dataclasses.replace(spec, promote_every=K // slices)
                out.append(Model(_label(s, base) + f" (split-K into {slices} slices, guessed)", s))
    if "sm80" in kernels or "cutlass_80" in kernels:
        a100 = dataclasses.replace(spec, k_fused=8, n_frac=24, ref_exp_floor=-132)
        out.append(Model(_label(a100, base) + " (sm80 kernel: Ampere block FMA, guessed)", a100))
    return out


# =====================================================================================================
# evaluation
# =====================================================================================================

def _values(bits: np.ndarray) -> np.ndarray:
    return bits.view(np.float32) if bits.dtype == np.uint32 else bits.view(np.float64)


def _sample(n: int, k: int) -> np.ndarray:
    """``k`` flat indices spread over ``range(n)``, first and last included."""
    if k >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def _fast_matmul_backend(spec: MatmulSpec | None = None) -> bool:
    """True when ``backend="auto"`` runs ``spec`` (any spec when None) in compiled code, not the reference."""
    from .backends import select_backend
    kernel = select_backend("auto", np.zeros(1))
    compiles = getattr(kernel, "compiles", None)
    if compiles is None:
        return False
    return spec is None or compiles(spec)


@dataclass
class Outcome:
    """The bits a model gives on some output elements, compared with the recording."""

    indices: np.ndarray          # flat output indices checked
    mismatch: np.ndarray         # bool per checked index

    @property
    def mismatches(self) -> int:
        return int(self.mismatch.sum())


def _equal_codes(got: np.ndarray, want: np.ndarray, fmt) -> np.ndarray:
    """Bit equality, except that any NaN equals any NaN."""
    same = got == want
    nan = np.isnan(decode(want, fmt, backend="numpy")) & np.isnan(decode(got, fmt, backend="numpy"))
    return same | nan


def _backend(spec: MatmulSpec | None = None) -> str:
    """``auto`` where a compiled kernel runs ``spec``; else the reference, with NumPy operand rounding
    (bit-identical to the others, and much cheaper than a compiled kernel's call on a few values)."""
    return "auto" if _fast_matmul_backend(spec) else "numpy"


def evaluate(gf: GoldenFile, case: GoldenCase, model: Model, indices: np.ndarray | None = None) -> Outcome:
    """Run ``model`` on the recorded inputs at ``indices`` (flat output indices; all by default)."""
    e = case.entry
    want = case.array("out_array").reshape(-1)
    idx = np.arange(want.size) if indices is None else np.asarray(indices)
    if case.kind == "cast":
        x = _values(case.array("input_array")).reshape(-1)[idx]
        fmt = get_format(e["format"])
        got = frameworks.cast(x, fmt, model.rule, codes=True, backend=_backend())
        return Outcome(idx, ~_equal_codes(got.astype(want.dtype), want[idx], fmt))
    a = _values(case.array("a_array"))
    b = _values(case.array("b_array"))
    a = a if a.ndim > 2 else a[None]
    b = b if b.ndim > 2 else b[None]
    M, N = a.shape[-2], b.shape[-1]
    bi, rest = np.divmod(idx, M * N)
    mi, ni = np.divmod(rest, N)
    a_s = a[bi if a.shape[0] > 1 else 0 * bi, mi][:, None, :]              # (S, 1, K): one dot per element
    b_s = b[bi if b.shape[0] > 1 else 0 * bi, :, ni][:, :, None]            # (S, K, 1)
    kw: dict[str, Any] = {}
    if "c_array" in e:
        c = _values(case.array("c_array"))
        c = np.broadcast_to(c, (M, N)) if c.ndim < 2 or c.shape != (M, N) else c
        kw["c"] = c[mi, ni].reshape(-1, 1, 1)
    if "scale_a_array" in e:
        sa = _values(case.array("scale_a_array"))
        sb = _values(case.array("scale_b_array"))
        kw["a_scale"] = (sa.reshape(-1)[mi] if sa.size > 1 else np.broadcast_to(sa.reshape(()), mi.shape)).reshape(
            -1, 1, 1)
        kw["b_scale"] = (sb.reshape(-1)[ni] if sb.size > 1 else np.broadcast_to(sb.reshape(()), ni.shape)).reshape(
            -1, 1, 1)
    from .matmul import matmul
    backend = _backend(model.spec)
    got = matmul(a_s, b_s, model.spec, backend=backend, **kw).reshape(-1)
    out_fmt = model.spec.output_format
    got_codes = encode(got, out_fmt, backend=backend).astype(want.dtype)
    return Outcome(idx, ~_equal_codes(got_codes, want[idx], out_fmt))


def _mask_hex(mismatch_at: np.ndarray, n: int) -> str:
    bits = np.zeros(n, bool)
    bits[mismatch_at] = True
    return np.packbits(bits, bitorder="little").tobytes().hex()


def _mask_from_hex(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), np.uint8), bitorder="little")[:n].astype(bool)


# =====================================================================================================
# checking against the manifest's verification
# =====================================================================================================

@dataclass
class CaseResult:
    """The outcome of one case: ``status`` is match, mismatch, open finding, skipped or not recorded."""

    file: str
    key: str
    status: str
    elements: int = 0
    checked: int = 0
    matched: int = 0
    model: str = ""
    reason: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "mismatch"


def check_case(gf: GoldenFile, case: GoldenCase, full: bool | None = None,
               flags: frozenset[str] | None | str = "detect") -> CaseResult:
    """Check ``case`` with its claimed model against the recording and the manifest's verification."""
    if not case.recorded:
        return CaseResult(gf.path, case.key, "not recorded", reason=case.entry.get("status", ""))
    gf.load()
    n = int(case.array("out_array").size)
    skip = cpu_skip_reason(gf, case, flags)
    if skip:
        return CaseResult(gf.path, case.key, "skipped", n, reason=skip)
    model = case_models(gf, case, alternatives=False)[0]
    if full is None:
        full = case.kind == "cast" or _fast_matmul_backend(model.spec)
    if full or case.kind == "cast":          # casts are cheap: always every element
        idx = None
    else:
        K = case.array("a_array").shape[-1]
        idx = _sample(n, max(1, PER_CASE_MACS // max(K, 1)))
    out = evaluate(gf, case, model, idx)
    checked, matched = len(out.indices), len(out.indices) - out.mismatches
    ver = case.verification
    res = CaseResult(gf.path, case.key, "match", n, checked, matched, model.label)
    if ver is not None and ver.get("model") != model.label:
        res.status, res.reason = "mismatch", (f"the manifest verified {ver.get('model')!r} but the claimed model is "
                                              f"now {model.label!r}: re-run tools/make_golden.py --verify")
        return res
    if ver is None or ver["status"] == "reproduced":
        if out.mismatches:
            res.status = "mismatch"
            first = int(out.indices[out.mismatch][0])
            res.reason = f"{out.mismatches} of {checked} checked elements differ (first at flat index {first})"
        return res
    documented = _mask_from_hex(ver["mask"], n)[out.indices]
    if np.array_equal(documented, out.mismatch):
        res.status = "open finding"
        best = ver["best"]
        res.reason = (f"{ver['mismatches']} of {n} elements differ from the claimed model, as documented; best model "
                      f"tried: {best['model']} ({best['mismatches']} of {best['checked']} sampled elements differ)")
    else:
        res.status = "mismatch"
        res.reason = (f"the mismatches differ from the documented open finding ({out.mismatches} checked elements "
                      f"differ, {int(documented.sum())} documented): re-run tools/make_golden.py --verify")
    return res


def iter_results(root: str | None = None, full: bool | None = None, only: Callable[[str], bool] | None = None,
                 ) -> Iterator[CaseResult]:
    _, files = open_golden(root)
    flags = cpu_flags()
    for gf in files:
        if (only is not None and not only(gf.path)) or gf.training_run:
            continue
        gf.load()
        for case in gf.cases:
            yield check_case(gf, case, full, flags)


def run_suite(root: str | None = None, full: bool | None = None) -> dict[str, list[CaseResult]]:
    """Every case of every file, grouped by file."""
    out: dict[str, list[CaseResult]] = {}
    for r in iter_results(root, full):
        out.setdefault(r.file, []).append(r)
    return out


def summarize(results: list[CaseResult]) -> dict[str, Any]:
    """Per-file counts for tables: cases by status and elements checked / matched."""
    counts = {s: sum(r.status == s for r in results) for s in ("match", "open finding", "mismatch", "skipped",
                                                                "not recorded")}
    return {"cases": len(results), **counts, "elements": sum(r.elements for r in results),
            "checked": sum(r.checked for r in results), "matched": sum(r.matched for r in results)}


# =====================================================================================================
# writing the verification section (tools/make_golden.py --verify)
# =====================================================================================================

def verify_case(gf: GoldenFile, case: GoldenCase) -> dict:
    """Every element with the claimed model; for a finding also with each alternative."""
    models = case_models(gf, case)
    n = int(case.array("out_array").size)
    first = evaluate(gf, case, models[0])
    entry = {"model": models[0].label, "spec": models[0].describe(), "elements": n,
             "mismatches": first.mismatches}
    if not first.mismatches:
        entry["status"] = "reproduced"
        return entry
    sample = _sample(n, ALTERNATIVE_SAMPLE)
    claimed_on_sample = int(first.mismatch[sample].sum())
    tried = [{"model": models[0].label, "mismatches": claimed_on_sample, "checked": len(sample)}]
    for m in models[1:]:
        tried.append({"model": m.label, "mismatches": evaluate(gf, case, m, sample).mismatches,
                      "checked": len(sample)})
    entry.update(status="open finding", mask=_mask_hex(first.indices[first.mismatch], n),
                 best=min(tried, key=lambda t: t["mismatches"]), tried=tried)
    return entry


def verify_manifest(root: str | None = None, progress: Callable[..., None] = lambda *a: None,
                    only: Callable[[str], bool] | None = None, incremental: bool = False) -> dict:
    """The manifest with a fresh ``verification`` section for the files selected by ``only``.

    ``incremental`` keeps the entries whose claimed model is still the one verified (a re-recorded
    file has no entries: tools/make_golden.py drops them) and redoes the others."""
    man, files = open_golden(root)
    ver = man.setdefault("verification", {})
    for gf in files:
        if (only is not None and not only(gf.path)) or gf.training_run:
            continue
        gf.load()
        old = ver.get(gf.path, {}) if incremental else {}
        section = {}
        for i, case in enumerate(gf.cases):
            if not case.recorded:
                continue
            kept = old.get(case.key)
            if kept is not None and kept.get("model") == case_models(gf, case, alternatives=False)[0].label:
                section[case.key] = kept
            else:
                section[case.key] = verify_case(gf, case)
            if (i + 1) % 25 == 0:
                progress(f"{gf.path}: {i + 1}/{len(gf.cases)} cases")
        ver[gf.path] = section
        n_find = sum(v["status"] != "reproduced" for v in section.values())
        progress(f"{gf.path}: {len(section)} cases verified, {n_find} open findings")
    return man

