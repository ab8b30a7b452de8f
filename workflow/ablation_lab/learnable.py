"""The learned shapes of learnable activations (GP-interpolated control points, basis sums).

For every learnable activation layer of a trained model, its function on a grid of inputs,
next to the function it started as: what the functional ablation's learnable variants
learned. The layers themselves are in ablation_lab/layers.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

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
    from ablation_lab.layers import LEARNABLE_LAYERS

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
