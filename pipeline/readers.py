"""The input side of every job: which files, which format, and reading them.

Every reader (`csv_reader`, `tfrecord_reader`, `parquet_reader`) streams a
file as Arrow record batches in one layout (see `batch_layout`): a
`list<float32>` or `list<int64>` column per feature, holding d values for a
vector and no value when missing. Files are read one per Beam element, so
many files are read in parallel.

Feature layout per format:
  csv       a header; a scalar `x` is column `x`; a vector is `x_0` ... `x_{d-1}`.
  tfrecord  `tf.Example`s; `x` is a float_list (int64_list for `dtype: int`)
            with 1 value, or d for a vector; an absent feature is missing.
  parquet   a scalar is a numeric column `x`; a vector is a list column `x` or
            the columns `x_0` ... `x_{d-1}`; null is missing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import apache_beam as beam
import pyarrow as pa
import tensorflow as tf

from tanhguard.errors import DataError
from tanhguard.pipeline.csv_reader import check_header, read_csv_batches
from tanhguard.pipeline.formats import FORMATS
from tanhguard.pipeline.parquet_reader import check_parquet, read_parquet_batches
from tanhguard.pipeline.progress import counted
from tanhguard.pipeline.tfrecord_reader import check_tfrecord, read_tfrecord_batches
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

    def __init__(self, files: Sequence[str], config: Config, fmt: str):
        super().__init__()
        self._files = list(files)
        self._config = config
        self._format = fmt

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        config, fmt = self._config, self._format

        def read(path: str) -> Iterator[pa.RecordBatch]:
            return counted(path, read_batches(path, config, fmt))

        return (
            pipeline
            | "ListFiles" >> beam.Create(self._files)
            | "Reshuffle" >> beam.Reshuffle()
            | "ReadBatches" >> beam.FlatMap(read)
        )
