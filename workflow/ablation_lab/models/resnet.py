"""The built-in residual network (`model.kind: resnet`): a small pre-activation ResNet for images.

    features -> [channels] -> stem_conv (3x3)
      -> block k = 1..blocks:  [block_k_norm_1] -> block_k_relu_1 -> block_k_conv_1 (3x3, inner width)
                               -> [block_k_norm_2] -> block_k_relu_2 -> block_k_conv_2 (3x3: the block's WRITE)
                               block_k_add = stream + block_k_conv_2   (the residual stream after block k)
      -> [head_norm] -> head_relu -> pool (global average) -> head_dropout -> probabilities (softmax)

Pre-activation (He et al. 2016, "Identity Mappings in Deep Residual Networks"): the stream
itself is never normalised or rectified, so a block's contribution is exactly its
`block_k_conv_2` output, added once. Where a block changes the number of channels (`filters`)
it downsamples with stride 2 and its shortcut is a 1x1 conv, `block_k_shortcut`, reading the
block's raw input (the stream); otherwise the shortcut is the identity. The layer names are
what studies address: knockout of `block_k_relu_2` channels is the post-hoc twin of narrowing
block k's inner width (`block_widths`, the units family); `block_k_conv_2` is its write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
from keras import layers

from ablation_lab.models.layers import learnable_activation
from ablation_lab.models.settings import LEARNABLE_ACTIVATIONS
from ablation_lab.specs import ModelSpec

# Moving-statistics momentum of the batch norms: Keras' 0.99 leaves them far from the data's after
# the few hundred updates a study on 2 cores trains for, and inference uses them.
BN_MOMENTUM = 0.9


def build_resnet(input_shape: Sequence[int], n_classes: int, model: ModelSpec | Mapping[str, Any]) -> keras.Model:
    """The residual network a (canonical) kind-resnet model spec describes; see the module docstring."""
    shape = tuple(input_shape)
    if len(shape) not in (2, 3):
        raise ValueError(
            f"model.kind: resnet needs images of shape (height, width[, channels]); this dataset's inputs have shape {list(shape)}"
        )
    spec = ModelSpec.of(model)
    filters, inner = spec.resnet_widths()
    size, batch_norm, activation = spec.kernel_size, spec.batch_norm, spec.activation
    learnable = spec.learnable if activation in LEARNABLE_ACTIVATIONS else None

    def norm_act(x: Any, name: str, suffix: str) -> Any:
        if batch_norm:
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_norm{suffix}")(x)
        if learnable is not None:
            return learnable_activation(activation, learnable, f"{name}_relu{suffix}")(x)
        return layers.Activation(activation, name=f"{name}_relu{suffix}")(x)

    inputs = keras.Input(shape=shape, name="features")
    x = layers.Reshape((*shape, 1), name="channels")(inputs) if len(shape) == 2 else inputs
    stream = layers.Conv2D(filters[0], size, padding="same", name="stem_conv")(x)
    width = filters[0]
    for k, (out, hidden) in enumerate(zip(filters, inner, strict=True), start=1):
        stride = 1 if out == width else 2
        x = norm_act(stream, f"block_{k}", "_1")
        x = layers.Conv2D(hidden, size, strides=stride, padding="same", name=f"block_{k}_conv_1")(x)
        x = norm_act(x, f"block_{k}", "_2")
        write = layers.Conv2D(out, size, padding="same", name=f"block_{k}_conv_2")(x)
        shortcut = stream if stride == 1 else layers.Conv2D(out, 1, strides=stride, name=f"block_{k}_shortcut")(stream)
        stream, width = layers.Add(name=f"block_{k}_add")([shortcut, write]), out
    x = norm_act(stream, "head", "")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(spec.dropout, name="head_dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="resnet")
