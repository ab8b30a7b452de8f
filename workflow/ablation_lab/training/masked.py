"""Training on with units removed: one traced loop per architecture, evaluated at every budget on the way.

The recovery analysis (analyses/recovery.py) removes units (conv: channels) from a model's
cut layer and keeps training what is left. `MaskedTraining` holds a working copy of the
model, a fresh optimizer of the study's kind and one traced function that runs any number of
training steps; each run assigns its starting weights, the optimizer's fresh state and the
mask into the same variables, so K masks and arms of one architecture cost one trace.

Removed units stay removed: the cut layer's output is multiplied by the keep-mask in every
forward pass (training and evaluation), and the removed units' own weights (the incoming
kernel columns and biases, the next weighted layer's rows) are zeroed at the start, their
gradients masked and the weights re-zeroed after every step, so they are exactly 0 after
any budget. The other weights train as in the study (its optimizer, learning rate, batch
size); the optimizer starts fresh (the trained model's optimizer state is not saved).

Steps draw full mini-batches from a stream of seeded permutations of the training split
(one epoch = ceil(n / batch) steps); the stream is the same for every run of one model and
seed (common random numbers: arms and criteria are compared on the same batches).

The same loop holds any weights at given values, not only removed units at 0: built with
`cut=None` and `held` (layer names), `start(weights, held=...)` takes a 0/1 mask and the
values to hold per held kernel (the faults analysis's fault-aware fine-tune, Zhang et al.
2018: the faulty entries of a permanent fault map keep their faulty values, the rest trains).
Holding writes the value back (`tf.where`, so a held Inf or NaN stays as it is) after every
step and masks the gradient the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ablation_lab.specs import TrainingSpec


def batch_rows(seed: int, n_rows: int, batch_size: int, steps: int) -> np.ndarray:
    """(steps, batch) row indices: consecutive full batches of a stream of fresh seeded permutations."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 29]))
    needed, parts = steps * batch_size, []
    while sum(len(p) for p in parts) < needed:
        parts.append(rng.permutation(n_rows))
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return stream[:needed].reshape(steps, batch_size).astype(np.int32)


def budget_steps(steps: Sequence[int], epochs: Sequence[float], steps_per_epoch: int) -> list[tuple[int, str]]:
    """The budget grid as (steps, label), ascending: step budgets and epoch budgets on one axis; 0 (the removal) always."""
    grid = {0: "0 steps"} | {int(s): f"{int(s)} step" + ("s" if s != 1 else "") for s in steps}
    for e in epochs:
        grid.setdefault(round(e * steps_per_epoch), f"{e:g} epoch" + ("s" if e != 1 else ""))
    return sorted(grid.items())


def weighted_layers(model: Any, cut: str) -> tuple[Any | None, Any]:
    """(the layer whose kernel's last axis makes the cut layer's units, or None; the next layer with a kernel)."""
    names = [layer.name for layer in model.layers]
    index = names.index(cut)
    units = int(model.layers[index].output.shape[-1])
    incoming = None
    for layer in reversed(model.layers[: index + 1]):
        if hasattr(layer, "kernel"):
            incoming = layer if int(layer.kernel.shape[-1]) == units else None
            break
    outgoing = next(layer for layer in model.layers[index + 1 :] if hasattr(layer, "kernel"))
    return incoming, outgoing


