"""Calibration of a trained model's probabilities: how far its confidence matches its accuracy.

An ablation can leave accuracy flat and still make a model over- or under-confident. Per
model and test view: expected calibration error (ECE, equal-width confidence bins), the
binning-free Kolmogorov-Smirnov calibration error (Gupta et al., 2021), the Brier score, the
negative log-likelihood, and temperature scaling (Guo et al., 2017) fitted on the
validation split only, with ECE and NLL on test before and after it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar

EPS = 1e-12


def confidence_and_hits(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return probabilities.max(axis=1), (probabilities.argmax(axis=1) == labels).astype(float)


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> pd.DataFrame:
    """Per equal-width confidence bin: examples, mean confidence, accuracy (the reliability diagram)."""
    confidence, hits = confidence_and_hits(probabilities, labels)
    index = np.minimum((confidence * bins).astype(int), bins - 1)  # confidence 1.0 falls in the last bin
    frame = pd.DataFrame({"bin": index, "confidence": confidence, "hit": hits})
    table = frame.groupby("bin").agg(count=("hit", "size"), confidence=("confidence", "mean"), accuracy=("hit", "mean")).reset_index()
    table["low"], table["high"] = table["bin"] / bins, (table["bin"] + 1) / bins
    return table


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    table = reliability_bins(probabilities, labels, bins)
    return float((table["count"] * (table["accuracy"] - table["confidence"]).abs()).sum() / len(labels))


def ks_calibration_error(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Largest gap between the cumulative accuracy and cumulative confidence, sorted by confidence."""
    confidence, hits = confidence_and_hits(probabilities, labels)
    order = np.argsort(confidence, kind="stable")
    return float(np.abs(np.cumsum(hits[order] - confidence[order]) / len(labels)).max())


def brier_score(probabilities: np.ndarray, labels: np.ndarray) -> float:
    onehot = np.eye(probabilities.shape[1])[labels]
    return float(((probabilities - onehot) ** 2).sum(axis=1).mean())


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], EPS, 1.0)).mean())


def scale_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the logits are log p up to a per-example constant softmax ignores."""
    logits = np.log(np.clip(probabilities, EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(val_probabilities: np.ndarray, val_labels: np.ndarray) -> float:
    """The temperature minimising validation NLL; pass the validation split only, never test."""
    result = minimize_scalar(
        lambda t: negative_log_likelihood(scale_temperature(val_probabilities, t), val_labels), bounds=(0.05, 20.0), method="bounded"
    )
    return float(result.x)


def calibration_metrics(
    val_probabilities: np.ndarray, val_labels: np.ndarray, test_probabilities: np.ndarray, test_labels: np.ndarray, bins: int = 15
) -> dict[str, float]:
    if not (np.all(np.isfinite(test_probabilities)) and np.all(np.isfinite(val_probabilities))):
        names = ("ece", "ks_error", "brier", "nll", "temperature", "ece_scaled", "nll_scaled")
        return dict.fromkeys(names, float("nan"))
    temperature = fit_temperature(val_probabilities, val_labels)
    scaled = scale_temperature(test_probabilities, temperature)
    return {
        "ece": expected_calibration_error(test_probabilities, test_labels, bins),
        "ks_error": ks_calibration_error(test_probabilities, test_labels),
        "brier": brier_score(test_probabilities, test_labels),
        "nll": negative_log_likelihood(test_probabilities, test_labels),
        "temperature": temperature,
        "ece_scaled": expected_calibration_error(scaled, test_labels, bins),
        "nll_scaled": negative_log_likelihood(scaled, test_labels),
    }
