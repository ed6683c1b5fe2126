#!/usr/bin/env python3
"""Training steps/s of the reference trainer: a recipe against the same model in plain float32 NumPy.

What is timed (DESIGN §12, the trainer issue's benchmark item), side by side in one process on
the same data, weights and batches:

* ``recipe`` (default ``torch_amp_bf16``): ``Trainer.step`` -- forward, loss, backward and SGD
  with every GEMM through ``pl.matmul`` (the recipe's ``torch_cpu_*`` presets: bf16 inputs, fp32
  accumulation in torch's order, one rounding) and every cast through ``pl.round``, plus the
  loss-scaler bookkeeping and the per-step statistics (amax, gradient underflow counts);
* ``float32``: the same layers, loss and SGD with :class:`~precisionlab.reference.Float32Ops`
  (BLAS ``np.matmul`` in float32, no rounding), the loop a NumPy user would write.

The issue's target: the recipe at most 5x slower than float32 NumPy.  Each figure is the best
over ``--rounds`` passes of ``--steps`` steps (so that load from other processes spoils a pass,
not the figure), after ``--warmup`` untimed steps that also compile the Numba kernels.  The
report says which matmul kernel ran: the Numba one when the backend has ``matmul_values``, else
the exact NumPy reference (Python, one output element at a time; orders of magnitude slower).

Run (results go to BENCHMARKS.md by hand)::

    .venv/bin/python tools/bench/bench_train.py                       # MLP 64-128-10, batch 128
    .venv/bin/python tools/bench/bench_train.py --sizes 16,32,10 --batch 64 --recipe torch_amp_fp16
    .venv/bin/python tools/bench/bench_train.py --quick               # tiny smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numba
import numpy as np
from precisionlab.reference import MLP, SGD, Float32Ops, SoftmaxCrossEntropy, Trainer, gaussian_blobs, get_recipe

from precisionlab.backends import select_backend


def float32_step(model: MLP, opt: SGD, ops: Float32Ops, loss: SoftmaxCrossEntropy, x: np.ndarray,
                 y: np.ndarray) -> float:
    model.zero_grad()
    value = loss.forward(model.forward(x, ops), y, ops)
    model.backward(loss.backward(ops), ops, input_grad=False)
    opt.step(ops)
    return value


#: The clock: wall time, or the process's CPU time (``--clock cpu``: with one thread for NumPy and for
#: Numba it is the time the work took, whatever else shares the cores).
CLOCK = time.perf_counter


def rate(step, steps: int) -> float:
    start = CLOCK()
    for _ in range(steps):
        step()
    return steps / (CLOCK() - start)


def best_rates(steps: dict, counts: dict, rounds: int) -> dict:
    """Best steps/s of each entry over ``rounds`` passes; the entries alternate within a pass, so that a
    burst of load from other processes spoils one pass of each rather than all of one."""
    best = dict.fromkeys(steps, 0.0)
    for _ in range(rounds):
        for name, step in steps.items():
            best[name] = max(best[name], rate(step, counts[name]))
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="torch_amp_bf16", help="recipe to time (default torch_amp_bf16)")
    ap.add_argument("--sizes", default="64,128,10", help="MLP layer sizes (default 64,128,10)")
    ap.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per pass (default 20)")
    ap.add_argument("--rounds", type=int, default=3, help="passes; the best counts (default 3)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    ap.add_argument("--backend", default="auto", help="pl.matmul / pl.round backend (default auto)")
    ap.add_argument("--threads", type=int, default=None, help="Numba threads (default: Numba's)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall time (default) or process CPU time (meaningful with one thread each)")
    ap.add_argument("--quick", action="store_true", help="smoke run: MLP 8-16-4, batch 16, 2 steps, 1 pass")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the result as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.batch, args.steps, args.rounds, args.warmup = "8,16,4", 16, 2, 1, 1
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads is not None:
        numba.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    task = gaussian_blobs(args.batch, sizes[0], sizes[-1], seed=0, test_fraction=0.01)
    x, y = task.x_train, task.y_train
    recipe = get_recipe(args.recipe)

    model = MLP(sizes, seed=0, dtype=np.float32)
    trainer = Trainer(model, recipe, SGD(model.parameters(), lr=0.01), backend=args.backend)
    ref_model = MLP(sizes, seed=0, dtype=np.float32)
    ref_ops, ref_opt, ref_loss = Float32Ops(), SGD(ref_model.parameters(), lr=0.01), SoftmaxCrossEntropy()

    def recipe_step():
        trainer.step(x, y)

    def ref_step():
        float32_step(ref_model, ref_opt, ref_ops, ref_loss, x, y)

    for _ in range(args.warmup):
        recipe_step()
        ref_step()
    load_before = os.getloadavg()[0]
    rates = best_rates({"recipe": recipe_step, "float32": ref_step},
                       {"recipe": args.steps, "float32": max(args.steps, 50)}, args.rounds)
    rate_recipe, rate_ref = rates["recipe"], rates["float32"]
    load_after = os.getloadavg()[0]
    kernel = select_backend(args.backend, x)
    matmul_kernel = kernel.__name__ if hasattr(kernel, "matmul_values") else "precisionlab.backends.numpy_backend"
    result = {
        "recipe": recipe.name, "sizes": sizes, "batch": args.batch, "steps": args.steps, "rounds": args.rounds,
        "backend": args.backend, "round_kernel": kernel.__name__, "matmul_kernel": matmul_kernel,
        "recipe_steps_per_s": rate_recipe, "float32_numpy_steps_per_s": rate_ref,
        "slowdown": rate_ref / rate_recipe, "target_slowdown": 5.0,
        "python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
        "numba_threads": numba.get_num_threads(), "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "load_average": [load_before, load_after], "clock": args.clock,
    }
    print(f"MLP {'-'.join(map(str, sizes))}, batch {args.batch}; matmul kernel {matmul_kernel}; Numba threads "
          f"{result['numba_threads']}, OpenBLAS threads {result['openblas_threads'] or 'default'}; {args.clock} clock; "
          f"load average {load_before:.1f} before, {load_after:.1f} after")
    print(f"  {recipe.name:>16}: {rate_recipe:10.3f} steps/s")
    print(f"  {'float32 NumPy':>16}: {rate_ref:10.3f} steps/s")
    print(f"  slowdown {result['slowdown']:.1f}x (target <= 5x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
