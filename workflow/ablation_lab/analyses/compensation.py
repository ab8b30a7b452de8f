"""The compensation gap: retrained with a component removed, minus the trained baseline without it.

The article's title says a network retrained without a component compensates for it, so a
retrain ablation understates what the component carried. For three kinds of component the
study has both sides on the same data and seeds:

- units: `units/frac-f` (retrained f narrower) vs the baseline with a fraction f of the same
  layer's units knocked out (random order, mean over draws, the first configured fill);
- input: `input/<group>` (retrained without the group) vs `input_posthoc/<group>`;
- noise: `noise/<level>` (trained and tested noisy) vs `noise_posthoc/<level>` (tested noisy).

Per point, the gap `retrained - post-hoc` is a contrast paired by seed, and its interval is
the one the comparisons with the baseline get (statistics.paired_contrast): seed noise of the
paired gaps plus, where both sides have per-example hit vectors (input and noise), the paired
bootstrap over test examples. The knockout side of `units` has none (a mean over random
draws), so its interval covers seed noise only; the `method` column says which. The area
between the two curves is the mean gap over the points (trapezoid weights over the x
coordinate where there is one), the same contrast with those weights. Unadjusted 95%.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablation_lab.ablations import BASELINE, POSTHOC_SUFFIX, UNITS
from ablation_lab.report.sections import ReportInputs, SectionContent, fmt, html_table, interval, png
from ablation_lab.statistics.inference import Hits, paired_contrast

COLUMNS = ["comparison", "point", "label", "x", "seeds", "retrained", "posthoc", "gap", "gap_ci_low", "gap_ci_high", "method"]
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


def _trapezoid_weights(xs: np.ndarray) -> np.ndarray:
    """Weights w with w @ y = the trapezoid area under y(x) over the x range, divided by that range (a mean)."""
    if len(xs) < 2 or not np.all(np.isfinite(xs)) or np.ptp(xs) == 0:
        return np.full(len(xs), 1.0 / len(xs))
    order = np.argsort(xs)
    steps = np.diff(xs[order])
    weights = np.zeros(len(xs))
    weights[order[:-1]] += steps / 2
    weights[order[1:]] += steps / 2
    return weights / np.ptp(xs)


Key = tuple[str, str]  # (family, variant)


def _gap_row(runs: pd.DataFrame, pairs: Sequence[tuple[Key, Key]], weights: Sequence[float], hits: Hits | None) -> dict[str, Any]:
    """Sum over `pairs` of weight x (retrained - post-hoc), paired by seed: statistics.paired_contrast's estimate and interval."""
    contrast: dict[tuple[str, str], float] = {}
    for (retrained, posthoc), weight in zip(pairs, weights, strict=True):
        contrast[retrained] = contrast.get(retrained, 0.0) + weight
        contrast[posthoc] = contrast.get(posthoc, 0.0) - weight
    result = paired_contrast(runs, contrast, hits=hits)
    return {"seeds": result["seeds"], "gap": result["estimate"], "gap_ci_low": result["low"], "gap_ci_high": result["high"]} | {
        "method": result["method"]
    }


def _point_row(
    runs: pd.DataFrame, comparison: str, point: str, label: str, x: float, pair: tuple[Key, Key], hits: Hits | None
) -> dict[str, Any]:
    """One matched point: both sides' means over the seeds they share, and their gap with its interval."""
    sides = pd.concat({"retrained": _per_seed(runs, *pair[0]), "posthoc": _per_seed(runs, *pair[1])}, axis=1).dropna()
    means = {side: float(sides[side].mean()) if len(sides) else np.nan for side in ("retrained", "posthoc")}
    return {"comparison": comparison, "point": point, "label": label, "x": x, **means} | _gap_row(runs, [pair], [1.0], hits)


def _area_row(runs: pd.DataFrame, comparison: str, rows: Sequence[dict[str, Any]], hits: Hits | None) -> dict[str, Any]:
    """Mean gap over the points (trapezoid over x where x is numeric), as one paired contrast."""
    xs = np.array([row["x"] for row in rows], dtype=float)
    gap = _gap_row(runs, [row["_pair"] for row in rows], _trapezoid_weights(xs), hits)
    label = "area between the curves (mean gap)"
    return {"comparison": comparison, "point": "area", "label": label, "x": np.nan, "retrained": np.nan, "posthoc": np.nan} | gap


