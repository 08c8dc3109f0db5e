"""`stable_tanh`: accurate, never NaN for a non-NaN input, the right
gradient, and usable by name in both Keras families (saved and reloaded)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tanhguard.pipeline.activations import REGISTERED_NAME, stable_tanh

FLOAT32_MAX = float(np.finfo(np.float32).max)


def _ulps(a, b):
    """Distance in float32 units in the last place (same-sign ordering)."""
    ia = a.astype(np.float32).view(np.int32).astype(np.int64)
    ib = b.astype(np.float32).view(np.int32).astype(np.int64)
    ia = np.where(ia < 0, np.int64(-(2**31)) - ia, ia)
    ib = np.where(ib < 0, np.int64(-(2**31)) - ib, ib)
    return np.abs(ia - ib)


def _float32_oracle(x):
    """numpy's float64 tanh, rounded once to float32: the correctly rounded
    value but for a rare double rounding."""
    return np.tanh(x.astype(np.float64)).astype(np.float32)


def test_float32_within_2_ulp_on_a_dense_grid_and_1e6_random_values():
    grid = np.linspace(-20.0, 20.0, 4_000_001, dtype=np.float32)
    rng = np.random.default_rng(0)
    magnitudes = 10.0 ** rng.uniform(-40, np.log10(FLOAT32_MAX), 1_000_000)
    signs = np.where(rng.random(1_000_000) < 0.5, -1.0, 1.0)
    random = (signs * magnitudes).astype(np.float32)
    for x in (grid, random):
        got = stable_tanh(x).numpy()
        assert got.dtype == np.float32
        assert _ulps(got, _float32_oracle(x)).max() <= 2
        # tf.tanh itself is up to 5 ulp from the oracle on this grid (TF 2.21,
        # CPU): it is exactly +-1 from |x| >= 7.9074; stable_tanh there is
        # no further from tf.tanh than tf.tanh is from the oracle, plus 2.
        reference = tf.tanh(x).numpy()
        assert (
            _ulps(got, reference).max()
            <= _ulps(reference, _float32_oracle(x)).max() + 2
        )


# float16 computes in float64 and rounds once: within 1 ulp. float64 is the
# expm1 formula in float64: within 4 ulp of numpy's tanh (measured: 4.0).
@pytest.mark.parametrize(
    "dtype, ulps", [(np.float16, 1), (np.float64, 4)], ids=["float16", "float64"]
)
def test_float16_and_float64(dtype, ulps):
    x = np.linspace(-30, 30, 200_001).astype(dtype)
    got = stable_tanh(x).numpy()
    assert got.dtype == dtype
    oracle = np.tanh(x.astype(np.float64))
    spacing = np.spacing(np.abs(oracle).astype(dtype)).astype(np.float64)
    assert np.all(np.abs(got.astype(np.float64) - oracle) <= ulps * spacing)


def test_infinities_give_plus_minus_one_and_extremes_never_nan():
    x = np.array(
        [np.inf, -np.inf, FLOAT32_MAX, -FLOAT32_MAX, 89.0, -89.0, 0.0, -0.0, 1e-45],
        np.float32,
    )
    got = stable_tanh(x).numpy()
    np.testing.assert_array_equal(got[:6], [1, -1, 1, -1, 1, -1])
    assert not np.isnan(got).any()
    assert np.signbit(got[7]) and got[6] == 0
    assert np.isnan(stable_tanh(np.float32(np.nan)).numpy())


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_gradient_is_one_minus_tanh_squared_and_finite(dtype):
    x = tf.constant(
        np.concatenate([np.linspace(-50, 50, 10_001), [np.inf, -np.inf, 1e30]]), dtype
    )
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = stable_tanh(x)
    grad = tape.gradient(y, x).numpy()
    oracle = 1.0 / np.cosh(x.numpy().astype(np.float64)) ** 2  # sech^2 = 1 - tanh^2
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(
        grad,
        oracle,
        rtol=8 * np.finfo(dtype.as_numpy_dtype).eps,
        # TensorFlow flushes float32 subnormals to 0 on CPU: below the smallest
        # normal number the gradient may be 0.
        atol=np.finfo(dtype.as_numpy_dtype).tiny,  # float32 subnormals flush to 0,
    )


# Extremes a hand-written tanh turns into NaN; stable_tanh gives +-1.
_SERVED = np.array([[1e30, -np.inf, 0.5], [-3.0, 88.0, 1e-3]], np.float32)

# The fresh process imports only the module the docstring tells users to
# import, loads every file and prints each prediction.
_RELOAD = """
import json, sys
import numpy as np
import tanhguard.pipeline.activations
x = np.array(json.loads(sys.argv[1]), np.float32)
out = {}
for family, path in json.loads(sys.argv[2]):
    if family == "tf_keras":
        import tf_keras
        model = tf_keras.models.load_model(path)
    else:
        import keras
        model = keras.saving.load_model(path)
    out[path] = np.asarray(model(x)).tolist()
print("RESULT " + json.dumps(out))
"""


def _model(family, name):
    """Dense(2, name) -> Activation(name): both places a name goes."""
    inputs = family.Input((3,))
    hidden = family.layers.Dense(2, activation=name)(inputs)
    return family.Model(inputs, family.layers.Activation(name)(hidden))


def test_both_families_build_save_and_reload_it_by_name_in_a_fresh_process(tmp_path):
    import tf_keras

    paths = []
    expected = {}
    tf_keras_model = _model(tf_keras, REGISTERED_NAME)
    keras_model = _model(keras, REGISTERED_NAME)
    for family, model, path in [
        ("tf_keras", tf_keras_model, tmp_path / "tf_keras_savedmodel"),
        ("tf_keras", tf_keras_model, tmp_path / "tf_keras.h5"),
        ("tf_keras", tf_keras_model, tmp_path / "tf_keras.keras"),
        ("keras", keras_model, tmp_path / "keras3.keras"),
    ]:
        assert model.layers[1].activation.__name__ == "stable_tanh"
        if path.name.endswith("savedmodel"):
            model.save(path, save_format="tf")
        else:
            model.save(path)
        paths.append((family, str(path)))
        expected[str(path)] = np.asarray(model(_SERVED))
    for value in expected.values():
        assert not np.isnan(value).any()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _RELOAD,
            json.dumps(_SERVED.tolist()),
            json.dumps(paths),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1]
    served = json.loads(line[len("RESULT ") :])
    for path, value in expected.items():
        np.testing.assert_array_equal(np.array(served[path], np.float32), value)


def test_the_name_and_the_function_give_the_same_model_in_both_families():
    import tf_keras

    for family in (keras, tf_keras):
        by_name = _model(family, REGISTERED_NAME)
        by_function = _model(family, stable_tanh)
        by_function.set_weights(by_name.get_weights())
        np.testing.assert_array_equal(
            np.asarray(by_name(_SERVED)), np.asarray(by_function(_SERVED))
        )
        assert family.activations.get(REGISTERED_NAME).__name__ == "stable_tanh"


def test_the_file_holds_the_registered_name():
    """Keras 3 writes the registered name; tf_keras writes a plain name (the
    registered one, or "stable_tanh" in tf_keras 2.16), which its legacy
    loaders read."""
    import tf_keras

    config = json.dumps(_model(keras, REGISTERED_NAME).get_config())
    assert f'"config": "{REGISTERED_NAME}"' in config
    layer = _model(tf_keras, REGISTERED_NAME).layers[1]
    assert layer.get_config()["activation"] in (REGISTERED_NAME, "stable_tanh")
