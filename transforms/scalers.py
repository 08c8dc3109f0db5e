"""The scaled, bounded output of a feature."""

from __future__ import annotations

import tensorflow as tf


def scale_and_bound(
    clipped: tf.Tensor, center: tf.Tensor, scale: tf.Tensor, bound: float
) -> tf.Tensor:
    """`clip((clipped - center) / scale, -bound, bound)`; 0 where `scale` is 0.

    A scale of 0 marks a constant feature (decided once, where the scale is
    fitted: `tanhguard.pipeline.scale_fitter`). `clipped` is finite, so the
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