def _knockout_rows(knockout: pd.DataFrame, variants: Sequence[dict[str, Any]], layer: str, fill: str) -> pd.DataFrame:
    """The knocked-out baseline as runs of a `units_posthoc` family: one accuracy per (fraction's variant, seed)."""
    parts = []
    for variant in variants:
        per_seed = _knockout_per_seed(knockout, variant["coords"]["fraction removed"], layer, fill)
        parts.append(
            pd.DataFrame({"family": UNITS + POSTHOC_SUFFIX, "variant": variant["variant"], "seed": per_seed.index, "accuracy": per_seed})
        )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["family", "variant", "seed", "accuracy"])


def compensation_table(
    runs: pd.DataFrame,
    knockout: pd.DataFrame | None,
    variants: Sequence[dict[str, Any]],
    posthoc: Any,
    hits: Hits | None = None,
) -> pd.DataFrame:
    """One row per matched point of each comparison, plus one `area` row per comparison.

    `posthoc`: knockout's `KnockoutParams` (which layer and fill its curves removed).
    `hits` ((family, variant, seed) -> the test examples its model got right) adds the test
    sample's noise to the intervals, as in the comparisons with the baseline.
    """
    by_family: dict[str, list[dict[str, Any]]] = {}
    for variant in variants:
        by_family.setdefault(variant["family"], []).append(variant)
    matched: list[tuple[str, list[tuple[dict[str, Any], float, str]]]] = []  # comparison -> (variant, x, label)
    if UNITS in by_family and knockout is not None and len(knockout):
        layer = compensation_layer_name(posthoc.layers)  # the layer the units family narrows
        runs = pd.concat([runs, _knockout_rows(knockout, by_family[UNITS], layer, posthoc.fills[0])], ignore_index=True)
        matched.append((UNITS, [(v, v["coords"]["fraction removed"], v["label"]) for v in by_family[UNITS]]))
    for family in ("input", "noise"):
        twins = by_family.get(family + POSTHOC_SUFFIX, [])
        x_key = X_KEY.get(family, "")
        points = [(v, v["coords"].get(x_key, np.nan), v["label"].replace(" (post-hoc)", "")) for v in twins]
        matched += [(family, points)] if points else []
    out: list[dict[str, Any]] = []
    for comparison, points in matched:
        rows = []
        for variant, x, label in points:
            pair = ((comparison, variant["variant"]), (comparison + POSTHOC_SUFFIX, variant["variant"]))
            rows.append({**_point_row(runs, comparison, variant["variant"], label, x, pair, hits), "_pair": pair})
        out += [*rows, _area_row(runs, comparison, rows, hits)]
    return pd.DataFrame([{k: v for k, v in row.items() if k != "_pair"} for row in out], columns=COLUMNS)


def plot_compensation(gaps: pd.DataFrame, comparison: str, path: str | Path) -> None:
    """Retrained vs post-hoc accuracy over one comparison's points: the gap is the compensation."""
    from ablation_lab.report.figures import plt, save_figure, sns

    rows = gaps[(gaps["comparison"] == comparison) & (gaps["point"] != "area")]
    numeric = rows["x"].notna().all()
    x = rows["x"].to_numpy() if numeric else np.arange(len(rows))
    figure, axes = plt.subplots(figsize=(max(5.0, 0.5 * len(rows) + 2), 3.8))
    axes.plot(x, rows["retrained"], "o-", color="tab:blue", label="retrained without it")
    axes.plot(x, rows["posthoc"], "s--", color="tab:red", label="removed from the trained baseline")
    axes.fill_between(x, rows["posthoc"], rows["retrained"], color="tab:purple", alpha=0.12, label="compensation gap")
    if not numeric:
        axes.set_xticks(x, rows["label"], rotation=45 if len(rows) > 5 else 0, ha="right" if len(rows) > 5 else "center")
    xlabel = {"units": "fraction of hidden units removed", "noise": "noise level"}.get(comparison, "")
    axes.set(title=f"Compensation: {comparison}", xlabel=xlabel, ylabel="test accuracy (mean over seeds)")
    axes.legend(fontsize=8, loc="lower left")
    sns.despine(figure)
    save_figure(figure, path)


