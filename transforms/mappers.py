"""The per-row functions: the formula every output goes through.

    out = clip((g(clip(impute(x), lower, upper)) - center) / scale, -B, B)

`densify` turns a raw feature into a dense `[batch, size]` view with NaN for
missing values; `guard` applies the formula with the fitted parameters.

Precision: the identity path computes in float32. The `log_zscore` path
(`g` = `sign(v) * log1p(|v|)`) computes `g`, the centering and the scaling in
float64 with a float64 center and scale: `g` compresses a value far from 0
(an id or a timestamp near 1.7e10) into a number near 23.6 whose spread sits
in digits float32 does not hold. Either way the output is float32, clipped to
`float32_bound(B)`, so it never exceeds B as written.
"""

from __future__ import annotations

import numpy as np
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
    `x` (at most about 88.7 in magnitude for float32 inputs)."""
    return tf.math.sign(values) * tf.math.log1p(tf.math.abs(values))


def float32_bound(bound: float) -> np.float32:
    """The largest float32 not above `bound` (> 0, at most float32 max).

    `np.float32(0.1)` is 0.10000000149: clipping to it would let outputs
    exceed an `output_bound` of 0.1 as written.
    """
    rounded = np.float32(bound)
    if float(rounded) > bound:
        rounded = np.nextafter(rounded, np.float32(0))
    return rounded


def scale_and_bound(
    clipped: tf.Tensor, center: tf.Tensor, scale: tf.Tensor, bound: float
) -> tf.Tensor:
    """`clip((clipped - center) / scale, -bound, bound)`; 0 where `scale` is 0.

    Computes in `clipped`'s dtype (float32, or float64 on the `log_zscore`
    path) and returns float32 inside `[-b, b]`, `b = float32_bound(bound)`:
    never above `bound` as written.

    A scale of 0 marks a constant feature (decided once, where the scale is
    fitted: `tanhguard.transforms.fit_phase.fit`). `clipped` is finite, so the
    difference is finite or +-Inf (float32 overflow near float32 max) and never
    NaN; dividing by a positive scale and clipping makes it finite and inside
    `[-bound, bound]`.
    """
    center = tf.cast(center, clipped.dtype)
    scale = tf.cast(scale, clipped.dtype)
    constant = tf.equal(scale, 0.0)
    safe_scale = tf.where(constant, tf.ones_like(scale), scale)
    scaled = (clipped - center) / safe_scale
    scaled = tf.where(constant, tf.zeros_like(scaled), scaled)
    limit = float32_bound(bound)
    if clipped.dtype != tf.float32:
        # Clipped to the float32 limit before the cast: rounding is monotone,
        # so the float32 result stays inside it too.
        wide = float(limit)
        scaled = tf.cast(tf.clip_by_value(scaled, -wide, wide), tf.float32)
    return tf.clip_by_value(scaled, -limit, limit)


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
      impute_value, lower, upper: `[n]` (or scalars), applied as float32.
      center, scale: `[n]` (or scalars); float32 values, except on the `log`
        path, which applies them in float64. Finite, `lower <= upper`,
        `scale >= 0` (0 marks a constant feature).
      bound: B > 0.
      log: Apply `g(v) = sign(v) * log1p(|v|)` after clipping (`log_zscore`),
        computing from there on in float64.

    Returns:
      `(out, missing, clipped)`: `out` is finite and inside `[-B, B]` for every
      value of `x`; `missing` is 1.0 where `x` is NaN and 0.0 elsewhere;
      `clipped` is 1.0 where `x` lies outside `[lower, upper]` (+-Inf
      included) and 0.0 elsewhere.
    """
    impute_value = tf.cast(impute_value, tf.float32)
    lower = tf.cast(lower, tf.float32)
    upper = tf.cast(upper, tf.float32)
    if log:
        # float64 from the clip on: the clip and the impute value are the same
        # float32 numbers either way (a float32 input is exact in float64).
        clipped = impute_and_clip(tf.cast(x, tf.float64), impute_value, lower, upper)
        clipped = log_transform(clipped)
    else:
        clipped = impute_and_clip(x, impute_value, lower, upper)
    out = scale_and_bound(clipped, center, scale, bound)
    missing = tf.cast(tf.math.is_nan(x), tf.float32)
    outside = tf.cast(tf.math.logical_or(x < lower, x > upper), tf.float32)
    return out, missing, outside
