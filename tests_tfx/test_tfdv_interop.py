"""stats.tfdv.pb with TFDV itself (TFX environment only): it loads, a schema is
inferred from it, Facets renders it, and a clean column's numbers equal the
ones TFDV computes from the same CSV."""

import base64
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

from tanhguard.pipeline.analyze import run_analyze
from tanhguard.pipeline.tfdv_stats import TFDV_STATS_FILE
from tanhguard.transforms.config import load_config

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data" / "trips.csv"
CONFIG = load_config(ROOT / "configs" / "example.yaml")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    output = tmp_path_factory.mktemp("tfdv") / "artifacts"
    stats = run_analyze(CONFIG, str(DATA), output)
    return {"dir": output, "stats": stats}


@pytest.fixture(scope="module")
def loaded(artifacts):
    return tfdv.load_stats_binary(str(artifacts["dir"] / TFDV_STATS_FILE))


def _feature(statistics, name):
    (dataset,) = statistics.datasets
    (found,) = [f for f in dataset.features if f.path.step == [name] or f.name == name]
    return found


def test_tfdv_loads_every_feature(loaded, artifacts):
    (dataset,) = loaded.datasets
    assert dataset.num_examples == artifacts["stats"]["num_rows"] == 2000
    assert [f.name for f in dataset.features] == list(CONFIG.features)


def test_tfdv_infers_a_schema_with_every_feature_and_its_type(loaded):
    schema = tfdv.infer_schema(loaded)
    types = {f.name: f.type for f in schema.feature}
    assert set(types) == set(CONFIG.features)
    for name, feature in CONFIG.features.items():
        want = schema_pb2.INT if feature.dtype == "int" else schema_pb2.FLOAT
        assert types[name] == want, name
    # A vector [8] is 8 values in every present row, every row has it: TFDV
    # infers the fixed shape [8].
    embedding = tfdv.get_feature(schema, "embedding")
    assert [dim.size for dim in embedding.shape.dim] == [8]


def test_facets_renders_the_statistics(loaded):
    """The page Facets Overview draws embeds the statistics (base64 in its
    `proto-input`): every feature, with its histograms."""
    html = tfdv.utils.display_util.get_statistics_html(loaded)
    found = re.search(r'<facets-overview proto-input="([A-Za-z0-9+/=]+)"', html)
    assert found, html[:300]
    shown = statistics_pb2.DatasetFeatureStatisticsList()
    shown.ParseFromString(base64.b64decode(found.group(1)))
    (dataset,) = shown.datasets
    assert [f.name for f in dataset.features] == list(CONFIG.features)
    fare = _feature(shown, "fare").num_stats
    assert len(fare.histograms) == 2
    assert fare.mean == _feature(loaded, "fare").num_stats.mean


def test_a_clean_column_matches_tfdvs_own_statistics(loaded, tmp_path):
    """`passenger_count` has no missing, NaN or Inf cell: TFDV's statistics of
    the CSV are the oracle for its mean, std, min, max, zeros and counts."""
    from tensorflow_data_validation.utils import stats_util

    own = tfdv.generate_statistics_from_csv(
        str(DATA),
        stats_options=tfdv.StatsOptions(feature_allowlist=["passenger_count"]),
        output_path=str(tmp_path / "own.pb"),
    )
    theirs = stats_util.get_feature_stats(
        own.datasets[0], tfdv.FeaturePath(["passenger_count"])
    ).num_stats
    ours = _feature(loaded, "passenger_count").num_stats
    assert ours.common_stats.num_non_missing == theirs.common_stats.num_non_missing
    assert ours.common_stats.num_missing == theirs.common_stats.num_missing
    np.testing.assert_allclose(ours.mean, theirs.mean, rtol=1e-9)
    np.testing.assert_allclose(ours.std_dev, theirs.std_dev, rtol=1e-9)
    assert (ours.min, ours.max) == (theirs.min, theirs.max)
    assert ours.num_zeros == theirs.num_zeros
    assert ours.median == theirs.median  # integers 1..6: no rank error matters
    kinds = {h.type for h in ours.histograms}
    assert kinds == {
        statistics_pb2.Histogram.STANDARD,
        statistics_pb2.Histogram.QUANTILES,
    }
