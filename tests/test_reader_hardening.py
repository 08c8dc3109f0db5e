"""Bad input files: one `DataError` line naming the file (and the row or
record, feature or column when known), never a raw exception, a silent
misreading, a hang or unbounded memory. And inputs that look odd but are
fine (a header with spaces, a byte order mark, gzip CSV, a file whose name
does not say its format, a directory) are read.

Every table row reads as a sentence: its id. The readers are called as the
jobs call them: `resolve_inputs` (find the files, tell the format, check
each file), then `read_batches` for every file. The memory cases run in a
child process with its address space capped and a timeout, so a regression
fails instead of hanging or eating the machine.
"""

from __future__ import annotations

import gzip
import io
import os
import random
import re
import resource
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from tanhguard.errors import DataError
from tanhguard.pipeline.readers import expand_pattern, read_batches, resolve_inputs
from tanhguard.transforms.config import parse_config

ROWS = 200
CONFIG = parse_config({"features": {"x": {}, "n": {"dtype": "int"}}})
# An int vector `w` (a list column, or `w_0`, `w_1`) and a float vector `v`.
VECTORS = parse_config(
    {
        "features": {
            "w": {"dtype": "int", "shape": [2]},
            "v": {"shape": [2]},
        }
    }
)
INT64_MAX = 2**63 - 1
NOT_UTF8 = 0xFF

# --- reading ----------------------------------------------------------------


def read_all(data, fmt=None, config=CONFIG):
    """`(format, {feature: values per row})` of every file `data` names."""
    files, fmt, _ = resolve_inputs(str(data), config, fmt)
    values = {name: [] for name in config.features}
    for path in files:
        for batch in read_batches(path, config, fmt):
            for name in values:
                values[name] += batch.column(name).to_pylist()
    return fmt, values


def fails(data, match, fmt=None, config=CONFIG) -> str:
    """Reading `data` raises one `DataError` line matching `match`."""
    with pytest.raises(DataError, match=match) as caught:
        read_all(data, fmt, config)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 1000, message
    return message


# --- the user's files --------------------------------------------------------


def csv_lines(rows=ROWS):
    return [f"{i * 0.5},{i}" for i in range(rows)]


def csv_bytes(header="x,n", rows=ROWS) -> bytes:
    return ("\n".join([header, *csv_lines(rows)]) + "\n").encode()


def csv_with_bad_byte(row: int) -> bytes:
    """Row `row` (from 1) has the byte 0xff in its `x` cell."""
    lines = csv_bytes().split(b"\n")
    lines[row] = b"1" + bytes([NOT_UTF8]) + b",3"
    return b"\n".join(lines)


def reordered_crlf_csv() -> bytes:
    """A byte order mark, CRLF line ends, the columns n, note, x, note."""
    lines = [" n ,note,x ,note"] + [f"{i},a,{i * 0.5},b" for i in range(ROWS)]
    return b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n"


def parquet_bytes(tmp_path: Path, table: pa.Table) -> bytes:
    pq.write_table(table, tmp_path / "scratch.parquet")
    return (tmp_path / "scratch.parquet").read_bytes()


def usual_table() -> pa.Table:
    return pa.table({"x": [i * 0.5 for i in range(ROWS)], "n": list(range(ROWS))})


def example(i: int) -> bytes:
    feature = {
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[i * 0.5])),
        "n": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
    }
    return tf.train.Example(
        features=tf.train.Features(feature=feature)
    ).SerializeToString()


def garbage(seed: int) -> bytes:
    """Neither a tf.Example nor UTF-8: 0x0f is field 1 with wire type 7, which
    protocol buffers do not have; then random bytes."""
    rng = random.Random(seed)
    return b"\x0f\xff\xfe" + bytes(rng.randrange(256) for _ in range(40))


def tfrecord_bytes(tmp_path: Path, records, compression: str = "") -> bytes:
    scratch = tmp_path / "scratch.tfrecord"
    options = tf.io.TFRecordOptions(compression_type=compression)
    with tf.io.TFRecordWriter(str(scratch), options) as writer:
        for record in records:
            writer.write(record)
    return scratch.read_bytes()


def examples(rows=ROWS):
    return [example(i) for i in range(rows)]


def record_offset(data: bytes, record: int) -> int:
    """The byte offset of record `record` (from 1) of a plain TFRecord file."""
    offset = 0
    for _ in range(record - 1):
        offset += int.from_bytes(data[offset : offset + 8], "little") + 16
    return offset


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


# --- 1. Parquet unsigned 64-bit integers for an int feature ------------------


