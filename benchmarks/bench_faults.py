"""Benchmark: weight fault maps scored per second, in place vs one cloned model per fault map.

The default model (784-128-10 MLP, trained 1 epoch on mnist5k; what a fault map costs does
not depend on how long it was trained) and 64 fault maps of 10 bit flips each (uniformly
drawn weights of both kernels, uniformly drawn bits), each scored on the 1,000 test images.
Each path runs in its own fresh child process:

- clone: for each map, `keras.models.clone_model`, `set_weights` with the map's faults
  written into a copy of the weights, and a prediction of the whole test split;
- in place: `fault_batch.MapScorer` over `fault_injection.WeightFaults`, what
  analyses/faults.py runs: the clean input of every layer once; per map only the kernel
  columns (units) its faults hit are recomputed, for many maps in one matmul of the
  kernel's own shape, then the layers after them run with the map's other faults written
  into the live variables (`scatter_nd_update`) and restored from the host copy.

Both paths draw the same maps and must give identical predictions (checked). Target: in
place >= 10x clone.

    .venv/bin/python benchmarks/bench_faults.py [--quick]
"""

from __future__ import annotations

import argparse
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

TARGET = 10.0
FAULTS_PER_MAP = 10


def child(path: str, n_maps: int) -> None:
    """Train the default model, then time `path` on n_maps fault maps; emit the figures."""
    import numpy as np

    sys.path.insert(0, str(REPO / "workflow"))
    from ablation_lab.models import fault_injection as fi
    from ablation_lab.training.train import configure_tensorflow, predict_proba, train_model

    configure_tensorflow(threads=1)
    arrays = {k: (v.reshape(len(v), -1) if k.startswith("x_") else v) for k, v in load_mnist5k().items()}
    spec = {"model": {"hidden_units": [128], "activation": "relu", "dropout": 0.0}, "training": training_settings(1)}
    model = train_model(spec, arrays, 10, seed=1).model
    faults = fi.WeightFaults(model, fi.weight_layers(model))
    maps = [faults.draw("bit_flip", FAULTS_PER_MAP, np.random.default_rng(seed)) for seed in range(n_maps)]
    x = arrays["x_test"]
    predicted = np.empty((n_maps, len(x)), dtype=np.int64)
    started = time.perf_counter()
    if path == "clone":
        import keras

        names = [layer.name for layer in model.layers]
        for row, fault_map in enumerate(maps):
            weights = {name: [w.copy() for w in model.get_layer(name).get_weights()] for name in faults.layers}
            for k, index, value in zip(fault_map.kernel, fault_map.index, fault_map.values, strict=True):
                weights[faults.layers[k]][0].reshape(-1)[index] = value
            clone = keras.models.clone_model(model)
            clone.set_weights([w for name in names for w in (weights.get(name) or model.get_layer(name).get_weights())])
            out = predict_proba(clone, x)
            predicted[row] = np.where(np.isfinite(out).all(axis=1), out.argmax(axis=1), -1)
    else:
        from ablation_lab.models.fault_batch import MapScorer

        for row, out in enumerate(MapScorer(model, faults).outputs(x, maps)):
            predicted[row] = np.where(np.isfinite(out).all(axis=1), out.argmax(axis=1), -1)
    seconds = time.perf_counter() - started
    assert faults.intact()
    emit({"seconds": seconds, "checksum": int((predicted * np.arange(1, len(x) + 1)).sum())})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="16 fault maps instead of 64")
    parser.add_argument("--summary-json", help="where run_all.py collects the key figures")
    parser.add_argument("--child", choices=["clone", "in_place"], help=argparse.SUPPRESS)
    parser.add_argument("--maps", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n_maps = 16 if args.quick else args.maps
    if args.child:
        child(args.child, n_maps)
        return
    header("bench_faults: weight fault maps per second, in place vs one cloned model per map", args.quick)
    rows = race("bench_faults", __file__, ("clone", "in_place"), ("maps", n_maps), f"fault maps of {FAULTS_PER_MAP} bit flips", TARGET)
    write_summary(args.summary_json, rows)


if __name__ == "__main__":
    main()
