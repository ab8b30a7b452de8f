"""Bad data files: each one is a single DataError line naming the file (and column or class), never a traceback.

Every case builds its own tiny file in tmp_path and goes through the public entry points,
prepare(cfg) and, for the header-only checks, describe(cfg).
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ablation_lab.data.base import DataError, DatasetInfo
from ablation_lab.data.datasets import describe
from ablation_lab.data.split import prepare

BASE = {"label_column": "label", "test_fraction": 0.2, "validation_fraction": 0.2, "split_seed": 42, "max_samples": None}


def cfg(name: str, path: Path | str, **overrides) -> dict:
    return {**BASE, "name": name, "path": str(path), **overrides}


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def table(n: int = 60, classes: int = 3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "label": np.arange(n) % classes})


def csv(tmp: Path, frame: pd.DataFrame, **overrides) -> dict:
    frame.to_csv(tmp / "t.csv", index=False)
    return cfg("csv", tmp / "t.csv", **overrides)


def npz(tmp: Path, **arrays) -> dict:
    np.savez(tmp / "d.npz", **arrays)
    return cfg("npz", tmp / "d.npz")


def xy(n: int = 60, features: int = 4, classes: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).normal(size=(n, features)), "y": np.arange(n) % classes}


def with_nan_labels(frame: pd.DataFrame, rows: list[int]) -> pd.DataFrame:
    frame = frame.astype({"label": float})
    frame.loc[rows, "label"] = np.nan
    return frame


def string_labels_with_a_gap(tmp: Path) -> dict:
    frame = table().assign(label=lambda t: np.array(["cat", "dog", "eel"])[t["label"]])
    frame.loc[5, "label"] = None
    return csv(tmp, frame)


def one_sample_class(tmp: Path) -> dict:
    frame = table(30, classes=2)
    frame.loc[29, "label"] = 9
    return csv(tmp, frame.astype({"label": str}).replace({"label": {"0": "a", "1": "b", "9": "z"}}))


def folder(tmp: Path, name: str, dataset: str) -> dict:
    (tmp / name).mkdir()
    return cfg(dataset, tmp / name)


def single_npy(tmp: Path) -> dict:
    np.save(tmp / "x.npy", np.ones((10, 2)))
    (tmp / "x.npy").rename(tmp / "d.npz")
    return cfg("npz", tmp / "d.npz")


def cifar_tar(tmp: Path, members: dict[str, bytes]) -> dict:
    with tarfile.open(tmp / "cifar.tar.gz", "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return cfg("cifar10", tmp / "cifar.tar.gz")


def cifar_batch(n: int = 20) -> bytes:
    data = np.random.default_rng(0).integers(0, 256, size=(n, 3072), dtype=np.uint8)
    return pickle.dumps({b"batch_label": b"b", b"labels": [i % 10 for i in range(n)], b"data": data, b"filenames": [b"f"] * n}, protocol=4)


Builder = Callable[[Path], dict]
CASES: list[tuple[str, Builder, str]] = [
    # the file itself
    ("csv-path-is-a-folder", lambda t: folder(t, "table.csv", "csv"), "is a folder, not a file"),
    ("csv-path-is-dev-null", lambda t: cfg("csv", "/dev/null"), "is not a regular file but a character device"),
    ("csv-empty-file", lambda t: cfg("csv", write(t / "t.csv", b"")), "is empty (0 bytes)"),
    (
        "csv-binary-file",
        lambda t: cfg("csv", write(t / "t.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")),
        "is a binary file, not a CSV text table",
    ),
    ("csv-not-utf8", lambda t: cfg("csv", write(t / "t.csv", "a,label\n1,caf\xe9\n".encode("latin-1"))), "is not UTF-8 text"),
    ("csv-blank-lines-only", lambda t: cfg("csv", write(t / "t.csv", "\n\n\n")), "cannot read"),
    ("csv-ragged-rows", lambda t: cfg("csv", write(t / "t.csv", "a,b,label\n1,2,x\n1,2,3,4,5\n")), "cannot read"),
    # the header
    ("csv-no-label-column", lambda t: csv(t, table().rename(columns={"label": "y"})), "has no label column 'label' (dataset.label_column)"),
    ("csv-only-the-label-column", lambda t: csv(t, table()[["label"]]), "has only the label column 'label'"),
    (
        "csv-duplicate-label-header",
        lambda t: cfg("csv", write(t / "t.csv", "a,label,b,label\n1,0,2,0\n")),
        "column 'label' appears 2 times",
    ),
    ("csv-header-only", lambda t: cfg("csv", write(t / "t.csv", "a,b,label\n")), "no examples (0 rows)"),
    # columns and labels
    ("csv-text-feature", lambda t: csv(t, table().assign(color="red")), "feature column 'color' is not numeric (data row 1 holds 'red')"),
    (
        "csv-nan-feature",
        lambda t: csv(t, table().assign(a=lambda f: f["a"].mask(f.index == 7))),
        "1 NaN/inf feature values in 1 row (first row 7)",
    ),
    ("csv-nan-labels", lambda t: csv(t, with_nan_labels(table(), [2, 7])), "2 rows without a label in column 'label' (data rows 3, 8"),
    ("csv-string-labels-with-a-gap", string_labels_with_a_gap, "1 row without a label in column 'label' (data rows 6,"),
    ("csv-continuous-labels", lambda t: csv(t, table().assign(label=lambda f: f["a"] * 3.7)), "looks like a regression target"),
    ("csv-class-with-one-sample", one_sample_class, "class 'z' has only 1 example,"),
    ("csv-two-rows", lambda t: csv(t, table(2, classes=2)), "only 2 examples for 2 classes"),
    # split sizes
    ("csv-test-fraction-1e-9", lambda t: csv(t, table(), test_fraction=1e-9), "dataset.test_fraction=1e-09 of 60 rows gives 1 test"),
    ("csv-test-fraction-too-big", lambda t: csv(t, table(), test_fraction=0.97), "lower dataset.test_fraction"),
    ("csv-validation-fraction-1e-9", lambda t: csv(t, table(), validation_fraction=1e-9), "dataset.validation_fraction=1e-09"),
    (
        "csv-max-samples-too-few-per-split",
        lambda t: csv(t, table(200, classes=10), max_samples=20),
        "(dataset.max_samples=20) gives 4 test",
    ),
    (
        "csv-max-samples-below-classes",
        lambda t: csv(t, table(200, classes=10), max_samples=5),
        "max_samples=5 keeps fewer rows than the 10 classes",
    ),
    # npz files
    ("npz-path-is-a-folder", lambda t: folder(t, "d.npz", "npz"), "is a folder, not a file"),
    ("npz-empty-file", lambda t: cfg("npz", write(t / "d.npz", b"")), "is empty (0 bytes)"),
    ("npz-not-a-zip", lambda t: cfg("npz", write(t / "d.npz", "x,y\n1,2\n")), "is not a NumPy .npz archive (it starts with b'x,y\\n1,')"),
    ("npz-single-npy-array", single_npy, "is a single .npy array, not an .npz archive"),
    ("npz-missing-y", lambda t: npz(t, x=np.ones((10, 2))), "must hold arrays named 'x' and 'y' (missing ['y'])"),
    ("npz-x-y-lengths-differ", lambda t: npz(t, x=np.ones((60, 2)), y=np.arange(59) % 3), "60 feature rows but 59 labels"),
    ("npz-x-ndim-1", lambda t: npz(t, x=np.ones(30), y=np.arange(30) % 2), "'x' has shape (30,)"),
    ("npz-x-ndim-5", lambda t: npz(t, x=np.ones((6, 2, 2, 2, 2)), y=np.arange(6) % 2), "'x' has shape (6, 2, 2, 2, 2)"),
    (
        "npz-x-test-other-features",
        lambda t: npz(t, **xy(), x_test=np.ones((10, 5)), y_test=np.arange(10) % 3),
        "(10, 5) but the training features (60, 4)",
    ),
    (
        "npz-test-labels-other-type",
        lambda t: npz(t, **xy(), x_test=np.ones((9, 4)), y_test=np.array(["0", "1", "2"] * 3)),
        "test labels are <U1 but the training labels int64",
    ),
    ("npz-x-test-without-y-test", lambda t: npz(t, **xy(), x_test=np.ones((10, 4))), "holds 'x_test' but no 'y_test'"),
    (
        "npz-class-only-in-test",
        lambda t: npz(t, **xy(), x_test=np.ones((10, 4)), y_test=np.arange(10) % 3 + 5 * (np.arange(10) == 0)),
        "class 5 appears in the test split",
    ),
    (
        "npz-complex-features",
        lambda t: npz(t, x=xy()["x"] * 1j, y=xy()["y"]),
        "features are complex (complex128); refusing to drop the imaginary parts",
    ),
    ("npz-text-features", lambda t: npz(t, x=np.full((60, 2), "a"), y=xy()["y"]), "features are <U1, not numbers"),
    ("npz-one-hot-labels", lambda t: npz(t, x=xy()["x"], y=np.eye(3)[xy()["y"]]), "labels have shape (60, 3)"),
    (
        "npz-nan-labels",
        lambda t: npz(t, x=xy()["x"], y=np.where(np.arange(60) % 5 == 4, np.nan, xy()["y"])),
        "12 labels missing (NaN/None) or infinite, in rows 4, 9",
    ),
    ("npz-complex-labels", lambda t: npz(t, x=xy()["x"], y=xy()["y"] + 1j), "labels are complex128"),
    ("npz-single-class", lambda t: npz(t, x=xy()["x"], y=np.zeros(60)), "single class"),
    # image archives
    ("cifar-not-an-archive", lambda t: cfg("cifar10", write(t / "cifar.tar.gz", "not a tar\n")), "not a .tar(.gz) archive, or truncated"),
    ("cifar-no-batches", lambda t: cifar_tar(t, {"readme.html": b"<p>"}), "holds no CIFAR-10 batches"),
    (
        "cifar-batch-not-a-dict",
        lambda t: cifar_tar(t, {"data_batch_1": pickle.dumps([1, 2], protocol=4), "test_batch": cifar_batch()}),
        "not a CIFAR-10 batch",
    ),
    (
        "cifar-garbage-pickle",
        lambda t: cifar_tar(t, {"data_batch_1": b"\x80\x04garbage", "test_batch": cifar_batch()}),
        "not a readable CIFAR-10 batch",
    ),
    (
        "cifar-truncated-binary-batch",
        lambda t: cifar_tar(t, {"data_batch_1.bin": b"\x01" * 4000, "test_batch.bin": b"\x01" * 3073}),
        "not a whole number of 3073-byte",
    ),
    ("mnist-path-is-dev-null", lambda t: cfg("mnist", "/dev/null"), "is not a regular file"),
]

# The cases describe() must refuse from the header alone (the rest it cannot see without reading the data).
DESCRIBE_REFUSES = {
    "csv-path-is-a-folder",
    "csv-path-is-dev-null",
    "csv-empty-file",
    "csv-binary-file",
    "csv-not-utf8",
    "csv-blank-lines-only",
    "csv-no-label-column",
    "csv-only-the-label-column",
    "csv-duplicate-label-header",
    "npz-path-is-a-folder",
    "npz-empty-file",
    "npz-not-a-zip",
    "npz-single-npy-array",
    "npz-missing-y",
    "npz-x-ndim-1",
    "npz-x-ndim-5",
}


def assert_one_line_naming(error: pytest.ExceptionInfo, path: str, fragment: str) -> None:
    message = str(error.value)
    assert "\n" not in message and "\r" not in message, message
    assert Path(path).name in message, f"the message does not name the file: {message}"
    assert fragment in message, message


@pytest.mark.parametrize(("case", "build", "fragment"), CASES, ids=[case for case, _, _ in CASES])
def test_bad_data_is_one_line_naming_the_file(tmp_path, case, build, fragment):
    config = build(tmp_path)
    with pytest.raises(DataError) as error:
        prepare(config)
    assert_one_line_naming(error, config["path"], fragment)


def test_there_are_enough_cases():
    assert len(CASES) >= 25 and len({case for case, _, _ in CASES}) == len(CASES)
    assert DESCRIBE_REFUSES.issubset(case for case, _, _ in CASES)


@pytest.mark.parametrize(("case", "build", "fragment"), CASES, ids=[case for case, _, _ in CASES])
def test_describe_never_raises_anything_but_one_data_error_line(tmp_path, case, build, fragment):
    config = build(tmp_path)
    if case not in DESCRIBE_REFUSES:
        try:
            assert isinstance(describe(config), DatasetInfo)
        except DataError as error:
            assert "\n" not in str(error) and Path(config["path"]).name in str(error)
        return
    with pytest.raises(DataError) as error:
        describe(config)
    assert "\n" not in str(error.value) and Path(config["path"]).name in str(error.value), str(error.value)


def test_describe_reads_only_the_csv_header(tmp_path):
    write(tmp_path / "t.csv", "a,b,label\n1,2,x\n" + "garbage,,,,,\n" * 3)
    config = cfg("csv", tmp_path / "t.csv")
    assert describe(config) == DatasetInfo("tabular", (2,), ("a", "b"))
    with pytest.raises(DataError, match="cannot read"):
        prepare(config)


# --- a crafted CIFAR-10 pickle ------------------------------------------------------------


class RunsACommand:
    """What a malicious 'data_batch_1' holds: unpickling it calls os.system."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def evil_batch(marker: Path, nested: bool) -> bytes:
    payload = RunsACommand(f"touch {marker}")
    if nested:  # hidden among the official keys rather than being the whole batch
        data = np.zeros((2, 3072), dtype=np.uint8)
        return pickle.dumps({b"batch_label": b"x", b"labels": [0, 1], b"data": data, b"filenames": [payload]}, protocol=4)
    return pickle.dumps(payload)