def uint64_scalar(tmp_path):
    n = pa.array([1, INT64_MAX, 2**63, 5], pa.uint64())
    table = pa.table({"x": [1.0, 2.0, 3.0, 4.0], "n": n})
    return write(tmp_path, "u64.parquet", parquet_bytes(tmp_path, table)), CONFIG


def uint64_list(tmp_path):
    w = pa.array([[1, 2], [INT64_MAX, 0], [3, 2**64 - 1]], pa.list_(pa.uint64()))
    table = pa.table({"w": w, "v": [[1.0, 2.0]] * 3})
    return write(tmp_path, "u64.parquet", parquet_bytes(tmp_path, table)), VECTORS


def uint64_split_vector(tmp_path):
    table = pa.table(
        {
            "w_0": pa.array([1, 2], pa.uint64()),
            "w_1": pa.array([INT64_MAX, 2**63 + 7], pa.uint64()),
            "v": [[1.0, 2.0]] * 2,
        }
    )
    return write(tmp_path, "u64.parquet", parquet_bytes(tmp_path, table)), VECTORS


@pytest.mark.parametrize(
    ("build", "match"),
    [
        pytest.param(
            uint64_scalar,
            r"u64\.parquet: row 3: feature `n`: column `n`: 9223372036854775808 is "
            r"above int64's maximum",
            id="a uint64 column of an int feature holding 2^63 in row 3, after "
            "int64's maximum in row 2, names the file, row 3 and the feature",
        ),
        pytest.param(
            uint64_list,
            r"u64\.parquet: row 3: feature `w`: 18446744073709551615 is above "
            r"int64's maximum",
            id="a list<uint64> column of an int vector holding 2^64 - 1 in row 3, "
            "after int64's maximum in row 2, names the file, row 3 and the feature",
        ),
        pytest.param(
            uint64_split_vector,
            r"u64\.parquet: row 2: feature `w`: column `w_1`: 9223372036854775815 ",
            id="uint64 columns w_0, w_1 of an int vector above int64's maximum in "
            "row 2 name the file, row 2, the feature and the column",
        ),
    ],
)
def test_uint64_beyond_int64_is_an_error_not_a_negative_number(tmp_path, build, match):
    path, config = build(tmp_path)
    fails(path, match, config=config)


def test_int64_maximum_from_uint64_and_big_integers_for_floats_are_read(tmp_path):
    # uint64 up to int64's maximum is exact; an integer list column for a
    # float vector rounds to float32 as the scalar columns do (Arrow's safe
    # cast refused integers above 2^24).
    table = pa.table(
        {
            "w": pa.array([[1, INT64_MAX], [0, 7]], pa.list_(pa.uint64())),
            "v": pa.array([[1, 2**40 + 1], [3, 4]], pa.list_(pa.int64())),
        }
    )
    path = write(tmp_path, "big.parquet", parquet_bytes(tmp_path, table))
    fmt, values = read_all(path, config=VECTORS)
    assert fmt == "parquet"
    assert values["w"] == [[1, INT64_MAX], [0, 7]]
    assert values["v"] == [[1.0, float(np.float32(2**40 + 1))], [3.0, 4.0]]


# --- 2. A plain TFRecord cut short --------------------------------------------


def cut_tfrecord(record: int, into: int):
    """200 examples, cut `into` bytes into record `record` (its 12-byte
    header: 8-byte length, 4-byte CRC; then its data)."""

    def build(tmp_path):
        data = tfrecord_bytes(tmp_path, examples())
        end = record_offset(data, record) + into
        return write(tmp_path, "cut.tfrecord", data[:end])

    return build


def tfrecord_with_tail(tmp_path):
    data = tfrecord_bytes(tmp_path, examples())
    return write(tmp_path, "tail.tfrecord", data + bytes(5))


@pytest.mark.parametrize(
    ("build", "match"),
    [
        pytest.param(
            cut_tfrecord(101, 6),
            r"cut\.tfrecord: cannot read the TFRecord file after 100 record\(s\) "
            r"\(truncated\?\)",
            id="a plain TFRecord of 200 examples cut inside record 101's header "
            "names the file instead of reading 100 rows",
        ),
        pytest.param(
            cut_tfrecord(1, 3),
            r"cut\.tfrecord: cannot read the TFRecord file after 0 record\(s\) "
            r"\(truncated\?\)",
            id="a plain TFRecord cut inside its first record's header names the "
            "file instead of being an empty file",
        ),
        pytest.param(
            tfrecord_with_tail,
            r"tail\.tfrecord: cannot read the TFRecord file after 200 record\(s\) "
            r"\(truncated\?\): the records end at byte \d+ of \d+",
            id="a plain TFRecord with 5 stray bytes after its last record names "
            "the file",
        ),
        pytest.param(
            cut_tfrecord(101, 20),
            r"^[^{}\[\]]*cut\.tfrecord: cannot read the TFRecord file after 100 "
            r"record\(s\) \(truncated or corrupt\?\): [^{}\[\]]*$",
            id="a plain TFRecord cut inside record 101's data names the file and "
            "the 100 whole records before the cut in one line, without TF's "
            "graph-node and op decorations",
        ),
    ],
)
def test_truncated_plain_tfrecord_is_an_error(tmp_path, build, match):
    fails(build(tmp_path), match)


