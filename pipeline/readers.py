"""Readers for CSV, TFRecord (of `tf.Example`, plain or gzip) and Parquet.

Every reader streams a file as Arrow record batches in one layout (see
`csv_reader.arrow_schema`): a `list<float32>` or `list<int64>` column per
feature, holding d values for a vector and no value when missing. Files are
read one per Beam element, so many files are read in parallel.

Feature layout per format:
  csv       a header; a scalar `x` is column `x`; a vector is `x_0` ... `x_{d-1}`.
  tfrecord  `tf.Example`s; `x` is a float_list (int64_list for `dtype: int`)
            with 1 value, or d for a vector; an absent feature is missing.
  parquet   a scalar is a numeric column `x`; a vector is a list column `x` or
            the columns `x_0` ... `x_{d-1}`; null is missing.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf

from tanhguard.pipeline.csv_reader import (
    DataError,
    _arrow_value_type,
    _feature_column,
    arrow_schema,
    check_header,
    expand_pattern,
    raw_feature_spec,
    read_csv_batches,
)
from tanhguard.pipeline.formats import FORMATS
from tanhguard.pipeline.progress import counted
from tanhguard.transforms.config import Config

_SUFFIXES = {
    ".csv": "csv",
    ".tfrecord": "tfrecord",
    ".tfrecords": "tfrecord",
    ".tfrecord.gz": "tfrecord",
    ".tfrecords.gz": "tfrecord",
    ".parquet": "parquet",
    ".pq": "parquet",
}
TFRECORD_BATCH = 8192
PARQUET_BATCH = 65536


def detect_format(files: Sequence[str], explicit: str | None = None) -> str:
    """The input format: `explicit`, or the one every file's suffix names.

    Raises:
      DataError: an unknown `explicit` format, a suffix that names no format,
        or files of different formats.
    """
    if explicit is not None:
        if explicit not in FORMATS:
            raise DataError(f"--format must be one of {FORMATS}. Received: {explicit}")
        return explicit
    found = {}
    for path in files:
        name = path.lower()
        kind = next(
            (fmt for suffix, fmt in _SUFFIXES.items() if name.endswith(suffix)), None
        )
        if kind is None:
            raise DataError(
                f"{path}: cannot tell the format from the file name (known: "
                f"{', '.join(sorted(_SUFFIXES))}); pass --format {'|'.join(FORMATS)}"
            )
        found.setdefault(kind, path)
    if len(found) > 1:
        raise DataError(
            "the files mix formats "
            + ", ".join(f"{kind} ({path})" for kind, path in found.items())
            + "; analyze one format at a time or pass --format"
        )
    return next(iter(found))


def _is_gzip(path: str) -> bool:
    with tf.io.gfile.GFile(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _tfrecord_dataset(path: str, gzip: bool) -> tf.data.Dataset:
    return tf.data.TFRecordDataset(path, compression_type="GZIP" if gzip else "")


# Each TFRecord record adds 16 bytes to its data: an 8-byte length and two
# 4-byte CRCs.
_TFRECORD_FRAMING = 16
_GZIP_CHUNK = 1 << 20


def _gunzipped_size(path: str) -> tuple[int, bool]:
    """Decompresses every gzip member of `path` with zlib: the total size and
    whether the last member reached its end marker."""
    size, in_member = 0, False
    with tf.io.gfile.GFile(path, "rb") as handle:
        decompressor = zlib.decompressobj(wbits=31)
        while chunk := handle.read(_GZIP_CHUNK):
            while chunk:
                in_member = True
                # Bounded output: a highly compressed chunk stays small.
                size += len(decompressor.decompress(chunk, _GZIP_CHUNK))
                chunk = decompressor.unconsumed_tail
                if decompressor.eof:
                    in_member = False
                    chunk = decompressor.unused_data
                    decompressor = zlib.decompressobj(wbits=31)
    return size, not in_member


def _check_gzip_complete(path: str, read_bytes: int, records: int) -> None:
    """Raises DataError unless the TFRecords read from the gzip file `path`
    (`read_bytes` of framed records) are all it holds.

    TF's gzip reader stops without an error when a truncated file happens to
    end on a record boundary. The gzip trailer's size (ISIZE, the size mod
    2^32) settles the common case, a single member, with one small read; a
    mismatch (a truncated file, or several members) is decided by
    decompressing the file with zlib.
    """
    with tf.io.gfile.GFile(path, "rb") as handle:
        length = handle.size()
        if length >= 18:  # a gzip header (10 bytes) and trailer (8 bytes)
            handle.seek(length - 4)
            if int.from_bytes(handle.read(4), "little") == read_bytes % (1 << 32):
                return
    unread = f"{path}: cannot read the TFRecord file after {records} record(s)"
    try:
        size, complete = _gunzipped_size(path)
    except zlib.error as error:
        raise DataError(f"{unread} (corrupt?): {error}") from None
    if not complete:
        raise DataError(
            f"{unread} (truncated?): the gzip stream ends before its end marker"
        )
    if size != read_bytes:
        raise DataError(
            f"{unread} (corrupt?): the records end at byte {read_bytes} of "
            f"{size} decompressed bytes"
        )


def _conform(
    path: str, batch: pa.RecordBatch, config: Config, noun: str, first: int
) -> pa.RecordBatch:
    """Casts decoded list columns to the layout, checking vector lengths."""
    schema = arrow_schema(config)
    arrays = []
    for name, feature in config.features.items():
        column = batch.column(name).cast(schema.field(name).type)
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


def _parsed_batches(path: str, gzip: bool, config: Config) -> tf.data.Dataset:
    """Batches of records parsed by `tf.io.parse_example` in tf.data's own
    threads (so parsing overlaps with the work downstream): per feature, the
    row of every value and the values."""
    spec = raw_feature_spec(config)

    @tf.autograph.experimental.do_not_convert
    def parse(records):
        parsed = tf.io.parse_example(records, spec)
        columns = {name: (t.indices[:, 0], t.values) for name, t in parsed.items()}
        framed = tf.strings.length(records) + _TFRECORD_FRAMING
        return columns, tf.shape(records)[0], tf.reduce_sum(tf.cast(framed, tf.int64))

    return (
        _tfrecord_dataset(path, gzip)
        .batch(TFRECORD_BATCH)
        .map(parse, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(2)
    )


def _locate_bad_record(path: str, gzip: bool, config: Config, first: int) -> int | None:
    """The number (from 1) of the first record from `first` on that does not
    parse, looking one record at a time; None if none is found."""
    spec = raw_feature_spec(config)
    records = _tfrecord_dataset(path, gzip).skip(first - 1).take(TFRECORD_BATCH)
    try:
        for offset, record in enumerate(records):
            try:
                tf.io.parse_example(record[tf.newaxis], spec)
            except tf.errors.InvalidArgumentError:
                return first + offset
    except tf.errors.OpError:
        pass
    return None


def read_tfrecord_batches(path: str, config: Config) -> Iterator[pa.RecordBatch]:
    """Streams a TFRecord file of `tf.Example`s (plain or gzip).

    Raises:
      DataError: a record is not a `tf.Example`, a feature has the wrong value
        type or length, or the file is truncated or corrupt; the message names
        the file (and the records, when known).
    """
    first, read_bytes = 1, 0
    gzip = _is_gzip(path)
    batches = iter(_parsed_batches(path, gzip, config))
    while True:
        try:
            columns, rows, framed = next(batches)
        except StopIteration:
            if gzip:
                _check_gzip_complete(path, read_bytes, first - 1)
            return
        except tf.errors.InvalidArgumentError as error:
            record = _locate_bad_record(path, gzip, config, first)
            where = f"record {record}" if record else f"records from {first}"
            raise DataError(
                f"{path}: {where}: not a valid tf.Example for the config: "
                f"{error.message.splitlines()[0]}"
            ) from None
        except tf.errors.OpError as error:
            raise DataError(
                f"{path}: cannot read the TFRecord file after {first - 1} "
                f"record(s) (truncated or corrupt?): {error.message}"
            ) from None
        rows = int(rows)
        read_bytes += int(framed)
        arrays = []
        for name in config.features:
            row_of, values = (t.numpy() for t in columns[name])
            offsets = np.zeros(rows + 1, np.int32)
            np.cumsum(np.bincount(row_of, minlength=rows), out=offsets[1:])
            arrays.append(pa.ListArray.from_arrays(pa.array(offsets), values))
        decoded = pa.RecordBatch.from_arrays(arrays, names=list(config.features))
        yield _conform(path, decoded, config, "record", first)
        first += rows


def _parquet_plan(path: str, schema: pa.Schema, config: Config) -> dict:
    """Per feature: the Parquet column(s) and whether it is a list column."""
    plan = {}
    names = set(schema.names)
    for name, feature in config.features.items():
        wanted = _arrow_value_type(feature.dtype)
        if feature.is_vector and name in names:
            field = schema.field(name)
            if not (
                pa.types.is_list(field.type) or pa.types.is_large_list(field.type)
            ) or not _numeric_matches(field.type.value_type, wanted):
                raise DataError(
                    f"{path}: feature `{name}`: column `{name}` has type "
                    f"{field.type}; a vector needs a list of "
                    f"{'integers' if feature.dtype == 'int' else 'numbers'}"
                )
            plan[name] = ([name], True)
            continue
        columns = [name] if not feature.is_vector else config.csv_columns(name)
        absent = [c for c in columns if c not in names]
        if absent:
            raise DataError(
                f"{path}: feature `{name}`: column(s) {absent} not in the file. "
                f"Columns: {sorted(names)[:12]}"
            )
        for column in columns:
            kind = schema.field(column).type
            if not _numeric_matches(kind, wanted):
                raise DataError(
                    f"{path}: feature `{name}`: column `{column}` has type {kind}; "
                    f"`dtype: {feature.dtype}` needs "
                    f"{'an integer' if feature.dtype == 'int' else 'a numeric'} "
                    "column"
                )
        plan[name] = (columns, False)
    return plan


def _numeric_matches(kind: pa.DataType, wanted: pa.DataType) -> bool:
    if pa.types.is_integer(wanted):
        return pa.types.is_integer(kind)
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def check_parquet(path: str, config: Config) -> bool:
    """Checks a Parquet file's columns against the config; True if it has rows."""
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"{path}: not a readable Parquet file: {error}") from None
    _parquet_plan(path, parquet.schema_arrow, config)
    return parquet.metadata.num_rows > 0


