"""Figures for the report (seaborn on matplotlib's file backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ablation_lab.ablations import BASELINE, fill_statistics, transform_split
from ablation_lab.artifacts import atomic_path
from ablation_lab.statistics.inference import DIFFERENT, EQUIVALENT, INCONCLUSIVE, NEGLIGIBLE

# Labels come from the user (feature, group, class and layer names): `$\frac{$` is a name to
# draw as written, not mathtext to parse (and fail on) in a figure job.
matplotlib.rcParams["text.parse_math"] = False


def save_figure(figure: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(figure)


def variant_labels(frame: pd.DataFrame, variants: Sequence[dict[str, Any]]) -> list[str]:
    """The display label of each row's (family, variant); the variant name when it has none."""
    labels = {(v["family"], v["variant"]): v["label"] for v in variants}
    return [labels.get(key, key[1]) for key in zip(frame["family"], frame["variant"], strict=True)]


def empty_figure(path: str | Path, message: str) -> None:
    """A figure that says why there is nothing to draw (e.g. every run diverged)."""
    figure, axes = plt.subplots(figsize=(5, 1.5))
    axes.axis("off")
    axes.text(0.5, 0.5, message, ha="center", va="center")
    save_figure(figure, path)


def plot_family(runs: pd.DataFrame, summary: pd.DataFrame, family: str, title: str, path: str | Path, metric: str = "accuracy") -> None:
    """One point per seed, the mean with its 95% interval per variant, the baseline as a band."""
    mine = runs[runs["family"] == family].sort_values(["order", "seed"])
    rows = summary[summary["family"] == family].sort_values("order")
    order = rows["label"].tolist()
    figure, axes = plt.subplots(figsize=(max(5.0, 0.55 * len(order) + 2), 4))
    base = summary[summary["family"] == BASELINE]
    if len(base):
        mean, low, high = base[[f"{metric}_mean", f"{metric}_ci_low", f"{metric}_ci_high"]].iloc[0]
        axes.axhline(mean, color="grey", linestyle="--", linewidth=1, label="baseline mean")
        if np.isfinite(low):
            axes.axhspan(low, high, color="grey", alpha=0.07, label="baseline 95% CI")
    sns.stripplot(data=mine, x="label", y=metric, order=order, ax=axes, color="tab:blue", alpha=0.6, size=5, jitter=0.15, label="one seed")
    x = np.arange(len(order))
    means = rows[f"{metric}_mean"].to_numpy()
    error = np.vstack([means - rows[f"{metric}_ci_low"].to_numpy(), rows[f"{metric}_ci_high"].to_numpy() - means])
    axes.errorbar(x, means, yerr=np.where(np.isfinite(error), error, 0), fmt="o", color="black", capsize=4, label="mean, 95% CI")
    axes.set(title=title, xlabel="", ylabel=f"test {metric}")
    crowded = len(order) > 5 or sum(len(str(label)) for label in order) > 12 * len(order)  # long labels overlap too
    axes.tick_params(axis="x", rotation=45 if crowded else 0)
    handles, labels = axes.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=False))
    axes.legend(unique.values(), unique.keys(), fontsize=8, loc="lower left")
    sns.despine(figure)
    save_figure(figure, path)


def plot_heatmap(
    summary: pd.DataFrame, variants: Sequence[dict[str, Any]], family: str, title: str, path: str | Path, metric: str = "accuracy"
) -> None:
    """A combination family: mean metric over the grid of its two factors."""
    coords = pd.DataFrame([{"variant": v["variant"], **v["coords"]} for v in variants if v["family"] == family])
    rows_key, cols_key = family.split("-x-")
    table = coords.merge(summary[summary["family"] == family], on="variant")
    grid = table.pivot_table(index=rows_key, columns=cols_key, values=f"{metric}_mean", sort=False)
    figure, axes = plt.subplots(figsize=(1.1 * grid.shape[1] + 3, 0.6 * grid.shape[0] + 2))
    sns.heatmap(grid, annot=True, fmt=".3f", cmap="viridis", ax=axes, cbar_kws={"label": f"mean test {metric}"})
    axes.set_title(title)
    save_figure(figure, path)


def plot_examples(
    arrays: dict[str, np.ndarray],
    variants: Sequence[dict[str, Any]],
    family: str,
    image_shape: Sequence[int],
    path: str | Path,
    seed: int,
    per_variant: int = 3,
) -> None:
    """The first test images as each variant of the family sees them (seed of the first run)."""
    chosen = [v for v in variants if v["family"] == family]
    stats = fill_statistics(arrays["x_train"])
    preview = arrays["x_test"][:per_variant]
    figure, grid = plt.subplots(per_variant, len(chosen), figsize=(1.2 * len(chosen) + 0.5, 1.3 * per_variant), squeeze=False)
    for col, variant in enumerate(chosen):
        images = transform_split(preview, "test", variant["transforms"], seed, stats)
        for row in range(per_variant):
            axes = grid[row, col]
            picture = images[row].reshape(image_shape)
            axes.imshow(np.clip(picture, 0, 1), cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1)
            axes.set_xticks([])
            axes.set_yticks([])
            if row == 0:
                axes.set_title(variant["label"], fontsize=7)
    figure.suptitle(f"What the model sees: {family} variants (test images)", fontsize=9)
    save_figure(figure, path)


