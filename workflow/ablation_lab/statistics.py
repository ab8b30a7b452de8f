"""Statistics across seeds: intervals per variant, paired comparisons, the article's claims.

Every variant is trained with the same seeds as the baseline, so comparisons pair runs by
seed (scipy's paired t-test); p-values are Holm-corrected within each family. With few seeds
the intervals are wide, and the report says so instead of claiming a difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ablation_lab.ablations import BASELINE

RUN_KEYS = ["family", "variant", "seed"]


def runs_table(tidy: pd.DataFrame, variants: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per (variant, seed): metrics as columns, with the variant's label and order."""
    keys = [*RUN_KEYS, *(column for column in ("run", "status") if column in tidy)]
    wide = tidy.pivot(index=keys, columns="metric", values="value").reset_index()
    wide.columns.name = None
    info = pd.DataFrame([{k: v[k] for k in ("family", "variant", "label", "order")} for v in variants])
    return wide.merge(info, on=["family", "variant"], how="left").sort_values(["order", "seed"], ignore_index=True)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided t-interval; the interval is NaN with fewer than two finite values."""
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


def summarise(runs: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Per variant: seeds, diverged runs, mean and 95% interval of `metric`."""
    rows = []
    for (family, variant), group in runs.groupby(["family", "variant"], sort=False):
        mean, low, high = t_interval(group[metric].tolist())
        rows.append(
            {
                "family": family,
                "variant": variant,
                "label": group["label"].iat[0],
                "order": group["order"].iat[0],
                "seeds": len(group),
                "diverged": int((group["status"] == "diverged").sum()),
                f"{metric}_mean": mean,
                f"{metric}_ci_low": low,
                f"{metric}_ci_high": high,
            }
        )
    return pd.DataFrame(rows).sort_values("order", ignore_index=True)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN)."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite])]
    m, running = len(order), 0.0
    for rank, index in enumerate(order):
        running = max(running, (m - rank) * p[index])
        adjusted[index] = min(1.0, running)
    return adjusted


def block_contrast(table: pd.DataFrame, weights: dict[str, float]) -> dict[str, float]:
    """A contrast of variant means, with its 95% interval and p-value, from a variants x seeds table.

    Every variant is trained with the same seeds, so the table is a randomised block design:
    an additive model (variant effect + seed effect) leaves (V-1)(S-1) residual degrees of
    freedom to estimate seed noise, pooled over the variants of a family, far more than the
    S-1 of one pair of variants when seeds are few. Variants with a missing (diverged) run
    are left out.
    """
    table = table.dropna()
    used = [v for v in weights if v in table.index]
    coef = np.array([weights[v] for v in used])
    n_variants, n_seeds = table.shape
    estimate = float(coef @ table.loc[used].mean(axis=1).to_numpy()) if used else float("nan")
    df = (n_variants - 1) * (n_seeds - 1)
    out = {"estimate": estimate, "low": float("nan"), "high": float("nan"), "p_value": float("nan"), "seeds": n_seeds, "df": df}
    if df < 1 or len(used) < len(weights):
        return out
    values = table.to_numpy()
    residual = values - values.mean(axis=1, keepdims=True) - values.mean(axis=0, keepdims=True) + values.mean()
    se = float(np.sqrt((residual**2).sum() / df * float((coef**2).sum()) / n_seeds))
    if se == 0:
        return {**out, "low": estimate, "high": estimate, "p_value": 1.0 if estimate == 0 else 0.0}
    half = float(stats.t.ppf(0.975, df)) * se
    return {**out, "low": estimate - half, "high": estimate + half, "p_value": float(2 * stats.t.sf(abs(estimate) / se, df))}


def seed_table(runs: pd.DataFrame, families: Sequence[str], metric: str = "accuracy") -> pd.DataFrame:
    """Variants (`family/variant`) x seeds of `metric`, for the given families."""
    chosen = runs[runs["family"].isin(list(families))]
    return chosen.assign(id=chosen["family"] + "/" + chosen["variant"]).pivot_table(index="id", columns="seed", values=metric, dropna=False)


