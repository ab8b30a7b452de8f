"""The one stratified train/validation/test split, made once in the data-prep job, and its checks.

The test split is never used for training, model selection or any statistic a transform is
fitted on. Saved as split.npz + meta.json; `load_split` reads them back for every job.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ablation_lab.data.base import FORMAT_VERSION, SPLITS, DataError, DatasetInfo, RawData, Split, count_of, show_value, some_of
from ablation_lab.data.datasets import LOADERS
from ablation_lab.data.files import load_npz
from ablation_lab.specs import DataSpec

_REGRESSION_DISTINCT = 10  # more distinct non-integer labels than this (and over 5% of rows): a regression target


def check_arrays(x: np.ndarray, y: np.ndarray, where: str) -> None:
    """Reject data a model would silently learn garbage from."""
    if x.ndim < 2:
        raise DataError(f"{where}: features have shape {x.shape}; expected one row per example")
    if y.ndim != 1:
        raise DataError(
            f"{where}: labels have shape {y.shape}; expected one label per example, shape ({len(x)},) (one-hot? store y.argmax(axis=1))"
        )
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} feature rows but {len(y)} labels")
    if len(y) == 0:
        raise DataError(f"{where}: no examples (0 rows); add data")
    if math.prod(x.shape[1:]) == 0:
        raise DataError(f"{where}: the examples have no features (shape {x.shape})")
    if np.iscomplexobj(x):
        raise DataError(
            f"{where}: features are complex ({x.dtype}); refusing to drop the imaginary parts: store real and imaginary parts as separate features"
        )
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{where}: features are {x.dtype}, not numbers")
    if np.issubdtype(x.dtype, np.floating):  # integers are always finite
        bad = ~np.isfinite(x)
        if bad.any():
            rows = np.unique(np.nonzero(bad.reshape(len(x), -1))[0])
            raise DataError(
                f"{where}: {int(bad.sum())} NaN/inf feature values in {count_of(len(rows), 'row')} (first row {rows[0]}); fill or drop them"
            )
    _check_labels(y, where)


def _missing_labels(y: np.ndarray) -> np.ndarray:
    if y.dtype.kind == "f":
        return ~np.isfinite(y)
    if y.dtype.kind == "O":
        return np.array([v is None or (isinstance(v, float) and not math.isfinite(v)) for v in y], dtype=bool)
    return np.zeros(len(y), dtype=bool)


def _check_labels(y: np.ndarray, where: str) -> None:
    """Labels must be classes: integers, names or a few distinct numbers, none missing."""
    if y.dtype.kind not in "biufUSO":
        raise DataError(f"{where}: labels are {y.dtype}; expected class labels (integers or names)")
    missing = np.flatnonzero(_missing_labels(y))
    if len(missing):
        raise DataError(
            f"{where}: {count_of(len(missing), 'label')} missing (NaN/None) or infinite, in rows {some_of(missing)} (counting from 0); fill them in or drop those rows"
        )
    try:
        classes = np.unique(y)
    except TypeError:
        kinds = sorted({type(v).__name__ for v in y})
        raise DataError(f"{where}: the labels mix types ({', '.join(kinds)}); use one type (all integers or all names)") from None
    if y.dtype.kind == "f":
        fractional = classes[classes != np.round(classes)]
        if len(fractional) and len(classes) > max(_REGRESSION_DISTINCT, 0.05 * len(y)):
            shown = ", ".join(f"{v:g}" for v in fractional[:3])
            raise DataError(
                f"{where}: the labels are {len(classes)} distinct numbers, non-integer ones among them (e.g. {shown}); that looks like "
                "a regression target, and Ablation Lab trains classifiers: use class labels (integers or names)"
            )
    if len(classes) < 2:
        raise DataError(f"{where}: the label column has a single class ({classes.tolist()}); nothing to classify")


def _check_class_sizes(y: np.ndarray, need: int, parts: str, where: str) -> None:
    """Each class needs a row in each part of a stratified split; say which class falls short."""
    classes, counts = np.unique(y, return_counts=True)
    if len(y) < need * len(classes):
        raise DataError(
            f"{where}: only {len(y)} examples for {len(classes)} classes; a stratified {parts} split needs at least "
            f"{need} examples of each class ({need * len(classes)} in all): add data"
        )
    short = np.flatnonzero(counts < need)
    if len(short):
        first = short[np.argmin(counts[short])]
        more = f"; {len(short) - 1} more classes have fewer than {need}" if len(short) > 1 else ""
        raise DataError(
            f"{where}: class {show_value(classes[first])} has only {count_of(int(counts[first]), 'example')}, and a stratified {parts} split needs at least "
            f"{need} of each class{more}: add examples of it or drop its rows"
        )


def _check_test_split(raw: RawData, where: str) -> None:
    """An official test split must have the training data's example shape and no class of its own."""
    if raw.x_test.shape[1:] != raw.x.shape[1:]:
        raise DataError(
            f"{where}: the test split's features have shape {raw.x_test.shape} but the training features {raw.x.shape}; "
            "every example needs the same features"
        )
    numeric = [labels.dtype.kind in "biuf" for labels in (raw.y, raw.y_test)]
    if numeric[0] != numeric[1]:
        raise DataError(
            f"{where}: the test labels are {raw.y_test.dtype} but the training labels {raw.y.dtype}; "
            "use one type for both (all integers or all names)"
        )
    unseen = np.setdiff1d(np.unique(raw.y_test), np.unique(raw.y))
    if len(unseen):
        count = int(np.sum(raw.y_test == unseen[0]))
        more = f" (nor {len(unseen) - 1} more classes)" if len(unseen) > 1 else ""
        raise DataError(
            f"{where}: class {show_value(unseen[0])} appears in the test split ({count_of(count, 'example')}) but never in the training "
            f"data{more}; a model cannot learn it: drop those test rows or add training examples"
        )


