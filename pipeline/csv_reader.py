"""Reading CSV files into Arrow record batches in the layout TFT consumes.

Each configured feature becomes a `list<float32>` (or `list<int64>`) column: a
row holds one value for a scalar, d values for a vector `[d]`, and no value
when the cell is empty (missing). Only configured columns are read.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.tfxio import tensor_adapter

from tanhguard.transforms.config import Config

# Arrow's CSV block size: each block becomes one record batch (one TFT batch).
# The streaming reader reads several blocks ahead: on a 1 GB file, 16 MB blocks
# kept 0.7 GB resident, 4 MB blocks 0.27 GB, at the same speed.
DEFAULT_BLOCK_SIZE = 4 << 20


_CELL_RULE = (
    " (cells must be numbers, `nan`, `inf`, `-inf` or empty; rows are numbered "
    "from 1 after the header)"
)


class DataError(ValueError):
    """Input data that cannot be read; the message names the file and row."""


def _arrow_value_type(dtype: str) -> pa.DataType:
    return pa.int64() if dtype == "int" else pa.float32()


def arrow_schema(config: Config) -> pa.Schema:
    """The record batch schema: one list column per configured feature."""
    return pa.schema(
        [
            pa.field(name, pa.list_(_arrow_value_type(feature.dtype)))
            for name, feature in config.features.items()
        ]
    )


def raw_feature_spec(config: Config) -> dict[str, tf.io.VarLenFeature]:
    """The raw features as `tf.Example` parsing specs: a `VarLenFeature` each
    (float32, or int64 for `dtype: int`), so an absent value stays missing."""
    return {
        name: tf.io.VarLenFeature(tf.int64 if feature.dtype == "int" else tf.float32)
        for name, feature in config.features.items()
    }


def tensor_adapter_config(config: Config) -> tensor_adapter.TensorAdapterConfig:
    """How TFT turns the record batches into tensors: a `SparseTensor` each.

    The same representation a `tf.io.VarLenFeature` gives when parsing
    `tf.Example`s, so missing values stay distinguishable from NaN.
    """
    representations = {
        name: schema_pb2.TensorRepresentation(
            varlen_sparse_tensor=schema_pb2.TensorRepresentation.VarLenSparseTensor(
                column_name=name
            )
        )
        for name in config.features
    }
    return tensor_adapter.TensorAdapterConfig(arrow_schema(config), representations)


def expand_pattern(pattern: str) -> list[str]:
    """The files a glob matches, sorted.

    Raises:
      DataError: Nothing matches.
    """
    files = sorted(tf.io.gfile.glob(pattern))
    files = [path for path in files if not tf.io.gfile.isdir(path)]
    if not files:
        raise DataError(f"{pattern}: no file matches this path or glob")
    return files


def check_header(path: str, config: Config) -> bool:
    """Checks that a CSV's header names every configured column.

    Returns:
      Whether the file has at least one data row after the header.

    Raises:
      DataError: The file is empty, a configured column is not in its header,
        or the header has more elements of a vector than its `shape`.
    """
    with tf.io.gfile.GFile(path, "r") as handle:
        first = handle.readline()
        second = handle.readline()
    if not first.strip():
        raise DataError(f"{path}: the file is empty; expected a header row first")
    header = next(csv.reader(io.StringIO(first)))
    header = [column.strip() for column in header]
    for name in config.features:
        absent = [c for c in config.csv_columns(name) if c not in header]
        if absent:
            shown = ", ".join(header[:12]) + (", ..." if len(header) > 12 else "")
            raise DataError(
                f"{path}: feature `{name}`: column(s) {absent} not in the header. "
                f"The first row must be a header naming the columns; found: {shown}"
            )
        feature = config.features[name]
        if feature.is_vector and f"{name}_{feature.size}" in header:
            found = sum(1 for column in header if column.startswith(f"{name}_"))
            raise DataError(
                f"{path}: feature `{name}`: `shape` is [{feature.size}] but the header "
                f"also has column `{name}_{feature.size}` ({found} columns start "
                f"with `{name}_`). Set `shape` to the vector's length."
            )
    return bool(second.strip())


def _column_values(array: pa.Array, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """A column's values (NaN or 0 where empty) and its validity mask."""
    valid = np.asarray(array.is_valid(), dtype=bool)
    if dtype == "int":
        values = np.asarray(array.fill_null(0), dtype=np.int64)
    else:
        values = np.asarray(array.fill_null(np.nan), dtype=np.float32)
    return values, valid


