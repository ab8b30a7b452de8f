"""An example builder: the article's MLP with batch normalisation before each activation.

Copy this file to start your own. It reads the model keys the families set
(`hidden_units`, `activation`, `dropout`), so the dropout, activation and capacity
families apply to it unchanged. Layer names follow the built-in models (`hidden_<k>` is
the block's activation output), so post-hoc knockout finds the hidden layers.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers


def build(input_shape: tuple[int, ...], n_classes: int, model: dict[str, Any]) -> keras.Model:
    inputs = keras.Input(shape=tuple(input_shape), name="features")
    x = layers.Flatten(name="flatten")(inputs)
    for depth, units in enumerate(model["hidden_units"], start=1):
        x = layers.Dense(int(units), use_bias=False, name=f"dense_{depth}")(x)
        x = layers.BatchNormalization(name=f"norm_{depth}")(x)
        x = layers.Activation(model["activation"], name=f"hidden_{depth}")(x)
        if float(model.get("dropout", 0.0)):
            x = layers.Dropout(float(model["dropout"]), name=f"dropout_{depth}")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mlp_batchnorm")
