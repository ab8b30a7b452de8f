"""Statistics across seeds and the article's claims, on hand-made run tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ablation_lab.data.base import DatasetInfo
from ablation_lab.statistics.claims import block_contrast, check_findings, verdict
from ablation_lab.statistics.inference import holm, t_interval
from ablation_lab.statistics.tables import compare_to_baseline, runs_table, summarise
from ablation_lab.study import Study
from scipy import stats


def test_t_interval_matches_scipy():
    values = [0.91, 0.93, 0.92, 0.95]
    mean, low, high = t_interval(values)
    expected = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values))
    assert (low, high) == pytest.approx(expected)
    assert np.isnan(t_interval([0.9])[1])


def test_holm_adjustment():
    # Textbook example: sorted p 0.01, 0.02, 0.03 with m=3 -> 0.03, 0.04, 0.04 (monotone)
    np.testing.assert_allclose(holm([0.03, 0.01, 0.02]), [0.04, 0.03, 0.04])
    np.testing.assert_allclose(holm([0.5, np.nan, 0.9]), [1.0, np.nan, 1.0])


def test_block_contrast_of_two_variants_is_the_paired_t_test():
    a, b = [0.91, 0.93, 0.90, 0.95], [0.88, 0.92, 0.86, 0.93]
    table = pd.DataFrame([a, b], index=["a", "b"], columns=[1, 2, 3, 4])
    result = block_contrast(table, {"a": 1.0, "b": -1.0})
    expected = stats.ttest_rel(a, b)
    assert result["p_value"] == pytest.approx(expected.pvalue)
    assert (result["low"], result["high"]) == pytest.approx(t_interval(np.subtract(a, b))[1:])
    assert result["df"] == 3


def test_block_contrast_pools_seed_noise_over_the_family():
    # 3 variants x 2 seeds: (3-1)(2-1) = 2 residual degrees of freedom instead of 1
    table = pd.DataFrame([[0.90, 0.92], [0.85, 0.88], [0.80, 0.81]], index=["x", "y", "z"], columns=[1, 2])
    result = block_contrast(table, {"x": 1.0, "z": -1.0})
    assert result["df"] == 2 and result["estimate"] == pytest.approx(0.105)
    values = table.to_numpy()
    residual = values - values.mean(1, keepdims=True) - values.mean(0, keepdims=True) + values.mean()
    se = np.sqrt((residual**2).sum() / 2 * 2 / 2)
    assert result["high"] - result["estimate"] == pytest.approx(stats.t.ppf(0.975, 2) * se)
    assert np.isnan(block_contrast(table[[1]], {"x": 1.0, "z": -1.0})["low"]), "one seed: no interval"


def test_verdicts():
    assert verdict(0.01, 0.05, 3) == "held"
    assert verdict(-0.01, 0.05, 3) == "within seed noise"
    assert verdict(-0.05, -0.01, 3) == "contradicted"
    assert verdict(float("nan"), float("nan"), 1).startswith("not testable")


def make_runs(accuracy: dict[str, list[float]]) -> pd.DataFrame:
    """Tidy metrics rows for `family/variant` -> accuracies per seed 1..n."""
    rows = []
    for variant_id, values in accuracy.items():
        family, variant = variant_id.split("/")
        for seed, value in enumerate(values, start=1):
            rows.append({"family": family, "variant": variant, "seed": seed, "status": "ok", "metric": "accuracy", "value": value})
    return pd.DataFrame(rows)


@pytest.fixture
def article_study() -> Study:
    config = {
        "seeds": [1, 2, 3],
        "families": {
            "activation": {"functions": ["relu", "tanh", "linear"]},
            "input": {"groups": [{"kind": "columns", "size": 7}]},
            "noise": {"levels": [0.0, 0.2, 0.4]},
        },
    }
    study = Study.from_config(config)
    study.info = DatasetInfo("image", (28, 28))
    return study


def test_paired_comparison_and_summary(article_study):
    runs = runs_table(
        make_runs(
            {
                "baseline/reference": [0.90, 0.92, 0.91],
                "activation/relu": [0.90, 0.92, 0.91],
                "activation/tanh": [0.91, 0.93, 0.92],
                "activation/linear": [0.85, 0.86, 0.86],
                "input/cols-00-06": [0.90, 0.92, 0.90],
                "input/cols-07-13": [0.80, 0.83, 0.82],
                "input/cols-14-20": [0.81, 0.82, 0.80],
                "input/cols-21-27": [0.91, 0.91, 0.90],
                "noise/gauss-0": [0.90, 0.92, 0.91],
                "noise/gauss-0.2": [0.85, 0.86, 0.85],
                "noise/gauss-0.4": [0.70, 0.72, 0.71],
            }
        ),
        article_study.variant_table(),
    )
    summary = summarise(runs)
    assert summary.loc[summary["variant"] == "tanh", "accuracy_mean"].item() == pytest.approx(0.92)
    comparisons = compare_to_baseline(runs).set_index("variant")
    assert comparisons.loc["tanh", "difference"] == pytest.approx(0.01)
    assert comparisons.loc["relu", "p_value"] == 1.0
    assert comparisons.loc["linear", "p_holm"] >= comparisons.loc["linear", "p_value"]
    findings = check_findings(runs, article_study.variant_table()).set_index("claim")
    assert findings.loc["the linear activation scores below relu", "verdict"] == "held"
    assert findings.loc["the linear activation scores below tanh", "estimate"] == pytest.approx(0.92 - 0.8567, abs=1e-3)
    assert findings.loc["accuracy falls as gaussian noise grows", "verdict"] == "held"
    border = findings.loc["ablating border columns costs less than ablating central columns"]
    assert border["verdict"] == "held" and border["estimate"] > 0.05


def test_a_difference_within_seed_noise_is_not_claimed(article_study):
    runs = runs_table(
        make_runs(
            {
                "baseline/reference": [0.90, 0.92, 0.91],
                "activation/relu": [0.90, 0.93, 0.89],
                "activation/tanh": [0.91, 0.90, 0.92],
                "activation/linear": [0.91, 0.90, 0.90],
                "input/cols-00-06": [0.9] * 3,
                "input/cols-07-13": [0.9] * 3,
                "input/cols-14-20": [0.9] * 3,
                "input/cols-21-27": [0.9] * 3,
                "noise/gauss-0": [0.9] * 3,
                "noise/gauss-0.2": [0.9] * 3,
                "noise/gauss-0.4": [0.9] * 3,
            }
        ),
        article_study.variant_table(),
    )
    findings = check_findings(runs, article_study.variant_table()).set_index("claim")
    assert findings.loc["the linear activation scores below relu", "verdict"] == "within seed noise"


def test_diverged_runs_are_counted_not_averaged(article_study):
    tidy = make_runs({"baseline/reference": [0.9, 0.91, 0.92], "activation/linear": [np.nan, 0.85, 0.86]})
    tidy.loc[(tidy["variant"] == "linear") & (tidy["seed"] == 1), "status"] = "diverged"
    summary = summarise(runs_table(tidy, article_study.variant_table())).set_index("variant")
    assert summary.loc["linear", "diverged"] == 1
    assert summary.loc["linear", "accuracy_mean"] == pytest.approx(0.855)
