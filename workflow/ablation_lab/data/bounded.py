"""Bounded reads of a user's data file: what a file claims about itself is checked before it is trusted.

A data file is read unattended, at plan time and in `python -m ablation_lab check`, so no read
may block or grow without limit: opening a FIFO for reading waits forever for a writer, a
device such as /dev/zero never ends, a 10 MB gzip can inflate to terabytes, and an .npy header
inside an .npz can claim a 10^11-element array that NumPy would try to allocate. Each of these
is refused here in one DataError line that names the file and the limit, before the expensive
read, within seconds and in a few megabytes of memory.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import math
import os
import stat
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ablation_lab.data.base import DataError

# The most bytes one data file may hold once decompressed (CSV text, the arrays of an .npz, an
# IDX file, a CIFAR-10 batch). The largest dataset the workflow knows, CIFAR-10, is 184 MB of
# arrays; 1 GiB leaves room for a user's own table while a prepare_data job (4 GB at its first
# attempt, rules/data.smk) can still hold the parsed copy. Raise it here for larger data.
MAX_DATA_BYTES = 1 << 30

# The longest CSV header line read while the workflow is parsed (the feature names).
MAX_HEADER_BYTES = 1 << 20

_CHUNK = 1 << 20


def describe_size(n: int) -> str:
    """A byte count as people read it: 1 GiB, 3.2 MiB, 512 bytes."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


_LIMIT = f"MAX_DATA_BYTES = {describe_size(MAX_DATA_BYTES)} in workflow/ablation_lab/data/bounded.py"


def file_kind(mode: int) -> str | None:
    """What a non-regular, non-folder path is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, name in (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def require_regular(path: Path, expected: str) -> int:
    """The file's size, after refusing anything but a regular file (checked with stat, never opened)."""
    try:
        info = os.stat(path)
    except OSError as error:
        raise DataError(f"cannot read {str(path)!r}: {error.strerror}; set dataset.path to {expected}") from None
    kind = file_kind(info.st_mode)
    if kind is not None:
        raise DataError(
            f"{str(path)!r} is not a regular file but {kind}: reading a pipe blocks and a device never ends; set dataset.path to {expected}"
        )
    return info.st_size


def refuse_size(path: Path, size: int, what: str, limit: int = MAX_DATA_BYTES) -> None:
    if size > limit:
        source = _LIMIT if limit == MAX_DATA_BYTES else "the largest official file of its kind, doubled"
        raise DataError(f"{str(path)!r}: {what} is {describe_size(size)}, over the limit of {describe_size(limit)} ({source})")


class _Capped(io.RawIOBase):
    """A read-only stream that refuses (DataError) once more than `limit` bytes have come out of it."""

    def __init__(self, inner: BinaryIO, limit: int, path: Path, what: str) -> None:
        super().__init__()
        self._inner, self._limit, self._path, self._what = inner, limit, path, what
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(min(len(buffer), self._limit + 1 - self.consumed) or 1)
        self.consumed += len(data)
        if self.consumed > self._limit:
            raise DataError(
                f"{str(self._path)!r}: {self._what} is over the limit of {describe_size(self._limit)}"
                + (f" ({_LIMIT})" if self._limit == MAX_DATA_BYTES else "")
            )
        buffer[: len(data)] = data
        return len(data)


_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}

COMPRESSED = (".gz", ".bz2", ".xz", ".zip")

_DECODE_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile, ValueError)


def open_decompressed(path: Path) -> BinaryIO:
    """The file's bytes as pandas would read them: gzip, bz2, xz or a one-member zip decompressed."""
    suffix = path.suffix.lower()
    if suffix in _OPENERS:
        return _OPENERS[suffix](path, "rb")
    if suffix == ".zip":
        archive = zipfile.ZipFile(path)
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) != 1:
            raise DataError(f"{str(path)!r} holds {len(members)} files; a zipped CSV must hold exactly one")
        refuse_size(path, members[0].file_size, f"its member {members[0].filename!r} (uncompressed)")
        return archive.open(members[0])
    return open(path, "rb")


def read_head(path: Path, n: int) -> bytes:
    """The first n decompressed bytes of the file (fewer if it is shorter)."""
    try:
        with open_decompressed(path) as handle:
            return handle.read(n)
    except DataError:
        raise
    except _DECODE_ERRORS as error:
        raise DataError(f"cannot read {str(path)!r} ({path.suffix} compressed, truncated?): {error}") from None


def check_text_size(path: Path) -> None:
    """Refuse CSV text over MAX_DATA_BYTES: from the file size, or by inflating a compressed file
    through a counter (constant memory) before pandas reads it."""
    size = require_regular(path, "a CSV file")
    if path.suffix.lower() not in COMPRESSED:
        refuse_size(path, size, "the file")
        return
    try:
        with open_decompressed(path) as inner:
            capped = _Capped(inner, MAX_DATA_BYTES, path, f"its {path.suffix} content, decompressed,")
            while capped.read(_CHUNK):
                pass
    except DataError:
        raise
    except _DECODE_ERRORS as error:
        raise DataError(f"cannot read {str(path)!r} ({path.suffix} compressed, truncated?): {error}") from None


def npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Key -> (shape, dtype) of every array of an .npz, from the .npy headers alone.

    Each claimed array size is checked against MAX_DATA_BYTES and against what the zip member
    really holds (its uncompressed size), so NumPy never allocates for a size a file only claims.
    """
    arrays: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if not member.filename.endswith(".npy"):
                    continue
                key = member.filename.removesuffix(".npy")
                with archive.open(member) as handle:
                    version = np.lib.format.read_magic(handle)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(handle)
                    header_end = handle.tell()
                if dtype.hasobject:
                    raise DataError(
                        f"{str(path)!r}: array {key!r} holds Python objects ({dtype}), which only unpickling could read; "
                        "store numbers or fixed-width strings"
                    )
                claimed = math.prod(shape) * dtype.itemsize
                refuse_size(path, claimed, f"array {key!r} of shape {shape} ({dtype})")
                if claimed > member.file_size - header_end:
                    raise DataError(
                        f"{str(path)!r}: array {key!r} claims shape {shape} ({describe_size(claimed)}) but its member holds "
                        f"{describe_size(member.file_size - header_end)}; the file is truncated or not written by np.savez"
                    )
                total += claimed
                arrays[key] = (tuple(shape), dtype)
    except DataError:
        raise
    except (*_DECODE_ERRORS, KeyError) as error:
        raise DataError(f"cannot read {str(path)!r} as a NumPy .npz archive (truncated or not an npz?): {error}") from None
    refuse_size(path, total, "the sum of its arrays")
    return arrays
