"""The study's statistics tables: each variant's intervals and its paired comparison with the baseline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ablation_lab.ablations import BASELINE
from ablation_lab.statistics.inference import (
    BOUNDED_METRICS,
    HIT_METRICS,
    REFERENCE,
    RUN_KEYS,
    Hits,
    adjusted_intervals,
    equivalence_test,
    interval_verdict,
    mean_interval,
    paired_contrast,
    paired_difference,
    seeds_needed,
)


def runs_table(tidy: pd.DataFrame, variants: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per (variant, seed): metrics as columns, with the variant's label and order."""
    keys = [*RUN_KEYS, *(column for column in ("run", "status") if column in tidy)]
    wide = tidy.pivot(index=keys, columns="metric", values="value").reset_index()
    wide.columns.name = None
    info = pd.DataFrame([{k: v[k] for k in ("family", "variant", "label", "order")} for v in variants])
    return wide.merge(info, on=["family", "variant"], how="left").sort_values(["order", "seed"], ignore_index=True)


def _run_hits(hits: Hits | None, keys: Sequence[tuple[str, str, Any]]) -> np.ndarray | None:
    """Stacked hit vectors of `keys`, or None unless every one is there."""
    if hits is None or not keys or not all(k in hits for k in keys):
        return None
    return np.vstack([np.asarray(hits[k], dtype=float) for k in keys])