# --- 3. Records that are not tf.Examples --------------------------------------


def with_garbage(record: int, rows: int = ROWS, compression: str = "", name=None):
    """`rows` records, record `record` (from 1) framed garbage."""

    def build(tmp_path):
        records = examples(rows)
        records[record - 1] = garbage(record)
        data = tfrecord_bytes(tmp_path, records, compression)
        return write(tmp_path, name or "garbage.tfrecord", data)

    return build


@pytest.mark.parametrize(
    ("build", "match"),
    [
        pytest.param(
            with_garbage(101),
            r"garbage\.tfrecord: record 101: not a valid tf\.Example",
            id="framed garbage that is not UTF-8 as record 101 names the file and "
            "record 101, not a UnicodeDecodeError",
        ),
        pytest.param(
            with_garbage(1),
            r"garbage\.tfrecord: record 1: not a valid tf\.Example",
            id="framed garbage as record 1 is named by the check before the "
            "pipeline starts",
        ),
        pytest.param(
            with_garbage(8195, rows=8200),
            r"garbage\.tfrecord: record 8195: not a valid tf\.Example",
            id="framed garbage as record 8195, in the second batch, names record 8195",
        ),
        pytest.param(
            with_garbage(3, compression="GZIP", name="garbage.tfrecord.gz"),
            r"garbage\.tfrecord\.gz: record 3: not a valid tf\.Example",
            id="framed garbage as record 3 of a gzip TFRecord names the file and "
            "record 3",
        ),
    ],
)
def test_record_that_is_not_a_tf_example_names_file_and_record(tmp_path, build, match):
    fails(build(tmp_path), match)


# --- 4. CSV encodings and headers ---------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        pytest.param(
            "header.csv",
            b"x" + bytes([NOT_UTF8]) + b",n\n1,2\n",
            r"header\.csv: the header \(row 0\) is not UTF-8 text: byte 0xff",
            id="a header with a byte that is not UTF-8 names the file and the byte",
        ),
        pytest.param(
            "cell.csv",
            csv_with_bad_byte(57),
            r"cell\.csv: row 57: column `x`: the cell is not UTF-8 text \(byte 0xff\)",
            id="a cell with a byte that is not UTF-8 names the file, row 57 and the "
            "column",
        ),
        pytest.param(
            "dup.csv",
            b"x,n,x\n1,2,3\n",
            r"dup\.csv: feature `x`: column `x` appears 2 times in the header",
            id="a header naming the configured column x twice names x as duplicated",
        ),
        pytest.param(
            "dup.csv",
            b" n ,x, n\n1,2,3\n",
            r"dup\.csv: feature `n`: column `n` appears 2 times in the header",
            id="a header naming n twice, once with spaces around it, names n as "
            "duplicated",
        ),
        pytest.param(
            "cell.csv.gz",
            gzip.compress(csv_with_bad_byte(7)),
            r"cell\.csv\.gz: row 7: column `x`: the cell is not UTF-8 text",
            id="a gzip CSV with a cell that is not UTF-8 names the file and row 7",
        ),
        pytest.param(
            "int.csv.gz",
            gzip.compress(csv_bytes().replace(b"\n9.5,19\n", b"\n9.5,19.5\n")),
            r"int\.csv\.gz: row 20: column `n`: '19\.5' is not a valid integer",
            id="a gzip CSV with a fraction for an int feature names the file, row 20 "
            "and the column",
        ),
        pytest.param(
            "big.csv",
            csv_bytes().replace(b"\n2.0,4\n", b"\n2.0,9223372036854775808\n"),
            r"big\.csv: row 5: column `n`: '9223372036854775808' is not a valid "
            r"integer",
            id="an int cell of 2^63, above int64's maximum, names the file, row 5 "
            "and the column",
        ),
        pytest.param(
            "cut.csv.gz",
            gzip.compress(csv_bytes(rows=50_000))[:-4000],
            r"cut\.csv\.gz: cannot read the gzip-compressed CSV file after \d+ "
            r"row\(s\) \(truncated or corrupt\?\)",
            id="a gzip CSV cut short names the file as truncated",
        ),
    ],
)
def test_bad_csv_names_file_and_row(tmp_path, name, content, match):
    fails(write(tmp_path, name, content), match)


