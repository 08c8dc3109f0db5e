"""The transform job: every input row written once, with the values the saved
graph gives in Python, in each output format."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from graph_oracle import apply_graph, assert_stats_close

from tanhguard.errors import DataError, OutputExistsError
from tanhguard.pipeline import transform_job, workdir
from tanhguard.pipeline.analyze import run_analyze
from tanhguard.pipeline.cli import EXIT_OK, main
from tanhguard.pipeline.transform_job import run_transform
from tanhguard.transforms.config import parse_config

ROWS = 700
CONFIG = parse_config(
    {
        "features": {
            "x": {"indicators": ["missing", "clipped"]},
            "v": {"shape": [2], "clip": "mad"},
        }
    }
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("transform")
    rng = np.random.default_rng(6)
    x = (rng.standard_t(2, ROWS) * 3).astype(np.float32)
    x[::9] = np.nan
    x[4::31] = np.inf
    v = rng.normal(0, [1, 30], (ROWS, 2)).astype(np.float32)
    for part, rows in enumerate((range(0, 400), range(400, ROWS))):
        with open(root / f"in-{part}.csv", "w") as handle:
            handle.write("x,v_0,v_1\n")
            for i in rows:
                values = (float(x[i]), float(v[i, 0]), float(v[i, 1]))
                handle.write(",".join(repr(value) for value in values) + "\n")
    run_analyze(CONFIG, str(root / "in-*.csv"), root / "artifacts")
    expected = apply_graph(root / "artifacts", {"x": x, "v": v})
    return root, x, v, expected


def _sorted_rows(x_out: np.ndarray, v_out: np.ndarray) -> np.ndarray:
    """Rows in a canonical order (shards do not keep the input order)."""
    table = np.column_stack([x_out, v_out])
    return table[np.lexsort(table.T[::-1])]


def _check(expected, x_out, v_out, missing, clipped):
    assert len(x_out) == ROWS
    want = _sorted_rows(
        np.column_stack(
            [expected["x"], expected["x__missing"], expected["x__clipped"]]
        ),
        expected["v"],
    )
    got = _sorted_rows(np.column_stack([x_out, missing, clipped]), v_out)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("output_format", ["parquet", "tfrecord", "csv"])
def test_transform_writes_every_row_with_the_graph_values(setup, output_format):
    root, _, _, expected = setup
    out = root / f"out_{output_format}"
    result = run_transform(
        root / "artifacts", str(root / "in-*.csv"), out, output_format
    )
    assert result["rows"] == ROWS
    if output_format == "parquet":
        table = pq.read_table(out)
        x_out = table["x"].to_numpy()
        v_out = np.array(table["v"].to_pylist(), np.float32)
        missing, clipped = (
            table["x__missing"].to_numpy(),
            table["x__clipped"].to_numpy(),
        )
    elif output_format == "tfrecord":
        spec = {
            "x": tf.io.FixedLenFeature([], tf.float32),
            "x__missing": tf.io.FixedLenFeature([], tf.float32),
            "x__clipped": tf.io.FixedLenFeature([], tf.float32),
            "v": tf.io.FixedLenFeature([2], tf.float32),
        }
        files = sorted(str(p) for p in out.glob("part-*.tfrecord.gz"))
        records = next(iter(tf.data.TFRecordDataset(files, "GZIP").batch(10_000)))
        parsed = tf.io.parse_example(records, spec)
        x_out, v_out = parsed["x"].numpy(), parsed["v"].numpy()
        missing, clipped = parsed["x__missing"].numpy(), parsed["x__clipped"].numpy()
    else:
        tables = [pa_csv.read_csv(p) for p in sorted(out.glob("part-*.csv"))]
        columns = {
            name: np.concatenate([t[name].to_numpy() for t in tables])
            for name in tables[0].column_names
        }
        assert list(columns) == ["x", "x__missing", "x__clipped", "v_0", "v_1"]
        x_out = columns["x"]
        v_out = np.column_stack([columns["v_0"], columns["v_1"]])
        missing, clipped = columns["x__missing"], columns["x__clipped"]
    _check(expected, x_out, v_out, missing, clipped)


def test_transform_command_keeps_an_existing_output(setup, capsys):
    root = setup[0]
    out = root / "exists"
    out.mkdir()
    with pytest.raises(OutputExistsError):
        run_transform(root / "artifacts", str(root / "in-0.csv"), out)
    argv = ["transform", "--artifacts", str(root / "artifacts")]
    argv += ["--data", str(root / "in-0.csv"), "--output", str(root / "cli")]
    assert main([*argv, "--quiet"]) == EXIT_OK
    assert "Transformed 400 rows" in capsys.readouterr().out


def test_run_analyzes_and_transforms_in_one_pipeline(setup, tmp_path, capsys):
    root, _, _, _ = setup
    config = tmp_path / "c.yaml"
    config.write_text(
        "features:\n  x: {indicators: [missing, clipped]}\n"
        "  v: {shape: [2], clip: mad}\n"
    )
    out = tmp_path / "run"
    argv = ["run", "--config", str(config), "--data", str(root / "in-*.csv")]
    assert main([*argv, "--output", str(out), "--quiet"]) == EXIT_OK
    assert "Artifacts:" in capsys.readouterr().out
    # The same graph as analyze alone, and the same rows as transform alone.
    expected = apply_graph(out, {"x": setup[1], "v": setup[2]})
    table = pq.read_table(out / "rows")
    assert table.num_rows == ROWS
    missing = table["x__missing"].to_numpy()
    clipped = table["x__clipped"].to_numpy()
    v_out = np.array(table["v"].to_pylist(), np.float32)
    _check(expected, table["x"].to_numpy(), v_out, missing, clipped)
    reference = json.loads((root / "artifacts" / "stats.json").read_text())
    assert (
        json.loads((out / "stats.json").read_text())["features"]
        == (reference["features"])
    )


SHARED_RUNNER = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


@pytest.fixture
def copies(monkeypatch):
    """Records, for every copy out of a work directory, its source and the
    files it held (relative paths)."""
    seen = []
    original = workdir.copy_tree

    def spy(source, target, skip=()):
        files = [
            os.path.relpath(os.path.join(directory, name), source)
            for directory, _, names in tf.io.gfile.walk(source)
            for name in names
        ]
        seen.append((source, sorted(files)))
        original(source, target, skip)

    monkeypatch.setattr(workdir, "copy_tree", spy)
    monkeypatch.setattr(transform_job, "copy_tree", spy)
    return seen


def test_with_a_temp_location_the_workers_write_there(setup, tmp_path, copies):
    # What a runner off this machine needs: every file the worker processes
    # write goes under --temp_location, and the output is copied from there.
    root, x, v, _ = setup
    shared = tmp_path / "shared"
    shared.mkdir()
    args = [*SHARED_RUNNER, f"--temp_location={shared}"]
    out = tmp_path / "run"
    stats = run_analyze(
        CONFIG, str(root / "in-*.csv"), out, args, rows_format="parquet"
    )
    (source, files), *_ = copies
    assert source.startswith(str(shared) + "/tanhguard-")
    assert "transform_fn/saved_model.pb" in files
    assert any(name.startswith("rows/part-") for name in files)
    assert any(name.startswith(".tft_tmp/") for name in files)  # pass results
    assert list(shared.iterdir()) == []  # removed when done
    assert not (out / ".tft_tmp").exists()
    reference = json.loads((root / "artifacts" / "stats.json").read_text())
    # Two workers merge in another order: equal to rounding.
    assert_stats_close(stats["features"], reference["features"])
    table = pq.read_table(out / "rows")
    expected = apply_graph(out, {"x": x, "v": v})
    v_out = np.array(table["v"].to_pylist(), np.float32)
    columns = [table[name].to_numpy() for name in ("x", "x__missing", "x__clipped")]
    _check(expected, columns[0], v_out, columns[1], columns[2])

    copies.clear()
    transformed = tmp_path / "transformed"
    result = run_transform(
        root / "artifacts", str(root / "in-*.csv"), transformed, "parquet", args
    )
    # The graph goes up for the workers, and the shards come back down.
    sources = [source for source, _ in copies]
    assert all(s.startswith(str(root / "artifacts")) for s in sources[:2])
    assert sources[-1].startswith(str(shared) + "/tanhguard-")
    assert result["rows"] == ROWS == pq.read_table(transformed).num_rows
    assert list(shared.iterdir()) == []


def test_with_a_temp_location_a_failed_run_leaves_nothing(setup, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    bad = tmp_path / "bad.csv"
    bad.write_text("x,v_0,v_1\n1.0,2.0,3.0\n1.0,oops,3.0\n")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"bad.csv: row \d+: column `v_0`: 'oops'"):
        run_analyze(CONFIG, str(bad), out, [f"--temp_location={shared}"])
    assert list(shared.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "shared"]


# Missing cells, an int feature, a vector with empty rows and empty elements,
# a source column that is not the feature's name, a log_zscore scale.
MIXED = parse_config(
    {
        "features": {
            "a": {"indicators": ["missing", "clipped"]},
            "n": {"dtype": "int", "column": "n raw"},
            "w": {"shape": [3], "scale": "log_zscore", "inf": "missing"},
        }
    }
)
MIXED_ROWS = 300


def _mixed_cells(rng) -> list[dict[str, list[str]]]:
    """Per row, the CSV cells of each feature's columns ("" is empty)."""
    rows = []
    for i in range(MIXED_ROWS):
        a = repr(float(rng.standard_t(2) * 4))
        if i % 7 == 0:
            a = ""
        elif i % 29 == 0:
            a = ["nan", "inf", "-inf"][i % 3]
        n = "" if i % 11 == 0 else str(int(rng.integers(-50, 5000)))
        w = [repr(float(v)) for v in rng.lognormal(3, 2, 3) * rng.choice([-1, 1], 3)]
        if i % 13 == 0:
            w = ["", "", ""]  # the whole vector missing
        elif i % 17 == 0:
            w[1] = ""  # one element missing: NaN
        elif i % 19 == 0:
            w[2] = "inf"
        rows.append({"a": [a], "n raw": [n], "w": w})
    return rows


