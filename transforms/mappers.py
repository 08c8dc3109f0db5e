"""The per-row function of one feature: the formula every output goes through.

out = clip((g(clip(impute(x), lower, upper)) - center) / scale, -B, B)
"""

from __future__ import annotations

import tensorflow as tf

from tanhguard.transforms.nonfinite import impute_and_clip
from tanhguard.transforms.scalers import log_transform, scale_and_bound


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