def _feature_column(
    path: str,
    name: str,
    columns: Sequence[str],
    arrays: Sequence[pa.Array],
    dtype: str,
    first_row: int,
) -> pa.ListArray:
    """Builds the `list<...>` column of one feature for a block of rows."""
    parts = [_column_values(array, dtype) for array in arrays]
    values = np.stack([p[0] for p in parts], axis=1)
    valid = np.stack([p[1] for p in parts], axis=1)
    present = valid.any(axis=1)
    partial = present & ~valid.all(axis=1)
    # A float vector with some empty cells: those elements are NaN.
    if partial.any() and dtype == "int":
        row = first_row + int(np.argmax(partial))
        raise DataError(
            f"{path}: row {row}: feature `{name}`: some of its columns "
            f"{list(columns)} are empty and some are not; an integer vector "
            "must be complete or entirely empty"
        )
    kept = values[present].reshape(-1)
    offsets = np.zeros(len(present) + 1, dtype=np.int32)
    np.cumsum(present * len(columns), out=offsets[1:])
    return pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(kept, type=_arrow_value_type(dtype))
    )


def read_csv_batches(
    path: str, config: Config, block_size: int = DEFAULT_BLOCK_SIZE
) -> Iterator[pa.RecordBatch]:
    """Streams one CSV file as record batches in the layout of `arrow_schema`.

    Cells: a number; `nan`, `inf`, `-inf` (any case); or empty (missing).

    Raises:
      DataError: A cell is not a number of the feature's type, or a configured
        column is missing; the message names the file, row and column.
    """
    columns = {name: config.csv_columns(name) for name in config.features}
    column_types = {
        column: _arrow_value_type(config.features[name].dtype)
        for name, names in columns.items()
        for column in names
    }
    schema = arrow_schema(config)
    try:
        reader = pa_csv.open_csv(
            _open_for_arrow(path),
            read_options=pa_csv.ReadOptions(block_size=block_size),
            convert_options=pa_csv.ConvertOptions(
                include_columns=list(column_types),
                column_types=column_types,
                null_values=[""],
                strings_can_be_null=False,
            ),
        )
        first_row = 1  # data rows are numbered from 1, the header is row 0
        for batch in reader:
            arrays = [
                _feature_column(
                    path,
                    name,
                    names,
                    [batch.column(column) for column in names],
                    config.features[name].dtype,
                    first_row,
                )
                for name, names in columns.items()
            ]
            first_row += batch.num_rows
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        located = _locate_bad_cell(path, column_types)
        if located is not None:
            row, column, cell, kind = located
            raise DataError(
                f"{path}: row {row}: column `{column}`: {cell!r} is not a valid "
                f"{kind}{_CELL_RULE}"
            ) from None
        message = _explain_arrow_error(error, column_types)
        raise DataError(f"{path}: {message}") from None


def _parses(cell: str, dtype: pa.DataType) -> bool:
    if cell == "":
        return True
    try:
        int(cell) if pa.types.is_integer(dtype) else float(cell)
    except ValueError:
        return False
    return True


def _locate_bad_cell(path: str, column_types: dict) -> tuple | None:
    """Finds the first cell Arrow could not convert (only on the error path)."""
    with tf.io.gfile.GFile(path, "r") as handle:
        reader = csv.reader(handle)
        header = [column.strip() for column in next(reader, [])]
        positions = {
            column: header.index(column) for column in column_types if column in header
        }
        for row, cells in enumerate(reader, start=1):
            for column, position in positions.items():
                cell = cells[position].strip() if position < len(cells) else ""
                dtype = column_types[column]
                if not _parses(cell, dtype):
                    kind = "integer" if pa.types.is_integer(dtype) else "number"
                    return row, column, cell, kind
    return None


def _open_for_arrow(path: str):
    """A local path as is (Arrow reads it natively); other filesystems via TF."""
    if "://" not in path:
        return path
    return pa.PythonFile(tf.io.gfile.GFile(path, "rb"), mode="r")


def _explain_arrow_error(error: Exception, column_types: dict) -> str:
    """Arrow's message, with the feature's expected type spelled out."""
    message = str(error).strip()
    hint = ""
    if "conversion error" in message:
        hint = _CELL_RULE
    elif "No match for FieldRef" in message or "not found" in message:
        hint = f" (expected columns: {sorted(column_types)})"
    return message + hint