def compare_to_baseline(runs: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Each variant minus the baseline, seed noise pooled over its family; Holm within each family."""
    reference = f"{BASELINE}/reference"
    rows = []
    for family in runs.loc[runs["family"] != BASELINE, "family"].drop_duplicates():
        table = seed_table(runs, [family, BASELINE], metric)
        for variant in runs.loc[runs["family"] == family, "variant"].drop_duplicates():
            result = block_contrast(table, {f"{family}/{variant}": 1.0, reference: -1.0})
            rows.append(
                {
                    "family": family,
                    "variant": variant,
                    "difference": result["estimate"],
                    "diff_ci_low": result["low"],
                    "diff_ci_high": result["high"],
                    "p_value": result["p_value"],
                    "pairs": result["seeds"],
                }
            )
    table = pd.DataFrame(rows, columns=["family", "variant", "difference", "diff_ci_low", "diff_ci_high", "p_value", "pairs"])
    table["p_holm"] = np.nan
    for _, index in table.groupby("family").groups.items():
        table.loc[index, "p_holm"] = holm(table.loc[index, "p_value"].tolist())
    return table


# --- the article's qualitative claims -----------------------------------------------------


def verdict(low: float, high: float, seeds: int) -> str:
    """'held' only when the 95% interval of the claimed (positive) difference excludes zero."""
    if seeds < 2 or not np.isfinite(low):
        return "not testable (needs 2+ seeds)"
    if low > 0:
        return "held"
    if high < 0:
        return "contradicted"
    return "within seed noise"


def family_contrast(runs: pd.DataFrame, family: str, weights: dict[str, float], metric: str = "accuracy") -> dict[str, float]:
    """`block_contrast` over one family's variants (`weights` keyed by variant name)."""
    return block_contrast(seed_table(runs, [family], metric), {f"{family}/{v}": w for v, w in weights.items()})


def _contrast_weights(better: Sequence[str], worse: Sequence[str]) -> dict[str, float]:
    """Mean of `better` minus mean of `worse`."""
    return {**{v: 1.0 / len(better) for v in better}, **{v: -1.0 / len(worse) for v in worse}}


def _claim(runs: pd.DataFrame, claim: str, family: str, better: Sequence[str], worse: Sequence[str], detail: str) -> dict[str, Any]:
    result = family_contrast(runs, family, _contrast_weights(better, worse))
    return {
        "claim": claim,
        "estimate": result["estimate"],
        "ci_low": result["low"],
        "ci_high": result["high"],
        "seeds": result["seeds"],
        "verdict": verdict(result["low"], result["high"], result["seeds"]),
        "detail": f"{detail}; interval from the family's seed noise ({result['df']} df)",
    }


def check_findings(runs: pd.DataFrame, variants: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Test the article's claims that the study can speak to; each with an interval and a verdict."""
    findings = []
    names = {(v["family"], v["variant"]) for v in variants}
    for other in ("relu", "tanh"):
        if {("activation", "linear"), ("activation", other)} <= names:
            findings.append(
                _claim(
                    runs,
                    f"the linear activation scores below {other}",
                    "activation",
                    [other],
                    ["linear"],
                    f"accuracy({other}) - accuracy(linear)",
                )
            )
    findings.extend(_noise_claim(runs, variants))
    findings.extend(_border_claim(runs, variants))
    return pd.DataFrame(findings, columns=["claim", "estimate", "ci_low", "ci_high", "seeds", "verdict", "detail"])


def _noise_claim(runs: pd.DataFrame, variants: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    noisy = [
        v
        for v in variants
        if v["family"] == "noise" and v["transforms"][0]["kind"] == "gaussian" and v["transforms"][0]["apply_to"] == "both"
    ]
    level_of = {v["variant"]: v["coords"]["noise level"] for v in noisy}
    levels = sorted(set(level_of.values()))
    if len(levels) < 3:
        return []
    chosen = runs[(runs["family"] == "noise") & runs["variant"].isin(level_of)].dropna(subset=["accuracy"])
    rho, p = (float("nan"), float("nan"))
    if chosen["accuracy"].nunique() > 1:  # a constant column has no rank correlation
        rho, p = stats.spearmanr(chosen["variant"].map(level_of), chosen["accuracy"])
    lowest = [n for n, level in level_of.items() if level == levels[0]]
    highest = [n for n, level in level_of.items() if level == levels[-1]]
    return [
        _claim(
            runs,
            "accuracy falls as gaussian noise grows",
            "noise",
            lowest,
            highest,
            f"accuracy(noise {levels[0]:g}) - accuracy(noise {levels[-1]:g}); Spearman rho {rho:.2f} (p={p:.2g}) over {len(chosen)} runs",
        )
    ]


def _border_claim(runs: pd.DataFrame, variants: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    columns = [
        v for v in variants if v["family"] == "input" and v["transforms"] and v["transforms"][0].get("region", {}).get("axis") == "columns"
    ]
    if len(columns) < 3:
        return []
    border, central = [], []
    for v in columns:
        region = v["transforms"][0]["region"]
        extent = region["extent"]
        if region["start"] == 0 or region["stop"] == extent:
            border.append(v["variant"])
        elif region["start"] < extent * 2 / 3 and region["stop"] > extent / 3:
            central.append(v["variant"])
    if not border or not central:
        return []
    return [
        _claim(
            runs,
            "ablating border columns costs less than ablating central columns",
            "input",
            border,
            central,
            f"mean accuracy without {', '.join(border)} minus mean accuracy without {', '.join(central)}",
        )
    ]