def read_parquet_batches(path: str, config: Config) -> Iterator[pa.RecordBatch]:
    """Streams a Parquet file, only the configured columns."""
    # Pre-buffering keeps the column chunks it has read (0.5 GB resident for a
    # 450 MB file, against 0.13 GB without) and is slower on local files.
    parquet = pq.ParquetFile(path, pre_buffer=False)
    plan = _parquet_plan(path, parquet.schema_arrow, config)
    schema = arrow_schema(config)
    wanted = sorted({c for columns, _ in plan.values() for c in columns})
    first_row = 1
    try:
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH, columns=wanted):
            arrays = []
            for name, (columns, is_list) in plan.items():
                if is_list:
                    column = batch.column(name)
                    arrays.append(column)
                else:
                    arrays.append(
                        _feature_column(
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
            yield _conform(path, decoded, config, "row", first_row)
            first_row += batch.num_rows
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"{path}: cannot read the Parquet file: {error}") from None


def check_tfrecord(path: str, config: Config) -> bool:
    """Parses the first record; True if the file has one."""
    try:
        first = next(iter(_tfrecord_dataset(path, _is_gzip(path)).take(1)), None)
    except tf.errors.OpError as error:
        raise DataError(
            f"{path}: not a readable TFRecord file: {error.message}"
        ) from None
    if first is None:
        return False
    try:
        tf.io.parse_example(first[tf.newaxis], raw_feature_spec(config))
    except tf.errors.InvalidArgumentError as error:
        raise DataError(
            f"{path}: record 1: not a valid tf.Example: {error.message.splitlines()[0]}"
        ) from None
    return True


def check_file(path: str, config: Config, fmt: str) -> bool:
    """Checks a file before the pipeline starts; True if it holds rows."""
    if fmt == "csv":
        return check_header(path, config)
    if fmt == "parquet":
        return check_parquet(path, config)
    return check_tfrecord(path, config)


def resolve_inputs(
    data: str, config: Config, fmt: str | None = None
) -> tuple[list[str], str, bool]:
    """`(files, format, has_rows)` for a path or glob, each file checked.

    Raises:
      DataError: no file matches, the format is unclear, or a file does not fit
        the config (see `check_file`).
    """
    files = expand_pattern(data)
    fmt = detect_format(files, fmt)
    has_rows = [check_file(path, config, fmt) for path in files]
    return files, fmt, any(has_rows)


def read_batches(path: str, config: Config, fmt: str) -> Iterator[pa.RecordBatch]:
    """Record batches of one file in the given format."""
    if fmt == "csv":
        return read_csv_batches(path, config)
    if fmt == "parquet":
        return read_parquet_batches(path, config)
    return read_tfrecord_batches(path, config)


class ReadRecordBatches(beam.PTransform):
    """Files of one format -> a PCollection of record batches."""

    def __init__(
        self, files: Sequence[str], config: Config, fmt: str, quiet: bool = True
    ):
        super().__init__()
        self._files = list(files)
        self._config = config
        self._format = fmt
        self._quiet = quiet

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        config, fmt, quiet = self._config, self._format, self._quiet

        def read(path: str) -> Iterator[pa.RecordBatch]:
            return counted(path, read_batches(path, config, fmt), quiet)

        return (
            pipeline
            | "ListFiles" >> beam.Create(self._files)
            | "Reshuffle" >> beam.Reshuffle()
            | "ReadBatches" >> beam.FlatMap(read)
        )
