"""The data people have: class-subfolder image folders and Parquet tables.

Each test builds its own small tree or file in tmp_path. The guarantees are the CSV and NPZ
loaders': a stratified split, class names in the prepared metadata, one DataError line naming
the file (or class folder, or column) for every bad input, from `describe` (what the Snakefile
calls while planning) as from `prepare` (the data-prep job), and the content digest in the
data key, so an edited folder prepares a new split.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ablation_lab.data.base import DataError
from ablation_lab.data.datasets import describe
from ablation_lab.data.split import prepare
from ablation_lab.study import Study
from PIL import Image

BASE = {"label_column": "label", "test_fraction": 0.2, "validation_fraction": 0.2, "split_seed": 42, "max_samples": None}
CLASSES = ("cat", "dog", "emu")


def images_cfg(path: Path, **overrides) -> dict:
    return {**BASE, "name": "images", "path": str(path), "image_size": None, "color_mode": "auto", **overrides}


def parquet_cfg(path: Path, **overrides) -> dict:
    return {**BASE, "name": "parquet", "path": str(path), **overrides}


def pixels(label: int, index: int, size: tuple[int, int] = (12, 10), channels: int = 1) -> np.ndarray:
    """A class-dependent image (a bright band whose height is the class) with seeded noise."""
    rng = np.random.default_rng(100 * label + index)
    image = (rng.random((*size, channels)) * 60).astype(np.uint8)
    image[: 3 * (label + 1)] = 250
    return image[..., 0] if channels == 1 else image


def tree(tmp: Path, per_class: int = 10, size: tuple[int, int] = (12, 10), channels: int = 1, suffix: str = ".png") -> Path:
    root = tmp / "images"
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            Image.fromarray(pixels(label, index, size, channels)).save(root / name / f"{index:03d}{suffix}")
    return root


def table(n: int = 60, labels: object = None) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.integers(0, 5, n), "c": rng.normal(size=n) > 0})
    frame["label"] = labels if labels is not None else np.array(CLASSES)[np.arange(n) % 3]
    return frame


def parquet(tmp: Path, frame: pd.DataFrame | pa.Table) -> Path:
    path = tmp / "table.parquet"
    pq.write_table(frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


# --- what loads -----------------------------------------------------------------------------


def test_a_grayscale_tree_loads_with_its_folder_names_as_classes(tmp_path):
    root = tree(tmp_path)
    (root / "cat" / ".DS_Store").write_bytes(b"\x00junk")  # hidden files are skipped
    cfg = images_cfg(root)
    assert describe(cfg).input_shape == (12, 10)
    split = prepare(cfg)
    assert split.meta["class_names"] == list(CLASSES)
    assert split.meta["input_shape"] == [12, 10]
    assert sum(split.meta["sizes"].values()) == 30
    assert all(min(counts) >= 1 for counts in split.meta["class_counts"].values())  # stratified: every class everywhere
    assert split.x("train").min() >= 0.0
    assert split.x("train").max() == pytest.approx(1.0)


def test_an_image_keeps_its_pixels_and_its_class(tmp_path):
    root = tree(tmp_path)
    split = prepare(images_cfg(root))
    expected = {(name, index): pixels(label, index) / 250 for label, name in enumerate(CLASSES) for index in range(10)}
    for s in ("train", "val", "test"):
        for image, label in zip(split.x(s), split.y(s), strict=True):
            name = split.meta["class_names"][label]
            assert any(np.allclose(image, expected[(name, i)], atol=1e-6) for i in range(10))


def test_colour_images_read_as_rgb_and_resize_to_the_target_size(tmp_path):
    root = tree(tmp_path, channels=3, suffix=".jpg")
    Image.fromarray(pixels(0, 99, (20, 16), 3)).save(root / "cat" / "big.jpg")
    cfg = images_cfg(root, image_size=[8, 6])
    assert describe(cfg).input_shape == (8, 6, 3)
    assert prepare(cfg).x("train").shape[1:] == (8, 6, 3)
    assert describe(images_cfg(root, image_size=[8, 6], color_mode="grayscale")).input_shape == (8, 6)


def test_one_colour_image_makes_auto_read_the_folder_as_rgb(tmp_path):
    root = tree(tmp_path)
    Image.fromarray(pixels(1, 50, channels=3)).save(root / "dog" / "colour.png")
    assert describe(images_cfg(root)).input_shape == (12, 10, 3)


def test_the_data_key_follows_the_folder_content_and_ignores_image_keys_elsewhere(tmp_path):
    root = tree(tmp_path)
    study = {"study": "imgs", "seeds": [1], "dataset": {"name": "images", "path": str(root)}}
    before = Study.from_config(study).data_key
    assert Study.from_config(study).data_key == before
    Image.fromarray(pixels(2, 70)).save(root / "emu" / "007.png")  # edit one image
    assert Study.from_config(study).data_key != before
    # a dataset that does not read the image keys keeps its key whatever they say
    plain = {"study": "p", "seeds": [1], "dataset": {"name": "digits"}}
    assert Study.from_config(plain).data_key == Study.from_config({**plain, "dataset": {"name": "digits", "color_mode": "rgb"}}).data_key


def test_a_parquet_table_loads_like_a_csv(tmp_path):
    frame = table()
    path = parquet(tmp_path, frame)
    info = describe(parquet_cfg(path))
    assert info.kind == "tabular" and info.feature_names == ("a", "b", "c")
    split = prepare(parquet_cfg(path))
    assert split.meta["class_names"] == list(CLASSES)
    frame.to_csv(tmp_path / "same.csv", index=False)
    as_csv = prepare({**BASE, "name": "csv", "path": str(tmp_path / "same.csv")})
    for key, array in split.arrays.items():
        np.testing.assert_allclose(array, as_csv.arrays[key], err_msg=key)


def test_integer_and_dictionary_labels_are_classes(tmp_path):
    assert prepare(parquet_cfg(parquet(tmp_path, table(labels=np.arange(60) % 4)))).meta["n_classes"] == 4
    frame = pa.Table.from_pandas(table(), preserve_index=False)
    frame = frame.set_column(3, "label", frame.column("label").dictionary_encode())
    assert prepare(parquet_cfg(parquet(tmp_path, frame))).meta["class_names"] == list(CLASSES)


# --- what is refused, in one line ---------------------------------------------------------------


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's first bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _stray_file(tmp: Path) -> tuple[dict, str]:
    root = tree(tmp)
    Image.fromarray(pixels(0, 0)).save(root / "loose.png")
    return images_cfg(root), "loose.png"


def _one_class(tmp: Path) -> tuple[dict, str]:
    root = tmp / "images"
    (root / "only").mkdir(parents=True)
    Image.fromarray(pixels(0, 0)).save(root / "only" / "a.png")
    return images_cfg(root), "1 class subfolder"


def _empty_class(tmp: Path) -> tuple[dict, str]:
    root = tree(tmp)
    (root / "fox").mkdir()
    return images_cfg(root), "fox"


def _not_an_image(tmp: Path) -> tuple[dict, str]:
    root = tree(tmp)
    (root / "dog" / "notes.txt").write_text("taken on a sunny day")
    return images_cfg(root), "notes.txt"


def _unreadable_image(tmp: Path) -> tuple[dict, str]:
    root = tree(tmp)
    (root / "emu" / "broken.png").write_bytes(b"this is not a png at all")
    return images_cfg(root), "broken.png"


def _truncated_image(tmp: Path) -> tuple[dict, str]:
    root = tree(tmp)
    whole = (root / "cat" / "001.png").read_bytes()
    (root / "cat" / "001.png").write_bytes(whole[: len(whole) // 2])
    return images_cfg(root), "001.png"


def _mixed_sizes(tmp: Path) -> tuple[dict, str]:
    root = tree(tmp)
    Image.fromarray(pixels(0, 50, (20, 20))).save(root / "cat" / "odd.png")
    return images_cfg(root), "image_size"


def _class_of_one_image(tmp: Path) -> tuple[dict, str]:
    root = tree(tmp)
    (root / "fox").mkdir()
    Image.fromarray(pixels(0, 0)).save(root / "fox" / "a.png")
    return images_cfg(root), "'fox'"


def _gif_named_png(tmp: Path) -> tuple[dict, str]:
    root = tree(tmp)
    Image.fromarray(pixels(1, 0)).save(root / "dog" / "anim.png", format="GIF")
    return images_cfg(root), "GIF"


def _bomb(tmp: Path) -> tuple[dict, str]:
    root = tree(tmp)
    (root / "cat" / "bomb.png").write_bytes(png_claiming(60_000, 60_000))
    return images_cfg(root), "bomb.png"


def _sixteen_bit(tmp: Path) -> tuple[dict, str]:
    root = tree(tmp)
    Image.fromarray(np.full((12, 10), 40_000, dtype=np.uint16)).save(root / "emu" / "deep.png")
    return images_cfg(root), "deep.png"


def _folder_is_a_file(tmp: Path) -> tuple[dict, str]:
    path = tmp / "one.png"
    Image.fromarray(pixels(0, 0)).save(path)
    return images_cfg(path), "is a file"


def _csv_named_parquet(tmp: Path) -> tuple[dict, str]:
    path = tmp / "table.parquet"
    table().to_csv(path, index=False)
    return parquet_cfg(path), "not a Parquet file"


def _truncated_parquet(tmp: Path) -> tuple[dict, str]:
    path = parquet(tmp, table())
    path.write_bytes(path.read_bytes()[:-40])
    return parquet_cfg(path), "truncated"


def _no_label_column(tmp: Path) -> tuple[dict, str]:
    return parquet_cfg(parquet(tmp, table().rename(columns={"label": "class"}))), "'label'"


def _text_feature(tmp: Path) -> tuple[dict, str]:
    frame = table()
    frame["b"] = "x"
    return parquet_cfg(parquet(tmp, frame)), "'b'"


def _missing_labels(tmp: Path) -> tuple[dict, str]:
    frame = table()
    frame.loc[[4, 9], "label"] = None
    return parquet_cfg(parquet(tmp, frame)), "data rows 5, 10"


def _empty_table(tmp: Path) -> tuple[dict, str]:
    return parquet_cfg(parquet(tmp, table().iloc[:0])), "0 rows"


def _only_the_label(tmp: Path) -> tuple[dict, str]:
    return parquet_cfg(parquet(tmp, table()[["label"]])), "only the label column"


def _repeated_column(tmp: Path) -> tuple[dict, str]:
    arrays = [pa.array(np.arange(60.0)), pa.array(np.arange(60.0)), pa.array(np.arange(60) % 3)]
    return parquet_cfg(parquet(tmp, pa.Table.from_arrays(arrays, names=["a", "a", "label"]))), "'a' appears 2 times"


def _nested_feature(tmp: Path) -> tuple[dict, str]:
    frame = pa.Table.from_pandas(table(), preserve_index=False)
    frame = frame.append_column("tags", pa.array([[1, 2]] * 60))
    return parquet_cfg(parquet(tmp, frame)), "'tags'"


CASES: list[tuple[str, Callable[[Path], tuple[dict, str]]]] = [
    ("images: a file beside the class folders", _stray_file),
    ("images: one class folder", _one_class),
    ("images: an empty class folder", _empty_class),
    ("images: a non-image file", _not_an_image),
    ("images: an unreadable image", _unreadable_image),
    ("images: a truncated image", _truncated_image),
    ("images: mixed sizes, no target size", _mixed_sizes),
    ("images: a class folder with one image", _class_of_one_image),
    ("images: a GIF under a .png name", _gif_named_png),
    ("images: a header claiming 3.6 billion pixels", _bomb),
    ("images: a 16-bit image", _sixteen_bit),
    ("images: the path is a file", _folder_is_a_file),
    ("parquet: a CSV under a .parquet name", _csv_named_parquet),
    ("parquet: truncated", _truncated_parquet),
    ("parquet: no label column", _no_label_column),
    ("parquet: a text feature", _text_feature),
    ("parquet: rows without a label", _missing_labels),
    ("parquet: no rows", _empty_table),
    ("parquet: only the label column", _only_the_label),
    ("parquet: a repeated column name", _repeated_column),
    ("parquet: a nested column", _nested_feature),
]


@pytest.mark.parametrize(("case", "build"), CASES, ids=[case for case, _ in CASES])
def test_bad_images_and_tables_are_one_line_naming_what_is_wrong(tmp_path, case, build):
    cfg, fragment = build(tmp_path)
    with pytest.raises(DataError) as error:
        describe(cfg)
        prepare(cfg)
    message = str(error.value)
    assert "\n" not in message
    assert fragment in message, message
    assert Path(cfg["path"]).name in message or "'fox'" in message, message
