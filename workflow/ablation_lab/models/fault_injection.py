"""Faults injected into a trained model's weights in memory, and taken out again bit for bit.

What the fault-tolerance analysis (analyses/faults.py) and its benchmark build on. A fault
map is a set of (kernel, entry, new value) triples: a bit of the float32 word flipped (XOR
with 1 << bit, the word viewed as uint32), a bit stuck at 0 or 1, the weight set to zero, or
the weight replaced by a value drawn uniformly from its kernel's range. Many fault maps
never cost a model rebuild: `WeightFaults` writes only the touched entries into the live
variables (`scatter_nd_update`), the forward pass runs, and the touched entries get their
original words back from a host copy taken once. The saved model file is never opened for
writing; `intact()` checks that every kernel holds its original bits again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

FAULT_MODELS = ("bit_flip", "stuck_at_0", "stuck_at_1", "zero", "random_value")
BIT_MODELS = ("bit_flip", "stuck_at_0", "stuck_at_1")  # the ones that act on one bit of the word
BITS = 32  # float32: bit 31 sign, 30-23 exponent (30 its high bit), 22-0 mantissa


def faulty_words(values: np.ndarray, fault: str, bits: np.ndarray, replacements: np.ndarray | None = None) -> np.ndarray:
    """The float32 values `values` become under `fault` (a copy; `bits` per value for the bit faults).

    `replacements` are the new values of `random_value` (drawn by the caller, so the draw is seeded with the map).
    """
    out = np.array(values, dtype=np.float32, copy=True)
    words = out.view(np.uint32)
    masks = np.left_shift(np.uint32(1), np.asarray(bits, dtype=np.uint32))
    if fault == "bit_flip":
        words ^= masks
    elif fault == "stuck_at_0":
        words &= ~masks
    elif fault == "stuck_at_1":
        words |= masks
    elif fault == "zero":
        out[...] = 0.0
    elif fault == "random_value":
        out[...] = np.asarray(replacements, dtype=np.float32)
    else:
        raise ValueError(f"unknown fault model {fault!r} (known: {', '.join(FAULT_MODELS)})")
    return out


def flip_bit(array: np.ndarray, index: int | tuple[int, ...], bit: int) -> None:
    """Flip one bit of one float32 entry of `array`, in place (tests and examples)."""
    words = array.view(np.uint32)
    words[index] ^= np.uint32(1) << np.uint32(bit)


def faulty_activations(activations: np.ndarray, fault: str, count: int, rng: np.random.Generator, bit: int | None = None) -> np.ndarray:
    """A copy of (examples, ...) activations with `count` distinct entries of every example faulted.

    Each example draws its own entries (and, unless `bit` is given, bits): a transient fault
    in the layer's output while that example passes. `random_value` has no range to draw
    from here and is refused.
    """
    if fault not in (*BIT_MODELS, "zero"):
        raise ValueError(f"activation faults: {fault!r} is not one of {', '.join((*BIT_MODELS, 'zero'))}")
    flat = np.array(activations, dtype=np.float32).reshape(len(activations), -1)
    n, size = flat.shape
    count = min(count, size)
    columns = np.argpartition(rng.random((n, size)), count - 1, axis=1)[:, :count].reshape(-1)
    rows = np.repeat(np.arange(n), count)
    bits = np.full(rows.size, bit) if bit is not None else rng.integers(0, BITS, size=rows.size)
    flat[rows, columns] = faulty_words(flat[rows, columns], fault, bits)
    return flat.reshape(np.shape(activations))


@dataclass
class FaultMap:
    """Touched entries, per kernel: flat indices and the values written there."""

    kernel: np.ndarray  # (faults,) which chosen kernel
    index: np.ndarray  # (faults,) flat index into that kernel
    values: np.ndarray  # (faults,) float32, the faulty values
    bits: np.ndarray  # (faults,) the bit a bit fault acts on (-1: none)


def weight_layers(model: Any) -> list[str]:
    """Every layer with a Dense or convolution kernel, input side first (the default fault targets)."""
    import keras

    kinds = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
    return [layer.name for layer in model.layers if isinstance(layer, kinds)]


class WeightFaults:
    """The kernels of `layers` of a live model, faulted in place and restored exactly.

    One host copy of each kernel is taken at construction: the original words of any
    touched entry come from it, and fault values are computed from it, so a map never sees
    another map's faults.
    """

    def __init__(self, model: Any, layers: Sequence[str]) -> None:
        self.layers = list(layers)
        self.variables = [model.get_layer(name).kernel for name in self.layers]
        self.originals = [np.array(variable.numpy(), dtype=np.float32) for variable in self.variables]
        self.sizes = np.array([array.size for array in self.originals])
        self.ranges = [(float(array.min()), float(array.max())) for array in self.originals]

    def draw(
        self, fault: str, count: int, rng: np.random.Generator, bit: int | None = None, targets: Sequence[int] | None = None
    ) -> FaultMap:
        """`count` distinct weights drawn uniformly over the kernels `targets` (default all) and their faulty values.

        `bit`: the bit of a bit fault; None draws one uniformly per fault (0-31).
        """
        targets = list(range(len(self.layers))) if targets is None else list(targets)
        sizes = self.sizes[targets]
        count = int(min(count, sizes.sum()))
        flat = rng.choice(int(sizes.sum()), size=count, replace=False)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        which = np.searchsorted(offsets, flat, side="right") - 1
        kernel = np.asarray(targets)[which]
        index = flat - offsets[which]
        if fault in BIT_MODELS:
            bits = np.full(count, bit) if bit is not None else rng.integers(0, BITS, size=count)
        else:
            bits = np.full(count, -1)
        original = self.original_values(kernel, index)
        replacements = None
        if fault == "random_value":
            low, high = np.array([self.ranges[k] for k in kernel]).reshape(-1, 2).T
            replacements = rng.uniform(low, high)
        values = faulty_words(original, fault, np.maximum(bits, 0), replacements)
        return FaultMap(kernel, index, values, bits)

    def original_values(self, kernel: np.ndarray, index: np.ndarray) -> np.ndarray:
        out = np.empty(len(index), dtype=np.float32)
        for k in np.unique(kernel):
            out[kernel == k] = self.originals[k].reshape(-1)[index[kernel == k]]
        return out

    def _write(self, fault_map: FaultMap, values: np.ndarray) -> None:
        import tensorflow as tf

        for k in np.unique(fault_map.kernel):
            chosen = fault_map.kernel == k
            positions = np.stack(np.unravel_index(fault_map.index[chosen], self.originals[k].shape), axis=1)
            self.variables[k].value.scatter_nd_update(tf.constant(positions, tf.int64), tf.constant(values[chosen], tf.float32))

    def apply(self, fault_map: FaultMap) -> None:
        self._write(fault_map, fault_map.values)

    def restore(self, fault_map: FaultMap) -> None:
        """The touched entries get their original words back (other entries were never written)."""
        self._write(fault_map, self.original_values(fault_map.kernel, fault_map.index))

    @contextmanager
    def injected(self, fault_map: FaultMap) -> Iterator[None]:
        self.apply(fault_map)
        try:
            yield
        finally:
            self.restore(fault_map)

    def intact(self) -> bool:
        """Every kernel holds its original words again, bit for bit."""
        return all(
            np.array_equal(np.asarray(v.numpy(), np.float32).view(np.uint32), o.view(np.uint32))
            for v, o in zip(self.variables, self.originals, strict=True)
        )


def forward(
    model: Any, bounds: dict[str, tuple[np.ndarray, np.ndarray]] | None = None, chunk: int = 8192
) -> Callable[[np.ndarray], np.ndarray]:
    """The model's outputs in inference mode, traced once; variables are read at call time, so faults show.

    `bounds` (layer name -> per-unit (low, high)) clips those layers' outputs (Ranger-style
    mitigation): the layers are then run one by one, which needs a chain model
    (`surgery.knockout_layers` checks it).
    """
    import tensorflow as tf

    if bounds:
        from ablation_lab.models.surgery import knockout_layers

        knockout_layers(model)  # refuses a model that is not a chain
        clips = {name: (tf.constant(low, tf.float32), tf.constant(high, tf.float32)) for name, (low, high) in bounds.items()}
        chain = [layer for layer in model.layers if layer.__class__.__name__ != "InputLayer"]

        def run(batch: tf.Tensor) -> tf.Tensor:
            for layer in chain:
                batch = layer(batch, training=False)
                if layer.name in clips:
                    batch = tf.clip_by_value(batch, *clips[layer.name])
            return batch
    else:

        def run(batch: tf.Tensor) -> tf.Tensor:
            return model(batch, training=False)

    traced = tf.function(run, reduce_retracing=True)
    return lambda x: np.concatenate([traced(tf.constant(x[i : i + chunk])).numpy() for i in range(0, len(x), chunk)])


def clip_bounds(model: Any, x_train: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-unit (conv: per-channel) min and max of every hidden activation on the TRAINING split only."""
    from ablation_lab.models.surgery import TrainActivations, knockout_layers, split_model

    out = {}
    for name in knockout_layers(model):
        seen = TrainActivations(split_model(model, name).head, x_train)
        out[name] = (seen.low.astype(np.float32), seen.high.astype(np.float32))
    return out


def outcome(outputs: np.ndarray, labels: np.ndarray, clean_predictions: np.ndarray) -> dict[str, int]:
    """Counts of one fault map: correct, SDC (clean-correct examples whose finite prediction changed), non-finite outputs."""
    finite = np.isfinite(outputs).all(axis=1)
    predicted = np.where(finite, outputs.argmax(axis=1), -1)
    clean_correct = clean_predictions == labels
    return {
        "correct": int((predicted == labels).sum()),
        "sdc": int((clean_correct & finite & (predicted != clean_predictions)).sum()),
        "nonfinite": int((~finite).sum()),
    }
