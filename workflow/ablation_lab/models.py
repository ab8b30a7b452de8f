"""The article's MLP, built from config: Flatten -> [Dense -> Dropout] x depth -> Dense softmax.

Optional model keys (absent from a spec unless a study or family sets them, so existing runs
keep their identity): `dropout_kind` (`standard` or `nsdropout`, ablation_lab/layers.py),
`dropout_layers` (which hidden layers, 1-based, are followed by dropout; default all),
`nsdropout_interval` (updates between NSDropout mask recomputations) and `l2` (L2 weight
penalty per hidden layer, or one value for all).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import layers

from ablation_lab.identity import LEARNABLE_ACTIVATIONS, learnable_settings
from ablation_lab.layers import NSDropout, learnable_activation

# The hidden activations a study may name (the schema's enum is tested against this list).
ACTIVATIONS = ("relu", "sigmoid", "tanh", "linear", "elu", "gelu", "swish", *LEARNABLE_ACTIVATIONS)
FEATURE_FUNCTIONS = "feature_functions"  # the KST model's per-feature learnable functions
OPTIMIZERS = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}


def _per_layer(value: float | Sequence[float] | None, depth: int) -> list[float]:
    if value is None:
        return [0.0] * depth
    if isinstance(value, int | float):
        return [float(value)] * depth
    if len(value) != depth:
        raise ValueError(f"model.l2: {len(value)} values for {depth} hidden layers (give one per hidden layer, or one number)")
    return [float(v) for v in value]


def _dropout_layer(kind: str, rate: float, n_classes: int, depth: int, interval: int) -> layers.Layer:
    if kind == "nsdropout":
        return NSDropout(rate, n_classes, mask_interval=interval, name=f"nsdropout_{depth}")
    return layers.Dropout(rate, name=f"dropout_{depth}")


def build_mlp(
    input_shape: Sequence[int],
    n_classes: int,
    hidden_units: Sequence[int],
    activation: str,
    dropout: float,
    *,
    dropout_kind: str = "standard",
    dropout_layers: Sequence[int] | None = None,
    nsdropout_interval: int = 1,
    l2: float | Sequence[float] | None = None,
    learnable: dict[str, Any] | None = None,
    kind: str = "mlp",
) -> keras.Model:
    """One Dense block per entry of `hidden_units`; dropout follows the hidden layers in `dropout_layers` (default all).

    A learnable activation is its own layer after a linear Dense (`dense_<k>`), and it is the
    one named `hidden_<k>`: `hidden_<k>` always outputs the block's unit activations, which is
    what post-hoc knockout removes. `kind="kst"` is the Kolmogorov-Arnold-style topology of the
    GP-activation paper: a learned function of each input feature (`feature_functions`), their
    weighted sums, and a learned outer function (the hidden activation, which must be learnable).
    """
    followed = set(range(1, len(hidden_units) + 1) if dropout_layers is None else dropout_layers)
    penalties = _per_layer(l2, len(hidden_units))
    inputs = keras.Input(shape=tuple(input_shape), name="features")
    x = layers.Flatten(name="flatten")(inputs)
    if kind == "kst":  # one learnable univariate function per input feature, feeding the first layer's sums
        x = learnable_activation("gp-per-unit", learnable or learnable_settings({}), FEATURE_FUNCTIONS)(x)
    for depth, (units, penalty) in enumerate(zip(hidden_units, penalties, strict=True), start=1):
        regularizer = keras.regularizers.L2(penalty) if penalty else None
        if activation in LEARNABLE_ACTIVATIONS:
            x = layers.Dense(units, kernel_regularizer=regularizer, name=f"dense_{depth}")(x)
            x = learnable_activation(activation, learnable or learnable_settings({}), f"hidden_{depth}")(x)
        else:
            x = layers.Dense(units, activation=activation, kernel_regularizer=regularizer, name=f"hidden_{depth}")(x)
        if depth in followed:
            x = _dropout_layer(dropout_kind, dropout, n_classes, depth, nsdropout_interval)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mlp")


def build_model(model_cfg: dict[str, Any], input_shape: Sequence[int], n_classes: int) -> keras.Model:
    # Run specs are canonical (an integral float is written as an int): cast where Keras cares.
    return build_mlp(
        input_shape,
        n_classes,
        model_cfg["hidden_units"],
        model_cfg["activation"],
        float(model_cfg["dropout"]),
        dropout_kind=model_cfg.get("dropout_kind", "standard"),
        dropout_layers=model_cfg.get("dropout_layers"),
        nsdropout_interval=int(model_cfg.get("nsdropout_interval", 1)),
        l2=model_cfg.get("l2"),
        learnable=learnable_settings(model_cfg) if "learnable" in model_cfg or model_cfg["activation"] in LEARNABLE_ACTIVATIONS else None,
        kind=model_cfg.get("kind", "mlp"),
    )


def build_optimizer(training_cfg: dict[str, Any]) -> keras.optimizers.Optimizer:
    return OPTIMIZERS[training_cfg["optimizer"]](learning_rate=float(training_cfg["learning_rate"]))


def load_model(path: str) -> keras.Model:
    """Reload a saved model; safe_mode refuses any serialized Python code (lambdas)."""
    return keras.saving.load_model(path, safe_mode=True, compile=False)
