"""A model `attach` returns, saved in its Keras family's formats and loaded
back in a fresh process (Keras 3 `.keras`; tf_keras `.keras` and SavedModel);
its summary; the input-width check of `attach` and `export`; the
Preprocessor's repr."""

import json
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tf_keras
from graph_oracle import apply_graph

from tanhguard.pipeline.analyze import run_analyze
from tanhguard.pipeline.cli import EXIT_ERROR, main
from tanhguard.pipeline.demo import demo_config, generate_demo_rows, write_demo_csv
from tanhguard.pipeline.export import (
    ExportError,
    Preprocessor,
    attach,
    export,
    model_matrix,
)

CONFIG = demo_config()
# The demo config's model_matrix: 7 features, `embedding` of shape [3], and
# one `__missing` indicator (`sensor`): 6 + 3 = 9 columns.
COLUMNS = 9
FAMILIES = {"keras3": keras, "tf_keras": tf_keras}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("keras_saving")
    write_demo_csv(root / "demo.csv", generate_demo_rows(500, seed=5), seed=5)
    run_analyze(CONFIG, str(root / "demo.csv"), root / "artifacts")
    return root / "artifacts"


def _raw_rows(rows: int, seed: int) -> dict[str, np.ndarray]:
    """Demo-like raw features in their serving dtypes, with NaN, +-Inf and
    1e30 in every float feature."""
    columns = generate_demo_rows(rows, seed=seed)
    raw = {}
    for name, feature in CONFIG.features.items():
        stacked = np.stack([columns[c] for c in CONFIG.csv_columns(name)], axis=1)
        value = stacked if feature.is_vector else stacked[:, 0]
        if feature.dtype == "int":
            raw[name] = np.nan_to_num(value).astype(np.int64)
            continue
        value = value.astype(np.float32)
        flat = value.reshape(rows, -1)
        flat[0::5], flat[1::5], flat[2::5], flat[3::5] = np.nan, np.inf, -np.inf, 1e30
        raw[name] = value
    return raw


def _tanh_model(family, columns: int = COLUMNS, seed: int = 0):
    family.utils.set_random_seed(seed)
    return family.Sequential(
        [
            family.Input((columns,)),
            family.layers.Dense(8, activation="tanh"),
            family.layers.Dense(1),
        ]
    )


def _expected(model, artifacts, raw) -> np.ndarray:
    """The oracle: TFT's own graph on the raw rows, then the bare model."""
    return np.asarray(model(model_matrix(apply_graph(artifacts, raw), CONFIG)))


# Saving and loading, in a fresh process.

# (family, file name, save keyword arguments)
SAVES = [
    ("keras3", "guarded.keras", {}),
    ("tf_keras", "guarded.keras", {}),
    ("tf_keras", "guarded_savedmodel", {"save_format": "tf"}),
]
SAVE_IDS = ["Keras 3 .keras", "tf_keras .keras", "tf_keras SavedModel"]

