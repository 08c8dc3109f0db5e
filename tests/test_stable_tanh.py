"""`stable_tanh`: accurate, never NaN for a non-NaN input, the right
gradient, and usable by name in both Keras families (saved and reloaded)."""

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


def _assert_saves_and_serves(model, path, load):
    x = np.array([[1e30, -np.inf, 0.5]], np.float32)
    before = model(x).numpy()
    model.save(path)
    loaded = load(path)
    np.testing.assert_array_equal(loaded(x).numpy(), before)
    assert not np.isnan(before).any()


def test_a_keras3_model_saves_it_by_name_and_reloads(tmp_path):
    """Keras 3's `activations.get` resolves only built-in names from a
    string: the model takes the function; the file holds its registered
    name, which loading resolves."""
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2, activation=stable_tanh)(inputs)
    model = keras.Model(inputs, keras.layers.Activation(stable_tanh)(outputs))
    model.save(tmp_path / "probe.keras")
    import zipfile

    config = zipfile.ZipFile(tmp_path / "probe.keras").read("config.json").decode()
    assert REGISTERED_NAME in config
    _assert_saves_and_serves(model, tmp_path / "m.keras", keras.saving.load_model)
