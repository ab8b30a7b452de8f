"""Every interval and test of the study: seed noise plus test-sample noise, Holm, equivalence, seeds needed (see statistics/__init__.py)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

RUN_KEYS = ["family", "variant", "seed"]
REFERENCE = "reference"  # the baseline family's only variant
BOUNDED_METRICS = ("accuracy", "error_rate", "macro_f1")  # metrics that live in [0, 1]
HIT_METRICS = ("accuracy", "error_rate")  # metrics that are a mean of per-example hits (or misses)

Hits = Mapping[tuple[str, str, Any], np.ndarray]  # (family, variant, seed) -> boolean hit vector over the test split


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided t-interval; the interval is NaN with fewer than two finite values.

    Plain and unbounded on purpose (curves such as the compensation gap use it); accuracies
    go through `mean_interval`, which bounds them and can add the test-sample noise.
    """
    data = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if len(data) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(data.mean())
    if len(data) < 2:
        return mean, float("nan"), float("nan")
    if np.all(data == data[0]):
        return mean, mean, mean
    low, high = stats.t.interval(confidence, len(data) - 1, loc=mean, scale=stats.sem(data))
    return mean, float(low), float(high)


# --- proportions: exact binomial intervals ------------------------------------------------


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of a proportion k/n from n independent trials (scipy's binomtest)."""
    if n <= 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def clustered_clopper_pearson(k: Sequence[float], n: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """A proportion pooled over clusters of trials that are not independent within a cluster, with its exact interval.

    A fault map is scored on every test example: examples under one map share its fault, so
    the map is the independent unit, not the example. Korn & Graubard (1998): the
    Clopper-Pearson interval at the effective sample size n_eff = p(1-p) / var(p), var(p)
    the ratio estimator's variance between clusters (at most the n trials: clustering never
    adds information; exactly `clopper_pearson` when the clusters agree as independent
    trials would). `n_eff` is returned so a report can say what width the campaign bought.
    """
    k_arr, n_arr = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    total_k, total_n, clusters = float(k_arr.sum()), float(n_arr.sum()), len(k_arr)
    if total_n <= 0:
        return {"estimate": float("nan"), "low": float("nan"), "high": float("nan"), "n_eff": 0.0}
    p = total_k / total_n
    n_eff = total_n
    if clusters > 1 and 0 < p < 1:
        residual = k_arr - p * n_arr  # ratio estimator: var(p) = sum(residual^2) / (nbar^2 m (m-1))
        variance = float((residual**2).sum()) / ((total_n / clusters) ** 2 * clusters * (clusters - 1))
        n_eff = min(total_n, p * (1 - p) / variance) if variance > 0 else total_n
    if n_eff == total_n:
        low, high = clopper_pearson(round(total_k), round(total_n), confidence)
    else:  # the exact interval's beta quantiles, at non-integer effective counts
        alpha, k_eff = 1 - confidence, p * n_eff
        low = float(stats.beta.ppf(alpha / 2, k_eff, n_eff - k_eff + 1)) if k_eff > 0 else 0.0
        high = float(stats.beta.ppf(1 - alpha / 2, k_eff + 1, n_eff - k_eff)) if k_eff < n_eff else 1.0
    return {"estimate": p, "low": low, "high": high, "n_eff": n_eff}


# --- seed noise + test-sample noise -------------------------------------------------------


def bootstrap_variance(per_example: Sequence[float] | np.ndarray, n_boot: int = 2000, seed: int = 0) -> float:
    """Bootstrap variance, over test examples, of the mean of `per_example`.

    `per_example[i]` is what example i contributes to the estimate (for a difference of
    accuracies: the variant's hit rate on i over seeds minus the baseline's). Resampling an
    example resamples it for every seed and for both sides at once, so the bootstrap is paired
    and keeps the correlation between models scored on the same examples; two models that are
    right on the same examples have zero test-sample variance. Its expectation is the plug-in
    var(per_example) / n; the bootstrap is kept because it is the same machinery for any
    per-example statistic. Seeded, so tables are reproducible.
    """
    values = np.asarray(per_example, dtype=float)
    n = len(values)
    if n < 2 or np.all(values == values[0]):
        return 0.0
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // n)  # bound the index matrix to ~8 MB
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        means[start : start + size] = values[rng.integers(0, n, size=(size, n), dtype=np.int32)].mean(axis=1)
    return float(means.var(ddof=1))


def _bounded(low: float, high: float, bounds: tuple[float, float] | None) -> tuple[float, float]:
    """Clip an interval to the range the quantity can take (coverage can only grow)."""
    if bounds is None or not np.isfinite(low):
        return low, high
    return float(np.clip(low, *bounds)), float(np.clip(high, *bounds))


def _interval(estimate: float, se: float, df: float, confidence: float, bounds: tuple[float, float] | None = None) -> tuple[float, float]:
    """Two-sided t-interval from an estimate, its standard error and degrees of freedom."""
    if not (np.isfinite(se) and np.isfinite(estimate)) or not confidence > 0:
        return float("nan"), float("nan")
    half = 0.0 if se == 0 else float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    return _bounded(estimate - half, estimate + half, bounds)


def _p_value(estimate: float, se: float, df: float) -> float:
    """Two-sided p-value of estimate = 0; zero spread is the t-test's limit (p 0, or 1 at exactly 0)."""
    if not (np.isfinite(se) and np.isfinite(estimate)):
        return float("nan")
    if se == 0:
        return 1.0 if estimate == 0 else 0.0
    return float(2 * stats.t.sf(abs(estimate) / se, df))


def _seeds_and_test(
    per_seed: np.ndarray,
    per_example: np.ndarray | None,
    *,
    confidence: float,
    bounds: tuple[float, float] | None,
    n_boot: int,
    seed: int,
    name: str,
) -> dict[str, Any]:
    """Mean of `per_seed` with an interval covering seed noise and, given `per_example`, test-sample noise.

    Variance of the mean = var_seed + var_test, with var_seed = sd(per_seed)^2 / S: seed noise
    is how much the estimate moves with the training seed on this test split, test noise how
    much it would move on another split drawn like it; the two are added as independent. The
    seed-by-example interaction (seeds disagreeing on the same example) shows up in both.

    Degrees of freedom: S - 1, the seeds', whatever the test noise. The interval is then
    t(S-1) x sqrt(var_seed + var_test), never narrower than the t-interval over seeds alone
    (t(S-1) x sqrt(var_seed), scipy's ttest_rel for paired differences): adding a source of
    noise never narrows an interval. Welch-Satterthwaite df, used before, treated the bootstrap
    variance as known to within n_test - 1 df, so a second variance term raised the df (2 -> ~8
    with 3 seeds), dropped the t quantile (4.30 -> ~2.3) and gave a narrower interval than the
    seeds alone in most comparisons (docs/statistics.md). With seeds that happen to agree
    (var_seed = 0) the test noise still gives a non-zero width, at the seeds' df.
    """
    values = np.asarray(per_seed, dtype=float)
    n_seeds = len(values)
    nan = float("nan")
    out: dict[str, Any] = {"estimate": nan, "low": nan, "high": nan, "p_value": nan, "se": nan, "df": nan}
    out |= {"seeds": n_seeds, "sd": nan, "var_seed": nan, "var_test": nan, "confidence": confidence}
    if n_seeds == 0:
        return {**out, "method": "no runs"}
    out["estimate"] = float(values.mean())
    if n_seeds < 2:
        return {**out, "method": "1 seed: no interval (seed noise unknown)"}
    sd = float(values.std(ddof=1))
    var_seed = sd**2 / n_seeds
    df = float(n_seeds - 1)  # the seeds', whatever the test noise (see above)
    method = f"{name} over {n_seeds} seeds ({n_seeds - 1} df)"
    if per_example is None:
        var_test = 0.0
        method += "; seed noise only (no hit vectors)"
    else:
        var_test = bootstrap_variance(per_example, n_boot, seed)
        method += f" + test-set bootstrap ({n_boot} resamples of {len(per_example)} examples)"
    if bounds is not None:
        method += f", clipped to [{bounds[0]:g}, {bounds[1]:g}]"
    if var_seed == 0:
        method += "; no spread across seeds"
    se = math.sqrt(var_seed + var_test)
    low, high = _interval(out["estimate"], se, df, confidence, bounds)
    p_value = _p_value(out["estimate"], se, df)
    return {**out, "low": low, "high": high, "p_value": p_value, "se": se, "df": df, "sd": sd, "var_seed": var_seed} | {
        "var_test": var_test,
        "method": method,
    }


def _hit_matrix(hits: np.ndarray | Sequence[Sequence[bool]] | None, rows: int, name: str) -> np.ndarray | None:
    if hits is None:
        return None
    matrix = np.asarray(hits, dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] != rows:
        raise ValueError(f"{name}: expected (seeds, n_test) = ({rows}, n), got shape {matrix.shape}")
    return matrix


def mean_interval(
    values: Sequence[float],
    *,
    hits: np.ndarray | Sequence[Sequence[bool]] | None = None,
    confidence: float = 0.95,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean of a metric over seeds with an interval clipped to `bounds` (accuracy: [0, 1]).

    `hits` (seeds x n_test, rows aligned with `values`) adds the test-sample noise by a
    bootstrap over test examples; see `_seeds_and_test` for how the two noises combine. Chosen
    over a Wilson interval because Wilson treats the S x n_test predictions as independent
    trials, while every seed is scored on the same examples (their errors are correlated) and
    the seed noise must be added anyway. Without hits: the t-interval over seeds, clipped; with
    2 seeds it is very wide (1 df), and the method string says so. Non-finite (diverged) runs
    are left out, with their rows of `hits`.
    """
    data = np.asarray(values, dtype=float)
    keep = np.isfinite(data)
    matrix = _hit_matrix(hits, len(data), "hits")
    per_example = None if matrix is None else matrix[keep].mean(axis=0) if keep.any() else None
    return _seeds_and_test(data[keep], per_example, confidence=confidence, bounds=bounds, n_boot=n_boot, seed=seed, name="t")


def paired_difference(
    variant: Sequence[float],
    baseline: Sequence[float],
    *,
    variant_hits: np.ndarray | Sequence[Sequence[bool]] | None = None,
    baseline_hits: np.ndarray | Sequence[Sequence[bool]] | None = None,
    confidence: float = 0.95,
    bounds: tuple[float, float] | None = (-1.0, 1.0),
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Variant minus baseline, paired by seed (same position = same seed), from this pair's runs only.

    Returns a dict: `estimate` (mean paired difference), `low`/`high` (interval at
    `confidence`, clipped to `bounds`), `p_value` (two-sided, difference = 0), `method`, and
    what adjusted intervals and equivalence tests need: `se`, `df`, `seeds` (pairs used), `sd`
    (sd of the paired differences), `var_seed` (sd^2 / seeds) and `var_test` (test-sample
    variance of the estimate; 0 without hits), `confidence`.

    With 3+ seeds and no hit vectors this is the paired t-test (scipy's ttest_rel). Nothing
    is pooled with other variants, so a noisy variant gets the wide interval it has earned.
    Given the per-seed hit vectors of both on the same test examples (seeds x n_test), the
    test-sample noise of the mean difference is added from a paired bootstrap over examples:
    with 2 seeds (1 df) the seed part alone is useless, and the test part keeps an interval
    from collapsing to zero width when the two seeds agree. Pairs with a non-finite side
    (a diverged run) are dropped with their hit rows.
    """
    a, b = np.asarray(variant, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"variant and baseline need one value per seed each: {a.shape} vs {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    hits_a = _hit_matrix(variant_hits, len(a), "variant_hits")
    hits_b = _hit_matrix(baseline_hits, len(b), "baseline_hits")
    per_example = None
    if hits_a is not None and hits_b is not None and keep.any():
        if hits_a.shape != hits_b.shape:
            raise ValueError(f"hit vectors must cover the same test examples: {hits_a.shape} vs {hits_b.shape}")
        per_example = hits_a[keep].mean(axis=0) - hits_b[keep].mean(axis=0)
    return _seeds_and_test(a[keep] - b[keep], per_example, confidence=confidence, bounds=bounds, n_boot=n_boot, seed=seed, name="paired t")


def paired_contrast(
    runs: pd.DataFrame,
    weights: Mapping[tuple[str, str], float],
    metric: str = "accuracy",
    *,
    hits: Hits | None = None,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """A contrast of variants (`weights` keyed by (family, variant)), paired by seed: `paired_difference` for k variants.

    Per seed, the contrast of that seed's runs; seeds where a weighted variant has no finite
    run are left out. Hit vectors are used when `metric` is a mean of hits and every run used
    has one. Same dict as `paired_difference`.
    """
    keys = list(weights)
    chosen = runs[[(f, v) in weights for f, v in zip(runs["family"], runs["variant"], strict=True)]]
    table = chosen.pivot_table(index=["family", "variant"], columns="seed", values=metric, dropna=False, aggfunc="first")
    table = table.reindex(pd.MultiIndex.from_tuples(keys, names=["family", "variant"]))
    complete = [s for s in table.columns if table[s].notna().all()]
    coef = np.array([weights[k] for k in keys], dtype=float)
    per_seed = coef @ table[complete].to_numpy(dtype=float) if complete else np.array([])
    per_example, note = None, ""
    if hits is not None and complete:
        if metric not in HIT_METRICS:
            note = f"; hit vectors ignored ({metric} is not a mean of hits)"
        elif all((*k, s) in hits for k in keys for s in complete):
            rates = [np.mean([np.asarray(hits[(*k, s)], dtype=float) for s in complete], axis=0) for k in keys]
            if metric == "error_rate":  # an error is a miss
                rates = [1.0 - rate for rate in rates]
            per_example = sum(w * rate for w, rate in zip(coef, rates, strict=True))
        else:
            note = "; some hit vectors missing"
    bounds = (float(coef[coef < 0].sum()), float(coef[coef > 0].sum())) if metric in BOUNDED_METRICS else None
    result = _seeds_and_test(per_seed, per_example, confidence=confidence, bounds=bounds, n_boot=n_boot, seed=seed, name="paired t")
    return {**result, "method": result["method"] + note}


# --- multiplicity -------------------------------------------------------------------------


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN)."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m, running = len(order), 0.0
    for rank, index in enumerate(order):
        running = max(running, (m - rank) * p[index])
        adjusted[index] = min(1.0, running)
    return adjusted


def holm_levels(pvalues: Sequence[float], alpha: float = 0.05) -> np.ndarray:
    """Confidence level of each comparison's step-down (Holm) interval; NaN where p is NaN.

    The comparison at Holm step r (1 = smallest p, m finite p-values) gets level
    1 - alpha/(m - r + 1), the Bonferroni level of its step, while Holm keeps rejecting; from the
    first step Holm does not reject, every later comparison gets that step's level. The
    intervals then agree with the Holm decisions at `alpha` exactly (one excludes 0 iff its
    Holm-adjusted p < alpha), never narrower than unadjusted, never wider than Bonferroni at
    alpha/m. Chosen over Bonferroni intervals, which are simultaneous but would contradict
    Holm p-values (p_holm < alpha with an interval across 0); note that these are not strictly
    simultaneous intervals (Holm-compatible simultaneous intervals, Strassburger & Bretz 2008,
    shrink to the bound 0 for every rejected comparison and so say nothing about its size).
    """
    p = np.asarray(pvalues, dtype=float)
    levels = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]  # the same order as `holm`
    m, rejecting, divisor = len(order), True, 1
    for rank, index in enumerate(order):
        if rejecting:
            divisor = m - rank
            rejecting = divisor * p[index] < alpha
        levels[index] = 1 - alpha / divisor
    return levels


def adjusted_intervals(
    estimates: Sequence[float],
    ses: Sequence[float],
    dfs: Sequence[float],
    pvalues: Sequence[float],
    alpha: float = 0.05,
    bounds: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Holm-adjusted p-values with the step-down intervals that match them (see `holm_levels`).

    Columns: `low`, `high` (adjusted interval), `p_holm`, `level` (the interval's confidence).
    `pvalues` must be the two-sided t p-values of the same estimates, ses and dfs.
    """
    levels = holm_levels(pvalues, alpha)
    intervals = [_interval(e, s, d, c, bounds) for e, s, d, c in zip(estimates, ses, dfs, levels, strict=True)]
    low, high = zip(*intervals, strict=True) if intervals else ((), ())
    return pd.DataFrame({"low": list(low), "high": list(high), "p_holm": holm(pvalues), "level": levels})


# --- "no effect" and "how many seeds" ----------------------------------------------------


# The four outcomes of testing a difference against zero and against an equivalence margin
# together (Lakens 2017, 2018), each read off one interval: the one printed beside it.
EQUIVALENT = "equivalent"  # the interval lies within (-margin, +margin) and contains 0
NEGLIGIBLE = "different, within margin"  # it excludes 0 and lies within the margin: real but negligible
DIFFERENT = "different"  # it excludes 0 and reaches beyond the margin
INCONCLUSIVE = "inconclusive"  # it contains 0 and reaches beyond the margin: more seeds or examples
NOT_TESTABLE = "not testable (needs 2+ seeds)"
VERDICTS = (EQUIVALENT, NEGLIGIBLE, DIFFERENT, INCONCLUSIVE)


def against_zero_and_margin(low: float, high: float, margin: float) -> tuple[bool, bool]:
    """(the interval excludes 0, the interval lies inside (-margin, +margin))."""
    return bool(low > 0 or high < 0), bool(-margin < low and high < margin)


def interval_verdict(low: float, high: float, margin: float) -> str:
    """Which of the four outcomes an interval shows, against 0 and against +-`margin`."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return NOT_TESTABLE
    excludes_zero, within_margin = against_zero_and_margin(low, high, margin)
    if within_margin:
        return NEGLIGIBLE if excludes_zero else EQUIVALENT
    return DIFFERENT if excludes_zero else INCONCLUSIVE


def equivalence_test(
    data: Sequence[float] | Mapping[str, Any],
    margin: float = 0.01,
    alpha: float = 0.05,
    *,
    confidence: float | None = None,
) -> dict[str, Any]:
    """Is the difference zero, within +-margin, both or neither? `data`: paired differences, or a `paired_difference` dict.

    Decided on one two-sided interval, at `confidence` (default 1 - alpha; a family of
    comparisons passes its Holm level, so equivalence is adjusted as the differences are):
    `interval_verdict` reads the four outcomes off it, and that interval is what the tables
    print beside the verdict. An interval at level c inside (-margin, +margin) is the two
    one-sided tests (TOST) each at (1 - c) / 2: stricter than the usual TOST at alpha with a
    (1 - 2 alpha) interval, and in exchange the difference and the equivalence verdicts can
    never disagree with the printed interval. `p_tost` (max of the one-sided p-values
    p_lower, H0: difference <= -margin, and p_upper, H0: difference >= +margin) is reported
    unadjusted; equivalence holds iff p_tost < (1 - c) / 2.
    """
    if isinstance(data, Mapping):
        estimate, se, df = float(data["estimate"]), float(data["se"]), float(data["df"])
    else:
        values = np.asarray([v for v in data if np.isfinite(v)], dtype=float)
        estimate = float(values.mean()) if len(values) else float("nan")
        se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")
        df = float(len(values) - 1)
    level = confidence if confidence is not None else 1 - alpha
    nan = float("nan")
    out: dict[str, Any] = {"estimate": estimate, "margin": margin, "confidence": level, "p_tost": nan, "p_lower": nan, "p_upper": nan}
    out |= {"low": nan, "high": nan, "within_margin": False, "excludes_zero": False}
    if not (np.isfinite(se) and np.isfinite(estimate)):
        return {**out, "verdict": NOT_TESTABLE}
    if se == 0:  # the limit of the t-tests: certain on the right side of a bound, else no evidence
        p_lower, p_upper = (0.0 if estimate > -margin else 1.0), (0.0 if estimate < margin else 1.0)
    else:
        p_lower = float(stats.t.sf((estimate + margin) / se, df))
        p_upper = float(stats.t.cdf((estimate - margin) / se, df))
    low, high = _interval(estimate, se, df, level)
    excludes_zero, within_margin = against_zero_and_margin(low, high, margin)
    return out | {
        "p_tost": max(p_lower, p_upper),
        "p_lower": p_lower,
        "p_upper": p_upper,
        "low": low,
        "high": high,
        "within_margin": within_margin,
        "excludes_zero": excludes_zero,
        "verdict": interval_verdict(low, high, margin),
    }


def _power(n: int, effect: float, alpha: float) -> float:
    """Power of the two-sided paired t-test with n seeds at standardised effect `effect` (noncentral t)."""
    df, shift = n - 1, effect * math.sqrt(n)
    critical = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift))


def seeds_needed(
    sd_of_paired_differences: float, margin: float, alpha: float = 0.05, power: float = 0.8, max_seeds: int = 100_000
) -> int | None:
    """Smallest number of seeds whose paired t-test detects a true difference of `margin` with `power`.

    Exact power of the two-sided paired t-test (noncentral t), not the normal approximation,
    which undercounts when seeds are few, the very case this advice is for. Nondecreasing in
    the sd, nonincreasing in the margin; at least 2 (no interval below that); None when the sd
    is unknown (fewer than 2 seeds). Counts seed noise only: the test-sample part of the
    variance (`var_test`) does not shrink with more seeds.
    """
    if margin <= 0:
        raise ValueError(f"margin must be positive, got {margin}")
    if not np.isfinite(sd_of_paired_differences) or sd_of_paired_differences < 0:
        return None
    if sd_of_paired_differences == 0:
        return 2
    effect = margin / sd_of_paired_differences
    normal = ((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) / effect) ** 2
    low, high = 1, max(3, math.ceil(normal) + 2)  # power(low) < power (n=1 cannot test), power(high) >= power once found
    while _power(high, effect, alpha) < power:
        if high >= max_seeds:
            return max_seeds
        low, high = high, min(2 * high, max_seeds)
    while high - low > 1:  # power grows with n: bisect
        middle = (low + high) // 2
        low, high = (low, middle) if _power(middle, effect, alpha) >= power else (middle, high)
    return max(2, high)
