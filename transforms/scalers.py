"""The scaled, bounded output of a feature."""

from __future__ import annotations

import tensorflow as tf


def log_transform(values: tf.Tensor) -> tf.Tensor:
    """`sign(x) * log1p(|x|)`: the `log_zscore` scaler's `g`; finite for finite
    `x` (at most about 88.7 in magnitude for float32)."""
    return tf.math.sign(values) * tf.math.log1p(tf.math.abs(values))


def scale_and_bound(
    clipped: tf.Tensor, center: tf.Tensor, scale: tf.Tensor, bound: float
) -> tf.Tensor:
    """`clip((clipped - center) / scale, -bound, bound)`; 0 where `scale` is 0.

    A scale of 0 marks a constant feature (decided once, where the scale is
    fitted: `tanhguard.transforms.fitting.fit`). `clipped` is finite, so the
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
