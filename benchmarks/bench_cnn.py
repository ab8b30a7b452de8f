"""Benchmark: the fast training loop on a CNN, against `model.fit`.

The default CNN (`model.kind: cnn`: conv 16 -> conv 32, 2x2 max pooling, a 64-unit dense head)
trained 10 epochs on scikit-learn's digits (8x8, 1,437 train / 360 test images split 80/20,
then 20% of train for validation), batch 32, Adam 1e-3, once with the fast loop (whole
epochs in one traced function) and once with the `model.fit` loop, each in its own fresh
child process with one thread. Both loops see the same batch orders. Target: the fast path
is not slower (ratio fit / fast >= 1).

    .venv/bin/python benchmarks/bench_cnn.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, child_env, emit, header, ratio, run_child, summary_row, table, training_settings, verdict, write_summary

LOOPS = ("fast", "keras")


def digits() -> dict:
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x, y = (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int32)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=42)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=0.2, stratify=y_rest, random_state=43)
    return {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val, "x_test": x_test, "y_test": y_test}


def child(loop: str, epochs: int) -> None:
    sys.path.insert(0, str(REPO / "workflow"))
    from ablation_lab.identity import canonical_model
    from ablation_lab.training.train import configure_tensorflow, predict_proba, train_model

    configure_tensorflow(threads=1)
    arrays = digits()
    spec = {
        "model": canonical_model({"kind": "cnn", "hidden_units": [64], "activation": "relu", "dropout": 0.0}),
        "training": training_settings(epochs, loop),
    }
    result = train_model(spec, arrays, 10, seed=1)
    accuracy = float((predict_proba(result.model, arrays["x_test"]).argmax(axis=1) == arrays["y_test"]).mean())
    emit({"seconds": result.seconds, "test_accuracy": accuracy})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 epochs instead of 10")
    parser.add_argument("--summary-json", help="where run_all.py collects the key figures")
    parser.add_argument("--child", choices=LOOPS, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    epochs = 2 if args.quick else args.epochs
    if args.child:
        child(args.child, epochs)
        return
    header("bench_cnn: the fast loop vs model.fit on the default CNN (digits)", args.quick)
    results = {loop: run_child([__file__, "--child", loop, "--epochs", str(epochs)], child_env(threads=1)) for loop in LOOPS}
    speedup = ratio(results["keras"]["seconds"], results["fast"]["seconds"])
    rows = [(loop, f"{r['seconds']:.2f}", f"{r['test_accuracy']:.4f}") for loop, r in results.items()]
    print(table(rows, ["loop", f"training seconds ({epochs} epochs)", "test accuracy"]))
    print(f"speed-up fast / model.fit: {speedup:.2f}x (target >= 1: {verdict(speedup >= 1)})")
    write_summary(
        args.summary_json, [summary_row("bench_cnn", "CNN training, model.fit / fast loop", f"{speedup:.2f}x", ">= 1x", speedup >= 1)]
    )


if __name__ == "__main__":
    main()
