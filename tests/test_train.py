"""Training: determinism, the fast loop against model.fit, divergence, safe model files."""

from __future__ import annotations

import numpy as np
import pytest
from ablation_lab.analyses.evaluation import classification_metrics
from ablation_lab.data.split import prepare
from ablation_lab.training.train import configure_tensorflow, predict_proba, train_model

SPLIT_CFG = {
    "name": "digits",
    "path": None,
    "label_column": "label",
    "test_fraction": 0.2,
    "validation_fraction": 0.2,
    "split_seed": 42,
    "max_samples": None,
}


@pytest.fixture(scope="module")
def digits() -> dict:
    configure_tensorflow(threads=1)
    return prepare(SPLIT_CFG).arrays


def spec(**training) -> dict:
    base = {"optimizer": "adam", "learning_rate": 0.01, "epochs": 4, "batch_size": 32, "early_stopping_patience": 0, "loop": "fast"}
    return {"model": {"hidden_units": [32], "activation": "relu", "dropout": 0.2}, "training": {**base, **training}}


def accuracy(result, arrays) -> float:
    return classification_metrics(arrays["y_test"], predict_proba(result.model, arrays["x_test"]))["accuracy"]


def test_same_seed_gives_identical_metrics(digits):
    first = train_model(spec(), digits, 10, seed=3)
    second = train_model(spec(), digits, 10, seed=3)
    assert first.history == second.history
    np.testing.assert_array_equal(predict_proba(first.model, digits["x_test"]), predict_proba(second.model, digits["x_test"]))
    third = train_model(spec(), digits, 10, seed=4)
    assert third.history != first.history


def test_fast_loop_learns_as_well_as_model_fit(digits):
    fast = [accuracy(train_model(spec(loop="fast"), digits, 10, seed=s), digits) for s in (1, 2)]
    plain = [accuracy(train_model(spec(loop="keras"), digits, 10, seed=s), digits) for s in (1, 2)]
    assert min(fast) > 0.85 and min(plain) > 0.85
    assert abs(np.mean(fast) - np.mean(plain)) < 0.05


def test_best_validation_epoch_is_restored_and_patience_stops_early(digits):
    result = train_model(spec(epochs=30, early_stopping_patience=2, learning_rate=0.05), digits, 10, seed=1)
    losses = [row["val_loss"] for row in result.history]
    assert len(result.history) < 30, "patience 2 must stop a 30-epoch run on digits early"
    assert result.best_epoch == int(np.argmin(losses)) + 1
    assert len(result.history) - result.best_epoch == 2


@pytest.mark.parametrize("loop", ["fast", "keras"])
def test_keep_best_val_accuracy_keeps_the_most_accurate_validation_epoch(digits, loop):
    result = train_model(spec(epochs=8, learning_rate=0.05, keep_best="val_accuracy", loop=loop), digits, 10, seed=1)
    accuracies = [row["val_accuracy"] for row in result.history]
    assert len(result.history) == 8 and result.best_epoch == int(np.argmax(accuracies)) + 1
    x_val, y_val = digits["x_val"], digits["y_val"]
    kept = float((predict_proba(result.model, x_val).argmax(axis=1) == y_val).mean())
    assert kept == pytest.approx(max(accuracies), abs=1e-6), "the kept weights are that epoch's"
    by_loss = train_model(spec(epochs=8, learning_rate=0.05, loop=loop), digits, 10, seed=1)
    assert by_loss.history == result.history and by_loss.best_epoch == int(np.argmin([r["val_loss"] for r in by_loss.history])) + 1


def test_keep_best_at_its_default_leaves_run_names_alone():
    from ablation_lab.identity import canonical_training, run_name

    training = spec()["training"]
    assert canonical_training({**training, "keep_best": "val_loss"}) == training
    named = {"model": spec()["model"], "transforms": [], "code_version": 3}
    by_loss = run_name(named | {"training": canonical_training({**training, "keep_best": "val_loss"})})
    assert by_loss == run_name(named | {"training": training})
    assert run_name(named | {"training": canonical_training({**training, "keep_best": "val_accuracy"})}) != by_loss


def test_huge_learning_rate_is_recorded_as_diverged(digits):
    result = train_model(spec(learning_rate=1e12, optimizer="sgd"), digits, 10, seed=1)
    assert result.status == "diverged"
    assert result.diverged_epoch == 1
    assert np.isnan(classification_metrics(digits["y_test"], predict_proba(result.model, digits["x_test"]))["accuracy"])


def test_model_round_trips_through_a_keras_file_in_safe_mode(digits, tmp_path):
    from ablation_lab.models.build import load_model

    result = train_model(spec(epochs=1), digits, 10, seed=1)
    result.model.save(tmp_path / "model.keras")
    reloaded = load_model(str(tmp_path / "model.keras"))
    np.testing.assert_allclose(predict_proba(reloaded, digits["x_test"]), predict_proba(result.model, digits["x_test"]), rtol=1e-6)


def test_a_model_with_python_code_in_it_is_refused(tmp_path):
    import keras
    from ablation_lab.models.build import load_model

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="safe_mode"):
        load_model(str(tmp_path / "lambda.keras"))


def test_threads_follow_the_rule(digits):
    import tensorflow as tf

    assert tf.config.threading.get_intra_op_parallelism_threads() == 1
    assert tf.config.threading.get_inter_op_parallelism_threads() == 1


