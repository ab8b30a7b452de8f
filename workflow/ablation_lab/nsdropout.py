"""An honest evaluation of NSDropout: every inference mode on the test split, and mask dependence.

NSDropout (ablation_lab/layers.py) keeps one mask per class. Its write-up evaluates a test
example with the mask of that example's *true label*, which hands the label to the network:
a model that learned to read the mask can score 100% without looking at the input. The
modes, all evaluated on the same test examples:

- `oracle`: the true label's mask (the published protocol; label leakage).
- `none`: no mask, like ordinary dropout at inference (what the saved model does by default).
- `average`: the mean of the class masks, the same for every example.
- `max-over-classes`: every class's mask in turn; predict the class whose own mask gives it
  the highest probability. Uses no label.

Mask dependence: every test example run under each *wrong* class's mask. If the prediction
follows the mask (predicted class = the mask's class) rather than the input, the oracle's
accuracy comes from the label, not from the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

ORACLE, NONE, AVERAGE, MAX_OVER_CLASSES = "oracle", "none", "average", "max-over-classes"
MODES = (ORACLE, NONE, AVERAGE, MAX_OVER_CLASSES)
LABEL_FREE = (NONE, AVERAGE, MAX_OVER_CLASSES)
STANDARD = "standard"  # a model without NSDropout: its plain prediction
MODE_TITLES = {
    ORACLE: "oracle (true label's mask: label leakage)",
    NONE: "none (identity, like dropout)",
    AVERAGE: "average of the class masks",
    MAX_OVER_CLASSES: "max over classes (label-free)",
    STANDARD: "inference as trained",
}


def _predict(model: Any, x: np.ndarray, chunk: int = 4096, **masks: Any) -> np.ndarray:
    """Class probabilities with the given NSDropout inference arguments, in chunks."""
    from ablation_lab.layers import chain_forward

    parts = []
    for start in range(0, len(x), chunk):
        rows = slice(start, start + chunk)
        chosen = {key: value[rows] for key, value in masks.items()}
        parts.append(np.asarray(chain_forward(model, x[rows], training=False, **chosen)))
    return np.concatenate(parts).astype(np.float64)


def class_mask_probabilities(model: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    """(mask class, example, class) probabilities: every example under every class's mask."""
    return np.stack([_predict(model, x, mask_class=np.full(len(x), c, dtype=np.int32)) for c in range(n_classes)])


def predict_mode(model: Any, x: np.ndarray, mode: str, labels: np.ndarray | None = None, n_classes: int | None = None) -> np.ndarray:
    """Predicted classes under one inference mode; only `oracle` reads `labels`."""
    if mode == ORACLE:
        if labels is None:
            raise ValueError("the oracle mode needs the true labels (that is its flaw)")
        return _predict(model, x, mask_class=np.asarray(labels, dtype=np.int32)).argmax(axis=1)
    if mode == NONE:
        return _predict(model, x).argmax(axis=1)
    n_classes = n_classes or int(model.outputs[0].shape[-1])
    if mode == AVERAGE:
        return _predict(model, x, class_weights=np.full((len(x), n_classes), 1.0 / n_classes)).argmax(axis=1)
    if mode == MAX_OVER_CLASSES:
        per_mask = class_mask_probabilities(model, x, n_classes)
        return own_class_scores(per_mask).argmax(axis=1)
    raise ValueError(f"unknown NSDropout inference mode {mode!r} (known: {', '.join(MODES)})")


def own_class_scores(per_mask: np.ndarray) -> np.ndarray:
    """(example, class): the probability of class c under class c's own mask."""
    n_classes = per_mask.shape[0]
    return np.stack([per_mask[c, :, c] for c in range(n_classes)], axis=1)


