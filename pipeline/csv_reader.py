"""Reading CSV files (plain or gzip) into record batches (`batch_layout`).

The first row is a header of UTF-8 names (a byte order mark before it is
ignored, spaces around a name too); a scalar `x` is column `x`, a vector `[d]`
the columns `x_0` ... `x_{d-1}`, each named once (with `column: c`, the
column `c`, or `c_0` ... `c_{d-1}`). A cell is a number, `nan`,
`inf`, `-inf`, or empty (missing). Only configured columns are read. A gzip
file (by its first bytes, whatever its name) is decompressed as it is read.

Memory stays bounded whatever the file: the header is read up to
`MAX_HEADER_BYTES`, a row longer than one Arrow block (`DEFAULT_BLOCK_SIZE`)
is an error when it spans two block boundaries (one longer than two blocks
always does), and the blocks joined into a record batch hold about
`batch_layout.BATCH_VALUES` values (one block's more at most).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from tanhguard.errors import DataError
from tanhguard.pipeline import files as fs
from tanhguard.pipeline.batch_layout import (
    GUNZIP_CHUNK,
    GZIP_MAGIC,
    arrow_schema,
    arrow_value_type,
    batch_rows,
    closest_column,
    coalesced,
    csv_field,
    feature_column,
    gunzipped_chunks,
    is_gzip,
    one_line,
)
from tanhguard.pipeline.kept_columns import FLAG, with_kept
from tanhguard.pipeline.read_ahead import read_ahead
from tanhguard.transforms.config import Config

# Arrow's CSV block size: the unit Arrow parses (the record batches the jobs
# get join blocks up to `batch_layout.BATCH_VALUES` values, `coalesced`).
# The streaming reader reads several blocks ahead: on a 1 GB file, 16 MB
# blocks kept 0.7 GB resident, 4 MB blocks 0.27 GB, at the same speed. It is
# also the longest row always read: Arrow fails on a row that straddles two
# block boundaries (a longer row within two blocks is read).
DEFAULT_BLOCK_SIZE = 4 << 20

# The longest header line read (`/dev/zero` has no line end).
MAX_HEADER_BYTES = 4 << 20

_CHUNK = 1 << 16
_BOM = b"\xef\xbb\xbf"
# What the reading of a plain or gzip file raises on a corrupt or cut stream.
_STREAM_ERRORS = (OSError, EOFError, zlib.error)
# How far `_explain` reads a file again to count the rows before a stream
# error (a cut or corrupt gzip file): decompressed bytes.
RESCAN_LIMIT_BYTES = 1 << 30

_CELL_RULE = (
    " (cells must be numbers, `nan`, `inf`, `-inf` or empty; rows are numbered "
    "from 1 after the header)"
)


def _mib(size: int) -> str:
    return f"{size / (1 << 20):g} MiB"


class _RawFile(io.RawIOBase):
    """An open file (`files.open_file`) as a Python raw stream (for
    `io.TextIOWrapper`)."""

    def __init__(self, handle):
        super().__init__()
        self._handle = handle

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._handle.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._handle.close()
        super().close()


@contextlib.contextmanager
def _open_bytes(path: str) -> Iterator[io.BufferedIOBase]:
    """The file's bytes (any filesystem `files` reads), decompressed if gzip."""
    with fs.open_file(path) as handle:
        compressed = handle.read(2) == GZIP_MAGIC
        handle.seek(0)
        raw = io.BufferedReader(_RawFile(handle), _CHUNK)
        if not compressed:
            yield raw
            return
        with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
            yield unzipped


class _Chunks:
    """A gzip file's decompressed bytes (`gunzipped_chunks`) as a stream whose
    `read` returns what a chunk has left: the bytes before a cut come out
    before its error (`gzip.GzipFile` drops the read that meets it)."""

    def __init__(self, path: str):
        self._chunks = gunzipped_chunks(path)
        self._left = b""

    def read(self, size: int) -> bytes:
        while not self._left:
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._left = chunk
        data, self._left = self._left[:size], self._left[size:]
        return data

    def close(self) -> None:
        self._chunks.close()  # closes the file


