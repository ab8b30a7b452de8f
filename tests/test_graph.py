"""models/graph.py: any functional model replayed node by node, named outputs captured and replaced."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from ablation_lab.models import graph as graph_module
from ablation_lab.models.graph import Graph
from ablation_lab.training.train import configure_tensorflow, predict_proba
from keras import layers

configure_tensorflow(threads=1)
X = np.random.default_rng(0).normal(size=(40, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def branching() -> keras.Model:
    """Two branches from the input (a conv, and a conv + BatchNorm) added, then concatenated with the first."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8), name="features")
    x = layers.Reshape((8, 8, 1), name="channels")(inputs)
    a = layers.Conv2D(4, 3, padding="same", activation="relu", name="a")(x)
    b = layers.BatchNormalization(name="bn")(layers.Conv2D(4, 3, padding="same", name="b")(x))
    merged = layers.Concatenate(name="cat")([layers.Add(name="add")([a, b]), a])
    pooled = layers.GlobalAveragePooling2D(name="pool")(layers.Activation("tanh", name="act")(merged))
    model = keras.Model(inputs, layers.Dense(3, activation="softmax", name="probabilities")(pooled))
    gamma, beta, mean, var = model.get_layer("bn").get_weights()  # moving statistics that are not the identity
    model.get_layer("bn").set_weights([gamma * 1.5, beta + 0.1, mean + 0.2, var * 2.0])
    return model


def test_with_nothing_replaced_the_replay_is_the_models_own_output(branching):
    graph = Graph(branching)
    clean = graph.capture(X, ["a", "bn"])
    # the same operations in one tf.function, as predict_proba and model.predict run them: equal bit for bit
    np.testing.assert_array_equal(clean["probabilities"], predict_proba(branching, X))
    np.testing.assert_array_equal(clean["probabilities"], branching.predict(X, verbose=0))
    np.testing.assert_array_equal(graph.rerun(X, {}), clean["probabilities"])
    # a layer replaced by its own clean output: everything downstream of it is recomputed, and nothing changes
    for name in ("a", "bn", "add", "cat", "pool"):
        np.testing.assert_array_equal(graph.rerun(X, {name: lambda v: v}), clean["probabilities"])
    np.testing.assert_array_equal(graph.rerun(X, {"bn": clean["bn"]}, output="logits"), clean["logits"])
    dense = branching.get_layer("probabilities")
    pooled = graph.capture(X, ["pool"])["pool"]
    np.testing.assert_allclose(clean["logits"], pooled @ dense.kernel.numpy() + dense.bias.numpy(), rtol=1e-5, atol=1e-6)


def test_downstream_follows_every_path_in_topological_order(branching):
    graph = Graph(branching)
    assert graph.downstream(["b"]) == ["bn", "add", "cat", "act", "pool", "probabilities"]
    assert graph.downstream(["a"]) == ["add", "cat", "act", "pool", "probabilities"]  # a reaches cat twice
    with pytest.raises(ValueError, match=r"^graph: 'nope' is not a layer of model"):
        graph.downstream(["nope"])


