"""The analyze job end to end: statistics against numpy, the graph against
stats.json, the bounded-output promise, and bad input."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from graph_oracle import apply_graph, dense_as_sparse, element, expected_output
from hypothesis import given, settings
from hypothesis import strategies as st

from tanhguard.errors import DataError, OutputExistsError
from tanhguard.pipeline.analyze import load_stats, run_analyze
from tanhguard.pipeline.graph_stats import GraphStatsError, stats_from_transform_graph
from tanhguard.transforms.config import parse_config
from tanhguard.transforms.statistics import quantile_epsilon

ROWS = 3000
CONFIG = parse_config(
    {
        "features": {
            "heavy": {},
            "count": {"dtype": "int"},
            "vec": {
                "shape": [2],
                "clip": {"strategy": "fixed", "lower": -3, "upper": 3},
            },
            "flat": {},
        }
    }
)


def _write_csv(path: Path, columns: dict, empty: dict) -> None:
    names = list(columns)
    with open(path, "w") as handle:
        handle.write(",".join([*names, "ignored"]) + "\n")
        for row in range(len(columns[names[0]])):
            cells = []
            for name in names:
                value = columns[name][row]
                if row in empty.get(name, ()):
                    cells.append("")
                elif name == "count":
                    cells.append(str(int(value)))
                else:
                    cells.append(repr(float(value)))
            handle.write(",".join([*cells, "text"]) + "\n")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rng = np.random.default_rng(7)
    heavy = rng.standard_cauchy(ROWS) * 10
    heavy[::97] = np.nan
    heavy[5::211] = np.inf
    heavy[7::307] = -np.inf
    columns = {
        "heavy": heavy,
        "count": rng.integers(0, 50, ROWS).astype(float),
        "vec_0": rng.normal(0, 1, ROWS),
        "vec_1": rng.normal(100, 20, ROWS),
        "flat": np.full(ROWS, 2.25),
    }
    empty = {"heavy": set(range(3, ROWS, 101))}
    root = tmp_path_factory.mktemp("analyze")
    csv_path = root / "data.csv"
    _write_csv(csv_path, columns, empty)
    heavy_read = heavy.copy()
    heavy_read[list(empty["heavy"])] = np.nan
    artifacts = root / "artifacts"
    stats = run_analyze(CONFIG, str(csv_path), artifacts)
    return {
        "columns": columns,
        "heavy_missing": np.isin(np.arange(ROWS), list(empty["heavy"])),
        "heavy_read": heavy_read.astype(np.float32),
        "stats": stats,
        "artifacts": artifacts,
        "csv": csv_path,
    }


def test_counts_and_moments_agree_with_numpy(dataset):
    stats = dataset["stats"]
    heavy = dataset["heavy_read"]
    missing = dataset["heavy_missing"]
    feature = stats["features"]["heavy"]
    assert stats["num_rows"] == ROWS
    assert feature["missing"] == missing.sum()
    assert feature["nan"] == (np.isnan(heavy) & ~missing).sum()
    assert feature["pos_inf"] == np.isposinf(heavy).sum()
    assert feature["neg_inf"] == np.isneginf(heavy).sum()
    finite = heavy[np.isfinite(heavy)].astype(np.float64)
    assert feature["count"] == finite.size
    np.testing.assert_allclose(feature["mean"], finite.mean(), rtol=1e-9)
    np.testing.assert_allclose(feature["std"], finite.std(), rtol=1e-6)
    assert feature["min"] == finite.min() and feature["max"] == finite.max()


def test_vector_feature_has_per_element_statistics(dataset):
    feature = dataset["stats"]["features"]["vec"]
    for i in range(2):
        values = dataset["columns"][f"vec_{i}"].astype(np.float32).astype(np.float64)
        np.testing.assert_allclose(feature["mean"][i], values.mean(), rtol=1e-9)
    assert feature["clip"]["lower"] == [-3.0, -3.0]
    assert len(feature["quantiles"]["0.5"]) == 2


def test_quantiles_are_within_the_sketch_rank_error(dataset):
    feature = dataset["stats"]["features"]["heavy"]
    finite = np.sort(dataset["heavy_read"][np.isfinite(dataset["heavy_read"])])
    n = finite.size
    # Rank error bound of TFT's sketch (epsilon * n), plus one for ties/rounding.
    tolerance = quantile_epsilon(1000) * n + 1
    for probability, value in feature["quantiles"].items():
        rank_low = np.searchsorted(finite, np.float32(value), side="left")
        rank_high = np.searchsorted(finite, np.float32(value), side="right")
        target = float(probability) * n
        assert rank_low - tolerance <= target <= rank_high + tolerance, probability


def test_zscore_parameters_are_moments_of_clipped_finite_data(dataset):
    feature = dataset["stats"]["features"]["heavy"]
    heavy = dataset["heavy_read"]
    lower, upper = feature["clip"]["lower"], feature["clip"]["upper"]
    assert lower == feature["quantiles"]["0.001"]
    assert upper == feature["quantiles"]["0.999"]
    finite = heavy[np.isfinite(heavy)]
    clipped = np.clip(finite, np.float32(lower), np.float32(upper)).astype(np.float64)
    np.testing.assert_allclose(feature["scale"]["center"], clipped.mean(), rtol=1e-6)
    np.testing.assert_allclose(feature["scale"]["scale"], clipped.std(), rtol=1e-6)


def test_constant_feature_is_flagged_and_scaled_to_zero(dataset):
    flat = dataset["stats"]["features"]["flat"]
    assert flat["constant"] is True
    assert flat["scale"]["scale"] == 0.0
    assert flat["clip"]["lower"] == flat["clip"]["upper"] == 2.25


def _raw_batch(values: np.ndarray) -> dict:
    values = values.astype(np.float32)
    return {
        "heavy": values,
        "count": np.arange(len(values), dtype=np.int64),
        "vec": np.stack([values, -values], axis=1),
        "flat": values,
    }


def test_graph_applies_the_numbers_in_stats_json(dataset):
    stats = load_stats(dataset["artifacts"])
    probe = np.array(
        [np.nan, np.inf, -np.inf, 0.0, 1.5, -7.0, 1e6, -3.4e38, 3.4e38, 2.25],
        dtype=np.float32,
    )
    outputs = apply_graph(dataset["artifacts"], _raw_batch(probe))
    features = stats["features"]
    np.testing.assert_allclose(
        outputs["heavy"],
        expected_output(element(features["heavy"], None), probe),
        rtol=1e-6,
        atol=1e-6,
    )
    np.testing.assert_array_equal(outputs["flat"], np.zeros_like(probe))
    vec = np.stack([probe, -probe], axis=1)
    for i in range(2):
        np.testing.assert_allclose(
            outputs["vec"][:, i],
            expected_output(element(features["vec"], i), vec[:, i]),
            rtol=1e-6,
            atol=1e-6,
        )


float32_values = st.one_of(
    st.floats(width=32, allow_nan=True, allow_infinity=True),
    st.sampled_from([3.4028235e38, -3.4028235e38, 1e-45, -0.0]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(float32_values, min_size=1, max_size=64))
def test_every_output_is_finite_and_bounded(dataset, values):
    outputs = apply_graph(dataset["artifacts"], _raw_batch(np.array(values)))
    for name, output in outputs.items():
        bound = dataset["stats"]["features"][name]["output_bound"]
        assert np.all(np.isfinite(output)), name
        assert np.all(np.abs(output) <= bound), name


def test_missing_value_is_imputed_in_the_graph(dataset):
    feature = dataset["stats"]["features"]["heavy"]
    output = tft.TFTransformOutput(str(dataset["artifacts"]))
    empty = tf.SparseTensor(
        np.zeros([0, 2], np.int64), np.zeros([0], np.float32), [2, 1]
    )
    tensors = {name: dense_as_sparse(v) for name, v in _raw_batch(np.zeros(2)).items()}
    tensors["heavy"] = empty
    result = output.transform_raw_features(tensors)["heavy"].numpy()
    expected = expected_output(
        element(feature, None), np.array([np.nan, np.nan], np.float32)
    )
    np.testing.assert_allclose(result, expected, rtol=1e-6)


# Bad input: a clear error naming the file, row or feature, and no artifacts.


def _assert_fails_cleanly(tmp_path, data, match):
    output = tmp_path / "out"
    with pytest.raises(DataError, match=match) as caught:
        run_analyze(CONFIG, str(data), output)
    # The reader's own line: Beam re-raises a worker's error as a copy with
    # " [while running 'Read/ReadBatches']" appended, which is not the user's.
    assert "while running" not in str(caught.value), str(caught.value)
    assert not output.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


HEADER = "heavy,count,vec_0,vec_1,flat\n"


def test_missing_file_is_an_error(tmp_path):
    _assert_fails_cleanly(tmp_path, tmp_path / "nope*.csv", r"nope\*.csv: no file")


def test_missing_column_names_file_and_feature(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("heavy,count,vec_0,flat\n1,2,3,4\n")
    _assert_fails_cleanly(
        tmp_path, path, r"a.csv: feature `vec`: column\(s\) \['vec_1'\]"
    )


def test_vector_longer_than_its_shape_is_an_error(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text("heavy,count,vec_0,vec_1,vec_2,flat\n1,2,3,4,5,6\n")
    _assert_fails_cleanly(
        tmp_path,
        path,
        r"wide.csv: feature `vec`: `shape` is \[2\] but the header "
        r"also has column `vec_2`",
    )


def test_file_without_header_is_an_error(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("1,2,3,4,5\n6,7,8,9,10\n")
    _assert_fails_cleanly(tmp_path, path, r"b.csv: feature `heavy`: .*must be a header")


def test_non_numeric_cell_names_file_and_row(tmp_path):
    path = tmp_path / "c.csv"
    rows = "".join(f"{i},1,0,0,1\n" for i in range(5))
    path.write_text(HEADER + rows + "oops,1,0,0,1\n")
    _assert_fails_cleanly(
        tmp_path, path, r"c.csv: row 6: column `heavy`: 'oops' is not a valid number"
    )


def test_the_config_file_in_the_data_directory_is_left_out(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    rows = "".join(f"{i},{i % 3},0,1,{i}\n" for i in range(30))
    (folder / "part.csv").write_text(HEADER + rows)
    config_file = folder / "config.yaml"
    config_file.write_text("not read as data")  # the command line's --config
    stats = run_analyze(CONFIG, str(folder), tmp_path / "out", protect=[config_file])
    assert stats["data"]["files"] == [str(folder / "part.csv")]
    assert stats["num_rows"] == 30


def test_empty_dataset_is_an_error(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(HEADER)
    _assert_fails_cleanly(tmp_path, path, r"no data rows")


def test_existing_output_is_kept_without_overwrite(tmp_path, dataset):
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep").write_text("x")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_analyze(CONFIG, str(dataset["csv"]), output)
    assert (output / "keep").read_text() == "x"


def test_statistics_and_config_are_read_back_from_the_graph(dataset):
    from_graph = stats_from_transform_graph(dataset["artifacts"])
    stats = load_stats(dataset["artifacts"])
    assert from_graph["features"] == stats["features"]
    assert from_graph["config"] == stats["config"] == CONFIG.to_json_dict()
    assert from_graph["num_rows"] == ROWS


def test_graph_without_tanhguard_statistics_is_an_error(tmp_path):
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    def plain_fn(inputs):
        return {"y": inputs["x"] - tft.mean(inputs["x"])}

    spec = {"x": tf.io.FixedLenFeature([], tf.float32)}
    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(spec)
    )
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=str(tmp_path / "t")):
        rows = pipeline | beam.Create([{"x": 1.0}, {"x": 3.0}])
        transform_fn = (rows, metadata) | tft_beam.AnalyzeDataset(plain_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path / "plain"))
    with pytest.raises(GraphStatsError, match="not built by tanhguard"):
        stats_from_transform_graph(tmp_path / "plain")
