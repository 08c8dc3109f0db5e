"""The example TFX pipeline end to end (TFX environment only): tanhguard as the
Transform module, a tanh model trained behind it, pushed, and served."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tanhguard.pipeline.analyze import run_analyze
from tanhguard.pipeline.graph_stats import stats_from_transform_graph
from tanhguard.transforms.config import parse_config

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "tfx"
sys.path.insert(0, str(EXAMPLE))
import pipeline as example  # noqa: E402


@pytest.fixture(scope="module")
def by_name(tmp_path_factory):
    """The pipeline with `preprocessing_fn="tanhguard.transforms.preprocessing_fn"`."""
    return example.run(tmp_path_factory.mktemp("tfx_name"), train_steps=50)


def _example(values: dict) -> bytes:
    feature = {}
    for name, value in values.items():
        if isinstance(value, int):
            feature[name] = tf.train.Feature(
                int64_list=tf.train.Int64List(value=[value])
            )
        else:
            feature[name] = tf.train.Feature(
                float_list=tf.train.FloatList(value=[value])
            )
    return tf.train.Example(
        features=tf.train.Features(feature=feature)
    ).SerializeToString()


HOSTILE = [
    {"fare": float("nan"), "sensor": float("inf"), "tip_ratio": -float("inf")},
    {"fare": 1e30, "trip_distance": 3.4e38, "passengers": 10**12},
    {"fare": -1e30, "sensor": float("nan"), "embedding_0": float("inf")},
    {},  # every feature missing
    {
        "fare": 12.5,
        "tip_ratio": 0.2,
        "trip_distance": 3000.0,
        "sensor": 20.0,
        "constant": 7.5,
        "passengers": 2,
        "embedding_0": 0.1,
        "embedding_1": 0.2,
        "embedding_2": 0.3,
    },
]


def test_pushed_model_gives_finite_predictions_for_hostile_examples(by_name):
    served = tf.saved_model.load(str(by_name["serving"]))
    examples = tf.constant([_example(values) for values in HOSTILE])
    probability = served.signatures["serving_default"](examples=examples)[
        "probability"
    ].numpy()
    assert probability.shape == (len(HOSTILE), 1)
    assert np.all(np.isfinite(probability))
    assert np.all((probability >= 0) & (probability <= 1))


def test_transform_graph_bounds_equal_tanhguard_analyze_on_the_same_csv(
    by_name, tmp_path
):
    stats = by_name["stats"]
    config = parse_config(stats["config"])
    train_csv = by_name["serving"].parent.parent / "data" / "train" / "data.csv"
    analyzed = run_analyze(config, str(train_csv), tmp_path / "artifacts")
    assert analyzed["num_rows"] == stats["num_rows"]
    for name, feature in stats["features"].items():
        other = analyzed["features"][name]
        # Below 1/epsilon values the sketch keeps every value: exact quantiles.
        for block, key in (("clip", "lower"), ("clip", "upper"), ("impute", "value")):
            assert feature[block][key] == other[block][key], (name, block, key)
        for key in ("center", "scale"):
            np.testing.assert_allclose(
                feature["scale"][key], other["scale"][key], rtol=1e-6, err_msg=name
            )
        for key in ("count", "missing", "nan", "pos_inf", "neg_inf"):
            assert feature[key] == other[key], (name, key)


def test_stats_json_is_written_from_the_transform_graph(by_name):
    written = json.loads((by_name["serving"].parent.parent / "stats.json").read_text())
    assert written == json.loads(
        json.dumps(stats_from_transform_graph(by_name["transform_graph"]))
    )
    assert "label" not in written["features"]  # passthrough, not transformed
    assert written["features"]["passengers"]["clip"]["strategy"] == "quantile"
    assert written["config"]["features"]["passengers"]["dtype"] == "int"


def test_module_file_that_re_exports_the_entry_point_gives_the_same_graph(
    by_name, tmp_path
):
    data = by_name["serving"].parent.parent / "data"
    result = example.run(
        tmp_path / "tfx_module",
        data_root=data,
        transform_module_file=str(EXAMPLE / "tanhguard_module.py"),
        train_steps=10,
    )
    assert result["stats"]["features"] == by_name["stats"]["features"]
