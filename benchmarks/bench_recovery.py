"""Benchmark: recovery runs per second, one traced run per mask along the budget grid vs a fresh model per budget point.

The default model (784-128-10 MLP, trained 1 epoch on mnist5k) and `--runs` random masks
removing half of its hidden units; each run fine-tunes the survivors along the budget grid
of config/recovery.yaml (0, 1, 3, 10, 30 steps and 1, 2, 5 epochs of 100 steps: 500 steps at
most) and predicts the 1,000 test images at each budget. Each path runs in its own fresh child
process.

- naive: for each run and each budget point, a fresh model (clone, copy weights, its own
  traced training step), trained from the removal to that budget, then the test split
  predicted (what a loop over budgets calling a training function does);
- recovery: one `training.masked.MaskedTraining` for the architecture (one trace, reused by
  every mask), each run trained once to the largest budget and evaluated on the way.

Both paths must give identical predictions at every budget (checked: the same batches, the
same arithmetic). Target: recovery >= 5x naive in runs per second.

    .venv/bin/python benchmarks/bench_recovery.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    REPO,
    emit,
    header,
    load_mnist5k,
    race,
    training_settings,
    write_summary,
)

TARGET = 5.0
STEPS, EPOCHS = [0, 1, 3, 10, 30], [1, 2, 5]


def child(path: str, n_runs: int) -> None:
    """Train the default model, then time `path` on n_runs masks; emit the figures."""
    import numpy as np

    sys.path.insert(0, str(REPO / "workflow"))
    from ablation_lab.specs import TrainingSpec
    from ablation_lab.training.masked import MaskedTraining, batch_rows, budget_steps
    from ablation_lab.training.train import configure_tensorflow, train_model

    configure_tensorflow(threads=1)
    arrays = load_mnist5k()
    arrays = {k: (v.reshape(len(v), -1) if k.startswith("x_") else v) for k, v in arrays.items()}
    training = training_settings(1)
    model = train_model(
        {"model": {"hidden_units": [128], "activation": "relu", "dropout": 0.0}, "training": training}, arrays, 10, seed=1
    ).model
    masks = np.random.default_rng(0).random((n_runs, 128)) >= 0.5
    start = [v.numpy() for v in model.variables]
    budgets = [steps for steps, _ in budget_steps(STEPS, EPOCHS, math.ceil(len(arrays["y_train"]) / training["batch_size"]))]
    rows = batch_rows(1, len(arrays["y_train"]), training["batch_size"], max(budgets))
    started = time.perf_counter()
    checksum = 0
    if path == "recovery":
        trainer = MaskedTraining(
            model, "hidden_1", TrainingSpec.of(training), arrays["x_train"], arrays["y_train"]
        )  # one trace for every mask
        for keep in masks:
            checksum += sum(int(p.sum()) for _, p in trainer.run(start, keep, budgets, rows, arrays["x_test"]))
    else:
        for keep in masks:
            for budget in budgets:  # a fresh model (clone, weights, its own trace) trained from the removal to this budget
                fresh = MaskedTraining(model, "hidden_1", TrainingSpec.of(training), arrays["x_train"], arrays["y_train"])
                checksum += sum(int(p.sum()) for _, p in fresh.run(start, keep, [budget], rows, arrays["x_test"]))
    emit({"seconds": time.perf_counter() - started, "checksum": checksum, "budgets": len(budgets)})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 runs instead of 6")
    parser.add_argument("--summary-json", help="where run_all.py collects the key figures")
    parser.add_argument("--child", choices=["naive", "recovery"], help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n_runs = 2 if args.quick else args.runs
    if args.child:
        child(args.child, n_runs)
        return
    header("bench_recovery: recovery runs per second, one run along the budget grid vs a fresh model per budget point", args.quick)
    rows = race("bench_recovery", __file__, ("naive", "recovery"), ("runs", n_runs), "recovery runs", TARGET)
    write_summary(args.summary_json, rows)


if __name__ == "__main__":
    main()
