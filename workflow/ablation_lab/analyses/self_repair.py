"""Self-repair: how much of a removal the rest of a trained network undoes (issue 27).

McGrath et al. (2023, "The Hydra Effect") ablate a layer of a trained language model and
compare its *total* effect on the output (the ablated network run as it is, every later layer
reacting) with its *direct* effect (the same removal read through the output with every later
component frozen at its clean value): later layers change their output and make up for part of
the removal. Rushing & Nanda (2024, "Explorations of Self-Repair in Language Models") measure
the same gap per attention head over a whole distribution and trace it to later components
and to the final normalisation. This analysis measures it on the study's own trained models,
on the test split, for each removed component:

- total effect: correct-class logit, correct-class log-probability and accuracy of the intact
  model minus the ablated model's (a drop: positive when the component helped);
- direct effect: the same drop when nothing downstream reacts. Residual network (layers
  `block_<k>_conv_2`, `block_<k>_add`): block k's write removed while every later block's
  write is held at its clean value (later blocks read the clean stream), the head's
  non-linearity held at its clean gating. Chain (the MLP, the CNN): the removal propagated
  through the tail linearised at the clean input, i.e. every later ReLU's on/off pattern and
  every max-pool's argmax positions frozen (exactly: these are piecewise linear). A smooth
  activation (tanh, sigmoid, elu, gelu, swish, learnable) is held at its clean slope: the
  first-order direct effect. Forward-mode autodiff (tf.autodiff.ForwardAccumulator) gives it.
- self-repair = direct - total; repaired share = self-repair / direct (1: fully repaired,
  0: not at all, < 0: amplified);
- who repaired: letting later components react one at a time, input side first (E_0 =
  direct, ..., the last = total), each one's step E_(j-1) - E_j. For a residual network this
  is exactly the change of block j's write (clean vs ablated) read through the frozen head,
  plus the head's own reaction; for a chain, each later non-linear layer's reaction beyond
  its clean gating. The steps sum to the self-repair exactly.

Components: a residual network's blocks; a chain's units (conv: channels) of each layer in
`layers` (default every knock-out-able layer but the last: after it only the output layer
reads, nothing can repair) in `groups` contiguous groups per layer. Fills: zero, or the
unit's (channel's) mean on the training split. The test split is only predicted; the mean
fill is the only fitted statistic, from the training split. The intervals, figures and the
report section: analyses/self_repair_report.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ablation_lab.analyses.base import Analysis, Params, RunContext, listed_families
from ablation_lab.analyses.self_repair_report import SUMMARIES, figures, plot, self_repair_section, summarise
from ablation_lab.report.sections import ReportInputs, SectionContent

METRICS = ("logit", "log_probability", "accuracy")
COLUMNS = ["layer", "component", "units", "depth", "fill", "metric", "quantity", "by", "value", "row"]
CHUNK = 256  # test examples per forward pass
LINEAR = ("InputLayer", "Dense", "Conv1D", "Conv2D", "Flatten", "Reshape", "Dropout", "BatchNormalization", "AveragePooling2D")
LINEAR += ("GlobalAveragePooling2D", "Add", "SpatialDropout2D", "AveragePooling1D", "GlobalAveragePooling1D")
BLOCK = re.compile(r"\Ablock_([0-9]+)_conv_2\Z")


class Replay:
    """A trained functional model run layer by layer, with chosen layers' outputs given (seeded) instead of computed.

    The final Dense softmax gives logits (its pre-activation). Only the layers the output needs,
    and that a seed does not already give, are run."""

    def __init__(self, model: Any) -> None:
        import keras

        last = model.layers[-1]
        if not isinstance(last, keras.layers.Dense) or getattr(last.activation, "__name__", "") != "softmax":
            raise ValueError(f"self_repair: the model's last layer {last.name!r} is not a Dense softmax layer; logits cannot be read")
        self.model, self.output = model, last.name
        self.nodes = [node for depth in sorted(model._nodes_by_depth, reverse=True) for node in model._nodes_by_depth[depth]]
        self.nodes = [node for node in self.nodes if node.operation is not None and not node.is_input]
        self.inputs = {node.operation.name: [t._keras_history.operation.name for t in node.input_tensors] for node in self.nodes}
        self.input_name = model.inputs[0]._keras_history.operation.name

    def needed(self, seeded: Sequence[str]) -> set[str]:
        need, stack = set(), [self.output]
        while stack:
            name = stack.pop()
            if name in need or name in seeded or name == self.input_name:
                continue
            need.add(name)
            stack += self.inputs.get(name, [])
        return need

    def run(self, seeds: Mapping[str, Any], keep: Sequence[str] = ()) -> dict[str, Any]:
        """Layer name -> output (tensors) for `keep` and "logits", from the seeded layers' values."""
        import tensorflow as tf

        values = {name: tf.convert_to_tensor(value, tf.float32) for name, value in seeds.items()}
        need = self.needed(list(values))
        for node in self.nodes:
            layer = node.operation
            if layer.name not in need:
                continue
            args, kwargs = node.arguments.fill_in({id(t): values[t._keras_history.operation.name] for t in node.input_tensors})
            if layer.name == self.output:
                values["logits"] = tf.matmul(args[0], layer.kernel) + (layer.bias if layer.use_bias else 0.0)
                continue
            if getattr(layer, "_call_has_training_arg", False):
                kwargs["training"] = False
            values[layer.name] = layer(*args, **kwargs)
        return {name: values[name] for name in [*keep, "logits"]}

    def linearised(self, cut: str, clean: np.ndarray, change: np.ndarray, frozen: Mapping[str, np.ndarray]) -> np.ndarray:
        """Clean logits plus the tail's Jacobian at the clean point times `change` (frozen layers: constants)."""
        import tensorflow as tf

        primal, tangent = tf.constant(clean, tf.float32), tf.constant(change, tf.float32)
        with tf.autodiff.ForwardAccumulator(primal, tangent) as accumulator:
            logits = self.run({cut: primal, **frozen})["logits"]
        return (logits + accumulator.jvp(logits)).numpy()


