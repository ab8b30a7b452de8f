"""Benchmark 4: compute efficiency of the fast path: its FLOP rate over the machine's GEMM rate.

Synthetic data of full-MNIST size (60,000 x 784 float32, 10 random classes), the
784-128-10 MLP at batch 128, trained by `ablation_lab.training.train.fit_fast`. A training step
costs about 3 x 2 x (784*128 + 128*10) FLOPs per sample (forward 2 FLOPs per
multiply-add, backward twice the forward; the issue's count, used for the target). As
no gradient is taken for the input data, TensorFlow runs about 2/3 of that: the
efficiency by the executed GEMMs is printed too. The machine's float32 GEMM rate is
measured with NumPy matmul under threadpoolctl at the same thread count as TensorFlow:
one GEMM of the shape the model's first layer runs (128x784 @ 784x128), repeated, and
one big 2048^3 GEMM (near the BLAS peak). Each thread count runs in its own processes.

The steady-state epoch is measured as (fit_fast(1 + K epochs) - fit_fast(1 epoch)) / K,
after a warm-up fit: tracing, per-fit set-up and first-call costs cancel out. The
end-to-end 1-epoch fit (tracing and validation included) is shown too.
Target: >= 30% of the shaped GEMM rate.

    .venv/bin/python benchmarks/bench_efficiency.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    child_env,
    cpu_per_wall,
    emit,
    header,
    median,
    ratio,
    run_child,
    summary_row,
    table,
    verdict,
    write_summary,
)

INPUTS, HIDDEN, CLASSES, BATCH = 784, 128, 10, 128
FLOPS_PER_SAMPLE = 3 * 2 * (INPUTS * HIDDEN + HIDDEN * CLASSES)
# What TensorFlow actually multiplies: no gradient is taken with respect to the input data,
# so the first layer runs 2 GEMMs (forward, weight gradient), not 3.
EXECUTED_FLOPS_PER_SAMPLE = 2 * 2 * INPUTS * HIDDEN + 3 * 2 * HIDDEN * CLASSES
TARGET = 0.30
VALIDATION_ROWS = 1000


# --- children -------------------------------------------------------------------------------


def gemm_rate(m: int, k: int, n: int, seconds: float) -> float:
    """GFLOP/s of float32 `(m x k) @ (k x n)`, best of several timed blocks of about `seconds`."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    out = np.empty((m, n), dtype=np.float32)
    np.matmul(a, b, out=out)
    started = time.perf_counter()
    np.matmul(a, b, out=out)
    reps = max(1, int(seconds / 5 / max(time.perf_counter() - started, 1e-7)))
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(reps):
            np.matmul(a, b, out=out)
        best = min(best, (time.perf_counter() - started) / reps)
    return 2 * m * k * n / best / 1e9


def child_gemm(threads: int, seconds: float) -> dict[str, Any]:
    """The BLAS's rate at `threads` threads; best of blocks, as a peak should be."""
    from threadpoolctl import threadpool_info, threadpool_limits

    with threadpool_limits(limits=threads):
        blas = [f"{p.get('internal_api')} {p.get('version', '')} ({p.get('num_threads')} threads)" for p in threadpool_info()]
        shaped = gemm_rate(BATCH, INPUTS, HIDDEN, seconds)
        big = gemm_rate(2048, 2048, 2048, seconds)
    return {"shaped_gflops": shaped, "big_gflops": big, "blas": blas, "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE")}


def synthetic_arrays(rows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.random((rows, INPUTS), dtype=np.float32),
        "y_train": rng.integers(0, CLASSES, rows, dtype=np.int32),
        "x_val": rng.random((VALIDATION_ROWS, INPUTS), dtype=np.float32),
        "y_val": rng.integers(0, CLASSES, VALIDATION_ROWS, dtype=np.int32),
    }


def timed_fit(arrays: dict[str, np.ndarray], epochs: int) -> float:
    """Seconds of one `fit_fast` call on a freshly built model and optimiser."""
    from ablation_lab.models.build import build_model, build_optimizer
    from ablation_lab.specs import TrainingSpec
    from ablation_lab.training.train import TRACED, fit_fast

    TRACED.clear()  # every fit traces anew, so (1 + K epochs) - (1 epoch) cancels the tracing
    model_cfg = {"hidden_units": [HIDDEN], "activation": "relu", "dropout": 0.0}
    training = {"optimizer": "adam", "learning_rate": 0.001, "epochs": epochs, "batch_size": BATCH, "early_stopping_patience": 0}
    model = build_model(model_cfg, (INPUTS,), CLASSES)
    optimizer = build_optimizer(TrainingSpec.of(training))
    started = time.perf_counter()
    fit_fast(model, optimizer, arrays, TrainingSpec.of(training), seed=1)
    return time.perf_counter() - started


def child_tf(threads: int, rows: int, repeats: int, extra_epochs: int) -> dict[str, Any]:
    """Steady-state and end-to-end epoch seconds of the fast path, configured as a workflow job."""
    from ablation_lab.training.train import configure_tensorflow

    configure_tensorflow(threads=threads)
    arrays = synthetic_arrays(rows)
    timed_fit(arrays, 1)  # warm-up: runtime start, kernels, first tracing
    wall, cpu = time.perf_counter(), time.process_time()
    one, steady = [], []
    for _ in range(repeats):
        one.append(timed_fit(arrays, 1))
        steady.append((timed_fit(arrays, 1 + extra_epochs) - one[-1]) / extra_epochs)
    load = cpu_per_wall(time.process_time() - cpu, time.perf_counter() - wall)
    return {"one_epoch_s": median(one), "steady_s": median(steady), "cpu_per_wall": load}


