"""CSV, Parquet and TFRecord (plain and gzip, many files) give the same
statistics; bad files fail with an error naming them and leave no output."""

import gzip
import re
import struct
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from tanhguard.errors import DataError
from tanhguard.pipeline import csv_reader, tfrecord_reader
from tanhguard.pipeline.analyze import run_analyze
from tanhguard.pipeline.readers import detect_format, read_batches
from tanhguard.transforms.config import parse_config

ROWS = 1500
CONFIG = parse_config(
    {
        "features": {
            "x": {"clip": "mad", "indicators": ["missing"]},
            "n": {"dtype": "int", "clip": "minmax"},
            "v": {"shape": [2], "scale": "robust"},
        }
    }
)


def _columns():
    rng = np.random.default_rng(4)
    x = (rng.standard_t(2, ROWS) * 10).astype(np.float32)
    x[::50] = np.nan
    x[3::97] = np.inf
    missing_x = np.zeros(ROWS, bool)
    missing_x[7::61] = True
    n = rng.integers(-3, 400, ROWS)
    v = rng.normal(0, [1, 50], (ROWS, 2)).astype(np.float32)
    return x, missing_x, n, v


def _write_csv(path, rows):
    x, missing_x, n, v = _columns()
    with open(path, "w") as handle:
        handle.write("x,n,v_0,v_1\n")
        for i in rows:
            cell = "" if missing_x[i] else repr(float(x[i]))
            handle.write(f"{cell},{n[i]},{float(v[i, 0])!r},{float(v[i, 1])!r}\n")


def _write_parquet(path, rows):
    x, missing_x, n, v = _columns()
    rows = list(rows)
    table = pa.table(
        {
            "x": pa.array(x[rows], mask=missing_x[rows]),
            "n": pa.array(n[rows]),
            "v": pa.array([list(map(float, v[i])) for i in rows]),
            "other": pa.array(["text"] * len(rows)),
        }
    )
    pq.write_table(table, path)


