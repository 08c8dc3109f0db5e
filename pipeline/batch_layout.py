"""The record-batch layout every reader produces and the analysis consumes.

Each configured feature is a `list<float32>` (or `list<int64>`) column named
after the feature: a row holds one value for a scalar, d values for a vector
`[d]`, and no value when missing. TFT reads these batches through
`tensor_adapter_config` (a `SparseTensor` per feature, as a
`tf.io.VarLenFeature` gives, keyed by the feature's source column, as TFX's
ExampleGen keys it), and the batch job's own passes through `dense_batch`
(numpy, the same view the graph's `densify` gives).

Also what every reader shares: `one_line` (a library's message, fit for one
line of a `DataError`), `is_gzip` and `gunzipped_chunks`, `closest_column`,
`csv_field`, and the checks of integer values against int64.
"""

from __future__ import annotations

import difflib
import zlib
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tanhguard.errors import DataError
from tanhguard.pipeline import files as fs
from tanhguard.transforms.config import Config

if TYPE_CHECKING:
    import tensorflow as tf
    from tfx_bsl.tfxio import tensor_adapter

INT64_MAX = np.iinfo(np.int64).max
# Values (rows x each row's values) of a record batch, as the readers give
# them to the jobs (`batch_rows`: Arrow's CSV blocks and tf.data's batches
# are joined, `coalesced`). Every batch costs the analysis a fixed amount of
# Python per column (Beam's element, the thread pool's task, each numpy
# call): with 65,536-row batches, the last pass over 10M rows x 10 columns
# took 1.43 s for Parquet and 1.38-1.40 s for CSV, against 1.24-1.25 s and
# 1.08-1.24 s with 262,144 (phase breakdown of `benchmarks/bench_analyze.py`,
# alternating runs). Counted in values, not rows: the transform job's
# inputs and outputs grow with rows x values (its sparse indices take 16
# bytes a value), so wide rows get fewer rows a batch. 10 MiB as float32.
BATCH_VALUES = 10 << 18


def row_width(config: Config) -> int:
    """The values a row holds: every feature's elements (D in `dense_batch`)."""
    return sum(feature.size for feature in config.features.values())


