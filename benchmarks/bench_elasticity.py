"""Benchmark: local elasticity of one model at n = 200 examples, batched first-order form vs one step at a time.

The default model (784-128-10 MLP, ReLU, trained as the default study trains it on
mnist5k) and a stratified sample of n test images. Both paths compute, in float64, the
change of the model's output at all n examples after one SGD step (learning rate 1e-3) on
each of them: n x n x 10 numbers. Each path runs in its own fresh child process, which
reports its time, its peak resident memory (ru_maxrss) and how much the path added to it.

- naive: `one_step.exact_changes`, the reference: for each example, its gradient, the
  step, and one forward pass over all n examples (n gradients and n batched forward
  passes, traced once; never n x n single-example calls);
- batched: `one_step.first_order_changes`: one forward pass, one backward pass per output
  class over the whole sample, and the per-layer factored neural tangent kernel products.

The two must agree to first order: the relative difference of the changes, and the
difference of the mean row AUC the analysis reports, are printed. Targets: batched >= 10x
naive, and the batched path under 2 GB of peak memory.

`--activation gp` (or any hidden activation a study may name) benchmarks that variant of the
default model instead: a learnable activation's own parameters move in the step too.

    .venv/bin/python benchmarks/bench_elasticity.py [--quick] [--activation relu]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, child_env, emit, header, load_mnist5k, ratio, run_child, summary_row, table, verdict, write_summary

TARGET = 10.0
MEMORY_LIMIT_MB = 2048
LEARNING_RATE = 1e-3


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(path: str, n: int, out: str, activation: str) -> None:
    """Train the default model (with `activation`), then time `path` on n sampled test images; save the changes to `out`."""
    import numpy as np

    sys.path.insert(0, str(REPO / "workflow"))
    from ablation_lab.analyses import elasticity, similarity
    from ablation_lab.models import one_step
    from ablation_lab.training.train import configure_tensorflow, train_model

    configure_tensorflow(threads=1)
    arrays = load_mnist5k()
    spec = {
        "model": {"hidden_units": [128], "activation": activation, "dropout": 0.0},
        "training": {
            "optimizer": "adam",
            "learning_rate": 0.001,
            "epochs": 5,
            "batch_size": 32,
            "early_stopping_patience": 3,
            "loop": "fast",
        },
    }
    model = train_model(spec, arrays, 10, seed=1).model
    sample = elasticity.stratified_sample(arrays["y_test"], n, seed=0)
    x, y = arrays["x_test"][sample], arrays["y_test"][sample]
    network = one_step.float64_network(model)
    before = peak_mb()
    started = time.perf_counter()
    if path == "naive":
        changes = one_step.exact_changes(network, x, y, LEARNING_RATE, range(n))
    else:
        changes = one_step.first_order_changes(network, x, y, LEARNING_RATE)[0]
    seconds = time.perf_counter() - started
    np.save(out, changes)
    auc = float(similarity.row_aucs(np.linalg.norm(changes, axis=2), y).mean())
    emit({"seconds": seconds, "peak_mb": peak_mb(), "added_mb": peak_mb() - before, "auc": auc})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="50 examples instead of 200")
    parser.add_argument("--summary-json", help="where run_all.py collects the key figures")
    parser.add_argument("--activation", default="relu", help="the default model's hidden activation (default relu)")
    parser.add_argument("--child", choices=["naive", "batched"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=200, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n = 50 if args.quick else args.n
    if args.child:
        child(args.child, n, args.out, args.activation)
        return
    import numpy as np

    header(
        f"bench_elasticity: output changes after one step on each of n = {n} examples ({args.activation} model), "
        "batched vs one step at a time",
        args.quick,
    )
    results, changes = {}, {}
    with tempfile.TemporaryDirectory(prefix="bench-elasticity-") as tmp:
        for path in ("naive", "batched"):
            out = str(Path(tmp) / f"{path}.npy")
            command = [__file__, "--child", path, "--n", str(n), "--out", out, "--activation", args.activation]
            results[path] = run_child(command, child_env(threads=1))
            changes[path] = np.load(out)
    difference = float(np.linalg.norm(changes["batched"] - changes["naive"]) / np.linalg.norm(changes["naive"]))
    auc_gap = abs(results["batched"]["auc"] - results["naive"]["auc"])
    speedup = ratio(results["naive"]["seconds"], results["batched"]["seconds"])
    rows = [
        (path, f"{result['seconds']:.3f}", f"{result['auc']:.4f}", f"{result['peak_mb']:.0f}", f"{result['added_mb']:.0f}")
        for path, result in results.items()
    ]
    print(table(rows, ["path", f"seconds for {n} x {n} changes", "mean row AUC", "peak RSS MB", "added by the path MB"]))
    print(f"batched vs exact changes: relative difference {difference:.2e} (first order at lr {LEARNING_RATE:g}); AUC gap {auc_gap:.4f}")
    memory_ok = results["batched"]["peak_mb"] < MEMORY_LIMIT_MB
    print(f"speed-up batched / naive: {speedup:.1f}x (target >= {TARGET:g}x: {verdict(speedup >= TARGET)})")
    print(f"batched peak memory {results['batched']['peak_mb']:.0f} MB (target < {MEMORY_LIMIT_MB} MB: {verdict(memory_ok)})")
    write_summary(
        args.summary_json,
        [
            summary_row(
                "bench_elasticity",
                f"seconds for n = {n}, naive vs batched",
                f"{results['naive']['seconds']:.3f} vs {results['batched']['seconds']:.3f}",
            ),
            summary_row("bench_elasticity", "speed-up batched / naive", f"{speedup:.1f}x", f">= {TARGET:g}x", speedup >= TARGET),
            summary_row(
                "bench_elasticity",
                "peak memory MB, naive / batched",
                f"{results['naive']['peak_mb']:.0f} / {results['batched']['peak_mb']:.0f}",
                f"< {MEMORY_LIMIT_MB}",
                memory_ok,
            ),
            summary_row("bench_elasticity", "relative difference batched vs exact changes", f"{difference:.2e}"),
        ],
    )


if __name__ == "__main__":
    main()
