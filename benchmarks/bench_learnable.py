"""Benchmark: training cost of the learnable activations against relu.

The default model (784-128-10 MLP) trained 3 epochs on mnist5k with the fast loop, once per
activation (relu, gp, gp-per-unit, slaf-poly3, slaf-standard), each in its own fresh child
process (one thread), timing `train_model` only. The GP activation evaluates a kernel against
its 21 control points for every unit of every example, so it costs more per step than relu.
Target: a GP-activation variant costs at most 3x the relu variant.

    .venv/bin/python benchmarks/bench_learnable.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    REPO,
    child_env,
    emit,
    header,
    load_mnist5k,
    ratio,
    run_child,
    summary_row,
    table,
    training_settings,
    verdict,
    write_summary,
)

TARGET = 3.0
ACTIVATIONS = ("relu", "gp", "gp-per-unit", "slaf-poly3", "slaf-standard")


def child(activation: str, epochs: int) -> None:
    sys.path.insert(0, str(REPO / "workflow"))
    from ablation_lab.identity import canonical_model
    from ablation_lab.training.train import configure_tensorflow, train_model

    configure_tensorflow(threads=1)
    arrays = load_mnist5k()
    arrays = {k: (v.reshape(len(v), -1) if k.startswith("x_") else v) for k, v in arrays.items()}
    spec = {
        "model": canonical_model({"hidden_units": [128], "activation": activation, "dropout": 0.0}),
        "training": training_settings(epochs),
    }
    result = train_model(spec, arrays, 10, seed=1)
    emit({"seconds": result.seconds, "val_accuracy": result.history[-1]["val_accuracy"]})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 epoch instead of 3")
    parser.add_argument("--summary-json", help="where run_all.py collects the key figures")
    parser.add_argument("--child", choices=ACTIVATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    epochs = 1 if args.quick else args.epochs
    if args.child:
        child(args.child, epochs)
        return
    header("bench_learnable: training cost of learnable activations vs relu", args.quick)
    results = {name: run_child([__file__, "--child", name, "--epochs", str(epochs)], child_env(threads=1)) for name in ACTIVATIONS}
    relu = results["relu"]["seconds"]
    rows = [(name, f"{r['seconds']:.2f}", f"{ratio(r['seconds'], relu):.2f}", f"{r['val_accuracy']:.4f}") for name, r in results.items()]
    print(table(rows, ["activation", f"training seconds ({epochs} epochs)", "x relu", "val accuracy"]))
    gp = max(ratio(results[name]["seconds"], relu) for name in ("gp", "gp-per-unit"))
    print(f"GP activation cost / relu: {gp:.2f}x (target <= {TARGET:g}x: {verdict(gp <= TARGET)})")
    write_summary(
        args.summary_json,
        [
            summary_row(
                "bench_learnable",
                "training cost, GP activation / relu (worst of gp, gp-per-unit)",
                f"{gp:.2f}x",
                f"<= {TARGET:g}x",
                gp <= TARGET,
            )
        ],
    )


if __name__ == "__main__":
    main()