def test_both_loops_reshuffle_every_epoch_in_the_same_orders(digits, monkeypatch):
    """Keras 3.15's `model.fit(shuffle=True)` after set_random_seed fed one batch order every
    epoch; both loops now draw a fresh seeded order per epoch, the same ones."""
    from ablation_lab.training import train

    orders = train.epoch_orders(seed=3, n_rows=50)
    first, second = next(orders), next(orders)
    assert sorted(first) == list(range(50)) and not np.array_equal(first, second)

    fed: list[np.ndarray] = []
    real = train.shuffled_batches

    def recording(x, y, batch_size, seed, **options):
        dataset = real(x, y, batch_size, seed, **options)
        fed.append(dataset)
        return dataset

    monkeypatch.setattr(train, "shuffled_batches", recording)
    train_model(spec(loop="keras", epochs=3), digits, 10, seed=3)
    seen = fed[0].seen
    assert len(seen) == 3 and not np.array_equal(seen[0], seen[1]) and not np.array_equal(seen[1], seen[2])
    reference = train.epoch_orders(seed=3, n_rows=len(digits["y_train"]))  # what the fast loop draws
    for epoch_order in seen:
        np.testing.assert_array_equal(epoch_order, next(reference))  # the fast loop's orders

    taken: list[np.ndarray] = []
    real_orders = train.epoch_orders

    def spy(seed, n_rows):
        for order in real_orders(seed, n_rows):
            taken.append(order)
            yield order

    monkeypatch.setattr(train, "epoch_orders", spy)
    train_model(spec(loop="fast", epochs=3), digits, 10, seed=3)
    assert len(taken) == 3 and all(np.array_equal(a, b) for a, b in zip(taken, seen, strict=True))


def test_each_epoch_is_logged_by_both_loops(digits, caplog):
    import logging

    for loop in ("fast", "keras"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="ablation_lab"):
            train_model(spec(loop=loop, epochs=2), digits, 10, seed=3)
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
        assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"], loop
        assert "val_accuracy" in lines[0]


def _variables(model) -> list[np.ndarray]:
    return [np.array(v) for v in model.variables]


@pytest.mark.parametrize(
    "model",
    [
        {"hidden_units": [32], "activation": "relu", "dropout": 0.2},
        {"hidden_units": [16], "activation": "gp", "dropout": 0.0, "learnable": {"control_points": 5}},
    ],
    ids=["mlp", "learnable"],
)
def test_a_reused_trace_gives_the_numbers_of_a_fresh_one(digits, model):
    """A warm worker trains one variant after another: the second of two variants of one
    architecture reuses the first's traced epoch (`train.TRACED`). Its history, weights and
    dropout seed states must be those of a fresh trace, to the bit, and the first variant's
    returned model must not change when the second trains."""
    import keras
    from ablation_lab.training.train import TRACED

    noisy = {**digits, "x_train": digits["x_train"] + np.float32(0.25)}  # other data, same shapes
    settings = {"model": model, "training": spec()["training"]}

    def job(arrays: dict, seed: int):
        keras.backend.clear_session()  # as a worker does between jobs: layer names start afresh
        return train_model(settings, arrays, 10, seed=seed)

    TRACED.clear()
    fresh = job(digits, 5)
    fresh_state = _variables(fresh.model)
    TRACED.clear()
    other = job(noisy, 6)
    other_state = _variables(other.model)
    hits = TRACED.hits
    reused = job(digits, 5)
    assert TRACED.hits == hits + 1 and len(TRACED.entries) == 1, "the second training must reuse the first's trace"
    assert reused.history == fresh.history
    for a, b in zip(_variables(reused.model), fresh_state, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_variables(other.model), other_state, strict=True):
        np.testing.assert_array_equal(a, b)
    assert reused.model is not other.model


def test_traces_are_kept_per_architecture_and_bounded(digits):
    import keras
    from ablation_lab.training.train import TRACED

    TRACED.clear()
    for rate in (0.1, 0.2, 0.3):
        keras.backend.clear_session()
        train_model({**spec(epochs=1), "model": {"hidden_units": [8], "activation": "relu", "dropout": rate}}, digits, 10, seed=1)
    assert len(TRACED.entries) == 3, "a dropout rate is a constant of the trace: one entry per rate"
    size, TRACED.size = TRACED.size, 2
    try:
        train_model({**spec(epochs=1), "model": {"hidden_units": [8], "activation": "tanh", "dropout": 0.1}}, digits, 10, seed=1)
        assert len(TRACED.entries) == 2
    finally:
        TRACED.size = size
    one = next(iter(TRACED.entries.values())).nbytes
    weights = 4 * (64 * 8 + 8 + 8 * 10 + 10)  # float32 kernels and biases
    assert 3 * weights <= one < 3 * weights + 256, "weights and Adam's two moments, plus a few counters and seed states"
    budget, TRACED.max_bytes = TRACED.max_bytes, one + 1
    try:
        train_model({**spec(epochs=1), "model": {"hidden_units": [8], "activation": "sigmoid", "dropout": 0.1}}, digits, 10, seed=1)
        assert len(TRACED.entries) == 1, "over the memory budget, only the twin in use is kept"
    finally:
        TRACED.max_bytes = budget
