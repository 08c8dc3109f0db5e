"""The transform job: every input row written once, with the values the saved
graph gives in Python, in each output format."""

import json
import os

import numpy as np
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
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
