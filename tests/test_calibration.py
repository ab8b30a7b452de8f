"""Calibration metrics on predictors whose calibration is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
from ablation_lab.analyses import calibration


def two_class(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities [c, 1 - c] with label 0 when correct, 1 when not."""
    probabilities = np.stack([confidence, 1 - confidence], axis=1)
    return probabilities, np.where(correct, 0, 1)


def test_a_calibrated_predictor_has_about_zero_ece_and_ks_error():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, size=200_000)
    probabilities, labels = two_class(confidence, rng.random(confidence.size) < confidence)
    assert calibration.expected_calibration_error(probabilities, labels) < 0.005
    assert calibration.ks_calibration_error(probabilities, labels) < 0.005


def test_an_overconfident_predictor_matches_the_hand_values():
    # confident 0.9 everywhere, right 60% of the time: ECE = KS = 0.3
    probabilities, labels = two_class(np.full(10, 0.9), np.arange(10) < 6)
    assert calibration.expected_calibration_error(probabilities, labels) == pytest.approx(0.3)
    assert calibration.ks_calibration_error(probabilities, labels) == pytest.approx(0.3)
    # Brier: right: (0.1^2 + 0.1^2) = 0.02; wrong: (0.9^2 + 0.9^2) = 1.62; mean 0.6 * 0.02 + 0.4 * 1.62
    assert calibration.brier_score(probabilities, labels) == pytest.approx(0.6 * 0.02 + 0.4 * 1.62)
    assert calibration.negative_log_likelihood(probabilities, labels) == pytest.approx(-(0.6 * np.log(0.9) + 0.4 * np.log(0.1)))


def test_temperature_scaling_recovers_a_known_temperature_from_validation_only():
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3.0, size=(20_000, 5))
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(5, p=row) for row in truth])
    sharpened = calibration.scale_temperature(truth, 0.5)  # an over-confident model: T = 2 undoes it
    assert calibration.fit_temperature(sharpened, labels) == pytest.approx(2.0, rel=0.05)
    split = 10_000
    first = calibration.calibration_metrics(sharpened[:split], labels[:split], sharpened[split:], labels[split:])
    shuffled = rng.permutation(labels[split:])
    second = calibration.calibration_metrics(sharpened[:split], labels[:split], sharpened[split:], shuffled)
    assert first["temperature"] == second["temperature"], "the temperature must not depend on the test labels"
    assert first["ece_scaled"] < first["ece"] and first["nll_scaled"] < first["nll"]


def test_reliability_bins_put_full_confidence_in_the_last_bin():
    probabilities, labels = two_class(np.array([1.0, 0.55, 0.55]), np.array([True, True, False]))
    table = calibration.reliability_bins(probabilities, labels, bins=10).set_index("bin")
    assert table.loc[9, "count"] == 1 and table.loc[5, "accuracy"] == 0.5