def plot_learning_curves(history: pd.DataFrame, variants: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Training and validation loss per epoch, mean over seeds, one panel per family, one colour per variant."""
    if history.empty:  # read back from an empty table, its columns are not even numeric
        empty_figure(path, "No learning curves: nothing was trained (every model uses its saved weights).")
        return
    history = history[~history["family"].str.endswith("_posthoc")]  # test-time twins: the baseline's curves again
    long = history.melt(
        id_vars=["family", "variant", "seed", "epoch"], value_vars=["loss", "val_loss"], var_name="split", value_name="cross-entropy"
    )
    long = long[np.isfinite(long["cross-entropy"])]
    if long.empty:
        empty_figure(path, "No finite training loss to draw (every run diverged).")
        return
    long["split"] = long["split"].map({"loss": "training", "val_loss": "validation"})
    long["variant label"] = variant_labels(long, variants)
    grid = sns.relplot(
        data=long,
        x="epoch",
        y="cross-entropy",
        hue="variant label",
        style="split",
        col="family",
        col_wrap=min(3, long["family"].nunique()),
        kind="line",
        errorbar=None,
        height=2.8,
        aspect=1.2,
        legend=False,
        facet_kws={"sharey": False},
    )
    grid.set_titles("{col_name}")
    grid.figure.suptitle("Learning curves: training (solid) and validation (dashed) loss, mean over seeds", y=1.02)
    save_figure(grid.figure, path)


VERDICT_COLOURS = {DIFFERENT: "tab:red", NEGLIGIBLE: "tab:orange", EQUIVALENT: "tab:green", INCONCLUSIVE: "tab:grey"}


def forest_rows(comparisons: pd.DataFrame, variants: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The forest plot's rows: each variant's difference and Holm interval, copied from the comparisons table.

    Copied, never recomputed, so the overview draws exactly the intervals the tables print.
    Rows follow the study's variant order (families stay together).
    """
    order = {(v["family"], v["variant"]): i for i, v in enumerate(variants)}
    rows = comparisons.assign(
        label=[f"{family}: {label}" for family, label in zip(comparisons["family"], variant_labels(comparisons, variants), strict=True)],
        order=[order.get(key, len(order)) for key in zip(comparisons["family"], comparisons["variant"], strict=True)],
    )
    columns = ["family", "variant", "label", "difference", "diff_ci_low", "diff_ci_high", "equivalence", "margin"]
    return rows.sort_values("order", kind="stable")[[c for c in columns if c in rows]].reset_index(drop=True)


def draw_forest(rows: pd.DataFrame) -> plt.Figure:
    """Points and interval bars, one row per variant, top to bottom; a band for the equivalence margin."""
    figure, axes = plt.subplots(figsize=(7.5, 0.24 * len(rows) + 1.4))
    y = np.arange(len(rows))[::-1]
    margin = rows["margin"].dropna()
    if len(margin):
        axes.axvspan(-margin.iloc[0], margin.iloc[0], color="tab:green", alpha=0.08, label=f"equivalence margin +-{margin.iloc[0]:g}")
    axes.axvline(0, color="black", linewidth=0.8)
    verdicts = rows["equivalence"].fillna("") if "equivalence" in rows else pd.Series([""] * len(rows))
    for verdict in verdicts.drop_duplicates():
        chosen = (verdicts == verdict).to_numpy()
        part = rows[chosen]
        error = np.vstack([part["difference"] - part["diff_ci_low"], part["diff_ci_high"] - part["difference"]])
        axes.errorbar(
            part["difference"],
            y[chosen],
            xerr=np.where(np.isfinite(error), error, 0),
            fmt="o",
            markersize=4,
            capsize=2,
            color=VERDICT_COLOURS.get(verdict, "tab:blue"),
            label=verdict or "no verdict",
        )
    axes.set_yticks(y, rows["label"], fontsize=7)
    axes.set_ylim(-0.7, len(rows) - 0.3)
    axes.set(xlabel="difference in test accuracy from the baseline (Holm-adjusted 95% interval)", title="Every variant vs the baseline")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)  # outside: never over a row
    sns.despine(figure)
    return figure


def plot_forest(comparisons: pd.DataFrame, variants: Sequence[dict[str, Any]], path: str | Path) -> None:
    """The overview's forest plot (see `forest_rows`); says so when there is nothing to compare."""
    rows = forest_rows(comparisons, variants)
    if rows.empty or rows["difference"].isna().all():
        empty_figure(path, "No variant to compare with the baseline.")
        return
    save_figure(draw_forest(rows), path)
