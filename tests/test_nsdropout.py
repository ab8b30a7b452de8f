"""NSDropout: hand-computed masks, label use per inference mode, no test reads, reload, the family and report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ablation_lab.analyses import nsdropout
from ablation_lab.training.train import configure_tensorflow, predict_proba, train_model

configure_tensorflow(threads=1)


def _layer(units: int = 5, n_classes: int = 2, rate: float = 0.4, interval: int = 1):
    from ablation_lab.models.layers import NSDropout

    layer = NSDropout(rate, n_classes, mask_interval=interval, seed=3)
    layer.build((None, units))
    return layer


# A hand-made batch: 4 examples, 5 units, classes 0 and 1; 40% of 5 units = 2 dropped per class.
X = np.array([[1, 2, 3, 4, 5], [3, 2, 1, 0, 5], [0, 0, 9, 1, 1], [2, 4, 1, 1, 3]], dtype=np.float32)
Y = np.array([0, 0, 1, 1], dtype=np.int32)
HELD_OUT = np.array([[2, 2, 2, 2, 0], [1, 2, 3, 1, 2]], dtype=np.float32)
# class 0: train mean [2, 2, 2, 2, 5] - held-out [2, 2, 2, 2, 0] = [0, 0, 0, 0, 5] -> drop unit 4 and, of the
# tied zeros, unit 0 (top_k keeps the lower index first); class 1: mean [1, 2, 5, 1, 2] - [1, 2, 3, 1, 2] =
# [0, 0, 2, 0, 0] -> drop unit 2 and unit 0.
EXPECTED = np.array([[0, 1, 1, 1, 0], [0, 1, 0, 1, 1]], dtype=np.float32)


def test_class_masks_equal_the_hand_computed_ones_and_scale_kept_units():
    layer = _layer()
    layer.held_out_means.assign(HELD_OUT)
    layer.updates.assign(1)  # past the first (Bernoulli) update
    out = np.asarray(layer(X, labels=Y, training=True))
    np.testing.assert_array_equal(np.asarray(layer.masks), EXPECTED)
    np.testing.assert_allclose(out, X * EXPECTED[Y] / 0.6, rtol=1e-6)
    assert int(layer.updates.numpy()) == 2


def test_the_first_update_is_an_ordinary_bernoulli_mask():
    layer = _layer(units=400, rate=0.5)
    x = np.ones((8, 400), dtype=np.float32)
    out = np.asarray(layer(x, labels=np.array([0, 1] * 4), training=True))
    assert set(np.unique(out)) <= {0.0, 2.0}
    assert 0.4 < (out == 0).mean() < 0.6
    np.testing.assert_array_equal(np.asarray(layer.masks), 1.0), "class masks start once the first update is done"


def test_masks_wait_for_their_interval_and_absent_classes_keep_theirs():
    layer = _layer(interval=2)
    layer.held_out_means.assign(HELD_OUT)
    layer.updates.assign(1)
    layer(X, labels=Y, training=True)  # update 1: 1 % 2 != 0, masks stay all ones
    np.testing.assert_array_equal(np.asarray(layer.masks), 1.0)
    layer(X[:2], labels=Y[:2], training=True)  # update 2: recomputed, but the batch holds only class 0
    np.testing.assert_array_equal(np.asarray(layer.masks), [EXPECTED[0], [1, 1, 1, 1, 1]])


def test_gradients_flow_through_the_mask_to_the_inputs():
    import tensorflow as tf

    layer = _layer()
    layer.held_out_means.assign(HELD_OUT)
    layer.updates.assign(1)
    x = tf.constant(X)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(layer(x, labels=Y, training=True))
    np.testing.assert_allclose(tape.gradient(total, x).numpy(), EXPECTED[Y] / 0.6, rtol=1e-6)


def test_training_without_labels_names_the_layer():
    with pytest.raises(ValueError, match=r"NSDropout layer .* needs the batch's labels"):
        _layer()(X, training=True)


def _arrays(seed: int = 0, n_classes: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", 240), ("val", 90), ("test", 90)):
        y = rng.integers(0, n_classes, n).astype(np.int32)
        out[f"x_{split}"] = (rng.normal(size=(n, 12)) + 1.5 * y[:, None]).astype(np.float32)
        out[f"y_{split}"] = y
    return out


SPEC = {
    "model": {"hidden_units": [16, 8], "activation": "relu", "dropout": 0.25, "dropout_kind": "nsdropout", "dropout_layers": [1]},
    "training": {"optimizer": "adam", "learning_rate": 0.01, "epochs": 3, "batch_size": 48, "early_stopping_patience": 0, "loop": "fast"},
}


@pytest.fixture(scope="module")
def trained():
    return train_model(SPEC, _arrays(), 3, seed=1).model


def _masks(model) -> np.ndarray:
    return np.asarray(model.get_layer("nsdropout_1").masks)


def test_training_leaves_class_masks_that_drop_a_quarter_of_the_units(trained):
    masks = _masks(trained)
    assert masks.shape == (3, 16)
    np.testing.assert_array_equal(masks.sum(axis=1), 12)  # round(16 x 0.25) = 4 dropped per class


def test_masks_never_read_the_test_split(trained):
    arrays = _arrays()
    scrambled = dict(arrays, x_test=np.full_like(arrays["x_test"], 7.0), y_test=np.zeros_like(arrays["y_test"]))
    again = train_model(SPEC, scrambled, 3, seed=1).model
    np.testing.assert_array_equal(_masks(again), _masks(trained))
    held_out = {key: np.asarray(model.get_layer("nsdropout_1").held_out_means) for key, model in (("a", trained), ("b", again))}
    np.testing.assert_array_equal(held_out["a"], held_out["b"])


def test_the_keras_loop_trains_the_same_masks_as_the_fast_loop(trained):
    keras_spec = {**SPEC, "training": {**SPEC["training"], "loop": "keras"}}
    other = train_model(keras_spec, _arrays(), 3, seed=1).model
    np.testing.assert_array_equal(_masks(other), _masks(trained))


def test_only_the_oracle_reads_the_labels(trained):
    arrays = _arrays()
    x, y = arrays["x_test"], arrays["y_test"]
    shuffled = np.random.default_rng(5).permutation(y)
    for mode in nsdropout.LABEL_FREE:
        np.testing.assert_array_equal(nsdropout.predict_mode(trained, x, mode, y), nsdropout.predict_mode(trained, x, mode, shuffled))
    oracle = nsdropout.predict_mode(trained, x, nsdropout.ORACLE, y)
    assert not np.array_equal(oracle, nsdropout.predict_mode(trained, x, nsdropout.ORACLE, shuffled))
    with pytest.raises(ValueError, match="oracle mode needs the true labels"):
        nsdropout.predict_mode(trained, x, nsdropout.ORACLE)


def test_no_mask_is_the_saved_models_own_prediction(trained):
    x = _arrays()["x_test"]
    np.testing.assert_array_equal(nsdropout.predict_mode(trained, x, nsdropout.NONE), predict_proba(trained, x).argmax(axis=1))


def test_a_reloaded_model_predicts_identically_in_every_mode(trained, tmp_path):
    from ablation_lab.models.build import load_model

    path = tmp_path / "nsdropout.keras"
    trained.save(path)
    reloaded = load_model(str(path))  # safe_mode=True
    arrays = _arrays()
    for mode in nsdropout.MODES:
        np.testing.assert_array_equal(
            nsdropout.predict_mode(reloaded, arrays["x_test"], mode, arrays["y_test"]),
            nsdropout.predict_mode(trained, arrays["x_test"], mode, arrays["y_test"]),
        )


def test_mask_dependence_counts_predictions_that_follow_a_wrong_mask():
    # 2 examples (labels 0, 1), 2 classes: under mask 0 both predict 0; under mask 1 both predict 1.
    per_mask = np.array([[[0.9, 0.1], [0.8, 0.2]], [[0.3, 0.7], [0.1, 0.9]]])
    found = nsdropout.mask_dependence(per_mask, np.array([0, 1]))
    assert found == {"wrong_mask_accuracy": 0.0, "follows_mask_rate": 1.0, "true_mask_accuracy": 1.0}
    np.testing.assert_array_equal(nsdropout.own_class_scores(per_mask), [[0.9, 0.7], [0.8, 0.9]])


def test_the_table_has_every_mode_and_a_plain_model_gets_its_standard_row(trained):
    from ablation_lab.models.build import build_mlp

    arrays = _arrays()
    table, hits = nsdropout.nsdropout_table(trained, arrays["x_test"], arrays["y_test"], nsdropout.MODES)
    assert set(table["mode"]) == {*nsdropout.MODES, "wrong-mask"}
    assert set(hits) == {nsdropout.hits_key(m) for m in nsdropout.MODES}
    plain, plain_hits = nsdropout.nsdropout_table(
        build_mlp((12,), 3, [8], "relu", 0.0), arrays["x_test"], arrays["y_test"], nsdropout.MODES
    )
    assert set(plain["mode"]) == {nsdropout.STANDARD} and list(plain_hits) == ["hits_standard"]


def test_summary_intervals_and_the_gap_to_the_oracle():
    rng = np.random.default_rng(0)
    rows, arrays = [], {}
    for seed in (1, 2, 3):
        oracle, honest = rng.random(200) < 0.98, rng.random(200) < 0.8
        arrays[("nsdropout", "ns", seed)] = {"hits_oracle": oracle, "hits_none": honest}
        run = {"family": "nsdropout", "variant": "ns", "seed": seed, "layer": "nsdropout", "rate": 0.2, "metric": "accuracy"}
        run |= {"best_epoch": 5 + seed, "epochs_trained": 300}
        rows += [run | {"mode": "none", "value": honest.mean()}, run | {"mode": "oracle", "value": oracle.mean()}]
    ordered = nsdropout.summarise_modes(pd.DataFrame(rows), arrays)
    assert list(ordered["mode"]) == ["oracle", "none"], "the oracle row leads its model's rows"
    summary = ordered.set_index("mode")
    assert summary.loc["oracle", "error_low"] <= summary.loc["oracle", "error_rate"] <= summary.loc["oracle", "error_high"]
    assert summary.loc["none", "minus_oracle_high"] < 0, "18 points lost without the label, resolved by 600 examples"
    assert pd.isna(summary.loc["oracle", "minus_oracle"]), "the oracle is not compared with itself"
    assert summary.loc["none", "chosen_epochs"] == "6, 7, 8 of 300" and summary.loc["none", "df"] == 2


def test_the_family_shares_runs_with_identical_models(test_config):
    from ablation_lab.study import Study

    config = {**test_config, "families": {**test_config["families"], "nsdropout": {"rates": [0.5]}}}
    from ablation_lab.config import validate_config

    study = Study.from_config(validate_config(config))
    variants = study.variants
    run = study.run_of
    assert run(variants["nsdropout/none"]) == run(variants["baseline/reference"])
    assert run(variants["nsdropout/dropout-0.5"]) == run(variants["dropout/rate-0.5"]), "one hidden layer: layers [1] is every layer"
    assert "nsdrop0.5" in run(variants["nsdropout/nsdropout-0.5"])
    assert [v.id for v in study.analysed("nsdropout")] == ["nsdropout/none", "nsdropout/dropout-0.5", "nsdropout/nsdropout-0.5"]


def test_dropout_layers_beyond_the_model_are_refused():
    from ablation_lab.identity import canonical_model

    with pytest.raises(ValueError, match=r"model.dropout_layers: \[2\] name no hidden layer of a 1-hidden-layer model"):
        canonical_model({"hidden_units": [8], "activation": "relu", "dropout": 0.2, "dropout_layers": [2]})


def test_the_report_section_puts_honest_rows_beside_the_oracle():
    from ablation_lab.analyses.nsdropout import nsdropout_section
    from ablation_lab.report.sections import ReportInputs

    summary = pd.DataFrame(
        [
            {"family": "nsdropout", "variant": "ns", "mode": "oracle", "seeds": 3, "error_rate": 0.0, "error_low": 0.0, "error_high": 0.01},
            {"family": "nsdropout", "variant": "ns", "mode": "none", "seeds": 3, "error_rate": 0.2, "error_low": 0.15, "error_high": 0.25}
            | {"minus_oracle": -0.2, "minus_oracle_low": -0.25, "minus_oracle_high": -0.15},
        ]
    ).assign(method="t over 3 seeds", df=[2, 7], chosen_epochs=["6, 7, 8 of 300", "6, 7, 8 of 300"])
    table = pd.DataFrame(
        [{"family": "nsdropout", "variant": "ns", "seed": 1, "mode": "wrong-mask", "metric": "follows_mask_rate", "value": 0.9}]
    )
    labels = pd.DataFrame([{"family": "nsdropout", "variant": "ns", "label": "NSDropout 0.2"}])
    inputs = ReportInputs(
        study={
            "study": "s",
            "dataset": {"name": "mnist5k"},
            "training": {"epochs": 300, "early_stopping_patience": 0, "keep_best": "val_accuracy"},
        },
        meta={"class_names": list("0123456789")},
        tables={"nsdropout_summary": summary, "nsdropout": table, "summary": labels},
    )
    (section,) = nsdropout_section(inputs)
    text = " ".join(block.get("text", "") + block.get("html", "") for block in section.blocks)
    assert "label leakage" in text and "mnist5k: test error %" in text
    assert "0.00 [0.00, 1.00]" in text and "20.00 [15.00, 25.00]" in text
    assert "gap of 20.00 points excludes 0" in text and "that class 90% of the time (chance 10%)" in text
    assert "up to 300 epochs, with no early stopping" in text and "highest validation accuracy" in text, "the protocol is stated"
    assert "<td>6, 7, 8 of 300</td>" in text and "<td>7</td>" in text, "each row's own df and kept epochs"
