"""Benchmark: post-hoc knockout masks evaluated per second, batched vs one cloned model per mask.

The default model (784-128-10 MLP, trained 1 epoch on mnist5k; the cost of knockout does not
depend on how long it was trained) and 64 random masks removing half of its hidden units,
scored on the 1,000 test images with zero fill. Each path runs in its own fresh child
process, which reports its time and its peak resident memory (ru_maxrss) and how much the
path added to the memory the process held before it started.

- naive: for each mask, `keras.models.clone_model`, copy the weights, zero the removed units'
  rows in the next layer's kernel, and predict the whole test split (`surgery.naive_predictions`);
- batched: the hidden layer's activations once, then every mask through the output layer
  in chunks of masks x examples (`surgery.masked_predictions`, MEMORY_BUDGET per chunk).

Both paths must give identical predictions (checked). Target: batched >= 10x naive, and the
batched path under 2 GB of peak memory.

`--model cnn`: the same on `model.kind: cnn` (filters [16, 32], dense head 128, 1 epoch),
knocking out half of the 16 channels of its first conv block (`conv_act_1`: every position of
a channel; the naive path zeroes the channel's slice of `conv_2`'s kernel).

`--model resnet`: the same on `model.kind: resnet` (defaults: 3 blocks of 16, 32, 32 channels,
batch norm, 1 epoch), knocking out half of the 32 channels of its last block's inner
activation (`block_3_relu_2`, the units family's twin; `--layer` picks another block's) through
the graph path (models/graph.py: the clean values of everything not downstream of the layer
once, every mask through the rest of the graph in chunks), against one cloned model per mask
with the channels' rows of `block_<k>_conv_2`'s kernel zeroed. Target there: >= 3x.

    .venv/bin/python benchmarks/bench_knockout.py [--quick] [--model cnn|resnet] [--layer block_1_relu_2]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
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

TARGET = 10.0
TARGETS = {"mlp": TARGET, "cnn": TARGET, "resnet": 3.0}
MEMORY_LIMIT_MB = 2048


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(path: str, n_masks: int, kind: str = "mlp", resnet_layer: str = "block_3_relu_2") -> None:
    """Train the default model, then time `path` on n_masks masks; emit the figures."""
    import numpy as np

    sys.path.insert(0, str(REPO / "workflow"))
    from ablation_lab.identity import canonical_model
    from ablation_lab.models import surgery
    from ablation_lab.models.graph import layer_split
    from ablation_lab.training.train import configure_tensorflow, train_model

    configure_tensorflow(threads=1)
    arrays = load_mnist5k()
    if kind == "mlp":
        arrays = {k: (v.reshape(len(v), -1) if k.startswith("x_") else v) for k, v in arrays.items()}
    model_cfg = {"hidden_units": [128], "activation": "relu", "dropout": 0.0}
    if kind == "cnn":
        model_cfg |= {"kind": "cnn", "filters": [16, 32], "kernel_size": 3, "pooling": "max", "batch_norm": False}
    if kind == "resnet":
        model_cfg = canonical_model(model_cfg | {"kind": "resnet"})
    layer, units = ("conv_act_1", 16) if kind == "cnn" else ("hidden_1", 128)
    spec = {
        "model": model_cfg,
        "training": training_settings(1),
    }
    model = train_model(spec, arrays, 10, seed=1).model
    if kind == "resnet":
        units = int(model.get_layer(resnet_layer).output.shape[-1])
        layer = resnet_layer
    masks = np.random.default_rng(0).random((n_masks, units)) >= 0.5
    before = peak_mb()
    started = time.perf_counter()
    if path == "naive":
        predictions = surgery.naive_predictions(model, layer, arrays["x_test"], masks)
    else:
        split = layer_split(model, layer)  # a chain's split_model; the resnet's graph split
        bound = split.bind(arrays["x_test"])
        predictions = surgery.masked_predictions(bound, split.head(arrays["x_test"]), masks, np.zeros(units, np.float32))
    seconds = time.perf_counter() - started
    emit({"seconds": seconds, "peak_mb": peak_mb(), "added_mb": peak_mb() - before, "checksum": int(predictions.sum())})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="16 masks instead of 64")
    parser.add_argument("--model", choices=["mlp", "cnn", "resnet"], default="mlp", help="cnn: channels of the first conv block")
    parser.add_argument("--layer", default="block_3_relu_2", help="resnet: the block activation knocked out (block_<k>_relu_2)")
    parser.add_argument("--summary-json", help="where run_all.py collects the key figures")
    parser.add_argument("--child", choices=["naive", "batched"], help=argparse.SUPPRESS)
    parser.add_argument("--masks", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n_masks = 16 if args.quick else args.masks
    if args.child:
        child(args.child, n_masks, args.model, args.layer)
        return
    target = TARGETS[args.model]
    name = "bench_knockout" + ("" if args.model == "mlp" else f"_{args.model}")
    header(f"{name}: knockout masks per second, batched vs one cloned model per mask ({args.model})", args.quick)
    results = {}
    for path in ("naive", "batched"):
        command = [__file__, "--child", path, "--masks", str(n_masks), "--model", args.model, "--layer", args.layer]
        results[path] = run_child(command, child_env(threads=1))
    assert results["naive"]["checksum"] == results["batched"]["checksum"], "the two paths disagree"
    rates = {path: n_masks / result["seconds"] for path, result in results.items()}
    speedup = ratio(rates["batched"], rates["naive"])
    rows = [
        (path, f"{result['seconds']:.3f}", f"{rates[path]:.1f}", f"{result['peak_mb']:.0f}", f"{result['added_mb']:.0f}")
        for path, result in results.items()
    ]
    print(table(rows, ["path", f"seconds for {n_masks} masks", "masks / s", "peak RSS MB", "added by the path MB"]))
    memory_ok = results["batched"]["peak_mb"] < MEMORY_LIMIT_MB
    print(f"speed-up batched / naive: {speedup:.1f}x (target >= {target:g}x: {verdict(speedup >= target)})")
    print(f"batched peak memory {results['batched']['peak_mb']:.0f} MB (target < {MEMORY_LIMIT_MB} MB: {verdict(memory_ok)})")
    write_summary(
        args.summary_json,
        [
            summary_row(name, f"masks / s, naive vs batched ({n_masks} masks)", f"{rates['naive']:.1f} vs {rates['batched']:.1f}"),
            summary_row(name, "speed-up batched / naive", f"{speedup:.1f}x", f">= {target:g}x", speedup >= target),
            summary_row(
                name,
                "peak memory MB, naive / batched",
                f"{results['naive']['peak_mb']:.0f} / {results['batched']['peak_mb']:.0f}",
                f"< {MEMORY_LIMIT_MB}",
                memory_ok,
            ),
        ],
    )


if __name__ == "__main__":
    main()