def _example(x, missing, n, v):
    feature = {
        "n": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(n)])),
        "v": tf.train.Feature(float_list=tf.train.FloatList(value=list(map(float, v)))),
    }
    if not missing:
        feature["x"] = tf.train.Feature(float_list=tf.train.FloatList(value=[x]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def _write_tfrecord(path, rows, gzip_it=False):
    x, missing_x, n, v = _columns()
    options = tf.io.TFRecordOptions(compression_type="GZIP" if gzip_it else "")
    with tf.io.TFRecordWriter(str(path), options) as writer:
        for i in rows:
            example = _example(float(x[i]), missing_x[i], n[i], v[i])
            writer.write(example.SerializeToString())


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    root = tmp_path_factory.mktemp("readers")
    halves = (range(0, 900), range(900, ROWS))
    _write_csv(root / "all.csv", range(ROWS))
    for i, rows in enumerate(halves):
        _write_parquet(root / f"part-{i}.parquet", rows)
        _write_tfrecord(root / f"part-{i}.tfrecord", rows)
        _write_tfrecord(root / f"part-{i}.tfrecord.gz", rows, gzip_it=True)
    # One file of two gzip members (what concatenating gzip files gives).
    members = b"".join(
        gzip.compress((root / f"part-{i}.tfrecord").read_bytes()) for i in (0, 1)
    )
    (root / "members.tfrecord.gz").write_bytes(members)
    patterns = {
        "csv": "all.csv",
        "parquet": "part-*.parquet",
        "tfrecord": "part-?.tfrecord",
        "tfrecord_gzip": "part-*.tfrecord.gz",
        "tfrecord_gzip_members": "members.tfrecord.gz",
    }
    paths = {kind: str(root / pattern) for kind, pattern in patterns.items()}
    # On another filesystem (TensorFlow's in-memory one, read through
    # `tf.io.gfile` as `gs://` is), plain and gzip.
    text = (root / "all.csv").read_bytes()
    remote = f"ram://readers-{root.name}"
    tf.io.gfile.makedirs(remote)
    for name, data in (("all.csv", text), ("all.csv.gz", gzip.compress(text))):
        with tf.io.gfile.GFile(f"{remote}/{name}", "wb") as handle:
            handle.write(data)
    paths["csv_remote"] = f"{remote}/all.csv"
    paths["csv_remote_gzip"] = f"{remote}/all.csv.gz"
    return {
        kind: run_analyze(CONFIG, path, root / f"out_{kind}")
        for kind, path in paths.items()
    }


@pytest.mark.parametrize(
    "kind",
    [
        "parquet",
        "tfrecord",
        "tfrecord_gzip",
        "tfrecord_gzip_members",
        "csv_remote",
        "csv_remote_gzip",
    ],
)
def test_every_format_gives_the_statistics_of_the_csv(analyzed, kind):
    csv, other = analyzed["csv"], analyzed[kind]
    assert other["num_rows"] == csv["num_rows"] == ROWS
    assert other["data"]["format"] == kind.split("_")[0]
    for name, feature in csv["features"].items():
        got = other["features"][name]
        for key in ("count", "missing", "nan", "pos_inf", "min", "max", "quantiles"):
            assert got[key] == feature[key], (kind, name, key)
        for key in ("mean", "std"):
            np.testing.assert_allclose(got[key], feature[key], rtol=1e-9)
        assert got["clip"] == feature["clip"], (kind, name)
        np.testing.assert_allclose(
            got["scale"]["scale"], feature["scale"]["scale"], rtol=1e-6
        )
    one_file = ("csv", "tfrecord_gzip_members", "csv_remote", "csv_remote_gzip")
    assert len(other["data"]["files"]) == (1 if kind in one_file else 2)


def test_format_comes_from_the_suffix_or_the_flag():
    assert detect_format(["a.csv", "b.CSV"]) == "csv"
    assert detect_format(["a.tfrecord.gz", "b.tfrecords"]) == "tfrecord"
    assert detect_format(["a.pq", "b.parquet"]) == "parquet"
    assert detect_format(["data-0001"], "tfrecord") == "tfrecord"
    with pytest.raises(DataError, match=r"data-0001: cannot tell the format"):
        detect_format(["data-0001"])
    with pytest.raises(DataError, match=r"the files mix formats"):
        detect_format(["a.csv", "b.parquet"])


def _fails_cleanly(tmp_path, data, match, fmt=None):
    output = tmp_path / "out"
    with pytest.raises(DataError, match=match):
        run_analyze(CONFIG, str(data), output, fmt=fmt)
    assert not output.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_parquet_column_of_the_wrong_type_names_file_and_feature(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(
        pa.table({"x": ["a", "b"], "n": [1, 2], "v": [[1.0, 2.0], [3.0, 4.0]]}), path
    )
    _fails_cleanly(
        tmp_path, path, r"bad.parquet: feature `x`: column `x` has type string"
    )


def test_parquet_float_column_for_an_int_feature_is_an_error(tmp_path):
    path = tmp_path / "floaty.parquet"
    pq.write_table(
        pa.table({"x": [1.0, 2.0], "n": [1.5, 2.0], "v": [[1.0, 2.0], [3.0, 4.0]]}),
        path,
    )
    _fails_cleanly(tmp_path, path, r"floaty.parquet: feature `n`: .*needs an integer")


def test_tfrecord_that_is_not_tf_example_names_the_file(tmp_path):
    path = tmp_path / "junk.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(b"not a protocol buffer at all")
    _fails_cleanly(tmp_path, path, r"junk.tfrecord: record 1: not a valid tf.Example")


def test_bad_record_after_good_ones_is_named_with_its_number(tmp_path):
    path = tmp_path / "mixed.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for _ in range(1200):
            writer.write(_example(1.0, False, 2, [1.0, 2.0]).SerializeToString())
        writer.write(b"not a protocol buffer at all")  # record 1201
        writer.write(_example(1.0, False, 2, [1.0, 2.0]).SerializeToString())
    _fails_cleanly(
        tmp_path, path, r"mixed.tfrecord: record 1201: not a valid tf.Example"
    )


def test_float_values_for_an_int_feature_name_the_record(tmp_path):
    path = tmp_path / "typed.tfrecord"
    good = _example(1.0, False, 2, [1.0, 2.0])
    bad = _example(1.0, False, 2, [1.0, 2.0])
    bad.features.feature["n"].CopyFrom(
        tf.train.Feature(float_list=tf.train.FloatList(value=[2.5]))
    )
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(good.SerializeToString())
        writer.write(bad.SerializeToString())
    _fails_cleanly(tmp_path, path, r"typed.tfrecord: record 2: not a valid tf.Example")


def test_truncated_gzip_tfrecord_names_the_file(tmp_path):
    good = tmp_path / "whole.tfrecord.gz"
    _write_tfrecord(good, range(ROWS), gzip_it=True)
    data = good.read_bytes()
    cut = tmp_path / "cut.tfrecord.gz"
    cut.write_bytes(data[: len(data) // 2])
    # The records before the cut: the whole frames in what zlib decompresses
    # of the cut stream.
    readable = zlib.decompressobj(wbits=31).decompress(cut.read_bytes())
    whole = [r for r in _records(readable) if len(r) == _framed_length(r)]
    assert 0 < len(whole) < ROWS
    _fails_cleanly(
        tmp_path,
        cut,
        rf"cut.tfrecord.gz: cannot read the TFRecord file after {len(whole)} "
        r"record\(s\) \(truncated or corrupt\?\)",
    )
    assert gzip.decompress(data)  # the original is intact


def _framed_length(record: bytes) -> int:
    """The length a framed record declares: its data and 16 framing bytes."""
    return struct.unpack("<Q", record[:8])[0] + 16 if len(record) >= 8 else 16


def _records(data):
    """Splits the bytes of a plain TFRecord file into its framed records."""
    records, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        records.append(data[offset : offset + length + 16])
        offset += length + 16
    return records


def test_gzip_tfrecord_cut_at_a_record_boundary_is_an_error(tmp_path):
    # TF's gzip reader ends cleanly when the stream stops between two
    # records; a full flush after every record puts such a cut at a known
    # byte, here after 745 of the 1500 records.
    plain = tmp_path / "plain.tfrecord"
    _write_tfrecord(plain, range(ROWS))
    compressor = zlib.compressobj(wbits=31)
    chunks = []
    for record in _records(plain.read_bytes())[:745]:
        chunks.append(compressor.compress(record))
        chunks.append(compressor.flush(zlib.Z_FULL_FLUSH))
    cut = tmp_path / "cut.tfrecord.gz"
    cut.write_bytes(b"".join(chunks))
    assert len(list(tf.data.TFRecordDataset(str(cut), "GZIP"))) == 745
    _fails_cleanly(
        tmp_path,
        cut,
        r"cut.tfrecord.gz: cannot read the TFRecord file after 745 record\(s\) "
        r"\(truncated\?\): the gzip stream ends before its end marker",
    )


def test_gunzipped_size_counts_every_member_in_bounded_steps(tmp_path):
    # Zeros compress about 1000:1, so one 1 MB read of the file decompresses
    # to far more than a 1 MB step.
    parts = [bytes(3 << 20), b"tail" * 1000]
    path = tmp_path / "two.gz"
    path.write_bytes(b"".join(gzip.compress(part) for part in parts))
    assert tfrecord_reader._gunzipped_size(str(path)) == (sum(map(len, parts)), True)
    path.write_bytes(path.read_bytes()[:-30])
    assert tfrecord_reader._gunzipped_size(str(path))[1] is False


def test_tfrecord_vector_of_the_wrong_length_names_record_and_feature(tmp_path):
    path = tmp_path / "long.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(_example(1.0, False, 2, [1.0, 2.0]).SerializeToString())
        writer.write(_example(1.0, False, 2, [1.0, 2.0, 3.0]).SerializeToString())
    _fails_cleanly(
        tmp_path, path, r"long.tfrecord: record 2: feature `v`: holds 3 value\(s\)"
    )


def test_a_remote_csv_that_cannot_be_read_names_the_file():
    # TensorFlow opens a remote file at its first read: its error there is
    # the one-line DataError too, not TensorFlow's own exception.
    from tanhguard.pipeline.csv_reader import read_csv_batches

    path = "ram://readers-missing/none.csv"
    with pytest.raises(DataError, match=re.escape(path)):
        list(read_csv_batches(path, CONFIG))


def test_small_blocks_and_record_batches_are_joined_in_order(tmp_path):
    """Arrow's CSV blocks and tf.data's record batches come joined into
    batches of `batch_rows` rows, the rows in file order."""
    rng = np.random.default_rng(11)
    values = rng.standard_normal((20_000, 2)).astype(np.float32)
    config = parse_config({"features": {"a": {}, "b": {}}})
    csv_path = tmp_path / "d.csv"
    with open(csv_path, "w") as handle:
        handle.write("a,b\n")
        handle.writelines(f"{a!r},{b!r}\n" for a, b in values.tolist())
    record_path = tmp_path / "d.tfrecord"
    with tf.io.TFRecordWriter(str(record_path)) as writer:
        for row in values.tolist():
            feature = {
                name: tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
                for name, value in zip("ab", row, strict=True)
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())
    small = 1 << 14  # bytes: a block of a few hundred rows
    assert len(list(csv_reader._parse_batches(str(csv_path), config, small))) > 20
    assert len(values) > tfrecord_reader.TFRECORD_BATCH
    for batches in (
        csv_reader.read_csv_batches(str(csv_path), config, block_size=small),
        read_batches(str(record_path), config, "tfrecord"),
    ):
        batches = list(batches)
        assert len(batches) == 1  # 20,000 rows < batch_rows(config)
        got = np.column_stack(
            [batches[0].column(name).flatten().to_numpy() for name in "ab"]
        )
        np.testing.assert_array_equal(got, values)


def test_wide_rows_come_fewer_to_a_batch(tmp_path):
    """A batch holds about `BATCH_VALUES` values whatever the row's width:
    131,072 values a row -> 20 rows a batch (Parquet reads them so)."""
    width = 2**17
    config = parse_config({"features": {"v": {"shape": [width]}}})
    values = np.arange(45 * width, dtype=np.float32).reshape(45, width)
    offsets = pa.array(np.arange(0, values.size + 1, width, dtype=np.int32))
    column = pa.ListArray.from_arrays(offsets, pa.array(values.ravel()))
    path = tmp_path / "wide.parquet"
    pq.write_table(pa.table({"v": column}), path)
    batches = list(read_batches(str(path), config, "parquet"))
    assert [batch.num_rows for batch in batches] == [20, 20, 5]
    got = np.concatenate([b.column("v").flatten().to_numpy() for b in batches])
    np.testing.assert_array_equal(got, values.ravel())
