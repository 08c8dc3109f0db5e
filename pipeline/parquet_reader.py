"""Reading Parquet files into record batches.

A scalar is a numeric column `x` (null: missing); a vector is a list column
`x` or the columns `x_0` ... `x_{d-1}` (with `column: c`, `c` in place of
`x`). An `int` feature needs an integer
column. Only the configured columns are read; a configured name must be one
column (Parquet allows several of the same name).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from tanhguard.errors import DataError
from tanhguard.pipeline.batch_layout import (
    arrow_schema,
    arrow_value_type,
    batch_rows,
    closest_column,
    conform,
    feature_column,
    one_line,
)
from tanhguard.pipeline.kept_columns import FLAG, with_kept
from tanhguard.transforms.config import Config


def _parquet_plan(path: str, schema: pa.Schema, config: Config) -> dict:
    """Per feature: the Parquet column(s) and whether it is a list column."""
    plan = {}
    names = set(schema.names)
    counts = Counter(schema.names)
    for name in config.features:
        for column in {config.source_column(name), *config.csv_columns(name)}:
            if counts[column] > 1:
                raise DataError(
                    f"{path}: feature `{name}`: the file has {counts[column]} "
                    f"columns named `{column}` (a duplicate name); one is needed"
                )
    for name, feature in config.features.items():
        wanted = arrow_value_type(feature.dtype)
        source = config.source_column(name)
        if feature.is_vector and source in names:
            field = schema.field(source)
            if not (
                pa.types.is_list(field.type) or pa.types.is_large_list(field.type)
            ) or not _numeric_matches(field.type.value_type, wanted):
                raise DataError(
                    f"{path}: feature `{name}`: column `{source}` has type "
                    f"{field.type}; a vector needs a list of "
                    f"{'integers' if feature.dtype == 'int' else 'numbers'}"
                )
            plan[name] = ([source], True)
            continue
        columns = config.csv_columns(name)
        absent = [c for c in columns if c not in names]
        if absent:
            raise DataError(
                f"{path}: feature `{name}`: column(s) {absent} not in the "
                f"file{closest_column(absent, names)}. Columns: {sorted(names)[:12]}"
            )
        for column in columns:
            kind = schema.field(column).type
            if not _numeric_matches(kind, wanted):
                raise DataError(
                    f"{path}: feature `{name}`: column `{column}` has type {kind}; "
                    f"`dtype: {feature.dtype}` needs "
                    f"{'an integer' if feature.dtype == 'int' else 'a numeric'} "
                    f"column{_int_as_float_hint(kind, feature.dtype)}"
                )
        plan[name] = (columns, False)
    return plan


def _int_as_float_hint(kind: pa.DataType, dtype: str) -> str:
    """Why an integer column may be stored as floats, and the ways out."""
    if dtype != "int" or not pa.types.is_floating(kind):
        return ""
    return (
        " (pandas writes an integer column with missing values as floats: "
        "set `dtype: float` for the feature, or write the column as pandas' "
        "nullable `Int64`)"
    )


def _numeric_matches(kind: pa.DataType, wanted: pa.DataType) -> bool:
    if pa.types.is_integer(wanted):
        return pa.types.is_integer(kind)
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def _open_parquet(path: str) -> pq.ParquetFile:
    # Pre-buffering keeps the column chunks it has read (0.5 GB resident for a
    # 450 MB file, against 0.13 GB without) and is slower on local files.
    try:
        return pq.ParquetFile(path, pre_buffer=False)
    except (pa.ArrowException, OSError) as error:
        raise DataError(
            f"{path}: not a readable Parquet file: {one_line(error)}"
        ) from None


def check_parquet(path: str, config: Config) -> bool:
    """Checks a Parquet file's columns against the config; True if it has rows.

    Raises:
      DataError: the file is not Parquet, or a configured column is absent,
        of the wrong type, or more than one column has its name.
    """
    parquet = _open_parquet(path)
    _parquet_plan(path, parquet.schema_arrow, config)
    return parquet.metadata.num_rows > 0


def kept_parquet_types(path: str, keep: Sequence[str]) -> dict[str, pa.DataType]:
    """The types of the columns `keep` in the file.

    Raises:
      DataError: the file is not Parquet, or lacks one of them or has it twice.
    """
    return _kept_types(path, _open_parquet(path).schema_arrow, keep)


def _kept_types(
    path: str, schema: pa.Schema, keep: Sequence[str]
) -> dict[str, pa.DataType]:
    """`kept_parquet_types` of a file whose schema is `schema`."""
    counts = Counter(schema.names)
    for name in keep:
        if counts[name] != 1:
            found = "not in the file" if not counts[name] else "twice in the file"
            hint = closest_column([name], schema.names) if not counts[name] else ""
            raise DataError(f"{path}: {FLAG} `{name}`: {found}{hint}")
    return {name: schema.field(name).type for name in keep}


def read_parquet_batches(
    path: str, config: Config, rows: int | None = None, keep: pa.Schema | None = None
) -> Iterator[pa.RecordBatch]:
    """Streams a Parquet file, only the configured columns, in batches of
    `rows` rows (by default `batch_rows`); with `keep`, its columns follow,
    cast to its types (`kept_columns`).

    Raises:
      DataError: as `check_parquet`; or a value does not fit the feature (an
        unsigned integer above int64's maximum for `dtype: int`, a vector of
        the wrong length), naming the row; or the file is corrupt.
    """
    parquet = _open_parquet(path)
    plan = _parquet_plan(path, parquet.schema_arrow, config)
    schema = arrow_schema(config)
    wanted = sorted({c for columns, _ in plan.values() for c in columns})
    if keep is not None:  # the open file's schema: no second read of its footer
        _kept_types(path, parquet.schema_arrow, keep.names)
        wanted += [name for name in keep.names if name not in wanted]
    # List columns come as the file holds them: cast and length-checked.
    from_file = [name for name, (_, is_list) in plan.items() if is_list]
    first_row = 1
    try:
        for batch in parquet.iter_batches(
            batch_size=rows or batch_rows(config), columns=wanted
        ):
            arrays = []
            for name, (columns, is_list) in plan.items():
                if is_list:
                    arrays.append(batch.column(columns[0]))
                else:
                    arrays.append(
                        feature_column(
                            path,
                            name,
                            columns,
                            [batch.column(c) for c in columns],
                            config.features[name].dtype,
                            first_row,
                        )
                    )
            decoded = pa.RecordBatch.from_arrays(
                arrays, names=[field.name for field in schema]
            )
            conformed = conform(path, decoded, config, "row", first_row, from_file)
            if keep is not None:
                kept = [batch.column(name) for name in keep.names]
                where = f"{path}: rows from {first_row}"
                conformed = with_kept(conformed, kept, keep, where)
            yield conformed
            first_row += batch.num_rows
    except (pa.ArrowException, OSError) as error:
        raise DataError(
            f"{path}: cannot read the Parquet file after {first_row - 1} row(s): "
            f"{one_line(error)}"
        ) from None
