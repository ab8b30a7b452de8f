"""The article's qualitative claims, each tested with an interval from statistics/inference.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ablation_lab.ablations import BASELINE
from ablation_lab.statistics.inference import REFERENCE, Hits, equivalence_test, interval_verdict, paired_contrast


def verdict(low: float, high: float, seeds: int) -> str:
    """'held' only when the 95% interval of the claimed (positive) difference excludes zero."""
    if seeds < 2 or not np.isfinite(low):
        return "not testable (needs 2+ seeds)"
    if low > 0:
        return "held"
    if high < 0:
        return "contradicted"
    return "within seed noise"


def block_contrast(table: pd.DataFrame, weights: dict[str, float]) -> dict[str, float]:
    """A contrast of variant means, with its 95% interval and p-value, from a variants x seeds table.

    The pooled model, kept for reference and comparison: every variant is trained with the
    same seeds, so the table is a randomised block design, and an additive model (variant
    effect + seed effect) leaves (V-1)(S-1) residual degrees of freedom pooled over the
    variants. That assumes every variant is equally noisy across seeds, which noise and
    dropout families break; the report's numbers come from `paired_contrast` instead.
    Variants with a missing (diverged) run are left out.
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


def family_contrast(runs: pd.DataFrame, family: str, weights: dict[str, float], metric: str = "accuracy") -> dict[str, float]:
    """`block_contrast` (the pooled model) over one family's variants (`weights` keyed by variant name)."""
    return block_contrast(seed_table(runs, [family], metric), {f"{family}/{v}": w for v, w in weights.items()})


def _contrast_weights(better: Sequence[str], worse: Sequence[str]) -> dict[str, float]:
    """Mean of `better` minus mean of `worse`."""
    return {**{v: 1.0 / len(better) for v in better}, **{v: -1.0 / len(worse) for v in worse}}


FINDING_COLUMNS = ["claim", "estimate", "ci_low", "ci_high", "seeds", "verdict", "detail"]


def _claim(
    runs: pd.DataFrame, claim: str, family: str, better: Sequence[str], worse: Sequence[str], detail: str, hits: Hits | None = None
) -> dict[str, Any]:
    weights = {(family, v): w for v, w in _contrast_weights(better, worse).items()}
    result = paired_contrast(runs, weights, hits=hits)
    return {
        "claim": claim,
        "estimate": result["estimate"],
        "ci_low": result["low"],
        "ci_high": result["high"],
        "seeds": result["seeds"],
        "verdict": verdict(result["low"], result["high"], result["seeds"]),
        "detail": f"{detail}; 95% interval: {result['method']}",
    }


def check_findings(runs: pd.DataFrame, variants: Sequence[dict[str, Any]], hits: Hits | None = None, margin: float = 0.01) -> pd.DataFrame:
    """Test the article's claims that the study can speak to; each with an interval and a verdict.

    Claims of a difference are 'held' when the 95% interval of the contrast excludes 0;
    the claim of no effect (dropout) is an equivalence test against +-`margin`.
    """
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
                    hits,
                )
            )
    findings.extend(_noise_claim(runs, variants, hits))
    findings.extend(_border_claim(runs, variants, hits))
    findings.extend(_dropout_claim(runs, variants, hits, margin))
    return pd.DataFrame(findings, columns=FINDING_COLUMNS)


def _noise_claim(runs: pd.DataFrame, variants: Sequence[dict[str, Any]], hits: Hits | None = None) -> list[dict[str, Any]]:
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
            hits,
        )
    ]


def _border_claim(runs: pd.DataFrame, variants: Sequence[dict[str, Any]], hits: Hits | None = None) -> list[dict[str, Any]]:
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
            hits,
        )
    ]


DROPOUT_CLAIM = "dropping 80% of the neurons barely affects the accuracy"


def _dropout_claim(
    runs: pd.DataFrame, variants: Sequence[dict[str, Any]], hits: Hits | None = None, margin: float = 0.01
) -> list[dict[str, Any]]:
    """The article's "dropping 80% of the neurons barely affects the accuracy", as an equivalence test.

    Rate 0.8 if the study has it, else its largest rate if >= 0.5 (the detail names it); against
    dropout rate 0 when the family has it (the same model otherwise, whatever the baseline's
    own dropout), else the baseline.
    """
    rate_of = {
        v["variant"]: float(v["coords"]["dropout rate"]) for v in variants if v["family"] == "dropout" and "dropout rate" in v["coords"]
    }
    if not rate_of:
        return []
    high_rate = 0.8 if 0.8 in rate_of.values() else max(rate_of.values())
    if high_rate < 0.5:
        return []
    tested = next(n for n, r in rate_of.items() if r == high_rate)
    zero = [n for n, r in rate_of.items() if r == 0]
    reference, reference_name = (("dropout", zero[0]), "dropout 0") if zero else ((BASELINE, REFERENCE), "the baseline")
    result = paired_contrast(runs, {("dropout", tested): 1.0, reference: -1.0}, hits=hits)
    test = equivalence_test(result, margin)  # its p_tost; the verdict is read off the printed 95% interval
    note = "" if high_rate == 0.8 else f"; the study has no rate 0.8, tested at its largest rate {high_rate:g}"
    return [
        {
            "claim": DROPOUT_CLAIM,
            "estimate": result["estimate"],
            "ci_low": result["low"],
            "ci_high": result["high"],
            "seeds": result["seeds"],
            "verdict": interval_verdict(result["low"], result["high"], margin),
            "detail": (
                f"accuracy(dropout {high_rate:g}) - accuracy({reference_name}){note}; the 95% interval against 0 and "
                f"against the margin +-{margin:g} (equivalent, different within the margin, different or inconclusive; "
                f"TOST p={test['p_tost']:.2g}); {result['method']}"
            ),
        }
    ]
