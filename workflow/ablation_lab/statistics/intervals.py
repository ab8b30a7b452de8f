"""Intervals of statistics that are not a mean over seeds: a ratio of paired means, a rank correlation.

Part of the one place (`statistics/`) that decides every interval: `inference.py` holds the
means, paired differences, multiplicity and equivalence; this module the two estimators the
recovery and reliance analyses add, so `inference.py` stays within the size the architecture
test allows. Both keep the seeds as the unit of replication, as `inference.py` does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats


def ratio_interval(numerator: Sequence[float], denominator: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Ratio of two means paired by seed (a recovered share), with Fieller's interval at the seeds' S - 1 df.

    The interval is every r for which the paired t-test of numerator - r x denominator keeps
    r at `confidence` (scipy's ttest_rel inverted exactly): bounded only when the denominator's
    mean is itself distinguishable from 0, else NaN (no ratio can be excluded). Seed noise only.
    """
    n, d = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    keep = np.isfinite(n) & np.isfinite(d)
    n, d, seeds, nan = n[keep], d[keep], int(keep.sum()), float("nan")
    estimate = float(n.mean() / d.mean()) if seeds and d.mean() != 0 else nan
    if seeds < 2:
        return {"estimate": estimate, "low": nan, "high": nan, "seeds": seeds, "method": "fewer than 2 seeds: no interval"}
    t2 = float(stats.t.ppf(0.5 + confidence / 2, seeds - 1)) ** 2
    cov = np.cov(n, d) / seeds  # variances and covariance of the two means
    a, b, c = d.mean() ** 2 - t2 * cov[1, 1], n.mean() * d.mean() - t2 * cov[0, 1], n.mean() ** 2 - t2 * cov[0, 0]
    root = b * b - a * c
    low, high = ((b - math.sqrt(root)) / a, (b + math.sqrt(root)) / a) if a > 0 and root >= 0 else (nan, nan)
    method = f"Fieller, paired t over {seeds} seeds ({seeds - 1} df)" + ("" if a > 0 else "; unbounded: denominator not clear of 0")
    return {"estimate": estimate, "low": float(low), "high": float(high), "seeds": seeds, "method": method}


def spearman_interval(x: Sequence[float], y: Sequence[float], clusters: Sequence[Any], within: Sequence[Any] | None = None, *,
                      confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Spearman's rank correlation of x and y with a percentile bootstrap interval over `clusters` (models), then
    over `within` (seeds) inside each drawn cluster: points of one model and seed are resampled together, never alone."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    inner = list(zip(clusters, within if within is not None else [0] * len(x), strict=True))
    groups: dict[Any, dict[Any, list[int]]] = {}
    for index, (outer, sub) in enumerate(inner):
        groups.setdefault(outer, {}).setdefault(sub, []).append(index)
    out = {"estimate": float(stats.spearmanr(x, y).statistic) if len(x) > 2 else float("nan"), "n": len(x), "clusters": len(groups)}
    if len(groups) < 2 or not np.isfinite(out["estimate"]):
        return out | {"low": float("nan"), "high": float("nan"), "method": f"Spearman over {len(x)} points; no interval (< 2 clusters)"}
    rng, keys, draws = np.random.default_rng(seed), list(groups), []
    for _ in range(n_boot):
        subs = [list(groups[keys[k]].values()) for k in rng.integers(0, len(keys), len(keys))]
        rows = np.concatenate([sub[j] for sub in subs for j in rng.integers(0, len(sub), len(sub))])
        draws.append(stats.spearmanr(x[rows], y[rows]).statistic if np.ptp(x[rows]) > 0 and np.ptp(y[rows]) > 0 else np.nan)
    low, high = np.nanpercentile(draws, [50 * (1 - confidence), 50 * (1 + confidence)])
    method = f"Spearman over {len(x)} points; percentile bootstrap ({n_boot}) over {len(groups)} clusters, then within each"
    return out | {"low": float(low), "high": float(high), "method": method}


def share_interval(numerator: Sequence[float], denominator: Sequence[float], numerator_examples: np.ndarray | None = None,
                   denominator_examples: np.ndarray | None = None, *, confidence: float = 0.95, n_boot: int = 2000,
                   seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Ratio of two means over seeds and test examples (a repaired share: self-repair / direct effect), delta method.

    r = mean(numerator) / mean(denominator); its error is that of the mean of (numerator - r x denominator) /
    mean(denominator), per seed and, given per-example values (seeds x n_test, rows as the seeds), per test example,
    through `inference.mean_interval` (seed noise at S - 1 df plus the test-set bootstrap, examples resampled for
    every seed at once). Undefined (NaN interval) when the denominator's own interval includes 0: no ratio is excluded.
    """
    from ablation_lab.statistics.inference import mean_interval

    n, d = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    keep = np.isfinite(n) & np.isfinite(d)
    n_ex = None if numerator_examples is None else np.asarray(numerator_examples, dtype=float)[keep]
    d_ex = None if denominator_examples is None else np.asarray(denominator_examples, dtype=float)[keep]
    n, d, seeds, nan = n[keep], d[keep], int(keep.sum()), float("nan")
    estimate = float(n.mean() / d.mean()) if seeds and d.mean() != 0 else nan
    out = {"estimate": estimate, "low": nan, "high": nan, "seeds": seeds}
    if seeds < 2:
        return out | {"method": "fewer than 2 seeds: no interval"}
    below = mean_interval(d, hits=d_ex, bounds=None, confidence=confidence, n_boot=n_boot, seed=seed)
    if not (below["low"] > 0 or below["high"] < 0):
        return out | {"method": "n/a: the denominator's interval includes 0"}
    scale = d.mean()
    linear = mean_interval((n - estimate * d) / scale, hits=None if n_ex is None or d_ex is None else (n_ex - estimate * d_ex) / scale,
                           bounds=None, confidence=confidence, n_boot=n_boot, seed=seed)  # fmt: skip
    half = linear["high"] - linear["estimate"]
    return out | {"low": estimate - half, "high": estimate + half, "method": "delta method; " + linear["method"]}