def weight_masks(model: Any, cut: str, keep: np.ndarray) -> list[tuple[Any, np.ndarray]]:
    """(variable, 0/1 array) for every variable holding a removed unit's weights."""
    incoming, outgoing = weighted_layers(model, cut)
    keep = keep.astype(np.float32)
    out = []
    if incoming is not None:
        out.append((incoming.kernel, np.broadcast_to(keep, tuple(incoming.kernel.shape)).copy()))
        if getattr(incoming, "bias", None) is not None:
            out.append((incoming.bias, keep.copy()))
    rows = int(outgoing.kernel.shape[-2])
    per_row = np.tile(keep, rows // len(keep))  # a Dense after Flatten of (h, w, c): row index % c is the channel
    shape = tuple(outgoing.kernel.shape)
    out.append((outgoing.kernel, np.broadcast_to(per_row[:, None], (*shape[:-2], rows, shape[-1])).copy()))
    return out


def seeded_dropout(model: Any, weights: Sequence[np.ndarray], seed: int) -> list[np.ndarray]:
    """`weights` (every variable of `model`, in order) with each dropout seed generator's state set from `seed`:
    a loaded model's state is whatever its process drew, so without this a dropout model's steps vary by process."""
    return [
        np.array([seed, 0], dtype=value.dtype) if variable.path.endswith("seed_generator_state") else value
        for variable, value in zip(model.variables, weights, strict=True)
    ]


class MaskedTraining:
    """A model's architecture with a traced masked training loop; `run` trains one (start weights, mask) along a budget grid.

    `cut`: the layer whose units `keep` masks; None with `held` (layer names): those kernels' entries held instead.
    """

    def __init__(
        self,
        model: Any,
        cut: str | None,
        training: TrainingSpec,
        x_train: np.ndarray,
        y_train: np.ndarray,
        held: Sequence[str] = (),
    ) -> None:
        import keras
        import tensorflow as tf

        from ablation_lab.models.build import build_optimizer

        self.model = keras.models.clone_model(model)
        self.model.set_weights(model.get_weights())
        self.cut = cut
        self.batch_size = training.batch_size
        self.optimizer = build_optimizer(training)
        self.optimizer.build(self.model.trainable_variables)
        self.fresh_optimizer = [v.numpy() for v in self.optimizer.variables]
        self.layers = [layer for layer in self.model.layers if not isinstance(layer, keras.layers.InputLayer)]
        units = int(self.model.get_layer(cut).output.shape[-1]) if cut else 0
        self.mask = tf.Variable(tf.ones(units), trainable=False)
        kernels = [self.model.get_layer(name).kernel for name in held]
        self.masked = (
            weight_masks(self.model, cut, np.ones(units, dtype=bool)) if cut else [(k, np.ones(k.shape, np.float32)) for k in kernels]
        )
        self.mask_variables = [tf.Variable(m, trainable=False) for _, m in self.masked]
        self.held_values = [tf.Variable(np.zeros_like(m), trainable=False) for _, m in self.masked]  # what a masked-out entry holds
        self.x, self.y = tf.constant(x_train), tf.constant(y_train)
        self.steps_per_epoch = math.ceil(len(y_train) / self.batch_size)
        self._train = self._trace_steps()
        self._predict = tf.function(lambda batch: tf.argmax(self.forward(batch, False), axis=-1), reduce_retracing=True)
        self._outputs = tf.function(lambda batch: self.forward(batch, False), reduce_retracing=True)

    def forward(self, batch: Any, training: bool) -> Any:
        out = batch
        for layer in self.layers:
            out = layer(out, training=training)
            if self.cut is not None and layer.name == self.cut:
                out = out * self.mask
        return out

    def _trace_steps(self) -> Any:
        import keras
        import tensorflow as tf

        loss_fn = keras.losses.SparseCategoricalCrossentropy()
        weights = self.model.trainable_variables
        masks = {id(variable): mask > 0 for (variable, _), mask in zip(self.masked, self.mask_variables, strict=True)}

        @tf.function(input_signature=[tf.TensorSpec([None, self.batch_size], tf.int32)], autograph=False)
        def run_steps(rows: Any) -> Any:
            def step(index: Any) -> Any:
                chosen = rows[index]
                labels = tf.gather(self.y, chosen)
                with tf.GradientTape() as tape:
                    loss = loss_fn(labels, self.forward(tf.gather(self.x, chosen), True))
                    loss = loss + tf.add_n(self.model.losses) if self.model.losses else loss
                gradients = tape.gradient(loss, weights)
                gradients = [
                    tf.where(masks[id(w)], g, tf.zeros_like(g)) if id(w) in masks else g for g, w in zip(gradients, weights, strict=True)
                ]
                self.optimizer.apply(gradients, weights)
                with tf.control_dependencies([g for g in gradients if g is not None]):
                    for (variable, _), mask, value in zip(self.masked, self.mask_variables, self.held_values, strict=True):
                        variable.assign(tf.where(mask > 0, variable, value))
                return (index + 1,)

            return tf.while_loop(lambda i: i < tf.shape(rows)[0], step, (tf.constant(0),))

        return run_steps

    def start(
        self, weights: Sequence[np.ndarray], keep: np.ndarray | None = None, held: Sequence[tuple[np.ndarray, np.ndarray]] | None = None
    ) -> None:
        """Load a run's starting variables (every model variable, in `model.variables` order), fresh optimizer, mask.

        `keep`: the cut layer's unit keep-mask (removed units held at 0); or `held`: per held kernel
        (0/1 mask, the values its 0 entries hold).
        """
        import tensorflow as tf

        for variable, value in zip(self.model.variables, weights, strict=True):
            variable.assign(value)
        for variable, value in zip(self.optimizer.variables, self.fresh_optimizer, strict=True):
            variable.assign(value)
        if keep is not None:
            self.mask.assign(keep.astype(np.float32))
            held = [(values, np.zeros_like(values)) for _, values in weight_masks(self.model, self.cut, keep)]
        for (variable, _), holder, value, (mask, values) in zip(
            self.masked, self.mask_variables, self.held_values, held or (), strict=True
        ):
            holder.assign(mask)
            value.assign(values)
            variable.assign(tf.where(mask > 0, variable, values))

    def train(self, rows: np.ndarray) -> None:
        """One step per row of `rows` (see `batch_rows`), on from the current weights."""
        self._train(rows)

    def predict(self, x: np.ndarray, chunk: int = 8192) -> np.ndarray:
        return np.concatenate([self._predict(x[i : i + chunk]).numpy() for i in range(0, len(x), chunk)]).astype(np.int32)

    def outputs(self, x: np.ndarray, chunk: int = 8192) -> np.ndarray:
        """The model's outputs in inference mode (the cut layer masked), as float32 arrays."""
        return np.concatenate([np.asarray(self._outputs(x[i : i + chunk])) for i in range(0, len(x), chunk)])

    def run(
        self, weights: Sequence[np.ndarray], keep: np.ndarray, budgets: Sequence[int], rows: np.ndarray, x_test: np.ndarray
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(steps, predicted test classes) at each budget, training on from one budget to the next, never restarting."""
        self.start(weights, keep)
        done = 0
        for budget in sorted(budgets):
            if budget > done:
                self._train(rows[done:budget])
                done = budget
            yield budget, self.predict(x_test)

    def removed_weights_nonzero(self) -> int:
        """Entries of the removed units' weights that are not exactly 0 (always 0: the test and the table check it)."""
        return int(sum(np.count_nonzero(v.numpy() * (1 - m.numpy())) for (v, _), m in zip(self.masked, self.mask_variables, strict=True)))

    def held_entries_changed(self) -> int:
        """Held entries whose float32 word is not the one they hold (always 0: the faults table checks it)."""
        changed = 0
        for (variable, _), mask, value in zip(self.masked, self.mask_variables, self.held_values, strict=True):
            held = mask.numpy() == 0
            words = np.asarray(variable.numpy(), np.float32).view(np.uint32)
            changed += int(np.count_nonzero(words[held] != np.asarray(value.numpy(), np.float32).view(np.uint32)[held]))
        return changed