def _split_advice(n: int, n_part: int, n_classes: int, knob: str, cfg: DataSpec) -> str:
    if n < 2 * n_classes:
        return "add data" + (" or raise dataset.max_samples" if cfg.max_samples else "")
    if n_part < n_classes:
        return f"raise {knob} to at least {math.ceil(1000 * n_classes / n) / 1000:g}" + (
            " or raise dataset.max_samples" if cfg.max_samples else ""
        )
    return f"lower {knob} to at most {math.floor(1000 * (n - n_classes) / n) / 1000:g}"


def _stratified_split(x: np.ndarray, y: np.ndarray, part: str, cfg: DataSpec, seed: int, where: str) -> list[np.ndarray]:
    """train_test_split(stratify=y), after checking what it would refuse with a traceback.

    part is "test" or "validation"; it names the config knob and the rows counted in messages.
    """
    knob = f"dataset.{part}_fraction"
    fraction = cfg.fraction(part)
    rest = "training+validation" if part == "test" else "training"
    classes, counts = np.unique(y, return_counts=True)
    n = len(y)
    if counts.min() < 2:
        raise DataError(
            f"{where}: class {show_value(classes[np.argmin(counts)])} has only 1 of the {n} rows to split into {part} and {rest} rows, "
            "too few for a stratified split: add examples of it, raise dataset.max_samples or lower dataset.test_fraction"
        )
    n_part = math.ceil(fraction * n)  # scikit-learn's own rounding
    if min(n_part, n - n_part) < len(classes):
        kept = f" (dataset.max_samples={cfg.max_samples})" if cfg.max_samples else ""
        raise DataError(
            f"{where}: {knob}={fraction:g} of {n} rows{kept} gives {n_part} {part} and {n - n_part} {rest} rows, but each needs "
            f"a row of every one of the {len(classes)} classes; {_split_advice(n, n_part, len(classes), knob, cfg)}"
        )
    from sklearn.model_selection import train_test_split  # here, not at the top: parsing the workflow never splits

    try:
        return train_test_split(x, y, test_size=fraction, stratify=y, random_state=seed, shuffle=True)
    except ValueError as error:
        raise DataError(f"{where}: cannot make a stratified {part} split: {error}") from error


def _stratified_take(x: np.ndarray, y: np.ndarray, n: int, seed: int, where: str = "the data") -> tuple[np.ndarray, np.ndarray]:
    """n rows in the class proportions of y (dataset.max_samples)."""
    if n >= len(y):
        return x, y
    n_classes = len(np.unique(y))
    if n < n_classes:
        raise DataError(
            f"{where}: dataset.max_samples={n} keeps fewer rows than the {n_classes} classes; raise it to at least {3 * n_classes}"
        )
    if len(y) - n < n_classes:
        # Too few rows left out to stratify them; dropping that handful at random changes no proportion.
        keep = np.sort(np.random.default_rng(seed).permutation(len(y))[:n])
        return x[keep], y[keep]
    from sklearn.model_selection import train_test_split

    x_keep, _, y_keep, _ = train_test_split(x, y, train_size=n, stratify=y, random_state=seed)
    return x_keep, y_keep


