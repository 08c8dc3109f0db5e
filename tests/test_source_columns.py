"""A feature read from a source column whose name is not a feature name
(`mean radius`, as scikit-learn's datasets spell it), in every format: the
raw side (reader, raw metadata, graph inputs, parsed `tf.Example`s) speaks the
source column, the outputs and stats.json the feature name."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from graph_oracle import element, expected_output
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from tanhguard.errors import ConfigError, DataError
from tanhguard.pipeline.analyze import run_analyze
from tanhguard.pipeline.readers import resolve_inputs
from tanhguard.pipeline.transform_job import run_transform
from tanhguard.transforms.config import parse_config
from tanhguard.transforms.tfx_module import config_for_inputs, preprocessing_fn

ROWS = 400
CONFIG = parse_config(
    {
        "defaults": {"clip": "none"},
        "features": {
            "mean_radius": {"column": "mean radius"},
            "fare": {},
            "emb": {"shape": [2], "column": "word emb"},
        },
    }
)
SOURCES = {"mean radius", "fare", "word emb"}


def _data():
    rng = np.random.default_rng(13)
    radius = rng.normal(14.1, 3.5, ROWS).astype(np.float32)
    radius[::17] = np.nan  # missing
    fare = rng.gamma(2.0, 7.0, ROWS).astype(np.float32)
    emb = rng.normal([0.0, 50.0], [1.0, 9.0], (ROWS, 2)).astype(np.float32)
    return radius, fare, emb


def _write_csv(path, radius, fare, emb):
    with open(path, "w") as handle:
        handle.write("id,mean radius,fare,word emb_0,word emb_1\n")
        for i in range(ROWS):
            cells = [radius[i], fare[i], emb[i, 0], emb[i, 1]]
            text = ["" if np.isnan(c) else repr(float(c)) for c in cells]
            handle.write(f"{i}," + ",".join(text) + "\n")


def _write_parquet(path, radius, fare, emb):
    table = pa.table(
        {
            "mean radius": pa.array(radius, mask=np.isnan(radius)),
            "fare": fare,
            "word emb": pa.array(list(emb), type=pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, path)


def _example(radius, fare, emb) -> bytes:
    feature = {
        "fare": tf.train.Feature(float_list=tf.train.FloatList(value=[fare])),
        "word emb": tf.train.Feature(float_list=tf.train.FloatList(value=list(emb))),
    }
    if not np.isnan(radius):
        feature["mean radius"] = tf.train.Feature(
            float_list=tf.train.FloatList(value=[radius])
        )
    return tf.train.Example(
        features=tf.train.Features(feature=feature)
    ).SerializeToString()


def _write_tfrecord(path, radius, fare, emb):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(ROWS):
            writer.write(_example(radius[i], fare[i], emb[i]))


WRITERS = {
    "csv": _write_csv,
    "parquet": _write_parquet,
    "tfrecord": _write_tfrecord,
}


@pytest.fixture(scope="module", params=sorted(WRITERS))
def analyzed(request, tmp_path_factory):
    fmt = request.param
    root = tmp_path_factory.mktemp(f"columns-{fmt}")
    radius, fare, emb = _data()
    data = root / f"data.{fmt}"
    WRITERS[fmt](data, radius, fare, emb)
    run_analyze(CONFIG, str(data), root / "artifacts")
    return fmt, root, (radius, fare, emb)


def test_statistics_are_those_of_the_source_columns(analyzed):
    _, root, (radius, fare, emb) = analyzed
    stats = json.loads((root / "artifacts" / "stats.json").read_text())
    assert list(stats["features"]) == ["mean_radius", "fare", "emb"]
    radius_stats = stats["features"]["mean_radius"]
    finite = radius[~np.isnan(radius)].astype(np.float64)
    assert radius_stats["count"] == finite.size
    assert radius_stats["missing"] + radius_stats["nan"] == ROWS - finite.size
    assert radius_stats["mean"] == pytest.approx(finite.mean(), rel=1e-6)
    assert radius_stats["std"] == pytest.approx(finite.std(), rel=1e-5)
    assert stats["features"]["fare"]["mean"] == pytest.approx(
        fare.astype(np.float64).mean(), rel=1e-6
    )
    assert stats["features"]["emb"]["mean"] == pytest.approx(
        emb.astype(np.float64).mean(axis=0), rel=1e-5
    )
    assert stats["config"]["features"]["mean_radius"]["column"] == "mean radius"


def test_raw_metadata_and_graph_inputs_are_keyed_by_source_column(analyzed):
    _, root, _ = analyzed
    output = tft.TFTransformOutput(str(root / "artifacts"))
    assert set(output.raw_feature_spec()) == SOURCES
    assert set(output.transformed_feature_spec()) == {"mean_radius", "fare", "emb"}


def _expected(stats, radius, fare, emb):
    features = stats["features"]
    return {
        "mean_radius": expected_output(element(features["mean_radius"], None), radius),
        "fare": expected_output(element(features["fare"], None), fare),
        "emb": np.stack(
            [expected_output(element(features["emb"], i), emb[:, i]) for i in (0, 1)],
            axis=1,
        ),
    }


def test_serving_parses_examples_keyed_by_source_column(analyzed):
    # TFX's serving recipe: parse with raw_feature_spec(), then the layer.
    _, root, (radius, fare, emb) = analyzed
    stats = json.loads((root / "artifacts" / "stats.json").read_text())
    output = tft.TFTransformOutput(str(root / "artifacts"))
    examples = tf.constant([_example(radius[i], fare[i], emb[i]) for i in range(ROWS)])
    parsed = tf.io.parse_example(examples, output.raw_feature_spec())
    got = output.transform_features_layer()(parsed)
    want = _expected(stats, radius, fare, emb)
    for name, values in want.items():
        np.testing.assert_allclose(got[name].numpy(), values, rtol=1e-6, atol=1e-6)


def test_transform_job_reads_source_columns(analyzed, tmp_path):
    fmt, root, (radius, fare, emb) = analyzed
    stats = json.loads((root / "artifacts" / "stats.json").read_text())
    out = tmp_path / "rows"
    result = run_transform(root / "artifacts", str(root / f"data.{fmt}"), out)
    assert result["rows"] == ROWS
    table = pq.read_table(sorted(out.glob("*.parquet")))
    assert set(table.column_names) == {"mean_radius", "fare", "emb"}
    want = _expected(stats, radius, fare, emb)
    # Rows in input order are not promised: compare sorted by `fare`, unique.
    order_got = np.argsort(table.column("fare").to_numpy())
    order_want = np.argsort(want["fare"])
    for name in ("mean_radius", "fare"):
        got = table.column(name).to_numpy()[order_got]
        np.testing.assert_allclose(got, want[name][order_want], rtol=1e-6, atol=1e-6)
    got_emb = np.array(table.column("emb").to_pylist(), np.float32)[order_got]
    np.testing.assert_allclose(got_emb, want["emb"][order_want], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_a_missing_source_column_is_named(tmp_path, fmt):
    radius, fare, emb = _data()
    data = tmp_path / f"data.{fmt}"
    WRITERS[fmt](data, radius, fare, emb)
    config = parse_config(
        {"features": {"mean_radius": {"column": "mean_radius"}}, "defaults": None}
    )
    if fmt == "tfrecord":
        # An absent tf.Example key is a missing value; every row lacks it.
        files, _, has_rows = resolve_inputs(str(data), config)
        assert has_rows and files == [str(data)]
        return
    with pytest.raises(DataError, match=r"feature `mean_radius`: column\(s\) "):
        resolve_inputs(str(data), config)


def test_vector_columns_take_the_column_as_stem(tmp_path):
    radius, fare, emb = _data()
    data = tmp_path / "data.csv"
    _write_csv(data, radius, fare, emb)
    config = parse_config({"features": {"emb": {"shape": [3], "column": "word emb"}}})
    with pytest.raises(
        DataError, match=r"feature `emb`: column\(s\) \['word emb_2'\] not in"
    ):
        resolve_inputs(str(data), config)


# --- inside TFX: the schema and the inputs are keyed by the source column ---

RAW_SPEC = {
    "mean radius": tf.io.VarLenFeature(tf.float32),
    "worst area": tf.io.FixedLenFeature([], tf.float32),
    "label": tf.io.FixedLenFeature([], tf.int64),
}


def _run_tfx_preprocessing(custom_config, tmp_path):
    radius, fare, _ = _data()
    rows = [
        {
            "mean radius": [] if np.isnan(radius[i]) else [float(radius[i])],
            "worst area": float(fare[i]),
            "label": i % 2,
        }
        for i in range(ROWS)
    ]
    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec(RAW_SPEC)
    )
    with tft_beam.Context(temp_dir=str(tmp_path), force_tf_compat_v1=False):
        (transformed, _), _ = (
            rows,
            metadata,
        ) | tft_beam.AnalyzeAndTransformDataset(
            lambda inputs: preprocessing_fn(inputs, custom_config)
        )
    return transformed, radius, fare


def test_tfx_preprocessing_fn_reads_the_configured_column(tmp_path):
    custom_config = {
        "config": {
            "defaults": {"clip": "none", "impute": "mean"},
            "features": {"mean_radius": {"column": "mean radius"}},
        },
        "passthrough": ["label"],
    }
    transformed, radius, _ = _run_tfx_preprocessing(custom_config, tmp_path)
    assert set(transformed[0]) == {"mean_radius", "label"}
    got = np.array([row["mean_radius"] for row in transformed])
    finite = radius[~np.isnan(radius)].astype(np.float64)
    # Missing values take the mean; no clip; zscore: the numpy oracle.
    filled = np.where(np.isnan(radius), finite.mean(), radius).astype(np.float64)
    want = np.clip((filled - finite.mean()) / finite.std(), -5, 5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_tfx_config_without_features_names_columns_as_features():
    inputs = {
        "mean radius": tf.sparse.from_dense(tf.constant([[1.5], [2.5]])),
        "worst area": tf.constant([[3.0], [4.0]]),
        "3d": tf.constant([[3.0], [4.0]]),
        "label": tf.constant([[1], [0]], tf.int64),
    }
    config, _ = config_for_inputs({"config": {}, "passthrough": ["label"]}, inputs)
    assert list(config.features) == ["mean_radius", "worst_area", "_3d"]
    assert [config.source_column(n) for n in config.features] == [
        "mean radius",
        "worst area",
        "3d",
    ]


@pytest.mark.parametrize(
    ("custom_config", "match"),
    [
        (
            {"config": {"features": {"mean_radius": {"column": "mean radii"}}}},
            r"feature `mean_radius`: its column `mean radii` not in the schema",
        ),
        (
            {"config": {"features": {"mean_radius": {}}}},
            r"feature `mean_radius`: configured but not in the schema",
        ),
    ],
    ids=["a misspelt column is named", "a feature without its column is named"],
)
def test_tfx_config_errors_name_the_column(custom_config, match):
    inputs = {"mean radius": tf.sparse.from_dense(tf.constant([[1.5]]))}
    with pytest.raises(ConfigError, match=match):
        config_for_inputs(custom_config, inputs)


def test_tfx_columns_that_would_share_a_feature_name_are_refused():
    inputs = {
        "mean radius": tf.constant([[1.0]]),
        "mean_radius": tf.constant([[2.0]]),
    }
    with pytest.raises(
        ConfigError, match=r"`mean radius` and `mean_radius` would both be feature"
    ):
        config_for_inputs({"config": {}}, inputs)


def test_exported_signatures_preprocessor_and_attach_speak_both_names(tmp_path):
    """serving_default parses examples keyed by source column; the tensor
    signature, Preprocessor and an attached model take feature names."""
    import keras

    from tanhguard.pipeline.export import Preprocessor, attach, export

    root = tmp_path
    radius, fare, emb = _data()
    _write_csv(root / "data.csv", radius, fare, emb)
    run_analyze(CONFIG, str(root / "data.csv"), root / "artifacts")
    stats = json.loads((root / "artifacts" / "stats.json").read_text())
    want = _expected(stats, radius, fare, emb)
    export(root / "artifacts", tmp_path / "served")
    served = tf.saved_model.load(str(tmp_path / "served"))
    examples = tf.constant([_example(radius[i], fare[i], emb[i]) for i in range(ROWS)])
    by_example = served.signatures["serving_default"](examples=examples)
    by_tensor = served.signatures["transform_features"](
        mean_radius=tf.constant(radius), fare=tf.constant(fare), emb=tf.constant(emb)
    )
    by_preprocessor = Preprocessor(root / "artifacts")(
        {"mean_radius": radius, "fare": fare, "emb": emb}
    )
    for got in (by_example, by_tensor, by_preprocessor):
        for name, values in want.items():
            np.testing.assert_allclose(got[name].numpy(), values, rtol=1e-6, atol=1e-6)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1, use_bias=False)(inputs))
    model.layers[-1].set_weights([np.ones((4, 1))])
    guarded = attach(model, root / "artifacts")
    row_sums = np.asarray(guarded({"mean_radius": radius, "fare": fare, "emb": emb}))
    matrix = np.column_stack([want["mean_radius"], want["fare"], want["emb"]])
    np.testing.assert_allclose(row_sums[:, 0], matrix.sum(axis=1), rtol=1e-5, atol=1e-5)
