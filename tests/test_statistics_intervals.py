"""Per-variant intervals, test-sample noise, Holm-adjusted intervals, equivalence and seed advice, on fixed numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from ablation_lab.data.base import DatasetInfo
from ablation_lab.statistics.claims import DROPOUT_CLAIM, block_contrast, check_findings
from ablation_lab.statistics.inference import (
    adjusted_intervals,
    bootstrap_variance,
    equivalence_test,
    holm,
    holm_levels,
    interval_verdict,
    mean_interval,
    paired_difference,
    seeds_needed,
)
from ablation_lab.statistics.tables import compare_to_baseline, runs_table, summarise
from ablation_lab.study import Study
from scipy import stats
from test_statistics import make_runs

# --- per-variant paired intervals ----------------------------------------------------------


def test_paired_difference_with_three_seeds_is_scipys_paired_t():
    variant, baseline = [0.91, 0.93, 0.90, 0.95], [0.88, 0.92, 0.86, 0.93]
    result = paired_difference(variant, baseline)
    differences = np.subtract(variant, baseline)
    expected = stats.ttest_rel(variant, baseline)
    assert result["estimate"] == pytest.approx(differences.mean())
    assert result["p_value"] == pytest.approx(expected.pvalue)
    assert (result["low"], result["high"]) == pytest.approx(stats.t.interval(0.95, 3, loc=differences.mean(), scale=stats.sem(differences)))
    assert (result["low"], result["high"]) == pytest.approx(tuple(expected.confidence_interval(0.95)))
    assert result["df"] == 3 and result["seeds"] == 4 and result["var_test"] == 0
    assert "seed noise only" in result["method"]


def test_diverged_pairs_are_dropped_with_their_hit_rows():
    variant, baseline = [np.nan, 0.5, 0.75], [0.5, 0.5, 0.5]
    variant_hits = [[1, 1, 1, 1], [1, 0, 1, 0], [1, 1, 1, 0]]
    baseline_hits = [[0, 0, 0, 0], [1, 0, 1, 0], [1, 0, 1, 0]]
    result = paired_difference(variant, baseline, variant_hits=variant_hits, baseline_hits=baseline_hits)
    assert result["seeds"] == 2 and result["estimate"] == pytest.approx(0.125)
    # per example over the two kept seeds: (0, 0, 0, 0.5) -> plug-in variance 0.046875 / 4
    assert result["var_test"] == pytest.approx(0.046875 / 4, rel=0.15)
    with pytest.raises(ValueError, match="expected"):
        paired_difference(variant, baseline, variant_hits=variant_hits[:2], baseline_hits=baseline_hits)


def test_identical_hit_vectors_have_no_test_sample_noise():
    hits = np.array([[1, 0, 1, 1, 0, 1], [1, 1, 1, 0, 0, 1], [0, 1, 1, 1, 0, 1]], dtype=bool)
    assert bootstrap_variance(np.zeros(6)) == 0.0
    with_hits = paired_difference([0.67, 0.67, 0.67], [0.67, 0.67, 0.67], variant_hits=hits, baseline_hits=hits)
    assert with_hits["var_test"] == 0.0
    assert (with_hits["low"], with_hits["high"], with_hits["p_value"]) == (0.0, 0.0, 1.0)
    # a non-zero seed part: the test-sample component adds nothing, so the interval is the paired t one
    variant, baseline = [0.91, 0.93, 0.90], [0.88, 0.92, 0.86]
    plain = paired_difference(variant, baseline)
    same = paired_difference(variant, baseline, variant_hits=hits, baseline_hits=hits)
    assert same["var_test"] == 0.0 and (same["low"], same["high"]) == pytest.approx((plain["low"], plain["high"]))


def test_bootstrap_variance_is_the_plug_in_variance_of_the_mean():
    per_example = np.tile([1.0, 0.0, 0.0, -1.0, 0.0], 40)  # n = 200, plug-in variance 0.4
    assert bootstrap_variance(per_example, n_boot=4000, seed=3) == pytest.approx(0.4 / 200, rel=0.1)
    assert bootstrap_variance(per_example, seed=3) == bootstrap_variance(per_example, seed=3), "seeded"


def test_two_agreeing_seeds_get_the_test_sample_noise_not_a_zero_width_interval():
    variant_hits = np.array([[1, 1, 0, 1, 1, 0, 1, 1, 1, 1]] * 2, dtype=bool)
    baseline_hits = np.array([[1, 1, 1, 1, 0, 0, 1, 1, 1, 0]] * 2, dtype=bool)
    seed_only = paired_difference([0.8, 0.8], [0.7, 0.7])
    assert seed_only["low"] == seed_only["high"], "seed noise alone: zero width, flagged"
    assert "no spread across seeds" in seed_only["method"]
    result = paired_difference([0.8, 0.8], [0.7, 0.7], variant_hits=variant_hits, baseline_hits=baseline_hits)
    assert result["var_seed"] == 0 and result["var_test"] > 0
    assert result["se"] == pytest.approx(math.sqrt(result["var_test"]))
    assert result["df"] == 1, "the seeds' df, even when all the variance comes from the test sample"
    half = stats.t.ppf(0.975, result["df"]) * result["se"]
    assert (result["low"], result["high"]) == pytest.approx((max(-1.0, 0.1 - half), min(1.0, 0.1 + half)))
    assert result["low"] < result["high"] and "bootstrap" in result["method"]


def test_seed_and_test_noise_add_at_the_seeds_df():
    rng = np.random.default_rng(0)
    variant_hits, baseline_hits = rng.random((2, 400)) < 0.8, rng.random((2, 400)) < 0.7
    variant, baseline = variant_hits.mean(axis=1), baseline_hits.mean(axis=1)
    result = paired_difference(variant, baseline, variant_hits=variant_hits, baseline_hits=baseline_hits, seed=1)
    differences = variant - baseline
    var_seed = differences.var(ddof=1) / 2
    var_test = bootstrap_variance(variant_hits.mean(0) - baseline_hits.mean(0), seed=1)
    assert result["var_seed"] == pytest.approx(var_seed) and result["var_test"] == pytest.approx(var_test)
    assert result["df"] == 1
    assert result["p_value"] == pytest.approx(2 * stats.t.sf(abs(differences.mean()) / math.sqrt(var_seed + var_test), 1))


@pytest.mark.parametrize("case", range(200))
def test_adding_test_noise_never_narrows_the_seed_interval(case):
    """Property: with hit vectors, every interval is at least as wide as the t-interval over seeds alone."""
    rng = np.random.default_rng(case)
    seeds, n_test = int(rng.integers(2, 8)), int(rng.integers(5, 400))
    accuracy = rng.uniform(0.05, 0.95, size=2)
    variant_hits = rng.random((seeds, n_test)) < rng.uniform(accuracy[0] - 0.05, accuracy[0] + 0.05, size=(seeds, 1))
    baseline_hits = rng.random((seeds, n_test)) < rng.uniform(accuracy[1] - 0.05, accuracy[1] + 0.05, size=(seeds, 1))
    variant, baseline = variant_hits.mean(axis=1), baseline_hits.mean(axis=1)
    confidence = float(rng.choice([0.9, 0.95, 0.99]))
    both = paired_difference(
        variant, baseline, variant_hits=variant_hits, baseline_hits=baseline_hits, confidence=confidence, bounds=None, n_boot=200, seed=case
    )
    quantile = stats.t.ppf(0.5 + confidence / 2, seeds - 1)
    seed_only = 2 * quantile * stats.sem(variant - baseline)  # the t-interval over seeds alone (ttest_rel's)
    assert both["high"] - both["low"] >= seed_only - 1e-12
    mean = mean_interval(variant, hits=variant_hits, confidence=confidence, bounds=None, n_boot=200, seed=case)
    assert mean["high"] - mean["low"] >= 2 * quantile * stats.sem(variant) - 1e-12


def test_a_noisy_variant_gets_a_wider_interval_than_a_quiet_one():
    # same mean difference (-0.02), very different seed noise; the pooled block model gives both one width
    accuracy = {
        "baseline/reference": [0.90, 0.91, 0.92, 0.91],
        "noise/gauss-0": [0.88, 0.89, 0.90, 0.89],
        "noise/gauss-0.4": [0.80, 0.95, 0.85, 0.96],
    }
    comparisons = compare_to_baseline(runs_table(make_runs(accuracy), _variants(accuracy))).set_index("variant")
    quiet, noisy = comparisons.loc["gauss-0"], comparisons.loc["gauss-0.4"]
    assert quiet["difference"] == pytest.approx(noisy["difference"]) == pytest.approx(-0.02)
    own = paired_difference(accuracy["noise/gauss-0.4"], accuracy["baseline/reference"])
    assert (noisy["diff_ci_low_unadjusted"], noisy["diff_ci_high_unadjusted"], noisy["p_value"]) == pytest.approx(
        (own["low"], own["high"], own["p_value"])
    )
    width = {name: row["diff_ci_high_unadjusted"] - row["diff_ci_low_unadjusted"] for name, row in (("quiet", quiet), ("noisy", noisy))}
    assert width["noisy"] > 10 * width["quiet"]
    table = pd.DataFrame(accuracy).T
    pooled = [block_contrast(table, {name: 1.0, "baseline/reference": -1.0}) for name in ("noise/gauss-0", "noise/gauss-0.4")]
    assert pooled[0]["high"] - pooled[0]["low"] == pytest.approx(pooled[1]["high"] - pooled[1]["low"])


# --- accuracies in [0, 1] ------------------------------------------------------------------


def test_mean_accuracy_intervals_stay_in_zero_one():
    result = mean_interval([0.99, 0.97])
    assert result["high"] == 1.0 and result["low"] >= 0.0
    assert stats.t.interval(0.95, 1, loc=0.98, scale=stats.sem([0.99, 0.97]))[1] > 1, "the raw t(1 df) interval passes 1"
    assert "clipped to [0, 1]" in result["method"] and "1 df" in result["method"]
    three = mean_interval([0.91, 0.93, 0.92])
    assert (three["low"], three["high"]) == pytest.approx(stats.t.interval(0.95, 2, loc=0.92, scale=stats.sem([0.91, 0.93, 0.92])))
    assert np.isnan(mean_interval([0.9])["low"])


def test_summary_uses_hit_vectors_when_given():
    accuracy = {"baseline/reference": [0.6, 0.6], "noise/gauss-0": [0.9, 0.5]}
    runs = runs_table(make_runs(accuracy), _variants(accuracy))
    hits = {
        ("baseline", "reference", 1): np.array([1, 1, 1, 0, 0] * 2, dtype=bool),
        ("baseline", "reference", 2): np.array([1, 1, 0, 1, 0] * 2, dtype=bool),
        ("noise", "gauss-0", 1): np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 0], dtype=bool),
        ("noise", "gauss-0", 2): np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=bool),
    }
    plain = summarise(runs).set_index("variant")
    assert plain.loc["reference", "accuracy_ci_low"] == plain.loc["reference", "accuracy_ci_high"] == 0.6
    assert (plain["accuracy_ci_low"] >= 0).all() and (plain["accuracy_ci_high"] <= 1).all()
    assert plain.loc["gauss-0", "interval_method"].startswith("t over 2 seeds (1 df)")
    with_hits = summarise(runs, hits=hits).set_index("variant")
    assert with_hits.loc["reference", "accuracy_ci_high"] - with_hits.loc["reference", "accuracy_ci_low"] > 0.1
    assert "bootstrap" in with_hits.loc["reference", "interval_method"]
    assert list(with_hits.columns[: len(plain.columns)]) == list(plain.columns)


# --- Holm-adjusted intervals ---------------------------------------------------------------


def _z_estimate(p: float) -> float:
    """An estimate whose two-sided p-value is `p` with se 1 and (effectively) normal df."""
    return float(stats.t.isf(p / 2, 1e9))


@pytest.mark.parametrize(
    "pvalues",
    [
        [0.001, 0.01, 0.04],  # Holm rejects all three
        [0.03, 0.04],  # neither: 2 x 0.03 >= 0.05, although 0.04 < 0.05 alone
        [0.001, 0.03, 0.04, 0.2],  # the first only
        [0.2, 0.001, 0.012, 0.02, 0.5],  # unordered: 0.001, 0.012 x 4 = 0.048, then 0.02 x 3 = 0.06 stops
    ],
)
def test_adjusted_intervals_exclude_zero_iff_holm_rejects(pvalues):
    signs = np.where(np.arange(len(pvalues)) % 2, -1.0, 1.0)  # both directions
    estimates = signs * [_z_estimate(p) for p in pvalues]
    pvals = [2 * stats.t.sf(abs(e), 1e9) for e in estimates]
    table = adjusted_intervals(estimates, np.ones(len(pvalues)), np.full(len(pvalues), 1e9), pvals)
    np.testing.assert_allclose(table["p_holm"], holm(pvals))
    excludes = (table["low"] > 0) | (table["high"] < 0)
    assert list(excludes) == list(table["p_holm"] < 0.05)
    unadjusted = [stats.t.interval(0.95, 1e9, loc=e) for e in estimates]
    assert all(row.low <= u[0] and row.high >= u[1] for row, u in zip(table.itertuples(), unadjusted, strict=True))
    assert (table["level"] <= 1 - 0.05 / len(pvalues) + 1e-12).all(), "never wider than Bonferroni"


def test_holm_levels_by_hand():
    np.testing.assert_allclose(holm_levels([0.001, 0.01, 0.04]), [1 - 0.05 / 3, 1 - 0.05 / 2, 1 - 0.05])
    np.testing.assert_allclose(holm_levels([0.03, 0.04]), [1 - 0.05 / 2, 1 - 0.05 / 2])
    np.testing.assert_allclose(holm_levels([0.2, np.nan, 0.001]), [1 - 0.05 / 1, np.nan, 1 - 0.05 / 2])


def test_comparisons_without_a_baseline_or_variants():
    only_baseline = {"baseline/reference": [0.9, 0.91]}
    assert compare_to_baseline(runs_table(make_runs(only_baseline), _variants(only_baseline))).empty
    orphan = {"noise/gauss-0": [0.9, 0.91, 0.92]}
    row = compare_to_baseline(runs_table(make_runs(orphan), _variants(orphan))).iloc[0]
    assert np.isnan(row["difference"]) and np.isnan(row["diff_ci_low"]) and row["equivalence"].startswith("not testable")


def test_comparison_table_interval_and_holm_p_agree():
    accuracy = {
        "baseline/reference": [0.90, 0.91, 0.92],
        "noise/gauss-0": [0.90, 0.912, 0.921],
        "noise/gauss-0.2": [0.86, 0.88, 0.885],
        "noise/gauss-0.4": [0.70, 0.74, 0.72],
        "activation/tanh": [0.89, 0.915, 0.93],
    }
    table = compare_to_baseline(runs_table(make_runs(accuracy), _variants(accuracy)))
    old = ["family", "variant", "difference", "diff_ci_low", "diff_ci_high", "p_value", "pairs", "p_holm"]
    new = ["diff_ci_low_unadjusted", "diff_ci_high_unadjusted", "method", "equivalence", "p_tost", "adjustment"]
    assert set(old + new) <= set(table.columns)
    excludes = (table["diff_ci_low"] > 0) | (table["diff_ci_high"] < 0)
    assert list(excludes) == list(table["p_holm"] < 0.05)
    assert (table["diff_ci_low"] <= table["diff_ci_low_unadjusted"]).all()
    assert (table["diff_ci_high"] >= table["diff_ci_high_unadjusted"]).all()
    noise = table[table["family"] == "noise"]
    np.testing.assert_allclose(noise["p_holm"], holm(noise["p_value"]))
    assert set(noise["adjustment"]) == {"Holm step-down within family (m=3)"}
    assert table.set_index("variant").loc["gauss-0.4", "equivalence"] == "different"


# --- equivalence and seeds ------------------------------------------------------------------


def test_tost_by_hand():
    differences = [0.002, -0.001, 0.003, 0.000]
    mean, se, df = 0.001, float(np.std(differences, ddof=1) / 2), 3
    t_lower = (mean - (-0.01)) / se  # H0: difference <= -margin
    t_upper = (mean - 0.01) / se  # H0: difference >= +margin
    result = equivalence_test(differences, margin=0.01)
    assert result["p_lower"] == pytest.approx(stats.t.sf(t_lower, df))
    assert result["p_upper"] == pytest.approx(stats.t.cdf(t_upper, df))
    assert result["p_tost"] == pytest.approx(max(stats.t.sf(t_lower, df), stats.t.cdf(t_upper, df)))
    assert (result["low"], result["high"]) == pytest.approx((mean - stats.t.ppf(0.975, df) * se, mean + stats.t.ppf(0.975, df) * se))
    assert result["verdict"] == "equivalent" and result["p_tost"] < 0.025, "the 95% interval inside the margin: TOST at 2.5% a side"
    summary = {"estimate": mean, "se": se, "df": df}
    assert equivalence_test(summary, margin=0.01)["p_tost"] == pytest.approx(result["p_tost"])


def test_tost_verdicts():
    assert equivalence_test([-0.05, -0.04, -0.06])["verdict"] == "different"
    assert equivalence_test([0.02, -0.02, 0.01])["verdict"] == "inconclusive"
    assert equivalence_test([0.02, -0.02, 0.01], margin=0.5)["verdict"] == "equivalent"
    small_but_real = equivalence_test([0.002, 0.0021, 0.0019, 0.002])
    assert small_but_real["excludes_zero"] and small_but_real["verdict"] == "different, within margin", "real, but inside the margin"
    assert equivalence_test([0.01])["verdict"].startswith("not testable")
    # the verdict agrees with the p-value: inside the margin iff p_tost < (1 - confidence) / 2
    for data in ([0.004, 0.009, 0.006], [0.004, 0.001, 0.006], [0.0, 0.0, 0.0]):
        result = equivalence_test(data)
        assert (result["verdict"] in ("equivalent", "different, within margin")) == (result["p_tost"] < 0.025)


@pytest.mark.parametrize("case", range(100))
def test_every_verdict_is_the_one_its_printed_interval_shows(case):
    """No row says "equivalent" (or anything else) that the interval printed beside it does not show."""
    rng = np.random.default_rng(case)
    seeds, margin = int(rng.integers(2, 6)), float(rng.choice([0.005, 0.01, 0.05]))
    accuracy = {"baseline/reference": list(rng.normal(0.9, 0.01, seeds))}
    for index in range(int(rng.integers(1, 6))):
        shift, spread = rng.normal(0, 0.02), rng.uniform(0.0005, 0.02)
        accuracy[f"noise/gauss-{index}"] = list(np.asarray(accuracy["baseline/reference"]) + shift + rng.normal(0, spread, seeds))
    table = compare_to_baseline(runs_table(make_runs(accuracy), _variants(accuracy)), margin=margin)
    for row in table.itertuples():
        assert row.equivalence == interval_verdict(row.diff_ci_low, row.diff_ci_high, margin)
        if row.equivalence == "equivalent":
            assert -margin < row.diff_ci_low <= 0 <= row.diff_ci_high < margin


def test_seeds_needed_grows_with_noise_and_shrinks_with_margin():
    by_sd = [seeds_needed(sd, 0.01) for sd in (0.0, 0.001, 0.003, 0.005, 0.01, 0.02, 0.05)]
    assert by_sd == sorted(by_sd) and by_sd[0] == 2 and by_sd[-1] > 100
    by_margin = [seeds_needed(0.01, margin) for margin in (0.002, 0.005, 0.01, 0.02, 0.05)]
    assert by_margin == sorted(by_margin, reverse=True)
    # standardised effect 1, two-sided 5%, power 80%: 10 pairs (the exact noncentral-t power)
    assert seeds_needed(0.01, 0.01) == 10
    power = [
        stats.nct.sf(stats.t.ppf(0.975, n - 1), n - 1, math.sqrt(n)) + stats.nct.cdf(-stats.t.ppf(0.975, n - 1), n - 1, math.sqrt(n))
        for n in (9, 10)
    ]
    assert power[0] < 0.8 <= power[1]
    assert seeds_needed(float("nan"), 0.01) is None
    with pytest.raises(ValueError):
        seeds_needed(0.01, 0.0)


# --- the dropout claim -------------------------------------------------------------------------


def _variants(accuracy: dict[str, list[float]]) -> list[dict]:
    """Minimal variant rows (family, variant, label, order) for `runs_table`."""
    return [{"family": k.split("/")[0], "variant": k.split("/")[1], "label": k, "order": i} for i, k in enumerate(accuracy)]


def _dropout_study(rates: list[float]) -> list[dict]:
    study = Study.from_config({"seeds": [1, 2, 3], "families": {"dropout": {"rates": rates}}})
    study.info = DatasetInfo("image", (28, 28))
    return study.variant_table()


@pytest.mark.parametrize(
    ("high", "expected"),
    [
        ([0.905, 0.915, 0.9105, 0.9095], "equivalent"),
        ([0.86, 0.87, 0.85, 0.88], "different"),
        ([0.89, 0.93, 0.90, 0.92], "inconclusive"),
    ],
)
def test_dropout_claim_is_an_equivalence_test(high, expected):
    variants = _dropout_study([0.0, 0.2, 0.8])
    accuracy = {"baseline/reference": [0.90, 0.92, 0.91, 0.91], "dropout/rate-0": [0.90, 0.92, 0.91, 0.91], "dropout/rate-0.2": [0.9] * 4}
    runs = runs_table(make_runs({**accuracy, "dropout/rate-0.8": high}), variants)
    finding = check_findings(runs, variants).set_index("claim").loc[DROPOUT_CLAIM]
    assert finding["verdict"] == expected
    assert finding["estimate"] == pytest.approx(np.mean(high) - 0.91)
    assert "margin +-0.01 " in finding["detail"] and "dropout 0.8" in finding["detail"] and "dropout 0)" in finding["detail"]
    assert finding["verdict"] == interval_verdict(finding["ci_low"], finding["ci_high"], 0.01), "read off the printed interval"
    wide = check_findings(runs, variants, margin=0.1).set_index("claim").loc[DROPOUT_CLAIM]
    assert "margin +-0.1 " in wide["detail"]


def test_dropout_claim_names_the_rate_it_tests():
    accuracy = {"baseline/reference": [0.90, 0.92, 0.91], "dropout/rate-0.2": [0.9] * 3, "dropout/rate-0.6": [0.90, 0.92, 0.91]}
    variants = _dropout_study([0.2, 0.6])
    finding = check_findings(runs_table(make_runs(accuracy), variants), variants).set_index("claim").loc[DROPOUT_CLAIM]
    assert "largest rate 0.6" in finding["detail"] and "the baseline" in finding["detail"]
    low_rates = _dropout_study([0.0, 0.2, 0.4])
    accuracy = {"baseline/reference": [0.9] * 3, "dropout/rate-0": [0.9] * 3, "dropout/rate-0.2": [0.9] * 3, "dropout/rate-0.4": [0.9] * 3}
    assert DROPOUT_CLAIM not in set(check_findings(runs_table(make_runs(accuracy), low_rates), low_rates)["claim"])
