"""`--keep`: input columns copied into the transformed rows unchanged, each
value with its own row, in every output format, on more than one file and
more than one worker."""

import csv
import datetime
import glob

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from graph_oracle import apply_graph

from tanhguard.errors import ConfigError, DataError
from tanhguard.pipeline.analyze import run_analyze
from tanhguard.pipeline.cli import EXIT_OK, main
from tanhguard.pipeline.transform_job import run_transform
from tanhguard.transforms.config import parse_config

ROWS = 600
CONFIG = parse_config({"features": {"x": {"indicators": ["missing"]}}})
KEEP = ["id", "label", "w", "flag"]


def _table(rows: int = ROWS, seed: int = 41) -> pa.Table:
    """Ids (text with a comma, a quote, spaces; unique), a label with gaps, a
    float64 weight with NaN, a boolean flag, and the feature `x`."""
    rng = np.random.default_rng(seed)
    ids = [f"r-{i}" if i % 7 else f' r,"{i}" ' for i in range(rows)]
    label = [
        None if i % 11 == 0 else int(v) for i, v in enumerate(rng.integers(0, 5, rows))
    ]
    w = rng.random(rows) * 1e6
    w[::13] = np.nan
    x = (rng.standard_t(2, rows) * 3).astype(np.float32)
    x[::9] = np.nan
    return pa.table(
        {
            "id": ids,
            "x": x,
            "label": pa.array(label, pa.int64()),
            "w": w,
            "flag": rng.random(rows) > 0.5,
        }
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("kept")
    table = _table()
    parts = (table.slice(0, 250), table.slice(250))
    for i, part in enumerate(parts):
        pq.write_table(part, root / f"in-{i}.parquet")
        pa_csv.write_csv(part, root / f"in-{i}.csv")
    run_analyze(CONFIG, str(root / "in-*.csv"), root / "artifacts")
    x = np.asarray(table["x"].to_pylist(), np.float32)
    expected = apply_graph(root / "artifacts", {"x": x})
    return root, table, expected


def _read_rows(out, output_format: str, text: bool) -> dict[str, list]:
    """Every written row's columns, by name (shards in any order); a CSV's
    kept cells as text (with `text`, as written from CSV input, whose kept
    columns are text) or as numbers and booleans."""
    paths = sorted(glob.glob(str(out / "part*")))
    if output_format == "parquet":
        table = pa.concat_tables(pq.read_table(p) for p in paths)
        return {name: table[name].to_pylist() for name in table.column_names}
    if output_format == "csv":
        types = {name: pa.string() for name in KEEP}
        if not text:
            types.update({"label": pa.int64(), "w": pa.float64(), "flag": pa.bool_()})
        options = pa_csv.ConvertOptions(
            column_types=types, null_values=[""], strings_can_be_null=True
        )
        table = pa.concat_tables(
            pa_csv.read_csv(p, convert_options=options) for p in paths
        )
        return {name: table[name].to_pylist() for name in table.column_names}
    rows: dict[str, list] = {}
    for record in tf.data.TFRecordDataset(paths, "GZIP"):
        example = tf.train.Example.FromString(record.numpy())
        for name, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            values = list(getattr(feature, kind).value)
            if kind == "bytes_list":
                values = [v.decode() for v in values]
            rows.setdefault(name, []).append(values[0] if values else None)
    return rows


def _csv_cells(root, column: str) -> dict[str, str | None]:
    """The oracle for CSV input: each row's cell text in `column` (None for
    an empty cell), by id, read with Python's `csv` module."""
    cells = {}
    for path in sorted(root.glob("in-*.csv")):
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                cells[row["id"]] = row[column] or None
    return cells


@pytest.mark.parametrize("output_format", ["parquet", "csv", "tfrecord"])
@pytest.mark.parametrize("input_format", ["csv", "parquet"])
def test_kept_columns_ride_with_their_rows(setup, input_format, output_format):
    """From CSV input, a kept column is each cell's text; from Parquet, the
    column's values (a tf.Example holds a float64 as float32, a bool as 0/1).
    Either way, each value sits on its own row: the transformed `x` there is
    the graph's value for that row's `x`."""
    root, table, expected = setup
    out = root / f"out-{input_format}-{output_format}"
    data = str(root / f"in-*.{input_format}")
    result = run_transform(root / "artifacts", data, out, output_format, keep=KEEP)
    assert result["rows"] == ROWS
    text = input_format == "csv"
    got = _read_rows(out, output_format, text)
    if output_format != "tfrecord":  # a tf.Example's features are unordered
        assert list(got)[: len(KEEP)] == KEEP
    by_id = {value: i for i, value in enumerate(table["id"].to_pylist())}
    assert sorted(got["id"]) == sorted(by_id)
    order = [by_id[value] for value in got["id"]]
    for name in ("label", "w", "flag"):
        if text:
            cells = _csv_cells(root, name)
            want = [cells[value] for value in got["id"]]
        else:
            want = [table[name][i].as_py() for i in order]
            if output_format == "tfrecord" and name == "w":
                want = [float(np.float32(v)) for v in want]
            if output_format == "tfrecord" and name == "flag":
                want = [int(v) for v in want]
        same = np.array(got[name], dtype=object) == np.array(want, dtype=object)
        if name == "w" and not text:  # NaN == NaN here
            same |= np.isnan(np.array(got[name], float)) & np.isnan(
                np.array(want, float)
            )
        assert same.all(), name
    # The transformed feature is the one of its own row.
    np.testing.assert_allclose(got["x"], expected["x"][order], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got["x__missing"], expected["x__missing"][order])


def test_kept_columns_with_two_workers(setup, tmp_path):
    root, table, expected = setup
    flags = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    out = tmp_path / "out"
    data = str(root / "in-*.parquet")
    run_transform(root / "artifacts", data, out, "parquet", flags, keep=["id"])
    got = _read_rows(out, "parquet", text=False)
    by_id = {value: i for i, value in enumerate(table["id"].to_pylist())}
    order = [by_id[value] for value in got["id"]]
    assert sorted(order) == list(range(ROWS))
    np.testing.assert_allclose(got["x"], expected["x"][order], rtol=1e-6, atol=1e-7)


def test_run_keeps_columns_on_the_command_line(setup, tmp_path, capsys):
    root, _, _ = setup
    (tmp_path / "c.yaml").write_text("features:\n  x: {indicators: [missing]}\n")
    argv = ["run", "--config", str(tmp_path / "c.yaml"), "--data"]
    argv += [str(root / "in-*.csv"), "--output", str(tmp_path / "a")]
    assert main([*argv, "--keep", "id", "--keep", "label", "--quiet"]) == EXIT_OK
    rows = pq.read_table(tmp_path / "a" / "rows")
    assert rows.column_names == ["id", "label", "x", "x__missing"]
    kept = dict(zip(rows["id"].to_pylist(), rows["label"].to_pylist(), strict=True))
    assert kept == _csv_cells(root, "label")  # from a CSV: the cells' text


def test_a_kept_column_missing_from_a_file_is_named(setup, tmp_path):
    root, _, _ = setup
    for fmt, where in (("csv", "header"), ("parquet", "file")):
        with pytest.raises(
            DataError,
            match=rf"in-0\.{fmt}: --keep `lable`: not in the {where} \(did you "
            r"mean `label`\?\)",
        ):
            run_transform(
                root / "artifacts", str(root / f"in-*.{fmt}"), tmp_path / "o",
                keep=["lable"],
            )  # fmt: skip
        assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("keep", "match"),
    [
        (["x"], r"--keep `x`: the config reads or writes a column of that name"),
        (["x__missing"], r"--keep `x__missing`: the config reads or writes"),
        (["id", "id"], r"--keep `id`: given twice"),
    ],
)
def test_a_kept_name_the_config_takes_is_refused(setup, tmp_path, keep, match):
    root, _, _ = setup
    with pytest.raises(ConfigError, match=match):
        run_transform(
            root / "artifacts", str(root / "in-0.csv"), tmp_path / "o", keep=keep
        )
    assert not (tmp_path / "o").exists()


