"""Reading CSV files into record batches (`batch_layout`).

The first row is a header; a scalar `x` is column `x`, a vector `[d]` the
columns `x_0` ... `x_{d-1}`. A cell is a number, `nan`, `inf`, `-inf`, or
empty (missing). Only configured columns are read.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.csv as pa_csv
import tensorflow as tf

from tanhguard.errors import DataError
from tanhguard.pipeline.batch_layout import (
    arrow_schema,
    arrow_value_type,
    feature_column,
)
from tanhguard.transforms.config import Config

# Arrow's CSV block size: each block becomes one record batch (one TFT batch).
# The streaming reader reads several blocks ahead: on a 1 GB file, 16 MB blocks
# kept 0.7 GB resident, 4 MB blocks 0.27 GB, at the same speed.
DEFAULT_BLOCK_SIZE = 4 << 20


_CELL_RULE = (
    " (cells must be numbers, `nan`, `inf`, `-inf` or empty; rows are numbered "
    "from 1 after the header)"
)


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
        column: arrow_value_type(config.features[name].dtype)
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
                feature_column(
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
