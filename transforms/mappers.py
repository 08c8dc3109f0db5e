"""The per-row functions: the formula every output goes through.

    out = clip((g(clip(impute(x), lower, upper)) - center) / scale, -B, B)

`densify` turns a raw feature into a dense `[batch, size]` view with NaN for
missing values; `guard` applies the formula with the fitted parameters.
"""

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


def log_transform(values: tf.Tensor) -> tf.Tensor:
    """`sign(x) * log1p(|x|)`: the `log_zscore` scaler's `g`; finite for finite
    `x` (at most about 88.7 in magnitude for float32)."""
    return tf.math.sign(values) * tf.math.log1p(tf.math.abs(values))


def scale_and_bound(
    clipped: tf.Tensor, center: tf.Tensor, scale: tf.Tensor, bound: float
) -> tf.Tensor:
    """`clip((clipped - center) / scale, -bound, bound)`; 0 where `scale` is 0.

    A scale of 0 marks a constant feature (decided once, where the scale is
    fitted: `tanhguard.transforms.fit_phase.fit`). `clipped` is finite, so the
    difference is finite or +-Inf (float32 overflow near float32 max) and never
    NaN; dividing by a positive scale and clipping makes it finite and inside
    `[-bound, bound]`.
    """
    center = tf.cast(center, tf.float32)
    scale = tf.cast(scale, tf.float32)
    constant = tf.equal(scale, 0.0)
    safe_scale = tf.where(constant, tf.ones_like(scale), scale)
    scaled = (clipped - center) / safe_scale
    scaled = tf.where(constant, tf.zeros_like(scaled), scaled)
    return tf.clip_by_value(scaled, -bound, bound)


def apply_inf_policy(x: tf.Tensor, policy: str) -> tf.Tensor:
    """`clip` keeps +-Inf (the clip sends them to the bounds); `missing` turns
    them into NaN, so they are imputed like missing values."""
    if policy == "missing":
        return tf.where(tf.math.is_inf(x), tf.constant(float("nan"), x.dtype), x)
    if policy == "clip":
        return x
    raise ValueError(f"`inf` must be `clip` or `missing`. Received: {policy!r}")


def guard(
    x: tf.Tensor,
    *,
    impute_value: tf.Tensor,
    lower: tf.Tensor,
    upper: tf.Tensor,
    center: tf.Tensor,
    scale: tf.Tensor,
    bound: float,
    log: bool = False,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Applies the formula to float32 `x` (NaN for missing values).

    Args:
      x: float32 `[batch, n]`, after the inf policy.
      impute_value, lower, upper, center, scale: float32 `[n]` (or scalars);
        finite, `lower <= upper`, `scale >= 0` (0 marks a constant feature).
      bound: B > 0.
      log: Apply `g(v) = sign(v) * log1p(|v|)` after clipping (`log_zscore`).

    Returns:
      `(out, missing, clipped)`: `out` is finite and inside `[-B, B]` for every
      value of `x`; `missing` is 1.0 where `x` is NaN and 0.0 elsewhere;
      `clipped` is 1.0 where `x` lies outside `[lower, upper]` (+-Inf
      included) and 0.0 elsewhere.
    """
    lower = tf.cast(lower, tf.float32)
    upper = tf.cast(upper, tf.float32)
    clipped = impute_and_clip(x, impute_value, lower, upper)
    if log:
        clipped = log_transform(clipped)
    out = scale_and_bound(clipped, center, scale, bound)
    missing = tf.cast(tf.math.is_nan(x), tf.float32)
    outside = tf.cast(tf.math.logical_or(x < lower, x > upper), tf.float32)
    return out, missing, outside
