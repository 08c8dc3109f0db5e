"""Reading TFRecord files of `tf.Example` (plain or gzip) into record batches.

`x` is a `float_list` (`int64_list` for `dtype: int`) of 1 value, or d for a
vector, under the key `x` (the feature's `column`, if it has one); an absent
feature is missing. Records are parsed by
`tf.io.parse_example` in tf.data's own threads.

A file must end after its last whole record: TF's reader stops silently at a
cut inside a record's header (and, in a gzip file, at a cut between records),
so the bytes of the records read are compared with the file's size.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from tanhguard.errors import DataError
from tanhguard.pipeline import files as fs
from tanhguard.pipeline.batch_layout import (
    conform,
    gunzipped_chunks,
    is_gzip,
    one_line,
    raw_feature_spec,
)
from tanhguard.pipeline.progress import load_tensorflow
from tanhguard.transforms.config import Config

if TYPE_CHECKING:
    import tensorflow as tf

TFRECORD_BATCH = 8192


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C (Castagnoli) of `data`, masked (rotated
    and offset) as TF's `crc32c::Mask` does. Pure Python: for a few bytes."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


TFRECORD_HEADER = 12  # a record's 8-byte length and the 4-byte CRC of it


def is_tfrecord_start(head: bytes) -> bool:
    """Whether `head` (a file's first bytes, at least `TFRECORD_HEADER` of
    them) starts with a TFRecord header: a little-endian 8-byte length and
    its masked CRC-32C (what TF checks before reading a record; text passes
    by chance once in 2^32)."""
    if len(head) < TFRECORD_HEADER:
        return False
    crc = int.from_bytes(head[8:12], "little")
    return masked_crc32c(head[:8]) == crc


def _tf_message(error: tf.errors.OpError) -> str:
    """TF's message on one line, without its graph-node and op decorations."""
    text = re.sub(r"\{\{[^{}]*\}\}", " ", error.message)
    text = re.sub(r"\[Op:\w+\]( name: \S*)?", " ", text)
    return one_line(text)


# TF's parser quotes a record that is not a protocol buffer in its message;
# when those bytes are not UTF-8, reading the message raises this instead.
_NOT_AN_EXAMPLE = "it is not a tf.Example protocol buffer"


def _tfrecord_dataset(path: str, gzip: bool) -> tf.data.Dataset:
    tf = load_tensorflow()  # imported by the first reader that needs it
    return tf.data.TFRecordDataset(path, compression_type="GZIP" if gzip else "")


# Each TFRecord record adds 16 bytes to its data: an 8-byte length and two
# 4-byte CRCs.
_TFRECORD_FRAMING = 16


def _gunzipped_size(path: str) -> tuple[int, bool]:
    """Decompresses every gzip member of `path` with zlib: the total size and
    whether the last member reached its end marker."""
    size = 0
    try:
        for chunk in gunzipped_chunks(path):
            size += len(chunk)
    except EOFError:
        return size, False
    return size, True


def _check_gzip_complete(path: str, read_bytes: int, records: int) -> None:
    """Raises DataError unless the TFRecords read from the gzip file `path`
    (`read_bytes` of framed records) are all it holds.

    TF's gzip reader stops without an error when a truncated file happens to
    end on a record boundary. The gzip trailer's size (ISIZE, the size mod
    2^32) settles the common case, a single member, with one small read; a
    mismatch (a truncated file, or several members) is decided by
    decompressing the file with zlib.
    """
    length = fs.size(path)
    with fs.open_file(path) as handle:
        if length >= 18:  # a gzip header (10 bytes) and trailer (8 bytes)
            handle.seek(length - 4)
            if int.from_bytes(handle.read(4), "little") == read_bytes % (1 << 32):
                return
    unread = _unread(path, records)
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


def _unread(path: str, records: int) -> str:
    return f"{path}: cannot read the TFRecord file after {records} record(s)"


def _check_plain_complete(path: str, read_bytes: int, records: int) -> None:
    """Raises DataError unless the framed records read from the plain
    TFRecord file `path` (`read_bytes`) are the whole file: TF's reader ends
    without an error when the file is cut inside a record's header."""
    size = fs.size(path)
    if size != read_bytes:
        raise DataError(
            f"{_unread(path, records)} (truncated?): the records end at byte "
            f"{read_bytes} of {size}; the rest is not a whole record"
        )


def _check_complete(path: str, gzip: bool, read_bytes: int, records: int) -> None:
    if gzip:
        _check_gzip_complete(path, read_bytes, records)
    else:
        _check_plain_complete(path, read_bytes, records)