def batch_rows(config: Config, values: int = BATCH_VALUES) -> int:
    """Rows of a record batch for `config`'s features: `values` over the
    values of a row (by default 262,144 for ten scalars), at least 1."""
    return max(1, values // max(1, row_width(config)))


GZIP_MAGIC = b"\x1f\x8b"
MAX_MESSAGE = 300  # characters of a library's message quoted in an error


def csv_field(text: str, quote_empty: bool = False) -> str:
    """`text` as one CSV field that reads back as the same text: as it is,
    or quoted (`"` doubled inside) when it holds a quote, comma or line end,
    starts or ends with a blank, or is empty and `quote_empty` (an empty
    line is skipped: a one-column file needs `""` for an empty cell)."""
    plain = text.strip(" \t") == text and not any(c in text for c in '",\r\n')
    if plain and (text or not quote_empty):
        return text
    return '"' + text.replace('"', '""') + '"'


def closest_column(absent: Sequence[str], columns: Collection[str]) -> str:
    """` (did you mean `dist_km`?)` for the file's column closest to an
    absent configured one (difflib's ratio of 0.6 or more), or ""."""
    for column in absent:
        close = difflib.get_close_matches(column, list(columns), n=1, cutoff=0.6)
        if close:
            return f" (did you mean `{close[0]}`?)"
    return ""


def one_line(message: str, limit: int = MAX_MESSAGE) -> str:
    """`message` on one line (whitespace runs become one space), shortened to
    `limit` characters: a library's message quoted in a `DataError` may hold a
    whole row or record."""
    text = " ".join(str(message).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def is_gzip(path: str) -> bool:
    """Whether the file starts with gzip's magic bytes (whatever its name)."""
    with fs.open_file(path) as handle:
        return handle.read(2) == GZIP_MAGIC


GUNZIP_CHUNK = 1 << 20


def gunzipped_chunks(path: str) -> Iterator[bytes]:
    """Every decompressed byte of the gzip file `path` (each of its members),
    in chunks of at most `GUNZIP_CHUNK`, with zlib. Unlike `gzip.GzipFile`,
    which drops the read that meets a cut, it yields everything before the
    cut, then raises.

    Raises:
      EOFError: the last member ends before its end marker (truncated).
      zlib.error: the data is corrupt.
    """
    in_member = False
    with fs.open_file(path) as handle:
        decompressor = zlib.decompressobj(wbits=31)
        while chunk := handle.read(GUNZIP_CHUNK):
            while chunk:
                in_member = True
                # Bounded output: a highly compressed chunk stays small.
                yield decompressor.decompress(chunk, GUNZIP_CHUNK)
                chunk = decompressor.unconsumed_tail
                if decompressor.eof:
                    in_member = False
                    chunk = decompressor.unused_data
                    decompressor = zlib.decompressobj(wbits=31)
    if in_member:
        raise EOFError("the gzip stream ends before its end marker")


def coalesced(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """Consecutive `batches` (of one schema) joined into batches of at least
    `rows` rows; the last may hold fewer. A batch that holds enough is
    passed on as it is."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield _joined(pending)
            pending, count = [], 0
    if pending:
        yield _joined(pending)


def _joined(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1 or not any(batch.num_rows for batch in batches):
        return batches[0]
    if hasattr(pa, "concat_batches"):  # pyarrow 19 and later
        return pa.concat_batches(batches)
    table = pa.Table.from_batches(batches).combine_chunks()
    return pa.RecordBatch.from_arrays(
        [column.chunk(0) for column in table.columns], schema=table.schema
    )


def arrow_value_type(dtype: str) -> pa.DataType:
    """The Arrow type of a feature's values: int64 for `dtype: int`."""
    return pa.int64() if dtype == "int" else pa.float32()


def arrow_schema(config: Config) -> pa.Schema:
    """The record batch schema: one list column per configured feature."""
    return pa.schema(
        [
            pa.field(name, pa.list_(arrow_value_type(feature.dtype)))
            for name, feature in config.features.items()
        ]
    )


def raw_feature_spec(config: Config) -> dict[str, tf.io.VarLenFeature]:
    """The raw features as `tf.Example` parsing specs: a `VarLenFeature` each
    (float32, or int64 for `dtype: int`), so an absent value stays missing.

    Keyed by each feature's source column (`Config.source_column`: its
    `column`, else its name), the `tf.Example` key, as the raw metadata and
    the graph's inputs are.
    """
    import tensorflow as tf  # here: the analysis driver runs without it

    return {
        config.source_column(name): tf.io.VarLenFeature(
            tf.int64 if feature.dtype == "int" else tf.float32
        )
        for name, feature in config.features.items()
    }


def tensor_adapter_config(config: Config) -> tensor_adapter.TensorAdapterConfig:
    """How TFT turns the record batches into tensors: a `SparseTensor` each.

    The same representation a `tf.io.VarLenFeature` gives when parsing
    `tf.Example`s, so missing values stay distinguishable from NaN. The
    tensors are keyed by source column (the graph's raw inputs, see
    `raw_feature_spec`); each reads the record batch column of its feature.
    """
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tfx_bsl.tfxio import tensor_adapter

    representations = {
        config.source_column(name): schema_pb2.TensorRepresentation(
            varlen_sparse_tensor=schema_pb2.TensorRepresentation.VarLenSparseTensor(
                column_name=name
            )
        )
        for name in config.features
    }
    return tensor_adapter.TensorAdapterConfig(arrow_schema(config), representations)


def _column_values(array: pa.Array, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """A column's values (NaN or 0 where empty) and its validity mask."""
    if array.null_count == 0:
        valid = np.ones(len(array), dtype=bool)
    else:
        valid = np.asarray(array.is_valid(), dtype=bool)
        array = array.fill_null(0 if dtype == "int" else np.nan)
    if dtype == "int":
        return np.asarray(array, dtype=np.int64), valid
    return np.asarray(array, dtype=np.float32), valid


def feature_column(
    path: str,
    name: str,
    columns: Sequence[str],
    arrays: Sequence[pa.Array],
    dtype: str,
    first_row: int,
) -> pa.ListArray:
    """The `list<...>` column of one feature from its columns `arrays` (one
    per element) for a block of rows starting at row `first_row`.

    Raises:
      DataError: an integer vector with some elements empty, or an unsigned
        value above int64's maximum for an `int` feature.
    """
    if dtype == "int":
        for column, array in zip(columns, arrays, strict=True):
            big = _beyond_int64(array)
            if big is not None:
                raise DataError(
                    f"{path}: row {first_row + big}: feature `{name}`: column "
                    f"`{column}`: {array[big].as_py()} {_BEYOND_INT64}"
                )
    value_type = arrow_value_type(dtype)
    if len(arrays) == 1:  # a scalar: one value per row, none where empty
        values, valid = _column_values(arrays[0], dtype)
        if valid.all():
            offsets = np.arange(len(values) + 1, dtype=np.int32)
        else:
            values = values[valid]
            offsets = np.zeros(len(valid) + 1, dtype=np.int32)
            np.cumsum(valid, out=offsets[1:])
        return pa.ListArray.from_arrays(
            pa.array(offsets), pa.array(values, type=value_type)
        )
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
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(kept, type=value_type))


_BEYOND_INT64 = "is above int64's maximum (2^63 - 1), which `dtype: int` holds"


def _beyond_int64(values: pa.Array) -> int | None:
    """The index of the first unsigned 64-bit value above int64's maximum
    (numpy would wrap it to a negative number), or None."""
    if values.type != pa.uint64() or len(values) == 0:
        return None
    big = pc.greater(values, pa.scalar(INT64_MAX, pa.uint64())).fill_null(False)
    if not pc.any(big).as_py():
        return None
    return int(np.argmax(np.asarray(big, dtype=bool)))


def _cast_list(
    path: str, column: pa.Array, target: pa.DataType, noun: str, first: int, name: str
) -> pa.Array:
    """A list column cast to `list<target>`: integers to float32 as numpy
    would (rounding: float32 holds integers exactly only up to 2^24); unsigned
    integers above int64's maximum to int64 are an error naming the row."""
    values_type = column.type.value_type
    if pa.types.is_integer(values_type) and pa.types.is_floating(target.value_type):
        return column.cast(target, safe=False)
    if values_type == pa.uint64() and pa.types.is_integer(target.value_type):
        values = column.flatten()
        big = _beyond_int64(values)
        if big is not None:
            row = pc.list_parent_indices(column)[big].as_py()
            raise DataError(
                f"{path}: {noun} {first + row}: feature `{name}`: "
                f"{values[big].as_py()} {_BEYOND_INT64}"
            )
    return column.cast(target)


def conform(
    path: str,
    batch: pa.RecordBatch,
    config: Config,
    noun: str,
    first: int,
    names: Collection[str] | None = None,
) -> pa.RecordBatch:
    """Casts decoded list columns to the layout, checking vector lengths.

    Only the columns of `names` (default: every feature) are cast and checked;
    the others must be in the layout already (`feature_column` builds them so).

    Raises:
      DataError: a row (`noun` `first` + i) holds a number of values other
        than the feature's size (or none), or, for an `int` feature, an
        unsigned value above int64's maximum.
    """
    schema = arrow_schema(config)
    arrays = []
    for name, feature in config.features.items():
        if names is not None and name not in names:
            arrays.append(batch.column(name))
            continue
        target = schema.field(name).type
        column = _cast_list(path, batch.column(name), target, noun, first, name)
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        lengths = np.nan_to_num(lengths.astype(np.float64), nan=0.0)
        bad = (lengths != 0) & (lengths != feature.size)
        if bad.any():
            index = int(np.argmax(bad))
            raise DataError(
                f"{path}: {noun} {first + index}: feature `{name}`: holds "
                f"{int(lengths[index])} value(s); `shape` needs "
                f"{feature.size} (or none: missing)"
            )
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def dense_batch(batch: pa.RecordBatch, config: Config) -> list[np.ndarray]:
    """A record batch -> `[x, missing]`, the first phase's input.

    `x` is float32 `[rows, D]`, every feature's elements side by side in
    config order, NaN where a value is missing; `missing` is its bool mask.
    The same as `tanhguard.transforms.mappers.densify` in the graph: a row
    with fewer values than the feature's size misses its trailing elements.
    The readers have checked that no row holds more (`conform`).

    Both are column-major (Fortran order), as Arrow holds the columns: the
    analysis works column by column, and `x.T` is then contiguous without a
    copy. Laying the batch out row by row and transposing it back cost 0.6 s
    per pass at 10M rows x 10 columns, against 0.04 s.
    """
    rows = batch.num_rows
    width = row_width(config)
    x = np.empty((rows, width), np.float32, order="F")
    missing = np.zeros((rows, width), bool, order="F")
    start = 0
    for name, feature in config.features.items():
        stop = start + feature.size
        column = batch.column(name)
        values = column.flatten()
        if len(values) == rows * feature.size:  # every row holds its values
            x[:, start:stop] = np.asarray(values, dtype=np.float32).reshape(rows, -1)
            start = stop
            continue
        lengths = pc.list_value_length(column).fill_null(0)
        lengths = np.asarray(lengths, dtype=np.int64)
        values = np.asarray(values, dtype=np.float32)
        if feature.size == 1:
            present = (lengths == 1)[:, np.newaxis]
        else:
            present = np.arange(feature.size)[np.newaxis, :] < lengths[:, np.newaxis]
        part = np.full((rows, feature.size), np.nan, np.float32)
        part[present] = values
        x[:, start:stop] = part
        missing[:, start:stop] = ~present
        start = stop
    return [x, missing]


def fit_values(x: np.ndarray, config: Config) -> np.ndarray:
    """The fit phase's input from a batch's `dense_batch` values `x` (changed
    in place): float32 `[rows, D]` with the inf policy applied (`inf:
    missing` turns +-Inf into NaN), NaN where a value is missing: the values
    the graph's fit phase sees (it casts them to float64, exactly, as the fit
    phase does per column)."""
    to_nan = np.concatenate(
        [
            np.full(feature.size, feature.inf == "missing")
            for feature in config.features.values()
        ]
    )
    if to_nan.any():
        x[:, to_nan] = np.where(np.isinf(x[:, to_nan]), np.nan, x[:, to_nan])
    return x