def _check_trained_on(y_train: np.ndarray, others: dict[str, np.ndarray], where: str) -> None:
    """A class the model never trains on cannot be predicted; refuse rather than report its zero."""
    seen = set(np.unique(y_train).tolist())
    for split, labels in others.items():
        unseen = [c for c in np.unique(labels).tolist() if c not in seen]
        if unseen:
            raise DataError(
                f"{where}: class {unseen[0]!r} is in the {split} split but has no training example; "
                "add examples of it, drop its rows or lower the test/validation fractions"
            )


def _encode_labels(*label_sets: np.ndarray) -> tuple[list[np.ndarray], list[str]]:
    classes = np.unique(np.concatenate([np.asarray(labels) for labels in label_sets]))
    encoded = [np.searchsorted(classes, labels).astype(np.int32) for labels in label_sets]
    return encoded, [str(c) for c in classes]


def _fingerprint(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    return digest.hexdigest()[:16]


def _where(raw: RawData, cfg: DataSpec) -> str:
    """How messages name the data: the user's file, or the embedded set."""
    file = raw.source.get("file") or raw.source.get("folder")
    return repr(file) if file else f"dataset {cfg.name!r}"


def split_rows(raw: RawData, cfg: DataSpec) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every check of the data and the seeded stratified split, as row indices: (rows, labels) per split.

    Rows, not feature arrays: `check` runs exactly this (every message is the one data prep
    would print) without copying the features. The test rows index raw.x_test when the data
    brings an official test split, raw.x otherwise.
    """
    seed = cfg.split_seed
    where = _where(raw, cfg)
    check_arrays(raw.x, raw.y, where)
    rows, y = np.arange(len(raw.y)), raw.y
    if raw.x_test is not None and raw.y_test is not None:
        check_arrays(raw.x_test, raw.y_test, f"{where} (test split)")
        _check_test_split(raw, where)
        _check_class_sizes(y, 2, "train/validation", where)
        test_rows, y_test = np.arange(len(raw.y_test)), raw.y_test
        if cfg.max_samples:
            rows, y = _stratified_take(rows, y, cfg.max_samples, seed, where)
            ratio = cfg.test_fraction / (1 - cfg.test_fraction)
            n_test = max(2, len(np.unique(y_test)), round(len(y) * ratio))
            test_rows, y_test = _stratified_take(test_rows, y_test, n_test, seed, f"{where} (test split)")
    else:
        _check_class_sizes(y, 3, "train/validation/test", where)
        if cfg.max_samples:
            rows, y = _stratified_take(rows, y, cfg.max_samples, seed, where)
        rows, test_rows, y, y_test = _stratified_split(rows, y, "test", cfg, seed, where)
    train_rows, val_rows, y_train, y_val = _stratified_split(rows, y, "validation", cfg, seed + 1, where)
    _check_trained_on(y_train, {"validation": y_val, "test": y_test}, where)
    return {"train": train_rows, "val": val_rows, "test": test_rows}, {"train": y_train, "val": y_val, "test": y_test}


def scaled_features(raw: RawData, rows: dict[str, np.ndarray], where: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The split's float32 features, scaled (see _scale), refused if any value is not finite after scaling."""
    sources = {"train": raw.x, "val": raw.x, "test": raw.x if raw.x_test is None else raw.x_test}
    return _scale({s: sources[s][rows[s]] for s in SPLITS}, raw.info, where)


def inspect(dataset: DataSpec | Mapping[str, Any]) -> dict[str, Any]:
    """What `check` reports: the data read and checked as data prep does, split and scaled, nothing written."""
    cfg = DataSpec.of(dataset)
    raw = load(cfg)
    rows, labels = split_rows(raw, cfg)
    scaled_features(raw, rows, _where(raw, cfg))
    classes = np.unique(np.concatenate([labels[s] for s in SPLITS]))
    return {"where": _where(raw, cfg), "classes": len(classes), "sizes": {s: len(rows[s]) for s in SPLITS}}


def make_split(raw: RawData, dataset: DataSpec | Mapping[str, Any]) -> Split:
    """Stratified, seeded train/validation/test split; images scaled to [0, 1], tables standardised."""
    cfg = DataSpec.of(dataset)
    where = _where(raw, cfg)
    rows, labels = split_rows(raw, cfg)
    features, scaling = scaled_features(raw, rows, where)
    (y_train, y_val, y_test), class_names = _encode_labels(labels["train"], labels["val"], labels["test"])
    arrays = {f"x_{s}": features[s] for s in SPLITS}
    arrays |= {"y_train": y_train, "y_val": y_val, "y_test": y_test}
    meta = {
        "format_version": FORMAT_VERSION,
        "name": cfg.name,
        "kind": raw.info.kind,
        "input_shape": list(arrays["x_train"].shape[1:]),
        "feature_names": list(raw.info.feature_names),
        "class_names": class_names,
        "n_classes": len(class_names),
        "sizes": {s: len(arrays[f"y_{s}"]) for s in SPLITS},
        "class_counts": {s: np.bincount(arrays[f"y_{s}"], minlength=len(class_names)).tolist() for s in SPLITS},
        "value_range": [float(arrays["x_train"].min()), float(arrays["x_train"].max())],
        "scaling": scaling,
        "split_seed": cfg.split_seed,
        "source": raw.source,
        "fingerprint": _fingerprint(arrays),
    }
    return Split(arrays, meta)


def _scale(features: dict[str, np.ndarray], info: DatasetInfo, where: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Images by the training maximum (255, 16, ...) into [0, 1]; tables by training mean/std.

    Finite features can still overflow here (values near 1e154 square past float64 in the
    standard deviation; a value far outside a near-constant training column passes float32's
    3.4e38 once scaled): refused, naming the column, instead of training on inf or NaN and
    reporting the runs as diverged.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        train = features["train"].astype(np.float64)
        if info.kind == "image":
            top = float(train.max()) if train.max() > 1 else 1.0
            scaled = {s: (v.astype(np.float64) / top).astype(np.float32) for s, v in features.items()}
            scaling: dict[str, Any] = {"method": "divide_by_max", "max": top}
        else:
            mean, std = train.mean(axis=0), train.std(axis=0)
            _refuse_overflow(~np.isfinite(mean) | ~np.isfinite(std), train, info, where)
            std[std == 0] = 1.0
            scaled = {s: ((v - mean) / std).astype(np.float32) for s, v in features.items()}
            scaling = {"method": "standardise", "mean": mean.tolist(), "std": std.tolist()}
    for split in SPLITS:
        bad = ~np.isfinite(scaled[split].reshape(len(scaled[split]), -1))
        if bad.any():
            row, column = (int(i[0]) for i in np.nonzero(bad))
            name = info.feature_names[column] if column < len(info.feature_names) else f"feature {column}"
            reach = float(np.max(np.abs(features[split].reshape(len(bad), -1)[:, column])))
            how = "dividing by the training maximum" if info.kind == "image" else "standardising with the training mean and std"
            raise DataError(
                f"{where}: column {name!r} is not finite after scaling ({how}; {int(bad[:, column].sum())} {split} values, "
                f"|values| up to {reach:.3g}, first in {split} row {row}); rescale it (other units, a log) so it stays well below 1e150"
            )
    return scaled, scaling


def _refuse_overflow(bad_columns: np.ndarray, train: np.ndarray, info: DatasetInfo, where: str) -> None:
    """A column whose training mean or standard deviation overflows float64: every scaled value would be 0 or NaN."""
    if not bad_columns.any():
        return
    column = int(np.flatnonzero(bad_columns.reshape(-1))[0])
    name = info.feature_names[column] if column < len(info.feature_names) else f"feature {column}"
    reach = float(np.max(np.abs(train.reshape(len(train), -1)[:, column])))
    raise DataError(
        f"{where}: column {name!r} is not finite after scaling (its training mean or standard deviation overflows float64, "
        f"|values| up to {reach:.3g}); rescale it (other units, a log) so it stays well below 1e150"
    )


def load(dataset: DataSpec | Mapping[str, Any]) -> RawData:
    """The configured dataset, read (bounded) but not checked."""
    cfg = DataSpec.of(dataset)
    try:
        loader = LOADERS[cfg.name]
    except KeyError:
        raise DataError(f"unknown dataset {cfg.name!r} (known: {', '.join(LOADERS)})") from None
    return loader(cfg)


def prepare(dataset: DataSpec | Mapping[str, Any]) -> Split:
    """Load the configured dataset and split it; every failure is a DataError with a clear message."""
    cfg = DataSpec.of(dataset)
    return make_split(load(cfg), cfg)


def save_split(split: Split, data_path: str | Path, meta_path: str | Path) -> None:
    from ablation_lab.artifacts import write_json, write_npz

    write_npz(data_path, **split.arrays)
    write_json(meta_path, split.meta)


def load_split(data_path: str | Path, meta_path: str | Path) -> Split:
    from ablation_lab.artifacts import read_json

    meta = read_json(meta_path)
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{meta_path}: prepared data of format {meta.get('format_version')}, expected {FORMAT_VERSION}; rerun data prep")
    return Split(load_npz(Path(data_path), trusted=True), meta)
