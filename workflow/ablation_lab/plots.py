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
from ablation_lab.io import atomic_path


def _save(figure: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(figure)


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
    axes.tick_params(axis="x", rotation=45 if len(order) > 5 else 0)
    handles, labels = axes.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=False))
    axes.legend(unique.values(), unique.keys(), fontsize=8, loc="lower left")
    sns.despine(figure)
    _save(figure, path)


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
    _save(figure, path)


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
    _save(figure, path)
