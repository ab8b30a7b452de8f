"""Post-hoc knockout: exact at 0%, constant at 100%, dead units, batched = naive, no test reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ablation_lab.analyses import knockout
from ablation_lab.analyses.compensation import compensation_layer, compensation_table
from ablation_lab.analyses.knockout import KnockoutParams
from ablation_lab.models import surgery
from ablation_lab.training.train import configure_tensorflow, predict_proba
from conftest import quick_training

PARAMS = {"layers": [], "fractions": [0.0, 0.5, 1.0], "orderings": ["random"], "fills": ["zero"], "draws": 2}


@pytest.fixture(scope="module")
def model_and_data():
    import keras
    from ablation_lab.models.build import build_mlp

    configure_tensorflow(threads=1)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    data = {split: rng.normal(size=(n, 12)).astype(np.float32) for split, n in (("train", 200), ("val", 60), ("test", 80))}
    labels = {split: rng.integers(0, 3, size=len(x)).astype(np.int32) for split, x in data.items()}
    model = build_mlp((12,), 3, [16], "relu", 0.0)
    return model, data, labels


def test_knocking_out_nothing_reproduces_the_models_own_predictions(model_and_data):
    model, data, labels = model_and_data
    split = surgery.split_model(model, "hidden_1")
    activations = split.head(data["test"])
    own = predict_proba(model, data["test"]).argmax(axis=1)
    kept = surgery.masked_predictions(split, activations, np.ones((1, 16), bool), np.zeros(16, np.float32))[0]
    np.testing.assert_array_equal(kept, own)
    table = knockout.knockout_table(model, data, labels, ["a", "b", "c"], KnockoutParams.of(PARAMS), seed=1)
    at_zero = table.query("metric == 'accuracy' and fraction == 0.0")["value"]
    assert (at_zero == (own == labels["test"]).mean()).all()


def test_knocking_out_the_whole_only_layer_gives_a_constant_prediction(model_and_data):
    model, data, labels = model_and_data
    split = surgery.split_model(model, "hidden_1")
    none_kept = surgery.masked_predictions(split, split.head(data["test"]), np.zeros((1, 16), bool), np.zeros(16, np.float32))[0]
    assert len(set(none_kept)) == 1
    table = knockout.knockout_table(model, data, labels, ["a", "b", "c"], KnockoutParams.of(PARAMS), seed=1)
    at_one = table.query("metric == 'accuracy' and fraction == 1.0")["value"]
    assert (at_one == (labels["test"] == none_kept[0]).mean()).all()


def test_removing_dead_units_changes_no_prediction(model_and_data):
    import keras
    from ablation_lab.models.build import build_mlp

    _, data, _ = model_and_data
    model = build_mlp((12,), 3, [16], "relu", 0.0)
    kernel, bias = model.get_layer("hidden_1").get_weights()
    kernel[:, :5], bias[:5] = 0.0, -1.0  # five units that can never fire
    model.get_layer("hidden_1").set_weights([kernel, bias])
    split = surgery.split_model(model, "hidden_1")
    activations = {name: split.head(x) for name, x in data.items()}
    own = predict_proba(model, data["test"]).argmax(axis=1)
    rows = pd.DataFrame(knockout.stable_units(split, "hidden_1", activations, own)).set_index("metric")["value"]
    assert rows["dead_units"] >= 5 and rows["unchanged_without_dead_units"] == 1.0
    keras.backend.clear_session()


def test_batched_masks_equal_one_cloned_model_per_mask(model_and_data):
    model, data, _ = model_and_data
    masks = np.random.default_rng(3).random((6, 16)) > 0.4
    split = surgery.split_model(model, "hidden_1")
    batched = surgery.masked_predictions(split, split.head(data["test"]), masks, np.zeros(16, np.float32))
    np.testing.assert_array_equal(batched, surgery.naive_predictions(model, "hidden_1", data["test"], masks))


def test_chunked_evaluation_equals_one_call(model_and_data, monkeypatch):
    model, data, _ = model_and_data
    masks = np.random.default_rng(4).random((9, 16)) > 0.5
    split = surgery.split_model(model, "hidden_1")
    activations = split.head(data["test"])
    whole = surgery.masked_predictions(split, activations, masks, np.zeros(16, np.float32))
    monkeypatch.setattr(surgery, "MEMORY_BUDGET", activations.nbytes * 2)  # two masks per call
    np.testing.assert_array_equal(surgery.masked_predictions(split, activations, masks, np.zeros(16, np.float32)), whole)


def test_single_unit_importance_reads_only_the_validation_split(model_and_data, monkeypatch):
    model, data, labels = model_and_data
    seen = []
    real = knockout.single_unit_importance

    def spy(split, activations, split_labels, fill):
        seen.append(split_labels)
        return real(split, activations, split_labels, fill)

    monkeypatch.setattr(knockout, "single_unit_importance", spy)
    params = {**PARAMS, "orderings": ["importance_highest", "activation_lowest"]}
    first = knockout.knockout_table(model, data, labels, ["a", "b", "c"], KnockoutParams.of(params), seed=1)
    assert len(seen) == 1 and seen[0] is labels["val"]
    shuffled = {**labels, "test": np.random.default_rng(9).permutation(labels["test"])}
    second = knockout.knockout_table(model, data, shuffled, ["a", "b", "c"], KnockoutParams.of(params), seed=1)
    # the orderings are fitted without the test labels: accuracies change, the masks do not
    assert len(first) == len(second)


def test_unit_orders_and_fills():
    rng = np.random.default_rng(0)
    scores = {"magnitude": np.array([3.0, 1.0, 2.0]), "activation": np.array([0.5, 0.1, 0.9]), "importance": np.array([0.0, 0.2, 0.1])}
    assert knockout.unit_order("magnitude_smallest", rng, scores).tolist() == [1, 2, 0]
    assert knockout.unit_order("magnitude_largest", rng, scores).tolist() == [0, 2, 1]
    assert knockout.unit_order("activation_lowest", rng, scores).tolist() == [1, 0, 2]
    assert knockout.unit_order("importance_highest", rng, scores).tolist() == [1, 2, 0]
    assert sorted(knockout.unit_order("random", rng, scores).tolist()) == [0, 1, 2]
    assert knockout.keep_masks(np.array([2, 0, 1]), [0.0, 0.34, 1.0]).tolist() == [[True] * 3, [True, True, False], [False] * 3]
    train = np.array([[0.0, 2.0], [2.0, 4.0]], dtype=np.float32)
    assert knockout.fill_values("mean", train, 5, rng).tolist() == [1.0, 3.0]
    resampled = knockout.fill_values("resample", train, 5, rng)
    assert resampled.shape == (5, 2) and all(row.tolist() in train.tolist() for row in resampled)
    assert knockout.curve_area([0.0, 0.5, 1.0], [0.9, 0.9, 0.9]) == pytest.approx(0.9)


def test_compensation_gap_pairs_retrained_and_posthoc_runs_by_seed():
    runs = pd.DataFrame(
        [
            {"family": f, "variant": v, "seed": s, "accuracy": a}
            for f, v, accs in [("noise", "gauss-0.5", [0.80, 0.82, 0.81]), ("noise_posthoc", "gauss-0.5", [0.50, 0.56, 0.53])]
            for s, a in zip([1, 2, 3], accs, strict=True)
        ]
    )
    variants = [
        {"family": "noise", "variant": "gauss-0.5", "label": "gaussian 0.5", "coords": {"noise level": 0.5}},
        {"family": "noise_posthoc", "variant": "gauss-0.5", "label": "gaussian 0.5 (post-hoc)", "coords": {"noise level": 0.5}},
    ]
    table = compensation_table(runs, None, variants, KnockoutParams.of({"layers": [], "fills": ["zero"]})).set_index("point")
    gaps = np.array([0.30, 0.26, 0.28])
    assert table.loc["gauss-0.5", "gap"] == pytest.approx(gaps.mean())
    assert table.loc["gauss-0.5", "gap_ci_low"] < gaps.mean() < table.loc["gauss-0.5", "gap_ci_high"]
    assert table.loc["area", "gap"] == pytest.approx(gaps.mean())


# --- conv layers: a unit is a channel (the last axis), removed at every position ---

CNN_CLASSES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def cnn_and_images():
    """A tiny CNN trained briefly on 8 x 8 images whose class is a bright row (its predictions vary)."""
    from ablation_lab.identity import canonical_model
    from ablation_lab.training.train import train_model

    configure_tensorflow(threads=1)
    rng = np.random.default_rng(1)
    data, labels = {}, {}
    for split, n in (("train", 120), ("val", 40), ("test", 50)):
        labels[split] = rng.integers(0, 3, size=n).astype(np.int32)
        data[split] = rng.random((n, 8, 8)).astype(np.float32) * 0.5
        data[split][np.arange(n), labels[split] * 2, :] += 0.6
    spec = {
        "model": canonical_model({"kind": "cnn", "filters": [3, 4], "hidden_units": [5], "activation": "relu", "dropout": 0.0}),
        "training": quick_training(),
    }
    arrays = {f"{key}_{split}": value[split] for key, value in (("x", data), ("y", labels)) for split in data}
    return train_model(spec, arrays, 3, seed=1).model, data, labels


def _zeroed_reference(model, next_layer: str, channel_rows, x: np.ndarray) -> np.ndarray:
    """Predictions of a copy of the model whose next weighted layer ignores the removed channels' inputs."""
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    kernel, *rest = clone.get_layer(next_layer).get_weights()
    kernel = kernel.copy()
    channel_rows(kernel)
    clone.get_layer(next_layer).set_weights([kernel, *rest])
    return predict_proba(clone, x).argmax(axis=1)