def _first_line(path: str, handle, want_rows: bool) -> tuple[bytes, bool]:
    """The first line of `handle` (at most `MAX_HEADER_BYTES`, without its
    line end) and, with `want_rows`, whether any non-blank byte follows it."""
    buffer = bytearray()
    while True:
        chunk = handle.read(_CHUNK)
        ends = [i for i in (chunk.find(b"\n"), chunk.find(b"\r")) if i >= 0]
        cut = min(ends) if ends else len(chunk)
        buffer += chunk[:cut]
        if len(buffer) > MAX_HEADER_BYTES:
            raise DataError(
                f"{path}: the header line is longer than {_mib(MAX_HEADER_BYTES)} "
                "(csv_reader.MAX_HEADER_BYTES); is this a CSV file?"
            )
        if ends or not chunk:
            rest = chunk[cut:]
            break
    has_rows = bool(rest.strip())
    while want_rows and not has_rows and rest:
        rest = handle.read(_CHUNK)
        has_rows = bool(rest.strip())
    return bytes(buffer), has_rows


def _read_header(path: str, want_rows: bool = False) -> tuple[list[str], bool]:
    """The header's column names (stripped of spaces) and, with `want_rows`,
    whether a data row follows.

    Raises:
      DataError: The file is empty, its first line is empty, too long or not
        UTF-8, or a gzip file is corrupt.
    """
    try:
        if is_gzip(path):
            # Every byte before a cut, then the error: a file cut after its
            # header is read up to the cut (`_rows_before_stream_error`).
            with contextlib.closing(_Chunks(path)) as chunks:
                line, has_rows = _first_line(path, chunks, want_rows)
        else:
            with _open_bytes(path) as handle:
                line, has_rows = _first_line(path, handle, want_rows)
    except _STREAM_ERRORS as error:
        raise DataError(
            f"{path}: cannot read the header (a corrupt gzip file?): {one_line(error)}"
        ) from None
    if line.startswith(_BOM):
        line = line[len(_BOM) :]
    if not line.strip():
        if has_rows:
            raise DataError(
                f"{path}: the first line is empty; it must be the header naming "
                "the columns"
            )
        raise DataError(f"{path}: the file is empty; expected a header row first")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}: the header (row 0) is not UTF-8 text: byte "
            f"0x{line[error.start]:02x} at byte {error.start + 1} of the line"
        ) from None
    try:
        header = next(csv.reader([text]))
    except csv.Error as error:
        raise DataError(f"{path}: cannot parse the header: {one_line(error)}") from None
    return [column.strip() for column in header], has_rows


def _check_columns(path: str, header: list[str], config: Config) -> None:
    """Checks that the header names every configured column exactly once."""
    counts = Counter(header)
    for name in config.features:
        columns = config.csv_columns(name)
        for column in columns:
            if counts[column] > 1:
                raise DataError(
                    f"{path}: feature `{name}`: column `{column}` appears "
                    f"{counts[column]} times in the header (a duplicate name); "
                    "a configured column must appear once"
                )
        absent = [c for c in columns if c not in counts]
        if absent:
            shown = ", ".join(header[:12]) + (", ..." if len(header) > 12 else "")
            hint = closest_column(absent, header)
            numbers = [c for c in header if c]
            if not hint and _first_unconvertible(numbers, pa.float64()) is None:
                hint = ". The first row must be a header naming the columns"
            raise DataError(
                f"{path}: feature `{name}`: column(s) {absent} not in the "
                f"header{hint}; found: {one_line(shown)}"
            )
        feature = config.features[name]
        stem = config.source_column(name)
        if feature.is_vector and f"{stem}_{feature.size}" in counts:
            found = sum(1 for column in header if column.startswith(f"{stem}_"))
            raise DataError(
                f"{path}: feature `{name}`: `shape` is [{feature.size}] but the header "
                f"also has column `{stem}_{feature.size}` ({found} columns start "
                f"with `{stem}_`). Set `shape` to the vector's length."
            )


