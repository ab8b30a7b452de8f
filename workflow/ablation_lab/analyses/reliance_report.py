"""The reliance analysis's figures and report section ("Does the network rely on single units?").

Every verdict sentence states what was measured on this study's models, with the interval that
decided it (statistics/inference.py's four outcomes against a margin): "no correlation" or "no
difference" is only said when the interval lies inside the margin (an equivalence test), never
because a difference was not significant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ablation_lab.report.sections import ReportInputs, SectionContent, html_table, interval, png

FIGURES = ("reliance_curves", "reliance_area_gap", "reliance_selectivity", "reliance_rotation")


def figures(study: Any) -> list[str]:
    return list(FIGURES)


def _noise(variants: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], float]:
    return {
        (v["family"], v["variant"]): float(sum(t.get("rate", 0.0) for t in v.get("transforms", []) if t["op"] == "corrupt_labels"))
        for v in variants
    }


def plot_curves(table: pd.DataFrame, variants: Sequence[Mapping[str, Any]], path: str | Path, basis_hue: bool = False) -> None:
    """Accuracy vs fraction removed: one line per trained model coloured by label noise (mean over seeds and
    draws), or (`basis_hue`) units vs random directions over every model (band: 95% interval over models and seeds)."""
    from ablation_lab.report.figures import empty_figure, save_figure, sns

    curves = table[(table["metric"] == "accuracy") & table["fraction"].notna()]
    curves = curves.drop_duplicates(["run", "seed", "layer", "basis", "draw", "fraction"])
    if curves.empty:
        empty_figure(path, "No reliance curve to draw.")
        return
    if basis_hue:
        data = curves.groupby(["run", "seed", "layer", "basis", "fraction"], sort=False)["value"].mean().reset_index()
        options: dict[str, Any] = {"hue": "basis", "errorbar": ("ci", 95)}
    else:
        noise = _noise(variants)
        curves = curves[curves["basis"] == "unit"]
        curves = curves.assign(**{"label noise": [noise.get(k, 0.0) for k in zip(curves["family"], curves["variant"], strict=True)]})
        data = curves.groupby(["run", "family", "label noise", "layer", "fraction"], sort=False)["value"].mean().reset_index()
        options = {"hue": "label noise", "palette": "viridis", "style": "family", "units": "run", "estimator": None}
    grid = sns.relplot(data=data, x="fraction", y="value", col="layer", kind="line", height=3, aspect=1.2, **options)
    grid.set_axis_labels("fraction removed (random order, zero fill)", "accuracy (split: reliance.split)")
    title = "Units vs random orthogonal directions removed" if basis_hue else "Cumulative unit ablation, by label noise"
    grid.figure.suptitle(title, y=1.03)
    save_figure(grid.figure, path)


def plot_scatter(frame: pd.DataFrame, x: str, y: str, hue: str | None, path: str | Path, title: str) -> None:
    from ablation_lab.report.figures import empty_figure, save_figure, sns

    if frame.empty or x not in frame or y not in frame:
        empty_figure(path, "Nothing to draw.")
        return
    palette = "viridis" if hue == "label_noise" else None
    grid = sns.relplot(data=frame, x=x, y=y, hue=hue, col="layer", palette=palette, height=3, aspect=1.2, s=18, alpha=0.7)
    grid.figure.suptitle(title, y=1.03)
    save_figure(grid.figure, path)


def plot(tables: Mapping[str, str], variants: Sequence[dict[str, Any]], out: Mapping[str, str]) -> None:
    table = pd.read_csv(tables["reliance"])
    models = pd.read_csv(tables["reliance_models"])
    plot_curves(table, variants, out["reliance_curves"])
    plot_curves(table, variants, out["reliance_rotation"], basis_hue=True)
    plot_scatter(
        models,
        "area_unit",
        "generalisation_gap",
        "label_noise",
        out["reliance_area_gap"],
        "Area under the ablation curve vs generalisation gap",
    )
    units = table[table["unit"].notna() & table["metric"].isin(["selectivity", "importance"])]
    units = units.drop_duplicates(["run", "seed", "layer", "unit", "metric"])
    wide = units.pivot_table(index=["family", "run", "seed", "layer", "unit"], columns="metric", values="value").reset_index()
    plot_scatter(
        wide, "selectivity", "importance", "family", out["reliance_selectivity"], "Class selectivity vs single-unit importance (validation)"
    )


# --- the section --------------------------------------------------------------------------

PAPER = {
    "area vs gap": "networks that generalise worse rely more on single units, so the area falls as the gap grows",
    "selectivity vs importance": "a unit's class selectivity is a poor predictor of its importance, a correlation near zero",
}


def correlation_sentence(row: Mapping[str, Any]) -> str:
    """What one correlation showed here, against the paper's finding, with the interval that decided it."""
    measured = f"Spearman rho = {row['estimate']:+.2f}, 95% bootstrap interval {interval(row['low'], row['high'], '{:+.2f}')}"
    where = f"{row['test']} ({row['scope']}, layer {row['layer']}, {int(row['n'])} points from {int(row['clusters'])} models)"
    verdict, margin = row["verdict"], row["margin"]
    if row["test"].endswith("area vs gap"):
        if verdict == "different" and row["high"] < 0:
            held = "held here: the larger a model's gap, the smaller its area"
        elif row["low"] > 0:
            held = "did not hold here: the correlation is positive"
        elif verdict in ("equivalent", "different, within margin"):
            held = f"did not hold here: the interval lies within +-{margin:g} (no correlation of that size)"
        else:
            held = f"inconclusive here: the interval reaches both 0 and beyond +-{margin:g}"
    else:
        if verdict in ("equivalent", "different, within margin"):
            held = f"held here: the interval lies within +-{margin:g}"
        elif verdict == "different":
            held = f"did not hold here: the interval excludes 0 and reaches beyond +-{margin:g}"
        else:
            held = f"inconclusive here: the interval reaches beyond +-{margin:g} but includes 0"
    return f"{where}: {measured}; the paper's finding ({PAPER['area vs gap' if row['test'].endswith('area vs gap') else 'selectivity vs importance']}) {held}."


