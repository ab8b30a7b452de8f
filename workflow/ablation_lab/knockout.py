"""Post-hoc knockout: hidden units removed from a trained network, with no retraining.

A retrain ablation lets the whole network compensate for what was removed; knocking the
same units out of an already trained network shows the other side (Meyes et al., 2019,
"Ablation Studies in Artificial Neural Networks"). Downstream layers still partly repair a
knockout (McGrath et al., 2023, "The Hydra Effect"), so post-hoc effects are lower bounds
on a component's importance too.

Efficiency: K masks never cost K model rebuilds or K full forward passes. The knocked-out
layer's activations are computed once per split; each mask only reruns the layers after it,
on one (masks x examples) batch, chunked so the batch stays within MEMORY_BUDGET bytes.
Units are removed by masking the layer's output in memory; saved models are never edited.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

ORDERINGS = ("random", "magnitude_smallest", "magnitude_largest", "activation_lowest", "importance_highest", "importance_lowest")
FILLS = ("zero", "mean", "resample")
MEMORY_BUDGET = 256 * 2**20  # bytes of masked activations evaluated in one call


def hidden_layers(model: Any) -> list[str]:
    """The knock-out-able layers of an MLP built by `models.build_mlp`, input side first."""
    return [layer.name for layer in model.layers if layer.name.startswith("hidden_")]


@dataclass
class SplitModel:
    """A model cut after one layer: `head` gives that layer's activations, `tail` the rest."""

    head: Callable[[np.ndarray], np.ndarray]
    tail: Callable[[np.ndarray], np.ndarray]
    outgoing: np.ndarray  # the next weighted layer's kernel, one row per unit of this layer


def split_model(model: Any, layer: str, chunk: int = 8192) -> SplitModel:
    import keras
    import tensorflow as tf

    names = [each.name for each in model.layers]
    index = names.index(layer)
    head_model = keras.Model(model.inputs, model.layers[index].output)
    after = model.layers[index + 1 :]
    outgoing = next(each.kernel for each in after if hasattr(each, "kernel"))

    @tf.function(reduce_retracing=True)
    def run_tail(activations: tf.Tensor) -> tf.Tensor:
        for each in after:
            activations = each(activations, training=False)
        return activations

    head_fn = tf.function(lambda batch: head_model(batch, training=False), reduce_retracing=True)

    def head(x: np.ndarray) -> np.ndarray:
        return np.concatenate([head_fn(x[i : i + chunk]).numpy() for i in range(0, len(x), chunk)]).astype(np.float32)

    def tail(activations: np.ndarray) -> np.ndarray:
        return run_tail(tf.constant(activations, dtype=tf.float32)).numpy()

    return SplitModel(head, tail, np.asarray(outgoing))