# Cells where Python's float() and int() and Arrow's CSV reader disagree, or
# nearly do.
CELL_SPELLINGS = [
    *[" 1", "1 ", "\t1", " ", "   ", "1_000", "+1", "+1.5", "+inf", "+0x10"],
    *["4.5\u00a0", "\u20031", "nan(0x1)", "0x00000000000000001", "+1,2"],
    *[".5", "5.", "1e5", "1E+5", "nan", "-nan", "inf", "-Inf", "infinity"],
    *["0x10", "-0x10", "0X1f", "0x", "0xffffffffffffffff", "0x10000000000000000"],
    *["\u0661", "\uff11", "\u22121", "- 1", "1 2", "00012", "1d"],
    *["9223372036854775807", "9223372036854775808", "-9223372036854775808"],
]


@pytest.mark.parametrize("column", ["x", "n"], ids=["a float", "an int"])
def test_the_bad_cell_finder_blames_the_cell_arrow_refuses(tmp_path, column):
    """Row 5 holds a spelling, row 9 `oops`: the error names row 5 when Arrow,
    reading the file whole, refuses the spelling, else row 9. Python's float()
    and int() take other spellings than Arrow does (`1_000`, other scripts'
    digits, NBSP around a number, `nan(0x1)`, 17 hex digits), and Arrow's
    versions differ (`+1`)."""
    wanted = {"x": pa.float32(), "n": pa.int64()}[column]
    position = 0 if column == "x" else 1

    def with_cells(replaced: dict[int, str]) -> bytes:
        lines = csv_bytes().decode().split("\n")
        for row, value in replaced.items():
            cells = lines[row].split(",")
            cells[position] = value if "," not in value else f'"{value}"'
            lines[row] = ",".join(cells)
        return "\n".join(lines).encode()

    for cell in CELL_SPELLINGS:
        try:  # the oracle: Arrow reads the file with the spelling alone
            pa_csv.read_csv(
                io.BytesIO(with_cells({5: cell})),
                convert_options=pa_csv.ConvertOptions(
                    column_types={column: wanted}, null_values=[""]
                ),
            )
            refused = False
        except pa.ArrowInvalid:
            refused = True
        path = write(tmp_path, f"{column}.csv", with_cells({5: cell, 9: "oops"}))
        row = 5 if refused else 9
        fails(path, rf"{column}\.csv: row {row}: column `{column}`: ")


@pytest.mark.parametrize(
    ("cell", "why"),
    [
        ("1_000", r"'1_000' is not a valid number \(cells must"),
        ("\uff11", r"'\uff11' is not a valid number \(cells must"),
        (
            "   ",
            r"the cell holds only blanks \(spaces or tabs\); an empty one is "
            r"a missing value$",
        ),
    ],
    ids=["digit-group underscore", "a full-width digit", "spaces only"],
)
def test_a_cell_python_would_read_is_named_by_row_and_column(tmp_path, cell, why):
    lines = csv_bytes().decode().split("\n")
    lines[10] = f"{cell},3"
    path = write(tmp_path, "odd.csv", "\n".join(lines).encode())
    fails(path, rf"^\S*odd\.csv: row 10: column `x`: {why}")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_misspelled_column_gets_the_closest_name_in_the_file(tmp_path, fmt):
    table = pa.table({"x_value": [1.0, 2.0], "n": [1, 2]})  # config: `x`, `n`
    config = parse_config({"features": {"x_val": {}, "n": {"dtype": "int"}}})
    if fmt == "csv":
        path = write(tmp_path, "t.csv", b"x_value,n\n1.0,1\n2.0,2\n")
    else:
        path = write(tmp_path, "t.parquet", parquet_bytes(tmp_path, table))
    fails(
        path,
        r"t\.(csv|parquet): feature `x_val`: column\(s\) \['x_val'\] not in the "
        r"(header|file) \(did you mean `x_value`\?\)",
        config=config,
    )


def test_a_csv_whose_first_row_is_numbers_is_told_to_start_with_a_header(tmp_path):
    message = fails(write(tmp_path, "t.csv", b"1.5,2\n3,4\n"), r"not in the header")
    assert "The first row must be a header naming the columns" in message
    named = fails(write(tmp_path, "u.csv", b"a,b\n3,4\n"), r"not in the header")
    assert "must be a header" not in named and "did you mean" not in named


