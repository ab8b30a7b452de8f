"""Typed specs: a run's settings read once, into frozen dataclasses, with the schema's defaults.

A run spec stays a plain mapping where it is data: in a rule's `params`, in `provenance.json`
and under the digest that names the run (`identity`). Its canonical form leaves out a key
that was added later when it holds its default (`identity.canonical_training`), so an old
run keeps its name. Code that *uses* the settings reads them through these classes instead:
the missing key comes back from the schema, the one place a default is written, rather than
from a `.get(key, default)` repeated at every use, and a misspelt field is an error at the
first test rather than a silent fallback.

Pure Python (no TensorFlow); importing it reads the schema only on first use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from functools import cache
from typing import Any, Literal


@cache
def schema_defaults(block: str) -> dict[str, Any]:
    """The `default` of each key of a block of the config schema; a nested block is dotted (`families.nsdropout`)."""
    from ablation_lab.config import load_schema

    rule = load_schema()
    for key in block.split("."):
        rule = rule["properties"][key]
    return {key: entry["default"] for key, entry in rule["properties"].items() if "default" in entry}


def _with_defaults(cls: type, block: str | None, given: Mapping[str, Any]) -> dict[str, Any]:
    """`given` over the schema's defaults of `block` (none without one), as the fields of `cls`; a key it does not know is named."""
    names = {field.name for field in fields(cls)}
    unknown = sorted(set(given) - names)
    if unknown:
        raise ValueError(f"{block}.{unknown[0]}: not a {block} setting (known: {', '.join(sorted(names))})")
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
