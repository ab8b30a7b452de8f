"""Learnable activations: GP control points and basis sums; init, extrapolation, gradients, reload, config, shapes."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest
from ablation_lab.config import ConfigError, validate_config
from ablation_lab.identity import LEARNABLE_ACTIVATIONS, canonical_model
from ablation_lab.models.layers import BasisActivation, GPActivation
from ablation_lab.training.train import configure_tensorflow, predict_proba, train_model
from conftest import deep_set, quick_training

configure_tensorflow(threads=1)
GRID = np.linspace(-3, 3, 601, dtype=np.float32)[:, None]


def _values(layer, x: np.ndarray = GRID) -> np.ndarray:
    return np.asarray(layer(x))[:, 0]


@pytest.mark.parametrize(("init", "tolerance"), [("relu", 0.03), ("tanh", 0.006), ("sigmoid", 0.002)])
def test_a_gp_activation_starts_as_its_init_within_the_interpolation_error(init, tolerance):
    reference = np.asarray(keras.activations.get(init)(GRID[:, 0]))
    error = np.abs(_values(GPActivation(init=init)) - reference)
    assert error.max() < tolerance
    assert error.max() > 0 or init != "relu", "relu's kink is between grid points: interpolation cannot be exact"


def test_outside_the_grid_it_extrapolates_linearly_with_the_edge_slope():
    layer = GPActivation(init="tanh")
    x = np.array([[3.0], [4.0], [5.0], [-3.0], [-4.0], [-6.0]], dtype=np.float32)
    y = _values(layer, x)
    values, spacing = np.asarray(layer.control_values), layer.spacing
    np.testing.assert_allclose(y[1] - y[0], (values[-1] - values[-2]) / spacing, rtol=1e-4)
    np.testing.assert_allclose(y[2] - y[1], y[1] - y[0], rtol=1e-4)
    np.testing.assert_allclose((y[3] - y[5]) / 3, (values[1] - values[0]) / spacing, rtol=1e-4)


def test_interpolation_weights_are_solved_once_at_construction(monkeypatch):
    layer = GPActivation()
    layer.build((None, 1))

    def refuse(*args, **kwargs):
        raise AssertionError("solved per call")

    monkeypatch.setattr(np.linalg, "inv", refuse)
    monkeypatch.setattr(np.linalg, "solve", refuse)
    _values(layer)


@pytest.mark.parametrize("layer", [GPActivation(), GPActivation(per_unit=True), BasisActivation("poly", 3), BasisActivation("standard")])
def test_gradients_reach_the_learned_parameters(layer):
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).normal(size=(16, 4)).astype("float32") * 2)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(tf.square(layer(x)))
    (gradient,) = tape.gradient(total, layer.trainable_weights)
    assert np.abs(np.asarray(gradient)).sum() > 0
    assert len(layer.trainable_weights) == 1


def test_per_unit_learns_one_function_per_unit():
    layer = GPActivation(num_control_points=5, per_unit=True)
    layer.build((None, 7))
    assert tuple(layer.control_values.shape) == (7, 5)


def test_the_standard_basis_starts_exactly_as_its_init_and_poly_as_its_fit():
    np.testing.assert_allclose(_values(BasisActivation("standard", init="relu")), np.maximum(GRID[:, 0], 0), atol=1e-6)
    cubic = BasisActivation("poly", 3, init="tanh")
    grid = np.linspace(-3, 3, 101)
    np.testing.assert_allclose(cubic.initial_coefficients(), np.polynomial.polynomial.polyfit(grid, np.tanh(grid), 3), atol=1e-5)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: BasisActivation("chebyshev"), "unknown basis 'chebyshev'"),
        (lambda: GPActivation(num_control_points=2), "needs >= 3 control points"),
        (lambda: GPActivation(length_scale=0.0), "length_scale > 0"),
    ],
)
def test_bad_layer_settings_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("model.learnable", {"control_points": 2}, r"model.learnable.control_points: 2 is less than the minimum of 3"),
        ("model.learnable", {"length_scale": 0}, r"model.learnable.length_scale"),
        ("families.activation.functions", ["relu", "slaf-chebyshev"], r"families.activation.functions\[1\]: 'slaf-chebyshev'"),
    ],
)
def test_the_config_check_names_the_bad_key(test_config, key, value, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(deep_set(test_config, key, value))


def test_an_inverted_grid_names_its_key():
    with pytest.raises(ValueError, match=r"model.learnable.grid_range: \[3, -3\] must be \[low, high\]"):
        canonical_model({"hidden_units": [8], "activation": "gp", "dropout": 0.0, "learnable": {"grid_range": [3, -3]}})


def test_learnable_settings_are_in_a_runs_identity_only_when_used():
    gp = canonical_model({"hidden_units": [8], "activation": "gp", "dropout": 0.0})
    assert gp["learnable"]["control_points"] == 21
    relu = canonical_model({"hidden_units": [8], "activation": "relu", "dropout": 0.0, "learnable": {"control_points": 9}})
    assert "learnable" not in relu


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", 240), ("val", 80), ("test", 80)):
        y = rng.integers(0, 3, n).astype(np.int32)
        out[f"x_{split}"], out[f"y_{split}"] = (rng.normal(size=(n, 10)) + y[:, None]).astype(np.float32), y
    return out


def _trained(activation: str):
    spec = {
        "model": canonical_model({"hidden_units": [12], "activation": activation, "dropout": 0.0}),
        "training": quick_training(),
    }
    return train_model(spec, _arrays(), 3, seed=1).model


@pytest.mark.parametrize("activation", (*LEARNABLE_ACTIVATIONS[:2], "slaf-poly3", "slaf-standard"))
def test_training_changes_the_function_and_a_reload_predicts_identically(activation, tmp_path):
    from ablation_lab.models.build import load_model

    model = _trained(activation)
    layer = model.get_layer("hidden_1")
    fresh = type(layer).from_config(layer.get_config())
    fresh.build((None, 12))
    learned = np.asarray(layer.trainable_weights[0])
    assert not np.allclose(learned, np.asarray(fresh.trainable_weights[0])), "training moved the activation"
    path = tmp_path / "model.keras"
    model.save(path)
    x = _arrays()["x_test"]
    np.testing.assert_array_equal(predict_proba(load_model(str(path)), x), predict_proba(model, x))


def test_hidden_layers_output_the_activations_so_knockout_removes_units():
    from ablation_lab.models import surgery

    model = _trained("gp")
    assert surgery.hidden_layers(model) == ["hidden_1"] and isinstance(model.get_layer("hidden_1"), GPActivation)
    split = surgery.split_model(model, "hidden_1")
    x = _arrays()["x_test"]
    kept = surgery.masked_predictions(split, split.head(x), np.ones((1, 12), dtype=bool), np.zeros(12, np.float32))
    np.testing.assert_array_equal(kept[0], predict_proba(model, x).argmax(axis=1))


def test_learned_shapes_table_and_how_far_training_moved_them():
    from ablation_lab.analyses.activation_shapes import change_table, learned_shapes

    shapes = learned_shapes(_trained("gp-per-unit"), points=41, units_shown=3)
    assert set(shapes["unit"]) == {0, 1, 2} and len(shapes) == 3 * 41
    assert shapes["x"].min() == -4 and shapes["x"].max() == 4, "the grid range widened by 1 on each side"
    moved = change_table(shapes.assign(family="activation", variant="gp-per-unit", seed=1))
    assert len(moved) == 1 and moved["max_change"].iloc[0] > 0
    assert learned_shapes(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), 11, 2).empty


def test_the_report_section_draws_the_change_table():
    from ablation_lab.analyses.activation_shapes import activation_shapes_section
    from ablation_lab.report.sections import ReportInputs

    shapes = pd.DataFrame(
        {
            "family": "activation",
            "variant": "gp",
            "seed": 1,
            "layer": "hidden_1",
            "unit": -1,
            "x": [0.0, 1.0],
            "learned": [0.0, 1.5],
            "initial": [0.0, 1.0],
        }
    )
    (section,) = activation_shapes_section(ReportInputs(study={}, meta={}, tables={"activation_shapes": shapes}))
    table = next(block["html"] for block in section.blocks if block["kind"] == "table")
    assert "hidden_1" in table and "0.5" in table


def test_the_kst_model_learns_one_named_function_per_feature():
    from ablation_lab.analyses.activation_shapes import learned_shapes
    from ablation_lab.models.build import build_model

    model = build_model(canonical_model({"kind": "kst", "hidden_units": [4], "activation": "gp", "dropout": 0.0}), (10,), 3)
    assert isinstance(model.get_layer("feature_functions"), GPActivation) and model.get_layer("feature_functions").per_unit
    names = [f"f{i}" for i in range(10)]
    shapes = learned_shapes(model, points=5, units_shown=2, feature_names=names)
    features = shapes[shapes["layer"] == "feature_functions"]
    assert list(dict.fromkeys(features["feature"])) == names, "every feature shown, by name"
    with pytest.raises(ValueError, match=r"model.activation: kind kst needs a learnable outer function"):
        canonical_model({"kind": "kst", "hidden_units": [4], "activation": "relu", "dropout": 0.0})


def test_a_kst_study_reloads_and_predicts_identically(tmp_path):
    from ablation_lab.models.build import load_model

    spec = {
        "model": canonical_model({"kind": "kst", "hidden_units": [6], "activation": "gp-per-unit", "dropout": 0.0}),
        "training": {
            "optimizer": "adam",
            "learning_rate": 0.02,
            "epochs": 2,
            "batch_size": 32,
            "early_stopping_patience": 0,
            "loop": "fast",
        },
    }
    model = train_model(spec, _arrays(), 3, seed=1).model
    model.save(tmp_path / "kst.keras")
    x = _arrays()["x_test"]
    np.testing.assert_array_equal(predict_proba(load_model(str(tmp_path / "kst.keras")), x), predict_proba(model, x))
