"""Post-hoc knockout: hidden units (or conv channels) removed from a trained network, with no retraining.

A retrain ablation lets the whole network compensate for what was removed; knocking the
same units out of an already trained network shows the other side (Meyes et al., 2019,
"Ablation Studies in Artificial Neural Networks"). Where hidden layers follow the knocked-out
one they can partly repair a knockout (McGrath et al., 2023, "The Hydra Effect"); a fill
value the next layer never saw in training can also exaggerate it. A post-hoc effect is
therefore neither a lower nor an upper bound on a component's importance by construction;
the report says which applies to the study's model (compensation.what_the_gap_measures).

Efficiency: K masks never cost K model rebuilds or K full forward passes. The knocked-out
layer's activations are computed once per split; each mask only reruns the layers after it,
on one (masks x examples) batch, chunked so the batch stays within MEMORY_BUDGET bytes.
Units are removed by masking the layer's output in memory; saved models are never edited.

A unit of a convolutional layer is a channel (the last axis of its (examples, h, w, c)
output): a mask removes the channel at every position, a fill is per channel (`mean`:
over training examples and positions; `resample`: whole channel maps of randomly drawn
training examples), and a chunk's bytes count the spatial size. The training split's
activations are never held whole: one chunked pass gives the per-unit statistics, and
resampled examples are recomputed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablation_lab.analyses.base import Analysis, Params, RunContext, StudyTables, listed_families
from ablation_lab.models.graph import layer_split
from ablation_lab.models.surgery import SplitModel, TrainActivations, chosen_layers, class_selectivity, masked_predictions
from ablation_lab.report.sections import ReportInputs, SectionContent, fmt, html_table, png

ORDERINGS = (
    "random",
    "magnitude_smallest",
    "magnitude_largest",
    "activation_lowest",
    "importance_highest",
    "importance_lowest",
    "selectivity_highest",
    "selectivity_lowest",
)
FILLS = ("zero", "mean", "resample")


def keep_masks(order: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
    """One keep-mask per fraction: the first round(f x units) units of `order` removed."""
    masks = np.ones((len(fractions), len(order)), dtype=bool)
    for row, fraction in enumerate(fractions):
        masks[row, order[: round(fraction * len(order))]] = False
    return masks


def single_unit_importance(split: SplitModel, activations: np.ndarray, labels: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """Accuracy drop when each unit alone is removed; call it on the validation split only."""
    n_units = activations.shape[-1]
    full = float((split.tail(activations).argmax(axis=1) == labels).mean())
    alone = masked_predictions(split, activations, ~np.eye(n_units, dtype=bool), fill)
    return full - (alone == labels[None]).mean(axis=1)


def unit_order(ordering: str, rng: np.random.Generator, scores: dict[str, np.ndarray]) -> np.ndarray:
    """Which units go first. Magnitude: L2 norm of a unit's outgoing weights; activation: its
    mean on the validation split; importance: its single-unit accuracy drop on validation;
    selectivity: its class selectivity index on validation (Morcos et al., 2018)."""
    if ordering == "random":
        return rng.permutation(len(scores["activation"]))
    key, descending = {
        "magnitude_smallest": ("magnitude", False),
        "magnitude_largest": ("magnitude", True),
        "activation_lowest": ("activation", False),
        "importance_highest": ("importance", True),
        "importance_lowest": ("importance", False),
        "selectivity_highest": ("selectivity", True),
        "selectivity_lowest": ("selectivity", False),
    }[ordering]
    values = scores[key]
    return np.argsort(-values if descending else values, kind="stable")


def fill_values(fill: str, train: TrainActivations | np.ndarray, n_examples: int, rng: np.random.Generator) -> np.ndarray:
    """What a removed unit outputs: 0, its mean on the training split (over examples and
    positions: keeps the next layer on-distribution), or its value (a channel: its whole map)
    on randomly drawn other training examples (resampling)."""
    train = TrainActivations.of(train)
    if fill == "zero":
        return np.zeros_like(train.mean)
    if fill == "mean":
        return train.mean
    return train.take(rng.integers(0, len(train), size=n_examples))


def curve_area(fractions: Sequence[float], accuracy: Sequence[float]) -> float:
    """Area under accuracy vs fraction removed, normalised by the fraction range (the intact accuracy when nothing is lost)."""
    x, y = np.asarray(fractions, dtype=float), np.asarray(accuracy, dtype=float)
    order = np.argsort(x)
    span = x.max() - x.min()
    return float(np.trapezoid(y[order], x[order]) / span) if span > 0 else float(y.mean())


def _rows(base: dict[str, Any], fractions: Sequence[float], predictions: np.ndarray, labels: np.ndarray, classes: list[str]) -> list[dict]:
    rows = []
    hits = predictions == labels[None]
    for position, fraction in enumerate(fractions):
        rows.append({**base, "fraction": fraction, "metric": "accuracy", "value": float(hits[position].mean())})
        for index, name in enumerate(classes):
            chosen = labels == index
            if chosen.any():
                value = float(hits[position, chosen].mean())
                rows.append({**base, "fraction": fraction, "metric": f"class_accuracy:{name}", "value": value})
    rows.append({**base, "fraction": np.nan, "metric": "area", "value": curve_area(fractions, hits.mean(axis=1))})
    return rows


def stable_units(split: SplitModel, layer: str, activations: dict[str, np.ndarray], test_predictions: np.ndarray) -> list[dict]:
    """Units never active (dead) or always active on the training split, and what removing the dead ones changes.

    A channel is dead if its maximum over training examples and positions is <= 0."""
    train = TrainActivations.of(activations["train"])
    dead = train.high <= 0
    always = train.low > 0
    without_dead = masked_predictions(split, activations["test"], ~dead[None], np.zeros_like(train.mean))[0]
    base = {"layer": layer, "ordering": "", "fill": "zero", "draw": 0, "fraction": np.nan}
    return [
        {**base, "metric": "units", "value": float(len(train.mean))},
        {**base, "metric": "spatial_axes", "value": float(activations["test"].ndim - 2)},  # > 0: the units are channels
        {**base, "metric": "dead_units", "value": float(dead.sum())},
        {**base, "metric": "always_active_units", "value": float(always.sum())},
        {**base, "metric": "unchanged_without_dead_units", "value": float((without_dead == test_predictions).mean())},
    ]


def knockout_table(
    model: Any,
    inputs: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    classes: list[str],
    params: KnockoutParams,
    seed: int,
    skip_missing: bool = False,
) -> pd.DataFrame:
    """Every (layer, fill, ordering, draw) knockout curve of one trained model on the test split.

    `inputs`/`labels` hold the train, val and test splits as the model saw them. Orderings
    and fills are fitted on train (fill values) and validation (activation, importance):
    the test split is only ever predicted. `skip_missing`: a layer name this model lacks is
    skipped rather than an error (models.py's models, whose names the study checked).
    """
    chosen = chosen_layers(model, params.layers, skip_missing, branching=True)
    fractions = list(params.fractions)
    rows: list[dict] = []
    for layer in chosen:
        split = layer_split(model, layer)
        bound = {name: split.bind(inputs[name]) for name in ("val", "test")}  # a chain's split is its own binding
        activations = {name: split.head(inputs[name]) for name in ("val", "test")}
        activations["train"] = TrainActivations(split.head, inputs["train"])
        test_predictions = bound["test"].tail(activations["test"]).argmax(axis=1)
        rows += stable_units(bound["test"], layer, activations, test_predictions)
        for fill in params.fills:
            rng = np.random.default_rng(np.random.SeedSequence([seed, 11, FILLS.index(fill)]))
            test_fill = fill_values(fill, activations["train"], len(labels["test"]), rng)
            val_fill = fill_values(fill, activations["train"], len(labels["val"]), rng)
            scores = {"activation": activations["val"].reshape(-1, split.units).mean(axis=0)}
            if any(o.startswith("magnitude") for o in params.orderings):
                scores["magnitude"] = split.magnitude
            if any(o.startswith("selectivity") for o in params.orderings):
                scores["selectivity"] = class_selectivity(activations["val"], labels["val"], len(classes))[0]
            if any(o.startswith("importance") for o in params.orderings):
                scores["importance"] = single_unit_importance(bound["val"], activations["val"], labels["val"], val_fill)
            for ordering in params.orderings:
                draws = params.draws if ordering == "random" else 1
                for draw in range(draws):
                    order_rng = np.random.default_rng(np.random.SeedSequence([seed, 13, draw]))
                    masks = keep_masks(unit_order(ordering, order_rng, scores), fractions)
                    predictions = masked_predictions(bound["test"], activations["test"], masks, test_fill)
                    base = {"layer": layer, "ordering": ordering, "fill": fill, "draw": draw}
                    rows += _rows(base, fractions, predictions, labels["test"], classes)
    return pd.DataFrame(rows, columns=["layer", "ordering", "fill", "draw", "fraction", "metric", "value"])


def knockout_run(context: RunContext, params: KnockoutParams) -> pd.DataFrame:
    """Post-hoc unit (conv: channel) knockout curves of one trained model (see ablation_lab/analyses/knockout.py).

    The study checked `posthoc.layers` names against a built-in model's baseline, so a
    variant that lacks one (a shallower capacity variant) skips it; any other model's layer
    names are only known here, and an unknown one is an error."""

    inputs = {split: context.inputs(split) for split in ("train", "val", "test")}
    labels = {"train": context.split.y("train"), "val": context.labels("val"), "test": context.labels("test")}
    built_in = context.model_spec.kind in ("mlp", "kst", "cnn", "resnet")
    return knockout_table(context.model, inputs, labels, context.class_names, params, context.seed, skip_missing=built_in)


@dataclass(frozen=True)
class KnockoutParams(Params):
    """What knockout removes (the `posthoc` block less its families and compensation, which plan the study)."""

    config_key = "posthoc"

    layers: list[int | str]  # hidden layers (1-based) or layer names; empty: every hidden layer
    fractions: list[float]  # shares of the layer's units removed, one curve point each
    orderings: list[str]  # which units go first (`ORDERINGS`)
    fills: list[str]  # what a removed unit outputs (`FILLS`)
    draws: int  # random orderings drawn per curve


KNOCKOUT_KEYS = tuple(field.name for field in fields(KnockoutParams))  # its probe's identity: these keys, in this order


def posthoc_params(config: Mapping[str, Any]) -> dict[str, Any] | None:
    block = config.get("posthoc")
    return {key: block[key] for key in KNOCKOUT_KEYS} if block else None


def plot_knockout(knockout: pd.DataFrame, variants: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Accuracy vs fraction of units knocked out, one panel per knocked-out variant, one line per ordering.

    Lines are means over seeds and random draws (the band: 95% interval over them); the
    first configured fill is drawn, every layer (line style) when several were knocked out.
    """
    from ablation_lab.report.figures import empty_figure, save_figure, sns

    curves = knockout[(knockout["metric"] == "accuracy") & knockout["fraction"].notna()]
    if curves.empty:
        empty_figure(path, "No knockout curve to draw.")
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
    save_figure(grid.figure, path)


def class_drop_table(knockout: pd.DataFrame) -> pd.DataFrame:
    """Per knocked-out model and fraction: the mean accuracy drop and the worst-hit class's drop."""
    chosen = knockout[(knockout["ordering"] == "random") & knockout["metric"].str.startswith(("accuracy", "class_accuracy:"))]
    chosen = chosen[chosen["fill"] == chosen["fill"].iloc[0]] if len(chosen) else chosen
    means = chosen.groupby(["family", "variant", "layer", "metric", "fraction"], sort=False)["value"].mean().unstack("fraction")
    if means.empty:
        return pd.DataFrame()
    drops = means.rsub(means[means.columns.min()], axis=0)  # accuracy at the smallest fraction minus each
    rows = []
    for (family, variant, layer), block in drops.groupby(level=["family", "variant", "layer"], sort=False):
        classes = block.droplevel(["family", "variant", "layer"])
        for fraction in [f for f in classes.columns if f > classes.columns.min()]:
            per_class = classes.loc[classes.index != "accuracy", fraction]
            worst = per_class.idxmax()
            rows.append(
                {
                    "model": f"{family}/{variant}",
                    "layer": layer,
                    "fraction removed": f"{fraction:g}",
                    "mean accuracy drop": f"{classes.loc['accuracy', fraction]:+.3f}",
                    "worst class": worst.split(":", 1)[1],
                    "its drop": f"{per_class[worst]:+.3f}",
                }
            )
    return pd.DataFrame(rows)


def knockout_section(inputs: ReportInputs) -> list[SectionContent]:
    knockout = inputs.tables.get("knockout")
    if knockout is None or knockout.empty:
        return []
    conv = set(knockout.loc[(knockout["metric"] == "spatial_axes") & (knockout["value"] > 0), "layer"])
    removed = "Hidden units" + (f" (channels of the conv layers {', '.join(sorted(conv))}, each at every position)" if conv else "")
    section = SectionContent("knockout", "Post-hoc knockout").say(
        f"{removed} removed from each trained model, with no retraining: the removed units output the fill value, "
        "every other weight is as trained. Orderings and fills are fitted on the training and validation splits; only "
        "the test split is scored. Area: the accuracy curve's area over the fraction range (the intact model's accuracy when removing units costs nothing)."
    )
    section.figures = [{"alt": "knockout curves", "data": png(p)} for p in inputs.figures.get("knockout", [])]
    areas = knockout[knockout["metric"] == "area"]
    table = (
        areas.groupby(["family", "variant", "layer", "fill", "ordering"], sort=False)["value"].agg(["mean", "std", "count"]).reset_index()
    )
    table["area (mean)"] = table["mean"].map("{:.3f}".format)
    table["sd over seeds and draws"] = table["std"].map(lambda v: fmt(v, "{:.3f}"))
    section.add_table(html_table(table.drop(columns=["mean", "std"]).rename(columns={"count": "curves"})))
    dropout = areas[(areas["family"] == "dropout") & (areas["ordering"] == "random")]
    if dropout["variant"].nunique() > 1:
        by_rate = dropout.groupby("variant")["value"].mean()
        best, worst = by_rate.idxmax(), by_rate.idxmin()
        section.say(
            "Does training with dropout buy robustness to removal? Random-order knockout area per dropout variant: "
            + ", ".join(f"{name} {value:.3f}" for name, value in by_rate.items())
            + f"; highest {best}, lowest {worst}."
        )
    per_class = class_drop_table(knockout)
    if len(per_class):
        section.say(
            "Per-class effects (random order, mean over seeds and draws): a knockout can leave mean accuracy nearly "
            "flat and wreck one class. The drop of each class's accuracy from the intact model, at each fraction:"
        )
        section.add_table(html_table(per_class))
    stable = knockout[knockout["metric"].isin(["units", "dead_units", "always_active_units", "unchanged_without_dead_units"])]
    if len(stable):
        wide = stable.pivot_table(
            index=["family", "variant", "layer"], columns="metric", values="value", aggfunc="mean", sort=False
        ).reset_index()
        wide = wide.rename(columns={"units": "units or channels"})
        wide.insert(3, "unit", ["channel" if layer in conv else "unit" for layer in wide["layer"]])
        section.say(
            "Stable units (conv layers: channels, over every position), on the training split (mean over seeds): dead units are never active, and removing them "
            "leaves this share of test predictions unchanged (units dead on training can still fire on test inputs)."
        )
        section.add_table(html_table(wide.round(3)))
    return [section]


def summarise(study: StudyTables) -> dict[str, pd.DataFrame]:
    """The compensation gap: retrained minus removed-after-training (analyses/compensation.py)."""
    from ablation_lab.analyses.compensation import compensation_table

    return {"compensation": compensation_table(study.runs, study.table, study.variants, study.params, hits=study.hits)}


def figures(study: Any) -> list[str]:
    """The knockout curves, and one overlay per compensation comparison the study can make."""
    return ["knockout", *(f"compensation_{comparison}" for comparison in study.compensation_comparisons())]


def plot(tables: Mapping[str, str], variants: Sequence[dict[str, Any]], out: Mapping[str, str]) -> None:
    from ablation_lab.analyses.compensation import plot_compensation

    plot_knockout(pd.read_csv(tables["knockout"]), variants, out["knockout"])
    gaps = pd.read_csv(tables["compensation"])
    for comparison in gaps["comparison"].drop_duplicates():
        plot_compensation(gaps, comparison, out[f"compensation_{comparison}"])


def compensation_section(inputs: ReportInputs) -> list[SectionContent]:
    from ablation_lab.analyses.compensation import compensation_section as section

    return section(inputs)


ANALYSIS = Analysis(
    "knockout",
    "Post-hoc knockout",
    "A fraction of a hidden layer's units removed from the trained model, no retraining; accuracy on the test split.",
    knockout_run,
    posthoc_params,
    KnockoutParams,
    code=("ablations", "analyses.compensation", "statistics"),
    wants=listed_families("posthoc"),
    summaries=("compensation",),
    summarise=summarise,
    figures=figures,
    plot=plot,
    sections=(knockout_section, compensation_section),
)
