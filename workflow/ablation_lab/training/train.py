"""Training: the same mathematics as `model.fit`, with far less per-step overhead.

An ablation study is many small trainings. For the article's 784-128-10 MLP a training step
is well under a millisecond of arithmetic, and `model.fit` spends most of its time in
Python between steps. `fit_fast` runs a whole epoch inside one traced `tf.function` (a
graph loop over mini-batches of data already held as tensors), evaluates validation once
per epoch, and keeps early stopping and best-weight restore in plain Python around it.
`fit_keras` is the reference `model.fit` loop, kept for benchmarks and as a config option.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ablation_lab.specs import ModelSpec, TrainingSpec

log = logging.getLogger("ablation_lab")


@dataclass
class TrainResult:
    model: Any  # keras.Model
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    diverged_epoch: int | None = None
    seconds: float = 0.0

    @property
    def status(self) -> str:
        return "diverged" if self.diverged_epoch is not None else "ok"


def configure_tensorflow(threads: int, deterministic: bool = True, gpu: bool = False) -> str:
    """Pin TensorFlow to the rule's `threads` and `gpu` request; return the device it trains on.

    Snakemake sets OMP_NUM_THREADS for a job but TensorFlow ignores it; one intra-op and one
    inter-op thread per job is also the fastest setting for these small models. Only a job
    that holds the `gpu` resource (config `resources: gpu`) sees a GPU: with
    `--resources gpu=1` Snakemake then runs one GPU job at a time, and CPU jobs never grab
    GPU memory behind the scheduler's back.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # the runtime already started (e.g. a second call in tests)
        log.debug("TensorFlow threads were already configured")
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    device = _select_gpu(tf, gpu)
    if device == "CPU":
        # Grappler's graph rewrites cost about 0.15 s per traced model and, for these small
        # CPU graphs, buy nothing per step (measured: benchmarks/README.md); GPUs keep them.
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    return device


def _select_gpu(tf: Any, wanted: bool) -> str:
    """Show TensorFlow the first GPU if the job asked for one (memory grown on demand), else none."""
    gpus = tf.config.list_physical_devices("GPU")
    if wanted and not gpus:
        log.warning(
            "the job asked for a GPU but TensorFlow sees none (CUDA_VISIBLE_DEVICES=%s): training on CPU",
            os.environ.get("CUDA_VISIBLE_DEVICES"),
        )
        return "CPU"
    try:
        tf.config.set_visible_devices(gpus[:1] if wanted else [], "GPU")
        if wanted:
            tf.config.experimental.set_memory_growth(gpus[0], True)
    except RuntimeError:  # the runtime already started: devices are as the first call set them
        log.debug("TensorFlow devices were already configured")
    if wanted:
        log.info("training on %s", gpus[0].name)
        return gpus[0].name
    return "CPU"


def seed_everything(seed: int) -> None:
    """Python, NumPy, TensorFlow and Keras seed generators (initialisers, dropout)."""
    import keras

    keras.utils.set_random_seed(seed)