def _arrow_reader(
    path: str,
    header: list[str],
    block_size: int,
    include: list[str],
    column_types: dict[str, pa.DataType] | None = None,
) -> pa_csv.CSVStreamingReader:
    """Arrow's streaming reader of the columns `include`, of `column_types`
    (inferred from the first block if not given); an empty cell is null. A
    quoted cell may hold line ends (a free-text column beside the features:
    Arrow's chunker then tracks quotes, at no cost measured on 1M rows x 10
    columns, 0.55-0.66 s either way)."""
    return pa_csv.open_csv(
        _open_for_arrow(path),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        # Our names (stripped) instead of the header row: Arrow matches
        # `include_columns` against the names exactly.
        read_options=pa_csv.ReadOptions(
            block_size=block_size,
            column_names=header,
            skip_rows=1,
            # One thread (`read_ahead`'s): Arrow's threads took 6.7 s of
            # CPU against 4.7 s for 10M rows x 10 columns, in the same
            # 4.5 s, CPU the analysis's own work uses.
            use_threads=False,
        ),
        convert_options=pa_csv.ConvertOptions(
            include_columns=include,
            column_types=column_types,
            null_values=[""],
            strings_can_be_null=True,  # kept text (features are numbers)
        ),
    )


def _check_kept(path: str, header: list[str], keep: Sequence[str]) -> None:
    for name in keep:
        if name not in header:
            raise DataError(
                f"{path}: {FLAG} `{name}`: not in the header"
                f"{closest_column([name], header)}"
            )
        if header.count(name) > 1:
            raise DataError(
                f"{path}: {FLAG} `{name}`: the header names it {header.count(name)} "
                "times; a kept column must appear once"
            )


def kept_csv_types(path: str, keep: Sequence[str]) -> dict[str, pa.DataType]:
    """The kept columns' type in a CSV file: text, each cell's as it is (a
    CSV names no types; Arrow's guess would turn an id `00042` into 42);
    checks that the header names each once.

    Raises:
      DataError: the header lacks one, or names it twice.
    """
    header = _read_header(path)[0]
    _check_kept(path, header, keep)
    return {name: pa.string() for name in keep}


def check_header(path: str, config: Config) -> bool:
    """Checks that a CSV's header names every configured column once.

    Returns:
      Whether the file has at least one data row after the header.

    Raises:
      DataError: The file is empty; its header is not UTF-8 or longer than
        `MAX_HEADER_BYTES`; a configured column is not in its header or more
        than once; or the header has more elements of a vector than its
        `shape`.
    """
    header, has_rows = _read_header(path, want_rows=True)
    _check_columns(path, header, config)
    return has_rows


def read_csv_batches(
    path: str,
    config: Config,
    block_size: int = DEFAULT_BLOCK_SIZE,
    rows: int | None = None,
    keep: pa.Schema | None = None,
) -> Iterator[pa.RecordBatch]:
    """Streams one CSV file as record batches in the layout of `arrow_schema`
    (Arrow's blocks joined into batches of `rows` rows, by default
    `batch_rows`), parsed on a thread of their own a few batches ahead of the
    caller (`read_ahead`: the caller's work on a batch and the parsing of the
    next ones take both cores). With `keep`, its columns follow, of its
    types (`kept_columns`).

    Cells: a number; `nan`, `inf`, `-inf` (any case); or empty (missing).

    Raises:
      DataError: the header does not fit the config (see `check_header`), a
        cell is not a number of the feature's type or not UTF-8, a row is
        longer than `block_size`, or a gzip file is cut or corrupt; the
        message names the file, and the row and column when known.
    """
    blocks = _parse_batches(path, config, block_size, keep)
    return read_ahead(coalesced(blocks, rows or batch_rows(config)))


