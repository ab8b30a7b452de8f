"""The built-in models (the article's MLP, the KST model, the CNN), built from a run's `ModelSpec`.

`build_model` is the one entry: it reads the run spec's (canonical) `model` mapping into a
typed `specs.ModelSpec` once, so a key the spec leaves out (`dropout_kind`, `dropout_layers`,
`nsdropout_interval`, `l2`, the per-kind keys) comes back from the schema rather than from a
default written here, and hands it to the builder of its kind (resnet, model files and builder
functions live in their own modules).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import layers

from ablation_lab.models.layers import NSDropout, learnable_activation
from ablation_lab.models.settings import LEARNABLE_ACTIVATIONS, learnable_settings
from ablation_lab.specs import ModelSpec, TrainingSpec

# The hidden activations a study may name (the schema's enum is tested against this list).
ACTIVATIONS = ("relu", "sigmoid", "tanh", "linear", "elu", "gelu", "swish", *LEARNABLE_ACTIVATIONS)
FEATURE_FUNCTIONS = "feature_functions"  # the KST model's per-feature learnable functions
OPTIMIZERS = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}


def _dropout_layer(kind: str, rate: float, n_classes: int, depth: int, interval: int) -> layers.Layer:
    if kind == "nsdropout":
        return NSDropout(rate, n_classes, mask_interval=interval, name=f"nsdropout_{depth}")
    return layers.Dropout(rate, name=f"dropout_{depth}")


def _dense_head(x: Any, n_classes: int, spec: ModelSpec) -> Any:
    """The dense blocks (`hidden_<k>`, each followed by its dropout layer) and the softmax output, on a flat tensor."""
    depth = len(spec.hidden_units)
    followed = set(range(1, depth + 1) if spec.dropout_layers is None else spec.dropout_layers)
    for k, (units, penalty) in enumerate(zip(spec.hidden_units, spec.penalties, strict=True), start=1):
        regularizer = keras.regularizers.L2(penalty) if penalty else None
        if spec.activation in LEARNABLE_ACTIVATIONS:
            x = layers.Dense(units, kernel_regularizer=regularizer, name=f"dense_{k}")(x)
            x = _activation_layer(spec, f"hidden_{k}")(x)
        else:
            x = layers.Dense(units, activation=spec.activation, kernel_regularizer=regularizer, name=f"hidden_{k}")(x)
        if k in followed:
            x = _dropout_layer(spec.dropout_kind, spec.dropout, n_classes, k, spec.nsdropout_interval)(x)
    return layers.Dense(n_classes, activation="softmax", name="probabilities")(x)


def build_mlp(
    input_shape: Sequence[int], n_classes: int, hidden_units: Sequence[int], activation: str, dropout: float, **settings: Any
) -> keras.Model:
    """The MLP of these settings (any other `model` key by name: `kind="kst"`, `l2`, `dropout_kind`, ...).

    A shorthand for tests and notebooks; the workflow builds from the run's spec (`build_model`).
    """
    model = {"hidden_units": list(hidden_units), "activation": activation, "dropout": dropout, **settings}
    return mlp(input_shape, n_classes, ModelSpec.of({key: value for key, value in model.items() if value is not None}))


def mlp(input_shape: Sequence[int], n_classes: int, spec: ModelSpec) -> keras.Model:
    """One Dense block per entry of `hidden_units`; dropout follows the hidden layers in `dropout_layers` (default all).

    A learnable activation is its own layer after a linear Dense (`dense_<k>`), and it is the
    one named `hidden_<k>`: `hidden_<k>` always outputs the block's unit activations, which is
    what post-hoc knockout removes. Kind `kst` is the Kolmogorov-Arnold-style topology of the
    GP-activation paper: a learned function of each input feature (`feature_functions`), their
    weighted sums, and a learned outer function (the hidden activation, which must be learnable).
    """
    inputs = keras.Input(shape=tuple(input_shape), name="features")
    x = layers.Flatten(name="flatten")(inputs)
    if spec.kind == "kst":  # one learnable univariate function per input feature, feeding the first layer's sums
        x = learnable_activation("gp-per-unit", spec.learnable or learnable_settings({}), FEATURE_FUNCTIONS)(x)
    return keras.Model(inputs, _dense_head(x, n_classes, spec), name="mlp")


def _activation_layer(spec: ModelSpec, name: str) -> layers.Layer:
    if spec.activation in LEARNABLE_ACTIVATIONS:
        return learnable_activation(spec.activation, spec.learnable or learnable_settings({}), name)
    return layers.Activation(spec.activation, name=name)


def build_cnn(input_shape: Sequence[int], n_classes: int, model: ModelSpec | Mapping[str, Any]) -> keras.Model:
    """Conv blocks (conv -> [batch norm] -> activation -> [2x2 pooling] -> dropout), then the MLP head.

    Grey images of shape (h, w) get a channel axis. Every family applies as in the MLP:
    `dropout` follows every conv block and every dense layer, `activation` is swapped in every
    block, and the dense head (`hidden_units`, layers `hidden_<k>`) is what knockout removes
    units of. Pooling uses `same` padding, so small images (8 x 8 digits) survive 3 blocks.
    """
    spec = ModelSpec.of(model)
    shape = tuple(input_shape)
    if len(shape) not in (2, 3):
        raise ValueError(
            f"model.kind: cnn needs images of shape (height, width[, channels]); this dataset's inputs have shape {list(shape)}"
        )
    inputs = keras.Input(shape=shape, name="features")
    x = layers.Reshape((*shape, 1), name="channels")(inputs) if len(shape) == 2 else inputs
    for block, filters in enumerate(spec.filters or (), start=1):
        x = layers.Conv2D(filters, spec.kernel_size, padding="same", use_bias=not spec.batch_norm, name=f"conv_{block}")(x)
        if spec.batch_norm:
            x = layers.BatchNormalization(name=f"norm_{block}")(x)
        x = _activation_layer(spec, f"conv_act_{block}")(x)
        if spec.pooling != "none":
            pool = layers.MaxPooling2D if spec.pooling == "max" else layers.AveragePooling2D
            x = pool(2, padding="same", name=f"pool_{block}")(x)
        x = layers.Dropout(spec.dropout, name=f"conv_dropout_{block}")(x)
    x = layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, _dense_head(x, n_classes, spec), name="cnn")


def build_model(model: Mapping[str, Any], input_shape: Sequence[int], n_classes: int) -> keras.Model:
    """The model a run's (canonical) `model` spec describes, read once into a `ModelSpec`."""
    spec = ModelSpec.of(model)
    if spec.kind == "cnn":
        return build_cnn(input_shape, n_classes, spec)
    if spec.kind == "resnet":
        from ablation_lab.models.resnet import build_resnet

        return build_resnet(input_shape, n_classes, spec)
    if spec.kind == "file":
        from ablation_lab.models.model_file import build_file_model

        return build_file_model(spec, input_shape, n_classes)
    if spec.kind == "builder":
        return build_with_builder(model, input_shape, n_classes)
    return mlp(input_shape, n_classes, spec)


def build_with_builder(model_cfg: Mapping[str, Any], input_shape: Sequence[int], n_classes: int) -> keras.Model:
    """A model from a builder file of this repository (ablation_lab/builders), checked like a model file.

    A builder is handed the run's canonical model mapping (its documented interface), not a `ModelSpec`.
    """
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


def build_optimizer(training: TrainingSpec) -> keras.optimizers.Optimizer:
    return OPTIMIZERS[training.optimizer](learning_rate=float(training.learning_rate))


def load_model(path: str) -> keras.Model:
    """Reload a saved model; safe_mode refuses any serialized Python code (lambdas)."""
    return keras.saving.load_model(path, safe_mode=True, compile=False)
