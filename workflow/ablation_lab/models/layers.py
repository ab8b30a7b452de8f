"""Custom Keras layers, registered so saved models reload with `safe_mode=True`.

`NSDropout` is the class-conditional dropout of the NSDropout write-up
(`../shared/seeds/001_*.txt`), re-implemented as a Keras 3 layer:

- Training (after the first update): the layer's inputs are grouped by true class, for the
  training batch and for a held-out set (here the *validation* split, never the test split);
  per class, the held-out mean activation is subtracted from the training mean, and the
  `rate` share of units with the largest difference are zeroed in that class's mask. Each
  training example is multiplied by its own class's mask, scaled by 1 / (1 - rate); gradients
  flow through the mask to the inputs. The very first update uses an ordinary Bernoulli mask.
- Inference: given `mask_class` (one class per example), the layer multiplies by that class's
  mask; given `class_weights` (examples x classes), by that mixture of the masks; without
  either it is the identity, like ordinary dropout. Masks are scaled by 1 / (1 - rate) as in
  training, so a masked inference pass is exactly the training-time pass of that class. (The
  write-up multiplies by the unscaled mask at inference, which shrinks the layer's output by
  1 - rate against training; scaling gives the oracle protocol its best case.) Which class to pass is the evaluation protocol's choice (ablation_lab/analyses/nsdropout.py):
  the write-up passes the true label, which puts the label into the prediction.

Labels reach the layer through `call(..., labels=...)`: `chain_forward` threads them through a
sequential model, and `training_model` builds the two-input model that `model.fit` trains.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="ablation_lab")
class NSDropout(keras.layers.Layer):
    """Class-conditional dropout: per-class masks from training-vs-held-out mean activations.

    Args:
        rate: share of units each class's mask zeroes (rounded to whole units).
        n_classes: number of classes (labels are 0..n_classes-1).
        mask_interval: recompute the class masks every this many training updates (1 = every
            update, as in the write-up); between recomputations the last masks are reused.
        seed: seed of the first update's Bernoulli mask (None: from Keras's global seed).
    """

    def __init__(self, rate: float, n_classes: int, mask_interval: int = 1, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0 <= rate < 1:
            raise ValueError(f"NSDropout layer {self.name!r}: rate must be in [0, 1), got {rate}")
        if n_classes < 2 or mask_interval < 1:
            raise ValueError(f"NSDropout layer {self.name!r}: needs n_classes >= 2 and mask_interval >= 1")
        self.rate = float(rate)
        self.n_classes = int(n_classes)
        self.mask_interval = int(mask_interval)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def build(self, input_shape: Sequence[int | None]) -> None:
        units = int(input_shape[-1])
        shape = (self.n_classes, units)
        self.masks = self.add_weight(shape=shape, initializer="ones", trainable=False, name="class_masks")
        self.held_out_means = self.add_weight(shape=shape, initializer="zeros", trainable=False, name="held_out_means")
        self.updates = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="int64", name="updates")

    @property
    def dropped_units(self) -> int:
        """Units zeroed per class mask: round(units x rate), as the write-up does."""
        return round(int(self.masks.shape[-1]) * self.rate)

    def class_masks_from(self, inputs: Any, labels: Any) -> tuple[Any, Any]:
        """Per-class masks from a training batch against the held-out means, and which classes it holds.

        The difference is training mean minus held-out mean; the `dropped_units` largest
        differences of each class are zeroed (ties: the lower unit index is dropped first).
        """
        onehot = ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), self.n_classes, dtype=inputs.dtype)
        counts = ops.sum(onehot, axis=0)
        means = ops.matmul(ops.transpose(onehot), inputs) / ops.maximum(counts, 1.0)[:, None]
        difference = means - ops.cast(self.held_out_means, inputs.dtype)
        units = int(self.masks.shape[-1])
        if self.dropped_units == 0:
            return ops.ones((self.n_classes, units), dtype=inputs.dtype), counts > 0
        _, largest = ops.top_k(difference, self.dropped_units, sorted=False)
        dropped = ops.max(ops.one_hot(largest, units, dtype=inputs.dtype), axis=1)
        return 1.0 - dropped, counts > 0

    def _train(self, inputs: Any, labels: Any) -> Any:
        labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
        fresh, present = self.class_masks_from(inputs, labels)
        refresh = ops.logical_and(present, ops.equal(self.updates % self.mask_interval, 0))
        masks = ops.where(refresh[:, None], fresh, ops.cast(self.masks, inputs.dtype))
        first = ops.equal(self.updates, 0)
        bernoulli = ops.cast(keras.random.uniform(ops.shape(inputs), seed=self.seed_generator) >= self.rate, inputs.dtype)
        per_example = ops.where(first, bernoulli, ops.take(masks, labels, axis=0))
        self.masks.assign(ops.where(first, self.masks, ops.cast(masks, self.masks.dtype)))
        self.updates.assign(self.updates + 1)
        return inputs * ops.stop_gradient(per_example) / (1.0 - self.rate)

    def call(self, inputs: Any, labels: Any = None, mask_class: Any = None, class_weights: Any = None, training: bool | None = None) -> Any:
        if training and self.rate > 0:
            if labels is None:
                raise ValueError(
                    f"NSDropout layer {self.name!r} needs the batch's labels in training: "
                    "train with ablation_lab.training.train (or ablation_lab.models.layers.training_model)"
                )
            return self._train(inputs, labels)
        masks = ops.cast(self.masks, inputs.dtype) / (1.0 - self.rate)
        if mask_class is not None:
            return inputs * ops.take(masks, ops.cast(ops.reshape(mask_class, (-1,)), "int32"), axis=0)
        if class_weights is not None:  # a mixture of the class masks per example (e.g. their average)
            return inputs * ops.matmul(ops.cast(class_weights, inputs.dtype), masks)
        return inputs

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> Sequence[int | None]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "rate": self.rate,
            "n_classes": self.n_classes,
            "mask_interval": self.mask_interval,
            "seed": self.seed,
        }


def nsdropout_layers(model: keras.Model) -> list[NSDropout]:
    return [layer for layer in model.layers if isinstance(layer, NSDropout)]


def chain_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers in call order, for a single-input, single-output chain (the MLP).

    Label-aware calls walk the chain themselves; a model whose graph branches cannot be
    walked this way, so it is refused here by name rather than computed wrong.
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"model {model.name!r}: NSDropout needs a single-input, single-output sequential model")
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    for previous, layer in itertools.pairwise(layers):
        if layer.input is not previous.output:
            raise ValueError(
                f"model {model.name!r}: layer {layer.name!r} does not follow {previous.name!r}; NSDropout needs a sequential model"
            )
    return layers


def chain_forward(
    model: keras.Model, x: Any, *, training: bool | None = None, stop_at: keras.layers.Layer | None = None, **nsdropout_kwargs: Any
) -> Any:
    """Run the chain, passing `labels` / `mask_class` to every NSDropout layer.

    `stop_at`: return the input of that layer instead (the activations the layer sees).
    `training=None` leaves the mode to the caller's context: a symbolic call must not fix it,
    or the functional model built from it would never train its dropout layers.
    """
    mode = {} if training is None else {"training": training}
    h = x
    for layer in chain_layers(model):
        if layer is stop_at:
            return h
        h = layer(h, **mode, **nsdropout_kwargs) if isinstance(layer, NSDropout) else layer(h, **mode)
    return h


def refresh_held_out(model: keras.Model, x_held_out: Any, y_held_out: Any) -> None:
    """Store each NSDropout layer's per-class mean input on the held-out (validation) split.

    Called at the start of every epoch, so a full-batch run sees the previous update's
    held-out activations, as in the write-up. A class absent from the held-out split keeps
    its previous means.
    """
    for layer in nsdropout_layers(model):
        seen = chain_forward(model, x_held_out, training=False, stop_at=layer)
        onehot = ops.one_hot(ops.cast(ops.reshape(y_held_out, (-1,)), "int32"), layer.n_classes, dtype=seen.dtype)
        counts = ops.sum(onehot, axis=0)
        means = ops.matmul(ops.transpose(onehot), seen) / ops.maximum(counts, 1.0)[:, None]
        layer.held_out_means.assign(ops.where((counts > 0)[:, None], means, ops.cast(layer.held_out_means, means.dtype)))


def training_model(model: keras.Model) -> keras.Model:
    """A two-input model (features, labels) sharing `model`'s layers, for `model.fit`.

    Its NSDropout layers receive the labels; at inference (validation) they are the identity.
    """
    features = keras.Input(shape=model.inputs[0].shape[1:], name="features")
    labels = keras.Input(shape=(), dtype="int32", name="labels")
    outputs = chain_forward(model, features, labels=labels)
    return keras.Model([features, labels], outputs, name=f"{model.name}_with_labels")


# --- learnable activation functions ----------------------------------------------------------


def _named_activation(name: str, x: np.ndarray) -> np.ndarray:
    """A fixed Keras activation on a NumPy grid (what a learnable activation starts as)."""
    return np.asarray(keras.activations.get(name)(keras.ops.convert_to_tensor(x.astype("float32"))), dtype=np.float64)


def rbf_interpolation_weights(grid: np.ndarray, length_scale: float, jitter: float = 1e-6) -> np.ndarray:
    """K(G, G)^-1 for the squared-exponential kernel: control values -> interpolation coefficients.

    Solved once, in float64, when the layer is built; calls only multiply by it.
    """
    gram = np.exp(-((grid[:, None] - grid[None, :]) ** 2) / (2 * length_scale**2))
    return np.linalg.inv(gram + jitter * np.eye(len(grid)))


@keras.saving.register_keras_serializable(package="ablation_lab")
class GPActivation(keras.layers.Layer):
    """An activation defined by learned values at fixed control points, interpolated by a GP.

    The value at x is the Gaussian-process posterior mean (squared-exponential kernel,
    `length_scale`, default the grid spacing; prior mean the line through the two end control
    values) given the control values on an even grid over `grid_range`; the control values are trained by back-propagation, the kernel keeps the
    function smooth. Inputs outside the grid extrapolate linearly, with the slope of the two
    outermost control points on that side. `per_unit=True` learns one function per unit,
    else one per layer. `init` names the Keras activation the control values start from.
    """

    def __init__(
        self,
        num_control_points: int = 21,
        grid_range: Sequence[float] = (-3.0, 3.0),
        length_scale: float | None = None,
        init: str = "relu",
        per_unit: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        low, high = (float(v) for v in grid_range)
        if num_control_points < 3 or not low < high or (length_scale is not None and length_scale <= 0):
            raise ValueError(f"GPActivation layer {self.name!r}: needs >= 3 control points, grid_range low < high, length_scale > 0")
        self.num_control_points, self.grid_range, self.init, self.per_unit = int(num_control_points), (low, high), init, bool(per_unit)
        self.spacing = (high - low) / (self.num_control_points - 1)
        self.length_scale = float(length_scale) if length_scale is not None else self.spacing
        self.grid = np.linspace(low, high, self.num_control_points)
        self.interpolation = rbf_interpolation_weights(self.grid, self.length_scale).astype("float32")

    def initial_values(self) -> np.ndarray:
        return _named_activation(self.init, self.grid)

    def build(self, input_shape: Sequence[int | None]) -> None:
        start = self.initial_values()
        shape = (int(input_shape[-1]), self.num_control_points) if self.per_unit else (self.num_control_points,)
        values = np.broadcast_to(start, shape).astype("float32")
        self.control_values = self.add_weight(shape=shape, initializer=keras.initializers.Constant(values), name="control_values")

    def call(self, inputs: Any) -> Any:
        return self.apply(inputs, ops.cast(self.control_values, inputs.dtype))

    def apply(self, inputs: Any, values: Any) -> Any:
        """The function with the given control values, in the inputs' dtype.

        A pure function of both, so local elasticity evaluates it in float64 with stepped
        values. `values` may carry leading axes that broadcast against the inputs' leading
        axes (e.g. one set per example: (n, 1, K) shared, (n, units, K) per unit).
        """
        low, high = self.grid_range
        inside = ops.clip(inputs, low, high)
        kernel = ops.exp(
            -ops.square(ops.expand_dims(inside, -1) - ops.convert_to_tensor(self.grid, inputs.dtype)) / (2 * self.length_scale**2)
        )
        # The GP's prior mean is the line through the two end control values: the kernel part
        # then interpolates residuals that are 0 at both ends, so the edges do not sag.
        slope = (values[..., -1] - values[..., 0]) / (high - low)
        grid = ops.convert_to_tensor(self.grid, inputs.dtype)
        residuals = values - (ops.expand_dims(values[..., 0], -1) + ops.expand_dims(slope, -1) * (grid - low))
        coefficients = ops.matmul(residuals, ops.convert_to_tensor(self.interpolation, inputs.dtype))  # W symmetric
        interpolated = values[..., 0] + slope * (inside - low) + ops.sum(kernel * coefficients, axis=-1)
        slope_high = (values[..., -1] - values[..., -2]) / self.spacing
        slope_low = (values[..., 1] - values[..., 0]) / self.spacing
        return interpolated + ops.relu(inputs - high) * slope_high - ops.relu(low - inputs) * slope_low

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_control_points": self.num_control_points,
            "grid_range": list(self.grid_range),
            "length_scale": self.length_scale,
            "init": self.init,
            "per_unit": self.per_unit,
        }


STANDARD_BASIS = ("linear", "relu", "tanh", "sigmoid")


@keras.saving.register_keras_serializable(package="ablation_lab")
class BasisActivation(keras.layers.Layer):
    """A self-learnable activation (SLAF): a learned weighted sum of fixed basis functions.

    `basis="poly"`: 1, x, ..., x^degree on `grid_range`; outside it the polynomial
    extrapolates linearly with its slope at the edge (a cubic would otherwise blow up on the
    first large pre-activation). `basis="standard"`: linear, relu, tanh and sigmoid. One set
    of coefficients per layer, started at the least-squares fit of `init` on `grid_range`
    (exactly `init` when it is in the standard basis).
    """

    def __init__(
        self, basis: str = "poly", degree: int = 3, grid_range: Sequence[float] = (-3.0, 3.0), init: str = "relu", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if basis not in ("poly", "standard"):
            raise ValueError(f"BasisActivation layer {self.name!r}: unknown basis {basis!r} (poly or standard)")
        if basis == "poly" and degree < 1:
            raise ValueError(f"BasisActivation layer {self.name!r}: degree must be >= 1")
        self.basis, self.degree, self.init = basis, int(degree), init
        self.grid_range = tuple(float(v) for v in grid_range)

    def _basis_numpy(self, x: np.ndarray) -> np.ndarray:
        if self.basis == "poly":
            return np.stack([x**power for power in range(self.degree + 1)], axis=-1)
        return np.stack([_named_activation(name, x) for name in STANDARD_BASIS], axis=-1)

    def initial_coefficients(self) -> np.ndarray:
        if self.basis == "standard" and self.init in STANDARD_BASIS:
            return np.eye(len(STANDARD_BASIS))[STANDARD_BASIS.index(self.init)]
        grid = np.linspace(*self.grid_range, 101)
        return np.linalg.lstsq(self._basis_numpy(grid), _named_activation(self.init, grid), rcond=None)[0]

    def build(self, input_shape: Sequence[int | None]) -> None:
        start = self.initial_coefficients().astype("float32")
        self.coefficients = self.add_weight(shape=start.shape, initializer=keras.initializers.Constant(start), name="coefficients")

    def _poly(self, x: Any, coefficients: Any) -> Any:
        return sum(coefficients[..., power] * x**power for power in range(self.degree + 1))

    def _poly_slope(self, x: Any, coefficients: Any) -> Any:
        return sum(power * coefficients[..., power] * x ** (power - 1) for power in range(1, self.degree + 1))

    def call(self, inputs: Any) -> Any:
        return self.apply(inputs, ops.cast(self.coefficients, inputs.dtype))

    def apply(self, inputs: Any, coefficients: Any) -> Any:
        """The function with the given coefficients, in the inputs' dtype.

        A pure function of both, so local elasticity evaluates it in float64 with stepped
        coefficients. `coefficients` may carry leading axes that broadcast against the
        inputs' leading axes (e.g. one set per example: (n, 1, terms)).
        """
        if self.basis == "standard":
            parts = (inputs, ops.relu(inputs), ops.tanh(inputs), ops.sigmoid(inputs))
            return sum(coefficients[..., i] * part for i, part in enumerate(parts))
        low, high = self.grid_range
        inside = ops.clip(inputs, low, high)
        value = self._poly(inside, coefficients)
        return (
            value
            + ops.relu(inputs - high) * self._poly_slope(ops.convert_to_tensor(high, inputs.dtype), coefficients)
            - ops.relu(low - inputs) * self._poly_slope(ops.convert_to_tensor(low, inputs.dtype), coefficients)
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "basis": self.basis, "degree": self.degree, "grid_range": list(self.grid_range), "init": self.init}


LEARNABLE_LAYERS = (GPActivation, BasisActivation)


def learnable_activation(name: str, settings: dict[str, Any], layer_name: str) -> keras.layers.Layer:
    """The layer for a learnable activation name (`gp`, `gp-per-unit`, `slaf-poly3`, `slaf-standard`)."""
    grid = settings["grid_range"]
    if name in ("gp", "gp-per-unit"):
        return GPActivation(
            settings["control_points"], grid, settings["length_scale"], settings["init"], per_unit=name == "gp-per-unit", name=layer_name
        )
    if name == "slaf-standard":
        return BasisActivation("standard", 1, grid, settings["init"], name=layer_name)
    if name.startswith("slaf-poly"):
        return BasisActivation("poly", int(name.removeprefix("slaf-poly")), grid, settings["init"], name=layer_name)
    raise ValueError(f"unknown learnable activation {name!r}")