def _graph_on_cells(artifacts, rows) -> dict[str, np.ndarray]:
    """The saved graph applied with TFT's own loader to `SparseTensor`s built
    here from the cells, row by row: a row holds the values of its non-empty
    cells; a vector with some empty cells holds NaN there."""
    output = tft.TFTransformOutput(str(artifacts))
    inputs = {}
    sources = (("a", 1, np.float32), ("n raw", 1, np.int64), ("w", 3, np.float32))
    for source, size, dtype in sources:
        indices, values = [], []
        for i, row in enumerate(rows):
            cells = row[source]
            if all(cell == "" for cell in cells):
                continue
            for j, cell in enumerate(cells):
                indices.append([i, j])
                values.append(float("nan") if cell == "" else float(cell))
        inputs[source] = tf.SparseTensor(
            np.array(indices, np.int64).reshape(-1, 2),
            np.array(values, dtype),
            [len(rows), size],
        )
    return {k: v.numpy() for k, v in output.transform_raw_features(inputs).items()}


def _table_rows(columns: list[np.ndarray]) -> np.ndarray:
    """Columns ([rows] or [rows, d]) side by side, rows in a canonical order."""
    table = np.column_stack([c.reshape(len(c), -1) for c in columns])
    return table[np.lexsort(table.T[::-1])]


