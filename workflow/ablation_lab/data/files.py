"""Readers of the files a user already has: MNIST / Fashion-MNIST (Keras .npz or IDX), CIFAR-10
(python or binary batches, safely unpickled), and the user's own .npz or CSV. Nothing here downloads."""

from __future__ import annotations

import gzip
import io
import math
import pickle
import tarfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ablation_lab.data.base import DataError, DatasetInfo, RawData, refuse_missing_labels
from ablation_lab.data.bounded import (
    MAX_HEADER_BYTES,
    check_text_size,
    npz_headers,
    read_head,
    refuse_size,
    require_regular,
)
from ablation_lab.messages import listing
from ablation_lab.specs import DataSpec


def require_file(path: str | None, dataset: str, expected: str, *, folder_ok: bool = False) -> Path:
    """The user's path, refused early when no loader could read it (folder, device, pipe, empty file).

    Checked with stat, never opened: opening a FIFO for reading blocks until a writer comes.
    """
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
    if require_regular(resolved, expected) == 0:
        raise DataError(f"{str(resolved)!r} is empty (0 bytes); set dataset.path to {expected}")
    return resolved


def _require_npz(path: Path) -> None:
    """Refuse, from its first bytes, a file that is not a zip archive (np.load would take it as a pickle or one .npy)."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
    except OSError as error:
        raise DataError(f"cannot read {str(path)!r}: {error}") from error
    if magic.startswith(b"\x93NUMPY"):
        raise DataError(f"{str(path)!r} is a single .npy array, not an .npz archive; save it with np.savez(path, x=..., y=...)")
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        # np.load would try it as a pickle and suggest allow_pickle=True: never for a file of unknown origin
        raise DataError(
            f"{str(path)!r} is not a NumPy .npz archive (it starts with {magic!r}); save the arrays with np.savez(path, x=..., y=...)"
        )


def load_npz(path: Path, *, trusted: bool = False) -> dict[str, np.ndarray]:
    """Every array of an .npz; a user's file (not `trusted`, i.e. not this workflow's own split)
    has each array's claimed size checked against MAX_DATA_BYTES first."""
    _require_npz(path)
    if not trusted:
        npz_headers(path)
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
    """The IDX format of the original MNIST / Fashion-MNIST files (optionally gzipped).

    The shape in the header is checked against MAX_DATA_BYTES before the body is read, and
    the body is read to that size only: a gzip stream cannot make it read more.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    require_regular(path, "an IDX file")
    try:
        with opener(path, "rb") as handle:
            head = handle.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08:
                raise DataError(f"{str(path)!r} is not an unsigned-byte IDX file")
            raw_dims = handle.read(4 * head[3])
            dims = tuple(int.from_bytes(raw_dims[4 * i : 4 * i + 4], "big") for i in range(len(raw_dims) // 4))
            size = math.prod(dims)
            refuse_size(path, size, f"the IDX data of shape {dims}")
            body = handle.read(size + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"cannot read IDX file {str(path)!r}: {error}") from error
    if len(dims) != head[3] or len(body) != size:
        raise DataError(f"{str(path)!r} is truncated or too long: {len(body)} bytes for shape {dims}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def read_keras_image_set(dataset: str, path: str | None) -> RawData:
    """MNIST or Fashion-MNIST: the Keras `.npz` or a folder with the four IDX(.gz) files."""
    expected = (
        f"the Keras '{dataset}.npz' (keys x_train, y_train, x_test, y_test) or a folder "
        "holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz"
    )
    source = require_file(path, dataset, expected, folder_ok=True)
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
        arrays = load_npz(source)
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


_CIFAR_STEMS = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")


_CIFAR_PIXELS = 32 * 32 * 3


_CIFAR_BATCH_BYTES = 64 << 20  # an official batch is 30.7 MB (python) or 30.7 MB (binary); twice that is no batch


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


def _read_regular(path: Path) -> bytes:
    refuse_size(path, require_regular(path, _CIFAR_EXPECTED), "the file", _CIFAR_BATCH_BYTES)
    return path.read_bytes()


def _cifar_batches(source: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every official batch in the folder or .tar(.gz), read in memory (nothing is extracted to disk).

    A tar member's size comes from its header: each one, and their sum, is checked against
    MAX_DATA_BYTES before the member is read (a .tar.gz can claim any size)."""
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        if source.is_dir():
            for member in sorted(p for p in source.rglob("*") if p.is_file()):
                batch = _cifar_batch(member.name, lambda m=member: _read_regular(m), repr(str(member)))
                if batch and batch[0] not in found:
                    found[batch[0]] = batch[1]
        else:
            total = 0
            with tarfile.open(source) as archive:
                for member in archive:  # one header at a time: getmembers() would inflate the whole archive first
                    if not member.isfile():
                        continue
                    total += member.size
                    refuse_size(source, member.size, f"its member {member.name!r}", _CIFAR_BATCH_BYTES)
                    refuse_size(source, total, "the sum of its members (uncompressed)")
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


def read_cifar10(path: str | None) -> RawData:
    """CIFAR-10, python or binary version: the `.tar.gz` archive or its extracted folder."""
    source = require_file(path, "cifar10", _CIFAR_EXPECTED, folder_ok=True)
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


NPZ_EXPECTED = "an .npz with arrays 'x' and 'y' (optionally 'x_test', 'y_test')"


CSV_EXPECTED = "a CSV table with one row per example and a label column"


_SNIFF = 8192