def test_a_kept_name_a_vector_output_cell_takes_is_refused(tmp_path):
    """CSV output spells a vector's outputs cell by cell (`emb_0`,
    `emb__missing_0`): a kept column may not have one of those names."""
    config = parse_config(
        {"features": {"emb": {"shape": [2], "indicators": ["missing"]}}}
    )
    path = tmp_path / "a.csv"
    path.write_text("emb_0,emb_1,emb__missing_0\n1,1,a\n2,,b\n3,3,c\n")
    run_analyze(config, str(path), tmp_path / "artifacts")
    for name in ("emb_0", "emb__missing_0", "emb__missing"):
        with pytest.raises(ConfigError, match=rf"--keep `{name}`: the config reads"):
            run_transform(
                tmp_path / "artifacts", str(path), tmp_path / "o", keep=[name]
            )


def test_tfrecord_input_with_kept_columns_says_what_to_do(setup, tmp_path):
    root, table, _ = setup
    path = tmp_path / "in.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for x in table["x"].to_pylist()[:5]:
            example = tf.train.Example()
            example.features.feature["x"].float_list.value.append(x)
            writer.write(example.SerializeToString())
    with pytest.raises(DataError, match=r"--keep reads CSV and Parquet input; .*"
                       r"Convert the rows to Parquet"):  # fmt: skip
        run_transform(root / "artifacts", str(path), tmp_path / "o", keep=["id"])