def rotation_sentence(row: Mapping[str, Any]) -> str:
    measured = (
        f"unit minus direction area {row['difference']:+.4f}, 95% interval {interval(row['low'], row['high'])} "
        f"over {int(row['seeds'])} seeds (margin +-{row['margin']:g})"
    )
    if row["verdict"] == "equivalent":
        held = "units and random directions are equivalent: the units carry no privileged basis here"
    elif row["verdict"] == "different, within margin":
        held = "the two curves differ, but by less than the margin: no privileged basis of practical size"
    elif row["verdict"] == "different":
        held = (
            "removing units "
            + ("hurts more" if row["difference"] < 0 else "hurts less")
            + " than removing random directions: the units are a privileged basis"
        )
    else:
        held = "inconclusive: more seeds would decide whether the units are a privileged basis"
    return f"Rotation control, layer {row['layer']} ({row['model']}): {measured}; {held}."


def reliance_section(inputs: ReportInputs, params: Any) -> list[SectionContent]:
    """The section; `params`: the study's `RelianceParams` (None: the study does not ask for reliance)."""
    table = inputs.tables.get("reliance")
    if table is None or table.empty or params is None:
        return []
    split = params.split
    scored = "training split, with the labels each model was trained on" if split == "train" else "test split"
    section = SectionContent("reliance", "Does the network rely on single units?").say(
        "Morcos et al. (2018) asked whether networks that generalise well rely less on single units. Here, per trained "
        f"model and hidden layer: units removed cumulatively in random order (zero fill, several draws), accuracy on the "
        f"{scored}, and the area under that curve (normalised: divided by the intact model's accuracy); the generalisation "
        "gap is train accuracy on the labels the model was trained on (corrupted, for label-noise variants) minus test "
        "accuracy. Selectivity and importance are measured on the validation split. Intervals: percentile bootstrap over "
        "trained models, then seeds within each."
    )
    section.figures = [{"alt": name.replace("_", " "), "data": png(p)} for name in FIGURES for p in inputs.figures.get(name, [])]
    correlations = inputs.tables.get("reliance_correlations")
    if correlations is not None and not correlations.empty:
        main = correlations[correlations["test"].isin(["area vs gap", "selectivity vs importance"])]  # the rest: in the table
        for _, row in main.iterrows():
            section.say(correlation_sentence(row))
        shown = correlations.assign(
            interval=[interval(lo, hi, "{:+.2f}") for lo, hi in zip(correlations["low"], correlations["high"], strict=True)]
        )
        shown["rho"] = shown["estimate"].map("{:+.2f}".format)
        section.add_table(html_table(shown[["test", "scope", "layer", "n", "clusters", "rho", "interval", "verdict"]]))
    rotation = inputs.tables.get("reliance_rotation")
    if rotation is not None and not rotation.empty:
        for _, row in rotation[rotation["model"].str.startswith("all models")].iterrows():
            section.say(rotation_sentence(row))
        shown = rotation.assign(interval=[interval(lo, hi) for lo, hi in zip(rotation["low"], rotation["high"], strict=True)])
        section.add_table(
            html_table(shown[["model", "layer", "seeds", "unit area", "direction area", "difference", "interval", "verdict"]].round(4))
        )
    dropout = inputs.tables.get("reliance_dropout")
    if dropout is not None and not dropout.empty:
        for sentence in dropout_sentences(dropout):
            section.say(sentence)
    return [section]


PROTECTED = ("equivalent", "different, within margin")


def dropout_sentences(dropout: pd.DataFrame) -> list[str]:
    """Per dropout model and layer: up to which fraction removed the accuracy drop was shown to lie within the margin."""
    out = []
    for (model, layer), block in dropout.groupby(["model", "layer"], sort=False):
        block = block.sort_values("fraction")
        rate, margin = float(block["rate"].iloc[0]), float(block["margin"].iloc[0])
        lost = block[~block["verdict"].isin(PROTECTED)]
        first_loss = float(lost["fraction"].iloc[0]) if len(lost) else None
        kept = block[block["fraction"] < first_loss] if first_loss is not None else block
        upto = float(kept["fraction"].max()) if len(kept) else None
        above = block[block["fraction"] > rate]["fraction"]
        next_above = float(above.iloc[0]) if len(above) else None
        if upto is None:
            found = f"even at a fraction of {first_loss:g} removed the accuracy drop was not shown to lie within +-{margin:g}"
            held = "protection up to its rate was not shown here"
        else:
            found = f"the accuracy drop was shown to lie within +-{margin:g} (equivalence) up to a fraction of {upto:g} removed"
            if upto < rate:
                held = f"short of its rate {rate:g}: the paper's 'protects up to its rate' was not shown here"
            elif first_loss is not None and first_loss == next_above:
                held = f"not beyond (at {first_loss:g}: {lost['verdict'].iloc[0]}): the paper's 'only up to its rate' held here"
            else:
                held = f"beyond its rate {rate:g}: the paper's 'only up to its rate' did not hold here"
        out.append(f"Dropout {rate:g} ({model}, layer {layer}): {found}; {held}.")
    return out
