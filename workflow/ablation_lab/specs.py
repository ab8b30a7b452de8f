"""Typed specs: a run's settings read once, into frozen dataclasses, with the schema's defaults.

A run spec stays a plain mapping where it is data: in a rule's `params`, in `provenance.json`
and under the digest that names the run (`identity`). Its canonical form leaves out a key
that was added later when it holds its default (`identity.canonical_training`), so an old
run keeps its name. Code that *uses* the settings reads them through these classes instead:
the missing key comes back from the schema, the one place a default is written, rather than
from a `.get(key, default)` repeated at every use, and a misspelt field is an error at the
first test rather than a silent fallback.

Pure Python (no TensorFlow); the schema is read on first use (`config.schema_defaults`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from ablation_lab.config import model_kind, schema_absent, schema_defaults


def _refuse_unknown(cls: type, block: str | None, given: Mapping[str, Any]) -> set[str]:
    """The fields of `cls`; a key of `given` that is none of them is named (`<block>.<key>: not a <block> setting`)."""
    names = {field.name for field in fields(cls)}
    unknown = sorted(set(given) - names)
    if unknown:
        raise ValueError(f"{block}.{unknown[0]}: not a {block} setting (known: {', '.join(sorted(names))})")
    return names


def _with_defaults(cls: type, block: str | None, given: Mapping[str, Any]) -> dict[str, Any]:
    """`given` over the schema's defaults of `block` (none without one), as the fields of `cls`; a key it does not know is named."""
    names = _refuse_unknown(cls, block, given)
    values = {**(schema_defaults(block) if block else {}), **given}
    missing = sorted(names - set(values))
    if missing:
        raise ValueError(f"{block}.{missing[0]}: missing, and the schema gives it no default")
    return {name: values[name] for name in names}


@dataclass(frozen=True)
class DataSpec:
    """Which data and how it is split (the schema's `dataset` block): what the loaders and the split read.

    A data key leaves out the keys its loader never reads (`datasets.identity_of`); they come
    back here at their defaults, so no loader repeats one.
    """

    name: str
    path: str | None
    label_column: str
    image_size: tuple[int, int] | None
    color_mode: Literal["auto", "grayscale", "rgb"]
    test_fraction: float
    validation_fraction: float
    split_seed: int
    max_samples: int | None

    @classmethod
    def of(cls, dataset: DataSpec | Mapping[str, Any]) -> DataSpec:
        """A study's or data key's `dataset` mapping, a key it leaves out taken from the schema; a spec is returned as is."""
        if isinstance(dataset, DataSpec):
            return dataset
        values = _with_defaults(cls, "dataset", dataset)
        size = values["image_size"]
        return cls(**values | {"image_size": None if size is None else tuple(size)})

    def fraction(self, part: Literal["test", "validation"]) -> float:
        return self.test_fraction if part == "test" else self.validation_fraction


@dataclass(frozen=True)
class TrainingSpec:
    """How a model is trained (the schema's `training` block): what the training loops read."""

    optimizer: Literal["adam", "sgd", "rmsprop"]
    learning_rate: float
    epochs: int
    batch_size: int
    early_stopping_patience: int
    keep_best: Literal["val_loss", "val_accuracy", "last"]
    loop: Literal["fast", "keras"]

    @classmethod
    def of(cls, training: TrainingSpec | Mapping[str, Any]) -> TrainingSpec:
        """A run spec's `training` mapping, a key it leaves out taken from the schema; a spec is returned as is."""
        return training if isinstance(training, TrainingSpec) else cls(**_with_defaults(cls, "training", training))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def kept_epoch_score(self) -> Any:
        """Higher is better: the score `keep_best` judges each epoch by (validation split only;
        `last` keeps the final epoch, and early stopping then judges the validation loss)."""
        if self.keep_best == "val_accuracy":
            return lambda row: row["val_accuracy"]
        return lambda row: -row["val_loss"]

    @property
    def monitored(self) -> Literal["val_loss", "val_accuracy"]:
        """The validation metric early stopping watches."""
        return "val_accuracy" if self.keep_best == "val_accuracy" else "val_loss"


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value


