"""Export: the serving SavedModel alone and in front of tf_keras and Keras 3
tanh models, TensorFlow's own saved_model_cli on it, and bad input."""

import json
import logging
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras
from graph_oracle import dense_as_sparse

from tanhguard.pipeline import graph_stats, serving
from tanhguard.pipeline.analyze import run_analyze
from tanhguard.pipeline.artifacts import passes_full_inputs_through
from tanhguard.pipeline.cli import EXIT_ERROR, EXIT_OK, main
from tanhguard.pipeline.demo import demo_config, generate_demo_rows, write_demo_csv
from tanhguard.pipeline.dense_route import first_difference
from tanhguard.pipeline.export import (
    ExportError,
    Preprocessor,
    ServingModule,
    attach,
    export,
    load_keras_model,
    model_matrix,
)
from tanhguard.transforms import mappers, preprocessing
from tanhguard.transforms.config import parse_config

ROWS = 3000
CONFIG = demo_config()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    write_demo_csv(root / "demo.csv", generate_demo_rows(ROWS, seed=3), seed=3)
    run_analyze(CONFIG, str(root / "demo.csv"), root / "artifacts")
    return root / "artifacts"


def _raw_rows(rows: int, seed: int) -> dict[str, np.ndarray]:
    """Demo-like raw features as the serving side sees them."""
    columns = generate_demo_rows(rows, seed=seed)
    raw = {}
    for name, feature in CONFIG.features.items():
        stacked = np.stack([columns[c] for c in CONFIG.csv_columns(name)], axis=1)
        raw[name] = stacked if feature.is_vector else stacked[:, 0]
    raw["passengers"] = raw["passengers"].astype(np.int64)
    return {k: v.astype(np.float32) if k != "passengers" else v for k, v in raw.items()}