# --- parent ---------------------------------------------------------------------------------


def measure(threads: int, rows: int, repeats: int, extra_epochs: int, gemm_seconds: float) -> dict[str, Any]:
    """GEMM child then TensorFlow child, both at `threads`, each in a fresh process."""
    here = str(Path(__file__).resolve())
    gemm = run_child([here, "--child", "gemm", "--threads", str(threads), "--gemm-seconds", str(gemm_seconds)], child_env(threads))
    tf_args = ["--threads", str(threads), "--rows", str(rows), "--repeats", str(repeats), "--extra-epochs", str(extra_epochs)]
    tf = run_child([here, "--child", "tf", *tf_args], child_env(threads))
    epoch_flops = FLOPS_PER_SAMPLE * rows
    steady_s = tf["steady_s"]
    return {
        **gemm,
        **tf,
        "threads": threads,
        "steady_gflops": epoch_flops / steady_s / 1e9 if steady_s > 0 else float("nan"),
        "end_to_end_gflops": epoch_flops / tf["one_epoch_s"] / 1e9,
        "executed_share": EXECUTED_FLOPS_PER_SAMPLE / FLOPS_PER_SAMPLE,
    }


def report(results: list[dict[str, Any]], rows: int) -> list[dict[str, Any]]:
    print(
        f"\nFLOPs per sample per step {FLOPS_PER_SAMPLE:,}; per epoch {FLOPS_PER_SAMPLE * rows / 1e9:.1f} GFLOP ({rows:,} rows, batch {BATCH})"
    )
    for result in results:
        print(
            f"BLAS at {result['threads']} thread(s): {'; '.join(result['blas'])}; OPENBLAS_CORETYPE={result['openblas_coretype'] or 'unset'}"
        )
    lines = []
    for r in results:
        lines += [
            (f"{r['threads']}", "GEMM 128x784 @ 784x128 (NumPy)", f"{r['shaped_gflops']:.1f}", "", ""),
            (f"{r['threads']}", "GEMM 2048^3 (NumPy)", f"{r['big_gflops']:.1f}", "", ""),
            (
                f"{r['threads']} (CPU/wall {r['cpu_per_wall']:.2f})",
                f"fast path, steady epoch ({r['steady_s']:.2f} s)",
                f"{r['steady_gflops']:.1f}",
                f"{ratio(r['steady_gflops'], r['shaped_gflops']):.0%}",
                f"{ratio(r['steady_gflops'], r['big_gflops']):.0%}",
            ),
            (
                f"{r['threads']}",
                f"fast path, 1-epoch fit end to end ({r['one_epoch_s']:.2f} s)",
                f"{r['end_to_end_gflops']:.1f}",
                f"{ratio(r['end_to_end_gflops'], r['shaped_gflops']):.0%}",
                f"{ratio(r['end_to_end_gflops'], r['big_gflops']):.0%}",
            ),
        ]
    print()
    print(table(lines, ["threads", "measure", "GFLOP/s", "of shaped GEMM", "of 2048^3 GEMM"]))
    summary = []
    for r in results:
        efficiency = ratio(r["steady_gflops"], r["shaped_gflops"])
        ok: bool | None = efficiency >= TARGET
        note = f"target >= {TARGET:.0%}: {verdict(ok)}"
        if not 0 < efficiency <= 1:  # a GEMM rate starved by other processes, or a noisy epoch difference
            ok, note = None, "implausible: the machine was too busy to measure this; rerun on a quiet machine"
        print(f"efficiency at {r['threads']} thread(s): {efficiency:.0%} of the shaped GEMM ({note})")
        print(
            f"  counting only the GEMMs TensorFlow runs ({EXECUTED_FLOPS_PER_SAMPLE:,} FLOPs/sample): {efficiency * r['executed_share']:.0%}"
        )
        summary.append(
            summary_row("efficiency", f"steady epoch / shaped GEMM, {r['threads']} thread(s)", f"{efficiency:.0%}", f">= {TARGET:.0%}", ok)
        )
        summary.append(
            summary_row(
                "efficiency", f"steady epoch / 2048^3 GEMM, {r['threads']} thread(s)", f"{ratio(r['steady_gflops'], r['big_gflops']):.0%}"
            )
        )
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 repeat of 1 + 2 epochs, short GEMM timing")
    parser.add_argument("--summary-json", help="where run_all.py collects the key figures")
    parser.add_argument("--child", choices=["gemm", "tf"], help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=60_000, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--extra-epochs", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--gemm-seconds", type=float, default=2.0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child == "gemm":
        emit(child_gemm(args.threads, args.gemm_seconds))
        return
    if args.child == "tf":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        emit(child_tf(args.threads, args.rows, args.repeats, args.extra_epochs))
        return
    header("bench_efficiency: fast-path FLOP rate / NumPy GEMM rate, same thread count", args.quick)
    rows = 60_000
    repeats, extra_epochs, gemm_seconds = (1, 2, 0.5) if args.quick else (3, 3, 2.0)
    print(f"steady epoch = (fit of 1 + {extra_epochs} epochs - fit of 1 epoch) / {extra_epochs}, median of {repeats}")
    results = []
    for threads in (1, 2):
        results.append(measure(threads, rows, repeats, extra_epochs, gemm_seconds))
        print(f"  {threads} thread(s) measured", flush=True)
    write_summary(args.summary_json, report(results, rows))


if __name__ == "__main__":
    main()
