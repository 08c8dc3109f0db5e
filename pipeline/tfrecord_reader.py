"""Reading TFRecord files of `tf.Example` (plain or gzip) into record batches.

`x` is a `float_list` (`int64_list` for `dtype: int`) of 1 value, or d for a
vector; an absent feature is missing. Records are parsed by
`tf.io.parse_example` in tf.data's own threads.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import tensorflow as tf

from tanhguard.errors import DataError
from tanhguard.pipeline.batch_layout import conform, raw_feature_spec
from tanhguard.transforms.config import Config

TFRECORD_BATCH = 8192


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
        yield conform(path, decoded, config, "record", first)
        first += rows


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
