"""The learned shapes of learnable activations (GP-interpolated control points, basis sums).

For every learnable activation layer of a trained model, its function on a grid of inputs,
next to the function it started as: what the functional ablation's learnable variants
learned. The layers themselves are in ablation_lab/models/layers.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablation_lab.analyses.base import Analysis, Params, RunContext
from ablation_lab.models.settings import LEARNABLE_ACTIVATIONS
from ablation_lab.report.sections import ReportInputs, SectionContent, html_table, png

SHAPE_COLUMNS = ["layer", "unit", "feature", "x", "learned", "initial"]
FEATURE_FUNCTIONS = "feature_functions"  # the KST model's per-feature layer (models.FEATURE_FUNCTIONS)


def layer_curves(layer: Any, x: np.ndarray, units_shown: int, feature_names: list[str] | None = None) -> pd.DataFrame:
    """One learnable layer on the grid `x`: learned and initial value, per unit when per-unit.

    The KST model's per-feature layer shows every unit, named by its input feature.
    """
    units = int(layer.input.shape[-1])
    fresh = type(layer).from_config(layer.get_config())
    fresh.build((None, units))
    grid = np.repeat(x[:, None], units, axis=1).astype("float32")
    learned, initial = np.asarray(layer(grid)), np.asarray(fresh(grid))
    per_unit = getattr(layer, "per_unit", False)
    features = layer.name == FEATURE_FUNCTIONS
    shown = range(units if features else min(units_shown, units)) if per_unit else [0]
    named = features and feature_names is not None and len(feature_names) == units
    names = list(feature_names) if named else [f"feature {i}" for i in range(units)]
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "layer": layer.name,
                    "unit": unit if per_unit else -1,
                    "feature": names[unit] if features else "",
                    "x": x,
                    "learned": learned[:, unit],
                    "initial": initial[:, unit],
                }
            )
            for unit in shown
        ],
        ignore_index=True,
    )


def learned_shapes(model: Any, points: int, units_shown: int, feature_names: list[str] | None = None) -> pd.DataFrame:
    """Every learnable activation of the model on its grid range widened by 1 on each side (unit -1: one function per layer)."""
    from ablation_lab.models.layers import LEARNABLE_LAYERS

    frames = []
    for layer in model.layers:
        if isinstance(layer, LEARNABLE_LAYERS):
            low, high = layer.grid_range
            frames.append(layer_curves(layer, np.linspace(low - 1, high + 1, points), units_shown, feature_names))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SHAPE_COLUMNS)


def change_table(shapes: pd.DataFrame) -> pd.DataFrame:
    """Per (variant, layer): how far training moved the function, max |learned - initial| on the grid, mean over seeds and units."""
    if shapes.empty:
        return pd.DataFrame(columns=["family", "variant", "layer", "max_change"])
    moved = shapes.assign(change=(shapes["learned"] - shapes["initial"]).abs())
    per_run = moved.groupby(["family", "variant", "seed", "layer", "unit"], sort=False)["change"].max().reset_index()
    return per_run.groupby(["family", "variant", "layer"], sort=False)["change"].mean().rename("max_change").reset_index()


def shapes_run(context: RunContext, params: ShapesParams) -> pd.DataFrame:
    """The learned activation functions of one trained model (empty for fixed activations)."""

    if context.spec["model"].get("activation") not in LEARNABLE_ACTIVATIONS:
        return pd.DataFrame(columns=SHAPE_COLUMNS)
    return learned_shapes(context.model, params.points, params.units_shown, context.split.meta.get("feature_names"))


@dataclass(frozen=True)
class ShapesParams(Params):
    """How the learned shapes are drawn: fixed by `shapes_params` (the config has no block for them)."""

    points: int  # grid points over the input range
    units_shown: int  # units drawn per layer


def shapes_params(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """Asked for whenever the study has a learnable activation, in the baseline or the activation family."""
    named = {config["model"].get("activation"), *config["families"].get("activation", {}).get("functions", [])}
    return {"points": 121, "units_shown": 4} if named & set(LEARNABLE_ACTIVATIONS) else None


def plot_feature_functions(shapes: pd.DataFrame, variants: Sequence[dict[str, Any]], path: str | Path) -> None:
    """The KST model's learned function of each input feature, one small panel per feature (the
    baseline's, one line per seed; dashed: as initialised)."""
    from ablation_lab.report.figures import empty_figure, save_figure, sns, variant_labels

    features = shapes[shapes["layer"] == "feature_functions"]
    if features.empty:
        empty_figure(path, "No per-feature functions (the model is not kind kst).")
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
    save_figure(grid.figure, path)


def plot_activation_shapes(
    shapes: pd.DataFrame, variants: Sequence[dict[str, Any]], path: str | Path, features_path: str | Path | None = None
) -> None:
    """One panel per learnable variant and layer: the learned function (one line per seed, and per
    unit when per-unit), as initialised (dashed), and the fixed activations in grey for scale.
    The KST model's per-feature functions go to their own figure (`features_path`)."""
    from ablation_lab.report.figures import empty_figure, plt, save_figure, sns, variant_labels

    if features_path is not None:
        plot_feature_functions(shapes, variants, features_path)
    shapes = shapes[shapes["layer"] != "feature_functions"]
    if shapes.empty:
        empty_figure(path, "No learnable activation in this study's models.")
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
    save_figure(figure, path)


def activation_shapes_section(inputs: ReportInputs) -> list[SectionContent]:
    shapes = inputs.tables.get("activation_shapes")
    if shapes is None or shapes.empty:
        return []

    section = SectionContent("activation_shapes", "Learned activation shapes").say(
        "The learnable activations of the functional ablation: each trained model's function on a grid of "
        "pre-activations, against the function it started as (dashed) and the fixed activations (grey). Their "
        "accuracy, with intervals, is in the functional ablation's table; here is what they learned. Outside the "
        "grid each function extrapolates linearly."
    )
    section.figures = [
        {"alt": "learned activation functions", "data": png(p)}
        for p in [*inputs.figures.get("activation_shapes", []), *inputs.figures.get("feature_functions", [])]
    ]
    if (shapes["layer"] == "feature_functions").any():
        section.say(
            "The KST model (kind kst) learns one function of each input feature before its sums: the second figure shows "
            "them, one panel per feature, a partial explanation of what the model does with each feature."
        )
    moved = change_table(shapes).rename(columns={"max_change": "max |learned - initial| on the grid (mean over seeds)"})
    section.add_table(html_table(moved.round(4)))
    return [section]


def figures(study: Any) -> list[str]:
    """The learned functions; for the KST model, its per-feature functions too."""
    return ["activation_shapes", *(["feature_functions"] if study.config["model"].get("kind") == "kst" else [])]


def plot(tables: Mapping[str, str], variants: Sequence[dict[str, Any]], out: Mapping[str, str]) -> None:
    shapes = pd.read_csv(tables["activation_shapes"], keep_default_na=False, na_values=[""])
    plot_activation_shapes(shapes, variants, out["activation_shapes"], out.get("feature_functions"))


ANALYSIS = Analysis(
    "activation_shapes",
    "Learned activation shapes",
    "Each learnable activation layer's function on a grid of inputs, learned and as initialised.",
    shapes_run,
    shapes_params,
    ShapesParams,
    code=("models.layers",),
    wants=lambda config, family: family in ("baseline", "activation"),
    figures=figures,
    plot=plot,
    sections=(activation_shapes_section,),
)


FIXED_SHAPES = {
    "relu": lambda x: np.maximum(x, 0),
    "tanh": np.tanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "linear": lambda x: x,
}
