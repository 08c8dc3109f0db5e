"""Full-pass statistics of one feature, computed with TFT analyzers.

All statistics are per column of a `[batch, s]` tensor (one column per set of
statistics: per element of an elementwise vector, or one column holding every
element of a shared one) and are taken over finite values only; missing, NaN,
+Inf and -Inf values are counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

# Grid resolutions tried for quantiles, finest last. A probability must fall on
# the grid; config validation allows multiples of 1e-4.
_QUANTILE_GRIDS = (1_000, 10_000)


def quantile_grid(probabilities: Iterable[float]) -> int:
    """The coarsest grid `N` on which every probability is `k / N`.

    Raises:
      ValueError: A probability is not a multiple of 1 / 10,000.
    """
    probabilities = list(probabilities)
    for grid in _QUANTILE_GRIDS:
        if all(abs(p * grid - round(p * grid)) < 1e-6 for p in probabilities):
            return grid
    raise ValueError(
        f"quantile probabilities must be multiples of 0.0001. Received: {probabilities}"
    )


def quantile_epsilon(grid: int) -> float:
    """The sketch's rank error for a grid: a tenth of one grid step."""
    return 0.1 / grid


class FeatureStatistics:
    """Analyzer outputs for one feature; every tensor has shape `[s]`.

    Attributes:
      count: finite values. missing / nan / pos_inf / neg_inf: the others.
      mean, std, min, max: over finite values (float32 min/max; float64 moments).
      boundaries: `[s, grid - 1]` quantile boundaries; column `k - 1` is the
        quantile at probability `k / grid`.
    """

    def __init__(self, x: tf.Tensor, missing: tf.Tensor, grid: int, name: str):
        with tf.name_scope(name):
            finite = tf.math.is_finite(x)
            is_nan = tf.math.logical_and(tf.math.is_nan(x), ~missing)
            indicators = tf.stack(
                [
                    finite,
                    missing,
                    is_nan,
                    tf.math.equal(x, math.inf),
                    tf.math.equal(x, -math.inf),
                ],
                axis=1,
            )
            counts = tft.sum(
                tf.cast(indicators, tf.int64),
                reduce_instance_dims=False,
                name="counts",
            )
            counts = tf.cast(counts, tf.float64)
            (self.count, self.missing, self.nan, self.pos_inf, self.neg_inf) = (
                tf.unstack(counts, num=5, axis=0)
            )
            # TFT's mean/var ignore NaN and +-Inf; float64 keeps moments of
            # values near float32 max finite.
            as_float64 = tf.cast(x, tf.float64)
            self.mean = tft.mean(as_float64, reduce_instance_dims=False, name="mean")
            self.std = tf.sqrt(
                tft.var(as_float64, reduce_instance_dims=False, name="var")
            )
            self.min = tft.min(
                tf.where(finite, x, math.inf), reduce_instance_dims=False, name="min"
            )
            self.max = tft.max(
                tf.where(finite, x, -math.inf), reduce_instance_dims=False, name="max"
            )
            # One sketch per column: with `reduce_instance_dims=False` TFT fails
            # on a column without a finite value (tensorflow/transform#256);
            # a 1-D sketch of only NaN returns zeros, which `count` flags.
            self.grid = grid
            sketch_input = tf.where(finite, x, math.nan)
            self.boundaries = tf.stack(
                [
                    tft.quantiles(
                        sketch_input[:, column],
                        num_buckets=grid,
                        epsilon=quantile_epsilon(grid),
                        name=f"quantiles_{column}",
                    )[0]
                    for column in range(x.shape[1])
                ],
                axis=0,
            )

    def quantile(self, probability: float) -> tf.Tensor:
        """The `[s]` quantile at `probability` (0 is the min, 1 the max)."""
        if probability <= 0.0:
            return self.min
        if probability >= 1.0:
            return self.max
        index = int(np.round(probability * self.grid)) - 1
        return self.boundaries[:, index]