def test_the_crafted_pickle_really_runs_a_command_when_unpickled_naively(tmp_path):
    """Guards the tests below: their payload is live, so 'no marker' means it was refused."""
    pickle.loads(evil_batch(tmp_path / "ran", nested=False))
    assert (tmp_path / "ran").exists()


@pytest.mark.parametrize("nested", [False, True], ids=["whole-batch", "inside-the-dict"])
@pytest.mark.parametrize("layout", ["tar.gz", "folder"])
def test_a_crafted_cifar_pickle_is_refused_without_running(tmp_path, layout, nested):
    marker = tmp_path / "pwned"
    batches = {"data_batch_1": evil_batch(marker, nested), "test_batch": cifar_batch()}
    if layout == "folder":
        root = tmp_path / "cifar-10-batches-py"
        root.mkdir()
        for name, payload in batches.items():
            write(root / name, payload)
        config = cfg("cifar10", root)
    else:
        config = cifar_tar(tmp_path, batches)
    with pytest.raises(DataError) as error:
        prepare(config)
    message = str(error.value)
    assert "\n" not in message and "data_batch_1" in message and Path(config["path"]).name in message
    assert "refused to unpickle it, it calls posix.system" in message or "refused to unpickle it, it calls os.system" in message
    assert not marker.exists(), "the command in the crafted pickle ran"


