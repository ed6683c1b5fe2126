"""precisionlab.golden: loading and validation (corrupt, truncated, inconsistent files fail with the file
named), the CPU-capability rule, element sampling and the comparison of bit patterns.  The data suite
itself is tests/golden/test_golden_files.py."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from precisionlab import golden

ROOT = golden.default_root()


def _copy_root(tmp_path, path: str) -> tuple[str, dict]:
    """A golden root in tmp_path holding only the file ``path`` (and its manifest entry)."""
    man = json.load(open(os.path.join(ROOT, golden.MANIFEST)))
    entry = next(e for e in man["files"] if e["path"] == path)
    os.makedirs(tmp_path / os.path.dirname(path), exist_ok=True)
    shutil.copy(os.path.join(ROOT, path), tmp_path / path)
    small = {"version": 1, "files": [entry], "verification": {path: man.get("verification", {}).get(path, {})}}
    (tmp_path / golden.MANIFEST).write_text(json.dumps(small))
    return str(tmp_path), entry


def _files(root):
    return golden.open_golden(root)[1]


def test_a_flipped_byte_is_a_sha256_mismatch_naming_the_file(tmp_path):
    root, entry = _copy_root(tmp_path, "cpu/casts_torch.npz")
    data = bytearray((tmp_path / entry["path"]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / entry["path"]).write_bytes(bytes(data))
    with pytest.raises(golden.GoldenError, match=r"cpu/casts_torch\.npz: sha256"):
        _files(root)[0].load()


def test_a_truncated_file_is_reported_even_with_a_matching_sha256(tmp_path):
    root, entry = _copy_root(tmp_path, "cpu/casts_torch.npz")
    data = (tmp_path / entry["path"]).read_bytes()[:5000]
    (tmp_path / entry["path"]).write_bytes(data)
    man = json.loads((tmp_path / golden.MANIFEST).read_text())
    man["files"][0]["sha256"] = hashlib.sha256(data).hexdigest()
    (tmp_path / golden.MANIFEST).write_text(json.dumps(man))
    with pytest.raises(golden.GoldenError, match=r"cpu/casts_torch\.npz: not a readable npz"):
        _files(root)[0].load()


def test_a_missing_file_and_a_missing_array_are_named(tmp_path):
    root, entry = _copy_root(tmp_path, "cpu/casts_torch.npz")
    man = json.loads((tmp_path / golden.MANIFEST).read_text())
    man["files"][0]["cases"][0]["out_array"] = "no_such_array"
    (tmp_path / golden.MANIFEST).write_text(json.dumps(man))
    with pytest.raises(golden.GoldenError, match=r"cpu/casts_torch\.npz, case cast_fp16_from_float32: array "
                                                 r"'no_such_array'"):
        _files(root)[0].load()
    os.remove(tmp_path / entry["path"])
    with pytest.raises(golden.GoldenError, match=r"cpu/casts_torch\.npz: cannot read"):
        _files(root)[0].load()


def test_a_bad_manifest_is_named(tmp_path):
    (tmp_path / golden.MANIFEST).write_text("{not json")
    with pytest.raises(golden.GoldenError, match="MANIFEST.json: not valid JSON"):
        golden.open_golden(str(tmp_path))
    (tmp_path / golden.MANIFEST).write_text(json.dumps({"files": [{"path": "x.npz"}]}))
    with pytest.raises(golden.GoldenError, match=r"x\.npz\) lacks \['sha256', 'producer', 'cases'\]"):
        golden.open_golden(str(tmp_path))
    with pytest.raises(golden.GoldenError, match="cannot read"):
        golden.open_golden(str(tmp_path / "nowhere"))


def test_an_inconsistent_shape_is_named(tmp_path):
    root, entry = _copy_root(tmp_path, "cpu/torch_matmul.npz")
    with np.load(tmp_path / entry["path"]) as z:
        arrays = dict(z)
    case = entry["cases"][0]
    arrays[case["out_array"]] = arrays[case["out_array"]][:-1]
    np.savez_compressed(tmp_path / entry["path"], **arrays)
    man = json.loads((tmp_path / golden.MANIFEST).read_text())
    man["files"][0]["sha256"] = hashlib.sha256((tmp_path / entry["path"]).read_bytes()).hexdigest()
    (tmp_path / golden.MANIFEST).write_text(json.dumps(man))
    with pytest.raises(golden.GoldenError, match=rf"case {case['key']}: output shape"):
        _files(root)[0].load()


def test_torch_capability_names():
    assert golden.torch_capability({"avx2", "fma"}) == "AVX2"
    assert golden.torch_capability({"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"}) == "AVX512"
    assert golden.torch_capability({"sse4_2"}) == "DEFAULT"


def test_cpu_flags_reads_cpuinfo(tmp_path):
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nflags\t\t: fpu avx2 fma amx_bf16\n")
    assert golden.cpu_flags(str(tmp_path / "cpuinfo")) == frozenset({"fpu", "avx2", "fma", "amx_bf16"})
    assert golden.cpu_flags(str(tmp_path / "missing")) is None


def test_cpu_dependent_cases_skip_on_another_cpu(monkeypatch):
    monkeypatch.delenv("PRECISIONLAB_GOLDEN_ANY_CPU", raising=False)
    gf = next(f for f in _files(ROOT) if f.path == "cpu/torch_matmul.npz")
    case = gf.cases[0]
    theirs = frozenset(gf.producer["cpu"]["isa_flags"])
    assert golden.cpu_skip_reason(gf, case, theirs) is None
    reason = golden.cpu_skip_reason(gf, case, frozenset({"avx2", "fma"}))
    assert "lacks" in reason and "amx_bf16" in reason and "AVX2" in reason
    assert "cannot be read" in golden.cpu_skip_reason(gf, case, None)
    assert golden.check_case(gf, case, flags=frozenset({"avx2", "fma"})).status == "skipped"
    pinned = next(f for f in _files(ROOT) if f.path == "cpu/torch_matmul_avx2.npz")
    assert golden.cpu_skip_reason(pinned, pinned.cases[0], frozenset({"avx2", "fma", "sse2"})) is None
    cast = next(f for f in _files(ROOT) if f.path == "cpu/casts_torch.npz")
    assert golden.cpu_skip_reason(cast, cast.cases[0], None) is None          # casts do not depend on the CPU
    monkeypatch.setenv("PRECISIONLAB_GOLDEN_ANY_CPU", "1")
    assert golden.cpu_skip_reason(gf, case, frozenset()) is None


def test_sample_spreads_over_the_output():
    assert golden._sample(10, 20).tolist() == list(range(10))
    s = golden._sample(256, 5)
    assert s[0] == 0 and s[-1] == 255 and len(s) == 5


def test_nan_equals_nan_but_signed_zeros_differ():
    got = np.array([0x7FC0, 0x7FC1, 0x8000, 0x3F80], np.uint16)
    want = np.array([0xFFC0, 0x7FC0, 0x0000, 0x3F80], np.uint16)
    assert golden._equal_codes(got, want, "bf16").tolist() == [True, True, False, True]


def test_mask_round_trip():
    n = 37
    at = np.array([0, 5, 36])
    mask = golden._mask_from_hex(golden._mask_hex(at, n), n)
    assert np.nonzero(mask)[0].tolist() == [0, 5, 36]


def test_a_wrong_model_is_a_mismatch(tmp_path):
    """The check can fail: a case checked with another model than the one that reproduces it."""
    gf = next(f for f in _files(ROOT) if f.path == "cpu/torch_matmul_avx2.npz").load()
    case = next(c for c in gf.cases if c.entry["layout"] == "nt" and c.entry["K"] == 100
                and c.entry["data"] == "cancelling" and c.entry["op"] == "matmul")
    right = golden.case_models(gf, case, alternatives=False)[0]
    assert golden.evaluate(gf, case, right).mismatches == 0
    wrong = golden.Model("lanes(64)", spec=right.spec.__class__(**{**right.spec.__dict__, "order": "lanes(64)"}))
    assert golden.evaluate(gf, case, wrong).mismatches > 0