# Run in a fresh interpreter: tanhguard's Keras module imported (that
# registers its classes), then each family's own loader.
LOADER = textwrap.dedent(
    """
    import io, json, sys
    import numpy as np
    import tanhguard.pipeline.keras_attach
    import keras, tf_keras

    jobs = json.loads(sys.argv[1])
    raw = dict(np.load(sys.argv[2]))
    results = {}
    for job in jobs:
        if job["family"] == "keras3":
            model = keras.saving.load_model(job["path"])
        else:
            model = tf_keras.models.load_model(job["path"])
        lines = []
        model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
        results[job["path"]] = {
            "class": type(model).__name__,
            "predictions": np.asarray(model(raw)).tolist(),
            "summary": "\\n".join(lines),
        }
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def loaded(artifacts, tmp_path_factory):
    """Each family's model, attached to a copy of the artifacts and saved;
    the copy removed; every file loaded in one fresh process."""
    root = tmp_path_factory.mktemp("saved")
    copy = root / "artifacts_copy"
    shutil.copytree(artifacts, copy)
    raw = _raw_rows(40, seed=6)
    np.savez(root / "raw.npz", **raw)
    jobs, expected = [], {}
    for index, (family, name, kwargs) in enumerate(SAVES):
        model = _tanh_model(FAMILIES[family], seed=index)
        path = root / str(index) / name
        path.parent.mkdir()
        attach(model, copy).save(str(path), **kwargs)
        jobs.append({"family": family, "path": str(path)})
        expected[str(path)] = _expected(model, artifacts, raw)
    shutil.rmtree(copy)  # the saved files hold the preprocessing themselves
    done = subprocess.run(
        [sys.executable, "-c", LOADER, json.dumps(jobs), str(root / "raw.npz")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return [(results[job["path"]], expected[job["path"]]) for job in jobs]


@pytest.mark.parametrize("index", range(len(SAVES)), ids=SAVE_IDS)
def test_saved_attached_model_loads_in_a_fresh_process_with_the_same_predictions(
    loaded, index
):
    result, expected = loaded[index]
    got = np.asarray(result["predictions"], np.float32)
    assert got.shape == (40, 1)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("index", range(len(SAVES)), ids=SAVE_IDS)
def test_loaded_model_shows_the_preprocessing_as_a_layer(loaded, index):
    summary = loaded[index][0]["summary"]
    assert "tanhguard (Preprocessing)" in summary
    assert "(Sequential)" in summary


def test_a_loaded_keras3_model_saves_again_and_reloads(artifacts, tmp_path):
    model = _tanh_model(keras, seed=7)
    attach(model, artifacts).save(str(tmp_path / "first.keras"))
    first = keras.saving.load_model(tmp_path / "first.keras")
    first.save(str(tmp_path / "second.keras"))
    second = keras.saving.load_model(tmp_path / "second.keras")
    raw = _raw_rows(10, seed=8)
    widened = {name: value.astype(np.float64) for name, value in raw.items()}
    np.testing.assert_allclose(
        np.asarray(second(widened)),
        _expected(model, artifacts, raw),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("family", list(FAMILIES))
def test_summary_shows_the_preprocessing_and_the_model_as_layers(artifacts, family):
    guarded = attach(_tanh_model(FAMILIES[family]), artifacts)
    lines = []
    guarded.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    summary = "\n".join(lines)
    assert "tanhguard (Preprocessing)" in summary
    assert "(Sequential)" in summary


# The model's inputs against the preprocessing's outputs.


@pytest.mark.parametrize("family", list(FAMILIES))
def test_attach_refuses_a_model_of_the_wrong_width_naming_both(artifacts, family):
    with pytest.raises(
        ExportError,
        match=r"model expects 5 input columns, the preprocessing produces 9: "
        r"fare, .*embedding\[3\]",
    ):
        attach(_tanh_model(FAMILIES[family], columns=5), artifacts)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_export_refuses_a_model_of_the_wrong_width_and_writes_nothing(
    artifacts, tmp_path, family
):
    with pytest.raises(ExportError, match="model expects 12 input columns"):
        export(artifacts, tmp_path / "out", _tanh_model(FAMILIES[family], 12))
    assert not (tmp_path / "out").exists()


def test_cli_export_refuses_a_model_file_of_the_wrong_width(
    artifacts, tmp_path, capsys
):
    model_path = tmp_path / "narrow.keras"
    _tanh_model(keras, columns=5).save(str(model_path))
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
    assert status == EXIT_ERROR
    assert (
        "model expects 5 input columns, the preprocessing produces 9"
        in capsys.readouterr().err
    )
    assert not out.exists()


def test_named_input_of_the_wrong_width_is_an_error_naming_it(artifacts):
    inputs = {
        "fare": keras.Input((1,), name="fare"),
        "embedding": keras.Input((2,), name="embedding"),  # the graph's is [3]
    }
    joined = keras.layers.Concatenate()([inputs["fare"], inputs["embedding"]])
    model = keras.Model(inputs, keras.layers.Dense(1)(joined))
    with pytest.raises(
        ExportError,
        match=r"model input `embedding` expects 2 column.*output `embedding` has 3",
    ):
        attach(model, artifacts)


def test_named_inputs_of_the_right_widths_are_accepted(artifacts):
    inputs = {
        "fare": keras.Input((), name="fare"),
        "embedding": keras.Input((3,), name="embedding"),
    }
    fare = keras.layers.Reshape((1,))(inputs["fare"])
    joined = keras.layers.Concatenate()([fare, inputs["embedding"]])
    model = keras.Model(inputs, keras.layers.Dense(1)(joined))
    raw = _raw_rows(6, seed=9)
    transformed = apply_graph(artifacts, raw)
    expected = np.asarray(
        model({"fare": transformed["fare"], "embedding": transformed["embedding"]})
    )
    np.testing.assert_allclose(
        np.asarray(attach(model, artifacts)(raw)), expected, rtol=1e-5, atol=1e-6
    )


def test_inputs_that_are_not_preprocessing_outputs_are_an_error(artifacts):
    first, second = keras.Input((4,), name="price"), keras.Input((5,), name="fare")
    joined = keras.layers.Concatenate()([first, second])
    model = keras.Model([first, second], keras.layers.Dense(1)(joined))
    with pytest.raises(ExportError, match=r"model has 2 inputs and \['price'\] are"):
        attach(model, artifacts)


def test_exporting_an_attached_model_is_an_error_naming_what_to_export(
    artifacts, tmp_path
):
    guarded = attach(_tanh_model(keras), artifacts)
    with pytest.raises(ExportError, match="export the model it wraps"):
        export(artifacts, tmp_path / "out", guarded)


# The Preprocessor's repr.


def test_preprocessor_repr_names_features_bound_and_artifacts(artifacts):
    text = repr(Preprocessor(artifacts))
    assert text.startswith("Preprocessor(7 features: fare, tip_ratio, ")
    assert "... (2 more)" in text
    assert "output_bound=5.0" in text
    assert f"{COLUMNS} model_matrix columns" in text
    assert f"artifacts='{artifacts.absolute()}'" in text


def test_a_savedmodel_that_is_no_keras_model_is_refused(artifacts, tmp_path, capsys):
    import tensorflow as tf

    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 5], tf.float32)])
        def __call__(self, x):
            return x

    tf.saved_model.save(Module(), str(tmp_path / "module"))
    argv = ["export", "--artifacts", str(artifacts), "--model"]
    status = main([*argv, str(tmp_path / "module"), "--output", str(tmp_path / "o")])
    assert status == EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a Keras model" in err[0], err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_attach_refuses_a_model_attach_returned(artifacts, name):
    guarded = attach(_tanh_model(FAMILIES[name]), artifacts)
    with pytest.raises(ExportError, match="already holds tanhguard's preprocessing"):
        attach(guarded, artifacts)


def test_a_model_using_stable_tanh_by_name_loads_in_a_fresh_process(tmp_path):
    """What the command line does with --model: nothing imported but the
    loader (the loader registers stable_tanh)."""
    import tanhguard.pipeline.activations  # noqa: F401  (to build the model)

    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, activation="tanhguard>stable_tanh")]
    )
    model.save(tmp_path / "m.keras")
    code = textwrap.dedent(
        f"""
        from tanhguard.pipeline.keras_attach import load_keras_model
        model = load_keras_model({str(tmp_path / "m.keras")!r})
        print(model.layers[-1].activation.__name__)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stable_tanh" in done.stdout