@pytest.mark.parametrize("target", ["builtins.eval", "builtins.exec", "subprocess.Popen", "numpy.load", "builtins.getattr"])
def test_every_global_but_numpy_array_reconstruction_is_refused(tmp_path, target):
    module, name = target.rsplit(".", 1)
    crafted = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\nX\x01\x00\x00\x001\x85R."  # target('1')
    with pytest.raises(DataError, match=f"it calls {target},"):
        prepare(cifar_tar(tmp_path, {"data_batch_1": crafted, "test_batch": cifar_batch()}))


# --- files that look odd but are fine -----------------------------------------------------


def test_string_labels_are_classes(tmp_path):
    frame = table().assign(label=lambda t: np.array(["cat", "dog", "eel"])[t["label"]])
    split = prepare(csv(tmp_path, frame))
    assert split.meta["class_names"] == ["cat", "dog", "eel"] and split.meta["n_classes"] == 3


def test_gzipped_csv_and_boolean_features_load(tmp_path):
    frame = table().assign(flag=lambda t: t["a"] > 0)
    with gzip.open(tmp_path / "t.csv.gz", "wt") as handle:
        frame.to_csv(handle, index=False)
    config = cfg("csv", tmp_path / "t.csv.gz")
    split = prepare(config)
    assert split.meta["feature_names"] == ["a", "b", "flag"] and split.x("train").dtype == np.float32
    assert describe(config).feature_names == ("a", "b", "flag")


