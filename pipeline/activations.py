"""`stable_tanh`: the hand-written tanh made safe, usable by name in Keras.

    tanh(x) = sign(x) * (1 - e^{-2|x|}) / (1 + e^{-2|x|})
            = sign(x) * -expm1(-2|x|) / (2 + expm1(-2|x|))

e^{-2|x|} never overflows (it is at most 1), so no input gives inf/inf: +-Inf
gives +-1, NaN stays NaN. float16 and float32 compute in float64 and round
once (correctly rounded but for a rare double rounding); float64 computes in
float64 (`expm1` keeps the small-|x| digits). The gradient is
`1 - tanh(x)^2 = 4 e^{-2|x|} / (1 + e^{-2|x|})^2`, finite everywhere.

Importing this module registers it as `"tanhguard>stable_tanh"` in both
Keras families (Keras 3 and tf_keras): layers take the name wherever they
take a built-in one, and models using it save and load (tf_keras:
SavedModel directory, `.h5`, `.keras`; Keras 3: `.keras`). `import tanhguard`
alone does not register it (the package loads no TensorFlow): before
building or loading such a model, run `import tanhguard.pipeline.activations`
(or touch `tanhguard.stable_tanh`):

>>> import tanhguard.pipeline.activations  # doctest: +SKIP
>>> keras.layers.Dense(8, activation="tanhguard>stable_tanh")  # doctest: +SKIP
>>> keras.saving.load_model("model.keras")  # doctest: +SKIP
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tf_keras

REGISTERED_NAME = "tanhguard>stable_tanh"


def _wide(dtype: tf.DType) -> tf.DType:
    return tf.float64 if dtype in (tf.float16, tf.bfloat16, tf.float32) else dtype


@tf.custom_gradient
def _stable_tanh(x: tf.Tensor):
    wide = tf.cast(x, _wide(x.dtype))
    small = tf.exp(-2.0 * tf.abs(wide))  # in [0, 1]: never overflows
    fraction = -tf.math.expm1(-2.0 * tf.abs(wide))
    y = tf.math.sign(wide) * fraction / (1.0 + small)
    y = tf.where(tf.math.is_nan(wide), wide, y)

    def grad(upstream):
        slope = 4.0 * small / tf.square(1.0 + small)
        return upstream * tf.cast(slope, x.dtype)

    # tanh(x) rounds to x itself below the threshold (x^3 / 3 is under half
    # an ulp); returning x keeps subnormals, which casts would flush to 0.
    tiny = 2.0**-26 if x.dtype == tf.float64 else 2.0**-12
    y = tf.where(tf.abs(x) < tiny, x, tf.cast(y, x.dtype))
    return y, grad


def stable_tanh(x):
    """tanh without overflow: finite for every non-NaN input.

    Args:
      x: A float16, bfloat16, float32 or float64 tensor (or array-like).

    Returns:
      tanh(x) in x's dtype: +-1 for +-Inf, NaN only for NaN; gradient
      1 - tanh(x)^2.
    """
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.float32)
    return _stable_tanh(x)


def _tf_keras_stable_tanh(x):
    return stable_tanh(x)


# One function object per family: each registry marks the object it holds.
_tf_keras_stable_tanh.__name__ = "stable_tanh"
_tf_keras_stable_tanh.__qualname__ = "stable_tanh"
_tf_keras_stable_tanh.__doc__ = stable_tanh.__doc__


def _register() -> None:
    """Makes `REGISTERED_NAME` resolve in both families, as a built-in name.

    Keras 3: the registry serves saving and loading (the file holds the
    registered name), but `keras.activations.get` looks a string up only in
    its table of built-ins (`keras.src.activations.ALL_OBJECTS_DICT`), so
    the name goes there too. tf_keras: its `activations.serialize` writes a
    registered function as a `{"class_name": "function", ...}` dict, which
    its legacy loaders (`.h5`, SavedModel metadata) do not read ("Unknown
    activation function: 'function'"); a function its activations module
    holds under the name it is written with is written as that plain name,
    which every loader resolves (tf_keras 2.21 writes the registered name,
    2.16 the function's `__name__`, "stable_tanh": both are held).
    """
    import keras.src.activations as keras_activations
    import tf_keras.src.activations as tf_keras_activations

    keras.saving.register_keras_serializable(package="tanhguard", name="stable_tanh")(
        stable_tanh
    )
    keras_activations.ALL_OBJECTS_DICT[REGISTERED_NAME] = stable_tanh
    tf_keras.utils.register_keras_serializable(package="tanhguard", name="stable_tanh")(
        _tf_keras_stable_tanh
    )
    for name in (REGISTERED_NAME, "stable_tanh"):
        setattr(tf_keras_activations, name, _tf_keras_stable_tanh)


_register()