def test_written_rows_equal_the_graph_applied_to_the_cells(tmp_path):
    rows = _mixed_cells(np.random.default_rng(21))
    data = tmp_path / "mixed.csv"
    with open(data, "w") as handle:
        handle.write("a,n raw,w_0,w_1,w_2\n")
        for row in rows:
            handle.write(",".join(row["a"] + row["n raw"] + row["w"]) + "\n")
    artifacts = tmp_path / "artifacts"
    run_analyze(MIXED, str(data), artifacts)
    out = tmp_path / "rows"
    result = run_transform(artifacts, str(data), out, "parquet")
    assert result["rows"] == MIXED_ROWS
    table = pq.read_table(out)
    names = ["a", "a__missing", "a__clipped", "n", "w"]
    assert table.column_names == names
    got = [
        np.array(table[name].to_pylist(), np.float32)
        if name == "w"
        else table[name].to_numpy()
        for name in names
    ]
    want = _graph_on_cells(artifacts, rows)
    assert set(want) == set(names)
    # The same graph on the same values (in one batch either way: the file is
    # one Arrow block): the same float32 numbers.
    np.testing.assert_array_equal(
        _table_rows(got), _table_rows([want[name] for name in names])
    )
    # The cases are there: missing, NaN and Inf inputs; every output finite.
    assert 0 < got[1].sum() < MIXED_ROWS and got[2].sum() > 0
    assert np.isfinite(_table_rows(got)).all()


