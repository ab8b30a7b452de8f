"""Two studies side by side: matched and unmatched variants, and the difference of differences.

The tables are made here, so every expected number is computed by hand (or by scipy) from the
runs the test wrote; `load_results` is tested on a study that has not run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ablation_lab.config import ConfigError, validate_config
from ablation_lab.report.compare import StudyResults, compare_table, load_results, render
from ablation_lab.statistics.inference import interval_verdict
from ablation_lab.statistics.tables import difference_of_differences
from scipy import stats

SEEDS = [1, 2, 3, 4]


def runs(effects: dict[tuple[str, str], list[float]], base: list[float]) -> pd.DataFrame:
    rows = [{"family": "baseline", "variant": "reference", "seed": s, "accuracy": a} for s, a in zip(SEEDS, base, strict=True)]
    for (family, variant), values in effects.items():
        rows += [{"family": family, "variant": variant, "seed": s, "accuracy": a} for s, a in zip(SEEDS, values, strict=True)]
    return pd.DataFrame(rows)


RUNS_A = runs(
    {("dropout", "rate-0.5"): [0.80, 0.82, 0.79, 0.81], ("dropout", "rate-0.2"): [0.90, 0.90, 0.91, 0.90]}, [0.90, 0.91, 0.90, 0.92]
)
RUNS_B = runs({("dropout", "rate-0.5"): [0.85, 0.88, 0.86, 0.86], ("noise", "gauss-0.3"): [0.7, 0.7, 0.7, 0.7]}, [0.91, 0.90, 0.92, 0.91])


def test_the_difference_of_differences_is_a_paired_t_over_the_shared_seeds():
    table = difference_of_differences(RUNS_A, RUNS_B, [("dropout", "rate-0.5")])
    a = np.array([0.80, 0.82, 0.79, 0.81]) - np.array([0.90, 0.91, 0.90, 0.92])
    b = np.array([0.85, 0.88, 0.86, 0.86]) - np.array([0.91, 0.90, 0.92, 0.91])
    dd = a - b
    low, high = stats.t.interval(0.95, len(dd) - 1, loc=dd.mean(), scale=stats.sem(dd))
    row = table.iloc[0]
    assert row["dd"] == pytest.approx(dd.mean()) and row["pairs"] == 4
    assert (row["dd_ci_low"], row["dd_ci_high"]) == pytest.approx((low, high))  # one variant: Holm leaves it at 95%
    assert row["equivalence"] == interval_verdict(low, high, 0.01)  # read off the printed interval


def test_hit_vectors_add_test_noise_and_never_narrow_the_interval():
    rng = np.random.default_rng(0)
    keys = [("baseline", "reference"), ("dropout", "rate-0.5")]
    hits_a = {(*k, s): rng.random(200) < 0.85 for k in keys for s in SEEDS}
    hits_b = {(*k, s): rng.random(200) < 0.85 for k in keys for s in SEEDS}
    plain = difference_of_differences(RUNS_A, RUNS_B, [keys[1]]).iloc[0]
    noisy = difference_of_differences(RUNS_A, RUNS_B, [keys[1]], hits_a=hits_a, hits_b=hits_b).iloc[0]
    assert noisy["dd"] == pytest.approx(plain["dd"])
    assert noisy["dd_ci_high"] - noisy["dd_ci_low"] > plain["dd_ci_high"] - plain["dd_ci_low"]
    assert "bootstrap" in noisy["method"]


def results(name: str, table: pd.DataFrame, data_key: str = "mnist5k-aaaa") -> StudyResults:
    from ablation_lab.statistics.tables import compare_to_baseline

    config = validate_config({"study": name, "seeds": SEEDS})
    return StudyResults(config, data_key, table, compare_to_baseline(table), None)


def test_the_page_matches_variants_and_lists_the_unmatched_ones():
    a, b = results("before", RUNS_A), results("after", RUNS_B)
    table = compare_table(a, b)
    assert dict(zip(table["variant"], table["in"], strict=True)) == {
        "rate-0.5": "both",
        "rate-0.2": "only before",
        "gauss-0.3": "only after",
    }
    matched = table[table["in"] == "both"].iloc[0]
    printed = a.comparisons.set_index("variant").loc["rate-0.5"]
    assert (matched["a_low"], matched["a_high"], matched["a_verdict"]) == (
        printed["diff_ci_low"],
        printed["diff_ci_high"],
        printed["equivalence"],
    )
    assert np.isfinite(matched["dd"]) and matched["dd_verdict"]
    page = render(a, b, table)
    assert "Variants in both studies" in page and "gauss-0.3" in page and "only after" in page
    assert "paired by seed and test example" in page


def test_studies_on_different_data_get_no_difference_of_differences():
    a, b = results("mnist", RUNS_A, "mnist5k-aaaa"), results("digits", RUNS_B, "digits-bbbb")
    table = compare_table(a, b)
    assert "dd" not in table
    page = render(a, b, table)
    assert "No difference of differences: they split different data" in page


def test_a_study_that_has_not_run_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"study 'never-run' \(never.yaml\) has no .*runs.csv: run it first"):
        load_results(validate_config({"study": "never-run", "seeds": [1], "dataset": {"name": "digits"}}), "never.yaml")


def test_a_study_compared_with_itself_is_one_line_before_anything_is_read(tmp_path, monkeypatch):
    from ablation_lab.report.compare import compare

    monkeypatch.chdir(tmp_path)  # no tables here: the refusal comes before any is read
    config = validate_config({"study": "same", "seeds": [1], "dataset": {"name": "digits"}})
    with pytest.raises(ConfigError, match=r"same.yaml is compared with itself"):
        compare(config, "same.yaml", config, "./same.yaml")
