"""A folder of images with one subfolder per class: what `keras.utils.image_dataset_from_directory` reads.

`dataset: {name: images, path: <folder>}`. The class names are the subfolder names (sorted,
as Keras sorts them) and appear in the report; every image is a PNG or JPEG, read as 8-bit
grayscale or RGB and, when `dataset.image_size` is set, resized to it.

The folder is indexed from file headers alone (Pillow reads an image's size and mode without
decoding it), so the workflow can name the input shape while the Snakefile is parsed and
refuse a bad folder in one line before any job runs: a file that is not an image, an image
that cannot be read, sizes that differ without a target size, a class folder with too few
images (the split's own check, naming the class). The decoded arrays are bounded by
MAX_DATA_BYTES before the first pixel is decoded.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ablation_lab.data.base import DataError, DatasetInfo, RawData, count_of
from ablation_lab.data.bounded import refuse_size, require_regular
from ablation_lab.specs import DataSpec

IMAGES_EXPECTED = (
    "a folder holding one subfolder per class, each with that class's PNG or JPEG images "
    "(the layout keras.utils.image_dataset_from_directory reads)"
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# Pillow's formats for those suffixes; a .png that is really a GIF is refused by name.
_FORMATS = {"PNG", "JPEG", "MPO"}  # MPO: a JPEG with a second (preview) frame, as many cameras write

# One image of more pixels than this is refused from its header: a 100-byte PNG can claim
# 60,000 x 60,000 pixels and inflate to gigabytes (Pillow's own guard warns at 89 million).
MAX_IMAGE_PIXELS = 50_000_000

# Pillow modes read as one 8-bit channel; other 8-bit modes (RGB, RGBA, P, CMYK, YCbCr) as RGB.
_GRAY_MODES = {"1", "L", "LA"}
_DEEP_MODES = {"I", "I;16", "I;16B", "I;16L", "F"}  # 16-bit or float: no loss-free 8-bit reading


@dataclass(frozen=True)
class ImageEntry:
    """One image file as its header describes it."""

    path: Path
    label: str
    width: int
    height: int
    mode: str


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _class_files(folder: Path) -> list[Path]:
    """Every non-hidden file under a class folder, in a stable order; symbolic links to folders are not followed."""
    found: list[Path] = []
    for current, folders, files in os.walk(folder, followlinks=False):
        folders[:] = sorted(f for f in folders if not _hidden(f))
        found += [Path(current) / name for name in sorted(files) if not _hidden(name)]
    return found


def _class_folders(root: Path) -> list[Path]:
    """The class subfolders, after refusing a file that lies beside them (it belongs to no class)."""
    entries = sorted(p for p in root.iterdir() if not _hidden(p.name))
    stray = [p for p in entries if not p.is_dir()]
    if stray:
        raise DataError(
            f"{str(stray[0])!r} lies directly in the dataset folder {str(root)!r}; put every image in its class's subfolder "
            f"({IMAGES_EXPECTED})"
        )
    if len(entries) < 2:
        raise DataError(
            f"{str(root)!r} holds {count_of(len(entries), 'class subfolder')}; a classifier needs at least 2 ({IMAGES_EXPECTED})"
        )
    return entries


def _header(path: Path, label: str) -> ImageEntry:
    """Size and mode from the file's header; nothing is decoded."""
    from PIL import Image, UnidentifiedImageError

    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(
            f"{str(path)!r} is not a PNG or JPEG image (suffix {path.suffix or 'none'!r}); move it out of the dataset folder "
            "or convert it (hidden files, starting with '.', are skipped)"
        )
    require_regular(path, IMAGES_EXPECTED)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                kind, (width, height), mode = image.format, image.size, image.mode
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise DataError(
            f"{str(path)!r}: an image of over {MAX_IMAGE_PIXELS:,} pixels (MAX_IMAGE_PIXELS in {__name__}); shrink it"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{str(path)!r} is not a readable image ({type(error).__name__}: {error}); replace or remove it") from None
    if kind not in _FORMATS:
        raise DataError(f"{str(path)!r} is a {kind} image under a {path.suffix} name; save it as PNG or JPEG")
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(f"{str(path)!r}: {width}x{height} pixels, over MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS:,} ({__name__}); shrink it")
    if mode in _DEEP_MODES:
        raise DataError(f"{str(path)!r}: an image of mode {mode} (16-bit or floating point); save it as an 8-bit PNG or JPEG")
    return ImageEntry(path, label, width, height, mode)


def index_images(path: str | None) -> list[ImageEntry]:
    """Every image of the folder with its class, from headers only; one DataError line for any bad file."""
    from ablation_lab.data.files import require_file

    root = require_file(path, "images", IMAGES_EXPECTED, folder_ok=True)
    if not root.is_dir():
        raise DataError(f"{str(root)!r} is a file; dataset 'images' reads {IMAGES_EXPECTED}")
    entries: list[ImageEntry] = []
    for folder in _class_folders(root):
        files = _class_files(folder)
        if not files:
            raise DataError(f"class folder {str(folder)!r} holds no images; add its PNG or JPEG files or remove the folder")
        entries += [_header(file, folder.name) for file in files]
    return entries


def channels_of(entries: list[ImageEntry], color_mode: str) -> int:
    """1 or 3: `auto` reads the folder as grayscale only when every image is."""
    if color_mode == "grayscale":
        return 1
    if color_mode == "rgb":
        return 3
    return 1 if all(entry.mode in _GRAY_MODES for entry in entries) else 3


def target_size(entries: list[ImageEntry], image_size: list[int] | None) -> tuple[int, int]:
    """(height, width): the configured size, or the one size every image has."""
    if image_size:
        return int(image_size[0]), int(image_size[1])
    first = entries[0]
    for entry in entries[1:]:
        if (entry.width, entry.height) != (first.width, first.height):
            raise DataError(
                f"images differ in size: {str(first.path)!r} is {first.width}x{first.height} (width x height), "
                f"{str(entry.path)!r} is {entry.width}x{entry.height}; set dataset.image_size: [height, width] to resize them all"
            )
    return first.height, first.width


def input_shape(height: int, width: int, channels: int) -> tuple[int, ...]:
    """Grayscale images as (height, width), like the built-in sets; colour ones with their 3 channels."""
    return (height, width) if channels == 1 else (height, width, 3)


def describe_images(cfg: DataSpec) -> DatasetInfo:
    """The input shape and number of classes from the headers: what the Snakefile needs to plan."""
    entries = index_images(cfg.path)
    height, width = target_size(entries, cfg.image_size)
    shape = input_shape(height, width, channels_of(entries, cfg.color_mode))
    return DatasetInfo("image", shape, n_classes=len({entry.label for entry in entries}))


def _decode(entry: ImageEntry, size: tuple[int, int], channels: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(entry.path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as error:  # a header can be sound and the body truncated
        raise DataError(f"{str(entry.path)!r} is not a readable image ({type(error).__name__}: {error}); replace or remove it") from None


def read_image_folder(cfg: DataSpec) -> RawData:
    """The images as uint8 arrays (n, height, width[, 3]) and their class names as labels."""
    entries = index_images(cfg.path)
    height, width = target_size(entries, cfg.image_size)
    channels = channels_of(entries, cfg.color_mode)
    root = Path(str(cfg.path)).expanduser()
    refuse_size(root, len(entries) * height * width * channels, f"{len(entries)} images of {height}x{width}x{channels} decoded")
    x = np.stack([_decode(entry, (height, width), channels) for entry in entries])
    y = np.array([entry.label for entry in entries])
    info = DatasetInfo("image", input_shape(height, width, channels), n_classes=len(set(y)))
    return RawData(x, y, info, source={"folder": str(root), "images": len(entries)})
