"""Post-hoc knockout: exact at 0%, constant at 100%, dead units, batched = naive, no test reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ablation_lab import knockout
from ablation_lab.compensation import compensation_table
from ablation_lab.train import configure_tensorflow, predict_proba

PARAMS = {"layers": [], "fractions": [0.0, 0.5, 1.0], "orderings": ["random"], "fills": ["zero"], "draws": 2}


@pytest.fixture(scope="module")
def model_and_data():
    import keras
    from ablation_lab.models import build_mlp

    configure_tensorflow(threads=1)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    data = {split: rng.normal(size=(n, 12)).astype(np.float32) for split, n in (("train", 200), ("val", 60), ("test", 80))}
    labels = {split: rng.integers(0, 3, size=len(x)).astype(np.int32) for split, x in data.items()}
    model = build_mlp((12,), 3, [16], "relu", 0.0)
    return model, data, labels


def test_knocking_out_nothing_reproduces_the_models_own_predictions(model_and_data):
    model, data, labels = model_and_data
    split = knockout.split_model(model, "hidden_1")
    activations = split.head(data["test"])
    own = predict_proba(model, data["test"]).argmax(axis=1)
    kept = knockout.masked_predictions(split, activations, np.ones((1, 16), bool), np.zeros(16, np.float32))[0]
    np.testing.assert_array_equal(kept, own)
    table = knockout.knockout_table(model, data, labels, ["a", "b", "c"], PARAMS, seed=1)
    at_zero = table.query("metric == 'accuracy' and fraction == 0.0")["value"]
    assert (at_zero == (own == labels["test"]).mean()).all()


def test_knocking_out_the_whole_only_layer_gives_a_constant_prediction(model_and_data):
    model, data, labels = model_and_data
    split = knockout.split_model(model, "hidden_1")
    none_kept = knockout.masked_predictions(split, split.head(data["test"]), np.zeros((1, 16), bool), np.zeros(16, np.float32))[0]
    assert len(set(none_kept)) == 1
    table = knockout.knockout_table(model, data, labels, ["a", "b", "c"], PARAMS, seed=1)
    at_one = table.query("metric == 'accuracy' and fraction == 1.0")["value"]
    assert (at_one == (labels["test"] == none_kept[0]).mean()).all()


def test_removing_dead_units_changes_no_prediction(model_and_data):
    import keras
    from ablation_lab.models import build_mlp

    _, data, _ = model_and_data
    model = build_mlp((12,), 3, [16], "relu", 0.0)
    kernel, bias = model.get_layer("hidden_1").get_weights()
    kernel[:, :5], bias[:5] = 0.0, -1.0  # five units that can never fire
    model.get_layer("hidden_1").set_weights([kernel, bias])
    split = knockout.split_model(model, "hidden_1")
    activations = {name: split.head(x) for name, x in data.items()}
    own = predict_proba(model, data["test"]).argmax(axis=1)
    rows = pd.DataFrame(knockout.stable_units(split, "hidden_1", activations, own)).set_index("metric")["value"]
    assert rows["dead_units"] >= 5 and rows["unchanged_without_dead_units"] == 1.0
    keras.backend.clear_session()


def test_batched_masks_equal_one_cloned_model_per_mask(model_and_data):
    model, data, _ = model_and_data
    masks = np.random.default_rng(3).random((6, 16)) > 0.4
    split = knockout.split_model(model, "hidden_1")
    batched = knockout.masked_predictions(split, split.head(data["test"]), masks, np.zeros(16, np.float32))
    np.testing.assert_array_equal(batched, knockout.naive_predictions(model, "hidden_1", data["test"], masks))


def test_chunked_evaluation_equals_one_call(model_and_data, monkeypatch):
    model, data, _ = model_and_data
    masks = np.random.default_rng(4).random((9, 16)) > 0.5
    split = knockout.split_model(model, "hidden_1")
    activations = split.head(data["test"])
    whole = knockout.masked_predictions(split, activations, masks, np.zeros(16, np.float32))
    monkeypatch.setattr(knockout, "MEMORY_BUDGET", activations.nbytes * 2)  # two masks per call
    np.testing.assert_array_equal(knockout.masked_predictions(split, activations, masks, np.zeros(16, np.float32)), whole)


def test_single_unit_importance_reads_only_the_validation_split(model_and_data, monkeypatch):
    model, data, labels = model_and_data
    seen = []
    real = knockout.single_unit_importance

    def spy(split, activations, split_labels, fill):
        seen.append(split_labels)
        return real(split, activations, split_labels, fill)

    monkeypatch.setattr(knockout, "single_unit_importance", spy)
    params = {**PARAMS, "orderings": ["importance_highest", "activation_lowest"]}
    first = knockout.knockout_table(model, data, labels, ["a", "b", "c"], params, seed=1)
    assert len(seen) == 1 and seen[0] is labels["val"]
    shuffled = {**labels, "test": np.random.default_rng(9).permutation(labels["test"])}
    second = knockout.knockout_table(model, data, shuffled, ["a", "b", "c"], params, seed=1)
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
    table = compensation_table(runs, None, variants, {"layers": [], "fills": ["zero"]}).set_index("point")
    gaps = np.array([0.30, 0.26, 0.28])
    assert table.loc["gauss-0.5", "gap"] == pytest.approx(gaps.mean())
    assert table.loc["gauss-0.5", "gap_ci_low"] < gaps.mean() < table.loc["gauss-0.5", "gap_ci_high"]
    assert table.loc["area", "gap"] == pytest.approx(gaps.mean())
