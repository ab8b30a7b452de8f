"""The compensation gap's intervals come from the statistics module, as the comparisons' do."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ablation_lab.analyses.compensation import _trapezoid_weights, compensation_table
from ablation_lab.analyses.knockout import KnockoutParams
from ablation_lab.statistics.inference import paired_difference

LEVELS = {"gauss-0.2": 0.2, "gauss-0.5": 0.5, "gauss-0.9": 0.9}
SEEDS = [1, 2]


def study(rng: np.random.Generator, n_test: int = 400) -> tuple[pd.DataFrame, dict, list[dict]]:
    """Noise retrained vs noise at test time only: per-seed hit vectors and the accuracies they give."""
    hits, rows, variants = {}, [], []
    for name, level in LEVELS.items():
        for family, rate in (("noise", 0.9 - 0.2 * level), ("noise_posthoc", 0.9 - 0.6 * level)):
            variants.append({"family": family, "variant": name, "label": f"gaussian {level:g}", "coords": {"noise level": level}})
            for seed in SEEDS:
                hit = rng.random(n_test) < rate
                hits[family, name, seed] = hit
                rows.append({"family": family, "variant": name, "seed": seed, "accuracy": hit.mean()})
    return pd.DataFrame(rows), hits, variants


def test_a_points_gap_interval_is_the_paired_bootstrap_of_the_comparisons():
    runs, hits, variants = study(np.random.default_rng(0))
    table = compensation_table(runs, None, variants, KnockoutParams.of({"layers": [], "fills": ["zero"]}), hits=hits).set_index("point")
    side = runs.set_index(["family", "variant", "seed"])["accuracy"]
    expected = paired_difference(
        [side["noise", "gauss-0.5", s] for s in SEEDS],
        [side["noise_posthoc", "gauss-0.5", s] for s in SEEDS],
        variant_hits=[hits["noise", "gauss-0.5", s] for s in SEEDS],
        baseline_hits=[hits["noise_posthoc", "gauss-0.5", s] for s in SEEDS],
    )
    row = table.loc["gauss-0.5"]
    assert (row["gap"], row["gap_ci_low"], row["gap_ci_high"]) == pytest.approx((expected["estimate"], expected["low"], expected["high"]))
    assert "test-set bootstrap" in row["method"]
    seed_only = (
        compensation_table(runs, None, variants, KnockoutParams.of({"layers": [], "fills": ["zero"]})).set_index("point").loc["gauss-0.5"]
    )
    assert "seed noise only" in seed_only["method"] and seed_only["gap"] == pytest.approx(row["gap"])


def test_the_area_is_the_trapezoid_mean_of_the_gaps_with_the_same_interval_method():
    xs = np.array([0.5, 0.0, 0.2, 0.9])
    ys = np.array([0.3, 0.1, 0.25, 0.05])
    order = np.argsort(xs)
    assert _trapezoid_weights(xs) @ ys == pytest.approx(np.trapezoid(ys[order], xs[order]) / 0.9)
    assert _trapezoid_weights(np.array([np.nan, np.nan])).tolist() == [0.5, 0.5]
    runs, hits, variants = study(np.random.default_rng(1))
    table = compensation_table(runs, None, variants, KnockoutParams.of({"layers": [], "fills": ["zero"]}), hits=hits).set_index("point")
    points = table.drop(index="area")
    per_seed = []
    for seed in SEEDS:
        side = runs[runs["seed"] == seed].set_index(["family", "variant"])["accuracy"]
        gaps = np.array([side["noise", v] - side["noise_posthoc", v] for v in LEVELS])
        per_seed.append(np.trapezoid(gaps, list(LEVELS.values())) / (0.9 - 0.2))
    area = table.loc["area"]
    assert area["gap"] == pytest.approx(np.mean(per_seed))
    assert area["gap_ci_low"] < area["gap"] < area["gap_ci_high"] and "test-set bootstrap" in area["method"]
    assert len(points) == 3


def test_the_knocked_out_side_has_no_hit_vectors_and_says_its_interval_is_seed_noise_only():
    variants = [{"family": "units", "variant": "frac-0.5", "label": "50% fewer units", "coords": {"fraction removed": 0.5}}]
    runs = pd.DataFrame({"family": "units", "variant": "frac-0.5", "seed": [1, 2, 3], "accuracy": [0.90, 0.91, 0.89]})
    knockout = pd.DataFrame(
        {
            "family": "baseline",
            "layer": "hidden_1",
            "ordering": "random",
            "fill": "zero",
            "metric": "accuracy",
            "fraction": 0.5,
            "seed": [1, 1, 2, 2, 3, 3],
            "draw": [0, 1] * 3,
            "value": [0.80, 0.82, 0.70, 0.74, 0.78, 0.80],
        }
    )
    hits = {("units", "frac-0.5", s): np.ones(10, bool) for s in (1, 2, 3)}
    row = (
        compensation_table(runs, knockout, variants, KnockoutParams.of({"layers": [1], "fills": ["zero"]}), hits=hits)
        .set_index("point")
        .loc["frac-0.5"]
    )
    gaps = np.array([0.90 - 0.81, 0.91 - 0.72, 0.89 - 0.79])
    assert row["posthoc"] == pytest.approx(np.mean([0.81, 0.72, 0.79])) and row["gap"] == pytest.approx(gaps.mean())
    expected = paired_difference([0.90, 0.91, 0.89], [0.81, 0.72, 0.79])
    assert (row["gap_ci_low"], row["gap_ci_high"]) == pytest.approx((expected["low"], expected["high"]))
    assert "seed noise only" in row["method"]


def test_the_gap_is_described_by_what_was_measured_on_this_model():
    """No "post-hoc effects are lower bounds" as a fact: a one-hidden-layer MLP has nothing downstream to repair."""
    from ablation_lab.analyses.compensation import what_the_gap_measures

    shallow = {"model": {"hidden_units": [128]}, "posthoc": {"layers": [], "fills": ["zero"]}}
    said = " ".join(what_the_gap_measures(shallow, {"units", "noise"}))
    assert "feeds the output layer directly" in said and "zero fill" in said and "overstate" in said
    assert "train/test mismatch" in said and "lower bound" not in said
    deep = {"model": {"hidden_units": [64, 64, 64]}, "posthoc": {"layers": [1], "fills": ["mean"]}}
    said = " ".join(what_the_gap_measures(deep, {"units"}))
    assert "2 hidden layer(s) follow hidden_1" in said and "not measured here" in said and "train/test" not in said
    assert what_the_gap_measures(deep, {"input"}) == []