def summarise(
    runs: pd.DataFrame,
    metric: str = "accuracy",
    hits: Hits | None = None,
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per variant: seeds, diverged runs, mean and 95% interval of `metric`, and how the interval was made.

    `mean_interval`: clipped to [0, 1] for accuracy-like metrics; with `hits` (an accuracy and
    every finite run has its hit vector) the test-sample noise is included, which is what keeps
    a 2-seed interval honest (otherwise it is t with 1 df, clipped; `interval_method` says so).
    """
    rows = []
    bounds = (0.0, 1.0) if metric in BOUNDED_METRICS else None
    for (family, variant), group in runs.groupby(["family", "variant"], sort=False):
        finite = group[np.isfinite(group[metric].to_numpy(dtype=float))]
        matrix = _run_hits(hits, [(family, variant, s) for s in finite["seed"]]) if metric in HIT_METRICS else None
        if matrix is not None and metric == "error_rate":
            matrix = 1.0 - matrix
        result = mean_interval(
            finite[metric].to_numpy(dtype=float), hits=matrix, confidence=confidence, bounds=bounds, n_boot=n_boot, seed=seed
        )
        rows.append(
            {
                "family": family,
                "variant": variant,
                "label": group["label"].iat[0],
                "order": group["order"].iat[0],
                "seeds": len(group),
                "diverged": int((group["status"] == "diverged").sum()) if "status" in group else 0,
                f"{metric}_mean": result["estimate"],
                f"{metric}_ci_low": result["low"],
                f"{metric}_ci_high": result["high"],
                "interval_method": result["method"],
            }
        )
    return pd.DataFrame(rows).sort_values("order", ignore_index=True)


COMPARISON_COLUMNS = [
    "family",
    "variant",
    "difference",
    "diff_ci_low",
    "diff_ci_high",
    "p_value",
    "pairs",
    "p_holm",
    "diff_ci_low_unadjusted",
    "diff_ci_high_unadjusted",
    "adjustment",
    "adjusted_confidence",
    "method",
    "se",
    "df",
    "sd_paired",
    "var_test",
    "equivalence",
    "p_tost",
    "margin",
    "seeds_needed",
]


ADJUSTED_COLUMNS = ["diff_ci_low", "diff_ci_high", "p_holm", "adjusted_confidence", "adjustment", "equivalence", "p_tost"]


def compare_to_baseline(
    runs: pd.DataFrame,
    metric: str = "accuracy",
    hits: Hits | None = None,
    margin: float = 0.01,
    *,
    alpha: float = 0.05,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Each variant minus the baseline, paired by seed, from that variant's own runs; Holm within each family.

    Columns: `difference`; `diff_ci_low`/`diff_ci_high`, the Holm step-down interval, which
    excludes 0 iff `p_holm` < alpha (`adjustment`, `adjusted_confidence` say how it was made);
    the unadjusted 95% interval and `p_value`; `pairs`; `method` (seed noise only, or plus the
    test-set bootstrap when `hits` maps (family, variant, seed) to hit vectors); `equivalence`,
    the verdict the Holm interval shows against 0 and +-`margin` (`interval_verdict`: equivalent,
    different within the margin, different, inconclusive), with the unadjusted `p_tost`; and
    `seeds_needed` to resolve a difference of `margin` at the observed paired sd.
    """
    reference = (BASELINE, REFERENCE)
    rows = []
    for family in runs.loc[runs["family"] != BASELINE, "family"].drop_duplicates():
        for variant in runs.loc[runs["family"] == family, "variant"].drop_duplicates():
            result = paired_contrast(
                runs, {(family, variant): 1.0, reference: -1.0}, metric, hits=hits, confidence=1 - alpha, n_boot=n_boot, seed=seed
            )
            rows.append(
                {
                    "family": family,
                    "variant": variant,
                    "difference": result["estimate"],
                    "diff_ci_low_unadjusted": result["low"],
                    "diff_ci_high_unadjusted": result["high"],
                    "p_value": result["p_value"],
                    "pairs": result["seeds"],
                    "method": result["method"],
                    "se": result["se"],
                    "df": result["df"],
                    "sd_paired": result["sd"],
                    "var_test": result["var_test"],
                    "margin": margin,
                    "seeds_needed": seeds_needed(result["sd"], margin, alpha),
                }
            )
    table = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    bounds = (-1.0, 1.0) if metric in BOUNDED_METRICS else None
    parts = [_adjust_family(part, alpha, margin, bounds) for _, part in table.groupby("family", sort=False)]
    adjusted = pd.concat(parts) if parts else pd.DataFrame(columns=ADJUSTED_COLUMNS, dtype=float)
    return table.drop(columns=ADJUSTED_COLUMNS).join(adjusted)[COMPARISON_COLUMNS]


def _adjust_family(part: pd.DataFrame, alpha: float, margin: float, bounds: tuple[float, float] | None) -> pd.DataFrame:
    """One family's Holm columns, and the verdict its printed (Holm) interval shows against 0 and the margin.

    The same interval decides the difference (it excludes 0 iff p_holm < alpha) and the
    equivalence (it lies within +-margin), so equivalence is adjusted as the differences are
    and no verdict can disagree with the interval beside it. `p_tost` is the unadjusted TOST
    p-value, for reference.
    """
    adjusted = adjusted_intervals(part["difference"], part["se"], part["df"], part["p_value"], alpha, bounds).set_index(part.index)
    m = int(np.isfinite(part["p_value"].to_numpy(dtype=float)).sum())
    p_tost = [
        equivalence_test({"estimate": row.difference, "se": row.se, "df": row.df}, margin, alpha)["p_tost"] for row in part.itertuples()
    ]
    return pd.DataFrame(
        {
            "diff_ci_low": adjusted["low"],
            "diff_ci_high": adjusted["high"],
            "p_holm": adjusted["p_holm"],
            "adjusted_confidence": adjusted["level"],
            "adjustment": f"Holm step-down within family (m={m})",
            "equivalence": [interval_verdict(low, high, margin) for low, high in zip(adjusted["low"], adjusted["high"], strict=True)],
            "p_tost": p_tost,
        },
        index=part.index,
    )


def difference_of_differences(
    runs_a: pd.DataFrame,
    runs_b: pd.DataFrame,
    variants: Sequence[tuple[str, str]],
    metric: str = "accuracy",
    *,
    hits_a: Hits | None = None,
    hits_b: Hits | None = None,
    margin: float = 0.01,
    alpha: float = 0.05,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """How much a variant's effect changes from study B to study A: (A's variant - A's baseline) - (B's variant - B's baseline).

    For two studies that share the seeds and the test split (the same data key): per shared
    seed, each study's paired difference from its own baseline, and the two paired again by
    seed, so `paired_difference` gives the interval (seed noise, plus the test-sample noise from
    the per-example hit vectors of all four runs when both studies have them: per example,
    (A variant - A baseline) - (B variant - B baseline), bootstrapped). Holm within each family,
    and the verdict read off the adjusted interval, as `compare_to_baseline` does. Columns:
    family, variant, dd, dd_ci_low, dd_ci_high (Holm), p_value, p_holm, pairs, method, equivalence.
    """
    seeds = sorted(set(runs_a["seed"]) & set(runs_b["seed"]))
    studies = [
        (runs.pivot_table(index=["family", "variant"], columns="seed", values=metric, aggfunc="first"), hits)
        for runs, hits in ((runs_a, hits_a), (runs_b, hits_b))
    ]
    rows = []
    for key in variants:
        (da, ra), (db, rb) = (_effect_per_seed(table, hits, key, seeds, metric) for table, hits in studies)
        usable = ra is not None and rb is not None and len(ra[0]) == len(rb[0])
        result = paired_difference(
            da, db, variant_hits=ra if usable else None, baseline_hits=rb if usable else None, bounds=(-2.0, 2.0), n_boot=n_boot, seed=seed
        )
        rows.append({"family": key[0], "variant": key[1], "dd": result["estimate"], "p_value": result["p_value"], "pairs": result["seeds"]})
        rows[-1] |= {"se": result["se"], "df": result["df"], "method": result["method"]}
    table = pd.DataFrame(rows, columns=["family", "variant", "dd", "p_value", "pairs", "se", "df", "method"])
    parts = []
    for _, part in table.groupby("family", sort=False):
        adjusted = adjusted_intervals(part["dd"], part["se"], part["df"], part["p_value"], alpha, (-2.0, 2.0)).set_index(part.index)
        parts.append(part.assign(dd_ci_low=adjusted["low"], dd_ci_high=adjusted["high"], p_holm=adjusted["p_holm"]))
    table = pd.concat(parts) if parts else table.assign(dd_ci_low=[], dd_ci_high=[], p_holm=[])
    table["equivalence"] = [interval_verdict(low, high, margin) for low, high in zip(table["dd_ci_low"], table["dd_ci_high"], strict=True)]
    return table.drop(columns=["se", "df"])


def _effect_per_seed(
    table: pd.DataFrame, hits: Hits | None, key: tuple[str, str], seeds: Sequence[Any], metric: str
) -> tuple[list[float], list[np.ndarray] | None]:
    """One study's variant-minus-baseline per seed (`table`: its runs, variants x seeds), and per
    example (hit rates, misses for error_rate) when it has every hit vector of the two."""
    reference = (BASELINE, REFERENCE)
    per_seed = [table.loc[key, s] - table.loc[reference, s] if key in table.index and s in table else np.nan for s in seeds]
    if hits is None or metric not in HIT_METRICS or not all((*k, s) in hits for k in (key, reference) for s in seeds):
        return per_seed, None
    rates = [np.asarray(hits[(*key, s)], dtype=float) - np.asarray(hits[(*reference, s)], dtype=float) for s in seeds]
    return per_seed, [-r for r in rates] if metric == "error_rate" else rates
