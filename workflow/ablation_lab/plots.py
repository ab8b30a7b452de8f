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


def variant_labels(frame: pd.DataFrame, variants: Sequence[dict[str, Any]]) -> list[str]:
    """The display label of each row's (family, variant); the variant name when it has none."""
    labels = {(v["family"], v["variant"]): v["label"] for v in variants}
    return [labels.get(key, key[1]) for key in zip(frame["family"], frame["variant"], strict=True)]


def _empty_figure(path: str | Path, message: str) -> None:
    """A figure that says why there is nothing to draw (e.g. every run diverged)."""
    figure, axes = plt.subplots(figsize=(5, 1.5))
    axes.axis("off")
    axes.text(0.5, 0.5, message, ha="center", va="center")
    _save(figure, path)


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


def plot_knockout(knockout: pd.DataFrame, variants: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Accuracy vs fraction of units knocked out, one panel per knocked-out variant, one line per ordering.

    Lines are means over seeds and random draws (the band: 95% interval over them); the
    first configured fill is drawn, every layer (line style) when several were knocked out.
    """
    curves = knockout[(knockout["metric"] == "accuracy") & knockout["fraction"].notna()]
    if curves.empty:
        _empty_figure(path, "No knockout curve to draw.")
        return
    curves = curves[curves["fill"] == curves["fill"].iloc[0]]
    # one panel per trained model: variants that share one (baseline, dropout 0) share a panel
    labels = {(v["family"], v["variant"]): v["label"] for v in variants}
    names: dict[str, list[str]] = {}
    for family, variant, run in curves[["family", "variant", "run"]].drop_duplicates().itertuples(index=False):
        names.setdefault(run, []).append(labels.get((family, variant), f"{family}/{variant}"))
    first = curves.groupby("run", sort=False)[["family", "variant"]].first().apply(tuple, axis=1)
    curves = curves[
        [first[run] == (family, variant) for family, variant, run in zip(curves["family"], curves["variant"], curves["run"], strict=True)]
    ]
    curves = curves.assign(model=curves["run"].map(lambda run: " = ".join(names[run])))
    grid = sns.relplot(
        data=curves,
        x="fraction",
        y="value",
        hue="ordering",
        style="layer" if curves["layer"].nunique() > 1 else None,
        col="model",
        col_wrap=min(3, curves["model"].nunique()),
        kind="line",
        marker="o",
        markersize=4,
        errorbar=("ci", 95),
        height=3,
        aspect=1.2,
    )
    grid.set_axis_labels("fraction of units (conv: channels) removed, no retraining", "test accuracy")
    grid.set_titles("{col_name}")
    grid.figure.suptitle(f"Post-hoc knockout (fill: {curves['fill'].iloc[0]})", y=1.02)
    _save(grid.figure, path)


def plot_compensation(gaps: pd.DataFrame, comparison: str, path: str | Path) -> None:
    """Retrained vs post-hoc accuracy over one comparison's points: the gap is the compensation."""
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
    _save(figure, path)


def plot_reliability(calibration: pd.DataFrame, variants: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Reliability diagrams: accuracy vs mean confidence per confidence bin, one panel per family.

    One line per variant (bins pooled over seeds, weighted by their counts); the diagonal is
    perfect calibration, a line below it an over-confident model.
    """
    bins = calibration[calibration["metric"].str.startswith("bin_")]
    if bins.empty:
        _empty_figure(path, "No calibration to draw (every run diverged).")
        return
    wide = bins.pivot_table(index=["family", "variant", "seed", "bin"], columns="metric", values="value").reset_index()
    wide["hits"] = wide["bin_accuracy"] * wide["bin_count"]
    wide["confidence_sum"] = wide["bin_confidence"] * wide["bin_count"]
    pooled = wide.groupby(["family", "variant", "bin"], sort=False)[["hits", "confidence_sum", "bin_count"]].sum().reset_index()
    pooled["accuracy"] = pooled["hits"] / pooled["bin_count"]
    pooled["confidence"] = pooled["confidence_sum"] / pooled["bin_count"]
    pooled["label"] = variant_labels(pooled, variants)
    grid = sns.relplot(
        data=pooled,
        x="confidence",
        y="accuracy",
        hue="label",
        col="family",
        col_wrap=min(3, pooled["family"].nunique()),
        kind="line",
        marker="o",
        markersize=3,
        height=3,
        aspect=1.1,
        legend=False,
    )
    for axes in grid.axes.flat:
        axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        axes.set(xlim=(0, 1), ylim=(0, 1))
    grid.set_axis_labels("mean confidence in bin", "accuracy in bin")
    grid.set_titles("{col_name}")
    grid.figure.suptitle("Reliability diagrams (test split; dashed: perfect calibration)", y=1.02)
    _save(grid.figure, path)


def plot_learning_curves(history: pd.DataFrame, variants: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Training and validation loss per epoch, mean over seeds, one panel per family, one colour per variant."""
    history = history[~history["family"].str.endswith("_posthoc")]  # test-time twins: the baseline's curves again
    long = history.melt(
        id_vars=["family", "variant", "seed", "epoch"], value_vars=["loss", "val_loss"], var_name="split", value_name="cross-entropy"
    )
    long = long[np.isfinite(long["cross-entropy"])]
    if long.empty:
        _empty_figure(path, "No finite training loss to draw (every run diverged).")
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
    _save(grid.figure, path)


def plot_nsdropout(summary: pd.DataFrame, table: pd.DataFrame, variants: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Left: test error of every (variant, inference mode) with its interval (the table's numbers).
    Right: mask dependence of each NSDropout model: with a wrong class's mask, how often the
    prediction is still right, and how often it is the mask's class (one point per seed)."""
    from ablation_lab.nsdropout import MODE_TITLES

    if summary.empty:
        _empty_figure(path, "No NSDropout results to draw.")
        return
    rows = summary.assign(label=variant_labels(summary, variants), mode_title=summary["mode"].map(MODE_TITLES))
    rows["row"] = rows["label"] + " | " + rows["mode_title"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, max(3.0, 0.38 * len(rows) + 1)), gridspec_kw={"width_ratios": [3, 2]})
    y = np.arange(len(rows))
    error = np.vstack([rows["error_rate"] - rows["error_low"], rows["error_high"] - rows["error_rate"]])
    colours = ["tab:red" if mode == "oracle" else "tab:blue" for mode in rows["mode"]]
    left.errorbar(100 * rows["error_rate"], y, xerr=100 * np.where(np.isfinite(error), error, 0), fmt="none", ecolor="black", capsize=3)
    left.scatter(100 * rows["error_rate"], y, c=colours, zorder=3)
    left.set_yticks(y, rows["row"])
    left.invert_yaxis()
    left.set(xlabel="test error (%), 95% interval", title="Error by inference mode (red: reads the true label)")
    dependence = table[(table["mode"] == "wrong-mask") & table["metric"].isin(["wrong_mask_accuracy", "follows_mask_rate"])]
    if dependence.empty:
        right.axis("off")
    else:
        shown = dependence.assign(label=variant_labels(dependence, variants))
        names = {"wrong_mask_accuracy": "still correct", "follows_mask_rate": "predicts the mask's class"}
        shown = shown.assign(measure=shown["metric"].map(names))
        sns.stripplot(data=shown, x="value", y="label", hue="measure", ax=right, dodge=True, size=6)
        right.set(
            xlim=(-0.02, 1.02), xlabel="share of (test example, wrong mask) pairs", ylabel="", title="Mask dependence (chance: 1 / classes)"
        )
        right.legend(loc="lower right", fontsize=8)
    _save(figure, path)


FIXED_SHAPES = {
    "relu": lambda x: np.maximum(x, 0),
    "tanh": np.tanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "linear": lambda x: x,
}


def plot_feature_functions(shapes: pd.DataFrame, variants: Sequence[dict[str, Any]], path: str | Path) -> None:
    """The KST model's learned function of each input feature, one small panel per feature (the
    baseline's, one line per seed; dashed: as initialised)."""
    features = shapes[shapes["layer"] == "feature_functions"]
    if features.empty:
        _empty_figure(path, "No per-feature functions (the model is not kind kst).")
        return
    first = features[(features["family"] == features["family"].iloc[0]) & (features["variant"] == features["variant"].iloc[0])]
    grid = sns.relplot(
        data=first, x="x", y="learned", hue="seed", col="feature", col_wrap=6, kind="line", height=1.8, aspect=1.2, legend=False
    )
    for axis, (_, part) in zip(grid.axes.flat, first.groupby("feature", sort=False), strict=False):
        one = part[part["seed"] == part["seed"].iloc[0]]
        axis.plot(one["x"], one["initial"], color="black", linestyle="--", linewidth=0.8)
    grid.set_titles("{col_name}", size=7)
    grid.set_axis_labels("standardised value", "f(x)")
    label = variant_labels(first.head(1), variants)[0]
    grid.figure.suptitle(f"KST model ({label}): learned function of each input feature (dashed: as initialised)", y=1.01)
    _save(grid.figure, path)


def plot_activation_shapes(
    shapes: pd.DataFrame, variants: Sequence[dict[str, Any]], path: str | Path, features_path: str | Path | None = None
) -> None:
    """One panel per learnable variant and layer: the learned function (one line per seed, and per
    unit when per-unit), as initialised (dashed), and the fixed activations in grey for scale.
    The KST model's per-feature functions go to their own figure (`features_path`)."""
    if features_path is not None:
        plot_feature_functions(shapes, variants, features_path)
    shapes = shapes[shapes["layer"] != "feature_functions"]
    if shapes.empty:
        _empty_figure(path, "No learnable activation in this study's models.")
        return
    shown = shapes.assign(label=variant_labels(shapes, variants))
    shown["panel"] = shown["label"] + " | " + shown["layer"]
    shown["line"] = "seed " + shown["seed"].astype(str) + np.where(shown["unit"] >= 0, ", unit " + shown["unit"].astype(str), "")
    panels = list(dict.fromkeys(shown["panel"]))
    columns = min(3, len(panels))
    rows = int(np.ceil(len(panels) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    for axis, panel in zip(axes.flat, panels, strict=False):
        part = shown[shown["panel"] == panel]
        x = np.sort(part["x"].unique())
        for name, function in FIXED_SHAPES.items():
            axis.plot(x, function(x), color="lightgrey", linewidth=1, zorder=1)
            axis.annotate(name, (x[-1], function(x[-1])), fontsize=7, color="grey")
        first = part[part["line"] == part["line"].iloc[0]]
        axis.plot(first["x"], first["initial"], color="black", linestyle="--", linewidth=1, label="initial")
        sns.lineplot(data=part, x="x", y="learned", hue="line", ax=axis, linewidth=1.5, legend=len(part["line"].unique()) <= 8)
        axis.set(title=panel, xlabel="pre-activation", ylabel="activation")
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    figure.suptitle("Learned activation functions (dashed: as initialised; grey: fixed activations)", y=1.01)
    figure.tight_layout()
    _save(figure, path)


def plot_elasticity(elasticity: pd.DataFrame, variants: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Local elasticity per analysed variant: the AUC (one point per seed, mean with its 95% interval) and clustering ARIs.

    Left: 0.5 is a model whose step moves same-class and other-class examples alike. Right:
    the agreement with the classes of clusterings of the similarity matrices, and of K-means on
    the raw inputs (dashed) as the reference. Intervals from `elasticity.variant_summary`.
    """
    from ablation_lab.elasticity import variant_summary

    if elasticity.empty:
        _empty_figure(path, "No local elasticity to draw (every analysed run diverged).")
        return
    summary = variant_summary(elasticity)
    summary["label"] = variant_labels(summary, variants)
    points = elasticity[elasticity["metric"] == "auc"]
    points = points.assign(label=variant_labels(points, variants))
    figure, (left, right) = plt.subplots(1, 2, figsize=(max(8.0, 1.1 * len(summary) + 5), 3.8))
    sns.stripplot(data=points, x="label", y="value", order=summary["label"], ax=left, color="tab:blue", alpha=0.6, jitter=0.15)
    x = np.arange(len(summary))
    means = summary["auc_mean"].to_numpy()
    error = np.vstack([means - summary["auc_low"].to_numpy(), summary["auc_high"].to_numpy() - means])
    left.errorbar(x, means, yerr=np.where(np.isfinite(error), error, 0), fmt="o", color="black", capsize=4)
    left.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    left.set(title="Same class vs other classes: row AUC", xlabel="", ylabel="mean row AUC (0.5: not elastic)")
    scores = {"spectral, S_ker": "ari_spectral_kernel", "K-means, S_ker": "ari_kmeans_kernel", "spectral, S_rel": "ari_spectral_relative"}
    bars = summary.melt(id_vars="label", value_vars=[c for c in scores.values() if c in summary], var_name="clustering", value_name="ARI")
    bars["clustering"] = bars["clustering"].map({column: name for name, column in scores.items()})
    sns.barplot(data=bars, x="label", y="ARI", hue="clustering", order=summary["label"], ax=right)
    right.axhline(summary["ari_kmeans_inputs"].mean(), color="black", linestyle="--", linewidth=1, label="K-means, raw inputs")
    right.set(title="Clustering the sample (mean over seeds)", xlabel="", ylabel="adjusted Rand index vs classes")
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for axes in (left, right):
        axes.tick_params(axis="x", rotation=45 if len(summary) > 4 else 0)
    sns.despine(figure)
    _save(figure, path)


VERDICT_COLOURS = {"different": "tab:red", "equivalent": "tab:green", "inconclusive": "tab:grey"}


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
        _empty_figure(path, "No variant to compare with the baseline.")
        return
    _save(draw_forest(rows), path)