def test_graph_inputs_are_the_tensors_tft_builds():
    # TFT's tensor adapter (what `tft_beam.TransformDataset` feeds the graph)
    # on the same record batch: lists of every length, null lists, int64, and
    # a batch that is a slice of a larger one.
    from tfx_bsl.tfxio.tensor_adapter import TensorAdapter

    from tanhguard.pipeline.batch_layout import tensor_adapter_config

    config = parse_config(
        {
            "features": {
                "x": {},
                "k": {"dtype": "int", "column": "k raw"},
                "v": {"shape": [3]},
                "e": {"shape": [2]},
            }
        }
    )
    x = pa.array([[1.5], [], None, [np.nan], [-2.0], [np.inf]], pa.list_(pa.float32()))
    k = pa.array([[3], [-1], [], [7], None, [0]], pa.list_(pa.int64()))
    v = pa.array(
        [[1, 2, 3], [], [4, 5, 6], None, [7, 8, 9], [0, 0, 0]], pa.list_(pa.float32())
    )
    e = pa.array([[], None, [], [], None, []], pa.list_(pa.float32()))
    whole = pa.RecordBatch.from_arrays([x, k, v, e], names=["x", "k", "v", "e"])
    adapter = TensorAdapter(tensor_adapter_config(config))
    for batch in (whole, whole.slice(2, 3), whole.slice(1, 0)):
        got = transform_job.graph_inputs(batch, config)
        want = adapter.ToBatchTensors(batch, produce_eager_tensors=True)
        assert set(got) == set(want) == {"x", "k raw", "v", "e"}
        for key in want:
            for part in ("indices", "values", "dense_shape"):
                g, w = getattr(got[key], part), getattr(want[key], part)
                assert g.dtype == w.dtype, (key, part)
                np.testing.assert_array_equal(g.numpy(), w.numpy(), err_msg=key)


def test_csv_output_names_every_cell_of_a_vectors_indicator(tmp_path):
    """A vector's indicator is d cells a row, as the vector is: the header
    names each (`v__missing_0` ...), so the file reads back whole."""
    config = parse_config(
        {"features": {"v": {"shape": [3], "indicators": ["missing", "clipped"]}}}
    )
    path = tmp_path / "in.csv"
    path.write_text("v_0,v_1,v_2\n1,2,3\n,5,\n7,8,900\n")
    run_analyze(config, str(path), tmp_path / "artifacts")
    out = tmp_path / "rows"
    run_transform(tmp_path / "artifacts", str(path), out, "csv")
    table = pa_csv.read_csv(next(out.glob("part*")))
    names = [f"{output}_{i}" for output in ("v", "v__missing", "v__clipped")
             for i in range(3)]  # fmt: skip
    assert table.column_names == names and table.num_rows == 3
    missing = np.array([table[f"v__missing_{i}"].to_pylist() for i in range(3)]).T
    np.testing.assert_array_equal(missing, [[0, 0, 0], [1, 0, 1], [0, 0, 0]])


def test_a_feature_named_with_a_double_underscore_is_transformed(tmp_path):
    """Outputs are looked up by name, not by splitting at `__` (a feature
    `a__b` is no indicator of a feature `a`)."""
    config = parse_config({"features": {"a__b": {"indicators": ["missing"]}}})
    path = tmp_path / "in.csv"
    path.write_text("a__b,other\n1,0\n,0\n3,0\n")  # row 2: missing
    run_analyze(config, str(path), tmp_path / "artifacts")
    for output_format in ("parquet", "csv"):
        out = tmp_path / output_format
        run_transform(tmp_path / "artifacts", str(path), out, output_format)
        part = next(out.glob("part*"))
        table = (
            pq.read_table(part) if output_format == "parquet" else pa_csv.read_csv(part)
        )
        assert table.column_names == ["a__b", "a__b__missing"]
        assert sorted(table["a__b__missing"].to_pylist()) == [0.0, 0.0, 1.0]