def drops(clean: np.ndarray, changed: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per test example, intact minus changed: correct-class logit, log-probability, hit (logits in, one row per example)."""
    from scipy.special import log_softmax

    rows = np.arange(len(labels))

    def scores(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return logits[rows, labels], log_softmax(logits, axis=1)[rows, labels], (logits.argmax(axis=1) == labels).astype(float)

    return {metric: a - b for metric, a, b in zip(METRICS, scores(clean), scores(changed), strict=True)}


def chain_nonlinear(model: Any, after: str) -> list[str]:
    """The layers after `after` (a chain) that are not affine at inference: the stages that can repair."""
    import keras

    names = [layer.name for layer in model.layers]
    out = []
    for layer in model.layers[names.index(after) + 1 : -1]:
        linear = type(layer).__name__ in LINEAR
        if isinstance(layer, keras.layers.Dense | keras.layers.Conv1D | keras.layers.Conv2D):
            linear = getattr(layer.activation, "__name__", "linear") == "linear"
        if not linear:
            out.append(layer.name)
    return out


def residual_blocks(model: Any) -> list[int]:
    """The blocks k of a residual network (layers block_<k>_conv_2 and block_<k>_add), in order; [] for any other model."""
    names = {layer.name for layer in model.layers}
    return sorted(int(m.group(1)) for name in names if (m := BLOCK.match(name)) and f"block_{m.group(1)}_add" in names)


def components(model: Any, params: SelfRepairParams) -> list[tuple[str, int, str, np.ndarray]]:
    """(layer, depth, name, unit indices) per component: whole blocks of a residual network, unit groups of a chain."""
    from ablation_lab.models.surgery import chosen_layers, knockout_layers

    blocks = residual_blocks(model)
    if blocks:
        if params.layers:
            raise ValueError("self_repair.layers: a residual network's components are its blocks; leave layers empty")
        writes = [f"block_{k}_conv_2" for k in blocks]
        channels = [np.arange(int(model.get_layer(write).output.shape[-1])) for write in writes]
        return [
            (write, depth, f"block_{k}", every) for depth, (k, write, every) in enumerate(zip(blocks, writes, channels, strict=True), 1)
        ]
    try:
        available = knockout_layers(model)
    except ValueError as error:
        raise ValueError(
            "self_repair: the model is neither a chain nor a residual network (layers block_<k>_conv_2 and block_<k>_add); "
            + str(error).split("; ", 1)[-1]
        ) from None
    chosen = chosen_layers(model, params.layers) if params.layers else available[:-1]
    if available[-1] in chosen:
        raise ValueError(
            f"self_repair.layers: {available[-1]!r} is the model's last knock-out-able layer: only the output layer reads it, "
            "nothing can repair a removal there"
        )
    out = []
    for layer in chosen:
        units = int(model.get_layer(layer).output.shape[-1])
        for group, members in enumerate(np.array_split(np.arange(units), min(params.groups, units)), start=1):
            out.append((layer, available.index(layer) + 1, f"{layer}:g{group}", members))
    return out


def train_means(graph: Replay, x: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
    """Each layer's per-unit (channel) mean over training examples and positions: the mean fill."""
    totals: dict[str, np.ndarray] = {}
    for start in range(0, len(x), CHUNK):
        out = graph.run({graph.input_name: x[start : start + CHUNK]}, layers)
        for layer in layers:
            flat = out[layer].numpy().reshape(-1, out[layer].shape[-1]).astype(np.float64)
            totals[layer] = totals.get(layer, 0.0) + flat.sum(axis=0) / (flat.shape[0] // len(out[layer]))
    return {layer: (total / len(x)).astype(np.float32) for layer, total in totals.items()}


def stages(graph: Replay, layer: str, clean: Mapping[str, np.ndarray], blocks: Sequence[int]) -> list[tuple[str, str, dict]]:
    """(who reacts, cut, frozen seeds) per stage: first the direct one (nothing reacts), then one more component
    reacting per stage, input side first: a chain's later non-linear layers; a residual network's later blocks (each
    block's write held clean until its own stage), then the head (cut "": the ablated model itself, the total)."""
    if not blocks:
        return [("", layer, {})] + [(name, name, {}) for name in chain_nonlinear(graph.model, layer)]
    k = int(BLOCK.match(layer).group(1))
    later = [j for j in blocks if j > k]
    held = {m: {f"block_{j}_conv_2": clean[f"block_{j}_conv_2"] for j in later if j > m} for m in [k, *later]}
    return [("", f"block_{k}_add", held[k])] + [(f"block_{m}", f"block_{m}_add", held[m]) for m in later] + [("head", "", {})]


def component_drops(
    graph: Replay, x: np.ndarray, y: np.ndarray, clean: Mapping[str, np.ndarray], layer: str, ablated: np.ndarray, blocks: Sequence[int]
) -> dict[str, Any]:
    """Per metric: the direct and total drops and each stage's step (who reacted, its per-example repair)."""
    after = stages(graph, layer, clean, blocks)
    seeds = {graph.input_name: x, layer: ablated} if blocks else {layer: ablated}
    total = {name: value.numpy() for name, value in graph.run(seeds, [cut for _, cut, _ in after if cut]).items()}
    logits = []
    for _, cut, frozen in after:
        if not cut:
            logits.append(total["logits"])
            continue
        logits.append(graph.linearised(cut, clean[cut], total[cut] - clean[cut], frozen))
    measured = [drops(clean["logits"], each, y) for each in logits]
    totals = drops(clean["logits"], total["logits"], y)
    return {
        metric: {
            "direct": measured[0][metric],
            "total": totals[metric],
            "steps": [(who, a[metric] - b[metric]) for (who, _, _), a, b in zip(after[1:], measured[:-1], measured[1:], strict=True)],
        }
        for metric in METRICS
    }


def self_repair_table(
    model: Any, inputs: Mapping[str, np.ndarray], labels: np.ndarray, params: SelfRepairParams
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Direct, total and self-repair per component, fill and metric on the test split, with per-example drops.

    `inputs` holds the train and test splits as the model saw them (train: only for the mean fill)."""
    graph = Replay(model)
    parts = components(model, params)
    blocks = residual_blocks(model)
    layers = list(dict.fromkeys(layer for layer, *_ in parts))
    keep = [*layers, *(f"block_{k}_{s}" for k in blocks for s in ("conv_2", "add"))]
    keep += [cut for layer in layers for _, cut, _ in (stages(graph, layer, {}, []) if not blocks else [])]
    keep = list(dict.fromkeys(keep))
    means = train_means(graph, inputs["train"], layers) if "mean" in params.fills else {}
    chunks: list[list[dict]] = []
    for start in range(0, len(labels), CHUNK):
        x, y = inputs["test"][start : start + CHUNK], labels[start : start + CHUNK]
        clean = {name: value.numpy() for name, value in graph.run({graph.input_name: x}, keep).items()}
        chunk = []
        for layer, depth, name, members in parts:
            for fill in params.fills:
                value = np.zeros(clean[layer].shape[-1], np.float32) if fill == "zero" else means[layer]
                ablated = clean[layer].copy()
                ablated[..., members] = value[members]
                units = f"{members[0]}-{members[-1]}" if len(members) > 1 else str(members[0])
                base = {"layer": layer, "component": name, "units": units, "depth": depth, "fill": fill}
                for metric, found in component_drops(graph, x, y, clean, layer, ablated, blocks).items():
                    chunk.append(base | {"metric": metric} | found)
        chunks.append(chunk)
    return tidy(chunks, len(labels))


def tidy(chunks: list[list[dict]], n_test: int) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Join the test chunks: per component, fill and metric, the mean drops, and the per-example direct and total drops."""
    out, per_example = [], []
    for position, first in enumerate(chunks[0]):
        parts = [chunk[position] for chunk in chunks]
        base = {key: first[key] for key in ("layer", "component", "units", "depth", "fill", "metric")}
        direct, total = (np.concatenate([p[q] for p in parts]) for q in ("direct", "total"))
        for quantity, values in (("direct", direct), ("total", total)):
            out.append(base | {"quantity": quantity, "by": "", "value": float(values.mean()), "row": len(per_example)})
            per_example.append(values.astype(np.float32))
        out.append(base | {"quantity": "self_repair", "by": "", "value": float((direct - total).mean()), "row": -1})
        for index, (who, _) in enumerate(first["steps"]):
            step = np.concatenate([p["steps"][index][1] for p in parts])
            out.append(base | {"quantity": "repair_by", "by": who, "value": float(step.mean()), "row": -1})
    arrays = {"drops": np.stack(per_example) if per_example else np.zeros((0, n_test), np.float32)}
    return pd.DataFrame(out, columns=COLUMNS), arrays


def self_repair_run(context: RunContext, params: SelfRepairParams) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Self-repair of one trained model's components (see the module docstring)."""
    inputs = {"train": context.inputs("train"), "test": context.inputs("test")}
    return self_repair_table(context.model, inputs, context.labels("test"), params)


@dataclass(frozen=True)
class SelfRepairParams(Params):
    """Which components are removed and how (the `self_repair` block), and the study's equivalence margin."""

    config_key = "self_repair"

    layers: list[int | str]  # hidden layers (1-based) or layer names; empty: every one but the last (a resnet: its blocks)
    groups: int  # unit groups each layer is split into, one component each
    fills: list[str]  # what a removed component outputs: `zero` or its training `mean`
    families: list[str]  # whose models it sees
    margin: float  # the study's `equivalence_margin`


KEYS = ("layers", "groups", "fills", "families")  # its block's keys in its probe's identity (the margin is the study's)


def self_repair_params(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """Its block's keys, checked against the model at plan time (a layer the model lacks, or its last one, is refused)."""
    from ablation_lab import checks
    from ablation_lab.config import ConfigError

    block = config.get("self_repair")
    if not block:
        return None
    model = config["model"]
    layers = list(block["layers"])
    if layers and model.get("kind") == "resnet":
        raise ConfigError("invalid study config: self_repair.layers: a residual network's components are its blocks; leave layers empty")
    if layers:
        checks.check_posthoc_layers({"layers": layers}, model, "self_repair.layers")
        available = checks.knockout_layers(model) or []
        last = len(model.get("hidden_units", []))
        for index, layer in enumerate(layers):
            if (available and layer == available[-1]) or (not isinstance(layer, str) and layer == last):
                raise ConfigError(
                    f"invalid study config: self_repair.layers[{index}]: {layer!r} is the model's last hidden layer; only the "
                    "output layer reads it, so nothing can repair a removal there"
                )
    return {key: block[key] for key in KEYS} | {"margin": config["equivalence_margin"]}


def self_repair_branching(config: Mapping[str, Any], why: str) -> None:
    """A branching model file is refused (the built-in resnet is not: its blocks are the components)."""
    from ablation_lab.config import ConfigError

    if config["model"].get("kind") == "file":
        raise ConfigError(
            f"invalid study config: self_repair: needs a chain model or the built-in resnet (model.kind: resnet); "
            f"{why}; remove it for this model"
        )


def section(inputs: ReportInputs) -> list[SectionContent]:
    """The report section, handed the study's typed parameters."""
    return self_repair_section(inputs, ANALYSIS.study_params(inputs.study))


ANALYSIS = Analysis(
    "self_repair",
    "Self-repair",
    "Each component removed from the trained model: its total effect on the test split against its direct effect "
    "(nothing downstream reacting); self-repair = direct - total, and which later components did it.",
    self_repair_run,
    self_repair_params,
    SelfRepairParams,
    branching=self_repair_branching,
    code=("ablations", "models.surgery"),  # the study-level jobs digest every analysis module and statistics/
    wants=listed_families("self_repair"),
    summaries=SUMMARIES,
    summarise=summarise,
    figures=figures,
    plot=plot,
    sections=(section,),
)
