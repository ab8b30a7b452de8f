"""Benchmark 1: one model's training, our fast path vs the article's plain `model.fit` loop.

Same model (784-128-10 MLP, dropout 0.2), same optimiser (Adam, lr 1e-3), batch 32, same
epochs and the same mnist5k split. Each (path, seed) runs in its own fresh process, so no
path inherits another's TensorFlow runtime or traced functions, and the paths are
interleaved seed by seed (rotating who goes first) so a burst of load on a shared machine
hits all of them alike. Only the fit call is timed.

    .venv/bin/python benchmarks/bench_training.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
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
    load_mnist5k,
    mean,
    median,
    ratio,
    run_child,
    summary_row,
    table,
    training_settings,
    write_summary,
)

# (label, child mode, TensorFlow threads; None = TensorFlow's default, one per core)
PATHS: list[tuple[str, str, int | None]] = [
    ("fast path (ours)", "fast", 1),
    ("plain model.fit", "plain", 1),
    ("plain model.fit, default threads", "plain", None),
]


# --- children: one training each ------------------------------------------------------------


def child_fast(seed: int, epochs: int) -> dict[str, Any]:
    """The workflow's training path, configured exactly as a Snakemake training job is."""
    from ablation_lab.training.train import configure_tensorflow, predict_proba, train_model

    configure_tensorflow(threads=1)
    arrays = load_mnist5k()
    spec = {
        "model": {"hidden_units": [128], "activation": "relu", "dropout": 0.2},
        "training": training_settings(epochs),
    }
    wall, cpu = time.perf_counter(), time.process_time()
    result = train_model(spec, arrays, n_classes=10, seed=seed)
    load = cpu_per_wall(time.process_time() - cpu, time.perf_counter() - wall)
    probabilities = predict_proba(result.model, arrays["x_test"])
    accuracy = float(np.mean(np.argmax(probabilities, axis=1) == arrays["y_test"]))
    return {"fit_seconds": result.seconds, "test_accuracy": accuracy, "cpu_per_wall": load}


def child_plain(seed: int, epochs: int) -> dict[str, Any]:
    """The article's loop, written here; threads come from the environment the parent set."""
    import keras
    from article_script import build_article_model, fit_article, test_accuracy

    arrays = load_mnist5k()
    keras.utils.set_random_seed(seed)
    model = build_article_model("relu", 0.2)
    cpu = time.process_time()
    seconds = fit_article(model, arrays, epochs, batch_size=32)
    load = cpu_per_wall(time.process_time() - cpu, seconds)
    return {"fit_seconds": seconds, "test_accuracy": test_accuracy(model, arrays), "cpu_per_wall": load}


# --- parent ---------------------------------------------------------------------------------


def same_split_as_workflow() -> bool:
    """The benchmark's own loader must give the workflow's split, or accuracies are not comparable."""
    from ablation_lab.data.split import prepare

    ours = load_mnist5k()
    theirs = prepare({"name": "mnist5k", "test_fraction": 0.2, "validation_fraction": 0.2, "split_seed": 42}).arrays
    return all(np.array_equal(ours[key], theirs[key]) for key in ours)


def run_interleaved(seeds: list[int], epochs: int) -> dict[str, list[dict[str, Any]]]:
    """Every (path, seed) in a fresh process; the order of the paths rotates with the seed."""
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in PATHS}
    for index, seed in enumerate(seeds):
        order = PATHS[index % len(PATHS) :] + PATHS[: index % len(PATHS)]
        for label, mode, threads in order:
            args = [__file__, "--child", mode, "--seed", str(seed), "--epochs", str(epochs)]
            result = run_child(args, child_env(threads))
            runs[label].append(result)
            print(f"  seed {seed}  {label:<34} fit {result['fit_seconds']:6.2f} s  test accuracy {result['test_accuracy']:.4f}", flush=True)
    return runs


def seed_noise(runs: dict[str, list[dict[str, Any]]]) -> float | None:
    """Pooled standard deviation of test accuracy over seeds; None with a single seed."""
    spreads = [statistics.stdev([r["test_accuracy"] for r in rows]) for rows in runs.values() if len(rows) > 1]
    return float(np.sqrt(np.mean(np.square(spreads)))) if spreads else None


def report(runs: dict[str, list[dict[str, Any]]], epochs: int) -> list[dict[str, Any]]:
    fast_label, plain_label, default_label = (label for label, _, _ in PATHS)
    fit = {label: median([r["fit_seconds"] for r in rows]) for label, rows in runs.items()}
    accuracy = {label: mean([r["test_accuracy"] for r in rows]) for label, rows in runs.items()}
    rows = [
        (
            label,
            "default" if threads is None else threads,
            f"{median([r['cpu_per_wall'] for r in runs[label]]):.2f}",
            f"{fit[label]:.2f}",
            f"{ratio(fit[label], fit[fast_label]):.2f}x",
            f"{accuracy[label]:.4f}",
        )
        for label, _, threads in PATHS
    ]
    print()
    print(table(rows, ["path", "TF threads", "CPU s / wall s", "median fit s", "vs fast", "mean test acc"]))
    noise = seed_noise(runs)
    speedup_1 = ratio(fit[plain_label], fit[fast_label])
    speedup_default = ratio(fit[default_label], fit[fast_label])
    print(f"\nspeed-up plain/fast, both 1 thread:               {speedup_1:.2f}x")
    print(f"speed-up plain (default threads)/fast (1 thread): {speedup_default:.2f}x")
    summary = [
        summary_row("training", "speed-up plain/fast (1 thread each)", f"{speedup_1:.2f}x"),
        summary_row("training", "speed-up plain (default threads)/fast", f"{speedup_default:.2f}x"),
    ]
    for other in (plain_label, default_label):
        difference = accuracy[fast_label] - accuracy[other]
        within = None if noise is None else abs(difference) <= 2 * noise
        print(f"test accuracy fast - {other}: {difference:+.4f}", end="")
        if noise is None:
            print("  (one seed: seed noise not estimated; run without --quick)")
        else:
            print(f"  (seed noise sd {noise:.4f}; {'within' if within else 'OUTSIDE'} 2 sd)")
        summary.append(summary_row("training", f"test acc fast - {other}", f"{difference:+.4f}", "|diff| <= 2 seed sd", within))
    print(
        f"\n({epochs} epochs; the fast path restores the weights of the best validation epoch, as the workflow does;"
        " the article's fit keeps the last epoch's.)"
    )
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 epochs")
    parser.add_argument("--summary-json", help="where run_all.py collects the key figures")
    parser.add_argument("--child", choices=["fast", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=5, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        emit((child_fast if args.child == "fast" else child_plain)(args.seed, args.epochs))
        return
    header("bench_training: fast path vs plain model.fit, one MLP on mnist5k", args.quick)
    seeds, epochs = ([1], 2) if args.quick else ([1, 2, 3], 5)
    print(f"784-128-10 MLP, dropout 0.2, Adam 1e-3, batch 32, {epochs} epochs, seeds {seeds}; each run a fresh process")
    if not same_split_as_workflow():
        raise SystemExit("the benchmark's mnist5k split differs from the workflow's: accuracies would not be comparable")
    started = time.perf_counter()
    runs = run_interleaved(seeds, epochs)
    summary = report(runs, epochs)
    print(f"(benchmark wall time {time.perf_counter() - started:.0f} s)")
    write_summary(args.summary_json, summary)


if __name__ == "__main__":
    main()
