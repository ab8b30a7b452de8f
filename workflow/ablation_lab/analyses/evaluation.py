"""Test-set metrics from saved class probabilities (scikit-learn; no TensorFlow needed).

The training job stores the test probabilities while the model is in memory, so evaluating
a variant costs a NumPy load instead of a second TensorFlow start-up.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ablation_lab.analyses.base import Analysis, RunContext

METRICS = ("accuracy", "error_rate", "loss", "macro_f1")


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Accuracy, error rate (1 - accuracy), cross-entropy and macro F1; NaN for a diverged model."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss  # here: parsing the workflow never imports sklearn

    n_classes = probabilities.shape[1]
    if not np.all(np.isfinite(probabilities)):
        return dict.fromkeys(METRICS, float("nan"))
    predicted = probabilities.argmax(axis=1)
    accuracy = float(accuracy_score(y_true, predicted))
    return {
        "accuracy": accuracy,
        "error_rate": 1.0 - accuracy,
        "loss": float(log_loss(y_true, np.clip(probabilities, 1e-7, 1.0), labels=np.arange(n_classes))),
        "macro_f1": float(f1_score(y_true, predicted, average="macro", labels=np.arange(n_classes), zero_division=0)),
    }


def confusion_table(y_true: np.ndarray, probabilities: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """Long format: one row per (true, predicted) cell, so tables of many runs concatenate."""
    from sklearn.metrics import confusion_matrix

    labels = np.arange(len(class_names))
    if np.all(np.isfinite(probabilities)):
        matrix = confusion_matrix(y_true, probabilities.argmax(axis=1), labels=labels)
    else:
        matrix = np.zeros((len(labels), len(labels)), dtype=int)
    rows, cols = np.meshgrid(labels, labels, indexing="ij")
    return pd.DataFrame(
        {"true": np.asarray(class_names)[rows.ravel()], "predicted": np.asarray(class_names)[cols.ravel()], "count": matrix.ravel()}
    )


def metrics_table(metrics: dict[str, float], run: dict[str, object]) -> pd.DataFrame:
    """Tidy: one row per metric, with the run's identifying columns repeated."""
    frame = pd.DataFrame({"metric": list(metrics), "value": list(metrics.values())})
    for key, value in reversed(list(run.items())):
        frame.insert(0, key, value)
    return frame


EVALUATION = "evaluation"


def evaluate_run(context: RunContext, params: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Test-set accuracy, error rate, loss and macro F1 (+ epochs, seconds), one row per metric.

    Also the predicted class of every test example under the view: the statistics pair
    variants example by example (a bootstrap over the test split) from them.
    """

    record = context.provenance
    probabilities = context.probabilities("test")
    metrics = classification_metrics(context.labels("test"), probabilities)
    metrics |= {"epochs_trained": record["epochs_trained"], "train_seconds": record["train_seconds"]}
    if record["diverged_epoch"] is not None:
        metrics["diverged_epoch"] = record["diverged_epoch"]
    predicted = probabilities.argmax(axis=1).astype(np.int32)
    return metrics_table(metrics, {"status": record["status"]}), {"predicted": predicted, "y_test": context.labels("test")}


ANALYSIS = Analysis(
    EVALUATION,
    "Test-set evaluation",
    "Accuracy, error rate, cross-entropy and macro F1 on the test split, under the variant's test view.",
    evaluate_run,
    uses_test_view=True,
)