def _parse_batches(
    path: str, config: Config, block_size: int, keep: pa.Schema | None = None
) -> Iterator[pa.RecordBatch]:
    """`read_csv_batches` on the calling thread."""
    header = _read_header(path)[0]
    _check_columns(path, header, config)
    columns = {name: config.csv_columns(name) for name in config.features}
    column_types = {
        column: arrow_value_type(config.features[name].dtype)
        for name, names in columns.items()
        for column in names
    }
    if keep is not None:
        _check_kept(path, header, keep.names)
        column_types.update({field.name: field.type for field in keep})
    schema = arrow_schema(config)
    first_row = 1  # data rows are numbered from 1, the header is row 0
    try:
        reader = _arrow_reader(
            path, header, block_size, list(column_types), column_types
        )
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
            features = pa.RecordBatch.from_arrays(arrays, schema=schema)
            if keep is not None:
                kept = [batch.column(name) for name in keep.names]
                features = with_kept(features, kept, keep)
            yield features
    except (pa.ArrowException, UnicodeDecodeError, *_STREAM_ERRORS) as error:
        kept = keep.names if keep is not None else ()
        raise _explain(path, error, column_types, first_row, block_size, kept) from None


def _explain(
    path: str,
    error: Exception,
    column_types: dict,
    first_row: int,
    block_size: int,
    kept: Sequence[str] = (),
) -> DataError:
    """The DataError for an error Arrow raised after `first_row - 1` rows."""
    message = str(error) if not isinstance(error, UnicodeDecodeError) else ""
    if "straddl" in message:  # Arrow: "straddling object straddles two block ..."
        row = _find_long_row(path, block_size, first_row)
        where = f"row {row}" if row is not None else f"a row after row {first_row - 1}"
        return DataError(
            f"{path}: {where} is longer than the maximum row size, "
            f"{_mib(block_size)} (csv_reader.DEFAULT_BLOCK_SIZE, Arrow's block)"
        )
    if isinstance(error, _STREAM_ERRORS):
        kind = "gzip-compressed CSV" if is_gzip(path) else "CSV"
        rows = _rows_before_stream_error(path)
        where = f"at least {first_row - 1}" if rows is None else str(rows)
        if rows is not None and rows < first_row - 1:  # see its docstring
            where = str(first_row - 1)
        return DataError(
            f"{path}: cannot read the {kind} file after {where} row(s) "
            f"(truncated or corrupt?): {one_line(error)}"
        )
    located = _locate_bad_cell(path, column_types, first_row, kept)
    if located is not None:
        return DataError(f"{path}: {located}")
    return DataError(f"{path}: {_explain_arrow_error(message, column_types)}")


# Rows of cells the bad-cell finder hands Arrow at a time (`_first_unconvertible`).
_CHECK_ROWS = 4096