# The schema defaults a kind's run spec does not take: a model file's layers are its own (its
# activation and dropout are None unless a variant changes them); a resnet has no dense head.
NOT_TAKEN = {"file": ("hidden_units", "activation", "dropout"), "resnet": ("hidden_units",)}


@dataclass(frozen=True)
class ModelSpec:
    """What model a run trains (the schema's `model` block): what the model builders read.

    Read from a run's canonical model spec (`identity.canonical_model`), which stays the
    mapping its name is the digest of: that mapping leaves out a key at its default, and a
    key that applies to some kinds only; this fills them back from the schema (`default`,
    `x-absent`, `x-kind-defaults`), so no builder repeats a default. A field a kind has no
    use for is None (or empty).
    """

    kind: Literal["mlp", "kst", "cnn", "resnet", "file", "builder"]
    activation: str | None
    dropout: float | None
    dropout_kind: Literal["standard", "nsdropout"]  # these three: the schema's x-absent when left out
    nsdropout_interval: int
    weights: Literal["retrain", "as_saved"]  # file
    hidden_units: tuple[int, ...] = ()
    dropout_layers: tuple[int, ...] | None = None  # None: every hidden layer
    l2: float | tuple[float, ...] | None = None
    learnable: Mapping[str, Any] | None = None  # in full when the activation is learnable
    filters: tuple[int, ...] | None = None  # cnn, resnet
    kernel_size: int | None = None  # cnn, resnet
    batch_norm: bool | None = None  # cnn, resnet
    pooling: Literal["max", "avg", "none"] | None = None  # cnn
    blocks: int | None = None  # resnet
    block_widths: tuple[int, ...] | None = None  # resnet: inner widths where they differ from filters
    path: str | None = None  # file
    dropout_after: tuple[str, ...] | None = None  # file
    sha256: str | None = None  # file: its content digest (identity only: an edited file retrains)
    builder: str | None = None  # builder
    builder_sha256: str | None = None  # builder: its code's digest (identity only)

    @classmethod
    def of(cls, model: ModelSpec | Mapping[str, Any]) -> ModelSpec:
        """A run spec's `model` mapping, with what its absent keys mean; a spec is returned as is."""
        if isinstance(model, ModelSpec):
            return model
        from ablation_lab.models.settings import LEARNABLE_ACTIVATIONS, kind_defaults, learnable_settings

        absent = schema_absent("model")
        kind = model_kind(model)
        defaults = {key: value for key, value in schema_defaults("model").items() if key not in NOT_TAKEN.get(kind, ())}
        values = {**absent, **defaults, **kind_defaults(kind), **model, "kind": kind}
        _refuse_unknown(cls, "model", values)
        learnable = "learnable" in model or values.get("activation") in LEARNABLE_ACTIVATIONS
        values["learnable"] = learnable_settings(model) if learnable else None
        values = {key: _tuple(value) for key, value in values.items()}
        if values.get("dropout") is not None:
            values["dropout"] = float(values["dropout"])
        values.setdefault("activation", None)
        values.setdefault("dropout", None)
        return cls(**values)

    @property
    def penalties(self) -> list[float]:
        """The L2 penalty of each hidden layer (zero: none); a list of the wrong length is named."""
        depth = len(self.hidden_units)
        if self.l2 is None:
            return [0.0] * depth
        if not isinstance(self.l2, tuple):
            return [float(self.l2)] * depth
        if len(self.l2) != depth:
            raise ValueError(f"model.l2: {len(self.l2)} values for {depth} hidden layers (give one per hidden layer, or one number)")
        return [float(value) for value in self.l2]

    def resnet_widths(self) -> tuple[list[int], list[int]]:
        """Kind resnet: each block's stream width and inner width (`models.settings.resnet_widths`)."""
        from ablation_lab.models.settings import resnet_widths

        return resnet_widths({"blocks": self.blocks, "filters": self.filters, "block_widths": self.block_widths})