def test_a_kept_csv_column_is_its_cells_text(setup, tmp_path):
    """Ids a type guess would change (leading zeros, 20 digits, hexadecimal
    spellings) stay as written; an empty cell is missing; a quoted cell's
    line breaks survive, also past Arrow's 4 MiB blocks; a first shard with
    no row changes nothing."""
    root, _, _ = setup
    ids = ["00042", "18446744073709551001", "18446744073709551002", "0x001f"]
    notes = ['a "quoted"\nline, and more', "", "plain", "two\r\nlines"]
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "part-0.csv").write_text("id,x,note\n")  # a shard with no row
    with open(folder / "part-1.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "x", "note"])
        for i in range(150_000):  # 7 MB: the quoted line breaks cross a block
            writer.writerow([ids[i % 4] + f"-{i}", i % 9, notes[i % 4]])
    out = tmp_path / "out"
    run_transform(root / "artifacts", str(folder), out, keep=["id", "note"])
    rows = pq.read_table(out)
    assert rows.schema.field("id").type == pa.string()
    with open(folder / "part-1.csv", newline="") as handle:
        want = {r["id"]: r["note"] or None for r in csv.DictReader(handle)}
    got = dict(zip(rows["id"].to_pylist(), rows["note"].to_pylist(), strict=True))
    assert got == want


def test_kept_text_and_names_survive_a_csv_output(setup, tmp_path):
    root, _, _ = setup
    name = 'the "label", raw'
    path = tmp_path / "in.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x", name])
        writer.writerows([[1.5, "a,b"], [2.5, ' "q" '], [3.5, "é\nz"], [4.5, ""]])
    out = tmp_path / "out"
    run_transform(root / "artifacts", str(path), out, "csv", keep=[name])
    with open(next(out.glob("part*")), newline="") as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0])[:2] == [name, "x"]
    assert sorted(row[name] for row in read) == sorted(["a,b", ' "q" ', "é\nz", ""])


def test_a_kept_name_twice_in_a_csv_header_is_refused(setup, tmp_path):
    root, _, _ = setup
    path = tmp_path / "two.csv"
    path.write_text("x,label,label\n1,10,20\n")
    with pytest.raises(DataError, match=r"two\.csv: --keep `label`: the header "
                       r"names it 2 times"):  # fmt: skip
        run_transform(root / "artifacts", str(path), tmp_path / "o", keep=["label"])


def test_files_must_agree_on_a_kept_columns_type(setup, tmp_path):
    root, _, _ = setup
    x = pa.array([1.0, 2.0], pa.float32())
    pq.write_table(pa.table({"x": x, "k": [1, 2]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"x": x, "k": [0.5, 2.5]}), tmp_path / "b.parquet")
    pq.write_table(pa.table({"x": x, "k": ["p", "q"]}), tmp_path / "c.parquet")
    now = datetime.datetime(2026, 11, 30)
    pq.write_table(pa.table({"x": x, "k": [now, now]}), tmp_path / "d.parquet")
    nothing = pa.array([None, None], pa.null())  # pandas' all-None column
    pq.write_table(pa.table({"x": x, "k": nothing}), tmp_path / "a0.parquet")
    category = pa.array(["p", "q"]).dictionary_encode()  # pandas' category
    pq.write_table(pa.table({"x": x, "k": category}), tmp_path / "e.parquet")
    big = pa.array([1, 2**64 - 1], pa.uint64())
    pq.write_table(pa.table({"x": x, "k": big}), tmp_path / "f.parquet")
    # A column with no value takes the other files' type.
    run_transform(root / "artifacts", str(tmp_path / "a*.parquet"),
                  tmp_path / "a0", keep=["k"])  # fmt: skip
    rows = pq.read_table(tmp_path / "a0")
    assert rows.schema.field("k").type == pa.int64()
    assert sorted(rows["k"].to_pylist(), key=str) == [1, 2, None, None]
    # A dictionary column is its values.
    run_transform(root / "artifacts", str(tmp_path / "[ce].parquet"),
                  tmp_path / "ce", keep=["k"])  # fmt: skip
    assert sorted(pq.read_table(tmp_path / "ce")["k"].to_pylist()) == list("ppqq")
    with pytest.raises(DataError, match=r"f\.parquet: rows from 1: --keep `k`: "
                       r"Integer value 18446744073709551615 not in range"):  # fmt: skip
        run_transform(root / "artifacts", str(tmp_path / "f.parquet"),
                      tmp_path / "f", keep=["k"])  # fmt: skip
    # Integers and floats meet as float64.
    run_transform(root / "artifacts", str(tmp_path / "[ab].parquet"),
                  tmp_path / "ab", keep=["k"])  # fmt: skip
    rows = pq.read_table(tmp_path / "ab")
    assert rows.schema.field("k").type == pa.float64()
    assert sorted(rows["k"].to_pylist()) == [0.5, 1.0, 2.0, 2.5]
    with pytest.raises(
        DataError,
        match=r"c\.parquet: --keep `k`: the column has type string here but "
        r"double in \S*b\.parquet",
    ):
        run_transform(root / "artifacts", str(tmp_path / "[bc].parquet"),
                      tmp_path / "bc", keep=["k"])  # fmt: skip
    with pytest.raises(DataError, match=r"d\.parquet: --keep `k`: the column has "
                       r"type timestamp\[us\]; kept columns are integers"):  # fmt: skip
        run_transform(root / "artifacts", str(tmp_path / "d.parquet"),
                      tmp_path / "d", keep=["k"])  # fmt: skip


def test_analyze_alone_keeps_nothing(setup, tmp_path):
    root, _, _ = setup
    with pytest.raises(ConfigError, match=r"kept columns are for the transformed"):
        run_analyze(CONFIG, str(root / "in-0.csv"), tmp_path / "a", keep=["id"])