def mask_dependence(per_mask: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and 'prediction = the mask's class' rate when a wrong class's mask is applied.

    Averaged over every (example, wrong class) pair. Chance for the follow rate is about
    1 / classes; a value near 1 means the mask, not the input, decides the prediction.
    """
    n_classes, n = per_mask.shape[0], per_mask.shape[1]
    predicted = per_mask.argmax(axis=2)  # (mask class, example)
    wrong = np.arange(n_classes)[:, None] != labels[None, :]
    correct = predicted == labels[None, :]
    follows = predicted == np.arange(n_classes)[:, None]
    pairs = max(int(wrong.sum()), 1)
    return {
        "wrong_mask_accuracy": float((correct & wrong).sum() / pairs),
        "follows_mask_rate": float((follows & wrong).sum() / pairs),
        "true_mask_accuracy": float(correct[labels, np.arange(n)].mean()),
    }


def nsdropout_table(model: Any, x: np.ndarray, labels: np.ndarray, modes: Sequence[str]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Every mode's accuracy and error on the test inputs, mask dependence, and per-mode hit vectors.

    A model without an NSDropout layer gets one row set, mode `standard` (its plain prediction):
    the no-dropout and ordinary-dropout rows of the same comparison.
    """
    from ablation_lab.layers import nsdropout_layers

    labels = np.asarray(labels)
    rows: list[dict[str, Any]] = []
    hits: dict[str, np.ndarray] = {}
    if not nsdropout_layers(model):
        hits[STANDARD] = _predict(model, x).argmax(axis=1) == labels
    else:
        n_classes = int(model.outputs[0].shape[-1])
        per_mask = class_mask_probabilities(model, x, n_classes)
        for mode in modes:
            if mode == ORACLE:
                predicted = per_mask[labels, np.arange(len(labels))].argmax(axis=1)
            elif mode == MAX_OVER_CLASSES:
                predicted = own_class_scores(per_mask).argmax(axis=1)
            else:
                predicted = predict_mode(model, x, mode, n_classes=n_classes)
            hits[mode] = predicted == labels
        rows += [{"mode": "wrong-mask", "metric": name, "value": value} for name, value in mask_dependence(per_mask, labels).items()]
    for mode, hit in hits.items():
        rows += [
            {"mode": mode, "metric": "accuracy", "value": float(hit.mean())},
            {"mode": mode, "metric": "error_rate", "value": float(1 - hit.mean())},
        ]
    arrays = {hits_key(mode): hit for mode, hit in hits.items()}
    return pd.DataFrame(rows, columns=["mode", "metric", "value"]), arrays


def hits_key(mode: str) -> str:
    return f"hits_{mode.replace('-', '_')}"


def summarise_modes(table: pd.DataFrame, arrays: dict[tuple[str, str, int], dict[str, np.ndarray]]) -> pd.DataFrame:
    """Per (variant, mode): error rate over seeds with its interval, and the gap to the oracle.

    `arrays[(family, variant, seed)]` holds the per-example hit vectors the analysis saved.
    Intervals come from `statistics` (seed and test-sample noise), the same functions every
    accuracy in the report uses: `mean_interval` for a mode's error, `paired_difference` for a
    label-free mode minus the oracle on the same models and examples.
    """
    from ablation_lab.statistics import mean_interval, paired_difference

    accuracy = table[table["metric"] == "accuracy"].sort_values("seed")
    rows = []
    for (family, variant, layer, rate), runs in accuracy.groupby(["family", "variant", "layer", "rate"], sort=False):
        by_mode = {mode: part for mode, part in runs.groupby("mode", sort=False)}

        def hits_of(mode: str, part: pd.DataFrame, key: tuple[str, str] = (family, variant)) -> np.ndarray:
            return np.asarray([arrays[(*key, seed)][hits_key(mode)] for seed in part["seed"]])

        for mode, part in by_mode.items():
            found = mean_interval(part["value"].to_numpy(), hits=hits_of(mode, part))
            row = {"family": family, "variant": variant, "layer": layer, "rate": rate, "mode": mode, "seeds": len(part)}
            row["accuracy"] = found["estimate"]
            row |= {
                "error_rate": 1 - found["estimate"],
                "error_low": 1 - found["high"],
                "error_high": 1 - found["low"],
                "method": found["method"],
            }
            oracle = by_mode.get(ORACLE)
            if mode in LABEL_FREE and oracle is not None and list(oracle["seed"]) == list(part["seed"]):
                gap = paired_difference(
                    part["value"].to_numpy(),
                    oracle["value"].to_numpy(),
                    variant_hits=hits_of(mode, part),
                    baseline_hits=hits_of(ORACLE, oracle),
                )
                row |= {"minus_oracle": gap["estimate"], "minus_oracle_low": gap["low"], "minus_oracle_high": gap["high"]}
            rows.append(row)
    return in_reading_order(pd.DataFrame(rows))


LAYER_ORDER = {"none": 0, "standard": 1, "nsdropout": 2}
MODE_ORDER = {mode: position for position, mode in enumerate((STANDARD, *MODES))}


def in_reading_order(summary: pd.DataFrame) -> pd.DataFrame:
    """By rate, then no dropout / dropout / NSDropout, then oracle before the label-free modes."""
    if summary.empty:
        return summary
    keys = summary.assign(_layer=summary["layer"].map(LAYER_ORDER), _mode=summary["mode"].map(MODE_ORDER))
    return keys.sort_values(["rate", "_layer", "_mode"], kind="stable").drop(columns=["_layer", "_mode"]).reset_index(drop=True)