def test_the_knock_out_able_layers_of_a_cnn_are_its_conv_blocks_then_its_dense_layers(cnn_and_images):
    model, _, _ = cnn_and_images
    assert surgery.knockout_layers(model) == ["conv_act_1", "conv_act_2", "hidden_1"]
    assert surgery.hidden_layers(model) == ["hidden_1"]
    assert surgery.built_in_layers({"kind": "cnn", "filters": [3, 4], "hidden_units": [5]}) == surgery.knockout_layers(model)


def test_a_channel_mask_with_zero_fill_equals_zeroing_the_channels_slice_of_the_next_kernel(cnn_and_images):
    model, data, _ = cnn_and_images
    x = data["test"]
    removed = [0, 2]
    # conv -> conv: the next conv kernel's input-channel slice kernel[..., c, :]
    split = surgery.split_model(model, "conv_act_1")
    keep = np.ones((1, 3), bool)
    keep[0, removed] = False
    masked = surgery.masked_predictions(split, split.head(x), keep, np.zeros(3, np.float32))[0]

    def conv_slice(kernel):
        kernel[..., removed, :] = 0.0

    own = predict_proba(model, x).argmax(axis=1)
    assert len(set(own)) > 1 and (masked != own).any()  # a test that can fail
    np.testing.assert_array_equal(masked, _zeroed_reference(model, "conv_2", conv_slice, x))
    # conv -> pool -> flatten -> dense: the dense rows of the channel, index % channels == c
    split = surgery.split_model(model, "conv_act_2")
    keep = np.ones((1, 4), bool)
    keep[0, removed] = False
    masked = surgery.masked_predictions(split, split.head(x), keep, np.zeros(4, np.float32))[0]

    def dense_rows(kernel):
        kernel[np.isin(np.arange(len(kernel)) % 4, removed)] = 0.0

    assert (masked != own).any()
    np.testing.assert_array_equal(masked, _zeroed_reference(model, "hidden_1", dense_rows, x))
    masks = np.random.default_rng(5).random((4, 4)) > 0.5
    batched = surgery.masked_predictions(split, split.head(x), masks, np.zeros(4, np.float32))
    np.testing.assert_array_equal(batched, surgery.naive_predictions(model, "conv_act_2", x, masks))


