"""Many weight fault maps scored fast, with the outputs of one map at a time in place, bit for bit.

A fault map touches a handful of weights; rerunning the whole network per map pays for the
many layers and units it leaves alone. On a chain model (the models the workflow builds)
`MapScorer` keeps the clean input of every layer, so a map runs only from its first faulted
layer on. When that layer is a Dense layer with an elementwise activation (the MLP's hidden
layers, where nearly all weights are), only the units whose kernel columns were hit change:
their columns are computed for several maps at once, packed side by side into ONE matrix of
the kernel's own shape (so the matmul is the very op, shape and blocking the model runs;
measured: a one-column matmul rounds differently, a permuted full-width one does not), then
written into the layer's clean output; the layers after it run per map with the map's other
faults written into their variables (`WeightFaults`). Anything else (a branching model, a
faulted Conv or softmax layer first) falls back to prefix reuse or to the whole forward pass.
Tests check every path against `WeightFaults.injected` + `forward`: identical outputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ablation_lab.models.fault_injection import FaultMap, WeightFaults, forward

ELEMENTWISE = ("relu", "sigmoid", "tanh", "linear")  # activations that act on each unit alone
MAPS_PER_BLOCK = 256  # maps scored per pass over the chunks: their outputs are held until handed out


def _chain(model: Any) -> list[Any] | None:
    """The model's layers in order when it is a chain (else None: only the whole forward pass is safe)."""
    from ablation_lab.models.surgery import knockout_layers

    try:
        knockout_layers(model)
    except ValueError:
        return None
    return [layer for layer in model.layers if layer.__class__.__name__ != "InputLayer"]


def _columnwise(layer: Any) -> bool:
    """A Dense layer whose units do not see each other: a faulted kernel column changes only its unit."""
    import keras

    name = getattr(getattr(layer, "activation", None), "__name__", "")
    return isinstance(layer, keras.layers.Dense) and name in ELEMENTWISE and len(layer.kernel.shape) == 2