def masked_predictions(split: SplitModel, activations: np.ndarray, keep: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """Predicted classes (masks x examples) with the units where `keep` is False replaced by `fill`.

    `keep` is (masks, units) bool; `fill` is (units,) or (examples, units). One tail call
    per chunk of masks: activations are computed once, never per mask.
    """
    n_examples, n_units = activations.shape
    per_mask = n_examples * n_units * 4
    step = max(1, MEMORY_BUDGET // per_mask)
    fill = np.broadcast_to(np.asarray(fill, dtype=np.float32), activations.shape)
    out = np.empty((len(keep), n_examples), dtype=np.int32)
    for start in range(0, len(keep), step):
        mask = keep[start : start + step].astype(np.float32)[:, None, :]
        batch = activations[None] * mask + fill[None] * (1.0 - mask)
        probabilities = split.tail(batch.reshape(-1, n_units))
        out[start : start + len(mask)] = probabilities.argmax(axis=1).reshape(len(mask), n_examples)
    return out


def keep_masks(order: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
    """One keep-mask per fraction: the first round(f x units) units of `order` removed."""
    masks = np.ones((len(fractions), len(order)), dtype=bool)
    for row, fraction in enumerate(fractions):
        masks[row, order[: round(fraction * len(order))]] = False
    return masks


def single_unit_importance(split: SplitModel, activations: np.ndarray, labels: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """Accuracy drop when each unit alone is removed; call it on the validation split only."""
    n_units = activations.shape[1]
    full = float((split.tail(activations).argmax(axis=1) == labels).mean())
    alone = masked_predictions(split, activations, ~np.eye(n_units, dtype=bool), fill)
    return full - (alone == labels[None]).mean(axis=1)


def unit_order(ordering: str, rng: np.random.Generator, scores: dict[str, np.ndarray]) -> np.ndarray:
    """Which units go first. Magnitude: L2 norm of a unit's outgoing weights; activation: its
    mean on the validation split; importance: its single-unit accuracy drop on validation."""
    if ordering == "random":
        return rng.permutation(len(scores["magnitude"]))
    key, descending = {
        "magnitude_smallest": ("magnitude", False),
        "magnitude_largest": ("magnitude", True),
        "activation_lowest": ("activation", False),
        "importance_highest": ("importance", True),
        "importance_lowest": ("importance", False),
    }[ordering]
    values = scores[key]
    return np.argsort(-values if descending else values, kind="stable")


def fill_values(fill: str, train_activations: np.ndarray, n_examples: int, rng: np.random.Generator) -> np.ndarray:
    """What a removed unit outputs: 0, its mean on the training split (keeps the next layer
    on-distribution), or its value on randomly drawn other training examples (resampling)."""
    if fill == "zero":
        return np.zeros(train_activations.shape[1], dtype=np.float32)
    if fill == "mean":
        return train_activations.mean(axis=0).astype(np.float32)
    return train_activations[rng.integers(0, len(train_activations), size=n_examples)]


def curve_area(fractions: Sequence[float], accuracy: Sequence[float]) -> float:
    """Area under accuracy vs fraction removed, normalised by the fraction range (1 = no loss at all)."""
    x, y = np.asarray(fractions, dtype=float), np.asarray(accuracy, dtype=float)
    order = np.argsort(x)
    span = x.max() - x.min()
    return float(np.trapezoid(y[order], x[order]) / span) if span > 0 else float(y.mean())


def _rows(base: dict[str, Any], fractions: Sequence[float], predictions: np.ndarray, labels: np.ndarray, classes: list[str]) -> list[dict]:
    rows = []
    hits = predictions == labels[None]
    for position, fraction in enumerate(fractions):
        rows.append({**base, "fraction": fraction, "metric": "accuracy", "value": float(hits[position].mean())})
        for index, name in enumerate(classes):
            chosen = labels == index
            if chosen.any():
                value = float(hits[position, chosen].mean())
                rows.append({**base, "fraction": fraction, "metric": f"class_accuracy:{name}", "value": value})
    rows.append({**base, "fraction": np.nan, "metric": "area", "value": curve_area(fractions, hits.mean(axis=1))})
    return rows


def stable_units(split: SplitModel, layer: str, activations: dict[str, np.ndarray], test_predictions: np.ndarray) -> list[dict]:
    """Units never active (dead) or always active on the training split, and what removing the dead ones changes."""
    train = activations["train"]
    dead = train.max(axis=0) <= 0
    always = train.min(axis=0) > 0
    without_dead = masked_predictions(split, activations["test"], ~dead[None], np.zeros(train.shape[1], np.float32))[0]
    base = {"layer": layer, "ordering": "", "fill": "zero", "draw": 0, "fraction": np.nan}
    return [
        {**base, "metric": "units", "value": float(train.shape[1])},
        {**base, "metric": "dead_units", "value": float(dead.sum())},
        {**base, "metric": "always_active_units", "value": float(always.sum())},
        {**base, "metric": "unchanged_without_dead_units", "value": float((without_dead == test_predictions).mean())},
    ]


def knockout_table(
    model: Any, inputs: dict[str, np.ndarray], labels: dict[str, np.ndarray], classes: list[str], params: dict, seed: int
) -> pd.DataFrame:
    """Every (layer, fill, ordering, draw) knockout curve of one trained model on the test split.

    `inputs`/`labels` hold the train, val and test splits as the model saw them. Orderings
    and fills are fitted on train (fill values) and validation (activation, importance):
    the test split is only ever predicted.
    """
    layers = hidden_layers(model)
    chosen = [layers[i - 1] for i in params["layers"] if i <= len(layers)] if params["layers"] else layers
    fractions = list(params["fractions"])
    rows: list[dict] = []
    for layer in chosen:
        split = split_model(model, layer)
        activations = {name: split.head(x) for name, x in inputs.items()}
        test_predictions = split.tail(activations["test"]).argmax(axis=1)
        rows += stable_units(split, layer, activations, test_predictions)
        for fill in params["fills"]:
            rng = np.random.default_rng(np.random.SeedSequence([seed, 11, FILLS.index(fill)]))
            test_fill = fill_values(fill, activations["train"], len(labels["test"]), rng)
            val_fill = fill_values(fill, activations["train"], len(labels["val"]), rng)
            scores = {
                "magnitude": np.linalg.norm(split.outgoing, axis=1),
                "activation": activations["val"].mean(axis=0),
            }
            if any(o.startswith("importance") for o in params["orderings"]):
                scores["importance"] = single_unit_importance(split, activations["val"], labels["val"], val_fill)
            for ordering in params["orderings"]:
                draws = params["draws"] if ordering == "random" else 1
                for draw in range(draws):
                    order_rng = np.random.default_rng(np.random.SeedSequence([seed, 13, draw]))
                    masks = keep_masks(unit_order(ordering, order_rng, scores), fractions)
                    predictions = masked_predictions(split, activations["test"], masks, test_fill)
                    base = {"layer": layer, "ordering": ordering, "fill": fill, "draw": draw}
                    rows += _rows(base, fractions, predictions, labels["test"], classes)
    return pd.DataFrame(rows, columns=["layer", "ordering", "fill", "draw", "fraction", "metric", "value"])


def naive_predictions(model: Any, layer: str, x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Reference path (benchmarks, tests): one cloned model per mask, zero fill, full forward pass.

    Zeroing a unit's rows in the next weighted layer's kernel removes exactly its output.
    """
    import keras

    from ablation_lab.train import predict_proba

    names = [each.name for each in model.layers]
    after = next(each for each in model.layers[names.index(layer) + 1 :] if hasattr(each, "kernel"))
    out = np.empty((len(keep), len(x)), dtype=np.int32)
    for row, mask in enumerate(keep):
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        target = clone.get_layer(after.name)
        kernel, *rest = target.get_weights()
        target.set_weights([kernel * mask[:, None].astype(kernel.dtype), *rest])
        out[row] = predict_proba(clone, x).argmax(axis=1)
    return out