def test_keeping_every_channel_reproduces_the_models_own_predictions(cnn_and_images, monkeypatch):
    model, data, _ = cnn_and_images
    own = predict_proba(model, data["test"]).argmax(axis=1)
    for layer in surgery.knockout_layers(model):
        split = surgery.split_model(model, layer)
        activations = split.head(data["test"])
        keep = np.ones((2, activations.shape[-1]), bool)
        np.testing.assert_array_equal(surgery.masked_predictions(split, activations, keep, np.zeros(keep.shape[1], np.float32)), [own, own])
    # one mask over all examples above the budget: the examples are chunked too
    split = surgery.split_model(model, "conv_act_1")
    activations = split.head(data["test"])
    masks = np.random.default_rng(6).random((3, 3)) > 0.5
    whole = surgery.masked_predictions(split, activations, masks, np.zeros(3, np.float32))
    monkeypatch.setattr(surgery, "MEMORY_BUDGET", activations[:7].nbytes)
    np.testing.assert_array_equal(surgery.masked_predictions(split, activations, masks, np.zeros(3, np.float32)), whole)


def test_channel_fills_magnitudes_and_dead_channels(cnn_and_images):
    model, data, _ = cnn_and_images
    split = surgery.split_model(model, "conv_act_1")
    full = split.head(data["train"])  # (120, 8, 8, 3)
    train = surgery.TrainActivations(split.head, data["train"], chunk=32)
    np.testing.assert_allclose(knockout.fill_values("mean", train, 5, np.random.default_rng(0)), full.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(train.high, full.max(axis=(0, 1, 2)), rtol=1e-6)
    resampled = knockout.fill_values("resample", train, 5, np.random.default_rng(0))
    drawn = np.random.default_rng(0).integers(0, len(full), size=5)
    np.testing.assert_allclose(resampled, full[drawn], rtol=1e-6)  # whole training examples' channel maps
    kernel = model.get_layer("conv_2").get_weights()[0]  # (3, 3, 3 channels in, 4 out)
    np.testing.assert_allclose(split.magnitude, [np.linalg.norm(kernel[:, :, c, :]) for c in range(3)], rtol=1e-6)
    dense = surgery.split_model(model, "conv_act_2")
    rows = model.get_layer("hidden_1").get_weights()[0]  # (2 x 2 x 4, 5) after Flatten
    expected = [np.linalg.norm(rows[np.arange(len(rows)) % 4 == c]) for c in range(4)]
    np.testing.assert_allclose(dense.magnitude, expected, rtol=1e-6)
    own = predict_proba(model, data["test"]).argmax(axis=1)
    activations = {"train": train, "test": split.head(data["test"])}
    stable = pd.DataFrame(knockout.stable_units(split, "conv_act_1", activations, own)).set_index("metric")["value"]
    assert stable["units"] == 3 and stable["spatial_axes"] == 2
    assert stable["dead_units"] == (full.max(axis=(0, 1, 2)) <= 0).sum()


def test_the_knockout_table_of_a_cnn_has_conv_and_dense_rows_and_layers_pick_by_name(cnn_and_images):
    model, data, labels = cnn_and_images
    params = {
        **PARAMS,
        "orderings": ["random", "magnitude_smallest", "activation_lowest", "importance_highest"],
        "fills": ["zero", "mean", "resample"],
        "draws": 1,
    }
    table = knockout.knockout_table(model, data, labels, CNN_CLASSES, KnockoutParams.of(params), seed=1)
    assert list(dict.fromkeys(table["layer"])) == ["conv_act_1", "conv_act_2", "hidden_1"]
    own = (predict_proba(model, data["test"]).argmax(axis=1) == labels["test"]).mean()
    assert (table.query("metric == 'accuracy' and fraction == 0.0")["value"] == own).all()
    named = knockout.knockout_table(model, data, labels, CNN_CLASSES, KnockoutParams.of({**PARAMS, "layers": ["conv_act_2", 1]}), seed=1)
    assert list(dict.fromkeys(named["layer"])) == ["conv_act_2", "hidden_1"]
    with pytest.raises(
        ValueError,
        match=r"^posthoc.layers\[0\]: 'conv_act_9' is not a knock-out-able layer of this model \(available: conv_act_1, conv_act_2, hidden_1\)$",
    ):
        knockout.knockout_table(model, data, labels, CNN_CLASSES, KnockoutParams.of({**PARAMS, "layers": ["conv_act_9"]}), seed=1)
    # a shallower variant of a built-in model skips what it lacks, as a hidden layer past its depth
    skipped = knockout.knockout_table(
        model,
        data,
        labels,
        CNN_CLASSES,
        KnockoutParams.of({**PARAMS, "layers": ["conv_act_9", 2, "conv_act_1"]}),
        seed=1,
        skip_missing=True,
    )
    assert set(skipped["layer"]) == {"conv_act_1"}


def test_a_users_chain_model_knocks_out_its_non_linear_layers_and_refuses_branches():
    import keras

    chain = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(2, 3, activation="relu", name="c1"),
            keras.layers.Conv2D(2, 3, name="c2"),
            keras.layers.Activation("tanh", name="act"),
            keras.layers.Flatten(),
            keras.layers.Dense(4, activation="relu", name="d1"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ]
    )
    assert surgery.knockout_layers(chain) == ["c1", "act", "d1"]
    inputs = keras.Input((4,))
    branch = keras.layers.Dense(4, activation="relu", name="a")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax", name="b")(keras.layers.Add()([inputs, branch]))
    with pytest.raises(ValueError, match="needs a chain model"):
        surgery.knockout_layers(keras.Model(inputs, outputs))


def test_the_compensation_layer_is_the_first_hidden_layer_named():
    assert compensation_layer([]) == 1
    assert compensation_layer(["conv_act_1", 2]) == 2
    assert compensation_layer(["conv_act_1", "hidden_3", 1]) == 3
    assert compensation_layer(["conv_act_1"]) is None


def test_the_report_says_channels_for_conv_layers(cnn_and_images):
    from ablation_lab.analyses.knockout import knockout_section
    from ablation_lab.report.sections import ReportInputs

    model, data, labels = cnn_and_images
    table = knockout.knockout_table(model, data, labels, CNN_CLASSES, KnockoutParams.of({**PARAMS, "layers": ["conv_act_1", 1]}), seed=1)
    table.insert(0, "family", "baseline")
    table.insert(1, "variant", "reference")
    table.insert(2, "seed", 1)
    (section,) = knockout_section(ReportInputs(study={"model": {"kind": "cnn"}}, meta={}, tables={"knockout": table}))
    text = " ".join(block.get("text", "") for block in section.blocks)
    assert "channels of the conv layers conv_act_1, each at every position" in text
    stable = [block for block in section.blocks if "units or channels" in str(block)]
    assert stable and "channel" in str(stable[0]) and "hidden_1" in str(stable[0])
