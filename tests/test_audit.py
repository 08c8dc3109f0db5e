"""`audit` end to end: the box from the artifacts, the demo-like model raw vs
guarded, `--data`, the table, JSON and `--fail-on`."""

import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tanhguard.pipeline.analyze import run_analyze
from tanhguard.pipeline.audit import (
    FAIL_CONDITIONS,
    OVERFLOW_FLOAT32,
    TABLE_WIDTH,
    audit,
    input_boxes,
)
from tanhguard.pipeline.cli import AUDIT_FAIL_CONDITIONS, main
from tanhguard.pipeline.demo import demo_config, generate_demo_rows, write_demo_csv
from tanhguard.pipeline.serving import Preprocessor, model_matrix

CONFIG = demo_config()
ROWS = 2_000
WIDTH = len(CONFIG.model_matrix_names()) + 2  # embedding has 3 columns


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    write_demo_csv(root / "demo.csv", generate_demo_rows(ROWS, seed=5), seed=5)
    run_analyze(CONFIG, str(root / "demo.csv"), root / "artifacts")
    return root


def _model(family, scale=0.5, name="demo"):
    inputs = family.Input((WIDTH,))
    dense = family.layers.Dense(8, activation="tanh", use_bias=False, name="dense")
    model = family.Model(inputs, dense(inputs), name=name)
    weights = np.random.default_rng(0).normal(0, scale, (WIDTH, 8))
    dense.set_weights([weights.astype(np.float32)])
    return model


def _hostile_raw(rows):
    """Raw rows with every hostile value: NaN, +-Inf, float32 extremes."""
    columns = generate_demo_rows(rows, seed=9)
    raw = {}
    for name, feature in CONFIG.features.items():
        stacked = np.stack([columns[c] for c in CONFIG.csv_columns(name)], axis=1)
        raw[name] = stacked if feature.is_vector else stacked[:, 0]
    extremes = np.array([np.nan, np.inf, -np.inf, 3.4e38, -3.4e38, 0.0, 1e30])
    for name in ("fare", "tip_ratio", "trip_distance", "sensor"):
        raw[name][: extremes.size] = extremes
    raw["passengers"] = raw["passengers"].astype(np.int64)
    return raw


def test_every_preprocessing_output_lies_in_its_box(demo):
    guarded, raw = input_boxes(demo / "artifacts")
    outputs = Preprocessor(demo / "artifacts")(_hostile_raw(500))
    for name in CONFIG.model_matrix_names():
        values = np.asarray(outputs[name]).reshape(500, -1)
        box = guarded[name]
        assert np.all(values >= box.lower) and np.all(values <= box.upper), name
        assert np.all(np.abs(box.lower) <= 5.0) and np.all(np.abs(box.upper) <= 5.0)
        assert np.all(np.isinf(raw[name].upper))


def test_the_box_is_tighter_where_stats_json_proves_it(demo):
    """passengers: clip [1, 6], zscore: the box is ((1, 6) - center) / scale,
    not [-5, 5] (the oracle: the stats.json numbers and the formula)."""
    stats = json.loads((demo / "artifacts" / "stats.json").read_text())
    entry = stats["features"]["passengers"]
    center, scale = entry["scale"]["center"], entry["scale"]["scale"]
    expected = (
        (entry["clip"]["lower"] - center) / scale,
        (entry["clip"]["upper"] - center) / scale,
    )
    box = input_boxes(demo / "artifacts")[0]["passengers"]
    np.testing.assert_allclose([box.lower[0], box.upper[0]], expected, rtol=1e-6)
    assert input_boxes(demo / "artifacts")[0]["constant"].upper[0] == 0.0


@pytest.mark.parametrize("family", [keras, tf_keras], ids=["keras3", "tf_keras"])
def test_raw_inputs_are_unbounded_guarded_ones_are_finite_and_data_lies_inside(
    demo, family
):
    result = audit(_model(family), demo / "artifacts", data=str(demo / "demo.csv"))
    (layer,) = result.layers
    assert layer.activation == "tanh"
    assert np.isfinite(layer.proven.max_abs)
    assert layer.proven.max_abs < OVERFLOW_FLOAT32
    assert not layer.can_overflow
    assert np.isinf(layer.raw.max_abs)
    assert result.rows == ROWS
    assert result.data_inside
    assert 0 < layer.observed.max_abs <= layer.proven.max_abs
    # The model the data went through: the preprocessing, then the model.
    raw = _hostile_raw(200)
    x = model_matrix(Preprocessor(demo / "artifacts")(raw), CONFIG)
    z = np.asarray(x) @ np.asarray(_model(family).layers[-1].kernel)
    assert np.max(np.abs(z)) <= layer.proven.max_abs
    assert not result.fails("overflow")


def test_the_table_fits_100_columns_and_the_json_is_strict(demo):
    result = audit(_model(keras), demo / "artifacts", data=str(demo / "demo.csv"))
    table = result.table()
    assert "dense" in table and "inf" in table
    assert max(len(line) for line in table.splitlines()) <= TABLE_WIDTH
    document = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert document["layers"][0]["raw"]["max_abs"] == "inf"
    assert document["data_inside_proven"] is True


def _cli(argv):
    return main(argv)


def test_the_command_lines_fail_conditions_are_the_audits():
    assert AUDIT_FAIL_CONDITIONS == FAIL_CONDITIONS


def test_fail_on_overflow_exits_1_and_says_what_would_help(demo, tmp_path, capsys):
    """Weights of scale 50 push max |z| past 88.72: exit 1 with --fail-on."""
    path = tmp_path / "big.keras"
    _model(keras, scale=50.0).save(path)
    args = ["audit", "--artifacts", str(demo / "artifacts"), "--model", str(path)]
    assert _cli(args) == 0
    assert _cli([*args, "--fail-on", "overflow"]) == 1
    captured = capsys.readouterr()
    assert "audit failed (--fail-on overflow): dense" in captured.err
    out = captured.out
    # The advice's factor, applied to the weights, brings max |z| to 88.72.
    factor = float(re.search(r"scale the weights into it down by ([0-9.e+-]+)", out)[1])
    scaled = _model(keras, scale=50.0)
    scaled.layers[-1].set_weights([scaled.layers[-1].get_weights()[0] * factor])
    layer = audit(scaled, demo / "artifacts").layers[0]
    assert layer.proven.max_abs == pytest.approx(OVERFLOW_FLOAT32, rel=2e-3)
    assert _cli([*args, "--fail-on", "saturation", "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["layers"][0]["can_overflow_float32"] is True


def test_a_tf_keras_h5_model_and_named_inputs(demo, tmp_path):
    inputs = {
        name: tf_keras.Input((CONFIG.features[name].size,), name=name)
        for name in CONFIG.features
    }
    merged = tf_keras.layers.Concatenate()(list(inputs.values()))
    hidden = tf_keras.layers.Dense(4, activation="tanh")(merged)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(1)(hidden))
    model.save(tmp_path / "named.h5")
    result = audit(str(tmp_path / "named.h5"), demo / "artifacts")
    assert len(result.layers) == 1 and np.isfinite(result.layers[0].proven.max_abs)
    tf.debugging.assert_all_finite(tf.constant(result.layers[0].proven.max_abs), "")
