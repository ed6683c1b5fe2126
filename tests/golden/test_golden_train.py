"""A recorded PyTorch run reproduced (DESIGN §8, §9): golden/train/torch_cpu_amp_fp16_mlp.npz.

torch 2.13 on a CPU, ``torch.autocast("cpu", dtype=torch.float16)`` and
``GradScaler(init_scale=2**24)``, MLP 16 -> 32 -> 10, full-batch SGD lr 0.1, 50 steps
(tools/make_golden_train.py).  The ``torch_amp_fp16`` recipe must give the same skip flags
and loss scales at every step and losses within 1e-5 relative.

Measured (this file's last full run): skip flags and scales identical at all 50 steps
(steps 0-5 skipped, the scale falling from 2^24 to 2^18); losses within 2 float32 ulps
(max relative difference 1.5e-7); weights bit-identical after every one of steps 0-28.
After step 28 a handful of weights differ by an ulp or so: at step 29 one element of the
dgrad GEMM ``dY @ W2`` (64x10 @ 10x32) differs, because on this CPU (AVX512-FP16) torch
hands the GEMM to oneDNN, whose fp32 summation order for K = 10 is sequential where
``torch_cpu_nn`` models ATen's ``interleaved(4)``; before the float64 exp/log change of the
reference loss, step 18 differed first, through one fp16 rounding of the loss gradient
(torch's log-softmax kernels use their own exp approximation).  The GEMM inputs were
identical in both cases, which the manifest's ATen op log and strides confirm.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from precisionlab.reference import MLP, SGD, DynamicLossScaler, Trainer, get_recipe

ROOT = Path(__file__).resolve().parents[2]
NAME = "train/torch_cpu_amp_fp16_mlp.npz"
PARAMS = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
#: Weights are bit-identical to torch's after every step before this one (see the docstring).
FIRST_WEIGHT_DIFFERENCE = 29


def _fast_matmul() -> bool:
    from precisionlab.backends import select_backend
    return hasattr(select_backend("auto"), "matmul_values")


@pytest.fixture(scope="module")
def golden():
    z = np.load(ROOT / "golden" / NAME)
    return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def entry():
    manifest = json.loads((ROOT / "golden" / "MANIFEST.json").read_text())
    (e,) = [f for f in manifest["files"] if f["path"] == NAME]
    return e


def f32(golden, key):
    return golden[key].view(np.float32)


def test_the_recording_and_its_manifest_entry_agree(golden, entry):
    assert hashlib.sha256((ROOT / "golden" / NAME).read_bytes()).hexdigest() == entry["sha256"]
    p = entry["producer"]
    assert p["torch"].startswith("2.13") and p["device"] == "cpu" and p["cpu_capability"] and p["threads"] >= 1
    assert entry["steps"] == 50 and entry["loss_scaler"]["init_scale"] == 2.0 ** 24
    assert entry["skipped_steps"] == [int(i) for i in np.flatnonzero(golden["skipped"])]
    assert f32(golden, "x").shape == (64, 16) and golden["y"].shape == (64,)
    assert f32(golden, "after/fc1.weight").shape == (50, 32, 16)
    # the GEMM layouts torch used (ATen ops of step 0): what the torch_cpu_* presets are chosen by
    addmm1, addmm2, dgrad2, wgrad2, wgrad1 = entry["step0_gemms"]
    assert addmm1["op"] == "addmm.default" and addmm1["args"][2]["stride"] == [1, 16]   # B = W.T, a view
    assert dgrad2["op"] == "mm.default" and dgrad2["args"][0]["stride"] == [10, 1] and \
        dgrad2["args"][1]["stride"] == [32, 1]                                               # both row-major
    assert wgrad2["args"][0]["stride"] == [1, 10] and wgrad1["args"][0]["stride"] == [1, 32]  # A column-major
    assert all(a["dtype"] == "float16" for g in entry["step0_gemms"] for a in g["args"])
    ops = [o["op"] for o in entry["step0_aten_ops"]]
    log_softmax = entry["step0_aten_ops"][ops.index("_log_softmax.default")]
    assert log_softmax["args"][0]["dtype"] == "float32"                                    # the loss runs in fp32
    assert "add_.Tensor" in [o["op"] for o in entry["first_update_aten_ops"]]               # SGD: p.add_(g, alpha)


def test_the_recorded_scales_follow_the_torch_rule(golden):
    replay = DynamicLossScaler.preset("torch", init_scale=2.0 ** 24)
    for scale, skipped in zip(f32(golden, "scale"), golden["skipped"], strict=True):
        assert replay.scale == float(scale)
        assert replay.update(bool(skipped)) == bool(skipped)


@pytest.mark.skipif(not _fast_matmul(), reason="50 steps need the Numba matmul kernel (the NumPy reference kernel "
                                               "takes about 40 s per step of this run)")
def test_torch_amp_fp16_reproduces_the_recorded_run(golden):
    model = MLP([16, 32, 10], dtype=np.float32)
    model.load_state_dict({n: f32(golden, f"init/{n}") for n in PARAMS})
    recipe = get_recipe("torch_amp_fp16")
    trainer = Trainer(model, recipe, SGD(model.parameters(), lr=0.1),
                      loss_scaler=recipe.loss_scaler(init_scale=2.0 ** 24))
    x, y = f32(golden, "x"), golden["y"]
    worst, first_difference = 0.0, None
    for step in range(50):
        log = trainer.step(x, y)
        assert log.skipped == bool(golden["skipped"][step]), step
        assert log.scale == float(f32(golden, "scale")[step]), step
        want = float(f32(golden, "loss")[step])
        worst = max(worst, abs(log.loss - want) / abs(want))
        assert abs(log.loss - want) <= 1e-5 * abs(want), (step, log.loss, want)
        same = all(np.array_equal(model.named_parameters()[n].master, f32(golden, f"after/{n}")[step])
                   for n in PARAMS)
        if not same and first_difference is None:
            first_difference = step
    assert worst < 2e-7, worst  # measured 1.5e-7: within 2 float32 ulps at every step
    assert first_difference is None or first_difference >= FIRST_WEIGHT_DIFFERENCE, first_difference
