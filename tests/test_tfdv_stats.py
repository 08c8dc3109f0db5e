"""stats.tfdv.pb: the TFDV / Facets statistics `analyze` writes, parsed with
tensorflow_metadata's proto and checked against stats.json and numpy.

(TFDV itself, which only the TFX environment has, loads and renders the file
in tests_tfx/test_tfdv_interop.py.)"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from tensorflow_metadata.proto.v0 import statistics_pb2

from tanhguard.errors import OutputExistsError
from tanhguard.pipeline.analyze import run_analyze
from tanhguard.pipeline.output_dir import MARKER, publish_dir
from tanhguard.pipeline.tfdv_stats import TFDV_STATS_FILE, statistics_list
from tanhguard.transforms.config import parse_config

ROWS = 500
F32 = np.float32
CONFIG = parse_config(
    {
        "features": {
            "fare": {},
            "trips": {"dtype": "int", "clip": "minmax"},
            "each": {"shape": [3], "clip": "iqr"},
            "shared": {"shape": [2], "elementwise": False},
        }
    }
)


def _columns():
    rng = np.random.default_rng(3)
    fare = (10 + 3 * rng.standard_t(3, ROWS)).astype(np.float32)
    fare[:7] = 0.0
    fare[7:12] = np.nan
    fare[12] = np.inf
    return {
        "fare": fare,
        "trips": rng.integers(0, 5, ROWS).astype(np.float32),
        **{
            f"each_{i}": rng.normal(i, 1 + i, ROWS).astype(np.float32) for i in range(3)
        },
        **{f"shared_{i}": rng.normal(0, 2, ROWS).astype(np.float32) for i in range(2)},
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfdv")
    columns = _columns()
    lines = [",".join(columns)]
    for row in range(ROWS):
        cells = []
        for name, values in columns.items():
            value = float(values[row])
            if name == "trips":
                cells.append("" if row < 4 else str(int(value)))  # 4 missing
            elif name.startswith("each") and row in (20, 21):
                cells.append("")  # two rows without `each`
            else:
                cells.append(repr(value))
        lines.append(",".join(cells))
    (root / "data.csv").write_text("\n".join(lines) + "\n")
    stats = run_analyze(CONFIG, str(root / "data.csv"), root / "artifacts")
    proto = statistics_pb2.DatasetFeatureStatisticsList()
    proto.ParseFromString((root / "artifacts" / TFDV_STATS_FILE).read_bytes())
    return {"root": root, "stats": stats, "proto": proto, "columns": columns}


def _feature(run, name):
    (dataset,) = run["proto"].datasets
    (found,) = [f for f in dataset.features if f.name == name]
    return found


def test_the_file_holds_one_dataset_with_every_feature(run):
    (dataset,) = run["proto"].datasets
    assert dataset.num_examples == ROWS
    assert [f.name for f in dataset.features] == list(CONFIG.features)
    assert _feature(run, "trips").type == statistics_pb2.FeatureNameStatistics.INT
    assert _feature(run, "fare").type == statistics_pb2.FeatureNameStatistics.FLOAT


@pytest.mark.parametrize(
    ("name", "missing_rows", "values_per_row"),
    [("fare", 0, 1), ("trips", 4, 1), ("each", 2, 3), ("shared", 0, 2)],
)
def test_common_stats_count_rows_and_values(run, name, missing_rows, values_per_row):
    common = _feature(run, name).num_stats.common_stats
    assert common.num_missing == missing_rows
    assert common.num_non_missing == ROWS - missing_rows
    assert common.min_num_values == common.max_num_values == values_per_row
    assert common.avg_num_values == values_per_row
    assert common.tot_num_values == (ROWS - missing_rows) * values_per_row


@pytest.mark.parametrize("name", ["fare", "trips", "shared"])
def test_numeric_stats_equal_stats_json(run, name):
    feature = run["stats"]["features"][name]
    numeric = _feature(run, name).num_stats
    assert numeric.mean == feature["mean"]
    assert numeric.std_dev == feature["std"]
    assert numeric.min == feature["min"]
    assert numeric.max == feature["max"]
    assert numeric.median == feature["quantiles"]["0.5"]
    assert numeric.num_zeros == feature["zeros"]


def test_numeric_stats_of_the_fare_column_against_numpy(run):
    fare = run["columns"]["fare"].astype(np.float64)
    finite = fare[np.isfinite(fare)]
    numeric = _feature(run, "fare").num_stats
    np.testing.assert_allclose(numeric.mean, finite.mean(), rtol=1e-9)
    np.testing.assert_allclose(numeric.std_dev, finite.std(), rtol=1e-9)
    assert numeric.num_zeros == 7  # rows 0-6 were set to 0
    assert numeric.min == finite.min() and numeric.max == finite.max()


def test_an_elementwise_vector_pools_its_elements_like_tfdv(run):
    values = np.delete(
        np.stack([run["columns"][f"each_{i}"] for i in range(3)], axis=1),
        [20, 21],
        axis=0,
    ).astype(np.float64)
    numeric = _feature(run, "each").num_stats
    np.testing.assert_allclose(numeric.mean, values.mean(), rtol=1e-9)
    np.testing.assert_allclose(numeric.std_dev, values.std(), rtol=1e-9)
    assert numeric.min == np.float32(values.min())
    assert numeric.max == np.float32(values.max())
    custom = {c.name: c.histogram for c in _feature(run, "each").custom_stats}
    assert sorted(custom) == sorted(
        f"element {i}: {kind}" for i in range(3) for kind in ("histogram", "quantiles")
    )
    for i in range(3):
        buckets = custom[f"element {i}: histogram"].buckets
        assert sum(b.sample_count for b in buckets) == ROWS - 2


@pytest.mark.parametrize("name", ["fare", "trips", "shared"])
def test_standard_histogram_is_the_raw_histogram_with_its_tails(run, name):
    feature = run["stats"]["features"][name]
    raw = feature["histogram"]
    (standard,) = [
        h
        for h in _feature(run, name).num_stats.histograms
        if h.type == statistics_pb2.Histogram.STANDARD
    ]
    counts = [b.sample_count for b in standard.buckets]
    assert sum(counts) == feature["count"]
    assert counts[1:-1] == raw["counts"][1:-1]
    assert counts[0] == raw["counts"][0] + raw["below"]
    assert counts[-1] == raw["counts"][-1] + raw["above"]
    inner = [b.low_value for b in standard.buckets][1:]
    assert inner == raw["edges"][1:-1]
    assert standard.buckets[0].low_value == min(feature["min"], raw["edges"][0])
    assert standard.buckets[-1].high_value == max(feature["max"], raw["edges"][-1])
    assert standard.num_nan == feature["nan"]


@pytest.mark.parametrize("name", ["fare", "trips", "shared"])
def test_quantiles_histogram_is_the_quantile_grid(run, name):
    feature = run["stats"]["features"][name]
    grid = feature["quantile_grid"]
    (quantiles,) = [
        h
        for h in _feature(run, name).num_stats.histograms
        if h.type == statistics_pb2.Histogram.QUANTILES
    ]
    lows = [b.low_value for b in quantiles.buckets]
    assert lows == [feature["min"], *grid["values"]]
    assert quantiles.buckets[-1].high_value == feature["max"]
    total = sum(b.sample_count for b in quantiles.buckets)
    np.testing.assert_allclose(total, feature["count"], rtol=1e-12)


def test_stats_json_without_histograms_is_refused():
    stats = {"num_rows": 1, "features": {"x": {"count": 1}}, "config": {}}
    stats["format_version"] = 3
    with pytest.raises(ValueError, match=r"feature `x`.*format_version 3"):
        statistics_list(stats)


def test_overwrite_recognizes_artifacts_holding_the_tfdv_file(tmp_path):
    """Artifacts without the marker (older ones) are tanhguard's when every
    name is one tanhguard writes, stats.tfdv.pb included."""
    output = tmp_path / "old"
    output.mkdir()
    for name in ("stats.json", TFDV_STATS_FILE):
        (output / name).write_text("{}")
    with pytest.raises(OutputExistsError), publish_dir(output) as staging:
        (Path(staging) / "x").write_text("")
    with publish_dir(output, overwrite=True) as staging:
        (Path(staging) / "stats.json").write_text(json.dumps({}))
    assert sorted(os.listdir(output)) == [MARKER, "stats.json"]
