"""`stable_tanh`: the hand-written tanh made safe, usable by name in Keras.

    tanh(x) = sign(x) * (1 - e^{-2|x|}) / (1 + e^{-2|x|})
            = sign(x) * -expm1(-2|x|) / (2 + expm1(-2|x|))

e^{-2|x|} never overflows (it is at most 1), so no input gives inf/inf: +-Inf
gives +-1, NaN stays NaN. float16 and float32 compute in float64 and round
once (correctly rounded but for a rare double rounding); float64 computes in
float64 (`expm1` keeps the small-|x| digits). The gradient is
`1 - tanh(x)^2 = 4 e^{-2|x|} / (1 + e^{-2|x|})^2`, finite everywhere.

Importing this module registers it as `"tanhguard>stable_tanh"` in both Keras
families (Keras 3 and tf_keras), so models using it by name save and load:

>>> keras.layers.Dense(8, activation="tanhguard>stable_tanh")  # doctest: +SKIP
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
keras.saving.register_keras_serializable(package="tanhguard", name="stable_tanh")(
    stable_tanh
)
tf_keras.utils.register_keras_serializable(package="tanhguard", name="stable_tanh")(
    _tf_keras_stable_tanh
)
