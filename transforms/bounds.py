"""Clip bounds: how `lower` and `upper` are derived for each clip strategy."""

from __future__ import annotations

import tensorflow as tf

from tanhguard.transforms.analyzers import FeatureStatistics
from tanhguard.transforms.config import FixedClip, QuantileClip


def clip_bounds(
    spec: QuantileClip | FixedClip, stats: FeatureStatistics, size: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """`(lower, upper)`, each float32 `[size]`, for a feature's clip strategy.

    Returns:
      For `quantile`, the quantiles of the finite values at the configured
      probabilities (equal when the feature is constant: every value then clips
      to that constant). For `fixed`, the configured values.
    """
    if isinstance(spec, QuantileClip):
        return stats.quantile(spec.lower), stats.quantile(spec.upper)
    if isinstance(spec, FixedClip):
        return (
            tf.fill([size], tf.constant(spec.lower, tf.float32)),
            tf.fill([size], tf.constant(spec.upper, tf.float32)),
        )
    raise TypeError(f"`clip`: unsupported strategy. Received: {spec!r}")