def _check_x_shape(shape: tuple[int, ...], path: Path) -> str:
    """'tabular' or 'image' from the shape of x; other ranks have no model to go with."""
    if not 2 <= len(shape) <= 4:
        raise DataError(f"{str(path)!r}: 'x' has shape {shape}; expected (n, features) or (n, height, width[, channels])")
    return "tabular" if len(shape) == 2 else "image"


def _tabular_names(n: int) -> tuple[str, ...]:
    return tuple(f"f{i}" for i in range(n))


def read_user_npz(cfg: DataSpec) -> RawData:
    source = require_file(cfg.path, "npz", NPZ_EXPECTED)
    arrays = load_npz(source)
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
    """Refuse a binary file before pandas decodes it into nonsense columns or a codec traceback.

    A compressed file is judged by its first decompressed bytes; a tar or zstd archive is
    refused outright (pandas would inflate a tar member of any size, zstd needs a package
    this workflow does not install).
    """
    name = path.name.lower()
    if name.endswith(".zst") or ".tar" in path.suffixes or name.endswith(".tar"):
        raise DataError(f"{str(path)!r}: a tar or zstd archive; save the table as .csv, .csv.gz, .csv.bz2, .csv.xz or a one-file .csv.zip")
    head = read_head(path, _SNIFF)
    if b"\x00" in head:
        raise DataError(
            f"{str(path)!r} is a binary file, not a CSV text table (NUL byte at offset {head.index(0)}); export the data as UTF-8 CSV"
        )
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if len(head) < _SNIFF or error.start < len(head) - 3:  # not just a character cut by the sample's end
            raise DataError(f"{str(path)!r} is not UTF-8 text (undecodable byte at offset {error.start}); save it as a UTF-8 CSV") from None


def _header_line(path: Path) -> bytes:
    """The first non-blank line (quotes respected), read through a cap: pandas would read a
    file without a line break whole to find the end of its header."""
    head = read_head(path, MAX_HEADER_BYTES + 1).lstrip(b"\r\n")
    quoted = False
    for index, byte in enumerate(head):
        if byte == ord('"'):
            quoted = not quoted
        elif byte == ord("\n") and not quoted:
            return head[: index + 1]
    if len(head) > MAX_HEADER_BYTES:
        raise DataError(
            f"{str(path)!r}: no line break in its first {MAX_HEADER_BYTES >> 20} MiB, so no header line to read "
            "(MAX_HEADER_BYTES in workflow/ablation_lab/data/bounded.py); is it a CSV table?"
        )
    return head


_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


def _delimiter_hint(line: bytes) -> str:
    """Why a header has no label column, when it looks separated by something other than commas."""
    text = line.decode("utf-8", errors="replace")
    for delimiter, name in _DELIMITERS.items():
        if text.count(delimiter) > text.count(","):
            return (
                f"; the header looks {name}-separated ({delimiter!r}, {text.count(delimiter)} times, "
                f"{text.count(',')} commas): save the table comma-separated"
            )
    return ""


def csv_features(source: Path, label: str) -> list[str]:
    """Feature column names from the header alone, after the checks a header allows.

    The header is read as written first: pandas renames a repeated name to 'name.1', and a
    repeated label column would then leak the label into the features.
    """
    import pandas as pd

    _require_text(source)
    line = _header_line(source)
    try:
        written = pd.read_csv(io.BytesIO(line), header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0].tolist()
        columns = [str(c) for c in pd.read_csv(io.BytesIO(line), nrows=0).columns]
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
        raise DataError(
            f"{str(source)!r} has no label column {label!r} (dataset.label_column); its columns are {listing(columns)}"
            + _delimiter_hint(line)
        )
    features = [c for c in columns if c != label]
    if not features:
        raise DataError(
            f"{str(source)!r} has only the label column {label!r}; add feature columns (one per input) next to it" + _delimiter_hint(line)
        )
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


def read_user_csv(cfg: DataSpec) -> RawData:
    import pandas as pd

    source = require_file(cfg.path, "csv", CSV_EXPECTED)
    label = cfg.label_column
    csv_features(source, label)
    check_text_size(source)
    try:
        table = pd.read_csv(source)
    except (OSError, ValueError, EOFError, zlib.error) as error:
        raise DataError(f"cannot read {str(source)!r} as CSV: {error}") from error
    if table.empty:
        raise DataError(f"{str(source)!r} has a header but no examples (0 rows); add one row per example")
    features = table.drop(columns=[label])
    _check_numeric(features, source)
    refuse_missing_labels(table[label].isna().to_numpy(), label, source, "counting from 1 below the header")
    x = features.to_numpy(dtype=np.float64, na_value=np.nan)
    info = DatasetInfo("tabular", (features.shape[1],), tuple(map(str, features.columns)))
    return RawData(x, table[label].to_numpy(), info, source={"file": str(source)})


def npz_info(path: Path) -> DatasetInfo:
    """Shape of `x` from its .npy header alone: the Snakefile asks at every start, data can be large."""
    _require_npz(path)
    arrays = npz_headers(path)
    if "x" not in arrays or "y" not in arrays:
        raise DataError(f"cannot read the shape of 'x' in {str(path)!r}: it must hold arrays named 'x' and 'y'; it holds {sorted(arrays)}")
    shape = arrays["x"][0]
    if _check_x_shape(shape, path) == "tabular":
        return DatasetInfo("tabular", tuple(shape[1:]), _tabular_names(shape[1]))
    return DatasetInfo("image", tuple(shape[1:]))