def test_an_int_feature_stored_as_floats_by_pandas_gets_the_ways_out(tmp_path):
    table = pa.table({"x": [1.0, 2.0], "n": pa.array([1.0, None], pa.float64())})
    path = write(tmp_path, "t.parquet", parquet_bytes(tmp_path, table))
    fails(
        path,
        r"column `n` has type double; `dtype: int` needs an integer column \(pandas "
        r"writes .* set `dtype: float` for the feature, or write the column as "
        r"pandas' nullable `Int64`\)",
    )


def cut_gzip_csv(tmp_path) -> tuple[Path, int]:
    """A gzip CSV of 50,000 rows (under one Arrow block) cut in half, and the
    rows before the cut: zlib decompresses what the cut stream holds; its
    complete lines, less the header."""
    data = gzip.compress(csv_bytes(rows=50_000))
    cut = data[: len(data) // 2]
    readable = zlib.decompressobj(wbits=31).decompress(cut)
    return write(tmp_path, "cut.csv.gz", cut), readable.count(b"\n") - 1


def test_a_cut_gzip_csv_names_the_rows_before_the_cut(tmp_path):
    """Arrow fails the whole block the cut is in, here the file's only one:
    the message counts the rows that decompress before it, not Arrow's 0."""
    path, rows = cut_gzip_csv(tmp_path)
    assert rows > 10_000
    fails(
        path,
        rf"^\S*cut\.csv\.gz: cannot read the gzip-compressed CSV file after "
        rf"{rows} row\(s\) \(truncated or corrupt\?\): ",
    )


@pytest.mark.parametrize(
    "ending",
    ["\r", "\r\n", "\n\n", "\r\n\r\n"],
    ids=["CR", "CRLF", "blank", "CRLF blank"],
)
def test_a_cut_gzip_csv_counts_rows_as_arrow_does(tmp_path, ending):
    """Arrow ends a line at LF, CR or CRLF and skips blank lines: so does the
    count of the rows before a cut. The oracle splits what zlib decompresses
    of the cut stream at those line ends and counts the complete lines that
    are not empty, less the header."""
    text = ending.join(csv_bytes(rows=50_000).decode().split("\n"))
    data = gzip.compress(text.encode())
    cut = data[: len(data) // 2]
    readable = zlib.decompressobj(wbits=31).decompress(cut)
    lines = re.split(rb"\r\n|\r|\n", readable)[:-1]  # the last is cut short
    rows = sum(1 for line in lines if line) - 1
    assert rows > 10_000
    path = write(tmp_path, "cut.csv.gz", cut)
    fails(
        path, rf"cut\.csv\.gz: cannot read the gzip-compressed CSV file after {rows} "
    )


def test_a_small_cut_gzip_csv_names_its_rows_not_the_header(tmp_path):
    """Cut within the first 64 KiB it decompresses to: the header is whole,
    and it is the rows that are cut."""
    data = gzip.compress(csv_bytes(rows=3000))
    cut = data[: len(data) * 9 // 10]
    readable = zlib.decompressobj(wbits=31).decompress(cut)
    assert len(readable) < 1 << 16
    rows = readable.count(b"\n") - 1
    fails(
        write(tmp_path, "small.csv.gz", cut),
        rf"small\.csv\.gz: cannot read the gzip-compressed CSV file after {rows} ",
    )


def test_past_the_rescan_limit_a_cut_gzip_csv_names_a_lower_bound(
    tmp_path, monkeypatch
):
    from tanhguard.pipeline import csv_reader

    monkeypatch.setattr(csv_reader, "RESCAN_LIMIT_BYTES", 1000)
    path, _ = cut_gzip_csv(tmp_path)
    fails(path, r"cut\.csv\.gz: .* after at least 0 row\(s\) \(truncated")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        pytest.param(
            "spaced.csv",
            csv_bytes(header=" x , n "),
            id="a header with spaces around the names is read: they are stripped",
        ),
        pytest.param(
            "bom.csv",
            b"\xef\xbb\xbf" + csv_bytes(),
            id="a CSV starting with a UTF-8 byte order mark is read: it is ignored",
        ),
        pytest.param(
            "crlf.csv",
            reordered_crlf_csv(),
            id="a byte order mark, CRLF line ends, spaced names in another order "
            "and an unread column named twice are read",
        ),
        pytest.param(
            "data.csv.gz",
            gzip.compress(csv_bytes()),
            id="a gzip CSV named .csv.gz is read",
        ),
        pytest.param(
            "export-0001",
            gzip.compress(b"\xef\xbb\xbf" + csv_bytes(header=" x , n ")),
            id="a gzip CSV with no suffix, a byte order mark and spaced names is read",
        ),
        pytest.param(
            "members.csv.gz",
            gzip.compress(csv_bytes(rows=100))
            + gzip.compress(("\n".join(csv_lines()[100:]) + "\n").encode()),
            id="a gzip CSV of two gzip members (concatenated files) is read whole",
        ),
    ],
)
def test_odd_but_valid_csv_is_read(tmp_path, name, content):
    fmt, values = read_all(write(tmp_path, name, content))
    assert fmt == "csv"
    assert values["n"] == [[i] for i in range(ROWS)]
    assert values["x"] == [[i * 0.5] for i in range(ROWS)]


# --- 5. Parquet duplicate column names ----------------------------------------


@pytest.mark.parametrize(
    ("columns", "config", "match"),
    [
        pytest.param(
            ["x", "n", "x"],
            CONFIG,
            r"dup\.parquet: feature `x`: the file has 2 columns named `x`",
            id="a Parquet file with two columns named x names x as duplicated",
        ),
        pytest.param(
            ["w_0", "w_1", "v", "w_1"],
            VECTORS,
            r"dup\.parquet: feature `w`: the file has 2 columns named `w_1`",
            id="a Parquet file with two columns w_1 of a split vector names w_1",
        ),
    ],
)
def test_parquet_duplicate_column_names_the_column(tmp_path, columns, config, match):
    arrays = [
        pa.array([[1.0, 2.0]] * 3) if name == "v" else pa.array([1, 2, 3])
        for name in columns
    ]
    table = pa.Table.from_arrays(arrays, names=columns)
    path = write(tmp_path, "dup.parquet", parquet_bytes(tmp_path, table))
    fails(path, match, config=config)


# --- 6. The format from the content -------------------------------------------


def parquet_file(name):
    def build(tmp_path):
        return write(tmp_path, name, parquet_bytes(tmp_path, usual_table()))

    return build


def tfrecord_file(name, compression=""):
    def build(tmp_path):
        return write(tmp_path, name, tfrecord_bytes(tmp_path, examples(), compression))

    return build


def csv_file(name, compress=False):
    def build(tmp_path):
        data = csv_bytes()
        return write(tmp_path, name, gzip.compress(data) if compress else data)

    return build


def tfx_shards(tmp_path):
    """TFX ExampleGen's output: gzip TFRecord shards named `.gz` and an empty
    shard (its content cannot tell; the others do)."""
    records = examples()
    for i, part in enumerate((records[:120], records[120:], [])):
        data = tfrecord_bytes(tmp_path, part, "GZIP")
        write(tmp_path, f"Split-train/data_tfrecord-0000{i}-of-00003.gz", data)
    return tmp_path / "Split-train" / "data_tfrecord-*.gz"


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        pytest.param(
            parquet_file("table.csv"),
            "parquet",
            id="a Parquet file named .csv is read as Parquet",
        ),
        pytest.param(
            tfrecord_file("examples"),
            "tfrecord",
            id="a TFRecord file with no suffix is read as TFRecord",
        ),
        pytest.param(
            tfrecord_file("data_tfrecord-00000-of-00001.gz", "GZIP"),
            "tfrecord",
            id="TFX ExampleGen's data_tfrecord-00000-of-00001.gz is read as gzip "
            "TFRecord",
        ),
        pytest.param(
            tfx_shards,
            "tfrecord",
            id="TFX shards named .gz, one of them empty, are read as gzip TFRecord",
        ),
        pytest.param(
            csv_file("rows.tfrecord"),
            "csv",
            id="a CSV named .tfrecord is read as CSV",
        ),
        pytest.param(
            csv_file("rows.gz", compress=True),
            "csv",
            id="a gzip CSV named .gz is read as CSV",
        ),
        pytest.param(
            parquet_file("part-0.bin"),
            "parquet",
            id="a Parquet file named .bin is read as Parquet",
        ),
    ],
)
def test_format_comes_from_the_content(tmp_path, build, expected):
    fmt, values = read_all(build(tmp_path))
    assert fmt == expected
    assert values["n"] == [[i] for i in range(ROWS)]


