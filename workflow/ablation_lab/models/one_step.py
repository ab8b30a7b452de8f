"""What one SGD step on one example does to a trained model's outputs at every example, in float64.

Local elasticity (analyses/elasticity.py) reads these changes. A trained chain of layers is
rebuilt in float64 (`float64_network`; any other model through Keras, `float64_keras`); the
first-order form differentiates per-example output Jacobians of the parameters, the exact form
takes the step. A model too large for full Jacobians raises UnsupportedLayer before any work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

TRACE_FROM = 20  # exact steps from which tracing the step (about 0.3 s) pays for itself


@dataclass(frozen=True)
class DenseStep:
    """A Dense layer with a bias: kernel `params[first]`, bias `params[first + 1]`, then `activation`."""

    first: int
    activation: Callable[[Any], Any]


@dataclass(frozen=True)
class LearnableStep:
    """A learnable activation layer: its own parameter is `params[index]`, its function `layer.apply`.

    `layer.apply(inputs, parameter)` computes in the inputs' dtype (float64 here) and lets the
    parameter carry a leading example axis, which is how `forward` gets per-example gradients
    of a parameter every example shares.
    """

    index: int
    layer: Any


@dataclass(frozen=True)
class Network:
    """A trained chain of layers in float64: `steps` in order, their parameters in `params`.

    A step is a `DenseStep`, a `LearnableStep`, or a parameter-free layer rebuilt in float64
    (flatten, dropout: identity at inference). The SGD step moves every entry of `params`.
    """

    steps: tuple[DenseStep | LearnableStep | Callable[[Any], Any], ...]
    params: tuple[Any, ...]


class Pass(NamedTuple):
    """One forward pass: the output and what the first-order form differentiates.

    Per Dense layer its input and pre-activation; per learnable layer a zero of its
    parameter's shape with a leading example axis, added to the parameter, so the gradient
    with respect to it is each example's own gradient of the shared parameter (empty
    without a tape).
    """

    output: Any
    dense_inputs: list[Any]
    pre_activations: list[Any]
    per_example_params: list[Any]


class UnsupportedLayer(ValueError):
    """A layer the batched form cannot differentiate (conv layers, weighted layers other than Dense)."""


def _require_chain(model: Any) -> None:
    """The factored form replays the layers one after the other: a branching model takes the full-Jacobian path."""
    import keras

    previous = model.inputs[0] if len(model.inputs) == 1 else None
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if previous is None or layer.input is not previous:
            raise UnsupportedLayer(f"elasticity: layer {layer.name!r} does not take the previous layer's output")
        previous = layer.output


def float64_network(model: Any) -> Network:
    """The model's layers with float64 weights: a Keras layer would cast its input back to float32."""
    import keras
    import tensorflow as tf

    from ablation_lab.models.layers import LEARNABLE_LAYERS

    def as_float64(weight: Any) -> Any:
        return tf.constant(np.asarray(weight), tf.float64)

    steps: list[DenseStep | LearnableStep | Callable[[Any], Any]] = []
    params: list[Any] = []
    _require_chain(model)
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.layers.Dense) and layer.use_bias:
            steps.append(DenseStep(len(params), layer.activation))
            params += [as_float64(layer.kernel), as_float64(layer.bias)]
        elif isinstance(layer, LEARNABLE_LAYERS) and len(layer.weights) == len(layer.trainable_weights) == 1:
            steps.append(LearnableStep(len(params), layer))
            params.append(as_float64(layer.trainable_weights[0]))
        elif layer.weights:
            raise UnsupportedLayer(
                f"elasticity: layer {layer.name!r} ({type(layer).__name__}) has weights; only Dense layers with a bias "
                "and the learnable activations (GPActivation, BasisActivation) are supported"
            )
        else:
            twin = type(layer).from_config({**layer.get_config(), "dtype": "float64"})
            steps.append(lambda x, twin=twin: twin(x, training=False))
    return Network(tuple(steps), tuple(params))


def flat_input(h: Any, layer: str) -> Any:
    """`h` if it is (examples, features): the factored forms index a layer's input by feature."""
    if len(h.shape) != 2:
        raise UnsupportedLayer(f"elasticity: {layer} gets a {len(h.shape)}-d input; only flat inputs are supported")
    return h


def per_example_zero(parameter: Any, examples: int) -> Any:
    """Zeros shaped (examples, ...) that broadcast against `parameter` and a flat layer input.

    A shared parameter (K,) becomes (examples, 1, K) and a per-unit one (units, K)
    (examples, units, K): the leading axes line up with the input's (examples, units).
    """
    import tensorflow as tf

    return tf.zeros((examples, *[1] * (2 - len(parameter.shape)), *parameter.shape), tf.float64)