def test_integer_valued_float_labels_are_classes(tmp_path):
    split = prepare(npz(tmp_path, x=xy()["x"], y=xy()["y"].astype(float)))
    assert split.meta["class_names"] == ["0.0", "1.0", "2.0"]


def test_official_test_labels_may_be_floats_of_the_same_classes(tmp_path):
    split = prepare(npz(tmp_path, **xy(), x_test=np.ones((9, 4)), y_test=np.array([0.0, 1.0, 2.0] * 3)))
    assert split.meta["class_counts"]["test"] == [3, 3, 3]


def test_max_samples_just_below_the_row_count_still_splits(tmp_path):
    """Leaving out fewer rows than there are classes cannot be stratified; those few are dropped at random."""
    split = prepare({**npz(tmp_path, **xy(100, classes=10)), "max_samples": 95})
    assert sum(split.meta["sizes"].values()) == 95


def test_max_samples_with_an_official_test_split_keeps_every_test_class(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(300, 28, 28), dtype=np.uint8)
    labels = np.arange(300) % 10
    np.savez(tmp_path / "mnist.npz", x_train=images, y_train=labels, x_test=images[:100], y_test=labels[:100])
    split = prepare(cfg("mnist", tmp_path / "mnist.npz", max_samples=50, test_fraction=0.1))  # 50 / 9 rounds to 6 < 10 classes
    assert split.meta["sizes"]["test"] == 10 and split.meta["class_counts"]["test"] == [1] * 10