def test_k_masks_in_one_batch_equal_one_rerun_per_mask_and_chunking_changes_nothing(branching, monkeypatch):
    graph = Graph(branching)
    clean = graph.capture(X, ["a"])["a"]
    keep = np.random.default_rng(1).random((6, 4)) > 0.5
    batched = graph.rerun(X, {"a": lambda v: v[None] * keep[:, None, None, None, :]})
    assert batched.shape == (6, len(X), 3)
    for row, mask in enumerate(keep):
        np.testing.assert_array_equal(batched[row], graph.rerun(X, {"a": clean * mask}))
    monkeypatch.setattr(graph_module, "MEMORY_BUDGET", 3000)  # a few examples and masks per call
    chunked = Graph(branching).rerun(graph.prepare(X, ["a"]), {"a": clean[None] * keep[:, None, None, None, :]})
    # other batch sizes may round the last bit differently (the CPU kernels block by batch size): 1e-6 is ~10 float32 ulps of a probability
    np.testing.assert_allclose(chunked, batched, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(chunked.argmax(axis=2), batched.argmax(axis=2))


def _two_blocks() -> tuple[keras.Model, dict[str, np.ndarray]]:
    """stem -> block 1 (relu, dense: its write) -> add -> block 2 (relu, dense) -> add -> softmax; weights by hand."""
    inputs = keras.Input((3,), name="features")
    stem = layers.Dense(3, name="stem")(inputs)
    write_1 = layers.Dense(3, name="block_1_write")(layers.Activation("relu", name="block_1_relu")(stem))
    stream_1 = layers.Add(name="block_1_add")([stem, write_1])
    write_2 = layers.Dense(3, name="block_2_write")(layers.Activation("relu", name="block_2_relu")(stream_1))
    stream_2 = layers.Add(name="block_2_add")([stream_1, write_2])
    model = keras.Model(inputs, layers.Dense(2, activation="softmax", name="probabilities")(stream_2))
    rng = np.random.default_rng(3)
    weights = {
        name: rng.normal(size=(3, 3 if name != "probabilities" else 2)).astype(np.float32)
        for name in ("stem", "block_1_write", "block_2_write", "probabilities")
    }
    for name, kernel in weights.items():
        model.get_layer(name).set_weights([kernel, np.full(kernel.shape[1], 0.1, np.float32)])
    return model, weights


def test_a_removed_block_and_a_frozen_later_block_equal_the_values_computed_by_hand():
    model, w = _two_blocks()
    x = np.random.default_rng(4).normal(size=(25, 3)).astype(np.float32)
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    dense = lambda v, name: v @ w[name] + 0.1  # noqa: E731
    stem = dense(x, "stem")
    clean_1 = stem + dense(relu(stem), "block_1_write")
    clean_write_2 = dense(relu(clean_1), "block_2_write")
    graph = Graph(model)
    clean = graph.capture(x, ["block_2_write"])
    np.testing.assert_allclose(clean["logits"], dense(clean_1 + clean_write_2, "probabilities"), rtol=1e-5, atol=1e-5)
    # block 1's write removed: block 2 reads the stream without it and writes something else (the total effect)
    total = dense(stem + dense(relu(stem), "block_2_write"), "probabilities")
    np.testing.assert_allclose(graph.rerun(x, {"block_1_write": 0.0}, output="logits"), total, rtol=1e-5, atol=1e-5)
    # block 2 frozen at its clean write: only the direct path of the removal reaches the output
    direct = dense(stem + clean_write_2, "probabilities")
    frozen = {"block_1_write": 0.0, "block_2_write": clean["block_2_write"]}
    np.testing.assert_allclose(graph.rerun(x, frozen, output="logits"), direct, rtol=1e-5, atol=1e-5)
    assert not np.allclose(total, direct, atol=1e-3)  # block 2 reacts in this model
    probabilities = graph.rerun(x, {"block_1_write": np.zeros((2, 1, 3), np.float32)})  # K = 2 fills
    expected = np.exp(total) / np.exp(total).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, np.stack([expected, expected]), rtol=1e-5, atol=1e-6)


def test_a_sequential_model_and_refusals():
    model = keras.Sequential([keras.Input((4,)), layers.Dense(5, activation="relu", name="hidden"), layers.Dense(2, name="last")])
    graph = Graph(model)
    x = np.ones((3, 4), np.float32)
    np.testing.assert_array_equal(graph.capture(x, ["hidden"])["probabilities"], predict_proba(model, x))
    assert "logits" not in graph.capture(x)  # no softmax layer: no logits
    with pytest.raises(ValueError, match=r"^graph.rerun: output must be one of probabilities, logits"):
        graph.rerun(x, {"hidden": 0.0}, output="scores")
    with pytest.raises(ValueError, match=r"^graph.rerun: 'hiden' is not a layer of model"):
        graph.rerun(x, {"hiden": 0.0})
    with pytest.raises(ValueError, match=r"^graph.rerun: 'logits' is not a layer of model"):
        graph.rerun(x, {"logits": 0.0})


def test_logits_with_the_output_layer_itself_replaced_are_refused(branching):
    graph = Graph(branching)
    x = np.ones((2, *branching.inputs[0].shape[1:]), np.float32)
    output = branching.layers[-1].name
    with pytest.raises(ValueError, match=rf"^graph.rerun: logits are the output layer's argument; replacing '{output}' leaves none"):
        graph.rerun(x, {output: 0.0}, output="logits")
    assert graph.rerun(x, {output: 0.25}).shape == (2, branching.outputs[0].shape[-1])  # probabilities replaced: allowed