def _converts(cells: Sequence[str], dtype: pa.DataType) -> bool:
    """Whether Arrow's CSV reader, with the options the job reads with,
    converts every one of `cells` to `dtype`."""
    text = "x\n" + "".join(csv_field(cell, quote_empty=True) + "\n" for cell in cells)
    try:
        pa_csv.read_csv(
            io.BytesIO(text.encode("utf-8", "surrogateescape")),
            read_options=pa_csv.ReadOptions(use_threads=False),
            convert_options=pa_csv.ConvertOptions(
                column_types={"x": dtype}, null_values=[""], strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid:
        return False
    return True


def _first_unconvertible(cells: Sequence[str], dtype: pa.DataType) -> int | None:
    """The index of the first of `cells` Arrow cannot convert to `dtype`, or
    None: Arrow is the judge (its number syntax differs from Python's, and
    between its versions), asked about the whole list, then about halves."""
    if _converts(cells, dtype):
        return None
    low, high = 0, len(cells) - 1  # the first bad index is in [low, high]
    while low < high:
        middle = (low + high) // 2
        if _converts(cells[: middle + 1], dtype):
            low = middle + 1
        else:
            high = middle
    return low


def _not_utf8(cell: str) -> int | None:
    """The first byte that was not UTF-8 in a cell decoded with
    `surrogateescape`, or None."""
    for char in cell:
        if "\udc80" <= char <= "\udcff":
            return ord(char) - 0xDC00
    return None


def _locate_bad_cell(
    path: str, column_types: dict, first_row: int, kept: Sequence[str] = ()
) -> str | None:
    """Where and why a row cannot be read: the first configured cell that is
    not UTF-8 or that Arrow does not convert, or a row of the wrong number of
    cells (only on the error path), from row `first_row` on (Arrow read the
    rows before). Rows are counted as Arrow does: blank lines are none."""
    try:
        with _open_bytes(path) as raw:
            text = io.TextIOWrapper(
                raw, encoding="utf-8-sig", errors="surrogateescape", newline=""
            )
            reader = csv.reader(text)
            header = [column.strip() for column in next(reader, [])]
            positions = {
                column: header.index(column)
                for column in column_types
                if column in header
            }
            rows: list[tuple[int, list[str]]] = []
            row = 0
            for cells in reader:
                if not cells:
                    continue
                row += 1
                if row < first_row:
                    continue
                rows.append((row, cells))
                if len(rows) == _CHECK_ROWS:
                    found = _rows_problem(rows, header, positions, column_types, kept)
                    if found is not None:
                        return found
                    rows = []
            return _rows_problem(rows, header, positions, column_types, kept)
    except (csv.Error, *_STREAM_ERRORS):
        return None


def _rows_problem(
    rows: list[tuple[int, list[str]]],
    header: list[str],
    positions: dict[str, int],
    column_types: dict,
    kept: Sequence[str],
) -> str | None:
    """The first problem in `rows` (numbered), as `_locate_bad_cell` says it."""
    whole = len(rows)  # rows before the first of the wrong shape or bytes
    shape_problem = None
    for index, (row, cells) in enumerate(rows):
        if len(cells) != len(header):
            whole, shape_problem = (
                index,
                (
                    f"row {row}: holds {len(cells)} cell(s); the header has "
                    f"{len(header)} columns"
                ),
            )
            break
        for column, position in positions.items():
            byte = _not_utf8(cells[position])
            if byte is not None:
                rule = f" ({FLAG})" if column in kept else _CELL_RULE
                shape_problem = (
                    f"row {row}: column `{column}`: the cell is not UTF-8 "
                    f"text (byte 0x{byte:02x}){rule}"
                )
                break
        if shape_problem is not None:
            whole = index
            break
    first: tuple[int, str] | None = None  # (index, column)
    for column, position in positions.items():
        # Up to the row found in an earlier column, which wins a tie.
        end = whole if first is None else first[0]
        values = [cells[position] for _, cells in rows[:end]]
        index = _first_unconvertible(values, column_types[column]) if values else None
        if index is not None:
            first = (index, column)
    if first is None:
        return shape_problem
    index, column = first
    row, cell = rows[index][0], rows[index][1][positions[column]]
    dtype = column_types[column]  # a feature's: kept columns are any text
    if not cell.strip(" \t"):
        return (
            f"row {row}: column `{column}`: the cell holds only blanks (spaces or "
            "tabs); an empty one is a missing value"
        )
    kind = "integer" if pa.types.is_integer(dtype) else "number"
    return (
        f"row {row}: column `{column}`: {one_line(repr(cell))} is not a valid "
        f"{kind}{_CELL_RULE}"
    )


def _rows_before_stream_error(path: str) -> int | None:
    """The rows before the point where reading `path` fails, counted as
    Arrow counts them: lines ended by LF, CR or CRLF, blank ones skipped,
    less the header. Arrow fails a whole block at a time, so the rows it
    parsed can be far fewer (none, in a file shorter than a block). None if
    the file reads to its end this time, or past `RESCAN_LIMIT_BYTES`
    decompressed bytes (the caller then gives its lower bound). A quoted
    cell holding a line end counts as two rows (the callers take the larger
    of this and the rows Arrow read)."""
    lines = _LineCount()
    try:
        chunks = gunzipped_chunks(path) if is_gzip(path) else _plain_chunks(path)
        for chunk in chunks:
            lines.add(chunk)
            if lines.read > RESCAN_LIMIT_BYTES:
                return None
    except _STREAM_ERRORS:
        return max(lines.count - 1, 0)
    return None


class _LineCount:
    """Counts the non-blank lines of a byte stream, chunk by chunk. A line
    ends at LF or CR; the empty "line" between the CR and LF of a CRLF is
    blank, as every blank line is, and is not counted."""

    def __init__(self) -> None:
        self.count = 0  # complete non-blank lines
        self.read = 0
        self._open = False  # the current line holds a byte

    def add(self, chunk: bytes) -> None:
        self.read += len(chunk)
        data = np.frombuffer(chunk, np.uint8)
        ends = np.flatnonzero((data == ord("\n")) | (data == ord("\r")))
        if ends.size == 0:
            self._open = self._open or len(chunk) > 0
            return
        lengths = np.diff(ends, prepend=-1) - 1
        lengths[0] += int(self._open)  # its line began in an earlier chunk
        self.count += int(np.count_nonzero(lengths > 0))
        self._open = int(ends[-1]) < len(chunk) - 1


def _plain_chunks(path: str) -> Iterator[bytes]:
    with fs.open_file(path) as handle:
        while chunk := handle.read(GUNZIP_CHUNK):
            yield chunk


def _find_long_row(path: str, limit: int, first_row: int) -> int | None:
    """The number of the first row from `first_row` on (the header is row 0)
    longer than `limit` bytes, reading in bounded steps; None if there is
    none (a quoted cell may hold line ends)."""
    line, length = 0, 0
    try:
        with _open_bytes(path) as handle:
            while chunk := handle.read(1 << 20):
                ends = np.flatnonzero(np.frombuffer(chunk, np.uint8) == ord("\n"))
                if ends.size:
                    lengths = np.diff(ends, prepend=-1) - 1
                    lengths[0] += length
                    rows = line + np.arange(lengths.size)
                    over = np.flatnonzero((lengths > limit) & (rows >= first_row))
                    if over.size:
                        return line + int(over[0])
                    line += int(ends.size)
                    length = len(chunk) - int(ends[-1]) - 1
                else:
                    length += len(chunk)
                if length > limit and line >= first_row:
                    return line
    except _STREAM_ERRORS:
        return None
    return None


def _open_for_arrow(path: str):
    """A local path as Arrow reads it natively; other filesystems via
    `files`. A gzip file is decompressed as a stream."""
    compressed = is_gzip(path)
    if fs.is_local(path):
        return pa.input_stream(path, compression="gzip") if compressed else path
    # Through a Python stream: Arrow's file wrapper needs the `closed` that
    # TensorFlow's GFile lacks.
    handle = pa.PythonFile(
        io.BufferedReader(_RawFile(fs.open_file(path)), _CHUNK), mode="r"
    )
    return pa.CompressedInputStream(handle, "gzip") if compressed else handle


def _explain_arrow_error(message: str, column_types: dict) -> str:
    """Arrow's message, with the feature's expected type spelled out."""
    message = one_line(message) or "not readable as CSV"
    hint = ""
    if "conversion error" in message:
        hint = _CELL_RULE
    elif "No match for FieldRef" in message or "not found" in message:
        hint = f" (expected columns: {sorted(column_types)})"
    return message + hint
