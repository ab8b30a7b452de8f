"""The article's MLP, built from config: Flatten -> [Dense -> Dropout] x depth -> Dense softmax."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import layers

# The hidden activations a study may name (the schema's enum is tested against this list).
ACTIVATIONS = ("relu", "sigmoid", "tanh", "linear", "elu", "gelu", "swish")
OPTIMIZERS = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}


def build_mlp(input_shape: Sequence[int], n_classes: int, hidden_units: Sequence[int], activation: str, dropout: float) -> keras.Model:
    """One Dense block per entry of `hidden_units`; dropout follows every hidden layer."""
    inputs = keras.Input(shape=tuple(input_shape), name="features")
    x = layers.Flatten(name="flatten")(inputs)
    for depth, units in enumerate(hidden_units, start=1):
        x = layers.Dense(units, activation=activation, name=f"hidden_{depth}")(x)
        x = layers.Dropout(dropout, name=f"dropout_{depth}")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mlp")


def build_model(model_cfg: dict[str, Any], input_shape: Sequence[int], n_classes: int) -> keras.Model:
    # Run specs are canonical (an integral float is written as an int): cast where Keras cares.
    return build_mlp(input_shape, n_classes, model_cfg["hidden_units"], model_cfg["activation"], float(model_cfg["dropout"]))


def build_optimizer(training_cfg: dict[str, Any]) -> keras.optimizers.Optimizer:
    return OPTIMIZERS[training_cfg["optimizer"]](learning_rate=float(training_cfg["learning_rate"]))


def load_model(path: str) -> keras.Model:
    """Reload a saved model; safe_mode refuses any serialized Python code (lambdas)."""
    return keras.saving.load_model(path, safe_mode=True, compile=False)
