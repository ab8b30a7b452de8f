"""The compensation gap: retrained with a component removed, minus the trained baseline without it.

The article's title says a network retrained without a component compensates for it, so a
retrain ablation understates what the component carried. For three kinds of component the
study has both sides on the same data and seeds:

- units: `units/frac-f` (retrained f narrower) vs the baseline with a fraction f of the same
  layer's units knocked out (random order, mean over draws, the first configured fill);
- input: `input/<group>` (retrained without the group) vs `input_posthoc/<group>`;
- noise: `noise/<level>` (trained and tested noisy) vs `noise_posthoc/<level>` (tested noisy).

Per point, the gap `retrained - post-hoc` is paired by seed; its interval is the t-interval
over seeds (statistics.t_interval). The area between the two curves is the mean gap over
the points (trapezoid over the x coordinate where there is one), per seed, then over seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ablation_lab.ablations import BASELINE, POSTHOC_SUFFIX, UNITS
from ablation_lab.statistics import t_interval

COLUMNS = ["comparison", "point", "label", "x", "seeds", "retrained", "posthoc", "gap", "gap_ci_low", "gap_ci_high"]
X_KEY = {UNITS: "fraction removed", "noise": "noise level"}


def _per_seed(runs: pd.DataFrame, family: str, variant: str) -> pd.Series:
    chosen = runs[(runs["family"] == family) & (runs["variant"] == variant)]
    return chosen.set_index("seed")["accuracy"]


def _knockout_per_seed(knockout: pd.DataFrame, fraction: float, layer: str, fill: str) -> pd.Series:
    chosen = knockout[
        (knockout["family"] == BASELINE)
        & (knockout["layer"] == layer)
        & (knockout["ordering"] == "random")
        & (knockout["fill"] == fill)
        & (knockout["metric"] == "accuracy")
        & np.isclose(knockout["fraction"], fraction)
    ]
    return chosen.groupby("seed")["value"].mean()


def _row(comparison: str, point: str, label: str, x: float, retrained: pd.Series, posthoc: pd.Series) -> dict[str, Any]:
    paired = pd.concat({"retrained": retrained, "posthoc": posthoc}, axis=1).dropna()
    gap = paired["retrained"] - paired["posthoc"]
    mean, low, high = t_interval(gap.tolist())
    return {
        "comparison": comparison,
        "point": point,
        "label": label,
        "x": x,
        "seeds": len(paired),
        "retrained": float(paired["retrained"].mean()) if len(paired) else np.nan,
        "posthoc": float(paired["posthoc"].mean()) if len(paired) else np.nan,
        "gap": mean,
        "gap_ci_low": low,
        "gap_ci_high": high,
        "_gaps": gap,
    }


def _area_row(comparison: str, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean gap over the points, per seed (trapezoid over x where x is numeric), then over seeds."""
    gaps = pd.concat({i: row["_gaps"] for i, row in enumerate(rows)}, axis=1).dropna()
    xs = np.array([row["x"] for row in rows], dtype=float)
    if np.all(np.isfinite(xs)) and np.ptp(xs) > 0:
        order = np.argsort(xs)
        per_seed = [float(np.trapezoid(values[order], xs[order]) / np.ptp(xs)) for values in gaps.to_numpy()]
    else:
        per_seed = gaps.mean(axis=1).tolist()
    mean, low, high = t_interval(per_seed)
    return {
        "comparison": comparison,
        "point": "area",
        "label": "area between the curves (mean gap)",
        "x": np.nan,
        "seeds": len(per_seed),
        "retrained": np.nan,
        "posthoc": np.nan,
        "gap": mean,
        "gap_ci_low": low,
        "gap_ci_high": high,
    }


def compensation_table(
    runs: pd.DataFrame, knockout: pd.DataFrame | None, variants: Sequence[dict[str, Any]], posthoc: dict[str, Any]
) -> pd.DataFrame:
    """One row per matched point of each comparison, plus one `area` row per comparison."""
    by_family: dict[str, list[dict[str, Any]]] = {}
    for variant in variants:
        by_family.setdefault(variant["family"], []).append(variant)
    out: list[dict[str, Any]] = []
    if UNITS in by_family and knockout is not None and len(knockout):
        layer = f"hidden_{(posthoc['layers'] or [1])[0]}"  # the layer the units family narrows
        rows = []
        for variant in by_family[UNITS]:
            fraction = variant["coords"]["fraction removed"]
            retrained = _per_seed(runs, UNITS, variant["variant"])
            rows.append(
                _row(
                    UNITS,
                    variant["variant"],
                    variant["label"],
                    fraction,
                    retrained,
                    _knockout_per_seed(knockout, fraction, layer, posthoc["fills"][0]),
                )
            )
        out += [*rows, _area_row(UNITS, rows)]
    for family in ("input", "noise"):
        posthoc_family = family + POSTHOC_SUFFIX
        if posthoc_family not in by_family:
            continue
        rows = []
        for variant in by_family[posthoc_family]:
            x = variant["coords"].get(X_KEY.get(family, ""), np.nan)
            retrained = _per_seed(runs, family, variant["variant"])
            rows.append(
                _row(
                    family,
                    variant["variant"],
                    variant["label"].replace(" (post-hoc)", ""),
                    x,
                    retrained,
                    _per_seed(runs, posthoc_family, variant["variant"]),
                )
            )
        out += [*rows, _area_row(family, rows)]
    return pd.DataFrame([{k: v for k, v in row.items() if k != "_gaps"} for row in out], columns=COLUMNS)