def _parsed_batches(path: str, gzip: bool, config: Config) -> tf.data.Dataset:
    """Batches of records parsed by `tf.io.parse_example` in tf.data's own
    threads (so parsing overlaps with the work downstream): per feature, the
    row of every value and the values."""
    tf = load_tensorflow()
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


def _parse_problem(record: tf.Tensor, config: Config) -> str | None:
    """Why one serialized record is not a `tf.Example` for the config, or
    None if it parses."""
    tf = load_tensorflow()
    try:
        tf.io.parse_example(record[tf.newaxis], raw_feature_spec(config))
    except tf.errors.InvalidArgumentError as error:
        return _tf_message(error)
    except UnicodeDecodeError:
        return _NOT_AN_EXAMPLE
    return None


def _locate_bad_record(
    path: str, gzip: bool, config: Config, first: int
) -> tuple[int, str] | None:
    """The number (from 1) of the first record from `first` on that does not
    parse, and why, looking one record at a time; None if none is found."""
    tf = load_tensorflow()
    records = _tfrecord_dataset(path, gzip).skip(first - 1).take(TFRECORD_BATCH)
    try:
        for offset, record in enumerate(records):
            problem = _parse_problem(record, config)
            if problem is not None:
                return first + offset, problem
    except tf.errors.OpError:
        pass
    return None


def _whole_records(path: str, gzip: bool, first: int) -> int:
    """How many records from record `first` on read whole, one at a time, in
    the batch that failed: TF fails a whole batch of `TFRECORD_BATCH`."""
    tf = load_tensorflow()
    count = 0
    records = _tfrecord_dataset(path, gzip).skip(first - 1).take(TFRECORD_BATCH)
    try:
        for _ in records:
            count += 1
    except tf.errors.OpError:
        pass
    return count


def read_tfrecord_batches(path: str, config: Config) -> Iterator[pa.RecordBatch]:
    """Streams a TFRecord file of `tf.Example`s (plain or gzip).

    Raises:
      DataError: a record is not a `tf.Example`, a feature has the wrong value
        type or length, or the file is truncated or corrupt; the message names
        the file (and the records, when known).
    """
    tf = load_tensorflow()
    first, read_bytes = 1, 0
    gzip = is_gzip(path)
    batches = iter(_parsed_batches(path, gzip, config))
    while True:
        try:
            columns, rows, framed = next(batches)
        except StopIteration:
            _check_complete(path, gzip, read_bytes, first - 1)
            return
        except (tf.errors.InvalidArgumentError, UnicodeDecodeError) as error:
            located = _locate_bad_record(path, gzip, config, first)
            if located is not None:
                record, problem = located
                raise DataError(
                    f"{path}: record {record}: not a valid tf.Example for the "
                    f"config: {problem}"
                ) from None
            problem = (
                _NOT_AN_EXAMPLE
                if isinstance(error, UnicodeDecodeError)
                else _tf_message(error)
            )
            raise DataError(
                f"{path}: records from {first}: not a valid tf.Example for the "
                f"config: {problem}"
            ) from None
        except tf.errors.OpError as error:
            whole = first - 1 + _whole_records(path, gzip, first)
            raise DataError(
                f"{_unread(path, whole)} (truncated or corrupt?): {_tf_message(error)}"
            ) from None
        rows = int(rows)
        read_bytes += int(framed)
        arrays = []
        for name in config.features:
            key = config.source_column(name)
            row_of, values = (t.numpy() for t in columns[key])
            offsets = np.zeros(rows + 1, np.int32)
            np.cumsum(np.bincount(row_of, minlength=rows), out=offsets[1:])
            arrays.append(pa.ListArray.from_arrays(pa.array(offsets), values))
        decoded = pa.RecordBatch.from_arrays(arrays, names=list(config.features))
        yield conform(path, decoded, config, "record", first)
        first += rows


def check_tfrecord(path: str, config: Config) -> bool:
    """Parses the first record; True if the file has one.

    Raises:
      DataError: the file is not TFRecord, it holds no whole record but is
        not empty (truncated), or its first record is not a `tf.Example` for
        the config.
    """
    tf = load_tensorflow()
    gzip = is_gzip(path)
    try:
        first = next(iter(_tfrecord_dataset(path, gzip).take(1)), None)
    except tf.errors.OpError as error:
        raise DataError(
            f"{path}: not a readable TFRecord file: {_tf_message(error)}"
        ) from None
    if first is None:
        _check_complete(path, gzip, 0, 0)
        return False
    problem = _parse_problem(first, config)
    if problem is not None:
        raise DataError(f"{path}: record 1: not a valid tf.Example: {problem}")
    return True