@pytest.mark.parametrize(
    ("build", "given", "match"),
    [
        pytest.param(
            parquet_file("data.parquet"),
            "csv",
            r"data\.parquet: --format csv was given, but the file is parquet: it "
            r"starts with Parquet's magic bytes PAR1",
            id="--format csv on a Parquet file names the file, csv and parquet",
        ),
        pytest.param(
            parquet_file("table.csv"),
            "csv",
            r"table\.csv: --format csv was given, but the file is parquet",
            id="--format csv on a Parquet file named .csv names the file, csv and "
            "parquet",
        ),
        pytest.param(
            parquet_file("data.parquet"),
            "tfrecord",
            r"data\.parquet: --format tfrecord was given, but the file is parquet",
            id="--format tfrecord on a Parquet file names both formats",
        ),
        pytest.param(
            tfrecord_file("data.tfrecord.gz", "GZIP"),
            "csv",
            r"data\.tfrecord\.gz: --format csv was given, but the file is tfrecord: "
            r"it starts with gzip-compressed TFRecord framing",
            id="--format csv on a gzip TFRecord names both formats",
        ),
        pytest.param(
            tfrecord_file("data.tfrecord"),
            "parquet",
            r"data\.tfrecord: --format parquet was given, but the file is tfrecord",
            id="--format parquet on a plain TFRecord names both formats",
        ),
        pytest.param(
            csv_file("data.csv"),
            "parquet",
            r"data\.csv: --format parquet was given, but the file is csv: it is text",
            id="--format parquet on a CSV names both formats",
        ),
        pytest.param(
            csv_file("data.csv.gz", compress=True),
            "tfrecord",
            r"data\.csv\.gz: --format tfrecord was given, but the file is csv: it is "
            r"gzip-compressed text",
            id="--format tfrecord on a gzip CSV names both formats",
        ),
    ],
)
def test_format_flag_contradicting_the_content_is_an_error(
    tmp_path, build, given, match
):
    fails(build(tmp_path), match, fmt=given)