def forward(network: Network, params: Sequence[Any], x: Any, tape: Any = None) -> Pass:
    """The output, and the tensors the first-order form differentiates (watched on `tape`, if given)."""
    import tensorflow as tf

    h, trace = x, Pass(None, [], [], [])
    for step in network.steps:
        if isinstance(step, DenseStep):
            trace.dense_inputs.append(flat_input(h, f"Dense layer {len(trace.dense_inputs) + 1}"))
            z = tf.matmul(h, params[step.first]) + params[step.first + 1]
            if tape is not None:
                tape.watch(z)
            trace.pre_activations.append(z)
            h = step.activation(z)
        elif isinstance(step, LearnableStep):
            parameter = params[step.index]
            if tape is not None:
                zero = per_example_zero(parameter, int(flat_input(h, f"layer {step.layer.name!r}").shape[0]))
                tape.watch(zero)
                trace.per_example_params.append(zero)
                parameter = parameter + zero
            h = step.layer.apply(h, parameter)
        else:
            h = step(h)
    return trace._replace(output=h)


def output_gradient(probabilities: Any, labels: np.ndarray) -> Any:
    """dL/df of the cross-entropy L = -log f_y: -1/f_y at the label, 0 elsewhere (per example)."""
    import tensorflow as tf

    onehot = tf.one_hot(labels, probabilities.shape[1], dtype=tf.float64)
    return -onehot / tf.reduce_sum(onehot * probabilities, axis=1, keepdims=True)


class Jacobians(NamedTuple):
    """Per example, what the first-order form multiplies (see `output_jacobians`)."""

    probabilities: Any  # (n, classes)
    dense_inputs: list[Any]  # per Dense layer, its input: (n, width_in)
    dense: list[Any]  # per Dense layer, df/dz: (n, classes, width)
    learnable: list[Any]  # per learnable layer, df/dtheta of its own parameter, flattened: (n, classes, size)


def output_jacobians(network: Network, inputs: Any) -> Jacobians:
    """The output, each Dense layer's input and df/dz, and df/dtheta of each learnable layer's parameter, per example.

    The batched Jacobian, one backward pass per output class over the whole batch: examples
    do not interact (no batch statistics; dropout is off at inference), so the gradient of
    the batch's sum of class c holds every example's own row. Same numbers as
    `tape.batch_jacobian` (tested), which re-traces its parallel-for on every eager call
    (about 0.2 s per layer for the default model, 10x the whole computation here). A
    learnable layer's parameter is shared by the examples, so `forward` adds a per-example
    zero to it: the gradient with respect to that zero is each example's own gradient.
    """
    import tensorflow as tf

    with tf.GradientTape(persistent=True) as tape:
        trace = forward(network, network.params, inputs, tape)
        columns = tf.unstack(trace.output, axis=1)
    watched = trace.pre_activations + trace.per_example_params
    per_class = [tape.gradient(column, watched) for column in columns]
    del tape
    stacked = [tf.stack([grads[k] for grads in per_class], axis=1) for k in range(len(watched))]
    dense, learnable = stacked[: len(trace.pre_activations)], stacked[len(trace.pre_activations) :]
    flat = [tf.reshape(jacobian, (*jacobian.shape[:2], -1)) for jacobian in learnable]
    return Jacobians(trace.output, trace.dense_inputs, dense, flat)


