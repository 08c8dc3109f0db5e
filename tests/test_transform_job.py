"""The transform job: every input row written once, with the values the saved
graph gives in Python, in each output format."""

import json

import numpy as np
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from graph_oracle import apply_graph

from tanhguard.pipeline.analyze import run_analyze
from tanhguard.pipeline.artifacts import OutputExistsError
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