def what_the_gap_measures(study: Mapping[str, Any], comparisons: set[str]) -> list[str]:
    """What this study's gap can and cannot be read as: measured facts about its model, not a paper's expectation."""
    posthoc, model = study.get("posthoc") or {}, study.get("model") or {}
    layer = compensation_layer(posthoc.get("layers", [])) or 1
    downstream = len(model.get("hidden_units", [])) - layer
    fill = (posthoc.get("fills") or ["zero"])[0]
    said = []
    if UNITS in comparisons and model.get("kind") == "resnet":
        later = int(model.get("blocks", 3)) - layer
        said.append(
            f"The knocked-out channels, block_{layer}_relu_2, feed the block's write into the residual stream; {later} later "
            "residual block(s) and the head read that stream, so they can partly repair the removal: not measured here."
        )
    elif UNITS in comparisons:
        if downstream <= 0:
            said.append(
                f"In this model the knocked-out layer, hidden_{layer}, feeds the output layer directly: no hidden layer "
                "downstream of it can repair the removal, so the post-hoc side measures the removal itself."
            )
        else:
            said.append(f"{downstream} hidden layer(s) follow hidden_{layer}; whether they partly repair a knockout is not measured here.")
    if UNITS in comparisons:
        said.append(
            f"Removed units output the {fill} fill, which the next layer may never have seen in training: a post-hoc effect "
            "can overstate a component's importance as well as understate it, so the gap is not a pure measure of compensation."
        )
    if "noise" in comparisons:
        said.append(
            "For noise, the retrained model saw the noise in training and the post-hoc one meets it first at test time: "
            "that gap is a train/test mismatch as much as compensation."
        )
    return said


def compensation_section(inputs: ReportInputs) -> list[SectionContent]:
    gaps = inputs.tables.get("compensation")
    if gaps is None or gaps.empty:
        return []
    section = SectionContent("compensation", "Compensation: retrained vs removed after training").say(
        "Each point pairs a model retrained without a component with the trained baseline from which the same "
        "component was removed afterwards, on the same seeds; the gap is retrained minus post-hoc accuracy, with the "
        "unadjusted 95% interval the comparisons with the baseline use: seed noise of the paired gaps plus, where both "
        "sides have per-example predictions (input, noise), a paired bootstrap over test examples; the knocked-out "
        "side of the units comparison is a mean over random draws with none, so its interval is seed noise only. "
        "A positive gap: the network retrained without the component did better than the trained one with it removed."
    )
    for caveat in what_the_gap_measures(inputs.study, set(gaps["comparison"])):
        section.say(caveat)
    section.figures = [
        {"alt": f"compensation {p}", "data": png(p)}
        for p in [paths[0] for name, paths in inputs.figures.items() if name.startswith("compensation_")]
    ]
    shown = pd.DataFrame(
        {
            "comparison": gaps["comparison"],
            "point": gaps["label"],
            "retrained": gaps["retrained"].map(lambda v: fmt(v, "{:.4f}")),
            "post-hoc": gaps["posthoc"].map(lambda v: fmt(v, "{:.4f}")),
            "gap": gaps["gap"].map(fmt),
            "gap 95% CI": [interval(a, b) for a, b in zip(gaps["gap_ci_low"], gaps["gap_ci_high"], strict=True)],
            "seeds": gaps["seeds"],
        }
    )
    section.add_table(html_table(shown))
    return [section]


def compensation_layer_name(wanted: Sequence[int | str]) -> str:
    """The knocked-out layer the units family is compared with: `hidden_<k>`, or `block_<k>_relu_2` where named."""
    for item in wanted:
        if not isinstance(item, str):
            return f"hidden_{int(item)}"
        if re.fullmatch(r"hidden_[0-9]+|block_[0-9]+_relu_2", item):
            return item
    return "hidden_1"


def compensation_layer(wanted: Sequence[int | str]) -> int | None:
    """The hidden layer (1-based) the `units` family narrows: the first item of `posthoc.layers`
    naming a hidden layer (k or `hidden_<k>`) or, in a residual network, block k's inner width
    (`block_<k>_relu_2`); 1 when the list is empty; None when it names none."""
    if not wanted:
        return 1
    for item in wanted:
        if not isinstance(item, str):
            return int(item)
        if match := re.fullmatch(r"hidden_([0-9]+)|block_([0-9]+)_relu_2", item):
            return int(match.group(1) or match.group(2))
    return None