def _epoch_function(model: Any, optimizer: Any, batch_size: int) -> Any:
    """A traced function: one whole epoch over a given row order, then the validation pass.

    Training and validation share one trace (tracing is most of a small model's cost), and
    the per-step loop is a graph loop, so Python runs once per epoch, not once per step.
    The data are arguments, not captured constants, so the trace serves any data of the
    same shapes (`TracedEpochs`).
    """
    import keras
    import tensorflow as tf

    from ablation_lab.models.layers import chain_forward, nsdropout_layers, refresh_held_out

    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    class_conditional = bool(nsdropout_layers(model))
    weights = model.trainable_variables

    def forward(batch: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        """NSDropout layers need the batch's labels; other models are called as they are."""
        return chain_forward(model, batch, training=True, labels=labels) if class_conditional else model(batch, training=True)

    def penalised(loss: tf.Tensor) -> tf.Tensor:
        """Add the layers' weight penalties (L2), as `model.fit` does; models without any are unchanged."""
        return loss + tf.add_n(model.losses) if model.losses else loss

    def accuracy_sum(labels: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
        hits = tf.equal(tf.argmax(probabilities, axis=-1, output_type=tf.int32), labels)
        return tf.reduce_sum(tf.cast(hits, tf.float32))

    @tf.function(jit_compile=False, autograph=False, reduce_retracing=True)
    def run_epoch(order: tf.Tensor, x: tf.Tensor, y: tf.Tensor, x_val: tf.Tensor, y_val: tf.Tensor) -> tuple[tf.Tensor, ...]:
        n_rows = int(x.shape[0])
        n_batches = math.ceil(n_rows / batch_size)

        def step(index: tf.Tensor, order: tf.Tensor, loss_sum: tf.Tensor, correct: tf.Tensor) -> tuple[tf.Tensor, ...]:
            rows = order[index * batch_size : (index + 1) * batch_size]
            y_batch = tf.gather(y, rows)
            with tf.GradientTape() as tape:
                probabilities = forward(tf.gather(x, rows), y_batch)
                loss = penalised(loss_fn(y_batch, probabilities))
            optimizer.apply(tape.gradient(loss, weights), weights)
            size = tf.cast(tf.shape(rows)[0], tf.float32)
            return index + 1, order, loss_sum + loss * size, correct + accuracy_sum(y_batch, probabilities)

        if class_conditional:  # the held-out side of the masks: validation activations, this epoch's weights
            refresh_held_out(model, x_val, y_val)
        start = (tf.constant(0), order, tf.constant(0.0), tf.constant(0.0))
        _, _, loss_sum, correct = tf.while_loop(lambda i, *_: i < n_batches, step, start)
        val_probabilities = model(x_val, training=False)
        val_loss = penalised(loss_fn(y_val, val_probabilities))
        return loss_sum / n_rows, correct / n_rows, val_loss, accuracy_sum(y_val, val_probabilities) / int(y_val.shape[0])

    return run_epoch


@dataclass
class _Traced:
    """A twin of a trained model, its optimizer and their traced epoch."""

    model: Any
    optimizer: Any
    run_epoch: Any

    @property
    def nbytes(self) -> int:
        """The memory its variables hold (model and optimizer state)."""
        variables = [*self.model.variables, *self.optimizer.variables]
        return sum(int(np.prod(v.shape)) * np.dtype(str(v.dtype)).itemsize for v in variables)


class TracedEpochs:
    """Traced epochs kept for the next training of the same architecture in this process.

    Tracing a small model's epoch costs about as much as running five epochs of it (0.3 s
    of 0.7 s for the article's MLP), and a warm worker trains many variants that differ only
    in their data (input masks, noise) or not at all in shape. A traced epoch depends on the
    architecture (every layer's config, names included), the optimizer's config, the batch
    size and the data's shapes, and on nothing else but variable values. So each entry keeps
    a twin of the model and optimizer the epoch was traced on: a training with the same
    key copies its fresh model's starting variables (weights and dropout seed states) and a
    fresh optimizer's into the twin, runs the twin's epoch, and copies the end state back.
    Hit or miss, every training runs on a twin in the same way, so the numbers do not depend
    on what the process trained before (tested to the bit).

    At most `size` entries, and at most `max_bytes` of twins' variables besides the one in
    use: a researcher's large model does not stay in a worker's memory eight times over.
    """

    def __init__(self, size: int = 8, max_bytes: int = 256 * 2**20) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.entries: dict[str, _Traced] = {}
        self.hits = 0

    def clear(self) -> None:
        """Forget every trace (benchmarks that time tracing start from none)."""
        self.entries.clear()

    @staticmethod
    def key(model: Any, optimizer: Any, arrays: dict[str, Any], batch_size: int) -> str | None:
        """What a traced epoch depends on; None for models whose state lives outside variables."""
        from ablation_lab.models.layers import nsdropout_layers

        if nsdropout_layers(model):  # NSDropout keeps its held-out masks in Python state
            return None
        shapes = {name: [list(array.shape), str(array.dtype)] for name, array in sorted(arrays.items())}
        return json.dumps([model.get_config(), optimizer.get_config(), batch_size, shapes], sort_keys=True, default=str)

    def twin_for(self, model: Any, optimizer: Any, arrays: dict[str, Any], batch_size: int) -> _Traced | None:
        """The twin to train on, holding `model`'s and `optimizer`'s starting state; None: train `model` itself."""
        import keras

        key = self.key(model, optimizer, arrays, batch_size)
        if key is None:
            return None
        optimizer.build(model.trainable_variables)
        entry = self.entries.pop(key, None)
        self.hits += entry is not None
        if entry is None:
            twin = keras.models.clone_model(model)
            twin_optimizer = optimizer.__class__.from_config(optimizer.get_config())
            twin_optimizer.build(twin.trainable_variables)
            entry = _Traced(twin, twin_optimizer, _epoch_function(twin, twin_optimizer, batch_size))
        if not (_same_shapes(model.variables, entry.model.variables) and _same_shapes(optimizer.variables, entry.optimizer.variables)):
            log.warning("no traced twin for this model: its variables differ from its clone's; tracing it itself")
            return None
        _copy_variables(model.variables, entry.model.variables)
        _copy_variables(optimizer.variables, entry.optimizer.variables)
        self.entries[key] = entry  # most recently used last
        while len(self.entries) > 1 and (len(self.entries) > self.size or self._nbytes() > self.max_bytes):
            self.entries.pop(next(iter(self.entries)))  # the least recently used
        return entry

    def _nbytes(self) -> int:
        return sum(entry.nbytes for entry in self.entries.values())


def _same_shapes(first: list[Any], second: list[Any]) -> bool:
    return [(tuple(v.shape), v.dtype) for v in first] == [(tuple(v.shape), v.dtype) for v in second]


def _copy_variables(sources: list[Any], targets: list[Any]) -> None:
    for source, target in zip(sources, targets, strict=True):
        target.assign(source)


TRACED = TracedEpochs()


def epoch_orders(seed: int, n_rows: int) -> Iterator[np.ndarray]:
    """The row order of each epoch: a fresh seeded permutation every epoch, for both loops."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    while True:
        yield rng.permutation(n_rows).astype(np.int32)


def fit_fast(model: Any, optimizer: Any, arrays: dict[str, np.ndarray], training: TrainingSpec, seed: int) -> TrainResult:
    """Train with whole-epoch graph execution; early stopping on the validation score, best weights kept."""
    import tensorflow as tf

    fitted = {key: arrays[key] for key in ("x_train", "y_train", "x_val", "y_val")}  # the traced epoch's arguments
    tensors = [tf.constant(array) for array in fitted.values()]
    twin = TRACED.twin_for(model, optimizer, fitted, training.batch_size)
    if twin is None:
        optimizer.build(model.trainable_variables)
        trained, run_epoch = model, _epoch_function(model, optimizer, training.batch_size)
    else:
        trained, run_epoch = twin.model, twin.run_epoch
    result = _fit_epochs(trained, lambda order: run_epoch(order, *tensors), training, seed, len(arrays["y_train"]))
    if twin is not None:
        _copy_variables(twin.model.variables, model.variables)
    result.model = model
    return result


def _fit_epochs(model: Any, run_epoch: Any, training: TrainingSpec, seed: int, n_rows: int) -> TrainResult:
    """The epochs of `fit_fast`: early stopping on the validation score (`keep_best`), best weights restored."""
    import tensorflow as tf

    orders = epoch_orders(seed, n_rows)
    result = TrainResult(model)
    best_score, best_weights, waited = -math.inf, None, 0
    patience = training.early_stopping_patience
    score = training.kept_epoch_score()
    for epoch in range(1, training.epochs + 1):
        order = tf.constant(next(orders))
        loss, accuracy, val_loss, val_accuracy = (float(v) for v in run_epoch(order))
        result.history.append({"epoch": epoch, "loss": loss, "accuracy": accuracy, "val_loss": val_loss, "val_accuracy": val_accuracy})
        log_epoch(result.history[-1], training.epochs)
        if not (math.isfinite(loss) and math.isfinite(val_loss)):
            result.diverged_epoch = epoch
            log.warning("loss became %s at epoch %d: variant diverged", loss, epoch)
            return result
        if score(result.history[-1]) > best_score:
            best_score, best_weights, waited, result.best_epoch = score(result.history[-1]), model.get_weights(), 0, epoch
        else:
            waited += 1
            if patience and waited >= patience:
                log.info("early stopping at epoch %d (best %d)", epoch, result.best_epoch)
                break
    if training.keep_best == "last":  # the final epoch kept; early stopping judged the validation loss
        result.best_epoch = len(result.history)
    else:
        model.set_weights(best_weights)
    return result


def shuffled_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, with_labels: bool = False) -> Any:
    """Mini-batches for `model.fit` in the same per-epoch orders as the fast loop.

    `model.fit(..., shuffle=True)` after `keras.utils.set_random_seed` was measured (Keras
    3.15) feeding the same batch order every epoch; this dataset draws a new order from
    `epoch_orders` at the end of each epoch instead.
    """
    import keras

    class ShuffledBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.orders = epoch_orders(seed, len(y))
            self.order: np.ndarray | None = None
            self.served = 0
            self.seen: list[np.ndarray] = []  # each epoch's order, for tests

        def __len__(self) -> int:
            return math.ceil(len(y) / batch_size)

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            if self.order is None:
                self.order = next(self.orders)
                self.seen.append(self.order)
            self.served += 1
            rows = self.order[index * batch_size : (index + 1) * batch_size]
            return ((x[rows], y[rows]), y[rows]) if with_labels else (x[rows], y[rows])

        def on_epoch_end(self) -> None:
            # Keras peeks at a couple of batches (and calls this) before the first epoch: only
            # a whole epoch served moves on to the next order, so epoch k uses order k.
            if self.served >= len(self):
                self.order = None
            self.served = 0

    return ShuffledBatches()


def fit_keras(model: Any, optimizer: Any, arrays: dict[str, np.ndarray], training: TrainingSpec, seed: int) -> TrainResult:
    """The plain `model.fit` loop with the same early-stopping rule and batch orders (reference path).

    A model with NSDropout is fitted through its two-input twin (features, labels) that
    shares its layers, and its held-out statistics are refreshed at the start of each epoch.
    """
    import keras

    from ablation_lab.models.layers import nsdropout_layers, refresh_held_out, training_model

    class_conditional = bool(nsdropout_layers(model))
    fitted = training_model(model) if class_conditional else model
    fitted.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    monitor = training.monitored
    stopper = keras.callbacks.EarlyStopping(
        monitor=monitor,
        mode="max" if monitor == "val_accuracy" else "min",
        patience=training.early_stopping_patience or training.epochs,
        restore_best_weights=training.keep_best != "last",
    )
    progress = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: log_epoch(
            {"epoch": epoch + 1, **{k: float(logs.get(k, float("nan"))) for k in EPOCH_KEYS}}, training.epochs
        )
    )
    callbacks = [stopper, keras.callbacks.TerminateOnNaN(), progress]
    validation = (arrays["x_val"], arrays["y_val"])
    if class_conditional:
        callbacks.insert(
            0, keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: refresh_held_out(model, arrays["x_val"], arrays["y_val"]))
        )
        validation = ((arrays["x_val"], arrays["y_val"]), arrays["y_val"])
    history = fitted.fit(
        shuffled_batches(arrays["x_train"], arrays["y_train"], training.batch_size, seed, with_labels=class_conditional),
        epochs=training.epochs,
        validation_data=validation,
        callbacks=callbacks,
        shuffle=False,
        verbose=0,
    )
    result = TrainResult(model)
    keys = ("loss", "accuracy", "val_loss", "val_accuracy")
    for index in range(len(history.history["loss"])):
        result.history.append({"epoch": index + 1, **{k: float(history.history[k][index]) for k in keys if k in history.history}})
    bad = [row["epoch"] for row in result.history if not math.isfinite(row["loss"])]
    if bad:
        result.diverged_epoch = bad[0]
    elif result.history:
        result.best_epoch = int(np.argmax([training.kept_epoch_score()(row) for row in result.history])) + 1
        result.best_epoch = len(result.history) if training.keep_best == "last" else result.best_epoch
    return result


def log_epoch(row: dict[str, float], epochs: int) -> None:
    """One line per epoch in the job's log: progress a user can follow with `tail -f`."""
    log.info(
        "epoch %d/%d: loss %.4f, accuracy %.4f, val_loss %.4f, val_accuracy %.4f",
        row["epoch"], epochs, row["loss"], row["accuracy"], row["val_loss"], row["val_accuracy"],
    )  # fmt: skip


EPOCH_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")
LOOPS = {"fast": fit_fast, "keras": fit_keras}


def train_model(spec: dict[str, Any], arrays: dict[str, np.ndarray], n_classes: int, seed: int) -> TrainResult:
    """Seed everything, build the variant's model on its transformed data and train it."""
    from ablation_lab.models.build import build_model, build_optimizer

    seed_everything(seed)
    model = build_model(spec["model"], arrays["x_train"].shape[1:], n_classes)
    if ModelSpec.of(spec["model"]).weights == "as_saved":
        log.info("model.weights: as_saved: the file's own trained weights, no training")
        return TrainResult(model)
    training = TrainingSpec.of(spec["training"])
    optimizer = build_optimizer(training)
    started = time.perf_counter()
    result = LOOPS[training.loop](model, optimizer, arrays, training, seed)
    result.seconds = time.perf_counter() - started
    return result


def predict_proba(model: Any, x: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Class probabilities in inference mode (dropout off), batched to bound memory."""
    import tensorflow as tf

    infer = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)
    parts = [infer(x[start : start + chunk]).numpy() for start in range(0, len(x), chunk)]
    return np.concatenate(parts).astype(np.float32)
