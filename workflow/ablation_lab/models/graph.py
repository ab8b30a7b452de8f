"""Any Keras 3 functional model run node by node: named layers' outputs captured, replaced, and
only what lies downstream of a replacement recomputed.

What post-hoc removal on a branching model needs (residual `Add`s, `Concatenate`s, 1x1
shortcuts, BatchNorm): a chain can be cut at one layer and its tail rerun (models/surgery.py),
a graph cannot. Here the model's own nodes (`model._nodes_by_depth`, the order Keras itself runs
them in) are replayed, so a replaced layer's effect reaches the output through every path,
shortcuts included, and every node that does not depend on a replaced layer keeps its clean
value: it is read from a cache, not recomputed.

    graph = Graph(model)
    clean = graph.capture(x, ["block_2_conv_2"])           # clean outputs (+ "logits", "probabilities")
    graph.downstream(["block_2_conv_2"])                  # ["block_2_add", ..., "probabilities"]
    graph.rerun(x, {"block_2_conv_2": np.zeros_like})     # the output with block 2's write removed
    graph.rerun(x, {"block_2_relu_2": lambda a: a[None] * keep[:, None, None, None, :]})  # K masks at once

Inference mode throughout (BatchNorm uses its moving statistics, Dropout is off). Each replay
runs inside one tf.function per (replaced layers, output) pair, so TensorFlow sees the same
operations as model.predict and the outputs with nothing replaced are the model's own
(tests/test_graph.py). Work is chunked over examples and masks so that the activations of one
call stay within MEMORY_BUDGET bytes, like surgery.masked_predictions. Nothing is ever written
into the model: a replacement is a value fed to the replay.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ablation_lab.models.surgery import CHANNEL_PRESERVING, MEMORY_BUDGET, SplitModel, _chain_break, split_model

Override = Callable[[np.ndarray], np.ndarray] | np.ndarray
OUTPUTS = ("probabilities", "logits")


@dataclass(frozen=True)
class Step:
    """One node of the model: the operation (layer) that runs, the tensors it reads and writes."""

    name: str  # the layer's name; a layer called more than once in the model: `name:1`, `name:2`, ...
    node: Any
    reads: tuple[int, ...]  # ids of the symbolic tensors it takes
    writes: tuple[int, ...]  # ids of the symbolic tensors it outputs (the first is "its output")


@dataclass
class GraphCache:
    """Clean values a rerun reuses: the inputs and the clean outputs of named layers (by name)."""

    x: list[np.ndarray]
    values: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x[0])

    def rows(self, rows: slice) -> GraphCache:
        """The same cache for some of its examples."""
        return GraphCache([each[rows] for each in self.x], {name: value[rows] for name, value in self.values.items()})


def _as_inputs(x: np.ndarray | Sequence[np.ndarray], count: int) -> list[np.ndarray]:
    arrays = [x] if isinstance(x, np.ndarray) else list(x)
    if len(arrays) != count:
        raise ValueError(f"graph: the model takes {count} inputs, got {len(arrays)}")
    return [np.asarray(each, np.float32) for each in arrays]


class Graph:
    """A functional (or Sequential) Keras model as named steps in topological order; see the module docstring."""

    def __init__(self, model: Any) -> None:
        import keras

        functional = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
        if functional is None or not hasattr(functional, "_nodes_by_depth"):
            raise ValueError(f"graph: model {model.name!r} is not a built functional or Sequential Keras model")
        self.model = model
        self.input_ids = [id(tensor) for tensor in functional.inputs]
        if len(functional.outputs) != 1:
            raise ValueError(f"graph: model {model.name!r} has {len(functional.outputs)} outputs; one (the class probabilities) is needed")
        self.output_id = id(functional.outputs[0])
        self.steps: dict[str, Step] = {}
        calls: dict[str, int] = {}
        for depth in sorted(functional._nodes_by_depth, reverse=True):  # Keras' own run order
            for node in functional._nodes_by_depth[depth]:
                if not node.operation or node.is_input:
                    continue
                base = node.operation.name
                name = base if base not in calls else f"{base}:{calls[base]}"
                calls[base] = calls.get(base, 0) + 1
                self.steps[name] = Step(name, node, tuple(map(id, node.input_tensors)), tuple(map(id, node.outputs)))
        self.producer = {tensor: step.name for step in self.steps.values() for tensor in step.writes}
        self._runners: dict[tuple, Any] = {}

    # --- structure ------------------------------------------------------------------------

    def _parents(self, step: Step) -> list[str]:
        return [self.producer[t] for t in step.reads if t in self.producer]

    def _check(self, names: Sequence[str], where: str = "graph") -> None:
        allowed = OUTPUTS if where == "graph.capture" else ()  # capture also names the outputs
        missing = [name for name in names if name not in self.steps and name not in allowed]
        if missing:
            raise ValueError(f"{where}: {missing[0]!r} is not a layer of model {self.model.name!r} (layers: {', '.join(self.steps)})")

    def downstream(self, names: Sequence[str]) -> list[str]:
        """The layers that depend on any of `names` (through any path), in topological order; `names` themselves excluded."""
        self._check(names)
        hit = set(names)
        out = []
        for step in self.steps.values():
            if step.name not in names and any(parent in hit for parent in self._parents(step)):
                hit.add(step.name)
                out.append(step.name)
        return out

    def _needed(self, targets: set[int], fed: tuple[int, ...]) -> set[str]:
        """The steps that compute `targets` from the `fed` tensors (walking up no further than those)."""
        todo, seen = [t for t in targets if t not in fed], set()
        while todo:
            tensor = todo.pop()
            if tensor in fed or tensor not in self.producer or self.producer[tensor] in seen:
                continue
            seen.add(self.producer[tensor])
            todo += self.steps[self.producer[tensor]].reads
        return seen

    def outgoing(self, name: str) -> list[np.ndarray]:
        """The rows of `name`'s channels in the kernels of the first weighted layers after it, on every
        path that keeps its channels (through activations, batch norms, dropout, Add, pooling, and
        Concatenate on the last axis, at their offset there): what magnitude orderings weigh.
        Each is a (inputs, outputs) matrix whose inputs are (positions x) this layer's channels."""
        units = int(self.steps[name].node.outputs[0].shape[-1])
        found, todo, seen = [], [(name, 0)], set()
        while todo:
            current, offset = todo.pop(0)
            tensor = self.steps[current].writes[0]
            for step in self.steps.values():
                if (step.name, offset) in seen or tensor not in step.reads:
                    continue
                seen.add((step.name, offset))
                layer, kind = step.node.operation, type(step.node.operation).__name__
                if hasattr(layer, "kernel") and step.reads[0] == tensor:
                    kernel = np.moveaxis(np.asarray(layer.kernel), -2, 0)
                    width = int(step.node.input_tensors[0].shape[-1])
                    rows = kernel.reshape(-1, width, kernel.shape[-1] if kernel.ndim > 1 else 1)  # (positions, channels, outputs)
                    found.append(rows[:, offset : offset + units].reshape(-1, rows.shape[-1]))
                elif kind == "Concatenate" and getattr(layer, "axis", -1) in (-1, len(step.node.outputs[0].shape) - 1):
                    before = step.reads[: step.reads.index(tensor)]
                    shift = sum(int(t.shape[-1]) for t in step.node.input_tensors[: len(before)])
                    todo.append((step.name, offset + shift))
                elif kind in CHANNEL_PRESERVING:
                    todo.append((step.name, offset))
        return found

    @property
    def output_step(self) -> Step:
        return self.steps[self.producer[self.output_id]]

    def has_logits(self) -> bool:
        try:
            self._logit_source()
        except ValueError:
            return False
        return True

    def _logit_source(self) -> tuple[int, Any]:
        """(tensor, Dense layer): logits = tensor @ kernel + bias, the softmax's argument."""
        import keras

        step = self.output_step
        layer = step.node.operation
        if isinstance(layer, keras.layers.Dense) and getattr(layer.activation, "__name__", "") == "softmax":
            return step.reads[0], layer
        if isinstance(layer, keras.layers.Activation | keras.layers.Softmax):  # Dense (linear) -> softmax
            return step.reads[0], None
        raise ValueError(
            f"graph: logits need a softmax output layer; model {self.model.name!r} ends with {type(layer).__name__} {layer.name!r}"
        )

    # --- replay ---------------------------------------------------------------------------

    def _runner(self, fed: tuple[int, ...], wanted: tuple[int, ...], logits: bool) -> Any:
        """A tf.function from the fed tensors' values to the wanted tensors' values (and the logits)."""
        key = (fed, wanted, logits)
        if key in self._runners:
            return self._runners[key]
        import tensorflow as tf

        targets = set(wanted)
        source, dense = self._logit_source() if logits else (None, None)
        if source is not None:
            targets.add(source)
        needed = self._needed(targets, fed)
        order = [step for step in self.steps.values() if step.name in needed]

        def replay(*values: Any) -> list[Any]:
            tensors = dict(zip(fed, values, strict=True))
            for step in order:
                operation = step.node.operation
                args, kwargs = step.node.arguments.fill_in(tensors)
                if getattr(operation, "_call_has_training_arg", False):
                    kwargs["training"] = False
                outputs = operation(*args, **kwargs)
                tensors.update(zip(step.writes, outputs if isinstance(outputs, list | tuple) else [outputs], strict=False))
            out = [tensors[t] for t in wanted]
            if logits:
                out.append(tensors[source] if dense is None else tf.matmul(tensors[source], dense.kernel) + dense.bias)
            return out

        self._runners[key] = tf.function(replay, reduce_retracing=True)
        return self._runners[key]

    def _row_bytes(self, names: Sequence[str]) -> int:
        """Bytes of one example's outputs over `names` (an upper bound on what a replay holds per row)."""
        sizes = [int(np.prod([d or 1 for d in t.shape[1:]])) for n in names for t in self.steps[n].node.outputs]
        return 4 * max(1, sum(sizes))

    def _tensor(self, name: str) -> int:
        return self.steps[name].writes[0]

    def capture(self, x: np.ndarray | Sequence[np.ndarray], names: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """Clean outputs (inference mode) of the named layers, plus `logits` and `probabilities`, by name.

        `logits` is the final softmax layer's argument, computed as its kernel and bias applied
        to its input (a Dense softmax) or its input (a separate softmax layer)."""
        return self._clean(x, names, outputs=True)

    def values(self, x: np.ndarray | Sequence[np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
        """Clean outputs of the named layers only (nothing after them is computed)."""
        return self._clean(x, names, outputs=False)

    def _clean(self, x: np.ndarray | Sequence[np.ndarray], names: Sequence[str], outputs: bool) -> dict[str, np.ndarray]:
        self._check(names, "graph.capture")
        inputs = _as_inputs(x, len(self.input_ids))
        layers = [name for name in names if name not in OUTPUTS]
        wanted = (*(self._tensor(n) for n in layers), *((self.output_id,) if outputs else ()))
        logits = outputs and self.has_logits()
        runner = self._runner(tuple(self.input_ids), wanted, logits=logits)
        chunk = max(1, MEMORY_BUDGET // self._row_bytes(list(self.steps)))
        parts = [[np.asarray(v) for v in runner(*(a[start : start + chunk] for a in inputs))] for start in range(0, len(inputs[0]), chunk)]
        values = [np.concatenate(column).astype(np.float32) for column in zip(*parts, strict=True)]
        out = dict(zip([*layers, *(["probabilities"] if outputs else [])], values, strict=False))
        return out | ({"logits": values[-1]} if logits else {})

    def prepare(self, x: np.ndarray | Sequence[np.ndarray], names: Sequence[str]) -> GraphCache:
        """What reruns replacing `names` reuse: the clean outputs of those layers and of every layer
        outside their downstream that a downstream layer reads, computed once."""
        self._check(names, "graph.prepare")
        inputs = _as_inputs(x, len(self.input_ids))
        return GraphCache(inputs, self.capture(inputs, self._frontier(names)))

    def _frontier(self, names: Sequence[str]) -> list[str]:
        below = set(self.downstream(names))
        reads = {t for n in below for t in self.steps[n].reads}
        outside = {self.producer[t] for t in reads if t in self.producer and self.producer[t] not in below}
        return [n for n in self.steps if n in outside or n in names]

    def rerun(
        self,
        x_or_cache: np.ndarray | Sequence[np.ndarray] | GraphCache,
        overrides: Mapping[str, Override],
        output: str = "probabilities",
        cache: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """The model's output (`probabilities` or `logits`) with each named layer's output replaced.

        An override is a function of the layer's CLEAN output (examples, ...) or a fixed array:
        of the output's shape, broadcastable to it (e.g. one value per channel), or with a
        leading axis of K masks (K, examples, ...). A replaced layer keeps its replacement even
        when another replaced layer lies upstream of it (that is how a later layer is frozen at
        its clean value). With any K-batched override the result is (K, examples, classes),
        otherwise (examples, classes). Every layer not downstream of a replaced one keeps its
        clean value: from `x_or_cache` when it is a GraphCache (Graph.prepare), from `cache`
        (clean outputs by name, as capture returns them) or computed once here."""
        if output not in OUTPUTS:
            raise ValueError(f"graph.rerun: output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        names = list(overrides)
        self._check(names, "graph.rerun")
        if output == "logits" and self.output_step.node.operation.name in names:
            raise ValueError(
                f"graph.rerun: logits are the output layer's argument; replacing {self.output_step.node.operation.name!r} leaves none"
            )
        known = GraphCache(_as_inputs(x_or_cache, len(self.input_ids))) if not isinstance(x_or_cache, GraphCache) else x_or_cache
        frontier = self._frontier(names)
        values = {**known.values, **(cache or {})}
        missing = [n for n in frontier if n not in values]
        if missing:
            values |= self.capture(known.x, missing)
        below = self.downstream(names)
        return self._replay(known, values, frontier, below, overrides, output)

    def _override(self, rule: Override, clean: np.ndarray, rows: slice) -> np.ndarray:
        if callable(rule):
            value = np.asarray(rule(clean[rows]), np.float32)
        else:
            value = np.asarray(rule, np.float32)
            if value.ndim == clean.ndim + 1 and value.shape[1] == len(clean):
                value = value[:, rows]
            elif value.ndim == clean.ndim and value.shape[0] == len(clean):
                value = value[rows]
        if value.ndim == clean.ndim + 1:  # K masks
            return np.broadcast_to(value, (len(value), *clean[rows].shape))
        return np.broadcast_to(value, clean[rows].shape)

    def _replay(
        self,
        known: GraphCache,
        values: dict[str, np.ndarray],
        frontier: list[str],
        below: list[str],
        overrides: Mapping[str, Override],
        output: str,
    ) -> np.ndarray:
        count = len(known)
        fed_names = frontier
        fed = [self._tensor(n) for n in fed_names]
        inputs_read = [i for i, t in enumerate(self.input_ids) if any(t in self.steps[n].reads for n in below)]
        fed_all = tuple(fed) + tuple(self.input_ids[i] for i in inputs_read)
        reaches = self.producer[self.output_id] in below or self.producer[self.output_id] in overrides
        if output == "logits":
            source = self.producer.get(self._logit_source()[0])
            reaches = reaches or source in below or source in overrides
        probe = {n: self._override(rule, values[n], slice(0, 1)) for n, rule in overrides.items()}
        batched = {n for n, v in probe.items() if v.ndim == values[n].ndim + 1}
        masks = {probe[n].shape[0] for n in batched}
        if len(masks) > 1:
            raise ValueError(f"graph.rerun: the overrides have different numbers of masks ({sorted(masks)}); give them one K")
        k = masks.pop() if masks else 1
        if not reaches:  # nothing replaced lies upstream of the output
            clean = values[output] if output in values else self.capture(known.x)[output]
            return np.broadcast_to(clean, (k, *clean.shape)).copy() if batched else clean
        runner = self._runner(fed_all, (self.output_id,) if output == "probabilities" else (), logits=output == "logits")
        rows = max(1, MEMORY_BUDGET // self._row_bytes([*below, *fed_names]))
        example_step = max(1, min(count, rows // k))
        mask_step = max(1, min(k, rows // example_step))
        out: np.ndarray | None = None
        for first in range(0, count, example_step):
            part = slice(first, min(count, first + example_step))
            n = part.stop - part.start
            replaced = {name: self._override(rule, values[name], part) for name, rule in overrides.items()}
            for start in range(0, k, mask_step):
                stop = min(k, start + mask_step)

                def feed(name: str, start: int = start, stop: int = stop, part: slice = part, replaced: dict = replaced) -> np.ndarray:
                    value = replaced[name] if name in replaced else values[name][part]
                    value = value[start:stop] if name in batched else np.broadcast_to(value, (stop - start, *value.shape))
                    return np.ascontiguousarray(value.reshape(-1, *value.shape[2:]))

                def feed_input(i: int, start: int = start, stop: int = stop, part: slice = part) -> np.ndarray:
                    value = known.x[i][part]
                    return np.ascontiguousarray(np.broadcast_to(value, (stop - start, *value.shape)).reshape(-1, *value.shape[1:]))

                result = runner(*[feed(name) for name in fed_names], *[feed_input(i) for i in inputs_read])
                result = np.asarray(result[-1], np.float32).reshape(stop - start, n, -1)
                if out is None:
                    out = np.empty((k, count, result.shape[-1]), np.float32)
                out[start:stop, part] = result
        assert out is not None
        return out if batched else out[0]


_GRAPHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # one Graph (and its traced replays) per model


def layer_split(model: Any, layer: str) -> SplitModel:
    """The model cut at `layer`: a chain's SplitModel (surgery.split_model, unchanged), or for a
    branching model one whose head is the graph's clean output of the layer and whose tail
    (after SplitModel.bind to the examples) reruns the graph downstream of it."""
    if _chain_break(model) is None:
        return split_model(model, layer)
    graph = _GRAPHS.get(model) or _GRAPHS.setdefault(model, Graph(model))
    output = graph.steps[layer].node.outputs[0]
    units = int(output.shape[-1])
    shape = tuple(int(d) for d in output.shape[1:])

    def head(x: np.ndarray) -> np.ndarray:
        if not len(x):
            return np.zeros((0, *shape), np.float32)
        return graph.values(x, [layer])[layer]

    def unbound(batch: np.ndarray) -> np.ndarray:
        raise ValueError(f"graph split at {layer!r}: bind it to its examples first (SplitModel.bind)")

    return SplitModel(head, unbound, graph.outgoing(layer), units, graph=graph, layer=layer)
