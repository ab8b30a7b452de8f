"""Post-hoc knockout of any layer of a branching model, through models/graph.py (issue 27's must-shows)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from ablation_lab.analyses import knockout
from ablation_lab.analyses.knockout import KnockoutParams
from ablation_lab.identity import canonical_model
from ablation_lab.models import surgery
from ablation_lab.models.graph import Graph, layer_split
from ablation_lab.training.train import configure_tensorflow, predict_proba
from keras import layers

configure_tensorflow(threads=1)
RNG = np.random.default_rng(0)
DATA = {split: RNG.random((n, 8, 8)).astype(np.float32) for split, n in (("train", 60), ("val", 30), ("test", 50))}
LABELS = {split: RNG.integers(0, 3, len(x)).astype(np.int32) for split, x in DATA.items()}
CLASSES = ["a", "b", "c"]
PARAMS = {"layers": [], "fractions": [0.0, 0.5, 1.0], "orderings": ["random", "magnitude_smallest"], "fills": ["zero", "mean"], "draws": 1}


def _perturb_norms(model: keras.Model) -> keras.Model:
    """Batch norms whose moving statistics are not the identity, as after training."""
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma * 1.3, beta + 0.05, mean + 0.1, var * 1.7])
    return model


@pytest.fixture(scope="module")
def branching() -> keras.Model:
    """A conv branch with BatchNorm added to a 1x1 shortcut, concatenated with another branch."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8), name="features")
    x = layers.Reshape((8, 8, 1), name="channels")(inputs)
    stem = layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(x)
    branch = layers.Conv2D(4, 3, padding="same", name="branch")(layers.BatchNormalization(name="bn")(stem))
    shortcut = layers.Conv2D(4, 1, name="shortcut")(stem)
    added = layers.Add(name="add")([shortcut, branch])
    side = layers.Conv2D(2, 3, padding="same", activation="tanh", name="side")(stem)
    joined = layers.Activation("relu", name="joined")(layers.Concatenate(name="cat")([added, side]))
    outputs = layers.Dense(3, activation="softmax", name="probabilities")(layers.GlobalAveragePooling2D(name="pool")(joined))
    return _perturb_norms(keras.Model(inputs, outputs))


def test_knocking_out_nothing_of_any_layer_of_a_branching_model_reproduces_its_predictions(branching):
    available = surgery.knockout_layers(branching, branching=True)
    assert available == ["stem", "shortcut", "branch", "side", "joined"]  # non-linear layers and the Add's weighted inputs
    own = predict_proba(branching, DATA["test"]).argmax(axis=1)
    for layer in available:
        split = layer_split(branching, layer)
        bound = split.bind(DATA["test"])
        activations = split.head(DATA["test"])
        kept = surgery.masked_predictions(bound, activations, np.ones((1, split.units), bool), np.zeros(split.units, np.float32))[0]
        np.testing.assert_array_equal(kept, own)
    table = knockout.knockout_table(branching, DATA, LABELS, CLASSES, KnockoutParams.of(PARAMS), seed=1)
    assert set(table["layer"]) == set(available)
    at_zero = table.query("metric == 'accuracy' and fraction == 0.0")["value"]
    assert (at_zero == (own == LABELS["test"]).mean()).all()


def test_batched_masks_equal_one_graph_rerun_per_mask_with_the_fill_in_place(branching):
    split = layer_split(branching, "branch")
    bound, activations = split.bind(DATA["test"]), split.head(DATA["test"])
    keep = np.random.default_rng(2).random((5, 4)) > 0.5
    fill = np.full(4, 0.3, np.float32)
    batched = surgery.masked_predictions(bound, activations, keep, fill)
    graph = Graph(branching)
    for row, mask in enumerate(keep):
        replaced = np.where(mask, activations, fill)
        np.testing.assert_array_equal(batched[row], graph.rerun(DATA["test"], {"branch": replaced}).argmax(axis=1))
    assert len(split.magnitude) == 4  # the Add passes the channels on to `cat` -> relu -> pool -> the Dense


def _resnet(zero_block: int | None = None) -> keras.Model:
    from ablation_lab.models.build import build_model

    keras.utils.set_random_seed(3)
    model = build_model(
        canonical_model({"kind": "resnet", "activation": "relu", "dropout": 0.0, "filters": [4, 8], "blocks": 3}), (8, 8), 3
    )
    if zero_block is not None:  # a zero-initialised residual branch (as in Goyal et al.'s zero-gamma init): it writes nothing
        conv = model.get_layer(f"block_{zero_block}_conv_2")
        conv.set_weights([np.zeros_like(w) for w in conv.get_weights()])
    return _perturb_norms(model)


def test_a_zeroed_residual_block_whose_branch_is_zero_initialised_changes_nothing():
    model = _resnet(zero_block=2)
    params = {**PARAMS, "layers": ["block_2"], "fractions": [0.0, 1.0], "orderings": ["random"]}
    table = knockout.knockout_table(model, DATA, LABELS, CLASSES, KnockoutParams.of(params), seed=1, skip_missing=True)
    assert set(table["layer"]) == {"block_2_conv_2"}  # `block_2`: the block's write
    accuracy = table.query("metric == 'accuracy'")
    own = (predict_proba(model, DATA["test"]).argmax(axis=1) == LABELS["test"]).mean()
    assert (accuracy["value"] == own).all()  # zero and mean fill (the write's mean is 0 too), 0% and 100%
    graph = Graph(model)
    np.testing.assert_array_equal(graph.rerun(DATA["test"], {"block_2_conv_2": 0.0}), predict_proba(model, DATA["test"]))


def test_removing_a_live_residual_block_equals_rerunning_without_its_write():
    model = _resnet()
    split = layer_split(model, "block_2_conv_2")
    bound, activations = split.bind(DATA["test"]), split.head(DATA["test"])
    removed = surgery.masked_predictions(bound, activations, np.zeros((1, 8), bool), np.zeros(8, np.float32))[0]
    # by hand: block 2's add reads the shortcut alone, everything after it is recomputed
    clean = Graph(model).capture(DATA["test"], ["block_2_shortcut"])
    np.testing.assert_array_equal(removed, Graph(model).rerun(DATA["test"], {"block_2_add": clean["block_2_shortcut"]}).argmax(axis=1))
    assert surgery.chosen_layers(model, ["block_1", "block_3_relu_2"], branching=True) == ["block_1_conv_2", "block_3_relu_2"]
    assert surgery.knockout_layers(model, branching=True) == surgery.built_in_layers({"kind": "resnet", "blocks": 3, "hidden_units": [8]})
