"""The TFX entry point's config handling, without TFX: custom_config forms,
schema-derived features, and the errors that name what is missing."""

import numpy as np
import pytest
import tensorflow as tf

from tanhguard.transforms import preprocessing_fn
from tanhguard.transforms.config import ConfigError
from tanhguard.transforms.tfx_module import config_for_inputs

INPUTS = {
    "fare": tf.sparse.from_dense(tf.constant([[1.5], [2.5]])),
    "trips": tf.constant([[3], [4]], tf.int64),
    "embedding": tf.constant([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]),
    "city": tf.constant([["a"], ["b"]]),
    "label": tf.sparse.from_dense(tf.constant([[1], [0]], tf.int64)),
}


def test_config_without_features_takes_numeric_schema_features():
    config, passthrough = config_for_inputs(
        {"config": {"defaults": {"clip": "iqr"}}, "passthrough": ["label"]}, INPUTS
    )
    assert list(config.features) == ["fare", "trips", "embedding"]
    assert config.features["trips"].dtype == "int"
    assert config.features["embedding"].shape == (3,)
    assert config.features["fare"].clip.strategy == "iqr"
    assert passthrough == ["label"]


def test_config_path_is_read(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("features:\n  fare: {clip: mad}\n")
    config, _ = config_for_inputs({"config_path": str(path)}, INPUTS)
    assert list(config.features) == ["fare"]
    assert config.features["fare"].clip.strategy == "mad"


def test_schema_dtype_wins_over_the_config_default():
    config, _ = config_for_inputs({"config": {"features": {"trips": {}}}}, INPUTS)
    assert config.features["trips"].dtype == "int"


@pytest.mark.parametrize(
    ("custom_config", "match"),
    [
        (None, r"needs the Transform component's `custom_config`"),
        ({}, r"give exactly one of `config` \(a mapping\) and `config_path`"),
        (
            {"config": {}, "config_path": "x.yaml"},
            r"give exactly one of `config`",
        ),
        ({"config": "fare"}, r"`config` must be a mapping"),
        ({"config": {}, "colour": 1}, r"unknown key\(s\) \['colour'\]"),
        ({"config_path": "/nonexistent/c.yaml"}, r"`config_path` /nonexistent/c"),
        (
            {"config": {"features": {"tips": {}}}},
            r"feature `tips`: configured but not in the schema",
        ),
        (
            {"config": {"features": {"city": {}}}},
            r"feature `city`: the schema gives it dtype .*string",
        ),
        (
            {"config": {}, "passthrough": ["target"]},
            r"`passthrough` feature\(s\) \['target'\] are not in the schema",
        ),
        (
            {"config": {"features": {"fare": {"clip": "winsor"}}}},
            r"feature `fare`: `clip`: unknown strategy",
        ),
    ],
    ids=[
        "no custom_config",
        "neither config nor config_path",
        "both config and config_path",
        "config that is not a mapping",
        "unknown key",
        "config_path that does not exist",
        "configured feature absent from the schema",
        "string feature",
        "passthrough feature absent from the schema",
        "invalid config",
    ],
)
def test_bad_custom_config_is_an_error_naming_what_is_wrong(custom_config, match):
    with pytest.raises(ConfigError, match=match):
        config_for_inputs(custom_config, INPUTS)


def test_entry_point_runs_in_a_tft_analysis_with_a_passthrough_label(tmp_path):
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    spec = {
        "fare": tf.io.VarLenFeature(tf.float32),
        "label": tf.io.VarLenFeature(tf.int64),
    }
    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(spec)
    )
    fares = [1.0, 2.0, float("nan"), 4.0, 1e30, 3.0]
    rows = [{"fare": [v], "label": [i % 2]} for i, v in enumerate(fares)]
    rows.append({"fare": [], "label": []})  # both missing
    custom_config = {
        "config": {"defaults": {"clip": "minmax", "scale": "none"}},
        "passthrough": ["label"],
    }
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=str(tmp_path)):
        data = pipeline | beam.Create(rows)
        (transformed, _), _ = (
            data,
            metadata,
        ) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing_fn(inputs, custom_config)
        )
        _ = (
            transformed
            | beam.combiners.ToList()
            | beam.Map(lambda got: (tmp_path / "rows.txt").write_text(repr(got)))
        )
    got = eval((tmp_path / "rows.txt").read_text(), {"array": np.array})
    assert [int(row["label"]) for row in got] == [0, 1, 0, 1, 0, 1, 0]
    # minmax clip over the finite values [1, 1e30], no scaling; NaN and missing
    # take the median (3.0 or 4.0 for an even count: the sketch's choice).
    fare = np.array([float(row["fare"]) for row in got], np.float32)
    np.testing.assert_allclose(fare[[0, 1, 3, 5]], [1.0, 2.0, 4.0, 3.0])
    assert fare[4] == 5.0  # 1e30 clips to upper (1e30), then the output bound
    assert fare[2] == fare[6] and fare[2] in (np.float32(3.0), np.float32(4.0))
