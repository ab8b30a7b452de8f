"""A trained model cut at one hidden layer: its head's activations once, its tail rerun with units masked.

What post-hoc knockout (analyses/knockout.py) and any later removal analysis build on. K
masks never cost K model rebuilds or K full forward passes: the layer's activations are
computed once per split; each mask only reruns the layers after it, on one (masks x
examples) batch, chunked so the batch stays within MEMORY_BUDGET bytes. Units are removed by
masking the layer's output in memory; saved models are never edited. A unit of a
convolutional layer is a channel (the last axis of its output), removed at every position.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ablation_lab.models.settings import LEARNABLE_ACTIVATIONS
from ablation_lab.specs import ModelSpec

# Bytes of masked activations evaluated in one call. Smaller chunks run faster on CPU too (cache):
# 16 masks on a CNN's first conv block (mnist5k test, 1 thread) took 3.3 s at 256 MiB, 1.6 s at 16 MiB
# (one unmasked tail pass: 0.1 s); 256 masks of the MLP's hidden layer 0.21 s vs 0.12 s.
MEMORY_BUDGET = 16 * 2**20


BUILT_IN = re.compile(r"\A(conv_act|hidden)_[0-9]+\Z")  # the knock-out-able layers models.py builds
RESNET_BUILT_IN = re.compile(r"\A(block_[0-9]+_(relu_1|relu_2|conv_2)|head_relu)\Z")  # ... and models/resnet.py
BLOCK = re.compile(r"\Ablock_([0-9]+)\Z")  # `block_<k>` in posthoc.layers: residual block k's write, block_<k>_conv_2
MERGES = ("Add", "Concatenate")
# Layers a channel passes through unchanged in index (what magnitude looks through for the next weights).
CHANNEL_PRESERVING = ("Activation", "BatchNormalization", "Dropout", "Add", "GlobalAveragePooling2D", "GlobalAveragePooling1D", "Flatten")


def _is_learnable(layer: Any) -> bool:
    from ablation_lab.models.layers import BasisActivation, GPActivation

    return isinstance(layer, GPActivation | BasisActivation)


def _knockable(layer: Any) -> bool:
    """A Dense/Conv1D/Conv2D with a non-linear activation, an Activation layer or a learnable activation."""
    import keras

    if isinstance(layer, keras.layers.Activation) or _is_learnable(layer):
        return True
    if isinstance(layer, keras.layers.Dense | keras.layers.Conv1D | keras.layers.Conv2D):
        return getattr(layer.activation, "__name__", "linear") != "linear"
    return False


def _chain_break(model: Any) -> str | None:
    """None for a chain (each layer takes the previous one's output), else the first layer that does not."""
    import keras

    previous = model.inputs[0]
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if len(model.inputs) != 1 or layer.input is not previous:
            return layer.name
        previous = layer.output
    return None


def _check_chain(model: Any) -> None:
    """The chain path reruns the layers after the cut one by one: each layer must take the previous one's output."""
    name = _chain_break(model)
    if name is not None:
        raise ValueError(f"post-hoc knockout needs a chain model (each layer takes the previous layer's output); layer {name!r} does not")


def knockout_layers(model: Any, branching: bool = False) -> list[str]:
    """The knock-out-able layers, input side first.

    A model built by models.py: its conv blocks' activations (`conv_act_<k>`, CNN) then its
    dense layers (`hidden_<k>`). Any other chain model: every Dense/Conv1D/Conv2D with a
    non-linear activation, Activation layer and learnable activation but the output layer.
    With `branching` (what the graph path, models/graph.py, serves) a model that is not a chain
    is accepted: the built-in residual network's activations and block writes
    (`block_<k>_relu_1`, `block_<k>_relu_2`, `block_<k>_conv_2`, `head_relu`); any other
    graph's non-linear layers as above, and the weighted layers whose output a merge
    (Add, Concatenate) takes: a residual branch's write. Without it such a model is refused.
    """
    if branching and _chain_break(model) is not None:
        names = [layer.name for layer in model.layers]
        if "block_1_add" in names and "stem_conv" in names:
            return [name for name in names if RESNET_BUILT_IN.match(name)]
        merged = {
            getattr(node.operation, "name", "") for layer in model.layers if type(layer).__name__ in MERGES for node in _inbound(layer)
        }
        output = model.layers[-1].name
        return [
            layer.name
            for layer in model.layers
            if layer.name != output and (_knockable(layer) or (layer.name in merged and hasattr(layer, "kernel")))
        ]
    _check_chain(model)  # a builder's model may name its blocks hidden_<k> and still branch
    names = [layer.name for layer in model.layers]
    if any(name.startswith("hidden_") for name in names):
        return [name for name in names if BUILT_IN.match(name)]
    return [layer.name for layer in model.layers[:-1] if _knockable(layer)]


def _inbound(layer: Any) -> list[Any]:
    """The nodes whose outputs `layer` (called once) takes."""
    return [tensor._keras_history.operation._inbound_nodes[tensor._keras_history.node_index] for tensor in _as_list(layer.input)]


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def block_writes(wanted: Sequence[int | str]) -> list[int | str]:
    """`posthoc.layers` with each `block_<k>` read as the layer it names: residual block k's write, `block_<k>_conv_2`."""
    return [f"{item}_conv_2" if isinstance(item, str) and BLOCK.match(item) else item for item in wanted]


def hidden_layers(model: Any) -> list[str]:
    """The `hidden_<k>` layers of a model built by models.py (what `posthoc.layers` integers count)."""
    return [name for name in knockout_layers(model) if name.startswith("hidden_")]


def chosen_layers(model: Any, wanted: Sequence[int | str], skip_missing: bool = False, branching: bool = False) -> list[str]:
    """The layers `posthoc.layers` names: an integer k is the k-th hidden layer, a string a layer name
    (`block_<k>`: residual block k's write, `block_<k>_conv_2`); empty: every knock-out-able layer.
    An integer past this model's depth is skipped (a capacity variant can be shallower than the
    baseline the study checked), and so is a missing name with `skip_missing`; otherwise an
    unknown name is an error naming the available layers. `branching`: see knockout_layers."""
    available = knockout_layers(model, branching)
    wanted = block_writes(wanted)
    if not wanted:
        return available
    hidden = [name for name in available if name.startswith("hidden_")]
    out = []
    for index, item in enumerate(wanted):
        if not isinstance(item, str):
            if int(item) <= len(hidden):
                out.append(hidden[int(item) - 1])
        elif item in available:
            out.append(item)
        elif not skip_missing:
            raise ValueError(
                f"posthoc.layers[{index}]: {item!r} is not a knock-out-able layer of this model (available: {', '.join(available)})"
            )
    return list(dict.fromkeys(out))


def built_in_layers(model: ModelSpec | Mapping[str, Any]) -> list[str]:
    """`knockout_layers` of the model models.py builds from this config, known without building it."""
    spec = ModelSpec.of(model)
    if spec.kind == "resnet":
        per_block = [f"block_{k}_{part}" for k in range(1, int(spec.blocks or 0) + 1) for part in ("relu_1", "relu_2", "conv_2")]
        return [*per_block, "head_relu"]
    filters = spec.filters if spec.kind == "cnn" else None
    return [f"conv_act_{k}" for k in range(1, len(filters or ()) + 1)] + [f"hidden_{k}" for k in range(1, len(spec.hidden_units) + 1)]


def built_in_weight_layers(model: ModelSpec | Mapping[str, Any]) -> list[str] | None:
    """`fault_injection.weight_layers` (every Dense/Conv kernel) of the model models.py builds from this
    config, known without building it; None for kinds whose layers only the built model knows."""
    spec = ModelSpec.of(model)
    if spec.kind == "resnet":
        filters, _ = spec.resnet_widths()
        changes = [k for k in range(1, len(filters) + 1) if filters[k - 1] != (filters[k - 2] if k > 1 else filters[0])]
        blocks = [f"block_{k}_{part}" for k in range(1, len(filters) + 1) for part in ("conv_1", "conv_2")]
        return ["stem_conv", *blocks, *(f"block_{k}_shortcut" for k in changes), "probabilities"]
    if spec.kind not in ("mlp", "cnn"):
        return None
    filters = spec.filters if spec.kind == "cnn" else None
    dense = "dense" if spec.activation in LEARNABLE_ACTIVATIONS else "hidden"
    hidden = [f"{dense}_{k}" for k in range(1, len(spec.hidden_units) + 1)]
    return [*(f"conv_{k}" for k in range(1, len(filters or ()) + 1)), *hidden, "probabilities"]


def incoming_norms(kernel: np.ndarray, units: int) -> np.ndarray:
    """L2 norm of each unit's (channel's) outgoing weights in the next weighted layer's kernel.

    The kernel's second-to-last axis is the next layer's input: a conv kernel (..., c, out)
    gives kernel[..., c, :]; a Dense kernel after Flatten of (h, w, c) gives the rows with
    index % c == channel (one row per unit when nothing is flattened).
    """
    rows = np.moveaxis(np.asarray(kernel), -2, 0)
    rows = rows.reshape(rows.shape[0], -1)
    if rows.shape[0] % units:
        raise ValueError(f"post-hoc knockout: the next weighted layer takes {rows.shape[0]} inputs, not a multiple of {units} units")
    return np.sqrt((rows.reshape(-1, units, rows.shape[1]) ** 2).sum(axis=(0, 2)))


@dataclass
class SplitModel:
    """A model cut after one layer: `head` gives that layer's activations, `tail` the rest."""

    head: Callable[[np.ndarray], np.ndarray]
    tail: Callable[[np.ndarray], np.ndarray]
    outgoing: np.ndarray | list[np.ndarray]  # the next weighted layer's kernel (its second-to-last axis: this layer's outputs)
    units: int = 0  # units (channels) of the cut layer
    graph: Any = None  # a branching model's Graph (models/graph.py): its tail needs the examples, see `bind`
    layer: str = ""
    rows_tail: Callable[[np.ndarray, slice], np.ndarray] | None = None  # a bound graph split: the tail of some of its examples

    @property
    def magnitude(self) -> np.ndarray:
        """L2 norm of each unit's outgoing weights (over every next weighted layer, where a graph has several)."""
        if isinstance(self.outgoing, list):
            if not self.outgoing:
                raise ValueError(
                    f"posthoc.orderings: magnitude needs a weighted layer after {self.layer!r} that keeps its channels; use another ordering"
                )
            return np.sqrt(sum(incoming_norms(kernel, self.units) ** 2 for kernel in self.outgoing))
        return incoming_norms(self.outgoing, self.units or self.outgoing.shape[-2])

    def bind(self, x: np.ndarray) -> SplitModel:
        """This split for the examples `x`: a chain's tail needs only the layer's activations (itself);
        a graph's also reads layers off the cut's downstream (a shortcut), whose clean values on
        `x` it computes once here. Its tail then takes (masks x examples of x) activations."""
        if self.graph is None:
            return self
        cache = self.graph.prepare(x, [self.layer])

        def rows_tail(batch: np.ndarray, rows: slice) -> np.ndarray:
            part = cache.rows(rows)
            masks = batch.reshape(-1, len(part), *batch.shape[1:])
            return self.graph.rerun(part, {self.layer: masks}).reshape(len(batch), -1)

        return replace(self, tail=lambda batch: rows_tail(batch, slice(0, len(cache))), rows_tail=rows_tail)

    def tail_of(self, batch: np.ndarray, rows: slice) -> np.ndarray:
        """The tail on (masks x examples[rows]) activations."""
        return self.tail(batch) if self.rows_tail is None else self.rows_tail(batch, rows)


def layers_after(model: Any, layer: str) -> list[Any]:
    """The layers the model runs after `layer` (a chain's tail), in order."""
    names = [each.name for each in model.layers]
    return model.layers[names.index(layer) + 1 :]


def split_model(model: Any, layer: str, chunk: int = 8192) -> SplitModel:
    """The chain path: a head model up to `layer`, its tail the layers after it rerun in order."""
    import keras
    import tensorflow as tf

    _check_chain(model)
    head_model = keras.Model(model.inputs, model.get_layer(layer).output)
    after = layers_after(model, layer)
    outgoing = next(each.kernel for each in after if hasattr(each, "kernel"))
    shape = tuple(model.get_layer(layer).output.shape[1:])
    chunk = max(1, min(chunk, MEMORY_BUDGET // (4 * int(np.prod(shape)))))

    @tf.function(reduce_retracing=True)
    def run_tail(activations: tf.Tensor) -> tf.Tensor:
        for each in after:
            activations = each(activations, training=False)
        return activations

    head_fn = tf.function(lambda batch: head_model(batch, training=False), reduce_retracing=True)

    def head(x: np.ndarray) -> np.ndarray:
        if not len(x):
            return np.zeros((0, *shape), np.float32)
        return np.concatenate([head_fn(x[i : i + chunk]).numpy() for i in range(0, len(x), chunk)]).astype(np.float32)

    def tail(activations: np.ndarray) -> np.ndarray:
        return run_tail(tf.constant(activations, dtype=tf.float32)).numpy()

    return SplitModel(head, tail, np.asarray(outgoing), int(shape[-1]))


class TrainActivations:
    """A layer's activations on the training split, never held whole: per-unit mean, min and
    max over examples and positions from one chunked pass, and chosen examples on demand."""

    def __init__(self, head: Callable[[np.ndarray], np.ndarray], x: np.ndarray, chunk: int = 1024) -> None:
        self.head, self.x = head, x
        total = low = high = None
        for start in range(0, len(x), chunk):
            part = head(x[start : start + chunk])
            flat = part.reshape(-1, part.shape[-1]).astype(np.float64)
            total = flat.sum(axis=0) + (0.0 if total is None else total)
            low = flat.min(axis=0) if low is None else np.minimum(low, flat.min(axis=0))
            high = flat.max(axis=0) if high is None else np.maximum(high, flat.max(axis=0))
            positions = flat.shape[0] // len(part)
        self.mean = (total / (len(x) * positions)).astype(np.float32)
        self.low, self.high = low, high

    @classmethod
    def of(cls, activations: np.ndarray) -> TrainActivations:
        """From activations already in memory (tests, small layers)."""
        return activations if isinstance(activations, cls) else cls(np.asarray, np.asarray(activations, np.float32))

    def __len__(self) -> int:
        return len(self.x)

    def take(self, index: np.ndarray) -> np.ndarray:
        return self.head(self.x[index]).astype(np.float32)


def masked_predictions(
    split: SplitModel, activations: np.ndarray, keep: np.ndarray, fill: np.ndarray, basis: np.ndarray | None = None
) -> np.ndarray:
    """Predicted classes (masks x examples) with the units where `keep` is False replaced by `fill`.

    `activations` is (examples, units) or (examples, ..., channels); `keep` is (masks, units)
    bool, acting on the last axis at every position; `fill` is (units,) or activations-shaped.
    With an orthogonal `basis` (units x units, columns the directions) the mask acts on the
    coordinates along its columns instead of on units (`fill` is then in those coordinates):
    the identity basis is unit knockout; removing every direction is a full knockout.
    One tail call per chunk of masks x examples (at most MEMORY_BUDGET bytes of masked
    activations): activations are computed once, never per mask.
    """
    if basis is not None:
        activations = (activations @ basis).astype(np.float32)
    n_examples = len(activations)
    per_example = 4 * int(np.prod(activations.shape[1:]))
    if n_examples * per_example <= MEMORY_BUDGET:
        mask_step, example_step = max(1, MEMORY_BUDGET // max(1, n_examples * per_example)), max(1, n_examples)
    else:  # one mask over all examples is already too big: chunk the examples too
        mask_step, example_step = 1, max(1, MEMORY_BUDGET // per_example)
    fill = np.broadcast_to(np.asarray(fill, dtype=np.float32), activations.shape)
    spatial = (1,) * (activations.ndim - 2)
    out = np.empty((len(keep), n_examples), dtype=np.int32)
    for start in range(0, len(keep), mask_step):
        mask = keep[start : start + mask_step].astype(np.float32)
        mask = mask.reshape(len(mask), 1, *spatial, mask.shape[-1])
        for first in range(0, n_examples, example_step):
            part, part_fill = activations[first : first + example_step], fill[first : first + example_step]
            batch = part[None] * mask + part_fill[None] * (1.0 - mask)
            batch = batch if basis is None else (batch @ basis.T).astype(np.float32)  # back to the layer's own axes
            probabilities = split.tail_of(batch.reshape(-1, *activations.shape[1:]), slice(first, first + len(part)))
            out[start : start + len(mask), first : first + len(part)] = probabilities.argmax(axis=1).reshape(len(mask), len(part))
    return out


def class_selectivity(activations: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Morcos et al. (2018) selectivity of each unit (a channel: its mean over positions), and its preferred class.

    (mu_max - mu_rest) / (mu_max + mu_rest): mu_max the highest class-conditional mean
    activation, mu_rest the mean of the other classes' means. 1: the unit fires for one class
    only; 0: equally for all (and for a unit that never fires). Meant for non-negative
    activations (ReLU); call it on the validation split.
    """
    flat = activations.reshape(len(activations), -1, activations.shape[-1]).mean(axis=1).astype(np.float64)
    present = [c for c in range(n_classes) if (labels == c).any()]
    means = np.stack([flat[labels == c].mean(axis=0) for c in present])  # (classes, units)
    top = means.argmax(axis=0)
    mu_max = means.max(axis=0)
    mu_rest = (means.sum(axis=0) - mu_max) / max(1, len(present) - 1)
    total = mu_max + mu_rest
    selectivity = np.divide(mu_max - mu_rest, total, out=np.zeros_like(total), where=total != 0)
    return selectivity, np.asarray(present)[top]


def random_rotation(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random orthogonal matrix (Haar measure, scipy's ortho_group): its columns are random orthonormal directions."""
    from scipy.stats import ortho_group

    if size < 2:
        return np.ones((size, size), dtype=np.float32)
    return ortho_group.rvs(size, random_state=rng).astype(np.float32)


def naive_predictions(model: Any, layer: str, x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Reference path (benchmarks, tests): one cloned model per mask, zero fill, full forward pass.

    Zeroing a unit's rows in the next weighted layer's kernel removes exactly its output (a
    channel: its slice kernel[..., c, :] of a conv kernel, or its rows index % channels == c
    of a Dense kernel after Flatten).
    """
    import keras

    from ablation_lab.training.train import predict_proba

    names = [each.name for each in model.layers]
    weighted = [each for each in model.layers[names.index(layer) + 1 :] if hasattr(each, "kernel")]
    output = model.get_layer(layer).output  # in a graph, the weighted layer that reads it (not a shortcut listed before it)
    after = next((each for each in weighted if each.input is output), weighted[0])
    out = np.empty((len(keep), len(x)), dtype=np.int32)
    for row, mask in enumerate(keep):
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        target = clone.get_layer(after.name)
        kernel, *rest = target.get_weights()
        inputs = np.tile(mask, kernel.shape[-2] // len(mask)).astype(kernel.dtype)  # one entry per kernel input
        target.set_weights([kernel * inputs[:, None], *rest])
        out[row] = predict_proba(clone, x).argmax(axis=1)
    return out