def first_order_changes(network: Network, x: np.ndarray, labels: np.ndarray, learning_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """changes[i, j] ~ f(x_j; w+_i) - f(x_j; w) for every pair at once, and ||dL/df(x_i)||.

    The first-order (neural tangent kernel) form: factored by Dense layer (see the module
    docstring), plus for each learnable activation layer the product of its own parameter's
    per-example Jacobians, J_theta(x_j) J_theta(x_i)^T dL/df(x_i) (its parameter has at most
    units x control points entries). Cost: one forward pass and one backward pass per
    output class, each over the whole sample, then n x n x classes x width multiply-adds per
    Dense layer and n x n x classes x size per learnable layer.
    """
    import tensorflow as tf

    jacobians = output_jacobians(network, tf.constant(x, tf.float64))
    gradient = output_gradient(jacobians.probabilities, labels)
    changes = tf.zeros((len(x), len(x), jacobians.probabilities.shape[1]), tf.float64)
    for a, jacobian in zip(jacobians.dense_inputs, jacobians.dense, strict=True):
        step_signal = tf.einsum("ic,icd->id", gradient, jacobian)  # dL(x_i)/dz_l(x_i)
        gram = tf.matmul(a, a, transpose_b=True) + 1.0  # kernel and bias parts of <dz(x_j)/dw, dz(x_i)/dw>
        changes += gram[:, :, None] * tf.einsum("id,jcd->ijc", step_signal, jacobian)
    for jacobian in jacobians.learnable:
        step = tf.einsum("ic,icp->ip", gradient, jacobian)  # dL(x_i)/dtheta: the step of the layer's own parameter
        changes += tf.einsum("ip,jcp->ijc", step, jacobian)
    return (-learning_rate * changes).numpy(), tf.norm(gradient, axis=1).numpy()


def exact_changes(network: Network, x: np.ndarray, labels: np.ndarray, learning_rate: float, rows: Sequence[int]) -> np.ndarray:
    """changes[k, j] = f(x_j; w+) - f(x_j; w) after one actual SGD step on x_{rows[k]}: the reference.

    The step moves every parameter, a learnable activation's own included. One gradient and
    one forward pass over all n points per step (never n x n calls).
    """
    import tensorflow as tf

    inputs = tf.constant(x, tf.float64)
    before = forward(network, network.params, inputs).output

    def stepped_output(example: Any, label: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(network.params)
            probability = forward(network, network.params, example).output[0, label]
            loss = -tf.math.log(probability)
        gradients = tape.gradient(loss, network.params)
        stepped = [w - learning_rate * g for w, g in zip(network.params, gradients, strict=True)]
        return forward(network, stepped, inputs).output - before

    step = tf.function(stepped_output) if len(rows) >= TRACE_FROM else stepped_output
    return np.stack([step(inputs[i : i + 1], tf.constant(int(labels[i]))).numpy() for i in rows])


JACOBIAN_BUDGET = 2 * 2**30  # bytes of per-example parameter Jacobians (samples x classes x parameters x 8)


@dataclass(frozen=True)
class KerasNetwork:
    """A float64 clone of any Keras model, called statelessly with a given list of trainable values.

    The factored form above needs Dense layers; this one differentiates every trainable
    parameter (conv kernels, batch-norm scales, ...) through full per-example Jacobians, so
    it costs memory in proportion to the parameter count (`JACOBIAN_BUDGET`). Batch norm
    uses its moving statistics (inference), which the step leaves unchanged.
    """

    model: Any
    params: tuple[Any, ...]
    fixed: tuple[Any, ...]

    def __call__(self, params: Sequence[Any], x: Any) -> Any:
        return self.model.stateless_call(list(params), list(self.fixed), x, training=False)[0]


def float64_keras(model: Any) -> KerasNetwork:
    import keras
    import tensorflow as tf

    def as_float64(layer: Any) -> Any:
        return type(layer).from_config({**layer.get_config(), "dtype": "float64"})

    functional = keras.Model(model.inputs, model.outputs) if isinstance(model, keras.Sequential) else model
    (source,) = functional.inputs  # a model file has one input (model_file); the built models too
    inputs = keras.Input(batch_shape=source.shape, dtype="float64", name=source.name)
    clone = keras.models.clone_model(functional, input_tensors=inputs, clone_function=as_float64)
    clone.set_weights([np.asarray(w, np.float64) for w in model.get_weights()])
    constants = [tf.constant(v.numpy(), tf.float64) for v in clone.trainable_variables]
    return KerasNetwork(clone, tuple(constants), tuple(tf.constant(v.numpy()) for v in clone.non_trainable_variables))


def check_jacobian_budget(network: KerasNetwork, examples: int, classes: int) -> None:
    size = examples * classes * sum(int(np.prod(p.shape)) for p in network.params) * 8
    if size > JACOBIAN_BUDGET:
        raise UnsupportedLayer(
            f"elasticity.samples: {examples} examples x {classes} classes x this model's parameters need "
            f"{size / 2**30:.1f} GiB of Jacobians (limit {JACOBIAN_BUDGET / 2**30:.0f} GiB); lower elasticity.samples"
        )


def keras_first_order_changes(network: KerasNetwork, x: np.ndarray, labels: np.ndarray, learning_rate: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """`first_order_changes` for any model: J(x_j) J(x_i)^T dL/df(x_i) from full per-example Jacobians."""
    import tensorflow as tf

    inputs = tf.constant(x, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(network.params)
        probabilities = network(network.params, inputs)
    check_jacobian_budget(network, len(x), int(probabilities.shape[1]))
    jacobian = tf.concat([tf.reshape(j, (*probabilities.shape, -1)) for j in tape.jacobian(probabilities, network.params)], axis=2)
    gradient = output_gradient(probabilities, labels)
    step = tf.einsum("ic,icp->ip", gradient, jacobian)  # dL(x_i)/dw
    changes = tf.einsum("ip,jcp->ijc", step, jacobian)
    return (-learning_rate * changes).numpy(), tf.norm(gradient, axis=1).numpy()


def keras_exact_changes(network: KerasNetwork, x: np.ndarray, labels: np.ndarray, learning_rate: float, rows: Sequence[int]) -> np.ndarray:  # fmt: skip
    """`exact_changes` for any model: one actual SGD step of every trainable parameter per row."""
    import tensorflow as tf

    inputs = tf.constant(x, tf.float64)
    before = network(network.params, inputs)
    out = []
    for i in rows:
        with tf.GradientTape() as tape:
            tape.watch(network.params)
            loss = -tf.math.log(network(network.params, inputs[i : i + 1])[0, int(labels[i])])
        stepped = [w - learning_rate * g for w, g in zip(network.params, tape.gradient(loss, network.params), strict=True)]
        out.append((network(stepped, inputs) - before).numpy())
    return np.stack(out)
