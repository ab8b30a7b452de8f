"""The article's MLP, built from config: Flatten -> [Dense -> Dropout] x depth -> Dense softmax.

Optional model keys (absent from a spec unless a study or family sets them, so existing runs
keep their identity): `dropout_kind` (`standard` or `nsdropout`, ablation_lab/models/layers.py),
`dropout_layers` (which hidden layers, 1-based, are followed by dropout; default all),
`nsdropout_interval` (updates between NSDropout mask recomputations) and `l2` (L2 weight
penalty per hidden layer, or one value for all).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import layers

from ablation_lab.models.layers import NSDropout, learnable_activation
from ablation_lab.models.settings import LEARNABLE_ACTIVATIONS, learnable_settings

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


def _dense_head(
    x: Any,
    n_classes: int,
    hidden_units: Sequence[int],
    activation: str,
    dropout: float,
    dropout_kind: str = "standard",
    dropout_layers: Sequence[int] | None = None,
    nsdropout_interval: int = 1,
    l2: float | Sequence[float] | None = None,
    learnable: dict[str, Any] | None = None,
) -> Any:
    """The dense blocks (`hidden_<k>`, each followed by its dropout layer) and the softmax output, on a flat tensor."""
    followed = set(range(1, len(hidden_units) + 1) if dropout_layers is None else dropout_layers)
    penalties = _per_layer(l2, len(hidden_units))
    for depth, (units, penalty) in enumerate(zip(hidden_units, penalties, strict=True), start=1):
        regularizer = keras.regularizers.L2(penalty) if penalty else None
        if activation in LEARNABLE_ACTIVATIONS:
            x = layers.Dense(units, kernel_regularizer=regularizer, name=f"dense_{depth}")(x)
            x = _activation_layer(activation, learnable, f"hidden_{depth}")(x)
        else:
            x = layers.Dense(units, activation=activation, kernel_regularizer=regularizer, name=f"hidden_{depth}")(x)
        if depth in followed:
            x = _dropout_layer(dropout_kind, dropout, n_classes, depth, nsdropout_interval)(x)
    return layers.Dense(n_classes, activation="softmax", name="probabilities")(x)


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
    inputs = keras.Input(shape=tuple(input_shape), name="features")
    x = layers.Flatten(name="flatten")(inputs)
    if kind == "kst":  # one learnable univariate function per input feature, feeding the first layer's sums
        x = learnable_activation("gp-per-unit", learnable or learnable_settings({}), FEATURE_FUNCTIONS)(x)
    outputs = _dense_head(x, n_classes, hidden_units, activation, dropout, dropout_kind, dropout_layers, nsdropout_interval, l2, learnable)
    return keras.Model(inputs, outputs, name="mlp")


def _activation_layer(activation: str, learnable: dict[str, Any] | None, name: str) -> layers.Layer:
    if activation in LEARNABLE_ACTIVATIONS:
        return learnable_activation(activation, learnable or learnable_settings({}), name)
    return layers.Activation(activation, name=name)


def build_cnn(input_shape: Sequence[int], n_classes: int, model_cfg: dict[str, Any]) -> keras.Model:
    """Conv blocks (conv -> [batch norm] -> activation -> [2x2 pooling] -> dropout), then the MLP head.

    Grey images of shape (h, w) get a channel axis. Every family applies as in the MLP:
    `dropout` follows every conv block and every dense layer, `activation` is swapped in every
    block, and the dense head (`hidden_units`, layers `hidden_<k>`) is what knockout removes
    units of. Pooling uses `same` padding, so small images (8 x 8 digits) survive 3 blocks.
    """
    shape = tuple(input_shape)
    if len(shape) not in (2, 3):
        raise ValueError(
            f"model.kind: cnn needs images of shape (height, width[, channels]); this dataset's inputs have shape {list(shape)}"
        )
    batch_norm, pooling, dropout = bool(model_cfg["batch_norm"]), model_cfg["pooling"], float(model_cfg["dropout"])
    learnable = learnable_settings(model_cfg) if model_cfg["activation"] in LEARNABLE_ACTIVATIONS else None
    inputs = keras.Input(shape=shape, name="features")
    x = layers.Reshape((*shape, 1), name="channels")(inputs) if len(shape) == 2 else inputs
    for block, filters in enumerate(model_cfg["filters"], start=1):
        x = layers.Conv2D(filters, int(model_cfg["kernel_size"]), padding="same", use_bias=not batch_norm, name=f"conv_{block}")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"norm_{block}")(x)
        x = _activation_layer(model_cfg["activation"], learnable, f"conv_act_{block}")(x)
        if pooling != "none":
            pool = layers.MaxPooling2D if pooling == "max" else layers.AveragePooling2D
            x = pool(2, padding="same", name=f"pool_{block}")(x)
        x = layers.Dropout(dropout, name=f"conv_dropout_{block}")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = _dense_head(
        x, n_classes, model_cfg["hidden_units"], model_cfg["activation"], dropout, l2=model_cfg.get("l2"), learnable=learnable
    )
    return keras.Model(inputs, outputs, name="cnn")


def build_model(model_cfg: dict[str, Any], input_shape: Sequence[int], n_classes: int) -> keras.Model:
    # Run specs are canonical (an integral float is written as an int): cast where Keras cares.
    if model_cfg.get("kind") == "cnn":
        return build_cnn(input_shape, n_classes, model_cfg)
    if model_cfg.get("kind") == "resnet":
        from ablation_lab.models.resnet import build_resnet

        return build_resnet(input_shape, n_classes, model_cfg)
    if model_cfg.get("kind") == "file":
        from ablation_lab.models.model_file import build_file_model

        return build_file_model(model_cfg, input_shape, n_classes)
    if model_cfg.get("kind") == "builder":
        return build_with_builder(model_cfg, input_shape, n_classes)
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


def build_with_builder(model_cfg: dict[str, Any], input_shape: Sequence[int], n_classes: int) -> keras.Model:
    """A model from a builder file of this repository (ablation_lab/builders), checked like a model file."""
    from ablation_lab.models.builders import load_builder
    from ablation_lab.models.model_file import check_loaded

    name = model_cfg["builder"]
    model = load_builder(name)(tuple(input_shape), n_classes, dict(model_cfg))
    if not isinstance(model, keras.Model):
        raise ValueError(f"model.builder: {name}.build returned {type(model).__name__}, not a keras.Model")
    check_loaded(model, f"builder {name}", input_shape, n_classes)
    check_builder_model(model, name, input_shape)
    return model


def check_builder_model(model: keras.Model, name: str, input_shape: Sequence[int]) -> None:
    """What a model file's description shows before any job runs, checked on a builder's model before training."""
    from ablation_lab.models.model_file import CODE_LAYERS, SAFE_MODE_ADVICE

    for layer in model.layers:
        if type(layer).__name__ in CODE_LAYERS:
            raise ValueError(f"model.builder: {name}: layer {layer.name!r} is a {type(layer).__name__} layer; {SAFE_MODE_ADVICE.split(':')[0]}: put the code in a layer class registered in layers.py")  # fmt: skip
    rows = np.asarray(model(np.zeros((2, *input_shape), np.float32), training=False))
    if rows.min() < 0 or not np.allclose(rows.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError(
            f"model.builder: {name}: the model's outputs are not probabilities (rows sum to {rows.sum(axis=1).round(3).tolist()}); "
            "end the model with a softmax"
        )


def build_optimizer(training_cfg: dict[str, Any]) -> keras.optimizers.Optimizer:
    return OPTIMIZERS[training_cfg["optimizer"]](learning_rate=float(training_cfg["learning_rate"]))


def load_model(path: str) -> keras.Model:
    """Reload a saved model; safe_mode refuses any serialized Python code (lambdas)."""
    return keras.saving.load_model(path, safe_mode=True, compile=False)
