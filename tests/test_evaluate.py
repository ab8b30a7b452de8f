"""Metrics from probabilities: values checked by hand on a tiny example."""

from __future__ import annotations

import numpy as np
import pytest
from ablation_lab.analyses.evaluation import classification_metrics, confusion_table, metrics_table


def test_metrics_on_a_hand_checked_example():
    y = np.array([0, 1, 2, 2])
    p = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    m = classification_metrics(y, p)
    assert m["accuracy"] == 0.75 and m["error_rate"] == 0.25
    assert m["loss"] == pytest.approx(-np.mean(np.log([0.8, 0.7, 0.7, 0.1])))
    # per class F1: class0 p=1/2 r=1 -> 2/3; class1 1; class2 p=1 r=1/2 -> 2/3
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    table = confusion_table(y, p, ["a", "b", "c"])
    assert table.query("true == 'c' and predicted == 'a'")["count"].item() == 1
    assert table["count"].sum() == 4


def test_diverged_probabilities_give_nan_metrics():
    m = classification_metrics(np.array([0, 1]), np.full((2, 2), np.nan))
    assert all(np.isnan(v) for v in m.values())


def test_metrics_table_is_tidy():
    table = metrics_table({"accuracy": 0.9, "loss": 0.3}, {"family": "dropout", "variant": "rate-0.2", "seed": 1})
    assert list(table.columns) == ["family", "variant", "seed", "metric", "value"]
    assert table["metric"].tolist() == ["accuracy", "loss"]
