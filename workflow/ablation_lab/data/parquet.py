"""A user's Parquet table: `dataset: {name: parquet, path: ..., label_column: ...}`.

Parquet carries its schema and row counts in a footer, so everything the workflow must know
before a job runs (the feature names, that every feature is numeric, how large the table is
once read) comes from the footer alone, and a bad table is refused in one line naming the file
and the column before a single row is decoded. The guarantees are the CSV reader's: the label
column named by `dataset.label_column`, every other column a numeric feature, no row without a
label, the size bounded by MAX_DATA_BYTES.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ablation_lab.data.base import DataError, DatasetInfo, RawData, refuse_missing_labels
from ablation_lab.data.bounded import read_head, refuse_size
from ablation_lab.messages import listing
from ablation_lab.specs import DataSpec

PARQUET_EXPECTED = "a Parquet table with one row per example and a label column (dataset.label_column)"

_MAGIC = b"PAR1"


def _require_parquet(path: Path) -> None:
    """Refuse, from its first and last bytes, a file that is not Parquet (a CSV renamed, a truncated copy)."""
    head = read_head(path, 4)
    try:
        with open(path, "rb") as handle:
            handle.seek(-4, 2)
            tail = handle.read(4)
    except OSError as error:
        raise DataError(f"cannot read {str(path)!r}: {error}") from None
    if head != _MAGIC:
        raise DataError(
            f"{str(path)!r} is not a Parquet file (it starts with {head!r}, not {_MAGIC!r}); set dataset.name to the format it is in"
        )
    if tail != _MAGIC:
        raise DataError(f"{str(path)!r} is a truncated Parquet file (no footer: it ends with {tail!r}); write it again")


def open_parquet(path: str | None) -> tuple[Path, Any]:
    """The file and its `pyarrow.parquet.ParquetFile`: the footer read, no row decoded."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ablation_lab.data.files import require_file

    source = require_file(path, "parquet", PARQUET_EXPECTED)
    _require_parquet(source)
    try:
        return source, pq.ParquetFile(source)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise DataError(f"cannot read {str(source)!r} as Parquet: {error}") from None


def _is_number(kind: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind) or pa.types.is_decimal(kind))


def parquet_features(schema: Any, label: str, source: Path) -> list[str]:
    """Feature column names from the table's schema (`pyarrow.Schema`), after the checks a schema allows."""
    names = [str(name) for name in schema.names]
    where = repr(str(source))
    repeated = [(name, count) for name, count in Counter(names).items() if count > 1]
    if repeated:
        name, count = repeated[0]
        raise DataError(f"{where}: column {name!r} appears {count} times; rename or drop the duplicate")
    if label not in names:
        raise DataError(f"{where} has no label column {label!r} (dataset.label_column); its columns are {listing(names)}")
    features = [name for name in names if name != label]
    if not features:
        raise DataError(f"{where} has only the label column {label!r}; add feature columns (one per input) next to it")
    text = [(name, schema.field(name).type) for name in features if not _is_number(schema.field(name).type)]
    if text:
        name, kind = text[0]
        others = f"; also not numeric: {', '.join(n for n, _ in text[1:])}" if len(text) > 1 else ""
        raise DataError(f"{where}: feature column {name!r} is of type {kind}, not numeric{others}; encode it as numbers or drop it")
    label_type = schema.field(label).type
    if not (_is_number(label_type) or str(label_type) in ("string", "large_string") or str(label_type).startswith("dictionary")):
        raise DataError(f"{where}: label column {label!r} is of type {label_type}; labels must be integers or class names")
    return features


def _refuse_large(table: Any, features: list[str], path: Path) -> None:
    """The rows as float64 features, and the columns as stored once decompressed, are both bounded."""
    metadata = table.metadata
    refuse_size(path, metadata.num_rows * (len(features) + 1) * 8, f"{metadata.num_rows} rows x {len(features)} features as float64")
    stored = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    refuse_size(path, stored, "the table's columns, uncompressed")


def describe_parquet(cfg: DataSpec) -> DatasetInfo:
    """The feature names, from the footer: what the Snakefile needs to name input-ablation variants."""
    source, table = open_parquet(cfg.path)
    features = parquet_features(table.schema_arrow, cfg.label_column, source)
    return DatasetInfo("tabular", (len(features),), tuple(features))


def read_user_parquet(cfg: DataSpec) -> RawData:
    """The features as float64 and the labels as written (integers or class names)."""
    import pyarrow as pa

    path, table = open_parquet(cfg.path)
    label = cfg.label_column
    features = parquet_features(table.schema_arrow, label, path)
    _refuse_large(table, features, path)
    if table.metadata.num_rows == 0:
        raise DataError(f"{str(path)!r} has a schema but no examples (0 rows); add one row per example")
    try:
        frame = table.read(columns=[*features, label]).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as error:
        raise DataError(f"cannot read {str(path)!r} as Parquet (damaged?): {error}") from None
    refuse_missing_labels(frame[label].isna().to_numpy(), label, path, "counting from 1")
    x = frame[features].to_numpy(dtype=np.float64, na_value=np.nan)
    return RawData(
        x, np.asarray(frame[label].to_numpy()), DatasetInfo("tabular", (len(features),), tuple(features)), source={"file": str(path)}
    )
