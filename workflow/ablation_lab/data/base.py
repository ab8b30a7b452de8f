"""What every part of data preparation shares: the split's format, its types, and DataError.

Every way a user's file can be unusable ends in one DataError line that names the file
(and the column or class at fault) and says what to change: data prep runs unattended,
and a pandas or scikit-learn traceback from deep inside a split does not say which of the
user's rows is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FORMAT_VERSION = 1


SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """Data that cannot be used; the message says which file or column and what to do.

    Always a single line: it ends up in a job log and in config errors, and a wrapped pandas
    or NumPy message may carry newlines of its own.
    """

    def __init__(self, message: str) -> None:
        super().__init__(re.sub(r"\s*[\r\n]+\s*", " ", str(message)).strip())


@dataclass(frozen=True)
class DatasetInfo:
    """What the workflow must know about a dataset before any job runs (to name variants)."""

    kind: str  # "image" or "tabular"
    input_shape: tuple[int, ...]
    feature_names: tuple[str, ...] = ()
    n_classes: int | None = None  # known before data prep for the built-in datasets only


@dataclass
class RawData:
    x: np.ndarray
    y: np.ndarray
    info: DatasetInfo
    x_test: np.ndarray | None = None  # an official test split, when the source has one
    y_test: np.ndarray | None = None
    source: dict[str, Any] = field(default_factory=dict)


@dataclass
class Split:
    """The prepared arrays (float32 features, int32 labels 0..K-1) and their metadata."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]

    def x(self, split: str) -> np.ndarray:
        return self.arrays[f"x_{split}"]

    def y(self, split: str) -> np.ndarray:
        return self.arrays[f"y_{split}"]


def show_value(value: Any) -> str:
    """A label or value as the user wrote it: 3 and 'cat', not np.int64(3) and np.str_('cat')."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def count_of(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def refuse_missing_labels(missing: np.ndarray, label: str, source: Any, counting: str) -> None:
    """One line naming the rows of a user's table that have no label (a mask, one entry per row)."""
    rows = np.flatnonzero(missing)
    if len(rows):
        raise DataError(
            f"{str(source)!r}: {count_of(len(rows), 'row')} without a label in column {label!r} (data rows {some_of(rows + 1)}, "
            f"{counting}); fill them in or drop those rows"
        )


def some_of(indices: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:limit])
    return shown + (f" and {len(indices) - limit} more" if len(indices) > limit else "")
