"""Full-pass statistics of one feature, computed with TFT analyzers.

All statistics are per column of a `[batch, s]` tensor (one column per set of
statistics: per element of an elementwise vector, or one column holding every
element of a shared one) and are taken over finite values only; missing, NaN,
+Inf and -Inf values are counted.
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class FeatureStatistics:
    """Analyzer outputs over the columns of a `[batch, s]` tensor; `[s]` each.

    Attributes:
      count: finite values. missing / nan / pos_inf / neg_inf: the others.
      mean, std: over finite values, float64. min, max: over finite values.
      boundaries: `[s, grid - 1]` quantile boundaries; column `k - 1` is the
        quantile at probability `k / grid`.
      grid: the quantile grid.
    """

    count: tf.Tensor
    missing: tf.Tensor
    nan: tf.Tensor
    pos_inf: tf.Tensor
    neg_inf: tf.Tensor
    mean: tf.Tensor
    std: tf.Tensor
    min: tf.Tensor
    max: tf.Tensor
    boundaries: tf.Tensor
    grid: int

    def columns(self, start: int, stop: int) -> FeatureStatistics:
        """The statistics of columns `start` to `stop - 1`."""
        sliced = {
            field.name: getattr(self, field.name)[start:stop]
            for field in dataclasses.fields(self)
            if field.name != "grid"
        }
        return FeatureStatistics(**sliced, grid=self.grid)

    def quantile(self, probability: float) -> tf.Tensor:
        """The `[s]` quantile at `probability` (0 is the min, 1 the max)."""
        if probability <= 0.0:
            return self.min
        if probability >= 1.0:
            return self.max
        index = int(np.round(probability * self.grid)) - 1
        return self.boundaries[:, index]


def compute_statistics(
    x: tf.Tensor, missing: tf.Tensor, grid: int, name: str
) -> FeatureStatistics:
    """Runs the first-phase analyzers over the columns of `x`.

    Args:
      x: float32 `[batch, s]` with a static `s`; NaN where `missing`.
      missing: bool `[batch, s]`, the values absent from the input.
      grid: quantile grid (see `quantile_grid`).
      name: name scope.

    Returns:
      The statistics of each column. A column without a finite value has
      count 0 and meaningless moments and quantiles (zeros); users of the
      statistics check `count`.
    """
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
            tf.cast(indicators, tf.int64), reduce_instance_dims=False, name="counts"
        )
        counts = tf.unstack(tf.cast(counts, tf.float64), num=5, axis=0)
        # TFT's mean/var ignore NaN and +-Inf; float64 keeps moments of
        # values near float32 max finite.
        as_float64 = tf.cast(x, tf.float64)
        mean = tft.mean(as_float64, reduce_instance_dims=False, name="mean")
        std = tf.sqrt(tft.var(as_float64, reduce_instance_dims=False, name="var"))
        minimum = tft.min(
            tf.where(finite, x, math.inf), reduce_instance_dims=False, name="min"
        )
        maximum = tft.max(
            tf.where(finite, x, -math.inf), reduce_instance_dims=False, name="max"
        )
        # The sketch skips NaN, but TFT fails on a column with no value at all
        # (tensorflow/transform#256). Each batch therefore adds one row of
        # zeros with a weight of 1e-30: it keeps every column non-empty (an
        # all-NaN column then reports zeros) and moves no quantile of real
        # data, whose rows weigh 1 each.
        sentinel = tf.zeros([1, x.shape[1]], x.dtype)
        weights = tf.concat([tf.ones([tf.shape(x)[0]], tf.float32), [1e-30]], axis=0)
        boundaries = tft.quantiles(
            tf.concat([tf.where(finite, x, math.nan), sentinel], axis=0),
            num_buckets=grid,
            epsilon=quantile_epsilon(grid),
            weights=weights,
            reduce_instance_dims=False,
            name="quantiles",
        )
        # TFT 1.16 drops the static shape of some analyzer outputs; restore it.
        columns = x.shape[1]
        return FeatureStatistics(
            *(tf.reshape(count, [columns]) for count in counts),
            mean=tf.reshape(mean, [columns]),
            std=tf.reshape(std, [columns]),
            min=tf.reshape(minimum, [columns]),
            max=tf.reshape(maximum, [columns]),
            boundaries=tf.reshape(boundaries, [columns, grid - 1]),
            grid=grid,
        )