# --- 7. Memory and time bounds, in a capped child process ----------------------

ADDRESS_SPACE = 6 << 30
CHILD_TIMEOUT = 120  # seconds; the child fails far sooner
_CHILD = r"""
import sys
from tanhguard.errors import DataError
from tanhguard.pipeline.readers import read_batches, resolve_inputs
from tanhguard.transforms.config import parse_config

config = parse_config({"features": {"x": {}, "n": {"dtype": "int"}}})
data, fmt = sys.argv[1], sys.argv[2] or None
try:
    files, fmt, _ = resolve_inputs(data, config, fmt)
    for path in files:
        for _ in read_batches(path, config, fmt):
            pass
except DataError as error:
    print("DataError:", error)
    sys.exit(0)
print("read without an error")
sys.exit(3)
"""


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def fails_in_a_capped_child(tmp_path: Path, data: str, fmt: str | None) -> str:
    """Reads `data` in a child process (address space `ADDRESS_SPACE`, killed
    after `CHILD_TIMEOUT` s): its DataError line."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, data, fmt or ""],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
            preexec_fn=_cap_memory,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"reading {data} did not end within {CHILD_TIMEOUT} s")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("DataError: "), done.stdout
    return lines[0]


def zeros_file(tmp_path):
    """1 GiB of zero bytes without a line end (sparse: no disk used)."""
    with open(tmp_path / "zeros.csv", "wb") as handle:
        handle.truncate(1 << 30)
    return "zeros.csv"


def gzip_bomb(tmp_path):
    """A gzip file of 1 MiB that decompresses to 512 MiB of `x`, no line end."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"x" * (1 << 20)
    with open(tmp_path / "bomb.csv.gz", "wb") as handle:
        for _ in range(512):
            handle.write(compressor.compress(block))
        handle.write(compressor.flush())
    return "bomb.csv.gz"


def long_row(tmp_path):
    """10 good rows, then row 11 whose `x` is 40 MiB of digits."""
    with open(tmp_path / "long.csv", "wb") as handle:
        handle.write(csv_bytes(rows=10))
        for _ in range(40):
            handle.write(b"1" * (1 << 20))
        handle.write(b",3\n4,5\n")
    return "long.csv"


def fifo(tmp_path):
    os.mkfifo(tmp_path / "pipe.csv")
    return "pipe.csv"