def _hostile(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """NaN, +-Inf, 1e30 and x1000 units in every float feature."""
    hostile = {k: v.copy() for k, v in raw.items()}
    for name, values in hostile.items():
        if name == "passengers":
            values[::7] = 10**9
            continue
        flat = values.reshape(len(values), -1)
        flat[0::6] = np.nan
        flat[1::6] = np.inf
        flat[2::6] = -np.inf
        flat[3::6] = 1e30
        flat[4::6] *= 1000.0
    return hostile


def _examples(raw: dict[str, np.ndarray], absent=()) -> list[bytes]:
    """Serialized tf.Examples built with the standard tf.train API."""
    rows = len(next(iter(raw.values())))
    serialized = []
    for row in range(rows):
        feature = {}
        for name, values in raw.items():
            if name in absent:
                continue
            value = np.atleast_1d(values[row])
            if value.dtype.kind == "i":
                feature[name] = tf.train.Feature(
                    int64_list=tf.train.Int64List(value=value.tolist())
                )
            else:
                feature[name] = tf.train.Feature(
                    float_list=tf.train.FloatList(value=value.tolist())
                )
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        serialized.append(example.SerializeToString())
    return serialized


def _reference(artifacts, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The transformed features from TFT's own API."""
    output = tft.TFTransformOutput(str(artifacts))
    tensors = {name: dense_as_sparse(values) for name, values in raw.items()}
    return {k: v.numpy() for k, v in output.transform_raw_features(tensors).items()}


def _assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(
            np.asarray(got[name]), want[name], rtol=1e-6, atol=1e-6, err_msg=name
        )


@pytest.fixture(scope="module")
def standalone(artifacts, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "preprocessing"
    assert main(["export", "--artifacts", str(artifacts), "--output", str(path)]) == 0
    return path


@pytest.mark.parametrize("batch", [1, 1000])
def test_serving_signature_takes_tf_examples_and_matches_tft(
    artifacts, standalone, batch
):
    raw = _hostile(_raw_rows(batch, seed=21))
    loaded = tf.saved_model.load(str(standalone))
    examples = tf.constant(_examples(raw))
    got = loaded.signatures["serving_default"](examples=examples)
    _assert_same(got, _reference(artifacts, raw))
    for name, value in got.items():
        assert np.all(np.isfinite(value.numpy())), name


def test_tensor_signature_takes_raw_features_by_name(artifacts, standalone):
    raw = _hostile(_raw_rows(50, seed=22))
    loaded = tf.saved_model.load(str(standalone))
    signature = loaded.signatures["transform_features"]
    assert set(signature.structured_input_signature[1]) == set(CONFIG.features)
    got = signature(**{name: tf.constant(values) for name, values in raw.items()})
    _assert_same(got, _reference(artifacts, raw))


def _feed(rows: int, **given) -> dict[str, tf.Tensor]:
    """`transform_features` inputs: ones of each feature's shape, then `given`."""
    feed = {
        name: tf.ones(
            [rows, feature.size] if feature.is_vector else [rows],
            tf.int64 if feature.dtype == "int" else tf.float32,
        )
        for name, feature in CONFIG.features.items()
    }
    return {**feed, **given}


@pytest.mark.parametrize("batch", [1, 3, 2000])
def test_tensor_signature_matches_tft_on_hostile_rows_and_int64_extremes(
    artifacts, standalone, batch
):
    raw = _hostile(_raw_rows(batch, seed=25))
    extremes = [np.iinfo(np.int64).max, np.iinfo(np.int64).min, 0]
    raw["passengers"][-3:] = extremes[-min(batch, 3) :]
    signature = tf.saved_model.load(str(standalone)).signatures["transform_features"]
    got = signature(**{name: tf.constant(values) for name, values in raw.items()})
    _assert_same(got, _reference(artifacts, raw))


def test_tensor_signature_takes_a_scalar_as_a_column(standalone):
    signature = tf.saved_model.load(str(standalone)).signatures["transform_features"]
    fare = np.array([0.5, np.nan, np.inf, 40.0], np.float32)
    flat = signature(**_feed(4, fare=tf.constant(fare)))
    column = signature(**_feed(4, fare=tf.constant(fare[:, None])))
    assert column["fare"].shape == [4]
    _assert_same(column, {name: value.numpy() for name, value in flat.items()})


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        (
            "sensor",
            tf.ones([3]),
            r"features `fare` and `sensor` differ in batch size; every feature",
        ),
        (
            "passengers",
            tf.ones([5], tf.int64),
            r"features `fare` and `passengers` differ in batch size",
        ),
        # As many values as the batch, as a row: still a batch size that differs.
        ("sensor", tf.ones([1, 4]), r"features `fare` and `sensor` differ in batch"),
        ("embedding", tf.ones([3, 3]), r"features `fare` and `embedding` differ"),
        # As many values as `[4, 3]`: read across its rows if unchecked.
        ("embedding", tf.ones([3, 4]), r"features `fare` and `embedding` differ"),
        (
            "embedding",
            tf.ones([4, 4]),
            r"feature `embedding`: expected shape \[batch, 3\]",
        ),
        ("embedding", tf.ones([4, 2]), r"feature `embedding`: expected shape"),
        # Declared `[None]`; unchecked, 8 values would make 8 rows.
        ("fare", tf.ones([4, 2]), r"feature `fare`: expected shape \[batch\]"),
    ],
    ids=[
        "scalar batch",
        "int batch",
        "scalar as a row",
        "vector batch",
        "vector transposed",
        "vector too wide",
        "vector too narrow",
        "scalar as two columns",
    ],
)
def test_tensor_signature_checks_shapes_when_it_runs_naming_the_feature(
    standalone, name, value, match
):
    # A loaded signature does not hold its inputs to their declared shapes:
    # the graph checks them.
    signature = tf.saved_model.load(str(standalone)).signatures["transform_features"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        signature(**_feed(4, **{name: value}))


def _sparse_reference(artifacts, raw: dict, rows: int) -> dict[str, np.ndarray]:
    """TFT's own API on SparseTensors written here: a NaN `passengers` cell
    is missing (rounded otherwise), a feature absent from `raw` is missing in
    every row."""
    tensors = {}
    for name, feature in CONFIG.features.items():
        if name not in raw:
            dtype = np.int64 if feature.dtype == "int" else np.float32
            tensors[name] = tf.SparseTensor(
                np.zeros([0, 2], np.int64), np.zeros([0], dtype), [rows, feature.size]
            )
        elif name == "passengers":
            values = np.asarray(raw[name], np.float64).reshape(rows, 1)
            present = ~np.isnan(values)
            tensors[name] = tf.SparseTensor(
                np.argwhere(present),
                np.round(values[present]).astype(np.int64),
                values.shape,
            )
        else:
            tensors[name] = dense_as_sparse(raw[name])
    output = tft.TFTransformOutput(str(artifacts))
    return {k: v.numpy() for k, v in output.transform_raw_features(tensors).items()}


@pytest.mark.parametrize(
    "absent_fare, float_passengers", [(True, True), (True, False), (False, True)]
)
def test_preprocessor_with_an_absent_feature_or_float_ints_matches_tft(
    artifacts, absent_fare, float_passengers
):
    # Not every value present: the graph scatters, reading the indices of
    # every input, the full ones too.
    raw = _hostile(_raw_rows(40, seed=26))
    if absent_fare:
        del raw["fare"]
    if float_passengers:
        passengers = raw["passengers"].astype(np.float64)
        passengers[::5] = np.nan
        passengers[1::5] += 0.4
        raw["passengers"] = passengers
    want = _sparse_reference(artifacts, raw, 40)
    preprocessor = Preprocessor(artifacts)
    _assert_same(preprocessor(raw), want)
    traced = tf.function(preprocessor.__call__)
    _assert_same(traced({name: tf.constant(v) for name, v in raw.items()}), want)


def test_xla_compiles_the_graph_with_every_feature_given(artifacts, standalone):
    # XLA compiles both branches of the densify, the scatter one too, for the
    # shapes given: with every feature given, no indices.
    raw = _hostile(_raw_rows(20, seed=28))
    want = _reference(artifacts, raw)
    feed = {name: tf.constant(values) for name, values in raw.items()}
    compiled = tf.function(Preprocessor(artifacts).__call__, jit_compile=True)
    _assert_same(compiled(feed), want)
    signature = tf.saved_model.load(str(standalone)).signatures["transform_features"]
    through = tf.function(lambda given: signature(**given), jit_compile=True)
    _assert_same(through(feed), want)


def _scatter_every_input(features, name=None):
    """`densify_all` as graphs before the full-inputs branch had it: every
    sparse input scattered into NaN, reading its indices."""
    results = []
    with tf.name_scope(name or "densify"):
        for values, size in features:
            shape = tf.stack([values.dense_shape[0], tf.constant(size, tf.int64)])
            flat = tf.reshape(
                tf.sparse.to_dense(
                    tf.SparseTensor(
                        values.indices, tf.cast(values.values, tf.float32), shape
                    ),
                    default_value=float("nan"),
                ),
                [-1],
            )
            missing = mappers._missing(values, size)
            results.append(
                mappers.Densified(tf.reshape(flat, [-1, size]), missing, flat)
            )
    return results


def _bits(outputs) -> dict[str, np.ndarray]:
    """Each output's values as unsigned integers: equal only if bitwise."""
    arrays = {name: np.asarray(value) for name, value in outputs.items()}
    return {
        name: value.view(f"u{value.dtype.itemsize}") for name, value in arrays.items()
    }


def _op_names(concrete) -> set[str]:
    """Every node name of a concrete function's graph and of its library."""
    graph_def = concrete.graph.as_graph_def()
    names = {node.name for node in graph_def.node}
    for function in graph_def.library.function:
        names.update(node.name for node in function.node_def)
    return names


@pytest.mark.parametrize("rows", [3, 20_000])  # below and past the transpose
def test_tensor_signature_serves_the_dense_trace_bitwise_equal_to_the_graph(
    artifacts, standalone, rows
):
    assert ServingModule(artifacts).tensors_route == "dense"
    loaded = tf.saved_model.load(str(standalone))
    signature = loaded.signatures["transform_features"]
    # The dense trace has no densify branch; serving_default's graph does.
    branch = mappers.FULL_INPUTS_BRANCH
    assert not any(n.endswith(branch) for n in _op_names(signature))
    assert any(
        n.endswith(branch) for n in _op_names(loaded.signatures["serving_default"])
    )
    raw = _hostile(_raw_rows(rows, seed=31))
    raw["passengers"][-2:] = [np.iinfo(np.int64).max, np.iinfo(np.int64).min]
    got = signature(**{name: tf.constant(values) for name, values in raw.items()})
    want = _reference(artifacts, raw)
    assert set(got) == set(want)
    for name, bits in _bits(want).items():
        np.testing.assert_array_equal(_bits(got)[name], bits, err_msg=name)


def _edge_cases(artifacts) -> dict[str, tuple[str, object, object]]:
    """Per case: the feature, a value, and a predicate true on it alone."""
    stats = json.loads((artifacts / "stats.json").read_text())
    upper = np.float32(stats["features"]["fare"]["clip"]["upper"])
    above = np.nextafter(upper, np.float32(np.inf))  # the clip's first value
    most = np.finfo(np.float32).max
    largest = np.iinfo(np.int64).max
    return {
        "nan": ("fare", np.nan, tf.math.is_nan),
        "+inf": ("fare", np.inf, lambda x: tf.equal(x, np.inf)),
        "-inf": ("fare", -np.inf, lambda x: tf.equal(x, -np.inf)),
        "float32 max": ("fare", most, lambda x: tf.equal(x, most)),
        "just above the upper bound": ("fare", above, lambda x: tf.equal(x, above)),
        "int64 max": ("passengers", largest, lambda x: tf.equal(x, largest)),
    }


@pytest.mark.parametrize(
    "case",
    ["nan", "+inf", "-inf", "float32 max", "just above the upper bound", "int64 max"],
)
def test_a_dense_trace_differing_on_one_edge_value_is_not_served(
    artifacts, monkeypatch, case
):
    name, value, hit = _edge_cases(artifacts)[case]
    real = serving.dense_preprocessing_fn

    def differing_at_the_edge(path):
        config, vector, preprocessing_fn = real(path)

        def changed(inputs):
            outputs = preprocessing_fn(inputs)
            at_edge = hit(tf.reshape(inputs[name], [-1]))
            outputs[name] = tf.where(at_edge, -outputs[name] - 1.0, outputs[name])
            return outputs

        return config, vector, changed

    monkeypatch.setattr(serving, "dense_preprocessing_fn", differing_at_the_edge)
    module = ServingModule(artifacts)
    assert module.tensors_route == "transform graph"
    assert f"output `{name}`" in module.tensors_route_reason
    raw = _raw_rows(4, seed=33)
    raw[name][1] = value
    got = module.transform_features({k: tf.constant(v) for k, v in raw.items()})
    _assert_same(got, _reference(artifacts, raw))


def test_a_graph_whose_config_differs_from_the_artifacts_is_served_as_it_is(
    artifacts, monkeypatch
):
    real = serving.dense_preprocessing_fn

    def other_config(path):
        config, vector, preprocessing_fn = real(path)
        document = config.to_json_dict()
        document["features"]["fare"]["output_bound"] = 4.0
        return parse_config(document), vector, preprocessing_fn

    monkeypatch.setattr(serving, "dense_preprocessing_fn", other_config)
    module = ServingModule(artifacts)
    assert module.tensors_route == "transform graph"
    assert "config differs" in module.tensors_route_reason


def test_a_statistics_vector_of_another_layout_is_served_by_the_graph(
    artifacts, monkeypatch, caplog
):
    # Artifacts of a version whose statistics vector was laid out otherwise:
    # the dense trace would slice the wrong numbers.
    real = graph_stats.read_graph_stats
    monkeypatch.setattr(
        graph_stats,
        "read_graph_stats",
        lambda path: (real(path)[0], real(path)[1][:-5]),
    )
    with caplog.at_level(logging.WARNING, logger="tanhguard"):
        module = ServingModule(artifacts)
    assert module.tensors_route == "transform graph"
    assert "written by another version" in module.tensors_route_reason
    assert "written by another version" in caplog.text
    raw = _hostile(_raw_rows(5, seed=35))
    got = module.transform_features({k: tf.constant(v) for k, v in raw.items()})
    _assert_same(got, _reference(artifacts, raw))


def test_a_dense_trace_that_fails_leaves_the_graph_serving(artifacts, monkeypatch):
    real = serving.dense_preprocessing_fn

    def failing(path):
        config, vector, _ = real(path)

        def trace(inputs):
            raise ValueError("in user code:\n  File x\n  Shapes (1,) and (0,) differ")

        return config, vector, trace

    monkeypatch.setattr(serving, "dense_preprocessing_fn", failing)
    module = ServingModule(artifacts)
    assert module.tensors_route == "transform graph"
    assert module.tensors_route_reason == (
        "tracing it again failed: ValueError: Shapes (1,) and (0,) differ"
    )
    raw = _raw_rows(3, seed=36)
    got = module.transform_features({k: tf.constant(v) for k, v in raw.items()})
    _assert_same(got, _reference(artifacts, raw))


def test_a_config_past_the_element_limit_keeps_the_graph_without_a_warning(
    artifacts, monkeypatch, caplog
):
    elements = sum(feature.size for feature in CONFIG.features.values())  # 9
    monkeypatch.setattr(serving, "DENSE_ROUTE_MAX_ELEMENTS", elements - 1)
    with caplog.at_level(logging.INFO, logger="tanhguard"):
        module = ServingModule(artifacts)
    assert module.tensors_route == "transform graph"
    assert f"has {elements} elements" in module.tensors_route_reason
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    monkeypatch.setattr(serving, "DENSE_ROUTE_MAX_ELEMENTS", elements)
    assert ServingModule(artifacts).tensors_route == "dense"


def test_a_graph_without_the_full_inputs_branch_gets_every_index(
    artifacts, tmp_path, monkeypatch
):
    # Artifacts written before the branch existed: their graph reads the
    # indices of full inputs too, so the serving side must write them.
    assert passes_full_inputs_through(artifacts)
    monkeypatch.setattr(preprocessing, "densify_all", _scatter_every_input)
    old = tmp_path / "artifacts"
    run_analyze(CONFIG, str(artifacts.parent / "demo.csv"), old)
    monkeypatch.undo()
    assert not passes_full_inputs_through(old)
    raw = _hostile(_raw_rows(30, seed=27))
    want = _reference(old, raw)
    # The old graph's numbers are this one's (only the densify differs).
    _assert_same(want, _reference(artifacts, raw))
    preprocessor = Preprocessor(old)
    _assert_same(preprocessor(raw), want)
    traced = tf.function(preprocessor.__call__)
    _assert_same(traced({name: tf.constant(v) for name, v in raw.items()}), want)


def test_absent_feature_in_an_example_is_imputed(artifacts, standalone):
    raw = _raw_rows(4, seed=23)
    loaded = tf.saved_model.load(str(standalone))
    got = loaded.signatures["serving_default"](
        examples=tf.constant(_examples(raw, absent={"fare"}))
    )
    nan_fare = dict(raw, fare=np.full(4, np.nan, np.float32))
    np.testing.assert_allclose(
        got["fare"].numpy(), _reference(artifacts, nan_fare)["fare"], rtol=1e-6
    )


def test_example_with_a_too_long_vector_is_an_error_naming_it(standalone):
    raw = _raw_rows(2, seed=24)
    raw["embedding"] = np.ones((2, 4), np.float32)  # shape [3] in the config
    loaded = tf.saved_model.load(str(standalone))
    with pytest.raises(tf.errors.InvalidArgumentError, match="feature `embedding`"):
        loaded.signatures["serving_default"](examples=tf.constant(_examples(raw)))


def test_example_with_too_many_values_names_the_first_such_feature(standalone):
    """One assertion covers every feature: its message names the first one
    (in config order) holding too many values, a scalar too."""
    loaded = tf.saved_model.load(str(standalone))
    examples = []
    for row, serialized in enumerate(_examples(_raw_rows(3, seed=25))):
        example = tf.train.Example.FromString(serialized)
        if row == 1:  # two values for the scalar `tip_ratio`, four for `embedding`
            example.features.feature["tip_ratio"].float_list.value.append(3.0)
            example.features.feature["embedding"].float_list.value.append(9.0)
        examples.append(example.SerializeToString())
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"feature `tip_ratio`: an example holds more than 1 value\(s\)",
    ):
        loaded.signatures["serving_default"](examples=tf.constant(examples))


def _saved_model_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _run_signature(path, signature: str, flag: str, value: str):
    return _saved_model_cli(
        "run",
        "--dir",
        str(path),
        "--tag_set",
        "serve",
        "--signature_def",
        signature,
        flag,
        value,
    )


def test_saved_model_cli_shows_and_runs_both_signatures(standalone):
    shown = _saved_model_cli("show", "--dir", str(standalone), "--all")
    assert shown.returncode == 0, shown.stderr
    for text in ("serving_default", "transform_features", "inputs['fare']"):
        assert text in shown.stdout, text
    assert "DT_INT64" in shown.stdout and "DT_FLOAT" in shown.stdout
    # saved_model_cli accepts Python literals only (no NaN literal).
    expressions = []
    for name, feature in CONFIG.features.items():
        if feature.dtype == "int":
            expressions.append(f"{name}=[2]")
        elif feature.is_vector:
            expressions.append(f"{name}=[{[1e30] * feature.size}]")
        else:
            expressions.append(f"{name}=[-1e30]")
    exprs = ";".join(expressions)
    ran = _run_signature(standalone, "transform_features", "--input_exprs", exprs)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "Result for output key fare" in ran.stdout
    ran = _run_signature(
        standalone,
        "serving_default",
        "--input_examples",
        'examples=[{"fare":[12.5],"passengers":[2]}]',
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "Result for output key sensor" in ran.stdout


# Models: a small tanh network trained on the transformed demo data, in both
# Keras families.


def _train(family, artifacts):
    raw = _raw_rows(2000, seed=31)
    transformed = _reference(artifacts, raw)
    x = model_matrix(transformed, CONFIG).numpy()
    y = (np.log1p(np.nan_to_num(raw["fare"], nan=10.0)) > 2.5).astype(np.float32)
    family.utils.set_random_seed(0)
    layers = family.layers
    inputs = family.Input((x.shape[1],), name="features")
    hidden = layers.Dense(16, activation="tanh", name="tanh_1")(inputs)
    hidden = layers.Dense(8, activation="tanh", name="tanh_2")(hidden)
    outputs = layers.Dense(1, activation="sigmoid", name="probability")(hidden)
    model = family.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(x, y, epochs=3, batch_size=128, verbose=0)
    return model


FAMILIES = {"tf_keras": tf_keras, "keras3": keras}


@pytest.fixture(scope="module")
def models(artifacts):
    return {name: _train(family, artifacts) for name, family in FAMILIES.items()}


@pytest.fixture(params=list(FAMILIES))
def trained(request, models):
    return request.param, FAMILIES[request.param], models[request.param]


def _first_tanh_units(family, model, x):
    """Activations of the first tanh layer."""
    probe = family.Model(model.inputs, model.get_layer("tanh_1").output)
    return np.asarray(probe(x))


def _export_and_load(trained, artifacts, tmp_path):
    name, _, model = trained
    return tf.saved_model.load(str(export(artifacts, tmp_path / name, model)))


def test_exported_model_is_finite_on_hostile_rows_where_the_bare_model_fails(
    trained, artifacts, tmp_path
):
    _, family, model = trained
    loaded = _export_and_load(trained, artifacts, tmp_path)
    hostile = _hostile(_raw_rows(600, seed=32))
    predictions = loaded.signatures["serving_default"](
        examples=tf.constant(_examples(hostile))
    )["predictions"].numpy()
    assert predictions.shape == (600, 1)
    assert np.all(np.isfinite(predictions))
    # The same model fed the raw values (same column order, no tanhguard).
    raw_matrix = np.concatenate(
        [np.asarray(hostile[n], np.float32).reshape(600, -1) for n in CONFIG.features],
        axis=1,
    )
    with np.errstate(all="ignore"):
        bare = np.asarray(model(raw_matrix))
        units = _first_tanh_units(family, model, raw_matrix)
    nan_rows = np.isnan(bare).any(axis=1).mean()
    saturated = np.mean(np.abs(units[np.isfinite(units)]) == 1.0)
    assert nan_rows > 0.5 and saturated > 0.3, (nan_rows, saturated)
    guarded = _first_tanh_units(
        family, model, model_matrix(_reference(artifacts, hostile), CONFIG)
    )
    # Inputs are bounded (|x| <= 5), so a unit saturates only through large
    # weights: a few percent of units on these hostile rows, not most of them.
    assert np.mean(np.abs(guarded) == 1.0) < min(0.1, saturated / 3)


def test_exported_predictions_equal_tft_plus_the_model_in_python(
    trained, artifacts, tmp_path
):
    model = trained[2]
    loaded = _export_and_load(trained, artifacts, tmp_path)
    raw = _hostile(_raw_rows(200, seed=33))
    expected = np.asarray(model(model_matrix(_reference(artifacts, raw), CONFIG)))
    by_examples = loaded.signatures["serving_default"](
        examples=tf.constant(_examples(raw))
    )["predictions"]
    by_tensors = loaded.signatures["transform_features"](
        **{n: tf.constant(v) for n, v in raw.items()}
    )["predictions"]
    np.testing.assert_allclose(by_examples.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(by_tensors.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_attach_takes_raw_features_of_any_numeric_dtype(trained, artifacts):
    _, family, model = trained
    guarded = attach(model, artifacts)
    assert isinstance(guarded, family.Model)
    raw = _hostile(_raw_rows(64, seed=34))
    expected = np.asarray(model(model_matrix(_reference(artifacts, raw), CONFIG)))
    widened = {
        n: v.astype(np.float64) if v.dtype == np.float32 else v for n, v in raw.items()
    }
    widened["passengers"] = raw["passengers"].astype(np.float64)
    np.testing.assert_allclose(
        np.asarray(guarded(widened)), expected, rtol=1e-5, atol=1e-6
    )


def test_attached_model_predicts_after_keras_relaxes_its_trace(trained, artifacts):
    """`[batch, 1]`, then `[batch]` for a scalar: both valid. The second
    shape makes Keras relax its predict function's trace to inputs of
    unknown rank; the graph's own check holds them when it runs."""
    _, _, model = trained
    guarded = attach(model, artifacts)
    raw = _hostile(_raw_rows(8, seed=36))
    expected = np.asarray(model(model_matrix(_reference(artifacts, raw), CONFIG)))
    as_columns = {
        name: values if values.ndim == 2 else values[:, None]
        for name, values in raw.items()
    }
    for feed in (as_columns, raw, raw):
        got = guarded.predict(feed, batch_size=8, verbose=0)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    unknown_rank = tf.function(
        lambda fare: guarded({**raw, "fare": fare}),
        input_signature=[tf.TensorSpec(None, tf.float32)],
    )
    np.testing.assert_allclose(
        unknown_rank(tf.constant(raw["fare"])), expected, rtol=1e-5, atol=1e-6
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="feature `fare`"):
        unknown_rank(tf.ones([8, 2]))


def test_the_preprocessor_given_a_dataframe_says_how_to_pass_it(artifacts):
    import pandas as pd

    raw = _raw_rows(4, seed=37)
    frame = pd.DataFrame({k: v for k, v in raw.items() if v.ndim == 1})
    with pytest.raises(ExportError, match=r"from a DataFrame: \{name: df\[name\]"):
        Preprocessor(artifacts)(frame)
    given = {name: frame[name].to_numpy() for name in frame.columns}
    assert Preprocessor(artifacts)(given)["fare"].shape == [4]  # as it says


def test_attached_model_given_a_matrix_says_it_takes_a_dict(trained, artifacts):
    _, _, model = trained
    guarded = attach(model, artifacts)
    with pytest.raises(
        Exception, match=r"expected the raw features as a dict keyed by feature name"
    ):
        guarded(tf.ones([4, Preprocessor(artifacts).matrix_width()]))


def test_attached_model_compiled_with_xla_predicts_as_without(trained, artifacts):
    # XLA compiles both branches of the graph's densify, the scatter one
    # too, for the shapes given (every feature given: no indices).
    _, _, model = trained
    guarded = attach(model, artifacts)
    raw = _hostile(_raw_rows(40, seed=35))
    expected = np.asarray(model(model_matrix(_reference(artifacts, raw), CONFIG)))
    guarded.compile(jit_compile=True)
    got = guarded.predict(raw, batch_size=16, verbose=0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("tf_keras", ".keras"),
        ("tf_keras", ".h5"),
        ("tf_keras", "_savedmodel"),
        ("keras3", ".keras"),  # Keras 3 saves models as .keras only
    ],
)
def test_cli_exports_a_model_file(models, artifacts, tmp_path, name, suffix):
    family, model = FAMILIES[name], models[name]
    model_path = tmp_path / f"model{suffix}"
    if suffix == "_savedmodel":
        model.save(str(model_path), save_format="tf")
    else:
        model.save(str(model_path))
    reloaded = load_keras_model(model_path)
    assert isinstance(reloaded, family.Model)
    out = tmp_path / "served"
    status = main(
        [
            "export",
            "--artifacts",
            str(artifacts),
            "--model",
            str(model_path),
            "--output",
            str(out),
        ]
    )
    assert status == EXIT_OK
    raw = _raw_rows(10, seed=35)
    predictions = tf.saved_model.load(str(out)).signatures["serving_default"](
        examples=tf.constant(_examples(raw))
    )["predictions"]
    expected = np.asarray(model(model_matrix(_reference(artifacts, raw), CONFIG)))
    np.testing.assert_allclose(predictions.numpy(), expected, rtol=1e-5, atol=1e-6)


# Bad input.


def test_unknown_feature_is_an_error_naming_it(artifacts):
    preprocessor = Preprocessor(artifacts)
    with pytest.raises(ExportError, match=r"unknown feature\(s\) \['colour'\]"):
        preprocessor({"fare": np.ones(2), "colour": np.ones(2)})


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        (
            "embedding",
            np.ones((2, 4)),
            r"feature `embedding`: expected shape \[batch, 3\]",
        ),
        ("fare", np.ones((2, 2)), r"feature `fare`: expected shape \[batch\]"),
        ("fare", np.array(["a", "b"]), r"feature `fare`: values must be numbers"),
    ],
    ids=["vector of the wrong length", "scalar given two columns", "strings"],
)
def test_wrong_shape_or_type_is_an_error_naming_the_feature(
    artifacts, name, value, match
):
    with pytest.raises(ExportError, match=match):
        Preprocessor(artifacts)({name: value})


def test_export_from_a_directory_that_is_not_artifacts_fails_cleanly(tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["export", "--artifacts", str(tmp_path), "--output", str(out)])
    assert status == EXIT_ERROR
    assert "not a tanhguard artifacts directory" in capsys.readouterr().err
    assert not out.exists()


def test_missing_model_file_fails_cleanly(artifacts, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(
        [
            "export",
            "--artifacts",
            str(artifacts),
            "--model",
            str(tmp_path / "absent.keras"),
            "--output",
            str(out),
        ]
    )
    assert status == EXIT_ERROR
    assert "absent.keras: no such model file" in capsys.readouterr().err
    assert not out.exists()


def test_first_difference_compares_bits_names_and_shapes():
    zero = {"x": np.array([1.0, 0.0], np.float32)}
    assert first_difference(zero, {"x": np.array([1.0, 0.0], np.float32)}) is None
    nan = {"x": np.array([np.nan], np.float32)}
    assert first_difference(nan, {"x": np.array([np.nan], np.float32)}) is None
    signed = first_difference(zero, {"x": np.array([1.0, -0.0], np.float32)})
    assert signed is not None and "at row 1" in signed
    assert "float64" in first_difference(zero, {"x": np.zeros(2)})
    assert "[2, 1]" in first_difference(zero, {"x": np.zeros((2, 1), np.float32)})
    assert first_difference(zero, {"y": zero["x"]}) is not None
