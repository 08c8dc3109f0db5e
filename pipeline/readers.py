"""The input side of every job: which files, which format, and reading them.

Every reader (`csv_reader`, `tfrecord_reader`, `parquet_reader`) streams a
file as Arrow record batches in one layout (see `batch_layout`): a
`list<float32>` or `list<int64>` column per feature, holding d values for a
vector and no value when missing. Files are read one per Beam element, so
many files are read in parallel.

The format of every file comes from its content, whatever its name
(`detect_format`); `--format` must agree with it.

Feature layout per format, where `x` is the feature's source column (its
`column`, else its name: `Config.source_column`):
  csv       a header; a scalar `x` is column `x`; a vector is `x_0` ... `x_{d-1}`;
            plain or gzip.
  tfrecord  `tf.Example`s; `x` is a float_list (int64_list for `dtype: int`)
            with 1 value, or d for a vector; an absent feature is missing.
  parquet   a scalar is a numeric column `x`; a vector is a list column `x` or
            the columns `x_0` ... `x_{d-1}`; null is missing.
Record batches name their columns after the features, whatever the source.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import apache_beam as beam
import pyarrow as pa

from tanhguard.errors import DataError
from tanhguard.pipeline import files as fs
from tanhguard.pipeline.batch_layout import (
    BATCH_VALUES,
    GZIP_MAGIC,
    batch_rows,
    coalesced,
    one_line,
)
from tanhguard.pipeline.csv_reader import (
    check_header,
    kept_csv_types,
    read_csv_batches,
)
from tanhguard.pipeline.formats import FORMATS
from tanhguard.pipeline.kept_columns import (
    FLAG,
    check_kept_names,
    merge_types,
    schema_of,
)
from tanhguard.pipeline.parquet_reader import (
    check_parquet,
    kept_parquet_types,
    read_parquet_batches,
)
from tanhguard.pipeline.progress import counted
from tanhguard.pipeline.tfrecord_reader import (
    check_tfrecord,
    is_tfrecord_start,
    read_tfrecord_batches,
)
from tanhguard.transforms.config import Config

logger = logging.getLogger(__name__)

# Files a directory given as --data may hold beside the data (a config kept
# with it), which no reader reads: left out of the directory's files.
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")

# The format of a file whose content cannot tell (an empty file).
_SUFFIXES = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".tfrecord": "tfrecord",
    ".tfrecords": "tfrecord",
    ".tfrecord.gz": "tfrecord",
    ".tfrecords.gz": "tfrecord",
    ".parquet": "parquet",
    ".pq": "parquet",
}

_HEAD = 1 << 16  # bytes of a file read to tell its format
_PARQUET_MAGIC = b"PAR1"


def _kind_of_bytes(head: bytes, compressed: bool) -> tuple[str | None, str]:
    """`(format, why)` from a file's first bytes (decompressed, if it is
    gzip): format None when they cannot tell (empty, or binary but of no
    known format)."""
    gz = "gzip-compressed " if compressed else ""
    if not head:
        return None, f"it is {'an empty gzip stream' if compressed else 'empty'}"
    if head.startswith(_PARQUET_MAGIC) and not compressed:
        return "parquet", "it starts with Parquet's magic bytes PAR1"
    if is_tfrecord_start(head):
        return "tfrecord", f"it starts with {gz}TFRecord framing"
    if b"\0" in head:
        return None, (
            f"its first bytes are {gz}binary data (a NUL byte) but neither "
            "Parquet (PAR1), gzip nor TFRecord framing"
        )
    return "csv", f"it is {gz}text"


def _gunzip_head(path: str, head: bytes) -> bytes:
    """The first decompressed bytes of the gzip file starting with `head`."""
    decompressor = zlib.decompressobj(wbits=31)
    try:
        return decompressor.decompress(head, 4096)
    except zlib.error as error:
        raise DataError(f"{path}: a corrupt gzip file: {error}") from None


def content_format(path: str) -> tuple[str | None, str]:
    """`(format, why)` from the first bytes of the file: Parquet's magic
    `PAR1`; TFRecord framing (a record length and its masked CRC-32C), plain
    or gzip; else text, plain or gzip, is CSV. Format None: the content
    cannot tell (an empty or missing file, binary data of no known format).
    """
    try:
        with fs.open_file(path) as handle:
            head = handle.read(_HEAD)
    except FileNotFoundError:
        return None, "it does not exist"
    except OSError as error:
        raise DataError(
            f"{path}: cannot read the file: {one_line(error.strerror or error)}"
        ) from None
    if head.startswith(GZIP_MAGIC):
        return _kind_of_bytes(_gunzip_head(path, head), compressed=True)
    return _kind_of_bytes(head, compressed=False)


def _suffix_format(path: str) -> str | None:
    name = path.lower()
    return next((fmt for end, fmt in _SUFFIXES.items() if name.endswith(end)), None)


def detect_format(files: Sequence[str], explicit: str | None = None) -> str:
    """The input format, from each file's content (`content_format`), whatever
    its name: a file whose content cannot tell (an empty one) takes the
    format its suffix names or, failing that, the other files'. With
    `explicit` (`--format`), every file's content must agree with it.

    Raises:
      DataError: an unknown `explicit` format, a file whose content
        contradicts it, a file of no known format, or files of different
        formats.
    """
    if explicit is not None and explicit not in FORMATS:
        raise DataError(f"--format must be one of {FORMATS}. Received: {explicit}")
    found, unknown = {}, []
    for path in files:
        kind, why = content_format(path)
        if explicit is not None:
            if kind is not None and kind != explicit:
                raise DataError(
                    f"{path}: --format {explicit} was given, but the file is "
                    f"{kind}: {why}; leave out --format to read it as {kind}"
                )
            continue
        kind = kind or _suffix_format(path)
        if kind is None:
            unknown.append((path, why))
            continue
        found.setdefault(kind, path)
    if explicit is not None:
        return explicit
    if len(found) > 1:
        raise DataError(
            "the files mix formats "
            + ", ".join(f"{kind} ({path})" for kind, path in found.items())
            + "; analyze one format at a time"
        )
    if not found:
        path, why = unknown[0]
        raise DataError(
            f"{path}: cannot tell the format: {why}, and the file name ends in "
            f"none of {', '.join(sorted(_SUFFIXES))}; pass --format "
            f"{'|'.join(FORMATS)}"
        )
    return next(iter(found))


_NOT_REGULAR = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(path: str) -> str | None:
    """What the local `path` is if it is not a regular file (or a link to
    one), else None; a file on another filesystem (`gs://...`) is one."""
    if "://" in path:
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise DataError(f"{path}: cannot read the file: {error.strerror}") from None
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _NOT_REGULAR if test(mode)), "not a file")


def _check_regular(path: str) -> None:
    """Raises DataError unless `path` is a regular file (see `_not_regular`)."""
    kind = _not_regular(path)
    if kind is None:
        return
    raise DataError(
        f"{path}: {kind}, not a regular file: --data takes regular files (or a "
        "directory of them), which end and can be read once per pass"
    )


def expand_pattern(pattern: str, exclude: Sequence[str | Path] = ()) -> list[str]:
    """The data files `pattern` names, sorted.

    `pattern` is a file, a glob (`files.glob`, so `gs://...` too; the
    directories it matches are left out), or a directory: every regular file
    directly in it (not in its subdirectories, nor a device or pipe) but the
    hidden ones, whose names begin with `.` or `_` (`_SUCCESS`,
    `.part-0.crc`), as a Spark or Beam job's output directory holds them, and
    the configs (`CONFIG_SUFFIXES`: YAML or JSON, never data here). A
    file named or globbed must be a regular file (or a link to one): a device
    or pipe (`/dev/zero`, `/dev/stdin`, a FIFO) may never end, and every pass
    reads the files again. A directory's or a glob's files that are the same
    file as one of `exclude` (the job's config file, kept beside its data)
    are left out.

    Raises:
      DataError: Nothing matches, the directory holds no data file, or a
        file named or globbed is not a regular file.
    """
    if fs.isdir(pattern):
        names = sorted(fs.listdir(pattern))
        for name in names:
            if name.lower().endswith(CONFIG_SUFFIXES):
                logger.info("%s: a config file, left out of the data", name)
        files = [
            os.path.join(pattern, name.rstrip("/"))
            for name in names
            if not name.startswith((".", "_"))
            and not name.lower().endswith(CONFIG_SUFFIXES)
        ]
        files = [
            path for path in files if not fs.isdir(path) and _not_regular(path) is None
        ]
        if not files:
            raise DataError(
                f"{pattern}: the directory holds no data file (its subdirectories, "
                "hidden files, named `.*` or `_*`, YAML and JSON files, and devices "
                "or pipes are left out)"
            )
    else:
        files = [path for path in fs.glob(pattern) if not fs.isdir(path)]
        if not files:
            raise DataError(f"{pattern}: no file matches this path or glob")
    if exclude and files != [pattern]:
        kept = [path for path in files if not _is_one_of(path, exclude)]
        for path in sorted(set(files) - set(kept)):
            logger.info("%s: the config file, left out of the data", path)
        if not kept:
            raise DataError(f"{pattern}: holds no data file but the config file")
        files = kept
    for path in files:
        _check_regular(path)
    return files


def _is_one_of(path: str, others: Sequence[str | Path]) -> bool:
    """Whether the local file `path` is one of `others` (by device and inode)."""
    if not fs.is_local(path):
        return False
    for other in others:
        with contextlib.suppress(OSError):
            if os.path.samefile(path, other):
                return True
    return False


def check_file(path: str, config: Config, fmt: str) -> bool:
    """Checks a file before the pipeline starts; True if it holds rows."""
    if fmt == "csv":
        return check_header(path, config)
    if fmt == "parquet":
        return check_parquet(path, config)
    return check_tfrecord(path, config)


def resolve_inputs(
    data: str,
    config: Config,
    fmt: str | None = None,
    exclude: Sequence[str | Path] = (),
) -> tuple[list[str], str, bool]:
    """`(files, format, has_rows)` for a path or glob, each file checked
    (`exclude`: see `expand_pattern`).

    Raises:
      DataError: no file matches, the format is unclear, or a file does not fit
        the config (see `check_file`).
    """
    files = expand_pattern(data, exclude)
    fmt = detect_format(files, fmt)
    has_rows = [check_file(path, config, fmt) for path in files]
    return files, fmt, any(has_rows)


def kept_schema(
    files: Sequence[str], fmt: str, keep: Sequence[str], config: Config
) -> pa.Schema | None:
    """The kept columns' schema (see `kept_columns`), or None when
    none is kept.

    Raises:
      ConfigError: a kept name is given twice or taken by the config.
      DataError: a file lacks a kept column, the input is TFRecord, or the
        files' types disagree or are not kept types.
    """
    if not keep:
        return None
    check_kept_names(keep, config)
    if fmt == "tfrecord":
        raise DataError(
            f"{FLAG} reads CSV and Parquet input; a tf.Example names no column "
            "types. Convert the rows to Parquet, or use the TFX module's "
            "`passthrough` or the Python `Preprocessor`"
        )
    found: dict[str, tuple[str, pa.DataType]] = {}
    for path in files:
        if fmt == "csv":
            types = kept_csv_types(path, keep)
        else:
            types = kept_parquet_types(path, keep)
        merge_types(found, path, types)
    return schema_of(found, keep)


def read_batches(
    path: str,
    config: Config,
    fmt: str,
    values: int = BATCH_VALUES,
    keep: pa.Schema | None = None,
) -> Iterator[pa.RecordBatch]:
    """Record batches of one file in the given format, each of
    `batch_rows(config, values)` rows (the last fewer); with `keep` (CSV and
    Parquet), its columns after the features (`kept_columns`)."""
    rows = batch_rows(config, values)
    if fmt == "csv":
        return read_csv_batches(path, config, rows=rows, keep=keep)
    if fmt == "parquet":
        return read_parquet_batches(path, config, rows=rows, keep=keep)
    if keep is not None:
        raise ValueError("kept columns are read from CSV and Parquet files only")
    return coalesced(read_tfrecord_batches(path, config), rows)


class ReadRecordBatches(beam.PTransform):
    """Files of one format -> a PCollection of record batches (of about
    `values` values each, with the columns of `keep` after the features, see
    `read_batches`)."""

    def __init__(
        self,
        files: Sequence[str],
        config: Config,
        fmt: str,
        values: int = BATCH_VALUES,
        keep: pa.Schema | None = None,
    ):
        super().__init__()
        self._files = list(files)
        self._config = config
        self._format = fmt
        self._values = values
        self._keep = keep

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        config, fmt, values, keep = (
            self._config,
            self._format,
            self._values,
            self._keep,
        )

        def read(path: str) -> Iterator[pa.RecordBatch]:
            return counted(path, read_batches(path, config, fmt, values, keep))

        files = pipeline | "ListFiles" >> beam.Create(self._files)
        if len(self._files) > 1:
            # Lets a distributed runner read the files on different workers
            # (it would otherwise fuse the reads with the listing). One file
            # has nothing to spread, and the shuffle's stages cost about
            # 0.05 s a pass on the in-process runner.
            files = files | "Reshuffle" >> beam.Reshuffle()
        return files | "ReadBatches" >> beam.FlatMap(read)