class MapScorer:
    """Outputs of a model under each of many fault maps, equal bit for bit to apply + forward + restore.

    `bounds` are `forward`'s clip bounds (the Ranger arm); `chunk` its example chunks, kept so
    every matmul has the shape the plain forward pass gives it.
    """

    def __init__(self, model: Any, faults: WeightFaults, bounds: dict[str, Any] | None = None, chunk: int = 8192) -> None:
        import tensorflow as tf

        self.faults, self.chunk = faults, chunk
        self.whole = forward(model, bounds, chunk)
        self.chain = _chain(model)
        if self.chain is None:
            return
        self.clips = {name: (tf.constant(lo, tf.float32), tf.constant(hi, tf.float32)) for name, (lo, hi) in (bounds or {}).items()}
        position = {layer.name: i for i, layer in enumerate(self.chain)}
        self.start = [position[name] for name in faults.layers]  # chain position of each faulted kernel
        self.tails: dict[int, Any] = {}
        self.biases: dict[int, np.ndarray] = {}
        self.packed = tf.function(self._packed_columns, autograph=False)

    # --- traced pieces ------------------------------------------------------------------

    def _layer_out(self, layer: Any, batch: Any) -> Any:
        """One layer in inference mode, clipped as `forward` clips it."""
        import tensorflow as tf

        batch = layer(batch, training=False)
        return tf.clip_by_value(batch, *self.clips[layer.name]) if layer.name in self.clips else batch

    def _tail(self, start: int) -> Any:
        """The chain from position `start` on, traced once per start (and input shape)."""
        import tensorflow as tf

        if start not in self.tails:

            def run(batch: Any) -> Any:
                for layer in self.chain[start:]:
                    batch = self._layer_out(layer, batch)
                return batch

            self.tails[start] = tf.function(run, autograph=False)
        return self.tails[start]

    def _packed_columns(self, inputs: Any, kernel: Any, bias: Any, layer_index: int) -> Any:
        """Dense's own ops (matmul, add, activation) on a kernel-shaped matrix of packed faulty columns."""
        from keras import ops

        layer = self.chain[layer_index]
        out = ops.matmul(inputs, kernel)
        if bias is not None:
            out = ops.add(out, bias)
        return layer.activation(out)

    # --- per chunk of examples ------------------------------------------------------------

    def outputs(self, x: np.ndarray, maps: Sequence[FaultMap]) -> Iterator[np.ndarray]:
        """The model's outputs on `x` under each map in turn (variables restored before each is handed out)."""
        if self.chain is None:
            for fault_map in maps:
                with self.faults.injected(fault_map):
                    out = self.whole(x)
                yield out
            return
        clean = [self._clean_inputs(x[i : i + self.chunk]) for i in range(0, len(x), self.chunk)]
        for start in range(0, len(maps), MAPS_PER_BLOCK):  # bounds the outputs held at once
            block = maps[start : start + MAPS_PER_BLOCK]
            parts = [list(self._chunk_outputs(seen, raw, block)) for seen, raw in clean]
            for row in range(len(block)):
                yield np.concatenate([part[row] for part in parts])

    def _clean_inputs(self, x: np.ndarray) -> tuple[list[Any], list[np.ndarray]]:
        """The clean input of every chain layer (the model's output last), clipped as in `forward`,
        and every layer's output before its clip (what a patched column is written into)."""
        import tensorflow as tf

        batch = tf.constant(x)
        seen, raw = [batch], []
        for layer in self.chain:
            out = layer(batch, training=False)
            raw.append(out.numpy())
            batch = tf.clip_by_value(out, *self.clips[layer.name]) if layer.name in self.clips else out
            seen.append(batch)
        return seen, raw

    def _chunk_outputs(self, seen: list[Any], raw: list[np.ndarray], maps: Sequence[FaultMap]) -> Iterator[np.ndarray]:
        """Each map's outputs on one chunk: maps whose first faulted layer is columnwise go in packed groups."""
        first = [min((self.start[k] for k in m.kernel), default=None) for m in maps]
        done: dict[int, np.ndarray] = {}
        for position, group in self._column_groups(maps, first):
            done |= self._score_group(seen, raw, maps, group, position)
        for row, fault_map in enumerate(maps):
            if row in done:
                out = done.pop(row)
            elif first[row] is None:
                out = seen[-1].numpy()
            else:
                with self.faults.injected(fault_map):
                    out = self._tail(first[row])(seen[first[row]]).numpy()
            yield out

    def _column_groups(self, maps: Sequence[FaultMap], first: Sequence[int | None]) -> Iterable[tuple[int, list[int]]]:
        """Rows of maps that share a columnwise first layer, greedily packed so their columns fill one kernel."""
        by_layer: dict[int, list[int]] = {}
        for row, position in enumerate(first):
            if position is not None and _columnwise(self.chain[position]):
                by_layer.setdefault(position, []).append(row)
        for position, rows in by_layer.items():
            width, group, used = int(self.chain[position].kernel.shape[1]), [], 0
            for row in rows:
                need = len(self._columns(maps[row], position))
                if group and used + need > width:
                    yield position, group
                    group, used = [], 0
                group.append(row)
                used += need
            if group:
                yield position, group

    def _bias(self, position: int) -> np.ndarray:
        """The layer's bias on the host, read once (faults touch kernels only)."""
        if position not in self.biases:
            self.biases[position] = np.asarray(self.chain[position].bias.numpy(), np.float32)
        return self.biases[position]

    def _kernel_of(self, position: int) -> int:
        return self.start.index(position)

    def _columns(self, fault_map: FaultMap, position: int) -> np.ndarray:
        """The units (kernel columns) of the layer at `position` this map hits."""
        k = self._kernel_of(position)
        shape = self.faults.originals[k].shape
        return np.unique(np.unravel_index(fault_map.index[fault_map.kernel == k], shape)[1])

    def _score_group(
        self, seen: list[Any], raw: list[np.ndarray], maps: Sequence[FaultMap], group: list[int], position: int
    ) -> dict[int, np.ndarray]:
        """One packed matmul for the group's faulty columns, then each map's rest of the network."""
        import tensorflow as tf

        k = self._kernel_of(position)
        layer, original = self.chain[position], self.faults.originals[k]
        kernel = np.zeros_like(original)
        bias = None if layer.bias is None else np.zeros(original.shape[1], np.float32)
        slots, used = [], 0
        for row in group:
            fault_map = maps[row]
            columns = self._columns(fault_map, position)
            faulty = original[:, columns].copy()
            mine = fault_map.kernel == k
            rows_, cols_ = np.unravel_index(fault_map.index[mine], original.shape)
            faulty[rows_, np.searchsorted(columns, cols_)] = fault_map.values[mine]
            kernel[:, used : used + len(columns)] = faulty
            if bias is not None:
                bias[used : used + len(columns)] = self._bias(position)[columns]
            slots.append((columns, np.arange(used, used + len(columns))))
            used += len(columns)
        packed = self.packed(seen[position], tf.constant(kernel), None if bias is None else tf.constant(bias), position).numpy()
        out = {}
        for row, (columns, slot) in zip(group, slots, strict=True):
            patched = raw[position].copy()
            patched[..., columns] = packed[..., slot]  # Dense acts on the last axis
            out[row] = self._patched_tail(patched, maps[row], k, position)
        return out

    def _patched_tail(self, patched: np.ndarray, fault_map: FaultMap, k: int, position: int) -> np.ndarray:
        """The layer's output with this map's columns swapped in, clipped, then the later layers with the map's other faults."""
        import tensorflow as tf

        name = self.chain[position].name
        batch = tf.constant(patched)
        if name in self.clips:
            batch = tf.clip_by_value(batch, *self.clips[name])
        if position + 1 == len(self.chain):
            return batch.numpy()
        rest = fault_map.kernel != k
        if not rest.any():
            return self._tail(position + 1)(batch).numpy()
        later = FaultMap(fault_map.kernel[rest], fault_map.index[rest], fault_map.values[rest], fault_map.bits[rest])
        with self.faults.injected(later):
            out = self._tail(position + 1)(batch).numpy()
        return out