@pytest.mark.parametrize(
    ("build", "fmt", "match"),
    [
        pytest.param(
            lambda tmp_path: "/dev/zero",
            "csv",
            r"^DataError: /dev/zero: a character device, not a regular file",
            id="--data /dev/zero --format csv is refused as a character device",
        ),
        pytest.param(
            fifo,
            "csv",
            r"^DataError: pipe\.csv: a FIFO \(named pipe\), not a regular file",
            id="a FIFO as --data is refused without waiting for a writer",
        ),
        pytest.param(
            zeros_file,
            "csv",
            r"^DataError: zeros\.csv: the header line is longer than 4 MiB",
            id="a 1 GiB file of zero bytes with --format csv fails on its header "
            "line's length",
        ),
        pytest.param(
            gzip_bomb,
            None,
            r"^DataError: bomb\.csv\.gz: the header line is longer than 4 MiB",
            id="a gzip CSV inflating to 512 MiB without a line end fails on its "
            "header line's length",
        ),
        pytest.param(
            long_row,
            None,
            r"^DataError: long\.csv: row 11 is longer than the maximum row size, "
            r"4 MiB",
            id="a CSV row of 40 MiB names the file, row 11 and the maximum row size",
        ),
    ],
)
def test_endless_or_huge_input_fails_with_bounded_memory(tmp_path, build, fmt, match):
    line = fails_in_a_capped_child(tmp_path, build(tmp_path), fmt)
    assert re.search(match, line), line


# --- 8. A directory as --data -------------------------------------------------


def spark_output(tmp_path):
    """Parquet parts with the files a Spark or Beam job leaves beside them,
    and a FIFO (not read: it could block forever)."""
    folder = tmp_path / "out"
    table = usual_table()
    write(folder, "part-00000.parquet", parquet_bytes(tmp_path, table.slice(0, 120)))
    write(folder, "part-00001", parquet_bytes(tmp_path, table.slice(120)))
    write(folder, "_SUCCESS", b"")
    write(folder, ".part-00000.parquet.crc", b"\x00crc")
    write(folder, "_temporary/0/part-00002.parquet", b"not here")
    os.mkfifo(folder / "progress.pipe")
    return folder


@pytest.mark.parametrize(
    "suffix",
    [
        pytest.param(
            "",
            id="a directory as --data means its regular data files: not _SUCCESS, "
            ".crc files, subdirectories or a FIFO",
        ),
        pytest.param(
            "/", id="a directory with a trailing slash means its regular data files"
        ),
    ],
)
def test_directory_means_its_data_files(tmp_path, suffix):
    folder = spark_output(tmp_path)
    files = expand_pattern(str(folder) + suffix)
    assert [os.path.basename(path) for path in files] == [
        "part-00000.parquet",
        "part-00001",
    ]
    fmt, values = read_all(str(folder) + suffix)
    assert fmt == "parquet"
    assert values["n"] == [[i] for i in range(ROWS)]


@pytest.mark.parametrize(
    "hidden",
    [
        pytest.param(
            ["_SUCCESS", ".crc"],
            id="a directory of only hidden files (_SUCCESS, .crc) is an error naming "
            "it",
        ),
    ],
)
def test_directory_without_data_files_is_an_error(tmp_path, hidden):
    for name in hidden:
        write(tmp_path / "empty", name, b"")
    (tmp_path / "empty" / "sub").mkdir()
    fails(tmp_path / "empty", r"empty: the directory holds no data file")


@pytest.mark.parametrize("pattern", ["", "/*"], ids=["directory", "glob"])
def test_the_config_file_beside_the_data_is_not_read_as_data(tmp_path, pattern):
    folder = tmp_path / "my data"
    write(folder, "part.csv", csv_bytes())
    config = write(folder, "my config.yaml", b"features:\n  x: {}\n  n: {}\n")
    # As a link too: the same file under another name.
    (tmp_path / "link.yaml").symlink_to(config)
    data = str(folder) + pattern
    files, fmt, _ = resolve_inputs(data, CONFIG, exclude=[tmp_path / "link.yaml"])
    assert [os.path.basename(f) for f in files] == ["part.csv"] and fmt == "csv"
    # Unnamed, the config is left out of a directory (as YAML: `transform`
    # and `check` have no --config); a glob would read it as a CSV.
    files, _, _ = resolve_inputs(str(folder), CONFIG)
    assert [os.path.basename(f) for f in files] == ["part.csv"]
    if pattern:
        with pytest.raises(DataError, match=r"my config\.yaml: feature `x`: column"):
            resolve_inputs(data, CONFIG)
    (folder / "part.csv").unlink()
    with pytest.raises(DataError, match=r"holds no data file|YAML and JSON files"):
        resolve_inputs(data, CONFIG, exclude=[config])


def test_a_local_glob_matches_as_pythons_glob_does(tmp_path):
    """`*` does not match a leading `.` (a checksum file beside its data, as a
    shell glob); a pattern naming the dot does."""
    folder = spark_output(tmp_path)
    files = expand_pattern(str(folder / "*.parquet"))
    assert [os.path.basename(path) for path in files] == ["part-00000.parquet"]
    dotted = expand_pattern(str(folder / ".*.crc"))
    assert [os.path.basename(path) for path in dotted] == [".part-00000.parquet.crc"]
