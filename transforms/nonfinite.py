"""Dense views of raw features, and the handling of missing, NaN and +-Inf."""

from __future__ import annotations

import tensorflow as tf


def densify(
    values: tf.Tensor | tf.SparseTensor, size: int, name: str | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """Turns a raw feature into a dense float32 `[batch, size]` tensor.

    Args:
      values: The raw feature: a `SparseTensor` (a `VarLenFeature`, where a row
        with no value is missing), a `RaggedTensor` (likewise), or a dense
        `[batch]` / `[batch, size]` tensor.
        Integer values are cast to float32.
      size: Elements per row: 1 for a scalar feature, d for a vector `[d]`.
      name: Optional name scope.

    Returns:
      `(x, missing)`: `x` is float32 `[batch, size]` with NaN where a value is
      missing; `missing` is a bool `[batch, size]` mask of the missing values.
      A row with fewer than `size` values is missing its trailing elements; a row
      with more than `size` values is an error when the graph runs.
    """
    with tf.name_scope(name or "densify"):
        if isinstance(values, tf.RaggedTensor):
            values = values.to_sparse()
        if isinstance(values, tf.SparseTensor):
            batch = values.dense_shape[0]
            values = tf.sparse.reset_shape(
                values, tf.stack([batch, tf.constant(size, tf.int64)])
            )
            present = tf.sparse.to_dense(
                tf.sparse.map_values(tf.ones_like, values), default_value=0
            )
            missing = tf.equal(present, 0)
            dense = tf.sparse.to_dense(
                tf.sparse.map_values(tf.cast, values, tf.float32),
                default_value=float("nan"),
            )
        else:
            dense = tf.cast(values, tf.float32)
            missing = tf.zeros_like(dense, dtype=tf.bool)
        # A static element count: TFT's analyzers need it.
        return tf.reshape(dense, [-1, size]), tf.reshape(missing, [-1, size])


def impute_and_clip(
    x: tf.Tensor, impute_value: tf.Tensor, lower: tf.Tensor, upper: tf.Tensor
) -> tf.Tensor:
    """`clip(impute(x), lower, upper)`: every result is finite.

    NaN (which includes missing values, see `densify`) becomes `impute_value`;
    +Inf becomes `upper` and -Inf becomes `lower` (clipping does that); finite
    values outside `[lower, upper]` are clipped. `tf.clip_by_value` alone would
    pass NaN through, which is why imputation comes first.
    """
    imputed = tf.where(tf.math.is_nan(x), tf.cast(impute_value, x.dtype), x)
    return tf.clip_by_value(imputed, tf.cast(lower, x.dtype), tf.cast(upper, x.dtype))
